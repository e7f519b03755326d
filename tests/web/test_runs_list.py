"""The run list a page at a time, as a person uses it: paging, sorting, search and tags,
the list's state in the URL; and the run page's tags, note and delete."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import expect

from tests.support.api import create_run, post_logs

READY = "body[data-ready=true]"
NONE = "\N{EN DASH}"  # a value a run lacks
MODELS = ("resnet", "vit", "mlp")


def many_runs(api, n: int = 120) -> None:
    """`n` runs, r000 oldest, named like "vit-001"."""
    for i in range(n):
        create_run(api, f"r{i:03d}", name=f"{MODELS[i % 3]}-{i:03d}", project="zoo")


def names_from_api(api, **params) -> list[str]:
    return [run["name"] for run in api.get("/api/v1/runs", params={"limit": 1000, **params}).json()]


def shown(first: int, last: int, total: int) -> str:
    """What the pager says, as "1-50 of 120" with an en dash."""
    return f"{first}\N{EN DASH}{last} of {total}"


def open_list(page, path: str = "/") -> None:
    page.goto(path)
    page.wait_for_selector(READY)


def rows(page):
    return page.locator("#runs tr")


def name_cell(page, index: int):
    return rows(page).nth(index).locator("td").nth(1).locator("a")


def test_the_list_shows_a_page_of_50_and_pages_on_across_a_reload(page, api):
    many_runs(api)
    newest = names_from_api(api)
    open_list(page)
    expect(rows(page)).to_have_count(50)
    expect(page.locator("#range")).to_have_text(shown(1, 50, 120))
    expect(name_cell(page, 0)).to_have_text(newest[0])
    expect(page.locator("#prev")).to_be_disabled()

    page.click("#next")
    expect(page.locator("#range")).to_have_text(shown(51, 100, 120))
    expect(name_cell(page, 0)).to_have_text(newest[50])
    expect(rows(page)).to_have_count(50)
    assert newest[50] != newest[0]

    page.reload()
    page.wait_for_selector(READY)
    expect(page.locator("#range")).to_have_text(shown(51, 100, 120))
    expect(name_cell(page, 0)).to_have_text(newest[50])

    page.click("#next")
    expect(page.locator("#range")).to_have_text(shown(101, 120, 120))
    expect(rows(page)).to_have_count(20)
    expect(page.locator("#next")).to_be_disabled()
    page.click("#prev")
    expect(page.locator("#range")).to_have_text(shown(51, 100, 120))


def test_a_new_run_appears_live_on_the_first_page_and_a_deleted_one_goes(page, api):
    many_runs(api)
    open_list(page)
    expect(page.locator("#range")).to_have_text(shown(1, 50, 120))
    expect(page.locator("#live")).to_be_visible()  # the page hears of changes from here on
    create_run(api, "fresh", name="fresh-run", project="zoo")
    expect(name_cell(page, 0)).to_have_text("fresh-run")
    expect(page.locator("#range")).to_have_text(shown(1, 50, 121))
    expect(rows(page)).to_have_count(50)

    assert api.delete("/api/v1/runs/fresh").status_code == 204
    expect(page.locator("tr[data-id=fresh]")).to_have_count(0)
    expect(page.locator("#range")).to_have_text(shown(1, 50, 120))
    expect(rows(page)).to_have_count(50)


def test_sorting_by_name_both_ways_matches_the_server(page, api):
    many_runs(api)
    ascending = names_from_api(api, sort="name", order="asc")
    descending = names_from_api(api, sort="name", order="desc")
    open_list(page)
    header = page.locator("th[data-sort=name] button")

    header.click()
    expect(name_cell(page, 0)).to_have_text(ascending[0])
    expect(name_cell(page, 49)).to_have_text(ascending[49])
    expect(page.locator("th[data-sort=name]")).to_have_attribute("aria-sort", "ascending")

    header.click()
    expect(name_cell(page, 0)).to_have_text(descending[0])
    expect(page.locator("th[data-sort=name]")).to_have_attribute("aria-sort", "descending")

    page.click("#next")  # the next page in the same order
    expect(name_cell(page, 0)).to_have_text(descending[50])
    page.reload()
    page.wait_for_selector(READY)
    expect(name_cell(page, 0)).to_have_text(descending[50])


def epoch(**metrics) -> dict:
    return {"seq": 0, "scope": "epoch", "step": 0, "epoch": 0, "wall_time": 1.0, "metrics": metrics}


def test_sorting_by_a_chosen_metric_shows_its_values(page, api):
    for run_id, val_loss in (("a", 0.5), ("b", 0.25), ("c", 0.75)):
        create_run(api, run_id, name=f"run {run_id}")
        post_logs(api, run_id, [epoch(loss=1.0, val_loss=val_loss)])
    create_run(api, "d", name="run d")  # no val_loss: last either way
    open_list(page)

    page.select_option("#metric", "val_loss")
    expect(rows(page).locator("td.num")).to_have_text(["0.75", "0.5", "0.25", NONE])
    assert names_from_api(api, sort="metric:val_loss") == ["run c", "run a", "run b", "run d"]
    page.click("th[data-sort=metric] button")
    expect(rows(page).locator("td.num")).to_have_text(["0.25", "0.5", "0.75", NONE])
    expect(name_cell(page, 0)).to_have_text("run b")


def test_search_narrows_the_list_and_stays_in_the_url(page, api):
    many_runs(api)
    open_list(page)
    page.fill("#q", "-07")
    expect(page.locator("#range")).to_have_text(shown(1, 10, 10))
    names = rows(page).locator("td:nth-child(2) a").all_inner_texts()
    assert sorted(names) == sorted(f"{MODELS[i % 3]}-{i:03d}" for i in range(70, 80))

    found = len(names_from_api(api, q="vit-1"))
    page.fill("#q", "VIT-1")  # any case
    expect(page.locator("#range")).to_have_text(shown(1, found, found))
    page.reload()
    page.wait_for_selector(READY)
    expect(page.locator("#q")).to_have_value("VIT-1")
    expect(page.locator("#range")).to_have_text(shown(1, found, found))

    page.fill("#q", "no such run")
    expect(rows(page)).to_have_count(0)
    expect(page.locator("#no-match")).to_be_visible()
    expect(page.locator("#empty")).to_be_hidden()


def saved(response) -> bool:
    """The answer to a PATCH of a run."""
    return response.request.method == "PATCH" and response.ok


def test_a_tag_added_on_a_row_is_saved_and_its_chip_filters_the_list(page, api):
    many_runs(api)
    api.patch("/api/v1/runs/r005", json={"tags": ["best"]})  # on the third page
    open_list(page)
    row = page.locator("tr[data-id=r119]")
    row.get_by_role("button", name="add a tag to mlp-119").click()
    row.get_by_role("textbox", name="new tag for mlp-119").fill("best")
    with page.expect_response(saved):  # shown at once, saved in the background
        row.get_by_role("textbox", name="new tag for mlp-119").press("Enter")
        expect(row.locator(".chip-name")).to_have_text(["best"])
    assert api.get("/api/v1/runs/r119").json()["tags"] == ["best"]

    row.get_by_role("button", name="best", exact=True).click()
    expect(page.locator("#range")).to_have_text(shown(1, 2, 2))
    expect(rows(page).locator("td:nth-child(2) a")).to_have_text(["mlp-119", "mlp-005"])
    expect(page.locator("#tag-filters .chip-name")).to_have_text(["best"])
    assert "tag=best" in page.url

    page.get_by_role("button", name="stop filtering by tag best").click()
    expect(page.locator("#range")).to_have_text(shown(1, 50, 120))

    with page.expect_response(saved):
        page.locator("tr[data-id=r119]").get_by_role("button", name="remove tag best").click()
        expect(page.locator("tr[data-id=r119] .chip")).to_have_count(0)
    assert api.get("/api/v1/runs/r119").json()["tags"] == []


def test_the_note_edited_on_the_run_page_is_saved_and_shown_in_the_list(page, api):
    create_run(api, "r1", name="noted")
    page.goto("/runs/r1")
    page.wait_for_selector(READY)
    page.fill("#note", "lr too high\nretry with 1e-4")
    page.click("#note-save")
    expect(page.locator("#note-state")).to_have_text("Saved.")
    assert api.get("/api/v1/runs/r1").json()["note"] == "lr too high\nretry with 1e-4"

    page.reload()
    page.wait_for_selector(READY)
    expect(page.locator("#note")).to_have_value("lr too high\nretry with 1e-4")
    open_list(page)
    expect(page.locator("tr[data-id=r1] .run-note")).to_have_text("lr too high")


def test_tags_on_the_run_page_are_saved_and_lead_to_the_filtered_list(page, api):
    create_run(api, "r1", name="tagged")
    create_run(api, "r2", name="other")
    page.goto("/runs/r1")
    page.wait_for_selector(READY)
    page.get_by_role("button", name="add a tag to tagged").click()
    page.get_by_role("textbox", name="new tag for tagged").fill("baseline")
    with page.expect_response(saved):
        page.get_by_role("textbox", name="new tag for tagged").press("Enter")
        expect(page.locator("#run-tags .chip-name")).to_have_text(["baseline"])
    assert api.get("/api/v1/runs/r1").json()["tags"] == ["baseline"]

    expect(page.locator("#live")).to_be_visible()
    api.patch("/api/v1/runs/r1", json={"tags": ["baseline", "v2"]})  # live, from elsewhere
    expect(page.locator("#run-tags .chip-name")).to_have_text(["baseline", "v2"])
    page.locator("#run-tags").get_by_role("button", name="v2", exact=True).click()
    page.wait_for_url("**/?tag=v2")
    page.wait_for_selector(READY)
    expect(rows(page).locator("td:nth-child(2) a")).to_have_text(["tagged"])


def test_delete_on_the_run_page_asks_first(page, api):
    create_run(api, "r1", name="doomed")
    create_run(api, "r2", name="kept")
    page.goto("/runs/r1")
    page.wait_for_selector(READY)
    deletes = []
    page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#delete")
    page.evaluate("() => 0")  # the click's handler has run: the page is single-threaded
    assert deletes == []
    assert api.get("/api/v1/runs/r1").status_code == 200

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    page.wait_for_url(re.compile(r"/$"))
    page.wait_for_selector(READY)
    assert api.get("/api/v1/runs/r1").status_code == 404
    expect(rows(page).locator("td:nth-child(2) a")).to_have_text(["kept"])


@pytest.mark.parametrize(
    ("kept_token", "status"), [("ingest-secret", 403), (None, 401)], ids=["token-without-the-right", "no-token"]
)
def test_a_delete_the_server_refuses_shows_why(browser, start_server, kept_token, status):
    """A training's token may not delete (403); without one the page asks for it, and
    a person who gives none (401) is told why nothing happened."""
    server = start_server(token="admin-secret", ingest_token="ingest-secret")
    admin = {"authorization": "Bearer admin-secret"}
    with server.client(headers=admin) as api:
        create_run(api, "r1", name="guarded")
    context = browser.new_context(base_url=server.url)
    if kept_token:
        context.add_init_script(f"localStorage.setItem('fitwatch.token', '{kept_token}')")
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.type), d.accept() if d.type == "confirm" else d.dismiss()))
    page.goto("/runs/r1")
    page.wait_for_selector(READY)
    with page.expect_response(lambda r: r.request.method == "DELETE") as refused:
        page.click("#delete")
    assert refused.value.status == status
    expect(page.locator("#error")).to_contain_text("Could not delete this run")
    assert dialogs == (["confirm"] if kept_token else ["confirm", "prompt"])
    with server.client(headers=admin) as api:
        assert api.get("/api/v1/runs/r1").status_code == 200
    context.close()


def test_the_project_filter_offers_projects_beyond_the_page_shown(page, api):
    create_run(api, "old", name="the-only-vision-run", project="vision")  # oldest: not on page 1
    many_runs(api, 60)
    open_list(page)
    expect(rows(page)).to_have_count(50)
    expect(page.locator("#project option")).to_have_text(["all", "vision", "zoo"])

    page.select_option("#project", "vision")
    expect(rows(page)).to_have_count(1)
    expect(name_cell(page, 0)).to_have_text("the-only-vision-run")
    assert "project=vision" in page.url


def ticked(page) -> list[str]:
    """The ids of the rows shown ticked."""
    return page.locator("#runs tr").evaluate_all(
        "trs => trs.filter(tr => tr.querySelector('input.pick').checked).map(tr => tr.dataset.id)"
    )


def compare_query(page) -> dict[str, list[str]]:
    page.wait_for_url("**/compare*")
    return parse_qs(urlsplit(page.url).query)


def test_select_all_ticks_the_page_shown_and_compare_opens_those_runs(page, api):
    many_runs(api, 60)
    open_list(page, "/?page=2")
    expect(rows(page)).to_have_count(10)
    second_page = [run["id"] for run in api.get("/api/v1/runs", params={"limit": 50, "offset": 50}).json()]
    head = page.get_by_role("checkbox", name="select every run on this page")
    expect(page.locator("#selection")).to_have_text("No runs selected")

    head.check()
    assert ticked(page) == second_page
    expect(page.locator("#selection")).to_have_text("10 selected: all 10 on this page")
    expect(page.locator("#select-matching")).to_have_text("Select all 60 runs")  # no filter: every run
    page.locator("tr[data-id=r000] input.pick").uncheck()
    expect(head).not_to_be_checked()
    assert head.evaluate("box => box.indeterminate")
    expect(page.locator("#selection")).to_have_text("9 selected")
    expect(page.locator("#select-matching")).to_be_hidden()
    head.check()  # a part-ticked page ticks whole
    expect(page.locator("#selection")).to_have_text("10 selected: all 10 on this page")

    page.click("#prev")  # the first page's runs are not ticked by it
    expect(page.locator("#range")).to_have_text(shown(1, 50, 60))
    assert ticked(page) == []
    expect(head).not_to_be_checked()
    page.click("#next")
    expect(page.locator("#range")).to_have_text(shown(51, 60, 60))
    assert ticked(page) == second_page

    page.click("#compare")
    assert sorted(compare_query(page)["runs"][0].split(",")) == sorted(second_page)


def test_all_runs_that_match_are_compared_by_the_filter_not_by_id(page, api):
    many_runs(api, 120)
    for i in range(60):
        api.patch(f"/api/v1/runs/r{i:03d}", json={"tags": ["sweep"]})
    create_run(api, "lab1", name="vit-001", project="lab")
    query = {"project": ["zoo"], "status": ["running"], "q": ["-0"], "tag": ["sweep"]}
    open_list(page, "/?" + urlencode(query, doseq=True))
    expect(page.locator("#range")).to_have_text(shown(1, 50, 60))

    page.get_by_role("checkbox", name="select every run on this page").check()
    expect(page.locator("#selection")).to_have_text("50 selected: all 50 on this page")
    page.get_by_role("button", name="Select all 60 runs that match").click()
    expect(page.locator("#selection")).to_have_text("All 60 runs that match selected")
    page.click("#next")  # every run that matches is ticked, on every page
    expect(page.locator("#range")).to_have_text(shown(51, 60, 60))
    expect(page.locator("#runs input.pick:checked")).to_have_count(10)
    rows(page).first.locator("input.pick").uncheck()  # back to runs ticked: this page, less one
    expect(page.locator("#selection")).to_have_text("9 selected")
    expect(page.locator("#runs input.pick:checked")).to_have_count(9)

    page.get_by_role("button", name="Clear selection").click()
    expect(page.locator("#selection")).to_have_text("No runs selected")
    expect(page.locator("#runs input.pick:checked")).to_have_count(0)
    expect(page.locator("#compare")).to_be_disabled()

    page.get_by_role("checkbox", name="select every run on this page").check()
    page.get_by_role("button", name="Select all 60 runs that match").click()
    page.click("#compare")
    assert compare_query(page) == query


def stops(api, run_id: str) -> list[str]:
    commands = api.get(f"/api/v1/runs/{run_id}/commands").json()
    return [c["type"] for c in commands if c["type"] == "stop_training"]


@pytest.mark.parametrize(
    ("path", "matching"),
    [("/?project=zoo", 120), ("/?project=zoo&q=-0", 100)],
    ids=["a-project-alone", "a-search-in-a-project"],
)
def test_a_stop_to_all_runs_that_match_asks_once_and_reaches_each_running_one(page, api, path, matching):
    many_runs(api, 120)
    for run_id in ("r001", "r050", "r110"):
        api.patch(f"/api/v1/runs/{run_id}", json={"status": "finished"})
    create_run(api, "lab1", name="vit-001", project="lab")  # another project: its name matches
    open_list(page, path)
    expect(page.locator("#range")).to_have_text(shown(1, 50, matching))

    page.get_by_role("checkbox", name="select every run on this page").check()
    page.get_by_role("button", name=f"Select all {matching} runs that match").click()
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click("#fleet-stop")
    live = [f"r{i:03d}" for i in range(matching) if f"r{i:03d}" not in ("r001", "r050", "r110")]
    expect(page.locator("#fleet-result")).to_have_text(f"sent to {len(live)} run(s)")
    assert asked == [f"Stop every run still running of all {matching} that match the filter after their current batch?"]

    for run in api.get("/api/v1/runs", params={"limit": 1000}).json():
        assert stops(api, run["id"]) == (["stop_training"] if run["id"] in live else []), run["id"]
