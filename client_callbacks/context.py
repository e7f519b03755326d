"""Where a run ran: the machine, the Python and packages, the command line, the code.

Recorded once when the run starts, under the run config's `context` key, so the run page
can say which code on which machine made the curves, and the compare page what differs
between two runs besides their hyperparameters. Everything is read without importing a
framework; whatever cannot be read is left out, never an error.
"""

from __future__ import annotations

import platform
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# A flag whose name holds one of these words has its value kept out of the record
# (`--api-key=…`, `--db-password …`, `wandb.api_key=…`), as has the password of a URL.
SECRET_WORDS = re.compile(r"token|passw|secret|credential|(?:^|[-_.])(?:api)?(?:key|auth)(?:$|[-_.])", re.IGNORECASE)
URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s?#]*", re.IGNORECASE)  # up to the query
HIDDEN = "***"
PACKAGES = ("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch", "numpy")
GIT_TIMEOUT_S = 5.0


def run_context(cwd: str | Path | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """Host, OS, Python, installed framework versions, command line (`argv`, default
    `sys.argv`), and the git commit, branch and dirty flag of `cwd` (default: the working
    directory) when it is in a repository and `git` is installed."""
    context: dict[str, Any] = {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "argv": redact_argv(sys.argv if argv is None else argv),
        "packages": _versions(),
    }
    git = git_state(cwd)
    if git:
        context["git"] = git
    return context


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with secrets hidden: the page shows it to everyone who reads runs.
    `--api-key=V`, `--api-key V` and `api_key=V` (an override, as Hydra takes them) hide
    V; so does a URL its password. A `--no-…` flag takes no value."""
    out: list[str] = []
    value_is_secret = False  # the previous argument was a secret flag without `=`
    for arg in argv:
        if value_is_secret and not arg.startswith("--"):
            out.append(HIDDEN)
            value_is_secret = False
            continue
        name, eq, _value = arg.partition("=")
        secret = SECRET_WORDS.search(name.lstrip("-")) is not None and not name.startswith("--no-")
        secret = secret and (eq != "" or name.startswith("-"))
        value_is_secret = secret and not eq
        out.append(f"{name}={HIDDEN}" if secret and eq else URL.sub(_hide_password, arg))
    return out


def _hide_password(match: re.Match) -> str:
    """`scheme://user:***@host/path`. The password ends at the last @ before the query (it
    may hold / or @); `host:8080/path@x` has a port, not a password."""
    scheme, rest = match.group(0).split("://", 1)
    userinfo, at, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not colon or "/" in user or re.match(r"\d+/", password):
        return match.group(0)
    return f"{scheme}://{user}:{HIDDEN}@{host}"


def _versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def git_state(cwd: str | Path | None = None) -> dict[str, Any] | None:
    """{commit, branch, dirty} of the repository holding `cwd`; None outside one, before its
    first commit, or without git. `branch` is None on a detached head. One git process
    (`status --porcelain=v2 --branch`): on a slow disk or a big repository each costs."""
    status = _git(cwd, "status", "--porcelain=v2", "--branch", "--untracked-files=no")
    if status is None:
        return None
    heads = dict(line[2:].split(" ", 1) for line in status.splitlines() if line.startswith("# ") and " " in line[2:])
    commit = heads.get("branch.oid", "(initial)")
    if commit == "(initial)":
        return None
    branch = heads.get("branch.head", "(detached)")
    dirty = any(not line.startswith("#") for line in status.splitlines())
    return {"commit": commit, "branch": None if branch == "(detached)" else branch, "dirty": dirty}


def _git(cwd: str | Path | None, *args: str) -> str | None:
    """git's answer, or None on any failure: a context is never worth a training. No
    optional locks: a status must not make the user's own git commands fail."""
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except Exception:  # no git, or it hung
        return None
    return done.stdout.decode(errors="replace").strip() if done.returncode == 0 else None
