"""FastMaxPool and FastAvgPool (convnet/fast/pool.py): against the naive layers, PyTorch and a 6x6 example checked by hand."""
import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet.fast as fast
from convnet import layers
from convnet.fast import FastAvgPool, FastMaxPool

DTYPES = [np.float32, np.float64]
POOLS = {"max": (FastMaxPool, layers.MaxPool), "avg": (FastAvgPool, layers.AvgPool)}


@st.composite
def pool_cases(draw, max_n=2, max_c=3, max_hw=8):
    N = draw(st.integers(1, max_n))
    C = draw(st.integers(1, max_c))
    H = draw(st.integers(1, max_hw))
    W = draw(st.integers(1, max_hw))
    ph = draw(st.integers(1, 4))
    pw = draw(st.integers(1, 4))
    p = draw(st.integers(0, min(ph, pw) // 2))
    if ph > H + 2 * p or pw > W + 2 * p:
        ph, pw, p = min(ph, H), min(pw, W), 0
    s = draw(st.integers(1, 3))
    return N, C, H, W, ph, pw, s, p


def _torch_available():
    return importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def pool_inputs(pool_param):
    """``pool_inputs(case, dtype, seed)`` -> x, pool_param for case (N, C, H, W, ph, pw, stride, pad)."""
    def make(case, dtype, seed):
        N, C, H, W, ph, pw, s, p = case
        x = np.random.default_rng(seed).standard_normal((N, C, H, W)).astype(dtype)
        return x, pool_param(ph, pw, s, p)
    return make


@pytest.fixture(scope="module")
def check_pool_vs_naive(pool_inputs, tol):
    """``check(kind, case, dtype, seed=0, x=None)``: forward and backward against the naive layer."""
    def check(kind, case, dtype, seed=0, x=None):
        Fast, Naive = POOLS[kind]
        x0, pp = pool_inputs(case, dtype, seed)
        x = x0 if x is None else x
        out, cache = Fast.forward(x, pp)
        ref, rcache = Naive.forward(x, pp)
        assert out.dtype == dtype and out.shape == ref.shape
        np.testing.assert_allclose(out, ref, **tol(dtype))
        dout = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(dtype)
        dx = Fast.backward(dout, cache)
        assert dx.dtype == dtype and dx.shape == x.shape
        np.testing.assert_allclose(dx, Naive.backward(dout, rcache), **tol(dtype))
    return check


@pytest.fixture(scope="module")
def check_pool_vs_torch(tol):
    """``check(kind, x, pool_param, seed=0)``: forward and backward against torch (imported by the caller)."""
    def check(kind, x, pp, seed=0):
        import torch
        import torch.nn.functional as TF

        Fast = POOLS[kind][0]
        out, cache = Fast.forward(x, pp)
        dout = np.random.default_rng(seed).standard_normal(out.shape).astype(x.dtype)
        fn = TF.max_pool2d if kind == "max" else TF.avg_pool2d
        tx = torch.tensor(x, requires_grad=True)
        t_out = fn(tx, (pp["pool_height"], pp["pool_width"]), stride=pp["stride"], padding=pp["pad"])
        t_out.backward(torch.from_numpy(dout))
        np.testing.assert_allclose(out, t_out.detach().numpy(), **tol(x.dtype))
        np.testing.assert_allclose(Fast.backward(dout, cache), tx.grad.numpy(), **tol(x.dtype))
    return check


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["max", "avg"]), case=pool_cases(), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_pool_matches_naive_sweep(kind, case, dtype, seed, check_pool_vs_naive):
    check_pool_vs_naive(kind, case, dtype, seed)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["max", "avg"]), case=pool_cases(max_n=4, max_c=5, max_hw=16),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_pool_matches_torch_sweep(kind, case, dtype, seed, torch, pool_inputs, check_pool_vs_torch):
    x, pp = pool_inputs(case, dtype, seed)
    check_pool_vs_torch(kind, x, pp, seed)


