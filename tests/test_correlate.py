"""convnet.correlate: dilation, rotation and (full) correlation by hand, against an independent
formula and PyTorch, the 1-D views of conv backward, average pooling as a mean-filter convolution,
and bad input."""
import doctest

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from convnet import correlate
from convnet.correlate import AvgPoolAsConv, correlate2d, dilate, full_correlate2d, rot180
from convnet.gradcheck import assert_within_rounding
from convnet.layers import AvgPool

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is the oracle here; pip install torch==2.13.0")

DTYPES = [np.float32, np.float64]


def row(*values, dtype=np.float64):
    """A (1, 1, 1, len) array: one image, one channel, one row."""
    return np.array(values, dtype=dtype).reshape(1, 1, 1, -1)


def assert_rounding_close(ours, reference, magnitude, terms, dtype):
    assert ours.dtype == dtype
    assert_within_rounding(ours, reference, magnitude, terms)


def test_module_examples_run():
    # The docstring examples (the 7x7 zero-inserted gradient of a 5x5 input, 3x3 kernel, stride 2) are checked.
    result = doctest.testmod(correlate, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 15 and result.failed == 0


# ------------------------------------------------------------------ by hand


@pytest.mark.parametrize("dtype", DTYPES)
def test_dilate_by_hand(dtype):
    g = np.array([[1, 2], [3, 4]], dtype=dtype)
    d = dilate(g, 2)
    assert d.dtype == dtype
    np.testing.assert_array_equal(d, [[1, 0, 2], [0, 0, 0], [3, 0, 4]])
    # Separate strides, and zeros appended up to a requested size.
    np.testing.assert_array_equal(dilate(g, (3, 1), size=(5, 3)),
                                  [[1, 2, 0], [0, 0, 0], [0, 0, 0], [3, 4, 0], [0, 0, 0]])
    np.testing.assert_array_equal(dilate(g, 1), g)
    assert dilate(g, 1) is not g
    # Leading axes are kept: each (H, W) plane is dilated on its own.
    four = np.arange(8, dtype=dtype).reshape(2, 2, 1, 2)
    np.testing.assert_array_equal(dilate(four, 3)[1, 0], [[4, 0, 0, 5]])


def test_rot180_by_hand():
    w = np.arange(1.0, 7.0).reshape(2, 3)
    np.testing.assert_array_equal(rot180(w), [[6, 5, 4], [3, 2, 1]])
    assert np.shares_memory(rot180(w), w)
    w4 = np.arange(24.0).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(rot180(w4)[1, 2], [[23, 22], [21, 20]])
    np.testing.assert_array_equal(rot180(rot180(w4)), w4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_correlate2d_by_hand(dtype):
    # [0 1 2 3] against the difference filter [1 0 -1]: x[j] - x[j + 2].
    out = correlate2d(row(0, 1, 2, 3, dtype=dtype), row(1, 0, -1, dtype=dtype))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, row(-2, -2))
    # Stride 2: windows [0 1], [2 3], [4 5] summed; the last element is read by none.
    np.testing.assert_array_equal(correlate2d(row(0, 1, 2, 3, 4, 5, 6, dtype=dtype), row(1, 1, dtype=dtype), 2),
                                  row(1, 5, 9))
    # Two channels are summed, two filters give two output channels.
    x = np.stack([np.eye(2), 2 * np.ones((2, 2))])[None].astype(dtype)  # (1, 2, 2, 2)
    w = np.array([[[[1]], [[0]]], [[[1]], [[1]]]], dtype=dtype)  # (2, 2, 1, 1)
    np.testing.assert_array_equal(correlate2d(x, w), [[np.eye(2), np.eye(2) + 2]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_full_correlate2d_by_hand(dtype):
    # [1 2] against [1 10]: 0*1 + 1*10, 1*1 + 2*10, 2*1 + 0*10.
    np.testing.assert_array_equal(full_correlate2d(row(1, 2, dtype=dtype), row(1, 10, dtype=dtype)), row(10, 21, 2))
    # A single 1 sprays the rotated filter; with the rotated filter (a full convolution) the filter itself.
    w = np.arange(1, 7, dtype=dtype).reshape(1, 1, 2, 3)
    one = np.ones((1, 1, 1, 1), dtype=dtype)
    np.testing.assert_array_equal(full_correlate2d(one, w), rot180(w))
    np.testing.assert_array_equal(full_correlate2d(one, rot180(w)), w)
    assert full_correlate2d(np.zeros((2, 3, 4, 5), dtype), np.zeros((6, 3, 2, 3), dtype)).shape == (2, 6, 5, 7)


def test_one_dimensional_views_of_conv_backward():
    # x = [1 2 3 4 5], w = [1 0 -1] (README, "Three views of conv backward").
    x, w = row(1, 2, 3, 4, 5), row(1, 0, -1)
    np.testing.assert_array_equal(correlate2d(x, w), row(-2, -2, -2))
    # Forward as a spray: x[i] adds x[i] * rot180(w) to y[i-2 .. i], then the valid part is kept.
    spray = np.zeros(7)
    for i, v in enumerate(x.ravel()):
        spray[i:i + 3] += v * rot180(w).ravel()
    np.testing.assert_array_equal(spray[2:5], [-2, -2, -2])
    # Backward: dy = [1 2 3] sprays w onto x[j .. j+2]; the same as the full correlation with rot180(w).
    dy = row(1, 2, 3)
    np.testing.assert_array_equal(full_correlate2d(dy, rot180(w)), row(1, 2, 2, -2, -3))
    # dw: x is the image, dy the filter: [1*1 + 2*2 + 3*3, 1*2 + 2*3 + 3*4, 1*3 + 2*4 + 3*5].
    np.testing.assert_array_equal(correlate2d(x, dy), row(14, 20, 26))
    # Stride 2: y = [-2 -2], dy = [1 2] dilated to [1 0 2]; sprays [1 0 -1 . .] + [. . 2 0 -2].
    np.testing.assert_array_equal(correlate2d(x, w, 2), row(-2, -2))
    np.testing.assert_array_equal(full_correlate2d(dilate(row(1, 2), 2), rot180(w)), row(1, 0, 1, 0, -2))
    np.testing.assert_array_equal(correlate2d(x, dilate(row(1, 2), 2)), row(7, 10, 13))


# ------------------------------------------------------------------ independent formula and PyTorch


@st.composite
def correlation_cases(draw):
    N, C, F = (draw(st.integers(1, 3)) for _ in range(3))
    H, W = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    HH, WW = draw(st.integers(1, H)), draw(st.integers(1, W))
    return (N, C, H, W), (F, C, HH, WW), draw(st.integers(1, 4)), draw(st.sampled_from(DTYPES)), \
        draw(st.integers(0, 2**32 - 1))


def windows_reference(x, w, stride):
    """The correlation as one einsum over every window, in float64 (no loop, a different formula)."""
    win = sliding_window_view(x.astype(np.float64), w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("ncijab,fcab->nfij", win, w.astype(np.float64))


@settings(max_examples=80, deadline=None)
@given(case=correlation_cases())
@example(case=((2, 3, 3, 3), (2, 3, 3, 3), 1, np.float32, 0))  # one output: the loop runs over positions
@example(case=((1, 2, 8, 7), (3, 2, 2, 1), 3, np.float64, 1))  # more outputs than taps
def test_correlate2d_matches_every_window(case):
    xs, ws, stride, dtype, seed = case
    r = np.random.default_rng(seed)
    x, w = r.standard_normal(xs).astype(dtype), r.standard_normal(ws).astype(dtype)
    terms = ws[1] * ws[2] * ws[3]
    assert_rounding_close(correlate2d(x, w, stride), windows_reference(x, w, stride),
                          windows_reference(np.abs(x), np.abs(w), stride), terms, dtype)


@needs_torch
@settings(max_examples=60, deadline=None)
@given(case=correlation_cases())
def test_correlate2d_and_full_correlate2d_against_torch(case):
    xs, ws, stride, dtype, seed = case
    r = np.random.default_rng(seed)
    x, w = r.standard_normal(xs).astype(dtype), r.standard_normal(ws).astype(dtype)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    terms = ws[1] * ws[2] * ws[3]
    exact = windows_reference(x, w, stride)
    magnitude = windows_reference(np.abs(x), np.abs(w), stride)
    ours = correlate2d(x, w, stride)
    assert_rounding_close(ours, exact, magnitude, terms, dtype)
    assert_rounding_close(torch.nn.functional.conv2d(tx, tw, stride=stride).numpy(), exact, magnitude, terms, dtype)
    full = full_correlate2d(x, w)
    theirs = torch.nn.functional.conv2d(tx, tw, padding=(ws[2] - 1, ws[3] - 1)).numpy()
    pad = ((0, 0), (0, 0), (ws[2] - 1, ws[2] - 1), (ws[3] - 1, ws[3] - 1))
    magnitude = windows_reference(np.pad(np.abs(x), pad), np.abs(w), 1)
    assert_rounding_close(full, theirs, magnitude, terms, dtype)


# ------------------------------------------------------------------ average pooling as a convolution


@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pool_as_mean_filter_by_hand(dtype):
    # A 2x2 mean filter at stride 2: each input receives a quarter of its window's gradient.
    x = np.arange(16, dtype=dtype).reshape(1, 1, 4, 4)
    pp = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = AvgPoolAsConv.forward(x, pp)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, [[[[2.5, 4.5], [10.5, 12.5]]]])
    dx = AvgPoolAsConv.backward(np.array([[[[4, 8], [12, 16]]]], dtype=dtype), cache)
    np.testing.assert_array_equal(dx[0, 0], np.kron([[1, 2], [3, 4]], np.ones((2, 2))))
    # Padding counts in the divisor: a 1x1 input padded by 1 under a 2x2 window is divided by 4.
    out, cache = AvgPoolAsConv.forward(np.full((1, 1, 1, 1), 8, dtype=dtype), {**pp, "pad": 1})
    np.testing.assert_array_equal(out, [[[[2]]]])
    np.testing.assert_array_equal(AvgPoolAsConv.backward(np.ones_like(out), cache), [[[[0.25]]]])


@settings(max_examples=80, deadline=None)
@given(N=st.integers(1, 2), C=st.integers(1, 3), H=st.integers(1, 8), W=st.integers(1, 8),
       ph=st.integers(1, 4), pw=st.integers(1, 4), stride=st.integers(1, 4), pad=st.integers(0, 2),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
@example(N=1, C=2, H=6, W=6, ph=3, pw=3, stride=2, pad=1, dtype=np.float32, seed=0)  # overlapping windows, padding
@example(N=2, C=1, H=7, W=5, ph=2, pw=3, stride=3, pad=1, dtype=np.float64, seed=1)  # stride that does not divide
def test_avg_pool_as_mean_filter_convolution_equals_avg_pool(N, C, H, W, ph, pw, stride, pad, dtype, seed):
    pp = {"pool_height": ph, "pool_width": pw, "stride": stride, "pad": pad}
    if 2 * pad > min(ph, pw) or ph > H + 2 * pad or pw > W + 2 * pad:
        with pytest.raises(ValueError) as ours:
            AvgPoolAsConv.forward(np.zeros((N, C, H, W), dtype), pp)
        with pytest.raises(ValueError) as theirs:
            AvgPool.forward(np.zeros((N, C, H, W), dtype), pp)
        assert str(ours.value).replace("AvgPoolAsConv", "AvgPool") == str(theirs.value)
        return
    r = np.random.default_rng(seed)
    x = r.standard_normal((N, C, H, W)).astype(dtype)
    out, cache = AvgPoolAsConv.forward(x, pp)
    ref, ref_cache = AvgPool.forward(x, pp)
    terms = ph * pw
    assert_rounding_close(out, ref, AvgPool.forward(np.abs(x).astype(np.float64), pp)[0], terms, dtype)
    dout = r.standard_normal(out.shape).astype(dtype)
    magnitude = AvgPool.backward(np.abs(dout).astype(np.float64), AvgPool.forward(x.astype(np.float64), pp)[1])
    dx = AvgPoolAsConv.backward(dout, cache)
    assert_rounding_close(dx, AvgPool.backward(dout, ref_cache), magnitude, terms, dtype)
    # The caches are the same tuple: each backward takes the other's.
    np.testing.assert_array_equal(AvgPoolAsConv.backward(dout, ref_cache), dx)


# ------------------------------------------------------------------ bad input

G = np.ones((2, 2))
X = np.ones((2, 3, 5, 5))
Wt = np.ones((4, 3, 3, 3))


@pytest.mark.parametrize("call, exc, match", [
    (lambda: dilate(G.tolist(), 2), TypeError, r"dout must be a numpy ndarray, got list"),
    (lambda: dilate(G.astype(np.int64), 2), TypeError, r"dout has dtype int64"),
    (lambda: dilate(np.ones(3), 2), ValueError, r"dout must have rank >= 2 \(\.\.\., H, W\), got shape \(3,\)"),
    (lambda: dilate(np.ones((2, 0)), 2), ValueError, r"dout has an empty spatial dimension \(shape \(2, 0\)\)"),
    (lambda: dilate(G, 0), ValueError, r"stride must be >= 1, got 0"),
    (lambda: dilate(G, 1.5), TypeError, r"stride must be an integer, got 1.5"),
    (lambda: dilate(G, (2,)), ValueError, r"stride must be an int or a pair \(h, w\), got \(2,\)"),
    (lambda: dilate(G, (2, 0)), ValueError, r"stride\[1\] must be >= 1, got 0"),
    (lambda: dilate(G, 2, size=(3, 2)), ValueError,
     r"size \(3, 2\) is smaller than the dilated gradient 3x3 \(dout 2x2, stride \(2, 2\)\)"),
    (lambda: rot180(np.ones(3)), ValueError, r"w must have rank >= 2"),
    (lambda: rot180("w"), TypeError, r"w must be a numpy ndarray, got str"),
    (lambda: correlate2d(X, Wt[:, :2]), ValueError, r"x has 3 channels .* but w expects 2"),
    (lambda: correlate2d(X.astype(np.float32), Wt), ValueError, r"mixed dtypes: x is float32, w is float64; cast"),
    (lambda: correlate2d(X, np.ones((4, 3, 6, 3))), ValueError, r"kernel 6x3 is larger than the padded input 5x5"),
    (lambda: correlate2d(X, Wt, 0), ValueError, r"^stride must be >= 1, got 0"),
    (lambda: correlate2d(X[0], Wt), ValueError, r"x must have rank 4, got shape \(3, 5, 5\)"),
    (lambda: correlate2d(X, Wt.tolist()), TypeError, r"w must be a numpy ndarray, got list"),
    (lambda: correlate2d(np.ones((0, 3, 5, 5)), Wt), ValueError, r"x has an empty dimension N=0"),
    (lambda: full_correlate2d(X, Wt[:, :1]), ValueError, r"x has 3 channels .* but w expects 1"),
    (lambda: full_correlate2d(X, np.ones((4, 3, 0, 3))), ValueError, r"w has an empty dimension HH=0"),
    (lambda: full_correlate2d(X, Wt[0]), ValueError, r"w must have rank 4"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_avg_pool_as_conv_bad_input_as_avg_pool():
    pp = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = AvgPoolAsConv.forward(X, pp)
    with pytest.raises(ValueError, match=r"AvgPoolAsConv: dout has shape \(2, 3, 1, 1\) but the forward output"):
        AvgPoolAsConv.backward(np.ones((2, 3, 1, 1)), cache)
    with pytest.raises(ValueError, match=r"AvgPoolAsConv: dout is float32 but the forward pass ran in float64"):
        AvgPoolAsConv.backward(out.astype(np.float32), cache)
    with pytest.raises(TypeError, match=r"AvgPoolAsConv.backward expects the cache returned by AvgPoolAsConv"):
        AvgPoolAsConv.backward(out, cache + (None,))
    with pytest.raises(ValueError, match=r"AvgPoolAsConv: pad 2 must be at most half the window 2x2"):
        AvgPoolAsConv.forward(X, {**pp, "pad": 2})


junk = st.one_of(st.integers(-2, 5), st.floats(-1, 3), st.none(), st.text(max_size=2),
                 st.tuples(st.integers(-1, 4), st.integers(-1, 4)), st.tuples(st.integers(1, 3)))


@settings(max_examples=150, deadline=None)
@given(xs=st.lists(st.integers(0, 5), min_size=1, max_size=5), ws=st.lists(st.integers(0, 4), min_size=1, max_size=5),
       stride=junk, size=st.one_of(st.none(), junk), dtypes=st.tuples(*[st.sampled_from([np.float32, np.float64,
                                                                                         np.int32])] * 2))
def test_fuzz_clear_errors_or_the_right_shape(xs, ws, stride, size, dtypes):
    x, w = np.ones(xs, dtype=dtypes[0]), np.ones(ws, dtype=dtypes[1])
    calls = {
        "dilate": lambda: dilate(x, stride, size),
        "rot180": lambda: rot180(w),
        "correlate2d": lambda: correlate2d(x, w, stride),
        "full_correlate2d": lambda: full_correlate2d(x, w),
    }
    for name, call in calls.items():
        try:
            out = call()
        except (ValueError, TypeError) as e:
            assert str(e), name
            continue
        if name == "dilate":
            sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
            want = ((xs[-2] - 1) * sh + 1, (xs[-1] - 1) * sw + 1) if size is None else \
                (size if isinstance(size, tuple) else (size, size))
            assert out.shape[:-2] == x.shape[:-2] and out.shape[-2:] == want
            assert out.sum() == x.sum()
        elif name == "rot180":
            assert out.shape == w.shape
        elif name == "correlate2d":
            assert out.shape == (xs[0], ws[0], 1 + (xs[2] - ws[2]) // stride, 1 + (xs[3] - ws[3]) // stride)
            assert (out == xs[1] * ws[2] * ws[3]).all()
        else:
            assert out.shape == (xs[0], ws[0], xs[2] + ws[2] - 1, xs[3] + ws[3] - 1)
