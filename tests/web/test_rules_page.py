"""Rules from the browser: a rule made on the rules page acts on a real training running
at full speed, and the open run page shows the firing, the command it issued and the
marker live, without a reload; bad rules are explained field by field; delete asks first."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.server.test_rules import FLAP, flapping
from tests.support.api import add_rule, create_run, post_logs
from tests.support.waiting import wait_for
from tests.web.test_live_training import READY, has_points, training


@pytest.mark.slow
def test_a_rule_made_on_the_rules_page_stops_a_full_speed_fit_and_the_run_page_shows_it_live(page, api, server):
    with training(server.url, "ruled") as proc:
        wait_for(lambda: has_points(api, "ruled"), 120, "the training to log")
        page.goto("/runs/ruled")
        page.wait_for_selector(READY)
        page.evaluate("() => { window.sameDocument = true; }")

        rules_page = page.context.new_page()
        rules_page.goto("/rules")
        rules_page.wait_for_selector(READY)
        rules_page.select_option("#target", "run")
        rules_page.fill("#target-value", "ruled")
        rules_page.select_option("#scope", "batch")
        rules_page.fill("#series", "loss")
        rules_page.select_option("#op", "below")
        rules_page.fill("#value", "50")
        rules_page.select_option("#then", "stop_training")
        rules_page.click("button[type=submit]")
        rules_page.wait_for_selector("#rules tr[data-id]")
        [rule] = api.get("/api/v1/rules").json()
        assert (rule["run_id"], rule["when"], rule["then"]) == (
            "ruled",
            {"scope": "batch", "name": "loss", "op": "below", "value": 50.0},
            {"type": "stop_training", "args": {}},
        )

        # The run page, open all along: the firing, the stop it issued (applied), the marker.
        page.wait_for_selector("#firings tr")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#commands tr .badge')].map(b => b.textContent).join() === 'applied'"
        )
        page.wait_for_function("() => document.querySelector('#run-status').textContent === 'stopped'")
        assert proc.wait(120) == 0
        [firing] = api.get("/api/v1/runs/ruled/firings").json()
        cells = page.locator("#firings tr td").all_inner_texts()
        assert cells[0] == f"rule {rule['id']}" and cells[2] == str(firing["step"])
        assert f"command {firing['command_id']}" in cells
        assert f"(by rule {rule['id']})" in page.locator("#commands tr").inner_text()
        # The marker on the batch charts (drawn at the charts' next redraw; at the stop's
        # step, the two share one label, which names both on hover).
        page.wait_for_function(
            "(label) => [...document.querySelectorAll('#batch-charts .chart .plot')].some(p => "
            "p.layout.annotations.some(a => a.hovertext.split('<br>').includes(label)))",
            arg=f"rule {rule['id']}",
        )
        assert page.evaluate("() => window.sameDocument") is True

        # The rules page counted it live.
        rules_page.wait_for_function("() => document.querySelector('.fired-count').textContent === '1\u00d7'")
        rules_page.click(".fired-count")
        rules_page.wait_for_selector("tr.firings-of li")
        assert "ruled" in rules_page.locator("tr.firings-of").inner_text()


def said_at(page, field: str):
    """The message shown beside a field of the form: in the field's own fieldset, and the
    one the field names as its description."""
    expect(page.locator(field)).to_have_attribute("aria-describedby", re.compile("."))
    fieldset = page.locator("fieldset", has=page.locator(field))
    return fieldset.locator(f"#{page.get_attribute(field, 'aria-describedby')}")


def test_the_rules_page_explains_a_bad_rule_and_deletes_after_asking(page, api):
    page.goto("/rules")
    page.wait_for_selector(READY)
    page.fill("#series", "val_loss")
    page.select_option("#op", "above")  # and no threshold given
    page.select_option("#then", "pause")
    for threshold in ("", "abc", "1e999"):  # none of them a number the server takes
        page.fill("#value", threshold)
        page.click("button[type=submit]")
        expect(page.locator("#value")).to_have_attribute("aria-invalid", "true")
        expect(said_at(page, "#value")).to_have_text("a threshold is a number")
    assert page.inner_text("#form-error") == ""
    assert api.get("/api/v1/rules").json() == []  # nothing was sent: the browser logged no refusal

    page.fill("#value", "2.5")
    expect(said_at(page, "#value")).to_be_hidden()  # gone once the field changes
    page.uncheck("#once")
    page.click("button[type=submit]")
    page.wait_for_selector("#rules tr[data-id]")
    assert "val_loss (epoch) is above 2.5 -> pause" in page.inner_text("#rules")
    assert page.inner_text("#form-error") == ""

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#rules tr[data-id] >> text=Delete")
    assert len(api.get("/api/v1/rules").json()) == 1  # dismissed: kept
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#rules tr[data-id] >> text=Delete")
    page.wait_for_selector("#no-rules:not([hidden])")
    assert api.get("/api/v1/rules").json() == []


def test_firings_past_max_firings_are_shown_suppressed_and_counted_live(page, api):
    create_run(api, "r")
    rule = add_rule(api, **FLAP, max_firings=2)
    post_logs(api, "r", flapping(0, 10))  # five flips: two fire, three are suppressed
    page.goto("/rules")
    page.wait_for_selector(READY)
    row = page.locator(f"#rules tr[data-id='{rule['id']}']")
    assert "(at most 2 a run)" in row.inner_text()
    assert (row.locator(".fired-count").inner_text(), row.locator(".suppressed").inner_text()) == (
        "2\u00d7",
        "+3 suppressed",
    )
    row.locator(".fired-count").click()
    page.wait_for_selector("tr.firings-of li >> nth=2")
    assert "from step 4, loss = 1, 3 more firings suppressed: max_firings is 2 a run" in page.inner_text(
        "tr.firings-of"
    )
    post_logs(api, "r", flapping(10, 4))  # two more, counted on the same row
    page.wait_for_function("() => document.querySelector('.suppressed').textContent === '+5 suppressed'")
    assert "5 more firings suppressed" in page.inner_text("tr.firings-of")
    assert page.locator("tr.firings-of li").count() == 3


def test_what_the_server_refuses_is_said_beside_each_field(page, api):
    page.goto("/rules")
    page.wait_for_selector(READY)
    page.select_option("#target", "run")
    page.fill("#target-value", "my run")  # a space: no run id has one
    page.fill("#series", "loss")
    page.select_option("#op", "no_improvement")
    page.fill("#patience", "2000000")
    page.select_option("#then", "checkpoint")
    page.fill("#then-value", "best/one")  # a checkpoint name is no path
    page.click("button[type=submit]")
    expect(said_at(page, "#patience")).to_have_text("patience is a whole number of points, from 1 to 1,000,000")
    expect(page.locator(".field-error:visible")).to_have_count(1)  # the page checks numbers only

    page.fill("#patience", "3")
    page.click("button[type=submit]")
    expect(said_at(page, "#target-value")).to_have_text("a run id is 1 to 64 letters, digits, _ . or -")
    expect(said_at(page, "#then-value")).to_have_text("a checkpoint name is 1 to 64 letters, digits, _ . or -")
    expect(said_at(page, "#patience")).to_be_hidden()
    assert page.inner_text("#form-error") == ""
    assert [e for e in page.errors if "422" in e] == page.errors != []  # the browser logs the refused POST
    page.errors.clear()

    # A refusal the server words itself, for one field: said there, in its words.
    page.select_option("#target", "all")
    page.select_option("#then", "set_lr")
    page.fill("#then-value", "100")
    page.click("button[type=submit]")
    expect(said_at(page, "#then-value")).to_have_text("a learning rate of 100.0 is above this server's limit 10.0")
    expect(page.locator(".field-error:visible")).to_have_count(1)
    page.errors.clear()

    page.fill("#then-value", "0.01")
    page.click("button[type=submit]")
    page.wait_for_selector("#rules tr[data-id]")
    expect(page.locator(".field-error:visible")).to_have_count(0)
    assert api.get("/api/v1/rules").json()[0]["then"] == {"type": "set_lr", "args": {"value": 0.01}}
