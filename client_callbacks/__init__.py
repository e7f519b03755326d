"""fitwatch client: stream Keras training to a fitwatch server and take its commands.

`RemoteCallback` is loaded on first use, so importing this package does not import
Keras or TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .client import FitwatchWarning, MonitorClient

if TYPE_CHECKING:
    from .keras import RemoteCallback

__all__ = ["FitwatchWarning", "MonitorClient", "RemoteCallback"]


def __getattr__(name: str):
    if name == "RemoteCallback":
        from .keras import RemoteCallback

        return RemoteCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
