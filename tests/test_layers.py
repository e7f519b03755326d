"""The house plan holds: the server's layers import only downwards, no router imports
another, no module imports itself round a circle, and the server reaches the client only
through its public face and the wire contract."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Top to bottom: a module may import its own layer's modules and those of layers below.
SERVER_LAYERS = [
    (
        "wiring",
        (
            "monitor_server",
            "monitor_server.__main__",
            "monitor_server.app",
            "monitor_server.cli",
            "monitor_server.demo",
        ),
    ),
    ("api", ("monitor_server.api",)),
    ("services", ("monitor_server.services",)),
    ("infra", ("monitor_server.infra", "monitor_server.migrations")),
    ("store", ("monitor_server.store",)),
    ("domain", ("monitor_server.domain",)),
    ("base", ("monitor_server.config", "client_callbacks.wire")),
]
ROUTES = "monitor_server.api.routes"
CLIENT_FACE = {"client_callbacks", "client_callbacks.wire"}


def modules(package: str) -> dict[str, Path]:
    found = {}
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "versions" in parts:  # migration scripts: alembic's, run by it
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that module `name` imports (a package's `from . import x`
    counts as importing x)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    found = {**modules("monitor_server"), **modules("client_callbacks")}
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def layer(name: str) -> int | None:
    best = None
    for i, (_, prefixes) in enumerate(SERVER_LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    return None if best is None else best[0]


def test_the_server_imports_only_downwards():
    upward = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        if name.startswith("monitor_server")
        for target in targets
        if layer(target) is not None and layer(target) < layer(name)
    ]
    assert upward == []


def test_no_router_imports_another():
    crossing = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        if name.startswith(ROUTES + ".")
        for target in targets
        if target.startswith(ROUTES + ".")
    ]
    assert crossing == []


def test_the_server_uses_the_client_through_its_face():
    reaching = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        if name.startswith("monitor_server")
        for target in targets
        if target.startswith("client_callbacks") and target not in CLIENT_FACE
    ]
    assert reaching == []


def test_the_client_never_imports_the_server():
    assert [
        n
        for n, targets in graph().items()
        if n.startswith("client_callbacks") and any(t.startswith("monitor_server") for t in targets)
    ] == []


def test_no_import_circle():
    edges = graph()
    circles, state = [], {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(edges.get(name, ())):
            # a package's __init__ importing its own modules is how packages expose them
            if target.startswith(name + "."):
                continue
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert circles == []
