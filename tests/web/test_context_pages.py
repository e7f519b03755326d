"""Run context and system samples on the pages: where a run ran in the run header, the
System charts (stored and live), and the compare page's table of differing config keys."""

from __future__ import annotations

from tests.support.api import create_run, make_records, post_logs
from tests.web.test_pages import READY, open_run, plot_data

COMMIT = "3f2a1bc9d8e7f60123456789abcdef0123456789"
CPU = "cpu_percent (system)"


def context(**overrides) -> dict:
    base = {
        "host": "gpu-box-3",
        "os": "Linux-6.1.0-x86_64-with-glibc2.36",
        "python": "3.11.7",
        "argv": ["train.py", "--lr", "0.01"],
        "packages": {"keras": "3.6.0", "tensorflow": "2.18.0"},
        "backend": "tensorflow",
        "devices": ["cpu:0", "gpu:0"],
        "git": {"commit": COMMIT, "branch": "main", "dirty": True},
    }
    return {**base, **overrides}


def system_records(n: int, start: int = 0, seq: int = 1000) -> list[dict]:
    """`n` samples from sample number `start`: process CPU and memory, one GPU."""
    return [
        {
            "seq": seq + start + i,
            "scope": "system",
            "step": start + i,
            "wall_time": 1_700_000_000.0 + 5 * (start + i),
            "metrics": {
                "cpu_percent": 50.0 + start + i,
                "rss_mb": 900.0 + start + i,
                "memory_used_mb": 12_000.0,
                "gpu0_util_percent": 80.0,
                "gpu0_memory_mb": 4_096.0,
            },
        }
        for i in range(n)
    ]


def chart_titles(page, section: str) -> list[str]:
    return page.locator(f"#{section} .chart h3").all_inner_texts()


def test_run_header_shows_host_short_commit_dirty_mark_and_branch(page, api):
    create_run(api, "r1", config={"lr": 0.01, "context": context()})
    open_run(page, "r1")
    assert page.locator("#run-host").inner_text() == "host gpu-box-3"
    git = page.locator("#run-git")
    assert git.inner_text() == "git 3f2a1bc* on main"
    assert git.locator("code").inner_text() == COMMIT[:7]
    assert git.locator(".dirty").get_attribute("title") == "uncommitted changes"
    assert COMMIT in git.get_attribute("title")
    config = page.locator("#config").text_content()  # the Config section still shows it all
    assert COMMIT in config and '"argv"' in config and '"lr": 0.01' in config


def test_run_header_without_git_or_context(page, api):
    clean = context(git={"commit": COMMIT, "branch": "main", "dirty": False})
    create_run(api, "clean", config={"context": clean})
    open_run(page, "clean")
    assert page.locator("#run-git").inner_text() == "git 3f2a1bc on main"
    assert page.locator("#run-git .dirty").count() == 0

    nogit = context()
    del nogit["git"]
    create_run(api, "nogit", config={"context": nogit})
    open_run(page, "nogit")
    assert page.locator("#run-host").inner_text() == "host gpu-box-3"
    assert page.locator("#run-git").count() == 0

    create_run(api, "bare", config={"lr": 0.1})
    open_run(page, "bare")
    assert page.locator("#run-context").is_hidden()


def test_system_series_get_their_own_section_and_grow_live(page, api):
    create_run(api, "r1", config={"context": context()})
    post_logs(api, "r1", [*make_records(20), *system_records(5)])
    open_run(page, "r1")
    assert page.locator("#system").is_visible()
    assert chart_titles(page, "system") == [
        "cpu_percent (system)",
        "rss_mb (system)",
        "memory_used_mb (system)",
        "gpu_memory_mb (system: per GPU)",
        "gpu_util_percent (system: per GPU)",
    ]
    assert chart_titles(page, "batch-charts") == ["accuracy (batch)", "loss (batch)"]  # none strayed here
    [cpu] = plot_data(page, CPU)
    assert [x.timestamp() for x in cpu["x"]] == [1_700_000_000.0 + 5 * i for i in range(5)]  # by wall time
    assert cpu["y"] == [50.0, 51.0, 52.0, 53.0, 54.0]
    assert [t["name"] for t in plot_data(page, "gpu_util_percent (system: per GPU)")] == ["gpu0"]
    axis = page.evaluate(
        """title => [...document.querySelectorAll('.chart')].find(c => c.querySelector('h3').textContent === title)
            .querySelector('.plot').layout.xaxis.type""",
        CPU,
    )
    assert axis == "date"

    post_logs(api, "r1", system_records(3, start=5))  # samples arrive while the page is open
    page.wait_for_function(
        """title => {
            const chart = [...document.querySelectorAll('.chart')].find(c => c.querySelector('h3').textContent === title);
            return chart.querySelector('.plot').data[0].x.length === 8;
        }""",
        arg=CPU,
    )
    [cpu] = plot_data(page, CPU)
    assert [x.timestamp() for x in cpu["x"][-3:]] == [1_700_000_025.0, 1_700_000_030.0, 1_700_000_035.0]
    assert cpu["y"][-1] == 57.0


