"""The spool file on its own: crash-torn lines, locking, and which files a client adopts."""

from __future__ import annotations

import pytest

from client_callbacks.spool import LockedError, SpoolFile, leftovers
from client_callbacks.sync import sync_file
from tests.support.servers import free_port


def op(seq: int) -> dict:
    return {
        "op": "logs",
        "records": [{"seq": seq, "scope": "batch", "step": seq, "wall_time": 1.0, "metrics": {"loss": float("nan")}}],
    }


def test_operations_round_trip_with_nan(tmp_path):
    spool = SpoolFile(tmp_path / "a.jsonl", "http://h:1", "run")
    spool.append([op(0), op(1)])
    spool.close()
    again = SpoolFile(tmp_path / "a.jsonl")
    assert again.open(create=False) and (again.url, again.run_id) == ("http://h:1", "run")
    ops = [o for _, o in again.ops()]
    assert [o["records"][0]["seq"] for o in ops] == [0, 1]
    assert str(ops[0]["records"][0]["metrics"]["loss"]) == "nan"
    again.close()


def test_a_line_torn_by_a_crash_is_cut_before_the_next_append(tmp_path):
    path = tmp_path / "a.jsonl"
    spool = SpoolFile(path, "http://h:1", "run")
    spool.append([op(0)])
    spool.close()
    with open(path, "ab") as f:
        f.write(b'{"op": "logs", "rec')  # the process died here
    spool = SpoolFile(path)
    assert [o["records"][0]["seq"] for _, o in spool.ops()] == [0]  # the torn line is not read
    spool.append([op(1)])
    assert [o["records"][0]["seq"] for _, o in spool.ops()] == [0, 1]
    spool.close()


def test_a_file_in_use_is_locked_against_a_second_sender(tmp_path):
    path = tmp_path / "a.jsonl"
    owner = SpoolFile(path, "http://h:1", "run")
    owner.append([op(0)])
    with pytest.raises(LockedError):
        SpoolFile(path).open(create=False)
    owner.close()
    later = SpoolFile(path)
    assert later.open(create=False)
    later.close()


def test_leftovers_are_the_files_for_the_same_server(tmp_path):
    for name, url in (("mine", "http://h:1/"), ("other", "http://elsewhere:1")):
        spool = SpoolFile(tmp_path / f"{name}.jsonl", url, name)
        spool.append([op(0)])
        spool.close()
    (tmp_path / "junk.jsonl").write_text("not json\n")
    assert leftovers(tmp_path, "http://h:1") == [tmp_path / "mine.jsonl"]


def test_sync_keeps_the_file_when_the_server_is_down(tmp_path):
    path = tmp_path / "a.jsonl"
    spool = SpoolFile(path, f"http://127.0.0.1:{free_port()}", "run")
    spool.append([op(0)])
    spool.close()
    outcome = sync_file(path, timeout=2)
    assert not outcome.delivered and "the file is kept" in outcome.message
    assert path.exists()


def test_a_file_uploaded_by_another_process_is_not_made_again(tmp_path):
    path = tmp_path / "a.jsonl"
    owner = SpoolFile(path, "http://h:1", "run")
    owner.append([op(0)])
    with pytest.raises(LockedError):
        SpoolFile(path).open(create=False)
    synced = owner.mark_synced()  # the other process uploaded it
    assert synced == tmp_path / "a.jsonl.synced" and synced.exists()
    late = SpoolFile(path)
    assert late.open(create=False) is False and not path.exists()  # no empty file in its place
    assert late.mark_synced() == synced and synced.read_text().count("\n") == 2  # the upload is kept


def test_an_empty_or_foreign_file_is_not_uploaded(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    outcome = sync_file(empty)
    assert not outcome.delivered and "not a fitwatch spool file" in outcome.message
    missing = sync_file(tmp_path / "missing.jsonl")
    assert not missing.delivered and "no such spool file" in missing.message
