"""Rules from the browser: a rule made on the rules page acts on a real training running
at full speed, and the open run page shows the firing, the command it issued and the
marker live, without a reload; bad rules are explained field by field; delete asks first."""

from __future__ import annotations

from tests.conftest import wait_for
from tests.helpers import add_rule, create_run, post_logs
from tests.server.test_rules import FLAP, flapping
from tests.web.test_live_training import READY, has_points, training


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
        # The marker on the batch charts (drawn at the charts' next redraw).
        page.wait_for_function(
            "(label) => [...document.querySelectorAll('#batch-charts .chart')].some(c => "
            "[...c.querySelectorAll('.annotation-text')].some(a => a.textContent === label))",
            arg=f"rule {rule['id']}",
        )
        assert page.evaluate("() => window.sameDocument") is True

        # The rules page counted it live.
        rules_page.wait_for_function("() => document.querySelector('.fired-count').textContent === '1\u00d7'")
        rules_page.click(".fired-count")
        rules_page.wait_for_selector("tr.firings-of li")
        assert "ruled" in rules_page.locator("tr.firings-of").inner_text()


def test_the_rules_page_explains_a_bad_rule_and_deletes_after_asking(page, api):
    page.goto("/rules")
    page.wait_for_selector(READY)
    page.fill("#series", "val_loss")
    page.select_option("#op", "above")  # and no threshold given
    page.select_option("#then", "pause")
    page.click("button[type=submit]")
    page.wait_for_function("() => document.querySelector('#form-error').textContent !== ''")
    assert "when.above.value" in page.inner_text("#form-error")
    assert api.get("/api/v1/rules").json() == []
    assert [e for e in page.errors if "422" in e] == page.errors != []  # the browser logs the refused POST
    page.errors.clear()

    page.fill("#value", "2.5")
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
