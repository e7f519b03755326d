"""The compare page with many runs: the runs of a filter, a sweep's keys against the
metric (parallel coordinates, a scatter) that pick which runs the chart draws, the runs
as rows of a sortable table, one run highlighted over the faded others, and past a few
runs the naming left to the page's legend."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.support.api import create_run, post_logs
from tests.web.test_pages import READY

FEW = 8  # web/js/charts.js: series a chart names in its own legend and hover
PLOT = "document.querySelector('#charts .plot')"


def epochs(loss: float, n: int = 3) -> list[dict]:
    """`n` epochs of a loss that falls to `loss`."""
    return [
        {
            "seq": i,
            "scope": "epoch",
            "step": i,
            "epoch": i,
            "wall_time": 100.0 + i,
            "metrics": {"loss": loss + (n - 1 - i) / n},
        }
        for i in range(n)
    ]


def sweep(api, n: int, project: str = "sweep") -> dict[str, dict]:
    """`n` runs whose configs differ in lr and optimizer only; run i's final loss is i / 10."""
    configs = {}
    for i in range(n):
        run_id = f"s{i:02d}"
        configs[run_id] = {"lr": [0.1, 0.01, 0.001][i % 3], "optimizer": ["adam", "sgd"][i % 2], "epochs": 3}
        create_run(api, run_id, name=f"run {i:02d}", project=project, config=configs[run_id])
        post_logs(api, run_id, epochs(i / 10))
    return configs


def drawn(page) -> list[str]:
    return page.evaluate(f"() => {PLOT}.data.filter(t => t.meta === 'raw').map(t => t.name)")


def test_compare_takes_the_run_lists_filters_and_says_when_it_cut(page, api):
    sweep(api, 4, project="vision")
    create_run(api, "other", name="other", project="nlp")
    post_logs(api, "other", epochs(0.5))
    api.patch("/api/v1/runs/s01", json={"tags": ["best"]})
    api.patch("/api/v1/runs/s03", json={"tags": ["best"]})

    page.goto("/compare?project=vision")
    page.wait_for_selector(READY)
    expect(page.locator("#legend li")).to_have_count(4)
    assert sorted(drawn(page)) == ["run 00", "run 01", "run 02", "run 03"]
    expect(page.locator("#title")).to_have_text("Compare 4 runs: project vision")
    expect(page.locator("#cut")).to_be_hidden()

    page.goto("/compare?project=vision&tag=best&q=RUN")
    page.wait_for_selector(READY)
    assert sorted(drawn(page)) == ["run 01", "run 03"]

    page.goto("/compare?project=nowhere")
    expect(page.locator("#error")).to_contain_text("No runs match these filters.")


def test_parallel_coordinates_show_the_keys_that_differ_and_picking_narrows_the_chart(page, api):
    sweep(api, 20)
    page.goto("/compare?project=sweep")
    page.wait_for_selector(READY)
    page.locator("#sweeps h2").scroll_into_view_if_needed()  # drawn once near the screen
    page.wait_for_function("() => document.querySelector('#parcoords')?.data?.[0]?.type === 'parcoords'")
    labels = page.evaluate("() => document.querySelector('#parcoords').data[0].dimensions.map(d => d.label)")
    assert labels == ["lr", "optimizer", "loss (epoch) (final)"]
    expect(page.locator("#parcoords")).not_to_contain_text("WebGL is not supported")
    assert len(drawn(page)) == 20
    expect(page.locator("#sweep-picked")).to_have_text("All 20 runs.")

    # Brush the final loss axis to [0, 0.45]: runs 0 to 4.
    page.evaluate(
        "() => Plotly.restyle(document.querySelector('#parcoords'), {'dimensions[2].constraintrange': [[0, 0.45]]})"
    )
    page.wait_for_function(f"() => {PLOT}.data.filter(t => t.meta === 'raw').length === 5")
    assert sorted(drawn(page)) == [f"run {i:02d}" for i in range(5)]
    expect(page.locator("#sweep-picked")).to_have_text("5 of 20 runs picked: the chart draws those.")

    # Select points of the scatter (lr against the loss): lr 0.1 is runs 0, 3, 6, ...
    page.select_option("#sweep-key", "lr")
    page.evaluate(
        """() => {
            const plot = document.querySelector('#sweep-scatter');
            const points = plot.data[0].x.map((x, i) => ({x, customdata: plot.data[0].customdata[i]})).filter(p => p.x === 0.1);
            plot.emit('plotly_selected', {points});
        }"""
    )
    page.wait_for_function(f"() => {PLOT}.data.filter(t => t.meta === 'raw').length === 7")
    assert sorted(drawn(page)) == [f"run {i:02d}" for i in range(0, 20, 3)]

    page.click("#sweep-all")
    page.wait_for_function(f"() => {PLOT}.data.filter(t => t.meta === 'raw').length === 20")
    assert page.evaluate("() => document.querySelector('#parcoords').data[0].dimensions[2].constraintrange") is None


