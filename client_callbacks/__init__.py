"""fitwatch client: stream Keras training to a fitwatch server and take its commands.

The public face is what this package exports (`__all__`):

- `RemoteCallback`: the Keras callback;
- `MonitorClient`: the framework-free client underneath, for any training loop;
- `FitwatchWarning`: what every delivery problem is shown as;
- for the `fitwatch` command: `sync_spool` (with `SyncOutcome`) uploads what a training
  left in its spool; `server_url`, `server_token` and `describe_response` resolve a server
  and its token as a training does, and say in one line why it refused a request.

Besides these, `client_callbacks.wire` (the wire contract, shared with the server) and
`python -m client_callbacks.demo` (an example training) are public. Every other module is
internal: its names may change at any time. They import downwards, in layers: the Keras
layer (`keras`, `fitinfo`, `steering`, `handlers`, `runguard`, `optimizers`) uses the
client (`client`, with `inbox`, `notices`, `context`, `system`), which uses the sender
(`sender`, `sender_thread`, `operations`) and the `poller`, which use the `spool` (and
`sync`, which also uses it), which uses `transport`, which uses `wire`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .client import MonitorClient
    from .keras import RemoteCallback
    from .notices import FitwatchWarning
    from .sync import SyncOutcome, sync_spool
    from .transport import describe_response, server_token, server_url

# Each name of the face is loaded on first use: importing the package (or `wire`, which the
# server imports) loads neither the client nor Keras.
_FACE = {
    "FitwatchWarning": "notices",
    "MonitorClient": "client",
    "RemoteCallback": "keras",
    "SyncOutcome": "sync",
    "describe_response": "transport",
    "server_token": "transport",
    "server_url": "transport",
    "sync_spool": "sync",
}
__all__ = [
    "FitwatchWarning",
    "MonitorClient",
    "RemoteCallback",
    "SyncOutcome",
    "describe_response",
    "server_token",
    "server_url",
    "sync_spool",
]


def __getattr__(name: str):
    if name in _FACE:
        return getattr(importlib.import_module(f".{_FACE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
