"""The `fitwatch` command: serve, demo, sync, export."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence

SIGPIPE_STATUS = 141  # 128 + SIGPIPE: how a shell reports a writer whose reader left


def _parser() -> argparse.ArgumentParser:
    from .domain.schemas import SCOPES

    parser = argparse.ArgumentParser(prog="fitwatch", description="Live training monitor for Keras.")
    parser.add_argument("--version", action="version", version=f"fitwatch {_version()}")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="run the server (flags override FITWATCH_* variables)")
    serve.add_argument("--host", help="address to bind (FITWATCH_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (FITWATCH_PORT, default 8000)")
    serve.add_argument("--db", help="database URL (FITWATCH_DATABASE_URL, default sqlite:///./fitwatch.db)")
    serve.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log every request (FITWATCH_ACCESS_LOG, default on)",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="server log level (FITWATCH_LOG_LEVEL, default info)",
    )

    demo = commands.add_parser("demo", help="the server on SQLite plus a short example training, live in the browser")
    demo.add_argument("--port", type=int, help="port (default 8000, or a free one when 8000 is taken)")
    demo.add_argument("--db", default="sqlite:///./fitwatch.db", help="database URL (default sqlite:///./fitwatch.db)")
    demo.add_argument("--epochs", type=int, default=20, help="epochs of the example training (default 20)")
    demo.add_argument("--no-browser", action="store_true", help="do not open a browser")
    demo.add_argument("--exit", action="store_true", help="stop the server when the training ends")

    sync = commands.add_parser(
        "sync",
        help="upload spool files that a training could not deliver",
        description="Upload spool files. An uploaded file is kept, renamed FILE.synced; "
        "syncing it again says it is already uploaded. --clean deletes uploaded files.",
    )
    sync.add_argument("file", nargs="*", help="spool file(s), as named in the client's warning")
    sync.add_argument("--all", action="store_true", help="every file not yet uploaded in the spool folder")
    sync.add_argument("--clean", action="store_true", help="delete uploaded (.synced) files in the spool folder")
    sync.add_argument("--dir", help="the spool folder (FITWATCH_SPOOL_DIR, default ~/.cache/fitwatch/spool)")
    sync.add_argument("--url", help="server (default: the one the file was meant for)")
    sync.add_argument("--token", help="bearer token (default FITWATCH_TOKEN)")

    export = commands.add_parser("export", help="download a run's records as CSV or JSON lines")
    export.add_argument("run", help="the run's id")
    export.add_argument(
        "--format", choices=["csv", "jsonl"], default="csv", help="default csv (Keras CSVLogger layout)"
    )
    export.add_argument("--scope", choices=SCOPES, help="records of one scope (csv: default epoch)")
    export.add_argument("-o", "--output", help="file to write (default: standard output)")
    export.add_argument("--url", help="server (FITWATCH_URL, default http://127.0.0.1:8000)")
    export.add_argument("--token", help="bearer token (FITWATCH_TOKEN)")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fitwatch")
    except PackageNotFoundError:  # run from a source folder without installing it
        return "(not installed)"


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api.access import LOOPBACK_HOSTS
    from .config import Settings

    # Flags become the environment, so every worker process reads the same settings.
    flags = {
        "host": "FITWATCH_HOST",
        "port": "FITWATCH_PORT",
        "db": "FITWATCH_DATABASE_URL",
        "access_log": "FITWATCH_ACCESS_LOG",
        "log_level": "FITWATCH_LOG_LEVEL",
    }
    for flag, var in flags.items():
        value = getattr(args, flag)
        if value is not None:
            os.environ[var] = ("true" if value else "false") if isinstance(value, bool) else str(value)
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
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=3,
    )
    return 0


def demo(args: argparse.Namespace) -> int:
    from . import demo as supervisor

    return supervisor.run(args.port, args.db, args.epochs, browser=not args.no_browser, exit_after=args.exit)


def sync(args: argparse.Namespace) -> int:
    from client_callbacks import sync_spool

    if not (args.file or args.all or args.clean):
        print("fitwatch sync: name spool files, or use --all or --clean", file=sys.stderr)
        return 2
    undelivered = 0
    for outcome in sync_spool(
        args.file, all_pending=args.all, clean=args.clean, folder=args.dir, url=args.url, token=args.token
    ):
        print(outcome.message, file=sys.stdout if outcome.delivered else sys.stderr)
        undelivered += not outcome.delivered
    return 1 if undelivered else 0


def export(args: argparse.Namespace) -> int:
    import httpx

    from client_callbacks import describe_response, server_token, server_url

    url = server_url(args.url)
    token = server_token(args.token)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    scope = args.scope or ("epoch" if args.format == "csv" else None)
    params = {"scope": scope} if scope else {}
    path = f"/api/v1/runs/{args.run}/export.{args.format}"
    try:
        with httpx.stream("GET", url + path, params=params, headers=headers, timeout=60) as response:
            if not response.is_success:
                response.read()
                print(f"fitwatch export: {describe_response(response)}", file=sys.stderr)
                return 1
            return _write_out(response.iter_bytes(), args.output)
    except httpx.HTTPError as exc:
        print(f"fitwatch export: cannot reach {url} ({exc})", file=sys.stderr)
        return 1


def _write_out(chunks: Iterator[bytes], output: str | None) -> int:
    """Write `chunks` to the file `output` (standard output when None); the exit status."""
    import contextlib

    try:
        with open(output, "wb") if output else contextlib.nullcontext(sys.stdout.buffer) as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
    except BrokenPipeError:
        # The reader left (`| head -1`): stop as quietly as a writer killed by SIGPIPE, with
        # nothing left for Python to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_STATUS
    except OSError as exc:
        print(f"fitwatch export: cannot write {output or 'standard output'}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return {"serve": serve, "demo": demo, "sync": sync, "export": export}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
