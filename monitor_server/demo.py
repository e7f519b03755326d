"""`fitwatch demo`: a server and an example training, supervised as one command.

Both run as child processes in sessions of their own, so that only this process hears
Ctrl-C, SIGTERM or SIGHUP (a closed terminal, a process manager) and stops them in
order: the training first (SIGINT, so that it ends its run as interrupted while the
server can still hear it), then the server. On Linux the children are also told to stop
if this process dies without a word (SIGKILL), so the port is never left taken.
The console shows the dashboard's address, the run and errors, no request log.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import webbrowser
from contextlib import suppress

import httpx

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
PR_SET_PDEATHSIG = 1
DEFAULT_PORT = 8000


class Stop(Exception):
    """A stop signal arrived."""


def _raise_stop(signum, _frame):
    raise Stop(signal.Signals(signum).name)


def _die_with_parent():
    """A function for the child to run before exec: SIGTERM when the demo process dies
    (Linux). `prctl` is looked up here, in the parent, not in the forked child."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent())


def _stop(proc: subprocess.Popen | None, first: int, wait: float) -> None:
    """Send `first`, wait up to `wait` s, then kill."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(first)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(url: str, server: subprocess.Popen, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        with suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return True
        time.sleep(0.1)
    return False


def _free(port: int) -> bool:
    """Whether the server could listen on `port` (bound as uvicorn binds it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def choose_port(asked: int | None) -> int | None:
    """The port to serve on: the one asked for, or DEFAULT_PORT, or when that is taken (by
    another fitwatch, say) any free one; None when the port asked for is taken. Checked
    before the server starts: another server on the port would answer its health check."""
    if asked is not None:
        if _free(asked):
            return asked
        print(f"fitwatch demo: port {asked} is taken; choose another with --port", file=sys.stderr)
        return None
    if _free(DEFAULT_PORT):
        return DEFAULT_PORT
    port = _any_free_port()
    print(f"fitwatch demo: port {DEFAULT_PORT} is taken: the dashboard is on port {port} instead", flush=True)
    return port


def run(port: int | None, db: str, epochs: int, browser: bool, exit_after: bool) -> int:
    """Serve on `port` (see `choose_port`) with `db`, train the example, keep serving until
    a stop signal (or, with `exit_after`, until the training ends)."""
    port = choose_port(port)
    if port is None:
        return 1
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = training = None
    previous = {sig: signal.signal(sig, _raise_stop) for sig in STOP_SIGNALS}
    try:
        server = _spawn(
            [
                sys.executable,
                "-m",
                "monitor_server",
                "--port",
                str(port),
                "--db",
                db,
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env,
        )
        if not _wait_ready(url, server):
            print(f"fitwatch demo: the server did not start on port {port} (its error is above)", file=sys.stderr)
            return 1
        print(f"\nfitwatch dashboard: {url}  (Ctrl-C to stop)\n", flush=True)
        if browser:
            webbrowser.open(url)
        training = _spawn([sys.executable, "-m", "client_callbacks.demo", "--url", url, "--epochs", str(epochs)], env)
        if training.wait() != 0:
            print(
                "fitwatch demo: the example training failed (it needs TensorFlow: pip install 'fitwatch[tensorflow]')",
                file=sys.stderr,
            )
            if exit_after:
                return 1
        if not exit_after:
            server.wait()
        return 0
    except Stop as stop:
        print(f"\nfitwatch demo: {stop}, stopping", file=sys.stderr)
        return 0
    finally:
        # Further signals must not cut the clean-up short.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        _stop(training, signal.SIGINT, 15)
        _stop(server, signal.SIGTERM, 10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
