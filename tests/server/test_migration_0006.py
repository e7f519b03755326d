"""Migration 0006 on a database filled in the 0005 layout: every point moves into chunks
(NaN and ±Infinity exact, a long series over several chunks, a step logged twice), the
ledger of received seqs becomes ranges, and the server reads, exports and deduplicates
what was stored before the upgrade."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command

from monitor_server.domain.schemas import encode_float
from monitor_server.infra.db import make_engine
from monitor_server.migrations import alembic_config
from tests.support.api import post_logs
from tests.support.databases import BACKENDS, fresh_pg_database

NAN, INF = float("nan"), float("inf")
W0 = 1_700_000_000.0
CHUNK = 4096
RUN = "old"
OTHER = "other"  # a second run: received seqs fold per run


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A database of its own for each test, at no revision yet (the suite's shared
    PostgreSQL database is already at the newest one); `start_server` uses it too."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
    else:
        with fresh_pg_database("fitwatch_mig") as url:
            yield url


def loss(seq: int) -> float:
    special = {7: NAN, 4100: NAN, 9000: NAN, 8: INF, 8191: INF, 9: -INF, 9999: -INF}
    return special.get(seq, 1.0 / (seq + 1))


def records() -> list[dict]:
    """What the training logged before the upgrade, as it sent it."""
    out = [
        {
            "seq": seq,
            "scope": "batch",
            "step": seq,
            "epoch": None if seq < 100 else seq // 1000,
            "wall_time": W0 + seq * 0.5,
            "metrics": {"loss": loss(seq), **({"acc": seq / 10_000} if seq % 10 == 0 else {})},
        }
        for seq in range(10_000)  # batch/loss: 10,000 points, three chunks
    ]
    # Epoch 2 logged twice (a resumed run): the later seq has the earlier wall time, so
    # (step, wall, seq) order differs from (step, seq) order.
    epochs = [
        (20_000, 0, 10_000.0, {"val_loss": 0.5, "val_acc": INF}),
        (20_001, 1, 10_001.0, {"val_loss": NAN, "val_acc": 0.75}),
        (20_002, 2, 10_010.0, {"val_loss": 0.25, "val_acc": -INF}),
        (20_003, 3, 10_003.0, {"val_loss": -INF}),
        (20_004, 2, 10_004.0, {"val_loss": 0.375}),
    ]
    out += [
        {"seq": seq, "scope": "epoch", "step": step, "epoch": step, "wall_time": W0 + wall, "metrics": metrics}
        for seq, step, wall, metrics in epochs
    ]
    return out


OTHER_RECORDS = [
    {"seq": seq, "scope": "batch", "step": seq, "epoch": 0, "wall_time": W0 + seq, "metrics": {"loss": float(seq)}}
    for seq in (0, 1, 2, 5)
]


def old_rows() -> dict[str, list[dict]]:
    """The 0005 rows of both runs: runs, series with their stats, points, summaries, received."""
    rows: dict[str, list[dict]] = {"runs": [], "series": [], "points": [], "summaries": [], "received": []}
    ids: dict[tuple[str, str, str], int] = {}
    for run_id, recs in ((RUN, records()), (OTHER, OTHER_RECORDS)):
        rows["runs"].append(
            {
                "id": run_id,
                "name": run_id,
                "project": "migrated",
                "status": "running",
                "reason": None,
                "config": {"lr": 0.01},
                "created_at": W0,
                "updated_at": W0,
                "last_seen": 4e9,  # alive, so a post after the upgrade is a plain post
            }
        )
        for r in recs:
            rows["received"].append({"run_id": run_id, "seq": r["seq"]})
            for name, value in r["metrics"].items():
                sid = ids.setdefault((run_id, r["scope"], name), len(ids) + 1)
                point = {"step": r["step"], "seq": r["seq"], "epoch": r["epoch"], "wall_time": r["wall_time"]}
                rows["points"].append({"series_id": sid, **point, "value": value})
    for (run_id, scope, name), sid in ids.items():
        pts = sorted(series_points(rows["points"], sid), key=lambda p: (p["step"], p["wall_time"], p["seq"]))
        finite = [p["value"] for p in pts if math.isfinite(p["value"])]
        rows["series"].append(
            {
                "id": sid,
                "run_id": run_id,
                "scope": scope,
                "name": name,
                "count": len(pts),
                "first_step": pts[0]["step"],
                "last_step": pts[-1]["step"],
                "last_seq": max(p["seq"] for p in pts),
                "last_wall": pts[-1]["wall_time"],
                "last_value": pts[-1]["value"],
                "min_value": min(finite, default=None),
                "max_value": max(finite, default=None),
            }
        )
        blocks: dict[int, list[dict]] = {}
        for p in pts:
            blocks.setdefault(p["step"] // 16, []).append(p)
        for block, members in blocks.items():
            good = [p for p in members if math.isfinite(p["value"])]
            row = {"series_id": sid, "level": 0, "block": block, "count": len(members)}
            for end, pick in (("min", min), ("max", max)):
                p = pick(good, key=lambda p: p["value"]) if good else {"value": None, "step": None, "wall_time": None}
                row |= {f"{end}_value": p["value"], f"{end}_step": p["step"], f"{end}_wall": p["wall_time"]}
            rows["summaries"].append(row)
    return rows


def series_points(points: list[dict], sid: int) -> list[dict]:
    return [p for p in points if p["series_id"] == sid]


def migrate(url: str, revision: str, down: bool = False) -> None:
    """Run the project's migrations to `revision`, as `migrations.upgrade` does to head."""
    engine = make_engine(url)
    cfg = alembic_config()
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
        conn.commit()
    engine.dispose()


