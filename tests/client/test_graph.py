"""A model's structure as data (client_callbacks/graph.py): layers, the edges between them and
the summary text, for functional, Sequential, nested and subclassed models, in this process;
and after a real fit on each Keras backend, each in its own process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from client_callbacks.graph import describe
from tests.support.training import program

pytestmark = pytest.mark.slow  # a training process on each backend

ROOT = Path(__file__).parents[2]
BACKENDS = ["tensorflow", "jax", "torch"]
STYLING = re.compile(r"\x1b\[|\[/?(bold|color|italic|dim)|\[/\]")


def by_name(described: dict) -> dict[str, dict]:
    return {layer["name"]: layer for layer in described["layers"]}


def assert_well_formed(described: dict, model: keras.Model) -> None:
    """What holds for every model: plain JSON; the parameters of the top-level layers add up to
    the model's; every edge joins two of its layers, once; the summary is Keras' text, unstyled,
    naming every layer."""
    assert json.loads(json.dumps(described)) == described
    assert set(described) == {"layers", "edges", "summary"}
    for layer in described["layers"]:
        assert {"name", "class", "output_shape", "params", "trainable"} <= set(layer)
        assert isinstance(layer["params"], int) and isinstance(layer["trainable"], bool)
    assert sum(layer["params"] for layer in described["layers"]) == (model.count_params() if model.built else 0)
    names = [layer["name"] for layer in described["layers"]]
    assert len(names) == len(set(names))
    assert all(a in names and b in names for a, b in described["edges"])
    assert len(described["edges"]) == len({tuple(edge) for edge in described["edges"]})
    summary = described["summary"]
    assert summary.startswith(f'Model: "{model.name}"') and "Total params" in summary
    assert not STYLING.search(summary), summary
    for layer in model.layers:
        assert layer.name in summary


def branch_model(merge: type[keras.layers.Layer]) -> keras.Model:
    """Two paths from one input, merged: x -> left -> merged, x -> right_a -> right_b -> merged."""
    keras.utils.set_random_seed(0)
    x = keras.Input((8,), name="x")
    left = keras.layers.Dense(4, name="left")(x)
    right = keras.layers.Dense(6, activation="relu", name="right_a")(x)
    right = keras.layers.Dense(4, name="right_b")(right)
    merged = merge(name="merged")([left, right])
    out = keras.layers.Dense(3, name="out")(merged)
    return keras.Model(x, out, name="branchy")


@pytest.mark.parametrize(("merge", "width"), [(keras.layers.Add, 4), (keras.layers.Concatenate, 8)])
def test_a_functional_model_with_a_branch_has_exactly_its_edges(merge, width):
    model = branch_model(merge)
    described = describe(model)
    assert_well_formed(described, model)
    assert sorted(described["edges"]) == [
        ["left", "merged"],
        ["merged", "out"],
        ["right_a", "right_b"],
        ["right_b", "merged"],
        ["x", "left"],
        ["x", "right_a"],
    ]
    assert by_name(described) == {
        "x": {"name": "x", "class": "InputLayer", "output_shape": [None, 8], "params": 0, "trainable": True},
        "left": {"name": "left", "class": "Dense", "output_shape": [None, 4], "params": 36, "trainable": True},
        "right_a": {"name": "right_a", "class": "Dense", "output_shape": [None, 6], "params": 54, "trainable": True},
        "right_b": {"name": "right_b", "class": "Dense", "output_shape": [None, 4], "params": 28, "trainable": True},
        "merged": {
            "name": "merged",
            "class": merge.__name__,
            "output_shape": [None, width],
            "params": 0,
            "trainable": True,
        },
        "out": {"name": "out", "class": "Dense", "output_shape": [None, 3], "params": 3 * width + 3, "trainable": True},
    }
    names = [layer["name"] for layer in described["layers"]]
    assert names == [op.name for op in model._operations]  # Keras' order: each layer after its inputs
    assert all(names.index(a) < names.index(b) for a, b in described["edges"])


def test_a_sequential_model_chains_its_layers_from_its_input():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,), name="features"),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Dense(3, name="logits"),
        ],
        name="seq",
    )
    model.layers[1].trainable = False
    described = describe(model)
    assert_well_formed(described, model)
    assert [(layer["name"], layer["class"]) for layer in described["layers"]] == [
        ("features", "InputLayer"),
        ("hidden", "Dense"),
        ("norm", "BatchNormalization"),
        ("logits", "Dense"),
    ]
    assert described["edges"] == [["features", "hidden"], ["hidden", "norm"], ["norm", "logits"]]
    layers = by_name(described)
    assert [layers[n]["output_shape"] for n in layers] == [[None, 8], [None, 8], [None, 8], [None, 3]]
    assert [layers[n]["params"] for n in layers] == [0, 72, 32, 27]
    assert layers["norm"]["trainable"] is False and layers["hidden"]["trainable"] is True


def test_a_nested_model_is_one_layer_with_its_structure_under_children():
    """A Sequential and a functional model used as layers: one node each in the outer graph,
    with the outer edges, their total parameters, and their own layers and edges inside."""
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.layers.Dense(6, name="e1"), keras.layers.Dense(4, name="e2")], name="encoder")
    head_in = keras.Input((4,), name="head_in")
    head = keras.Model(head_in, keras.layers.Dense(2, name="h")(head_in), name="head")
    x = keras.Input((8,), name="x")
    skip = keras.layers.Dense(4, name="skip")(x)
    merged = keras.layers.Add(name="merged")([encoder(x), skip])
    model = keras.Model(x, head(merged), name="outer")
    described = describe(model)
    assert_well_formed(described, model)
    assert sorted(described["edges"]) == [
        ["encoder", "merged"],
        ["merged", "head"],
        ["skip", "merged"],
        ["x", "encoder"],
        ["x", "skip"],
    ]
    layers = by_name(described)
    assert set(layers) == {"x", "encoder", "skip", "merged", "head"}
    assert (layers["encoder"]["class"], layers["encoder"]["output_shape"], layers["encoder"]["params"]) == (
        "Sequential",
        [None, 4],
        8 * 6 + 6 + 6 * 4 + 4,
    )
    inner = layers["encoder"]["children"]
    assert [(layer["class"], layer["output_shape"]) for layer in inner["layers"]] == [
        ("InputLayer", [None, 8]),
        ("Dense", [None, 6]),
        ("Dense", [None, 4]),
    ]
    first = inner["layers"][0]["name"]
    assert inner["edges"] == [[first, "e1"], ["e1", "e2"]]
    assert sum(layer["params"] for layer in inner["layers"]) == layers["encoder"]["params"]
    assert (layers["head"]["class"], layers["head"]["params"]) == ("Functional", 10)
    assert layers["head"]["children"] == {
        "layers": [
            {"name": "head_in", "class": "InputLayer", "output_shape": [None, 4], "params": 0, "trainable": True},
            {"name": "h", "class": "Dense", "output_shape": [None, 2], "params": 10, "trainable": True},
        ],
        "edges": [["head_in", "h"]],
    }
    assert "children" not in layers["skip"]


def test_shared_layers_several_outputs_and_keras_ops_in_a_functional_graph():
    """A layer called twice is one layer with the edges of both calls; a layer with two outputs
    has two shapes; an operation of keras.ops is a node of its own."""

    class Split(keras.layers.Layer):
        def call(self, x):
            return x[:, :3], x[:, 3:]

        def compute_output_shape(self, shape):
            return (shape[0], 3), (shape[0], shape[1] - 3)

    a = keras.Input((8,), name="a")
    b = keras.Input((8,), name="b")
    shared = keras.layers.Dense(8, name="shared")
    first, second = Split(name="split")(shared(a))
    total = keras.ops.add(keras.ops.sum(first, axis=1, keepdims=True), keras.ops.sum(second, axis=1, keepdims=True))
    model = keras.Model([a, b], [total, shared(b)], name="several")
    described = describe(model)
    assert_well_formed(described, model)
    layers = by_name(described)
    assert layers["split"]["output_shape"] == [[None, 3], [None, 5]]
    assert layers["shared"]["params"] == 72 and layers["shared"]["output_shape"] == [None, 8]
    ops = [layer for layer in described["layers"] if layer["class"] in ("Sum", "Add")]
    assert [op["class"] for op in ops] == ["Sum", "Sum", "Add"]
    assert all(op["params"] == 0 and op["output_shape"] == [None, 1] for op in ops)
    sums = [op["name"] for op in ops[:2]]
    assert sorted(described["edges"]) == sorted(
        [
            ["a", "shared"],
            ["b", "shared"],
            ["shared", "split"],
            ["split", sums[0]],
            ["split", sums[1]],
            [sums[0], ops[2]["name"]],
            [sums[1], ops[2]["name"]],
        ]
    )


def test_a_model_that_is_not_built_gives_its_layers_and_keras_summary():
    unbuilt = keras.Sequential([keras.layers.Dense(3, name="u1"), keras.layers.Dense(2, name="u2")], name="unbuilt")
    described = describe(unbuilt)
    assert described["layers"] == [
        {"name": "u1", "class": "Dense", "output_shape": None, "params": 0, "trainable": True},
        {"name": "u2", "class": "Dense", "output_shape": None, "params": 0, "trainable": True},
    ]
    assert described["edges"] == [["u1", "u2"]]
    assert "unbuilt" in described["summary"] and "u1 (Dense)" in described["summary"]
    assert_well_formed(described, unbuilt)
    unbuilt.build((None, 5))  # now with the InputLayer Keras adds and shapes
    described = describe(unbuilt)
    assert [layer["output_shape"] for layer in described["layers"]] == [[None, 5], [None, 3], [None, 2]]
    assert described["edges"][1:] == [["u1", "u2"]] and described["edges"][0][1] == "u1"


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = keras.layers.Dense(4, name="body")
        self.odd = Odd(name="odd")
        self.tail = keras.layers.Dense(2, name="tail")

    def call(self, x):
        return self.tail(self.odd(self.body(x)))


class Odd(keras.layers.Layer):
    """A layer whose output shape Keras cannot compute without calling it."""

    def call(self, x):
        return x * 2.0

    def compute_output_shape(self, input_shape):
        raise NotImplementedError


def test_a_subclassed_model_gives_its_layers_without_edges():
    model = Subclassed(name="sub")
    described = describe(model)  # not built: nothing known but the layers
    assert [(layer["name"], layer["output_shape"], layer["params"]) for layer in described["layers"]] == [
        ("body", None, 0),
        ("odd", None, 0),
        ("tail", None, 0),
    ]
    assert described["edges"] == []
    model(np.zeros((5, 8), "float32"))
    described = describe(model)
    assert_well_formed(described, model)
    assert [(layer["name"], layer["output_shape"], layer["params"]) for layer in described["layers"]] == [
        ("body", [5, 4], 36),  # the shape it was built with: the batch of that first call
        ("odd", None, 0),  # cannot be known: None, not an error
        ("tail", [5, 2], 10),
    ]
    assert described["edges"] == []


def test_describe_never_raises():
    class Broken(keras.Model):
        @property
        def layers(self):
            raise RuntimeError("no layers today")

        def summary(self, *args, **kwargs):
            raise RuntimeError("no summary today")

    described = describe(Broken(name="broken"))
    assert described["layers"] == [] and described["edges"] == []
    assert described["summary"] == "(model.summary() failed: RuntimeError: no summary today)"


def test_styling_in_the_summary_is_stripped():
    """Keras prints no colour to a `print_fn`; were a version or a theme to, the text stays plain."""

    class Styled(keras.Sequential):
        def summary(self, print_fn=None, **kwargs):
            print_fn('\x1b[1mModel: "styled"\x1b[0m   \n \x1b[38;5;34mTotal params\x1b[0m: 0\n', line_break=False)

    assert describe(Styled(name="styled"))["summary"] == 'Model: "styled"\n Total params: 0'


def test_importing_the_module_does_not_load_keras():
    code = "import sys, client_callbacks.graph; print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'jax', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# One process per backend: the models fitted for one epoch (a functional model with a branch and
# a nested Sequential, a Sequential, a subclassed model), described after the fit.
TRAIN = """
    import json
    import sys

    import keras

    from client_callbacks.graph import describe
    from tests.support.training import data

    x, y = data()


    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.body = keras.layers.Dense(4, name="body")
            self.tail = keras.layers.Dense(3, name="tail")

        def call(self, inputs):
            return self.tail(self.body(inputs))


    def functional():
        inputs = keras.Input((8,), name="x")
        inner = keras.Sequential([keras.layers.Dense(6, name="i1"), keras.layers.Dense(4, name="i2")], name="inner")
        merged = keras.layers.Concatenate(name="merged")([inner(inputs), keras.layers.Dense(4, name="skip")(inputs)])
        return keras.Model(inputs, keras.layers.Dense(3, name="out")(merged), name="functional")


    def sequential():
        return keras.Sequential([keras.layers.Dense(5, name="s1"), keras.layers.Dense(3, name="s2")], name="sequential")


    report = {"backend": keras.backend.backend()}
    for make in (functional, sequential, Subclassed):
        keras.utils.set_random_seed(0)
        model = make()
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
        report[model.name] = {"described": describe(model), "params": model.count_params()}
    with open(sys.argv[1], "w") as f:
        json.dump(report, f)