def test_many_runs_are_rows_of_the_table_sortable_by_a_key_or_the_final_value(page, api):
    configs = sweep(api, 8)
    page.goto("/compare?project=sweep")
    page.wait_for_selector(READY)
    expect(page.locator("#differences")).to_have_attribute("data-layout", "rows")
    head = [t.strip() for t in page.locator("#diff-head th").all_inner_texts()]
    assert head == ["run", "loss (final)", "lr", "optimizer"]
    expect(page.locator("#diff-rows tr")).to_have_count(8)

    page.click("#diff-head th[data-key=lr] button")
    expect(page.locator("#diff-head th[data-key=lr]")).to_have_attribute("aria-sort", "ascending")
    ids = [r.get_attribute("data-id") for r in page.locator("#diff-rows tr").all()]
    assert [configs[i]["lr"] for i in ids] == sorted(configs[i]["lr"] for i in ids)
    # Equal lr keep the order of the legend.
    assert ids[:2] == ["s05", "s02"]  # newest first

    page.click("#diff-head th[data-key=final] button")
    page.click("#diff-head th[data-key=final] button")  # again: descending
    expect(page.locator("#diff-head th[data-key=final]")).to_have_attribute("aria-sort", "descending")
    ids = [r.get_attribute("data-id") for r in page.locator("#diff-rows tr").all()]
    assert ids == [f"s{i:02d}" for i in reversed(range(8))]  # run i ends at i / 10
    assert page.locator("#diff-rows tr").first.locator("td").first.inner_text() == "0.7"


def test_hovering_a_run_highlights_it_and_fades_the_others(page, api):
    sweep(api, 12)
    page.goto("/compare?project=sweep")
    page.wait_for_selector(READY)
    opacity = f"() => Object.fromEntries({PLOT}.data.map(t => [t.legendgroup, t.opacity]))"

    page.hover("#legend li[data-id=s04]")
    page.wait_for_function(f"() => {PLOT}.data.filter(t => t.opacity < 1).length === 11")
    faded = page.evaluate(opacity)
    assert faded.pop("s04") == 1 and set(faded.values()) == {0.12}
    expect(page.locator("#legend li[data-id=s04]")).to_have_attribute("data-highlighted", "")

    page.hover("h1")
    page.wait_for_function(f"() => {PLOT}.data.every(t => t.opacity === 1)")

    # On the chart, the line nearest the pointer: the second point of the eighth line.
    x, y = page.evaluate(
        f"""() => {{
            const gd = {PLOT}, axes = gd._fullLayout, line = gd.data[7], box = gd.getBoundingClientRect();
            return [box.left + axes.xaxis._offset + axes.xaxis.l2p(line.x[1]),
                    box.top + axes.yaxis._offset + axes.yaxis.l2p(line.y[1])];
        }}"""
    )
    page.mouse.move(x, y)
    page.wait_for_function(f"() => {PLOT}.data.filter(t => t.opacity < 1).length === 11")
    assert page.evaluate(opacity)[page.evaluate(f"() => {PLOT}.data[7].legendgroup")] == 1


def test_the_legend_finds_a_run_among_many(page, api):
    sweep(api, 12)
    page.goto("/compare?project=sweep")
    page.wait_for_selector(READY)
    expect(page.locator("#legend li:visible")).to_have_count(12)
    page.fill("#legend-filter", "RUN 1")
    expect(page.locator("#legend li:visible")).to_have_count(2)  # run 10 and run 11
    page.fill("#legend-filter", "s07")  # ids too
    expect(page.locator("#legend li:visible")).to_have_text(["run 07 running"])


def test_past_a_few_runs_the_page_names_them_and_every_line_is_drawn(page, api):
    sweep(api, FEW + 13)
    page.goto(f"/compare?runs={','.join(f's{i:02d}' for i in range(FEW))}")
    page.wait_for_selector(READY)
    assert page.evaluate(f"() => [{PLOT}.layout.showlegend, {PLOT}.layout.hovermode]") == [True, "x unified"]

    page.goto("/compare?project=sweep")
    page.wait_for_selector(READY)
    assert len(drawn(page)) == FEW + 13
    assert page.evaluate(f"() => [{PLOT}.layout.showlegend, {PLOT}.layout.hovermode]") == [False, "closest"]
    # Each run a line of the SVG, none drawn by WebGL.
    lines = page.locator("#charts .plot .scatterlayer .trace .js-line")
    expect(lines).to_have_count(FEW + 13)
    assert all(
        d.startswith("M") and "L" in d for d in lines.evaluate_all("paths => paths.map(p => p.getAttribute('d'))")
    )
    assert page.locator("#charts .plot .gl-canvas").count() == 0


def test_a_filter_past_a_thousand_runs_compares_the_newest_thousand_and_says_so(page, api):
    for i in range(1001):
        create_run(api, f"k{i:04d}", name=f"k {i:04d}", project="huge")
    for run_id in ("k0000", "k0500", "k1000"):
        post_logs(api, run_id, epochs(0.5))

    page.goto("/compare?project=huge")
    page.wait_for_selector(READY)
    expect(page.locator("#title")).to_have_text("Compare 1,001 runs: project huge")
    expect(page.locator("#cut")).to_have_text(
        "The 1,000 newest of 1,001 matching runs are compared; narrow the filters for the rest."
    )
    expect(page.locator("#legend li")).to_have_count(1000)
    expect(page.locator("#legend li[data-id=k0000]")).to_have_count(0)  # the oldest is left out
    lines = page.evaluate(f"() => {PLOT}.data.filter(t => t.meta === 'raw' && t.x.length).map(t => t.name)")
    assert sorted(lines) == ["k 0500", "k 1000"]
