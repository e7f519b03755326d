"""The `fitwatch` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fitwatch", description="Live training monitor for Keras.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server (flags override FITWATCH_* variables)")
    serve.add_argument("--host", help="address to bind (FITWATCH_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (FITWATCH_PORT, default 8000)")
    serve.add_argument("--db", help="database URL (FITWATCH_DATABASE_URL, default sqlite:///./fitwatch.db)")
    serve.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    demo = commands.add_parser("demo", help="the server on SQLite plus a short example training, live in the browser")
    demo.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    demo.add_argument("--db", default="sqlite:///./fitwatch.db", help="database URL (default sqlite:///./fitwatch.db)")
    demo.add_argument("--epochs", type=int, default=20, help="epochs of the example training (default 20)")
    demo.add_argument("--no-browser", action="store_true", help="do not open a browser")
    demo.add_argument("--exit", action="store_true", help="stop the server when the training ends")
    sync = commands.add_parser("sync", help="upload a spool file that a training could not deliver")
    sync.add_argument("file", nargs="+", help="spool file(s), as named in the client's warning")
    sync.add_argument("--url", help="server (default: the one the file was meant for)")
    sync.add_argument("--token", help="bearer token (default FITWATCH_TOKEN)")
    return parser


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from .access import LOOPBACK_HOSTS
    from .config import Settings

    # Flags become the environment, so every worker process reads the same settings.
    for flag, var in (("host", "FITWATCH_HOST"), ("port", "FITWATCH_PORT"), ("db", "FITWATCH_DATABASE_URL")):
        value = getattr(args, flag)
        if value is not None:
            os.environ[var] = str(value)
    settings = Settings()
    if settings.host not in LOOPBACK_HOSTS and settings.token is None:
        print(
            f"WARNING: fitwatch is listening on {settings.host} with no FITWATCH_TOKEN: anyone who can "
            "reach this port can stop or change your training. Set FITWATCH_TOKEN.",
            file=sys.stderr,
        )
    if args.workers > 1 and not settings.database_url.startswith("postgresql"):
        print(
            "WARNING: with SQLite each worker keeps its live events to itself: a dashboard may miss "
            "points logged through another worker. Use PostgreSQL for --workers > 1.",
            file=sys.stderr,
        )
    uvicorn.run(
        "monitor_server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=args.workers,
        log_level="info",
        # Event streams and command long-polls never end by themselves: cut them at shutdown.
        timeout_graceful_shutdown=3,
    )


def demo(args: argparse.Namespace) -> int:
    import subprocess
    import time
    import webbrowser

    import httpx

    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([sys.executable, "-m", "monitor_server", "--port", str(args.port), "--db", args.db])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print(f"fitwatch demo: the server did not start on port {args.port}", file=sys.stderr)
                return 1
            time.sleep(0.1)
        print(f"\nfitwatch dashboard: {url}  (Ctrl-C to stop)\n", flush=True)
        if not args.no_browser:
            webbrowser.open(url)
        training = [sys.executable, "-m", "client_callbacks.demo", "--url", url, "--epochs", str(args.epochs)]
        if subprocess.run(training).returncode != 0:
            print(
                "fitwatch demo: the example training needs TensorFlow: pip install 'fitwatch[tensorflow]'",
                file=sys.stderr,
            )
            if args.exit:
                return 1
        if not args.exit:
            server.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(10)


def sync(args: argparse.Namespace) -> int:
    from client_callbacks.spool import sync as sync_file
    from client_callbacks.transport import Retry

    failed = 0
    for path in args.file:
        try:
            done = sync_file(path, url=args.url, token=args.token)
        except (OSError, ValueError) as exc:
            print(f"fitwatch sync: {exc}", file=sys.stderr)
            failed += 1
            continue
        except Retry as exc:
            print(f"fitwatch sync: {path}: the server did not take it ({exc}); the file is kept", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: {done.accepted} records stored, {done.duplicates} already there; file removed")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        serve(args)
    elif args.command == "demo":
        return demo(args)
    elif args.command == "sync":
        return sync(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