"""


@pytest.fixture(scope="module", params=BACKENDS)
def fitted(request, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp(request.param)
    script = program(folder, TRAIN)
    env = {**os.environ, "KERAS_BACKEND": request.param, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = folder / "out.json"
    done = subprocess.run(
        [sys.executable, str(script), str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["backend"] == request.param
    return report


def test_after_a_fit_on_each_backend_the_structure_is_the_same(fitted):
    functional = fitted["functional"]["described"]
    assert sorted(functional["edges"]) == [
        ["inner", "merged"],
        ["merged", "out"],
        ["skip", "merged"],
        ["x", "inner"],
        ["x", "skip"],
    ]
    assert {layer["name"]: layer["output_shape"] for layer in functional["layers"]} == {
        "x": [None, 8],
        "inner": [None, 4],
        "skip": [None, 4],
        "merged": [None, 8],
        "out": [None, 3],
    }
    inner = by_name(functional)["inner"]["children"]
    assert [layer["name"] for layer in inner["layers"]][1:] == ["i1", "i2"]
    assert inner["edges"][1:] == [["i1", "i2"]]
    sequential = fitted["sequential"]["described"]
    # Built by fit from the first batch: Keras adds the InputLayer, with that batch's shape.
    assert [layer["output_shape"] for layer in sequential["layers"]] == [[32, 8], [32, 5], [32, 3]]
    assert [layer["name"] for layer in sequential["layers"]][1:] == ["s1", "s2"]
    assert [edge[1] for edge in sequential["edges"]] == ["s1", "s2"]
    sub = fitted["sub"]["described"]
    assert [layer["name"] for layer in sub["layers"]] == ["body", "tail"] and sub["edges"] == []
    assert [layer["output_shape"][1:] for layer in sub["layers"]] == [[4], [3]]
    for name in ("functional", "sequential", "sub"):
        described = fitted[name]["described"]
        assert sum(layer["params"] for layer in described["layers"]) == fitted[name]["params"]
        assert not STYLING.search(described["summary"])
        assert "Optimizer params" in described["summary"]  # the summary of a fitted model
        for layer in described["layers"]:
            if layer["class"] != "InputLayer":
                assert layer["name"] in described["summary"]
