"""Structured layer outputs are read the same way in every framework: the core's
``first_leaf``/``replace_first`` (interp_core.backend.layers), which each adapter uses."""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import Any

import numpy as np
import pytest

from interp_core.backend.layers import first_leaf, replace_first
from tests.conftest import require_framework


class T:
    """A fake tensor."""

    def __init__(self, name: str) -> None:
        self.name = name


def is_t(x: Any) -> bool:
    return isinstance(x, T)


Pair = namedtuple("Pair", ["feat", "aux"])
a, b, c = T("a"), T("b"), T("c")

#: (layer output, the name of the tensor it is explained through, or None)
CASES: list[tuple[Any, str | None]] = [
    (a, "a"),
    ((a, b), "a"),
    ([a, b], "a"),
    (Pair(a, b), "a"),
    ({"feat": a, "aux": b}, "a"),
    ({"aux": b, "feat": a}, "b"),  # insertion order, not the key's name
    (OrderedDict(feat=a, aux=b), "a"),
    ({"feat": (a, b), "aux": c}, "a"),  # a dict's first value, then a tuple's first element
    ({"feat": Pair(a, b)}, "a"),
    (((a, b), c), None),  # a tuple inside a tuple: no tensor
    (("x", a), None),  # the first element is not a tensor
    ((), None),
    ({}, None),
    ("text", None),
    (None, None),
]


@pytest.mark.parametrize("out, want", CASES)
def test_first_leaf(out, want):
    got = first_leaf(out, is_t)
    assert (got.name if got is not None else None) == want


@pytest.mark.parametrize("out, want", [case for case in CASES if case[1] is not None])
def test_replace_first_replaces_what_first_leaf_reads(out, want):
    new = T("new")
    replaced = replace_first(out, new, is_t)
    assert first_leaf(replaced, is_t) is new
    assert type(replaced) is type(out)
    if isinstance(out, dict):
        assert list(replaced) == list(out)
        assert all(replaced[k] is out[k] for k in list(out)[1:])
    elif isinstance(out, tuple | list):
        assert list(replaced[1:]) == list(out[1:])
    if isinstance(out, dict) and isinstance(next(iter(out.values())), tuple):
        inner = next(iter(replaced.values()))
        assert type(inner) is type(next(iter(out.values()))) and inner[1] is b
    assert first_leaf(out, is_t).name == want  # the original is left as it was


def _structures(make: Any) -> list[tuple[Any, int | None]]:
    """Structured outputs of the framework's tensors ``make(k)`` and the index ``k`` of the
    tensor each is explained through."""
    t0, t1, t2 = make(0), make(1), make(2)
    return [
        ((t0, t1), 0),
        (Pair(t1, t0), 1),
        ({"aux": t2, "feat": t0}, 2),
        ({"feat": (t1, t2), "aux": t0}, 1),
        (((t0, t1), t2), None),
    ]


def _check(structures: list[tuple[Any, int | None]], read: Any, to_numpy: Any) -> None:
    for out, want in structures:
        got = read(out)
        if want is None:
            assert got is None
        else:
            assert float(np.asarray(to_numpy(got)).ravel()[0]) == want


def test_torch_reads_structured_outputs_like_the_core():
    torch = require_framework("torch", "torch")
    from interp_torch.layers import first_tensor

    _check(_structures(lambda k: torch.full((1, 2), float(k))), first_tensor,
           lambda t: t.numpy())


def test_tensorflow_reads_structured_outputs_like_the_core():
    tf = require_framework("tensorflow", "tensorflow")
    from interp_tensorflow import layers as tf_layers

    assert not hasattr(tf_layers, "first_tensor")  # one reading, the core's
    _check(_structures(lambda k: tf.fill((1, 2), float(k))),
           lambda out: first_leaf(out, tf.is_tensor), lambda t: t.numpy())


def test_jax_reads_structured_outputs_like_the_core():
    jnp = require_framework("jax", "jax.numpy")
    from interp_jax.layers import first_array

    _check(_structures(lambda k: jnp.full((1, 2), float(k))), first_array, np.asarray)


def test_torch_captures_a_layer_that_returns_a_dict():
    """A torch module returning a dict is explained through its first value (as in Keras)."""
    torch = require_framework("torch", "torch")
    import interp_core as ic
    from interp_core.backend.target_spec import resolve_targets

    nn = torch.nn

    class DictBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = torch.relu(self.conv(x))
            return {"feat": h, "aux": -h}

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = DictBlock()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.block(x)["feat"].mean((2, 3)))

    torch.manual_seed(0)
    model = Net().eval()
    x = torch.from_numpy(np.random.default_rng(0).random((2, 3, 6, 6), dtype=np.float32))
    impl = ic.get_backend("torch")
    cap = impl.capture(model, x, ["block"], resolve_targets([0, 2], 2))
    want = torch.relu(model.block.conv(x)).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(cap.layers["block"].activations, want, atol=1e-6)


def test_a_module_returning_a_mapping_is_not_the_default_layer():
    """A wrapper that returns a mapping (a Hugging Face ModelOutput) hands on its child's
    tensor: the default layer is the child; named explicitly, the wrapper reads its first
    value (the model-zoo sweep's transformers rows depend on this)."""
    import interp_core as ic
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return {"last_hidden_state": torch.relu(self.conv(x))}

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.backbone = Backbone()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.backbone(x)["last_hidden_state"].mean((2, 3)))

    model = Classifier().eval()
    x = torch.randn(2, 3, 8, 8)
    assert ic.GradCAM(model).explain(x).layers == ["backbone.conv"]
    named = ic.GradCAM(model, "backbone").explain(x)  # the mapping's first value
    assert named.layers == ["backbone"] and named.maps.shape == (2, 8, 8)
    assert named.raw["backbone"].shape == (2, 8, 8) and float(named.maps.max()) == 1.0
