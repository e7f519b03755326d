"""The browser the page tests drive: Debian's Chromium under Playwright, headless, and a
watch on a page's errors."""

from __future__ import annotations

import os
import shutil

CHROMIUM = os.environ.get("FITWATCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def watch(page, errors: list[str], console: bool = True) -> None:
    """Collect the page's failed scripts and, with `console`, its console errors into
    `errors`, for the test to fail on."""
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    if console:
        page.on(
            "console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        )