def test_system_section_appears_when_the_first_sample_arrives_live(page, api):
    create_run(api, "r1")
    post_logs(api, "r1", make_records(10))
    open_run(page, "r1")
    assert page.locator("#system").is_hidden()
    assert page.locator("#system .chart").count() == 0
    assert page.locator("h3", has_text="(system").count() == 0

    post_logs(api, "r1", system_records(2))
    page.locator("#system .chart h3", has_text=CPU).wait_for()
    assert page.locator("#system").is_visible()
    page.wait_for_function(
        """title => {
            const chart = [...document.querySelectorAll('.chart')].find(c => c.querySelector('h3').textContent === title);
            return chart.querySelector('.plot').data?.[0]?.x.length === 2;
        }""",
        arg=CPU,
    )
    assert chart_titles(page, "batch-charts") == ["accuracy (batch)", "loss (batch)"]


def test_compare_lists_the_keys_that_differ_hyperparameters_first(page, api):
    for run_id, lr, commit in (("a", 0.01, COMMIT), ("b", 0.1, "9" * 40)):
        config = {
            "lr": lr,
            "batch_size": 32,
            "optimizer": {"name": "adam", "beta_1": 0.9},
            "context": context(git={"commit": commit, "branch": "main", "dirty": False}),
        }
        create_run(api, run_id, name=f"run {run_id}", config=config)
        post_logs(api, run_id, make_records(3, scope="epoch", metrics=("loss",)))
    page.goto("/compare?runs=a,b")
    page.wait_for_selector(READY)

    rows = page.locator("#diff-rows tr")
    assert [r.get_attribute("data-key") for r in rows.all()] == ["lr", "context.git.commit"]
    assert [t.strip() for t in page.locator("#diff-head th").all_inner_texts()] == ["key", "run a", "run b"]
    assert rows.nth(0).locator("td").all_inner_texts() == ["0.01", "0.1"]
    assert rows.nth(1).locator("td").all_inner_texts() == [COMMIT, "9" * 40]

    equal = page.locator("#equal-keys")
    assert equal.locator("summary").inner_text() == "13 equal keys"
    assert page.locator("#equal-rows tr[data-key=batch_size]").is_hidden()  # folded away
    assert page.locator("#diff-rows tr[data-key=batch_size]").count() == 0
    equal.locator("summary").click()
    batch_size = page.locator("#equal-rows tr[data-key=batch_size]")
    assert batch_size.is_visible() and batch_size.locator("td").inner_text() == "32"
    keys = [r.get_attribute("data-key") for r in page.locator("#equal-rows tr").all()]
    assert keys.index("optimizer.name") < keys.index("context.argv")  # hyperparameters first
    assert "context.packages.keras" in keys and "context.git.branch" in keys
    assert page.locator("#equal-rows tr[data-key='context.argv'] td").inner_text() == '["train.py","--lr","0.01"]'


def test_compare_marks_a_key_one_run_lacks(page, api):
    create_run(api, "a", name="run a", config={"lr": 0.01, "dropout": 0.5})
    create_run(api, "b", name="run b", config={"lr": 0.01})
    for run_id in ("a", "b"):
        post_logs(api, run_id, make_records(2, scope="epoch", metrics=("loss",)))
    page.goto("/compare?runs=a,b")
    page.wait_for_selector(READY)
    assert [r.get_attribute("data-key") for r in page.locator("#diff-rows tr").all()] == ["dropout"]
    assert page.locator("#diff-rows tr td").all_inner_texts() == ["0.5", "\u2013"]  # an en dash: not set
    assert page.locator("#diff-rows td.missing").get_attribute("title") == "not in this run's config"
    assert page.locator("#equal-count").inner_text() == "1 equal key"
