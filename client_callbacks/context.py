"""Where a run ran: the machine, the Python and packages, the command line, the code.

Recorded once when the run starts, under the run config's `context` key, so the run page
can say which code on which machine made the curves, and the compare page what differs
between two runs besides their hyperparameters. Everything is read without importing a
framework; whatever cannot be read is left out, never an error.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch", "numpy")
GIT_TIMEOUT_S = 5.0


def run_context(cwd: str | Path | None = None) -> dict[str, Any]:
    """Host, OS, Python, installed framework versions, command line, and the git commit,
    branch and dirty flag of `cwd` (default: the working directory) when it is in a
    repository and `git` is installed."""
    context: dict[str, Any] = {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "argv": list(sys.argv),
        "packages": _versions(),
    }
    git = git_state(cwd)
    if git:
        context["git"] = git
    return context


def _versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def git_state(cwd: str | Path | None = None) -> dict[str, Any] | None:
    """{commit, branch, dirty} of the repository holding `cwd`; None outside one or
    without git. `branch` is None on a detached head."""
    commit = _git(cwd, "rev-parse", "HEAD")
    if commit is None:
        return None
    branch = _git(cwd, "symbolic-ref", "--short", "-q", "HEAD")
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "branch": branch or None, "dirty": bool(status)}


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
