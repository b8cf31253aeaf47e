"""1x1 convolution as GEMMs on x (convnet/fast/conv_pointwise.py): naive layer, PyTorch, fuzz, choice, memory."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convnet import _checks, fast
from convnet.fast import FastConv
from convnet.fast import conv
from convnet.fast.conv import IM2COL, choose
from convnet.fast.conv_pointwise import POINTWISE

DTYPES = [np.float32, np.float64]
CASES = [
    (2, 3, 5, 4, 2, 1, 1, 1, 0),     # tiny
    (4, 16, 32, 32, 32, 1, 1, 2, 0),  # ResNet's 1x1/2 shortcut
    (3, 8, 7, 9, 5, 1, 1, 2, 0),     # odd sizes: the last row and column are not read
    (2, 4, 10, 10, 3, 1, 1, 3, 0),   # stride 3
    (5, 64, 6, 6, 16, 1, 1, 1, 0),
]


def _check(case, dtype, seed, conv_inputs, exact_conv, assert_close_scaled, skip_dx=False):
    # Forced: 'auto' leaves a small strided call to im2col (test_auto_takes_pointwise_where_it_pays).
    x, w, b, cp = conv_inputs(case, dtype, seed)
    assert choose(_checks.conv_args(x, w, b, cp), "pointwise") is POINTWISE
    with fast.config(conv_algorithm="pointwise"):
        out, cache = FastConv.forward(x, w, b, cp)
        dout = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(dtype)
        got = (out,) + tuple(FastConv.backward(dout, cache))
    for name, a, r in zip(("out", "dx", "dw", "db"), got, exact_conv(x, w, b, cp, dout)):
        assert_close_scaled(a, r, dtype, name, "winograd2")  # GEMM rounding: 1e-5 (float32) of the scale


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_matches_naive(case, dtype, conv_inputs, exact_conv, assert_close_scaled):
    _check(case, dtype, 3, conv_inputs, exact_conv, assert_close_scaled)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES[1:3])
def test_matches_pytorch(case, dtype, conv_inputs, torch):
    import torch.nn.functional as TF

    x, w, b, cp = conv_inputs(case, dtype, 4)
    with fast.config(conv_algorithm="pointwise"):
        out, cache = FastConv.forward(x, w, b, cp)
        dout = np.random.default_rng(5).standard_normal(out.shape).astype(dtype)
        dx, dw, db = FastConv.backward(dout, cache)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ty = TF.conv2d(tx, tw, tb, stride=cp["stride"])
    ty.backward(torch.from_numpy(dout))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for name, a, t in (("out", out, ty), ("dx", dx, tx.grad), ("dw", dw, tw.grad), ("db", db, tb.grad)):
        ref = t.detach().numpy()
        assert np.max(np.abs(a - ref)) <= tol * max(1.0, float(np.max(np.abs(ref)))), name


def test_hand_checked_case():
    # Two channels, weights (1, -1): the output is x[:, 0] - x[:, 1] + 0.5; stride 2 reads the even positions.
    x = np.arange(2 * 4 * 4, dtype=np.float64).reshape(1, 2, 4, 4)
    w = np.array([1.0, -1.0]).reshape(1, 2, 1, 1)
    out, cache = FastConv.forward(x, w, np.array([0.5]), {"stride": 2, "pad": 0})
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), -16 + 0.5))
    dx, dw, db = FastConv.backward(np.ones((1, 1, 2, 2)), cache)
    expect = np.zeros((1, 2, 4, 4))
    expect[0, 0, ::2, ::2] = 1
    expect[0, 1, ::2, ::2] = -1
    np.testing.assert_array_equal(dx, expect)
    np.testing.assert_array_equal(dw.ravel(), [0 + 2 + 8 + 10, 16 + 18 + 24 + 26])
    assert db[0] == 4


@pytest.mark.parametrize("case, usable", [
    ((1, 3, 5, 5, 2, 1, 1, 1, 0), True), ((1, 3, 5, 5, 2, 1, 1, 2, 0), True),
    ((1, 3, 5, 5, 2, 1, 1, 1, 1), False),  # padding: a ring of bias-only outputs, left to im2col
    ((1, 3, 5, 5, 2, 3, 3, 1, 1), False), ((1, 3, 5, 5, 2, 1, 3, 1, 0), False),
])
def test_predicate_and_choice(case, usable, conv_inputs):
    g = _checks.conv_args(*conv_inputs(case, np.float64, 0))
    assert POINTWISE.is_usable_for(g) is usable
    assert choose(g, "pointwise") is (POINTWISE if usable else IM2COL)
    assert choose(g, "im2col") is IM2COL


@pytest.mark.parametrize("case, auto", [
    ((1, 32, 16, 16, 64, 1, 1, 1, 0), True),       # stride 1: x as it lies, whatever the size
    ((128, 32, 16, 16, 64, 1, 1, 1, 0), True),
    ((1, 32, 16, 16, 64, 1, 1, 2, 0), False),      # ResNet-20's shortcut at one image: 64 pixels
    ((32, 32, 16, 16, 64, 1, 1, 2, 0), False),     # and at 32 images
    ((128, 16, 32, 32, 32, 1, 1, 2, 0), False),    # the other shortcut at 128 images
    ((32, 32, 16, 16, 64, 1, 1, 1, 1), False),     # padded: not usable
])
def test_auto_takes_pointwise_where_it_pays(case, auto, conv_inputs):
    # Strided, the 1x1 GEMMs copy the input as im2col does, and im2col's compiled parts win at every batch
    # size (benchmarks/README.md); without the compiled kernels pointwise is used wherever it can run.
    g = _checks.conv_args(*conv_inputs(case, np.float64, 0))
    assert conv.prefers_pointwise(g) is auto
    assert conv.choose(g, "auto", have_cython=True) is (POINTWISE if auto else IM2COL)
    assert conv.choose(g, "auto", have_cython=False) is (POINTWISE if POINTWISE.is_usable_for(g) else IM2COL)


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_batch_and_small_budget(dtype, conv_inputs, exact_conv, assert_close_scaled):
    # Chunks of one image (tiny budget) and the batch split between threads give the same results.
    with fast.config(column_budget=1, split_min_work=0, num_threads=2):
        _check((9, 6, 8, 8, 4, 1, 1, 2, 0), dtype, 7, conv_inputs, exact_conv, assert_close_scaled)


def test_first_layer_skips_dx(conv_inputs):
    x, w, b, cp = conv_inputs((3, 4, 6, 6, 5, 1, 1, 2, 0), np.float64, 1)
    with fast.config(conv_algorithm="pointwise"):
        with fast.network_input(x):
            out, cache = FastConv.forward(x, w, b, cp)
        dx, dw, db = FastConv.backward(np.ones_like(out), cache)
    assert dx is None and dw.shape == w.shape


def test_memory_does_not_grow_with_the_batch(conv_inputs):
    import tracemalloc

    peaks = []
    for N in (8, 32):
        x, w, b, cp = conv_inputs((N, 16, 16, 16, 16, 1, 1, 2, 0), np.float64, 0)
        with fast.config(column_budget=64 * 1024, num_threads=1, conv_algorithm="pointwise"):
            out, cache = FastConv.forward(x, w, b, cp)
            dout = np.ones_like(out)
            tracemalloc.start()
            FastConv.backward(dout, cache)
            peaks.append(tracemalloc.get_traced_memory()[1] - x.nbytes)  # dx is an output
            tracemalloc.stop()
    assert peaks[1] <= peaks[0] + 70 * 1024, peaks


@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 4), C=st.integers(1, 6), H=st.integers(1, 9), W=st.integers(1, 9), F=st.integers(1, 5),
       stride=st.integers(1, 3), f32=st.booleans(), seed=st.integers(0, 50))
def test_fuzz(conv_inputs, exact_conv, assert_close_scaled, N, C, H, W, F, stride, f32, seed):
    _check((N, C, H, W, F, 1, 1, stride, 0), np.float32 if f32 else np.float64, seed,
           conv_inputs, exact_conv, assert_close_scaled)
