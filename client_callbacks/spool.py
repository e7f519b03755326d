"""The on-disk spool: what the server could not take yet, kept for later.

A spool file holds one run's unsent operations, one JSON object a line, after a header
naming the server and the run:

    {"fitwatch_spool": 1, "url": "http://127.0.0.1:8000", "run_id": "..."}
    {"op": "create", "body": {...}}
    {"op": "logs", "records": [...]}
    {"op": "ack", "id": 3, "body": {...}}
    {"op": "patch", "body": {"status": "finished", "reason": "..."}}

Every operation is idempotent on the server (a run is created once by id, a record is
stored once by `(run, seq)`, acks and patches repeat harmlessly), so a file can be
replayed from the start after any interruption and nothing is stored twice. While a
process writes or sends a file it holds an exclusive `flock` on it, so two processes never
send the same file at once.

A running client deletes its own file once everything in it is delivered. A file left
behind (the training ended before the server came back) is uploaded later by another
client for the same server or by `fitwatch sync` (see `sync`); it is then kept, renamed
`<name>.jsonl.synced`, so that syncing it again says it is already uploaded.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from .operations import Op
from .transport import Rejected, normalize_url, send
from .wire import ENV_SPOOL_DIR

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process per spool folder.
    fcntl = None

log = logging.getLogger("fitwatch")

FORMAT = 1
SYNCED = ".synced"


def default_dir() -> Path:
    """`FITWATCH_SPOOL_DIR`, else `$XDG_CACHE_HOME/fitwatch/spool` (`~/.cache/...`)."""
    if os.environ.get(ENV_SPOOL_DIR):
        return Path(os.environ[ENV_SPOOL_DIR])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fitwatch" / "spool"


def encode(op: Op) -> bytes:
    """One line of a spool file. Python's json writes NaN and Infinity as bare tokens,
    which the server reads."""
    return (json.dumps(op, separators=(",", ":")) + "\n").encode()


class LockedError(RuntimeError):
    """Another process holds the spool file."""


class SpoolFile:
    """One run's spool file, locked for as long as this object has it open."""

    def __init__(self, path: Path, url: str | None = None, run_id: str | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._handle = None
        self.url = url
        self.run_id = run_id

    def open(self, create: bool) -> bool:
        """Lock the file (creating it with a header when `create`); False if absent."""
        if self._handle is not None:
            return True
        # Held open: the lock lives as long as the handle. An existing file is never created
        # again: another process may have just uploaded it and renamed it .synced. Unbuffered:
        # a write the disk refused must not linger in a buffer and land later.
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+b", buffering=0)  # noqa: SIM115
        else:
            try:
                handle = open(self.path, "r+b", buffering=0)  # noqa: SIM115
            except FileNotFoundError:
                return False
        try:
            there = self._read_header(handle, create)
        except BaseException:
            if create and os.fstat(handle.fileno()).st_size == 0:
                self.path.unlink(missing_ok=True)  # ours, and the disk refused even its header
            handle.close()  # closing releases the lock
            raise
        if not there:
            handle.close()
            return False
        self._handle = handle
        return True

    def _read_header(self, handle, create: bool) -> bool:
        """Lock the file and check its header (writing one in a new file); False when the
        file was renamed while the lock was awaited."""
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise LockedError(f"{self.path} is in use by another process") from None
        if not create and not _still_at(handle, self.path):  # renamed while we waited for the lock
            return False
        handle.seek(0)
        first = handle.readline()
        if first.endswith(b"\n"):
            # Checked before anything is cut: a file that is not ours stays as it is.
            try:
                header = json.loads(first)
            except ValueError:
                header = None
            if not isinstance(header, dict) or header.get("fitwatch_spool") != FORMAT:
                raise ValueError(f"{self.path} is not a fitwatch spool file")
            self.url = self.url or header["url"]
            self.run_id = self.run_id or header["run_id"]
            _drop_torn_tail(handle)
        elif create:  # new, or a header a crash cut short
            handle.truncate(0)
            _write(handle, 0, encode({"fitwatch_spool": FORMAT, "url": self.url, "run_id": self.run_id}))
        else:
            raise ValueError(f"{self.path} is {'empty: ' if not first else ''}not a fitwatch spool file")
        return True

    def append(self, ops: list[Op]) -> None:
        """Write operations at the end, on disk before this returns. Raises OSError when the
        disk refuses them, leaving the file as it was."""
        if not ops:
            return
        with self._lock:
            self.open(create=True)
            _write(self._handle, self._handle.seek(0, os.SEEK_END), b"".join(encode(op) for op in ops))

    def ops(self, start: int = 0) -> Iterator[tuple[int, Op]]:
        """(offset after the line, operation) for each operation from byte `start` on."""
        with open(self.path, "rb") as reader:
            header = reader.readline()
            reader.seek(max(start, len(header)))
            for line in reader:
                if not line.endswith(b"\n"):
                    break  # a line cut short by a crash: never acknowledged as written
                yield reader.tell(), self._op(line)

    def _op(self, line: bytes) -> Op:
        try:
            op = json.loads(line)
        except ValueError:
            op = None
        if not isinstance(op, dict) or "op" not in op:
            raise ValueError("a line is not a fitwatch spool operation: not a fitwatch spool file, or a damaged one")
        return op

    def read(self, start: int, limit: int) -> list[tuple[int, Op]]:
        """Up to `limit` of `ops(start)`: what a caller holding the writers off may send."""
        ops = self.ops(start)
        try:
            return list(itertools.islice(ops, limit))
        finally:
            ops.close()

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:  # absent, or the folder cannot hold it
            return 0

    def remove(self) -> None:
        """Delete the file: everything in it was delivered."""
        with self._lock:
            self.path.unlink(missing_ok=True)
            self.close()

    def mark_synced(self) -> Path:
        """Keep the delivered file as `<name>.synced`, out of the way of the next client."""
        with self._lock:
            synced = synced_path(self.path)
            with contextlib.suppress(FileNotFoundError):  # another process marked it first
                self.path.replace(synced)
            self.close()
            return synced

    def acked(self) -> set[int]:
        """The ids of the commands this file acknowledges."""
        return {op["id"] for _, op in self.ops() if op["op"] == "ack"}

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(OSError):  # nothing is buffered: there is nothing to lose
                handle.close()  # closing releases the lock


def _write(handle, end: int, data: bytes) -> None:
    """Write `data` at `end` and sync it; on failure cut the file back to `end`, so that no
    part of it is ever read as written, and raise OSError."""
    try:
        view = memoryview(data)
        while view:
            view = view[handle.write(view) :]
        os.fsync(handle.fileno())
    except OSError:
        with contextlib.suppress(OSError):  # a torn line is cut on the next open in any case
            handle.truncate(end)
        raise


def _still_at(handle, path: Path) -> bool:
    """Whether the open file is still the one at `path`."""
    try:
        here, there = os.fstat(handle.fileno()), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _drop_torn_tail(handle) -> None:
    """Cut a last line that a crash left half written, so the next append starts clean."""
    end = handle.seek(0, os.SEEK_END)
    pos = end
    while pos > 0:
        step = min(pos, 1 << 16)
        handle.seek(pos - step)
        newline = handle.read(step).rfind(b"\n")
        if newline >= 0:
            keep = pos - step + newline + 1
            break
        pos -= step
    else:
        keep = 0
    if keep < end:
        handle.truncate(keep)


def leftovers(folder: Path, url: str, exclude: Path | None = None) -> list[Path]:
    """Spool files in `folder` for the server at `url`, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("*.jsonl"):
        if exclude is not None and path == exclude:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                header = json.loads(f.readline() or "{}")
        except (OSError, ValueError):
            continue
        if header.get("fitwatch_spool") == FORMAT and normalize_url(header.get("url") or "") == normalize_url(url):
            found.append(path)
    return sorted(found, key=lambda p: p.stat().st_mtime)


def acked_in(paths: list[Path], run_id: str) -> set[int]:
    """The command ids that the spool files of run `run_id` among `paths` acknowledge."""
    acked: set[int] = set()
    for path in paths:
        spool = SpoolFile(path)
        try:
            with open(path, encoding="utf-8") as f:
                if json.loads(f.readline() or "{}").get("run_id") != run_id:
                    continue
            acked |= spool.acked()
        except (OSError, ValueError):
            continue
    return acked


def left_in(spool: SpoolFile, start: int = 0) -> tuple[int, int]:
    """(records, other operations) in the file from byte `start` on."""
    records = others = 0
    for _, op in spool.ops(start):
        if op["op"] == "logs":
            records += len(op["records"])
        else:
            others += 1
    return records, others


@dataclass
class Delivery:
    offset: int = 0  # 0 when the file is done, else where delivery paused
    accepted: int = 0
    duplicates: int = 0


def deliver_file(
    http: httpx.Client, spool: SpoolFile, start: int = 0, stop: Callable[[], bool] = lambda: False
) -> Delivery:
    """Send a spool file's operations from byte `start`, then mark it synced.

    Stops early, and says where, when `stop()` turns true. Raises `Retry` when the server
    fails part way; the file stays.
    """
    done = Delivery()
    if not spool.open(create=False):
        return done
    try:
        for offset, op in spool.ops(start):
            try:
                answer = send(http, spool.run_id, op)
            except Rejected as exc:
                log.warning(
                    "fitwatch: the server refused a %s request from %s (%s); skipped", op["op"], spool.path, exc
                )
                answer = None
            if answer is not None:
                done.accepted += answer["accepted"]
                done.duplicates += answer["duplicates"]
            if stop():
                done.offset = offset
                return done
        spool.mark_synced()
        return done
    finally:
        spool.close()


def synced_path(path: Path) -> Path:
    return path if path.name.endswith(SYNCED) else path.with_name(path.name + SYNCED)
