"""The table of layers, checked entry by entry: every geometry is valid, and each layer agrees with its
vectorised formulation, with PyTorch (forward and backward) and with its fast twin.

A layer added to :data:`convnet.specs.LAYERS` is tested here, by the self-check, by the grader's
catalogues and by the served reference layers without any other change.
"""
from __future__ import annotations

import numpy as np
import pytest

from convnet.specs import LAYERS, Call, resolve, spec

try:
    import torch
except ImportError:  # the oracle tests skip; the others run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is the oracle; pip install torch==2.13.0")

CASES = [(name, role, i) for name, s in LAYERS.items() for role in ("check", "public", "fd", "hidden")
         for i in range(len(s.hidden()) if role == "hidden" else (1 if role in s.geometries else 0))]


def _geometry(name, role, i):
    s = LAYERS[name]
    return s.hidden()[i] if role == "hidden" else s.geometries[role]


def _id(case):
    name, role, i = case
    return f"{name}-{role}{i if role == 'hidden' else ''}"


def _tol(dtype):
    return {"rtol": 1e-4, "atol": 1e-5} if np.dtype(dtype) == np.float32 else {"rtol": 1e-10, "atol": 1e-12}


def test_table_entries_are_consistent():
    for name, s in LAYERS.items():
        assert s.name == name and spec(name) is s
        assert s.naive_class is resolve(f"layers.{name}")
        assert s.grads == tuple("d" + a for a in s.arrays)
        assert s.stubs[0] == f"{name}.forward"
        for method in s.backwards:
            assert callable(getattr(s.naive_class, method))
        assert {"check", "public"} <= set(s.geometries)
        assert s.stochastic or "fd" in s.geometries
        for used in s.uses:
            assert used in LAYERS
    with pytest.raises(KeyError, match="no layer 'Nope' in the table"):
        spec("Nope")


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_every_geometry_makes_valid_inputs_of_its_dtype(case):
    s, g = LAYERS[case[0]], _geometry(*case)
    call = s.call(np.random.default_rng(0), g)
    assert isinstance(call, Call) and list(call.arrays) == list(s.arrays) and list(call.params) == list(s.params)
    assert all(a.dtype == np.dtype(g.dtype) for a in call.arrays.values())
    out, _ = s.naive_class.forward(*call.copy().args())
    assert out.dtype == np.dtype(g.dtype)
    # The same seed draws the same inputs (the grader's public inputs rely on it).
    again = s.call(np.random.default_rng(0), g)
    assert all(np.array_equal(again.arrays[k], v) for k, v in call.arrays.items())


@pytest.mark.parametrize("case", [c for c in CASES if not LAYERS[c[0]].stochastic], ids=_id)
def test_naive_forward_equals_the_vectorised_definition(case):
    s, g = LAYERS[case[0]], _geometry(*case)
    call = s.call(np.random.default_rng(1), g)
    out, _ = s.naive_class.forward(*call.copy().args())
    np.testing.assert_allclose(out, s.independent(call.copy()), **_tol(g.dtype))


@needs_torch
@pytest.mark.parametrize("case", [c for c in CASES if LAYERS[c[0]].torch is not None], ids=_id)
def test_naive_layer_against_pytorch_forward_and_every_backward(case):
    s, g = LAYERS[case[0]], _geometry(*case)
    call = s.call(np.random.default_rng(2), g)
    out, cache = s.naive_class.forward(*call.copy().args())
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in call.arrays.items()}
    tout = s.torch(torch, tensors, call)
    np.testing.assert_allclose(out, tout.detach().numpy(), **_tol(g.dtype))
    dout = np.random.default_rng(3).standard_normal(out.shape).astype(g.dtype)
    tout.backward(torch.tensor(dout))
    for method in s.backwards:
        grads = getattr(s.naive_class, method)(dout, s.naive_class.forward(*call.copy().args())[1])
        grads = grads if isinstance(grads, tuple) else (grads,)
        for name, ours in zip(s.arrays, grads):
            theirs = tensors[name].grad.numpy()
            scale = max(1.0, float(np.abs(theirs).max()))
            np.testing.assert_allclose(ours, theirs, rtol=_tol(g.dtype)["rtol"] * 10,
                                       atol=_tol(g.dtype)["atol"] * 10 * scale, err_msg=f"{s.name}.{method} d{name}")


@pytest.mark.parametrize("case", [c for c in CASES if LAYERS[c[0]].fast], ids=_id)
def test_fast_twin_matches_the_naive_layer(case):
    s, g = LAYERS[case[0]], _geometry(*case)
    call = s.call(np.random.default_rng(4), g)
    out, cache = s.naive_class.forward(*call.copy().args())
    fout, fcache = s.fast_class.forward(*call.copy().args())
    np.testing.assert_allclose(fout, out, **_tol(g.dtype))
    dout = np.random.default_rng(5).standard_normal(out.shape).astype(g.dtype)
    grads = s.naive_class.backward(dout, cache)
    fgrads = s.fast_class.backward(dout, fcache)
    grads, fgrads = (grads, fgrads) if isinstance(grads, tuple) else ((grads,), (fgrads,))
    for a, b in zip(fgrads, grads):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=_tol(g.dtype)["rtol"], atol=_tol(g.dtype)["atol"] * 10 * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fill", [0.0, -np.inf])
def test_the_window_view_is_numpys_padded_sliding_window(dtype, fill):
    """The independent passes' window view (padding and strides by hand) against np.pad + sliding_window_view."""
    from numpy.lib.stride_tricks import sliding_window_view

    from convnet.specs import _windows

    rng = np.random.default_rng(3)
    for H, W, kh, kw, stride, pad in [(5, 7, 3, 3, 1, 1), (6, 6, 2, 2, 2, 0), (7, 5, 3, 2, 2, 1), (9, 8, 5, 5, 3, 2),
                                      (4, 4, 4, 4, 1, 0), (3, 8, 1, 3, 2, 1)]:
        x = rng.standard_normal((2, 3, H, W)).astype(dtype)
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
        want = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
        got = _windows(x, kh, kw, stride, pad, fill)
        assert got.dtype == x.dtype and got.shape == want.shape, (H, W, kh, kw, stride, pad)
        np.testing.assert_array_equal(got, want)
