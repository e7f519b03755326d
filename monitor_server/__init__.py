"""fitwatch server: runs, metrics and commands over HTTP, stored in SQLite or PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["__version__", "create_app"]


def __getattr__(name: str):
    # Importing the package stays cheap; the app and its dependencies load on first use.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
