"""`fitwatch sync`: upload spool files that a training left behind, mark them uploaded,
and clean the uploaded ones away (`sync_spool`, the command's whole work).

An uploaded file is kept, renamed `<name>.jsonl.synced`, so that syncing it again says it
is already uploaded (the way `wandb sync` marks synced runs); `--clean` deletes those.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .spool import SYNCED, LockedError, SpoolFile, default_dir, deliver_file, synced_path
from .transport import Retry, http_client, normalize_url, server_token


@dataclass
class SyncOutcome:
    delivered: bool  # everything in the file is on the server (now or before); False: a failure
    message: str  # one line for the user


def sync_spool(
    files: Iterable[str | os.PathLike] = (),
    *,
    all_pending: bool = False,
    clean: bool = False,
    folder: str | os.PathLike | None = None,
    url: str | None = None,
    token: str | None = None,
) -> Iterator[SyncOutcome]:
    """Upload the spool `files`, and with `all_pending` every file of `folder` not yet
    uploaded (default `FITWATCH_SPOOL_DIR` or `~/.cache/fitwatch/spool`); with `clean`,
    then delete the uploaded ones there. One outcome for each file as it is done, and a
    line for what `all_pending` and `clean` found."""
    folder = Path(folder) if folder else default_dir()
    paths = [Path(p) for p in files] + (pending(folder) if all_pending else [])
    if all_pending and not paths:
        yield SyncOutcome(True, f"nothing to upload in {folder}")
    for path in paths:
        yield sync_file(path, url=url, token=token)
    if clean:
        removed = remove_synced(folder)
        yield SyncOutcome(True, f"removed {len(removed)} uploaded spool file(s) from {folder}")


def pending(folder: Path) -> list[Path]:
    """Spool files in `folder` not uploaded yet, for any server, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)


def remove_synced(folder: Path) -> list[Path]:
    """Delete the uploaded files in `folder`; the ones deleted."""
    removed = sorted(folder.glob(f"*.jsonl{SYNCED}")) if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def sync_file(path: Path, url: str | None = None, token: str | None = None, timeout: float = 30.0) -> SyncOutcome:
    """`fitwatch sync FILE`: upload a spool file to its server (or `url`) and mark it synced.

    Safe to repeat: a file uploaded before is reported as such, and whatever the server
    already has is counted as duplicates.
    """
    path = Path(path)
    if path.is_dir():
        return SyncOutcome(False, f"fitwatch sync: {path} is a folder, not a fitwatch spool file")
    synced = synced_path(path)
    if not path.exists() or path == synced:
        if synced.exists():
            return SyncOutcome(True, f"{path}: already uploaded ({synced})")
        return SyncOutcome(False, f"fitwatch sync: {path}: no such spool file")
    spool = SpoolFile(path)
    try:
        if not spool.open(create=False):  # uploaded by another process a moment ago
            return SyncOutcome(synced.exists(), f"{path}: already uploaded ({synced})")
    except LockedError:
        return SyncOutcome(False, f"fitwatch sync: {path} is in use by a running training, which sends it itself")
    except ValueError as exc:  # it names the file
        return SyncOutcome(False, f"fitwatch sync: {exc}")
    except OSError as exc:
        return SyncOutcome(False, f"fitwatch sync: {path}: {exc.strerror or exc}")
    token = server_token(token)
    target = normalize_url(url or spool.url)
    try:
        with http_client(target, token, timeout) as http:
            done = deliver_file(http, spool)
    except Retry as exc:
        return SyncOutcome(False, f"fitwatch sync: {path}: {target} did not take it ({exc}); the file is kept")
    except ValueError as exc:
        return SyncOutcome(False, f"fitwatch sync: {path}: {exc}; the file is kept")
    except OSError as exc:
        return SyncOutcome(False, f"fitwatch sync: {path}: {exc.strerror or exc}")
    return SyncOutcome(
        True, f"{path}: {done.accepted} records stored, {done.duplicates} already there; marked uploaded ({synced})"
    )
