"""Migration 0007: the 16-step summary level goes, and a downgrade computes it again from the
chunks exactly as 0006 kept it; the server reads fine ranges from the chunks instead."""

from __future__ import annotations

import json
import math

import sqlalchemy as sa

from monitor_server.infra.db import make_engine
from tests.server.test_migration_0006 import assert_same_rows, database_url, migrate, table_rows
from tests.support.api import JSON, create_run

__all__ = ["database_url"]  # the fixture: a database of its own at no revision

NAN, INF = float("nan"), float("inf")


def value(step: int, writer: int) -> float:
    """Spikes, ties, NaN-only blocks, infinities."""
    if 32 <= step < 48:
        return NAN  # a block with no finite value
    if step % 97 == 0:
        return INF if writer else -INF
    return float((step * 7 + writer * 3) % 11)


def records() -> list[dict]:
    out = []
    for writer, steps in enumerate((range(0, 3000), range(1000, 1100))):  # a range logged twice
        for step in steps:
            seq = writer * 10_000 + step
            wall = 1.7e9 + seq
            out.append(
                {
                    "seq": seq,
                    "scope": "batch",
                    "step": step,
                    "wall_time": wall,
                    "metrics": {"loss": value(step, writer)},
                }
            )
    return out


def level_zero(recs: list[dict], series_id: int) -> list[dict]:
    """What 0006 kept at level 0: per 16 steps, the count and the first lowest and highest
    finite point in (step, wall, seq) order."""
    points = sorted(recs, key=lambda r: (r["step"], r["wall_time"], r["seq"]))
    blocks: dict[int, list[dict]] = {}
    for r in points:
        blocks.setdefault(r["step"] // 16, []).append(r)
    rows = []
    for block, members in sorted(blocks.items()):
        good = [r for r in members if math.isfinite(r["metrics"]["loss"])]
        row = {"series_id": series_id, "level": 0, "block": block, "count": len(members)}
        for end, pick in (("min", min), ("max", max)):
            r = pick(good, key=lambda r: r["metrics"]["loss"]) if good else None
            row |= {
                f"{end}_value": r and r["metrics"]["loss"],
                f"{end}_step": r and r["step"],
                f"{end}_wall": r and r["wall_time"],
            }
        rows.append(row)
    return rows


def test_the_16_step_level_goes_and_comes_back_on_downgrade(database_url, start_server):
    recs = records()
    with start_server().client() as api:  # migrates to the newest revision
        create_run(api, "r")
        for i in range(0, len(recs), 700):
            body = json.dumps({"records": recs[i : i + 700]})  # NaN and Infinity as bare tokens
            assert api.post("/api/v1/runs/r/logs", content=body, headers=JSON).status_code == 200
        # Finer than the coarsest kept level allows: read from the chunks, extremes kept.
        fine = api.get("/api/v1/runs/r/series/batch/loss", params={"since": 100, "until": 2000, "max_points": 100})
        data = fine.json()
        assert data["downsampled"] and {0.0, 10.0, "Infinity", "-Infinity"} <= set(data["values"])

    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM summaries WHERE level = 0").scalar() == 0
        series_id = conn.exec_driver_sql("SELECT id FROM series").scalar()
        kept = table_rows(conn, "summaries", "series_id, level, block")
    engine.dispose()

    migrate(database_url, "0006", down=True)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        zero = table_rows(conn, "summaries WHERE level = 0", "block")
        rest = table_rows(conn, "summaries WHERE level > 0", "series_id, level, block")
    engine.dispose()
    assert_same_rows(zero, level_zero(recs, series_id))
    assert_same_rows(rest, kept)

    migrate(database_url, "head")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM summaries WHERE level = 0")).scalar() == 0
    engine.dispose()
