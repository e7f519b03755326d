"""A Keras model's structure as data: what `keras.callbacks.TensorBoard(write_graph=True)` and
`keras.utils.plot_model` show, sent once at train begin and drawn by the run page.

`describe(model)` gives

- `layers`: one dict per layer, in the model's order, input layers included: `name`, `class`
  (the class name: `Dense`, `InputLayer`, `Functional`, `Sequential`, or an operation of
  `keras.ops` used in a functional model, such as `Relu`), `output_shape`, `params` (the
  number of values in its weights) and `trainable`;
- `edges`: `[from_layer_name, to_layer_name]` pairs, each once, in the order of the layers they
  lead to: a functional model's graph as Keras built it (its `_operations` and their inbound
  nodes, as Keras' own `model.summary()` and `plot_model` walk it), a Sequential model's layers
  one after the other, and none for a subclassed model, whose graph is its Python `call`;
- `summary`: the text of `model.summary()`, without colour codes or markup.

A model used as a layer (a Sequential inside a functional model) is one layer of the outer
model, with its edges to the outer layers around it, its total parameter count, and its own
`layers` and `edges` under `children` (recursively; no `summary` there). Names are unique within
one model, not across nesting levels, so a nested structure keeps them apart; the parameter
counts of the top-level layers add up to `model.count_params()`.

`output_shape` is a list with None for a dimension Keras does not know (the batch), or a list
of such lists for a layer with several outputs; it is None when the shape cannot be known (a
layer that is not built yet). It is read from the model's graph; a layer outside any graph (in a
subclassed model) gives the shape it computes from the input shape it was built with, so its
batch dimension is that of the batch that built it.

Nothing here raises: whatever cannot be read is left out or None. Keras is imported when
`describe` is called, never at import time.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")

Shape = list[int | None]


def describe(model: Any) -> dict[str, Any]:
    """`{"layers": [...], "edges": [[from, to], ...], "summary": "..."}` of a Keras model."""
    return {**structure(model), "summary": summary_text(model)}


def structure(model: Any) -> dict[str, Any]:
    """`{"layers": [...], "edges": [...]}` of a model: `describe` without the summary."""
    try:
        operations, edges, nodes = _graph(model)
    except Exception:  # an unexpected model: its layers, unconnected
        operations, edges, nodes = _layers_of(model), [], None
    return {"layers": [_layer(op, nodes) for op in operations], "edges": edges}


def summary_text(model: Any) -> str:
    """What `model.summary()` prints, as plain text. Keras lays it out for the width of this
    process's terminal (80 columns where there is none), as it would for its own print."""
    chunks: list[str] = []
    try:
        model.summary(print_fn=lambda text, *args, **kwargs: chunks.append(str(text)))
    except Exception as exc:
        chunks.append(f"(model.summary() failed: {type(exc).__name__}: {exc})")
    text = "\n".join(chunk.rstrip("\n") for chunk in chunks)
    return "\n".join(line.rstrip() for line in ANSI.sub("", text).splitlines())


def _graph(model: Any) -> tuple[list[Any], list[list[str]], set[str] | None]:
    """The model's operations in order, its edges, and the keys of the nodes that belong to its
    graph (a layer shared with another model has nodes of that model's graph too)."""
    from keras.src.models import Functional, Sequential

    if isinstance(model, Sequential):
        operations = list(model._layers)  # with the InputLayer, which `layers` leaves out
        edges = [[a.name, b.name] for a, b in itertools.pairwise(operations)]
        functional = getattr(model, "_functional", None)
        return operations, _unique(edges), set(functional._nodes) if functional is not None else None
    if isinstance(model, Functional):
        operations = list(model._operations)
        nodes = set(model._nodes)
        edges = []
        for op in operations:
            for node in _nodes_in(op, nodes):
                for tensor in node.input_tensors:
                    history = getattr(tensor, "_keras_history", None)
                    source = getattr(history, "operation", None)
                    if source is not None:
                        edges.append([source.name, op.name])
        return operations, _unique(edges), nodes
    return _layers_of(model), [], None


def _layer(op: Any, nodes: set[str] | None) -> dict[str, Any]:
    described = {
        "name": str(getattr(op, "name", type(op).__name__)),
        "class": type(op).__name__,
        "output_shape": _output_shape(op, nodes),
        "params": _params(op),
        "trainable": bool(getattr(op, "trainable", False)),
    }
    if _is_model(op):
        described["children"] = structure(op)
    return described


def _layers_of(model: Any) -> list[Any]:
    try:
        return list(model.layers)
    except Exception:
        return []


def _is_model(op: Any) -> bool:
    try:
        import keras

        return isinstance(op, keras.Model)
    except Exception:
        return False


def _node_key(op: Any, index: int) -> str:
    try:
        from keras.src.ops.function import make_node_key
    except ImportError:  # pragma: no cover - Keras 3.15 has it; the same key
        return f"{id(op)}_ib-{index}"
    return make_node_key(op, index)


def _nodes_in(op: Any, nodes: set[str] | None) -> list[Any]:
    """The inbound nodes of `op` that belong to the graph whose node keys are `nodes` (all of
    them where there is no graph)."""
    inbound = list(getattr(op, "_inbound_nodes", None) or [])
    if nodes is None:
        return inbound
    return [node for i, node in enumerate(inbound) if _node_key(op, i) in nodes]


def _output_shape(op: Any, nodes: set[str] | None) -> Shape | list[Shape] | None:
    try:
        own = _nodes_in(op, nodes)
        if own:
            shapes = [_shape(tensor.shape) for tensor in own[0].output_tensors]
        else:
            build = getattr(op, "_build_shapes_dict", None)
            if not build or not getattr(op, "built", False):
                return None
            shapes = _shapes(op.compute_output_shape(**build))
    except Exception:
        return None
    if not shapes:
        return None
    return shapes[0] if len(shapes) == 1 else shapes


def _shapes(structure: Any) -> list[Shape]:
    """The shapes in a structure of shapes (a tuple, or lists, tuples and dicts of tuples)."""
    if isinstance(structure, dict):
        return [shape for value in structure.values() for shape in _shapes(value)]
    if isinstance(structure, list | tuple):
        if all(d is None or isinstance(d, int) for d in structure):
            return [_shape(structure)]
        return [shape for value in structure for shape in _shapes(value)]
    raise TypeError(f"not a shape: {structure!r}")


def _shape(shape: Any) -> Shape:
    return [int(d) if isinstance(d, int) else None for d in shape]


def _params(op: Any) -> int:
    try:
        weights = {id(w): w for w in getattr(op, "weights", None) or []}.values()
        return int(sum(math.prod(w.shape) for w in weights))
    except Exception:
        return 0


def _unique(edges: list[list[str]]) -> list[list[str]]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for edge in edges:
        if tuple(edge) not in seen:
            seen.add(tuple(edge))
            kept.append(edge)
    return kept