def stored(value: float | None, sqlite: bool) -> float | None:
    """A value as the 0005 layout stored it: NaN is NULL on SQLite."""
    return None if sqlite and value is not None and math.isnan(value) else value


def fill_0005(url: str) -> dict[str, list[dict]]:
    """Migrate to 0005 and store the rows there with plain inserts; give the rows back."""
    migrate(url, "0005")
    rows = old_rows()
    engine = make_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        for name in ("runs", "series", "points", "summaries", "received"):
            batch = [{k: stored(v, sqlite) if isinstance(v, float) else v for k, v in r.items()} for r in rows[name]]
            columns = [sa.column(k, sa.JSON if k == "config" else None) for k in batch[0]]
            conn.execute(sa.table(name, *columns).insert(), batch)
    engine.dispose()
    return rows


def same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


def table_rows(conn: sa.Connection, name: str, order: str) -> list[dict]:
    return [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {name} ORDER BY {order}"))]


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys() and all(same(g[k], w[k]) for k in w), (g, w)


def test_upgrade_packs_every_point_into_chunks_and_folds_received_seqs(database_url):
    rows = fill_0005(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        before = {name: table_rows(conn, name, order) for name, order in (("runs", "id"), ("series", "id"))}
        before["summaries"] = table_rows(conn, "summaries", "series_id, level, block")
    engine.dispose()

    migrate(database_url, "0006")

    engine = make_engine(database_url)
    assert "points" not in sa.inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0006"
        for name, order in (("runs", "id"), ("series", "id"), ("summaries", "series_id, level, block")):
            assert_same_rows(table_rows(conn, name, order), before[name])
        ranges = conn.execute(sa.text("SELECT run_id, first_seq, last_seq FROM received ORDER BY run_id, first_seq"))
        assert [tuple(r) for r in ranges] == [(RUN, 0, 9_999), (RUN, 20_000, 20_004), (OTHER, 0, 2), (OTHER, 5, 5)]
        chunks = conn.execute(sa.text("SELECT * FROM chunks ORDER BY series_id, first_step, id")).all()
    engine.dispose()

    assert sum(c.count for c in chunks) == len(rows["points"])
    by_series: dict[int, list] = {}
    for c in chunks:
        steps, seqs, epochs = (np.frombuffer(b, "<i8") for b in (c.steps, c.seqs, c.epochs))
        walls, vals = (np.frombuffer(b, "<f8") for b in (c.walls, c.vals))
        assert 0 < c.count <= CHUNK and all(len(a) == c.count for a in (steps, seqs, epochs, walls, vals))
        assert (c.first_step, c.last_step) == (steps.min(), steps.max())
        assert c.nonfinite == np.count_nonzero(~np.isfinite(vals))
        key = np.lexsort((seqs, walls, steps))
        assert (key == np.arange(c.count)).all(), "a chunk is sorted by (step, wall, seq)"
        by_series.setdefault(c.series_id, []).append((steps, seqs, epochs, walls, vals))
    long_series = next(s["id"] for s in rows["series"] if (s["run_id"], s["name"]) == (RUN, "loss"))
    assert [len(parts[0]) for parts in by_series[long_series]] == [4096, 4096, 1808]

    for s in rows["series"]:
        want = sorted(series_points(rows["points"], s["id"]), key=lambda p: (p["step"], p["wall_time"], p["seq"]))
        steps, seqs, epochs, walls, vals = (np.concatenate(a) for a in zip(*by_series[s["id"]]))
        assert steps.tolist() == [p["step"] for p in want]
        assert seqs.tolist() == [p["seq"] for p in want]
        assert epochs.tolist() == [-1 if p["epoch"] is None else p["epoch"] for p in want]
        assert walls.tolist() == [p["wall_time"] for p in want]
        expected = np.array([p["value"] for p in want], np.float64)
        # Bit for bit: NaN (NULL on SQLite before) is the one NaN, infinities keep their sign.
        assert vals.view("<u8").tolist() == np.where(np.isnan(expected), np.nan, expected).view("<u8").tolist()


def test_downgrade_restores_points_and_received_seqs(database_url):
    fill_0005(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        points = table_rows(conn, "points", "series_id, step, seq")
        received = table_rows(conn, "received", "run_id, seq")
    engine.dispose()

    migrate(database_url, "head")
    migrate(database_url, "0005", down=True)

    engine = make_engine(database_url)
    names = sa.inspect(engine).get_table_names()
    assert "points" in names and "chunks" not in names
    with engine.connect() as conn:
        assert_same_rows(table_rows(conn, "points", "series_id, step, seq"), points)
        assert_same_rows(table_rows(conn, "received", "run_id, seq"), received)
    engine.dispose()
    migrate(database_url, "head")  # and up again


def test_server_reads_exports_and_deduplicates_what_was_stored_before_the_upgrade(database_url, start_server):
    rows = fill_0005(database_url)
    with start_server().client() as api:  # the server migrates the 0005 database as it starts
        listed = {(s["scope"], s["name"]): s for s in api.get(f"/api/v1/runs/{RUN}/series").json()}
        mine = [s for s in rows["series"] if s["run_id"] == RUN]
        assert {k: v["count"] for k, v in listed.items()} == {(s["scope"], s["name"]): s["count"] for s in mine}
        assert listed[("batch", "loss")]["count"] == 10_000

        for s in mine:
            response = api.get(f"/api/v1/runs/{RUN}/series/{s['scope']}/{s['name']}", params={"max_points": 20_000})
            assert response.status_code == 200, response.text
            data = response.json()
            want = sorted(series_points(rows["points"], s["id"]), key=lambda p: (p["step"], p["wall_time"], p["seq"]))
            assert (data["count"], data["downsampled"]) == (len(want), False)
            assert data["steps"] == [p["step"] for p in want]
            assert data["values"] == [encode_float(p["value"]) for p in want]
            assert data["wall_times"] == [p["wall_time"] for p in want]

        response = api.get(f"/api/v1/runs/{RUN}/export.jsonl")
        assert response.status_code == 200, response.text
        exported = sorted((json.loads(line) for line in response.text.splitlines()), key=lambda r: r["seq"])
        assert exported == [{**r, "metrics": {k: encode_float(v) for k, v in r["metrics"].items()}} for r in records()]

        # Seqs 5 and 20002 were received before the upgrade; 15000 falls in the gap, 10000
        # right after the first range.
        def record(seq: int) -> dict:
            return {"seq": seq, "scope": "batch", "step": seq, "wall_time": W0 + seq, "metrics": {"loss": 0.5}}

        answer = post_logs(api, RUN, [record(5), record(20_002), record(15_000), record(10_000)]).json()
        assert (answer["accepted"], answer["duplicates"]) == (2, 2)
        answer = post_logs(api, RUN, [record(15_000), record(10_000), record(9_999), record(15_001)]).json()
        assert (answer["accepted"], answer["duplicates"]) == (1, 3)
        assert post_logs(api, OTHER, [record(3), record(5)]).json()["accepted"] == 1
        listed = {(s["scope"], s["name"]): s for s in api.get(f"/api/v1/runs/{RUN}/series").json()}
        assert listed[("batch", "loss")]["count"] == 10_003
        data = api.get(f"/api/v1/runs/{RUN}/series/batch/loss", params={"max_points": 20_000}).json()
        assert data["steps"][-3:] == [10_000, 15_000, 15_001] and data["values"][-3:] == [0.5, 0.5, 0.5]