# (N, C, H, W, ph, pw, stride, pad)
POOL_REGRESSIONS = {
    "non_square_window": (2, 2, 7, 6, 3, 2, 2, 1),
    "stride_does_not_divide": (2, 2, 8, 7, 3, 3, 3, 0),
    "overlapping_windows": (2, 3, 6, 6, 3, 3, 1, 1),
    "window_1x1": (1, 2, 4, 5, 1, 1, 2, 0),
    "window_equals_padded_input": (2, 1, 4, 3, 6, 5, 1, 2),
    "wide_window": (1, 2, 5, 9, 2, 7, 2, 1),
    "window_2x2_odd_input": (2, 2, 7, 5, 2, 2, 2, 0),  # the kernels' 2x2/2 fast path and its border
    "window_3x3_tiled_odd_input": (2, 2, 8, 7, 3, 3, 3, 0),
    # The average pool's global path (the window is the plane): 16 partial sums and a tail (65 = 4*16 + 1
    # elements), many planes of 64 and of 49 elements.
    "global_window": (2, 3, 5, 13, 5, 13, 1, 0),
    "global_8x8_planes": (3, 16, 8, 8, 8, 8, 1, 0),
    "global_7x7_stride_3": (2, 5, 7, 7, 7, 7, 3, 0),
    # Its full-width path: windows as wide as the plane but not as tall, rows left uncovered.
    "full_width_rows_uncovered": (2, 2, 9, 7, 2, 7, 4, 0),
    "full_width_tiled": (1, 2, 9, 7, 3, 7, 3, 0),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", list(POOL_REGRESSIONS.values()), ids=list(POOL_REGRESSIONS))
def test_pool_regressions(case, kind, dtype, pool_inputs, check_pool_vs_naive, check_pool_vs_torch):
    check_pool_vs_naive(kind, case, dtype)
    x, pp = pool_inputs(case, dtype, 5)
    if _torch_available():  # the torch-only sweeps skip visibly; here naive still runs without torch
        check_pool_vs_torch(kind, x, pp)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", list(POOL_REGRESSIONS.values()), ids=list(POOL_REGRESSIONS))
def test_pool_kernels_multithreaded(case, kind, check_pool_vs_naive, compiled):
    # Small inputs run on one thread; force the threaded path (2 threads) on every case.
    with fast.config(parallel_min_work=0, num_threads=2):
        check_pool_vs_naive(kind, case, np.float64, seed=9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling_by_hand_with_overlapping_windows(dtype, pool_param, pool_by_hand):
    case = pool_by_hand
    Fast = POOLS[case.kind][0]
    out, cache = Fast.forward(case.x.astype(dtype).reshape(1, 1, 6, 6), pool_param(2, 2, case.stride))
    np.testing.assert_allclose(out[0, 0], case.out, rtol=1e-6)
    dx = Fast.backward(np.full(out.shape, 1.0 / out.size, dtype=dtype), cache)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx[0, 0], case.grad, rtol=1e-6, atol=1e-7)
    assert abs(dx[0, 0][dx[0, 0] > 0].min() - case.printed) < 5e-5


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_ties_go_to_first_maximum(dtype, pool_param, check_pool_vs_naive, check_pool_vs_torch):
    # All-equal windows: the gradient goes to the first element in row-major order.
    x = np.zeros((1, 1, 4, 4), dtype=dtype)
    out, cache = FastMaxPool.forward(x, pool_param(2, 3, 1))
    dx = FastMaxPool.backward(np.ones_like(out), cache)
    expected = np.zeros((4, 4))
    expected[:3, :2] = 1  # window (i, j) starts at (i, j)
    np.testing.assert_array_equal(dx[0, 0], expected)
    # Ties among a few values, overlapping windows: same as naive and PyTorch.
    rng = np.random.default_rng(0)
    xi = rng.integers(0, 3, size=(2, 3, 7, 7)).astype(dtype)
    pp = pool_param(3, 3, 1, 1)
    check_pool_vs_naive("max", (2, 3, 7, 7, 3, 3, 1, 1), dtype, x=xi)
    if _torch_available():
        check_pool_vs_torch("max", xi, pp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 2, 2, 2), (3, 1, 10, 4), (5, 13, 8, 8), (2, 3, 12, 14),
                                   (1, 3, 4, 16)],
                         ids=["odd", "one_window", "even", "blocks_of_8x8_planes", "short_rows", "rows_of_8"])
def test_max_pool_2x2_stride_2_picks_the_first_maximum(shape, dtype, pool_param, check_pool_vs_naive,
                                                     check_pool_vs_torch):
    # The kernels' 2x2/2 path compares four values with selects: ties (and infinities) go to the first in row-major order.
    rng = np.random.default_rng(sum(shape))
    xi = rng.integers(-1, 2, size=shape).astype(dtype)
    xi[rng.random(shape) < 0.1] = np.inf
    xi[rng.random(shape) < 0.1] = -np.inf
    check_pool_vs_naive("max", (*shape, 2, 2, 2, 0), dtype, x=xi)
    if _torch_available():
        check_pool_vs_torch("max", xi, pool_param(2, 2, 2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, nan_at", [((2, 3, 6, 7), (1, 2, 3, 4)), ((4, 30, 8, 6), (2, 17, 5, 1)),
                                            ((4, 30, 8, 6), (3, 29, 7, 4)), ((4, 30, 8, 6), (0, 0, 0, 0))],
                         ids=["one_plane", "one_block", "last_element_even_column", "first_element"])
def test_max_pool_2x2_stride_2_with_a_nan(shape, nan_at, dtype, pool_param, tol):
    # A plane holding a NaN takes the NaN-aware loop, and on short rows (blocks of 8 KiB of planes) so does its
    # block; the other planes and blocks keep their 2x2 path: all as the naive layer.
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)
    x[nan_at] = np.nan
    pp = pool_param(2, 2, 2)
    out, cache = FastMaxPool.forward(x, pp)
    ref, rcache = layers.MaxPool.forward(x, pp)
    np.testing.assert_array_equal(out, ref)  # NaN where naive has NaN (assert_array_equal treats NaNs as equal)
    assert np.isnan(out).sum() == 1
    dout = np.random.default_rng(3).standard_normal(out.shape).astype(dtype)
    np.testing.assert_allclose(FastMaxPool.backward(dout, cache), layers.MaxPool.backward(dout, rcache),
                               **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", [(8, 8), (6, 10), (16, 16), (7, 8)])
def test_max_pool_2x2_kernel_splits_planes_between_its_threads(hw, dtype):
    # The kernel's own thread split (nthreads > 1) gives each thread whole planes: results as one thread's.
    from convnet.fast import _backend

    x = np.random.default_rng(hw[0]).standard_normal((101, *hw)).astype(dtype)
    shape = (101, hw[0] // 2, hw[1] // 2)
    want_out, want_arg = np.empty(shape, dtype), np.empty(shape, np.int32)
    _backend.maxpool_forward(x, want_out, want_arg, 2, 2, 2, 0, 1)
    ref, _ = layers.MaxPool.forward(x[None], {"pool_height": 2, "pool_width": 2, "stride": 2})
    np.testing.assert_array_equal(want_out, ref[0])
    for nthreads in (2, 3):
        out, arg = np.full(shape, np.nan, dtype), np.full(shape, -1, np.int32)
        _backend.maxpool_forward(x, out, arg, 2, 2, 2, 0, nthreads)
        np.testing.assert_array_equal(out, want_out)
        np.testing.assert_array_equal(arg, want_arg)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_propagates_nan_like_naive(dtype, pool_param, tol):
    # A NaN wins its window; its gradient goes to the window's first NaN (numpy's argmax).
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(dtype)
    x[0, 1, 2, 3] = x[0, 1, 3, 3] = np.nan
    x[1, 0, 0, 0] = np.nan
    pp = pool_param(3, 2, 1, 1)
    out, cache = FastMaxPool.forward(x, pp)
    ref, rcache = layers.MaxPool.forward(x, pp)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(out[~np.isnan(out)], ref[~np.isnan(ref)])
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    np.testing.assert_allclose(FastMaxPool.backward(dout, cache), layers.MaxPool.backward(dout, rcache),
                               **tol(dtype))


@pytest.mark.parametrize("Fast", [FastMaxPool, FastAvgPool])
def test_pool_accepts_non_contiguous_input_and_dout(Fast, pool_param):
    x = np.random.default_rng(0).standard_normal((6, 5, 8, 4)).transpose(1, 0, 3, 2)[:, :, ::2]
    pp = pool_param(2, 2, 1)
    out, cache = Fast.forward(x, pp)
    ref_out, _ = Fast.forward(np.ascontiguousarray(x), pp)
    np.testing.assert_array_equal(out, ref_out)
    dout = np.random.default_rng(1).standard_normal(out.shape[::-1]).T  # non-contiguous dout
    np.testing.assert_allclose(Fast.backward(dout, cache), Fast.backward(np.ascontiguousarray(dout), cache))


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_backward_kernel_zeroes_dx_itself(dtype, pool_param, compiled):
    # FastMaxPool.backward hands the kernel np.empty memory: a NaN-filled dx must come back clean.
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype(dtype)
    out, cache = FastMaxPool.forward(x, pool_param(2, 2, 2))
    dout = np.random.default_rng(4).standard_normal(out.shape).astype(dtype)
    dx = np.full((6, 36), np.nan, dtype=dtype)
    compiled.pool.maxpool_backward(dout.reshape(6, 9), cache.argmax.reshape(6, 9), dx, 2)
    np.testing.assert_array_equal(dx.reshape(x.shape), FastMaxPool.backward(dout, cache))
    ref = layers.MaxPool.backward(dout, layers.MaxPool.forward(x, pool_param(2, 2, 2))[1])
    np.testing.assert_array_equal(dx.reshape(x.shape), ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_full_width_avg_pool_backward_zeroes_the_rows_no_window_covers(dtype):
    # 7 rows, 2x5 windows at stride 3 on 5 columns: rows 0-1 and 3-4 are covered; row 2 and rows 5-6 must be 0.
    from convnet.fast import _backend, _numpy

    dout = np.arange(1, 9, dtype=dtype).reshape(4, 2, 1)
    want = np.zeros((4, 7, 5), dtype=dtype)
    want[:, 0:2] = dout[:, 0:1] / 10
    want[:, 3:5] = dout[:, 1:2] / 10
    for kernels in {_backend, _numpy}:
        dx = np.full((4, 7, 5), np.nan, dtype=dtype)
        kernels.avgpool_backward(dout, dx, 2, 5, 3, 0, 1)
        np.testing.assert_allclose(dx, want, rtol=1e-6, atol=0)
        out = np.full((4, 2, 1), np.nan, dtype=dtype)
        kernels.avgpool_forward(want, out, 2, 5, 3, 0, 1)
        np.testing.assert_allclose(out, dout / 10, rtol=1e-6, atol=0)  # each window holds 10 copies of dout/10


@pytest.mark.parametrize("impl", ["compiled", "numpy"])
def test_index_bound_reads_indices_as_unsigned(impl, request):
    from convnet.fast import _numpy

    bound = request.getfixturevalue("compiled").pool.index_bound if impl == "compiled" else _numpy.index_bound
    assert bound(np.array([3, 5, 1], np.int32)) == 5
    assert bound(np.array([], np.int32)) == 0
    assert bound(np.array([7, -1, 2], np.int32)) == 2**32 - 1  # a negative index is past any valid one
    assert bound(np.array([-2**31], np.int32)) == 2**31
    rng = np.random.default_rng(5)
    for n in (1, 7, 8, 9, 1000):
        a = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
        assert bound(a) == int(a.view(np.uint32).max())
        small = rng.integers(0, 100, n).astype(np.int32)
        assert bound(small) == int(small.max())


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_kernels_overwrite_their_outputs(kind, pool_param):
    # Every backend fills np.empty memory completely: garbage in the output buffers must not leak.
    from convnet.fast import _backend, _numpy

    x = np.random.default_rng(5).standard_normal((6, 7, 5))
    dout = np.random.default_rng(6).standard_normal((6, 4, 3))
    for kernels in {_backend, _numpy}:
        got = []
        for fill in (0.0, np.nan):
            out, dx = np.full((6, 4, 3), fill), np.full((6, 7, 5), fill)
            if kind == "max":
                argmax = np.full((6, 4, 3), -7, dtype=np.int32)
                kernels.maxpool_forward(x, out, argmax, 3, 2, 2, 1, 1)
                kernels.maxpool_backward(dout.reshape(6, 12), argmax.reshape(6, 12), dx.reshape(6, 35), 1)
            else:
                kernels.avgpool_forward(x, out, 3, 2, 2, 1, 1)
                kernels.avgpool_backward(dout, dx, 3, 2, 2, 1, 1)
            got.append((out, dx))
        assert np.isfinite(got[1][0]).all() and np.isfinite(got[1][1]).all()
        np.testing.assert_array_equal(got[0][0], got[1][0])
        np.testing.assert_array_equal(got[0][1], got[1][1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_start_at_parallel_min_work_with_float64_counted_twice_in_max_forward(dtype, monkeypatch):
    # 4 planes of 8x8 = 256 elements, parallel_min_work 300: one thread, except max pooling's forward pass in float64
    # (the bytes of 512 float32 elements), which does the most work per byte.
    from convnet.fast import parallel

    seen = []
    real = parallel.kernel_threads
    monkeypatch.setattr(parallel, "kernel_threads", lambda work, s: seen.append((work, real(work, s))) or seen[-1][1])
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(dtype)
    pp = {"pool_height": 2, "pool_width": 2, "stride": 2}
    double = np.dtype(dtype) == np.float64
    with fast.config(parallel_min_work=300, num_threads=2):
        for Fast in (FastMaxPool, FastAvgPool):
            out, cache = Fast.forward(x, pp)
            Fast.backward(np.ones_like(out), cache)
    assert seen == [(512 if double else 256, 2 if double else 1), (256, 1), (256, 1), (256, 1)]
