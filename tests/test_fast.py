"""Fast layers: against the naive layers, against PyTorch, on fixed regressions, and fuzzed.

CI runs this file twice: normally (compiled kernels, CONVNET_REQUIRE_CYTHON=1)
and with CONVNET_PUREPYTHON=1 (the numpy fallback).
"""
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convnet.fast as fast
from convnet import _checks, layers
from convnet.fast import FastAvgPool, FastConv, FastMaxPool

DTYPES = [np.float32, np.float64]
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def tol(dtype, scale=1.0):
    """assert_allclose tolerances; float32 sums of a few hundred terms lose ~1e-6 relative."""
    if dtype == np.float32:
        return {"rtol": 2e-4, "atol": 2e-4 * scale}
    return {"rtol": 1e-9, "atol": 1e-10 * scale}


def torch_or_skip():
    return pytest.importorskip("torch", reason="PyTorch is the oracle; pip install torch==2.13.0")


def pool_param(ph, pw, s, p=0):
    return {"pool_height": ph, "pool_width": pw, "stride": s, "pad": p}


# ---------------------------------------------------------------- environment


def test_have_cython_matches_environment():
    if _flag("CONVNET_PUREPYTHON"):
        assert fast.HAVE_CYTHON is False
    elif _flag("CONVNET_REQUIRE_CYTHON"):
        assert fast.HAVE_CYTHON is True
    assert isinstance(fast.HAVE_CYTHON, bool)


def _run(code, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("CONVNET_")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120)


def test_require_cython_turns_a_missing_extension_into_import_error():
    # Simulate a missing build: a None entry in sys.modules makes the import fail.
    code = "import sys; sys.modules['convnet._fast._im2col'] = None; import convnet.fast"
    r = _run(code, CONVNET_REQUIRE_CYTHON="1")
    assert r.returncode != 0 and "ImportError" in r.stderr and "CONVNET_REQUIRE_CYTHON" in r.stderr
    r = _run(code + "; print(convnet.fast.HAVE_CYTHON)")
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
    r = _run("import convnet.fast as f; print(f.HAVE_CYTHON)", CONVNET_REQUIRE_CYTHON="1", CONVNET_PUREPYTHON="1")
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_column_budget_from_environment():
    r = _run("import convnet.fast as f; print(f.get_column_budget())", CONVNET_COLUMN_BUDGET="123456")
    assert r.returncode == 0 and r.stdout.strip() == "123456", r.stderr
    r = _run("import convnet.fast", CONVNET_COLUMN_BUDGET="lots")
    assert r.returncode != 0 and "CONVNET_COLUMN_BUDGET" in r.stderr


# ---------------------------------------------------------------- strategies


@st.composite
def conv_cases(draw, max_n=2, max_c=3, max_hw=7, max_f=3):
    N = draw(st.integers(1, max_n))
    C = draw(st.integers(1, max_c))
    H = draw(st.integers(1, max_hw))
    W = draw(st.integers(1, max_hw))
    F = draw(st.integers(1, max_f))
    p = draw(st.integers(0, 2))
    HH = draw(st.integers(1, min(H + 2 * p, 5)))
    WW = draw(st.integers(1, min(W + 2 * p, 5)))
    s = draw(st.integers(1, 3))
    return N, C, H, W, F, HH, WW, s, p


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


def conv_inputs(case, dtype, seed):
    N, C, H, W, F, HH, WW, s, p = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, HH, WW)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, w, b, {"stride": s, "pad": p}


# ---------------------------------------------------------------- conv


def check_conv_vs_naive(case, dtype, seed=0):
    x, w, b, cp = conv_inputs(case, dtype, seed)
    out, cache = FastConv.forward(x, w, b, cp)
    ref, rcache = layers.Conv.forward(x, w, b, cp)
    assert out.dtype == dtype and out.shape == ref.shape
    scale = np.sqrt(w[0].size)
    np.testing.assert_allclose(out, ref, **tol(dtype, scale))
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(dtype)
    grads = FastConv.backward(dout, cache)
    rgrads = layers.Conv.backward(dout, rcache)
    for name, g, r in zip(("dx", "dw", "db"), grads, rgrads):
        assert g.dtype == dtype and g.shape == r.shape, name
        np.testing.assert_allclose(g, r, err_msg=name, **tol(dtype, np.sqrt(dout.size)))


@settings(max_examples=40, deadline=None)
@given(case=conv_cases(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_conv_matches_naive_sweep(case, dtype, seed):
    check_conv_vs_naive(case, dtype, seed)


# (N, C, H, W, F, HH, WW, stride, pad)
CONV_REGRESSIONS = {
    "non_square_kernel": (2, 3, 7, 6, 2, 3, 2, 1, 1),
    "non_square_kernel_tall": (1, 2, 6, 8, 3, 5, 1, 2, 2),
    "stride_does_not_divide": (2, 2, 8, 7, 2, 3, 3, 3, 1),
    "kernel_1x1": (2, 4, 5, 5, 3, 1, 1, 1, 0),
    "kernel_1x1_strided_padded": (2, 3, 5, 4, 2, 1, 1, 2, 1),
    "kernel_equals_padded_input": (2, 2, 4, 3, 2, 6, 5, 1, 1),
    "big_stride_small_input": (1, 1, 3, 3, 1, 3, 3, 5, 1),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CONV_REGRESSIONS.values()), ids=list(CONV_REGRESSIONS))
def test_conv_regressions_vs_naive(case, dtype):
    check_conv_vs_naive(case, dtype)


def torch_conv(x, w, b, cp, dout):
    torch = torch_or_skip()
    import torch.nn.functional as TF

    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = TF.conv2d(tx, tw, tb, stride=cp["stride"], padding=cp["pad"])
    out.backward(torch.from_numpy(dout))
    return out.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


def check_conv_vs_torch(case, dtype, seed):
    x, w, b, cp = conv_inputs(case, dtype, seed)
    out, cache = FastConv.forward(x, w, b, cp)
    dout = np.random.default_rng(seed + 7).standard_normal(out.shape).astype(dtype)
    t_out, t_dx, t_dw, t_db = torch_conv(x, w, b, cp, dout)
    np.testing.assert_allclose(out, t_out, **tol(dtype, np.sqrt(w[0].size)))
    dx, dw, db = FastConv.backward(dout, cache)
    np.testing.assert_allclose(dx, t_dx, **tol(dtype, np.sqrt(w.shape[0] * w.shape[2] * w.shape[3])))
    np.testing.assert_allclose(dw, t_dw, **tol(dtype, np.sqrt(dout.size)))
    np.testing.assert_allclose(db, t_db, **tol(dtype, np.sqrt(dout.size)))


@settings(max_examples=40, deadline=None)
@given(case=conv_cases(max_n=4, max_c=6, max_hw=14, max_f=6), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_conv_matches_torch_sweep(case, dtype, seed):
    torch_or_skip()
    check_conv_vs_torch(case, dtype, seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CONV_REGRESSIONS.values()), ids=list(CONV_REGRESSIONS))
def test_conv_regressions_vs_torch(case, dtype):
    check_conv_vs_torch(case, dtype, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_chunked_batch_matches_unchunked(dtype):
    # A tiny budget forces one image per chunk; the result must not change.
    case = (5, 3, 9, 8, 4, 3, 2, 2, 1)
    x, w, b, cp = conv_inputs(case, dtype, 11)
    out_full, cache_full = FastConv.forward(x, w, b, cp)
    dout = np.random.default_rng(12).standard_normal(out_full.shape).astype(dtype)
    grads_full = FastConv.backward(dout, cache_full)
    old = fast.set_column_budget(1)
    try:
        g = _checks.conv_args(x, w, b, cp)
        assert fast.conv_chunk_size(g, x.itemsize) == 1
        out, cache = FastConv.forward(x, w, b, cp)
        grads = FastConv.backward(dout, cache)
    finally:
        fast.set_column_budget(old)
    np.testing.assert_allclose(out, out_full, **tol(dtype))
    for a, r in zip(grads, grads_full):
        np.testing.assert_allclose(a, r, **tol(dtype))


def test_conv_column_buffer_stays_within_budget():
    # Extra memory must not grow with N: tracemalloc sees numpy's allocations.
    N, C, H, W, F = 64, 8, 16, 16, 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((F, C, 3, 3))
    b = np.zeros(F)
    cp = {"stride": 1, "pad": 1}
    per_image_cols = C * 9 * H * W * 8  # 147 KiB; all 64 images: 9 MiB
    budget = 4 * per_image_cols
    old = fast.set_column_budget(budget)
    try:
        g = _checks.conv_args(x, w, b, cp)
        assert fast.conv_chunk_size(g, 8) == 4
        assert fast.conv_chunk_size(g, 8, buffers=2) == 2
        out, cache = FastConv.forward(x, w, b, cp)
        dout = np.ones_like(out)
        tracemalloc.start()
        FastConv.forward(x, w, b, cp)
        fwd_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        FastConv.backward(dout, cache)
        bwd_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        fast.set_column_budget(old)
    out_bytes = out.nbytes
    # forward: columns + output + one chunk's GEMM result; backward: dx + 2 buffers + chunk temporaries.
    assert fwd_peak <= budget + 2 * out_bytes + 2**20, (fwd_peak, budget, out_bytes)
    assert bwd_peak <= budget + x.nbytes + 2 * out_bytes + 2**20, (bwd_peak, budget, x.nbytes)
    assert fwd_peak < N * per_image_cols  # the whole batch's columns would not fit


def test_set_column_budget_validates():
    with pytest.raises(ValueError):
        fast.set_column_budget(0)
    with pytest.raises(TypeError):
        fast.set_column_budget(1.5)
    old = fast.set_column_budget(12345)
    assert fast.get_column_budget() == 12345
    assert fast.set_column_budget(old) == 12345


# ---------------------------------------------------------------- pooling


def pool_inputs(case, dtype, seed):
    N, C, H, W, ph, pw, s, p = case
    x = np.random.default_rng(seed).standard_normal((N, C, H, W)).astype(dtype)
    return x, pool_param(ph, pw, s, p)


POOLS = {"max": (FastMaxPool, layers.MaxPool), "avg": (FastAvgPool, layers.AvgPool)}


def check_pool_vs_naive(kind, case, dtype, seed=0, x=None):
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


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["max", "avg"]), case=pool_cases(), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_pool_matches_naive_sweep(kind, case, dtype, seed):
    check_pool_vs_naive(kind, case, dtype, seed)


def torch_pool(kind, x, pp, dout):
    torch = torch_or_skip()
    import torch.nn.functional as TF

    fn = TF.max_pool2d if kind == "max" else TF.avg_pool2d
    tx = torch.tensor(x, requires_grad=True)
    out = fn(tx, (pp["pool_height"], pp["pool_width"]), stride=pp["stride"], padding=pp["pad"])
    out.backward(torch.from_numpy(dout))
    return out.detach().numpy(), tx.grad.numpy()


def check_pool_vs_torch(kind, x, pp, seed=0):
    Fast = POOLS[kind][0]
    out, cache = Fast.forward(x, pp)
    dout = np.random.default_rng(seed).standard_normal(out.shape).astype(x.dtype)
    t_out, t_dx = torch_pool(kind, x, pp, dout)
    np.testing.assert_allclose(out, t_out, **tol(x.dtype))
    np.testing.assert_allclose(Fast.backward(dout, cache), t_dx, **tol(x.dtype))


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["max", "avg"]), case=pool_cases(max_n=4, max_c=5, max_hw=16),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_pool_matches_torch_sweep(kind, case, dtype, seed):
    torch_or_skip()
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
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", list(POOL_REGRESSIONS.values()), ids=list(POOL_REGRESSIONS))
def test_pool_regressions(case, kind, dtype):
    check_pool_vs_naive(kind, case, dtype)
    x, pp = pool_inputs(case, dtype, 5)
    if _torch_available():  # the torch-only sweeps skip visibly; here naive still runs without torch
        check_pool_vs_torch(kind, x, pp)


def _torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# Seed 003: a 6x6 input, loss = mean(pool(x)); PyTorch's printed gradients are
# (count of windows choosing each element) / (number of windows).
SEED003_X = np.array([[1, 3, 4, 2, 5, 2],
                      [4, 2, 5, 6, 8, 3],
                      [5, 3, 7, 8, 9, 3],
                      [8, 4, 3, 6, 0, 2],
                      [7, 10, 3, 6, 3, 5],
                      [4, 7, 2, 4, 7, 8]], dtype=np.float64)
SEED003_MAX_S2 = np.array([[0, 0, 0, 0, 0, 0],
                           [1, 0, 0, 1, 1, 0],
                           [0, 0, 0, 1, 1, 0],
                           [1, 0, 0, 0, 0, 0],
                           [0, 1, 0, 1, 0, 0],
                           [0, 0, 0, 0, 0, 1]]) / 9
SEED003_MAX_S1 = np.array([[0, 0, 0, 0, 0, 0],
                           [1, 0, 1, 1, 2, 0],
                           [1, 0, 2, 2, 4, 0],
                           [1, 0, 0, 2, 0, 0],
                           [0, 4, 0, 1, 0, 1],
                           [0, 0, 0, 0, 1, 1]]) / 25
SEED003_AVG_S1 = np.array([[1, 2, 2, 2, 2, 1],
                           [2, 4, 4, 4, 4, 2],
                           [2, 4, 4, 4, 4, 2],
                           [2, 4, 4, 4, 4, 2],
                           [2, 4, 4, 4, 4, 2],
                           [1, 2, 2, 2, 2, 1]]) / 100


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,stride,expected", [
    ("max", 2, SEED003_MAX_S2),
    ("max", 1, SEED003_MAX_S1),
    ("avg", 2, np.full((6, 6), 1 / 36)),
    ("avg", 1, SEED003_AVG_S1),
])
def test_seed003_overlapping_pooling(kind, stride, expected, dtype):
    Fast = POOLS[kind][0]
    x = SEED003_X.astype(dtype).reshape(1, 1, 6, 6)
    out, cache = Fast.forward(x, pool_param(2, 2, stride))
    dx = Fast.backward(np.full(out.shape, 1.0 / out.size, dtype=dtype), cache)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx[0, 0], expected, rtol=1e-6, atol=1e-7)
    # The printed outputs were rounded to 4 decimals.
    printed = {("max", 2): 0.1111, ("max", 1): 0.04, ("avg", 2): 0.0278, ("avg", 1): 0.01}[kind, stride]
    assert abs(dx[0, 0][dx[0, 0] > 0].min() - printed) < 5e-5


def test_seed003_max_forward_values():
    out, _ = FastMaxPool.forward(SEED003_X.reshape(1, 1, 6, 6), pool_param(2, 2, 2))
    np.testing.assert_array_equal(out[0, 0], [[4, 6, 8], [8, 8, 9], [10, 6, 8]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_ties_go_to_first_maximum(dtype):
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


@pytest.mark.parametrize("Fast", [FastMaxPool, FastAvgPool])
def test_pool_accepts_non_contiguous_input_and_dout(Fast):
    x = np.random.default_rng(0).standard_normal((6, 5, 8, 4)).transpose(1, 0, 3, 2)[:, :, ::2]
    pp = pool_param(2, 2, 1)
    out, cache = Fast.forward(x, pp)
    ref_out, _ = Fast.forward(np.ascontiguousarray(x), pp)
    np.testing.assert_array_equal(out, ref_out)
    dout = np.random.default_rng(1).standard_normal(out.shape[::-1]).T  # non-contiguous dout
    np.testing.assert_allclose(Fast.backward(dout, cache), Fast.backward(np.ascontiguousarray(dout), cache))


def test_conv_accepts_non_contiguous_arrays():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 7, 3)).transpose(0, 3, 2, 1)  # (4, 3, 7, 6)
    w = rng.standard_normal((3, 3, 2, 4)).transpose(3, 1, 0, 2)  # (4, 3, 3, 2)
    b = rng.standard_normal(8)[::2]
    cp = {"stride": 2, "pad": 1}
    out, cache = FastConv.forward(x, w, b, cp)
    ref, rcache = layers.Conv.forward(x, w, b, cp)
    np.testing.assert_allclose(out, ref, **tol(np.float64))
    dout = rng.standard_normal(out.shape[::-1]).T
    for g, r in zip(FastConv.backward(dout, cache), layers.Conv.backward(np.ascontiguousarray(dout), rcache)):
        np.testing.assert_allclose(g, r, **tol(np.float64))


@pytest.mark.skipif(not fast.HAVE_CYTHON, reason="compiled kernels not in use (CONVNET_PUREPYTHON=1 or not built)")
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_backward_kernel_zeroes_dx_itself(dtype):
    # FastMaxPool.backward hands the kernel np.empty memory: a NaN-filled dx must come back clean.
    from convnet._fast import _pool
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype(dtype)
    out, cache = FastMaxPool.forward(x, pool_param(2, 2, 2))
    dout = np.random.default_rng(4).standard_normal(out.shape).astype(dtype)
    dx = np.full((6, 36), np.nan, dtype=dtype)
    _pool.maxpool_backward(dout.reshape(6, 9), cache.argmax.reshape(6, 9), dx, 2, True)
    np.testing.assert_array_equal(dx.reshape(x.shape), FastMaxPool.backward(dout, cache))
    ref = layers.MaxPool.backward(dout, layers.MaxPool.forward(x, pool_param(2, 2, 2))[1])
    np.testing.assert_array_equal(dx.reshape(x.shape), ref)


# ---------------------------------------------------------------- caches and bad input


def test_caches_only_fit_their_own_backward():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    w, b, cp = np.ones((2, 3, 3, 3)), np.zeros(2), {"stride": 1, "pad": 1}
    pp = pool_param(2, 2, 2)
    out_c, fc = FastConv.forward(x, w, b, cp)
    _, nc = layers.Conv.forward(x, w, b, cp)
    out_m, fm = FastMaxPool.forward(x, pp)
    _, nm = layers.MaxPool.forward(x, pp)
    out_a, fa = FastAvgPool.forward(x, pp)
    assert fc.layer == "FastConv" and fm.layer == "FastMaxPool" and fa.layer == "FastAvgPool"
    with pytest.raises(TypeError, match="FastConv.forward"):
        layers.Conv.backward(out_c, fc)
    with pytest.raises(TypeError, match="naive"):
        FastConv.backward(out_c, nc)
    with pytest.raises(TypeError, match="FastMaxPool"):
        FastAvgPool.backward(out_a, fm)
    with pytest.raises(TypeError, match="FastAvgPool"):
        FastMaxPool.backward(out_m, fa)
    with pytest.raises(TypeError, match="naive"):
        FastMaxPool.backward(out_m, nm)
    with pytest.raises(TypeError, match="FastMaxPool.forward"):
        layers.MaxPool.backward(out_m, fm)
    with pytest.raises(TypeError):
        FastConv.backward(out_c, None)


def test_edited_caches_are_rejected():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    pp = pool_param(2, 2, 2)
    out, cache = FastMaxPool.forward(x, pp)
    dout = np.ones_like(out)
    cache.argmax = cache.argmax.copy()
    cache.argmax[0, 0, 0, 0] = 36
    with pytest.raises(ValueError, match="outside"):
        FastMaxPool.backward(dout, cache)
    cache.argmax[0, 0, 0, 0] = -1
    with pytest.raises(ValueError, match="outside"):
        FastMaxPool.backward(dout, cache)
    cache.argmax = cache.argmax.astype(np.int64)
    with pytest.raises(ValueError, match="int32"):
        FastMaxPool.backward(dout, cache)
    cache.argmax = cache.argmax[:, :, :2]
    with pytest.raises(ValueError, match="int32"):
        FastMaxPool.backward(dout, cache)
    _, cache = FastMaxPool.forward(x, pp)
    cache.x = x[:, :, :4]  # geometry changes: dout no longer fits
    with pytest.raises(ValueError, match="dout has shape"):
        FastMaxPool.backward(dout, cache)
    _, cache = FastConv.forward(x, np.ones((2, 3, 3, 3)), np.zeros(2), {"stride": 1, "pad": 1})
    cache.conv_param["pad"] = 0
    with pytest.raises(ValueError, match="dout has shape"):
        FastConv.backward(np.ones((2, 2, 6, 6)), cache)
    cache.conv_param["pad"] = -3
    with pytest.raises(ValueError, match="pad"):
        FastConv.backward(np.ones((2, 2, 6, 6)), cache)


@pytest.mark.parametrize("Fast", [FastConv, FastMaxPool, FastAvgPool])
def test_dout_is_checked(Fast):
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    if Fast is FastConv:
        out, cache = Fast.forward(x, np.ones((2, 3, 3, 3), np.float32), np.zeros(2, np.float32),
                                  {"stride": 1, "pad": 0})
    else:
        out, cache = Fast.forward(x, pool_param(2, 2, 2))
    with pytest.raises(ValueError, match="float32"):
        Fast.backward(out.astype(np.float64), cache)
    with pytest.raises(ValueError, match="shape"):
        Fast.backward(out[:1], cache)
    with pytest.raises(TypeError):
        Fast.backward(out.tolist(), cache)
    with pytest.raises(TypeError):
        Fast.backward(out.astype(np.int32), cache)


BAD_SCALARS = [0, -1, -(2**62), 1.5, True, "2", None, np.float64(2.0)]
BAD_ARRAYS = [
    lambda s: np.zeros(s, dtype=np.int64),
    lambda s: np.zeros(s, dtype=np.complex128),
    lambda s: np.zeros(s, dtype=np.float16),
    lambda s: np.zeros(s, dtype=">f8"),
    lambda s: np.zeros(s, dtype=object),
    lambda s: np.zeros(s).tolist(),
    lambda s: np.zeros(s[1:]),
    lambda s: np.zeros(s + (1,)),
    lambda s: np.zeros(s[:1] + (0,) + s[2:]),
]


CONV_CORRUPTIONS = ["x", "w", "b", "stride", "pad", "drop_stride", "drop_pad", "channels", "bias_len",
                    "dtype_mix", "kernel_too_big", "params_type"]


@FUZZ
@given(N=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(1, 6), W=st.integers(1, 6), F=st.integers(1, 3),
       p=st.integers(0, 2), s=st.integers(1, 3), khw=st.tuples(st.integers(1, 8), st.integers(1, 8)),
       corrupt=st.lists(st.sampled_from(CONV_CORRUPTIONS), max_size=2, unique=True),
       scalar=st.sampled_from(BAD_SCALARS), maker=st.sampled_from(BAD_ARRAYS), dtype=st.sampled_from(DTYPES))
def test_fuzz_conv_never_crashes(N, C, H, W, F, p, s, khw, corrupt, scalar, maker, dtype):
    # Start from a valid call (when the kernel fits) and corrupt up to two things.
    HH, WW = min(khw[0], H + 2 * p), min(khw[1], W + 2 * p)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, HH, WW)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    cp = {"stride": s, "pad": p}
    for c in corrupt:
        if c in ("x", "w", "b"):
            arr = {"x": x, "w": w, "b": b}[c]
            bad = maker(np.shape(arr) if np.ndim(arr) == 4 else (F, 1, 1, 1))
            x, w, b = (bad if c == k else v for k, v in (("x", x), ("w", w), ("b", b)))
        elif c in ("stride", "pad") and isinstance(cp, dict):
            cp[c] = scalar
        elif c.startswith("drop_") and isinstance(cp, dict):
            cp.pop(c[5:], None)
        elif c == "channels":
            w = np.ones((F, C + 1, HH, WW), dtype)
        elif c == "bias_len":
            b = np.ones(F + 1, dtype)
        elif c == "dtype_mix":
            w = np.asarray(w).astype(np.float32 if dtype == np.float64 else np.float64)
        elif c == "kernel_too_big":
            w = np.ones((F, C, H + 2 * p + 1, 1), dtype)
        elif c == "params_type":
            cp = [s, p]
    try:
        out, cache = FastConv.forward(x, w, b, cp)
    except (ValueError, TypeError):
        assert corrupt, "a valid call was rejected"
        return
    ref, _ = layers.Conv.forward(x, w, b, cp)
    np.testing.assert_allclose(out, ref, **tol(out.dtype, 10))
    grads = FastConv.backward(np.ones_like(out), cache)
    assert [g.shape for g in grads] == [x.shape, w.shape, b.shape]


@FUZZ
@given(N=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(1, 7), W=st.integers(1, 7),
       window=st.tuples(st.integers(1, 5), st.integers(1, 5)), s=st.integers(1, 3), p=st.integers(0, 2),
       kind=st.sampled_from(["max", "avg"]),
       corrupt=st.lists(st.sampled_from(["x", "pool_height", "pool_width", "stride", "pad", "drop", "big_pad",
                                         "big_window", "params_type"]), max_size=2, unique=True),
       scalar=st.sampled_from(BAD_SCALARS), maker=st.sampled_from(BAD_ARRAYS), dtype=st.sampled_from(DTYPES),
       drop=st.sampled_from(["pool_height", "pool_width", "stride"]))
def test_fuzz_pool_never_crashes(N, C, H, W, window, s, p, kind, corrupt, scalar, maker, dtype, drop):
    Fast, Naive = POOLS[kind]
    ph, pw = window
    p = min(p, ph // 2, pw // 2)
    ph, pw = min(ph, H + 2 * p), min(pw, W + 2 * p)
    p = min(p, ph // 2, pw // 2)
    x = np.random.default_rng(0).standard_normal((N, C, H, W)).astype(dtype)
    pp = pool_param(ph, pw, s, p)
    for c in corrupt:
        if c == "x":
            x = maker(np.shape(x))
        elif not isinstance(pp, dict):
            continue
        elif c in pp:
            pp[c] = scalar
        elif c == "drop":
            pp.pop(drop, None)
        elif c == "big_pad":
            pp["pad"] = max(ph, pw)
        elif c == "big_window":
            pp["pool_width"] = W + 2 * p + 1
        elif c == "params_type":
            pp = (ph, pw, s)
    try:
        out, cache = Fast.forward(x, pp)
    except (ValueError, TypeError):
        assert corrupt, "a valid call was rejected"
        return
    ref, rcache = Naive.forward(x, pp)
    np.testing.assert_allclose(out, ref, **tol(out.dtype))
    dout = np.ones_like(out)
    np.testing.assert_allclose(Fast.backward(dout, cache), Naive.backward(dout, rcache), **tol(out.dtype))


CACHE_EDITS = ["x_shape", "x_dtype", "x_list", "argmax_big", "argmax_neg", "argmax_dtype", "argmax_shape",
               "argmax_none", "param_stride", "param_pad", "param_missing", "layer_name", "w_channels", "b_len"]


@FUZZ
@given(layer=st.sampled_from(["conv", "max", "avg"]), edit=st.sampled_from(CACHE_EDITS),
       value=st.integers(-(2**40), 2**40), dout_kind=st.sampled_from(["ok", "f32", "shape", "noncontig"]))
def test_fuzz_edited_caches_never_crash(layer, edit, value, dout_kind):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5))
    if layer == "conv":
        Fast = FastConv
        out, cache = Fast.forward(x, rng.standard_normal((2, 3, 3, 2)), np.zeros(2), {"stride": 2, "pad": 1})
        params = cache.conv_param
    else:
        Fast = POOLS[layer][0]
        out, cache = Fast.forward(x, pool_param(3, 2, 1, 1))
        params = cache.pool_param
    if edit == "x_shape":
        cache.x = rng.standard_normal((2, 3, abs(value) % 9 + 1, 5))
    elif edit == "x_dtype":
        cache.x = cache.x.astype(np.float32)
    elif edit == "x_list":
        cache.x = cache.x.tolist()
    elif edit.startswith("argmax") and layer == "max":
        a = cache.argmax.copy()
        if edit == "argmax_big":
            a.flat[abs(value) % a.size] = abs(value) % 2**31
        elif edit == "argmax_neg":
            a.flat[abs(value) % a.size] = -(abs(value) % 2**31) - 1
        elif edit == "argmax_dtype":
            a = a.astype(np.int64) + value
        elif edit == "argmax_shape":
            a = a[:1]
        else:
            a = None
        cache.argmax = a
    elif edit == "param_stride":
        params["stride"] = value
    elif edit == "param_pad":
        params["pad"] = value
    elif edit == "param_missing":
        params.pop("stride")
    elif edit == "layer_name":
        cache.layer = "FastSomethingElse"
    elif edit == "w_channels" and layer == "conv":
        cache.w = rng.standard_normal((2, abs(value) % 5 + 1, 3, 2))
    elif edit == "b_len" and layer == "conv":
        cache.b = np.zeros(abs(value) % 4)
    dout = {"ok": np.ones_like(out), "f32": np.ones(out.shape, np.float32), "shape": np.ones(out.shape[1:]),
            "noncontig": np.ones(out.shape[::-1]).T}[dout_kind]
    try:
        grads = Fast.backward(dout, cache)
    except (ValueError, TypeError):
        return
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert grads[0].shape == np.asarray(cache.x).shape and np.isfinite(grads[0]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_propagates_nan_like_naive(dtype):
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


@pytest.mark.skipif(not fast.HAVE_CYTHON, reason="compiled kernels not in use (CONVNET_PUREPYTHON=1 or not built)")
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", list(POOL_REGRESSIONS.values()), ids=list(POOL_REGRESSIONS))
def test_pool_kernels_multithreaded(case, kind, monkeypatch):
    # Small inputs run on one thread; force the threaded path (2 threads) on every case.
    monkeypatch.setattr(fast, "_PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(fast, "_MAX_THREADS", 2)
    check_pool_vs_naive(kind, case, np.float64, seed=9)


@pytest.mark.skipif(not fast.HAVE_CYTHON, reason="compiled kernels not in use (CONVNET_PUREPYTHON=1 or not built)")
@pytest.mark.parametrize("case", list(CONV_REGRESSIONS.values()), ids=list(CONV_REGRESSIONS))
def test_conv_kernels_multithreaded(case, monkeypatch):
    monkeypatch.setattr(fast, "_CONV_KERNEL_THREADS", 2)
    check_conv_vs_naive(case, np.float64, seed=9)


def test_read_only_inputs_and_small_caches():
    # Read-only arrays (e.g. np.load(mmap_mode='r')) work: the kernels take const views.
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((2, 3, 3, 3)), np.zeros(2)
    for a in (x, w, b):
        a.setflags(write=False)
    out, cache = FastConv.forward(x, w, b, {"stride": 1, "pad": 1})
    dout = np.ones_like(out)
    dout.setflags(write=False)
    ref = layers.Conv.backward(dout, layers.Conv.forward(x, w, b, {"stride": 1, "pad": 1})[1])
    for g, r in zip(FastConv.backward(dout, cache), ref):
        np.testing.assert_allclose(g, r, **tol(np.float64))
    assert not hasattr(cache, "__dict__")  # __slots__: nothing else can be attached
    for Fast, Naive in POOLS.values():
        out, cache = Fast.forward(x, pool_param(2, 2, 2))
        if hasattr(cache, "argmax"):
            cache.argmax.setflags(write=False)
        dout = np.ones_like(out)
        dout.setflags(write=False)
        np.testing.assert_allclose(Fast.backward(dout, cache),
                                   Naive.backward(dout, Naive.forward(x, pool_param(2, 2, 2))[1]), **tol(np.float64))
        assert not hasattr(cache, "__dict__")


# ---------------------------------------------------------------- thread control


def test_set_num_threads_round_trip_and_default():
    default = fast.get_num_threads()
    assert isinstance(default, int) and default >= 1
    try:
        assert fast.set_num_threads(1) == default
        assert fast.get_num_threads() == 1
        assert fast.set_num_threads(np.int64(3)) == 1
        assert fast.get_num_threads() == 3
        assert fast.set_num_threads(None) == 3
        assert fast.get_num_threads() == default
        fast.set_num_threads(2)
        assert fast.set_num_threads(0) == 2
        assert fast.get_num_threads() == default
    finally:
        fast.set_num_threads(None)


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (1.0, TypeError), ("2", TypeError), (True, TypeError)])
def test_set_num_threads_rejects_bad_values(bad, exc):
    before = fast.get_num_threads()
    with pytest.raises(exc, match="set_num_threads"):
        fast.set_num_threads(bad)
    assert fast.get_num_threads() == before


@pytest.mark.skipif(not fast.HAVE_CYTHON, reason="compiled kernels not in use (CONVNET_PUREPYTHON=1 or not built)")
def test_num_threads_reaches_the_pool_kernels(monkeypatch):
    # The thread count is what the kernels are given; results do not depend on it.
    calls = []
    monkeypatch.setattr(fast, "_PARALLEL_MIN_WORK", 0)
    real = fast._threads
    monkeypatch.setattr(fast, "_threads", lambda work: calls.append(real(work)) or calls[-1])
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    outs = []
    try:
        for n in (1, 2):
            fast.set_num_threads(n)
            outs.append(FastMaxPool.forward(x, pool_param(2, 2, 2))[0])
    finally:
        fast.set_num_threads(None)
    assert calls == [1, 2]
    np.testing.assert_array_equal(outs[0], outs[1])


# ---------------------------------------------------------------- Winograd F(2x2, 3x3), F(4x4, 3x3)

# Winograd adds and subtracts a tile's inputs (and products) before and after the
# multiplications, so its rounding error is relative to the scale of the whole
# tile, not of each output entry. Measured max|fast - exact| / max|exact| over
# random layers: F(2x2, 3x3) 3e-7 (float32) and 2e-15 (float64); F(4x4, 3x3),
# whose transforms multiply by up to 8 and 1/24, 5e-6 and 9e-15. The bounds
# leave a 10-30x margin.
WINO_ALGOS = ["winograd2", "winograd4"]
WINO_REL = {("winograd2", np.float32): 1e-5, ("winograd2", np.float64): 1e-13,
            ("winograd4", np.float32): 1e-4, ("winograd4", np.float64): 2e-13}


def assert_close_scaled(a, ref, dtype, what="", algo="winograd2"):
    """max|a - ref| <= WINO_REL[algo, dtype] * max(max|ref|, 1) (an error relative to the array's scale).

    The floor of 1 is the scale of the standard-normal inputs: a result that
    cancels to near zero (e.g. db, a sum of a few dout entries) still carries
    rounding errors of the size of its terms.
    """
    assert a.shape == ref.shape and a.dtype == dtype, what
    err = float(np.max(np.abs(a.astype(np.float64) - ref))) if a.size else 0.0
    bound = WINO_REL[algo, dtype] * max(float(np.max(np.abs(ref))), 1.0)
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


@pytest.fixture
def conv_algorithm():
    """Set the conv algorithm for one test and restore the previous choice afterwards."""
    previous = fast.get_conv_algorithm()
    yield fast.set_conv_algorithm
    fast.set_conv_algorithm(previous)


def test_conv_algorithm_switch_validates_and_round_trips(conv_algorithm):
    assert fast.get_conv_algorithm() == "auto"
    assert set(fast.CONV_ALGORITHMS) == {"auto", "im2col", "winograd", "winograd2", "winograd4"}
    assert conv_algorithm("winograd") == "auto"
    assert conv_algorithm("im2col") == "winograd"
    assert fast.get_conv_algorithm() == "im2col"
    for bad in ("fft", "Winograd", None, 1):
        with pytest.raises(ValueError, match="conv algorithm must be one of"):
            fast.set_conv_algorithm(bad)
    assert fast.get_conv_algorithm() == "im2col"


def _exact_conv(x, w, b, cp, dout):
    """The naive layer in float64: the reference for both dtypes."""
    x64, w64, b64, d64 = (a.astype(np.float64) for a in (x, w, b, dout))
    out, cache = layers.Conv.forward(x64, w64, b64, cp)
    return (out,) + tuple(layers.Conv.backward(d64, cache))


# (N, C, H, W, F, pad): odd sizes give partial edge tiles; H_out = H + 2*pad - 2.
WINO_CASES = {
    "pad0_even": (2, 3, 6, 8, 4, 0),
    "pad0_odd": (2, 2, 7, 5, 3, 0),
    "pad1_odd": (3, 4, 7, 9, 5, 1),
    "pad2_odd": (2, 3, 5, 7, 2, 2),
    "pad1_single_image": (1, 5, 6, 6, 3, 1),
    "pad1_one_output_col": (2, 2, 4, 1, 2, 1),
    "pad0_one_output": (1, 2, 3, 3, 2, 0),
    "pad3": (2, 2, 3, 4, 2, 3),
}


@pytest.mark.parametrize("algo", WINO_ALGOS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(WINO_CASES.values()), ids=list(WINO_CASES))
def test_winograd_matches_naive(case, dtype, algo, conv_algorithm):
    N, C, H, W, F, p = case
    x, w, b, cp = conv_inputs((N, C, H, W, F, 3, 3, 1, p), dtype, seed=sum(case))
    conv_algorithm(algo)
    assert fast._winograd_for(_checks.conv_args(x, w, b, cp)).m == int(algo[-1])
    out, cache = FastConv.forward(x, w, b, cp)
    dout = np.random.default_rng(5).standard_normal(out.shape).astype(dtype)
    got = (out,) + tuple(FastConv.backward(dout, cache))
    for name, a, r in zip(("out", "dx", "dw", "db"), got, _exact_conv(x, w, b, cp, dout)):
        assert_close_scaled(a, r, dtype, name, algo)


def test_winograd4_hand_checked_tile():
    # One 6x6 input patch -> one 4x4 tile: with a kernel that picks the centre tap
    # the output is the patch's interior, exactly (the transforms are exact on integers).
    x = np.arange(36.0).reshape(1, 1, 6, 6)
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 1, 1] = 1.0
    previous = fast.set_conv_algorithm("winograd4")
    try:
        out, cache = FastConv.forward(x, w, np.array([0.5]), {"stride": 1, "pad": 0})
        dx, dw, db = FastConv.backward(np.ones((1, 1, 4, 4)), cache)
    finally:
        fast.set_conv_algorithm(previous)
    np.testing.assert_allclose(out[0, 0], x[0, 0, 1:5, 1:5] + 0.5, rtol=0, atol=1e-12)
    expected_dx = np.zeros((6, 6))
    expected_dx[1:5, 1:5] = 1.0
    np.testing.assert_allclose(dx[0, 0], expected_dx, rtol=0, atol=1e-12)
    # dw[kh, kw] = sum of the 4x4 input window shifted by (kh, kw)
    expected_dw = [[x[0, 0, i:i + 4, j:j + 4].sum() for j in range(3)] for i in range(3)]
    np.testing.assert_allclose(dw[0, 0], expected_dw, rtol=1e-12)
    assert db[0] == 16.0


@pytest.mark.parametrize("algo", WINO_ALGOS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pad", [0, 1, 2])
def test_winograd_matches_torch(pad, dtype, algo, conv_algorithm):
    torch = torch_or_skip()
    import torch.nn.functional as TF
    x, w, b, cp = conv_inputs((6, 32, 15, 12, 24, 3, 3, 1, pad), dtype, seed=pad)
    conv_algorithm(algo)
    out, cache = FastConv.forward(x, w, b, cp)
    dout = np.random.default_rng(7).standard_normal(out.shape).astype(dtype)
    dx, dw, db = FastConv.backward(dout, cache)
    tx, tw, tb = (torch.from_numpy(a).double().requires_grad_() for a in (x, w, b))
    tout = TF.conv2d(tx, tw, tb, stride=1, padding=pad)
    tout.backward(torch.from_numpy(dout).double())
    for name, a, r in zip(("out", "dx", "dw", "db"), (out, dx, dw, db),
                          (tout.detach(), tx.grad, tw.grad, tb.grad)):
        assert_close_scaled(a, r.numpy(), dtype, name, algo)


@pytest.mark.parametrize("algo", WINO_ALGOS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_agrees_with_im2col(dtype, algo, conv_algorithm):
    x, w, b, cp = conv_inputs((3, 17, 9, 10, 16, 3, 3, 1, 1), dtype, seed=3)
    dout = np.random.default_rng(4).standard_normal((3, 16, 9, 10)).astype(dtype)
    results = {}
    for name in ("im2col", algo):
        conv_algorithm(name)
        out, cache = FastConv.forward(x, w, b, cp)
        results[name] = (out,) + tuple(FastConv.backward(dout, cache))
    for name, a, r in zip(("out", "dx", "dw", "db"), results[algo], results["im2col"]):
        assert_close_scaled(a, r.astype(np.float64), dtype, name, algo)


@pytest.mark.parametrize("algo", WINO_ALGOS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_chunked_batch_matches_unchunked(dtype, algo, conv_algorithm):
    # A one-byte budget forces one image per chunk, a large one takes the batch at once.
    x, w, b, cp = conv_inputs((5, 3, 7, 6, 4, 3, 3, 1, 1), dtype, seed=21)
    g = _checks.conv_args(x, w, b, cp)
    dout = np.random.default_rng(22).standard_normal((5, 4, 7, 6)).astype(dtype)
    conv_algorithm(algo)
    results = []
    for budget in (1, 2**30):
        old = fast.set_column_budget(budget)
        try:
            out, cache = FastConv.forward(x, w, b, cp)
            results.append((fast.winograd_chunk_size(g, x.itemsize), out, FastConv.backward(dout, cache)))
        finally:
            fast.set_column_budget(old)
    (n1, out1, grads1), (n5, out5, grads5) = results
    assert (n1, n5) == (1, 5)
    rel = WINO_REL[algo, dtype]
    np.testing.assert_allclose(out1, out5, rtol=rel, atol=rel)
    for a, r in zip(grads1, grads5):
        np.testing.assert_allclose(a, r, rtol=rel, atol=rel * 10)


@pytest.mark.parametrize("algo, per_image", [
    ("winograd2", 16 * (8 + 8) * 8 * 8 * 8),  # 4x4 transformed tiles, 8x8 of them: 128 KiB
    ("winograd4", 36 * (8 + 8) * 4 * 4 * 8),  # 6x6 transformed tiles, 4x4 of them: 72 KiB
])
def test_winograd_buffers_stay_within_budget(algo, per_image, conv_algorithm):
    N, C, H, W, F = 64, 8, 16, 16, 8
    x, w, b, cp = conv_inputs((N, C, H, W, F, 3, 3, 1, 1), np.float64, seed=0)
    conv_algorithm(algo)
    budget = 2 * per_image
    old = fast.set_column_budget(budget)
    try:
        assert fast.winograd_chunk_size(_checks.conv_args(x, w, b, cp), 8) == 2
        out, cache = FastConv.forward(x, w, b, cp)
        dout = np.ones_like(out)
        tracemalloc.start()
        FastConv.forward(x, w, b, cp)
        fwd_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        FastConv.backward(dout, cache)
        bwd_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        fast.set_column_budget(old)
    # tiles (+ up to 4 KiB padding per slab) + output (+ filter transforms); backward adds dx.
    slack = 32 * 4096 + 2**20
    assert fwd_peak <= budget + out.nbytes + slack, (fwd_peak, budget)
    assert bwd_peak <= budget + x.nbytes + slack, (bwd_peak, budget)
    assert fwd_peak < N * per_image


@pytest.mark.parametrize("case, expect", [
    ((2, 16, 8, 8, 16, 3, 3, 1, 1), True),   # enough channels: Winograd
    ((2, 3, 8, 8, 32, 3, 3, 1, 1), False),   # C1-like: 3 channels, im2col
    ((2, 16, 8, 8, 8, 3, 3, 1, 1), False),   # too few output channels
    ((2, 16, 8, 8, 16, 3, 3, 2, 1), False),  # stride 2
    ((2, 16, 8, 8, 16, 5, 5, 1, 2), False),  # 5x5
    ((2, 16, 8, 8, 16, 3, 2, 1, 1), False),  # 3x2
])
def test_auto_picks_winograd_only_where_it_pays(case, expect, conv_algorithm):
    x, w, b, cp = conv_inputs(case, np.float32, seed=0)
    g = _checks.conv_args(x, w, b, cp)
    assert fast._use_winograd(g) is (expect and fast.HAVE_CYTHON)
    conv_algorithm("im2col")
    assert fast._use_winograd(g) is False
    conv_algorithm("winograd")
    assert fast._use_winograd(g) is (g.HH == g.WW == 3 and g.stride == 1)


def test_winograd_chunk_size_takes_a_named_tile_size_and_refuses_others():
    x, w, b, cp = conv_inputs((64, 8, 16, 16, 8, 3, 3, 1, 1), np.float64, seed=0)
    g = _checks.conv_args(x, w, b, cp)
    old = fast.set_column_budget(2**30)
    try:
        # (C + F) * (m+2)^2 * tiles * 8 bytes per image: 128 KiB for F(2x2), 72 KiB for F(4x4)
        assert fast.winograd_chunk_size(g, 8, algo="winograd2") == fast._WINOGRAD_CHUNK_TARGET // (16 * 16 * 64 * 8)
        assert fast.winograd_chunk_size(g, 8, algo="winograd4") == fast._WINOGRAD_CHUNK_TARGET // (16 * 36 * 16 * 8)
    finally:
        fast.set_column_budget(old)
    for bad in ("winograd", "F4", 4):
        with pytest.raises(ValueError, match="algo must be None, 'winograd2' or 'winograd4'"):
            fast.winograd_chunk_size(g, 8, algo=bad)


@pytest.mark.parametrize("hw, m", [
    ((16, 16), 4),  # F(4x4): 36*4*4 = 576 multiplications per channel pair, F(2x2): 16*8*8 = 1024
    ((8, 8), 4),    # 144 vs 256
    ((2, 2), 2),    # one tile either way: 16 vs 36
    ((5, 5), 2),    # 36*2*2 = 144 vs 16*3*3 = 144: a tie goes to the more accurate F(2x2)
    ((6, 30), 4),   # 36*2*8 = 576 vs 16*3*15 = 720
])
def test_winograd_picks_the_tile_with_fewer_multiplications(hw, m, conv_algorithm):
    x, w, b, cp = conv_inputs((1, 16, hw[0], hw[1], 16, 3, 3, 1, 1), np.float32, seed=0)
    g = _checks.conv_args(x, w, b, cp)
    for name in ("winograd", "auto") if fast.HAVE_CYTHON else ("winograd",):
        conv_algorithm(name)
        assert fast._winograd_for(g).m == m, name
    conv_algorithm("winograd2")
    assert fast._winograd_for(g).m == 2
    conv_algorithm("winograd4")
    assert fast._winograd_for(g).m == 4


@pytest.mark.parametrize("algo", ["winograd", "winograd2", "winograd4"])
@pytest.mark.parametrize("case", [(2, 3, 7, 6, 2, 3, 2, 1, 1), (2, 3, 8, 7, 2, 3, 3, 2, 1),
                                  (2, 2, 6, 6, 3, 5, 5, 1, 2)])
def test_forced_winograd_falls_back_to_im2col_elsewhere(case, algo, conv_algorithm):
    conv_algorithm(algo)
    assert fast._winograd_for(_checks.conv_args(*conv_inputs(case, np.float64, 2))) is None
    check_conv_vs_naive(case, np.float64, seed=2)


@pytest.mark.skipif(not fast.HAVE_CYTHON, reason="compiled kernels not in use (CONVNET_PUREPYTHON=1 or not built)")
@pytest.mark.parametrize("algo", WINO_ALGOS)
@pytest.mark.parametrize("case", [WINO_CASES["pad1_odd"], WINO_CASES["pad2_odd"]])
def test_winograd_kernels_multithreaded(case, algo, monkeypatch, conv_algorithm):
    monkeypatch.setattr(fast, "_CONV_KERNEL_THREADS", 2)
    N, C, H, W, F, p = case
    x, w, b, cp = conv_inputs((N, C, H, W, F, 3, 3, 1, p), np.float64, seed=1)
    conv_algorithm(algo)
    out, cache = FastConv.forward(x, w, b, cp)
    dout = np.random.default_rng(5).standard_normal(out.shape)
    got = (out,) + tuple(FastConv.backward(dout, cache))
    for name, a, r in zip(("out", "dx", "dw", "db"), got, _exact_conv(x, w, b, cp, dout)):
        assert_close_scaled(a, r, np.float64, name, algo)


@pytest.mark.skipif(not fast.HAVE_CYTHON, reason="compiled kernels not in use (CONVNET_PUREPYTHON=1 or not built)")
@pytest.mark.parametrize("algo", WINO_ALGOS)
def test_winograd_input_adjoint_overwrites_dx(algo):
    # The backward hands the kernel np.empty memory: every plane of dx must be written, not added to.
    from convnet._fast import _winograd as cwino
    m = int(algo[-1])
    N, C, H, W, pad = 2, 3, 9, 7, 1
    tH, tW = -(-(H + 2 * pad - 2) // m), -(-(W + 2 * pad - 2) // m)
    dV = np.random.default_rng(0).standard_normal(((m + 2) ** 2, C, N * tH * tW))
    results = []
    for fill in (0.0, np.nan, 1e30):
        dx = np.full((N, C, H, W), fill)
        cwino.input_adjoint(dV, dx, pad, tH, tW, 1, m)
        results.append(dx)
    assert np.all(np.isfinite(results[1]))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


@pytest.mark.parametrize("algo", WINO_ALGOS)
@pytest.mark.parametrize("shape", [(2, 3, 7, 5, 4, 2), (2, 3, 38, 21, 2, 1)], ids=["small", "two_tile_blocks"])
def test_winograd_numpy_fallback_matches_kernels(shape, algo, conv_algorithm, monkeypatch):
    # The numpy transforms (CONVNET_PUREPYTHON=1) and the Cython ones agree; 38x21 has
    # more than 16 tiles per plane (the kernels' block size) and partial edge tiles.
    if not fast.HAVE_CYTHON:
        pytest.skip("compiled kernels not in use: only the numpy transforms exist")
    N, C, H, W, F, p = shape
    x, w, b, cp = conv_inputs((N, C, H, W, F, 3, 3, 1, p), np.float64, seed=8)
    dout = np.random.default_rng(9).standard_normal((N, F, H + 2 * p - 2, W + 2 * p - 2))
    conv_algorithm(algo)
    results = []
    for have in (True, False):
        monkeypatch.setattr(fast, "HAVE_CYTHON", have)
        out, cache = FastConv.forward(x, w, b, cp)
        results.append((out,) + tuple(FastConv.backward(dout, cache)))
    for a, r in zip(*results):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 4), F=st.integers(1, 4), H=st.integers(1, 22), W=st.integers(1, 22),
       pad=st.integers(0, 3), dtype=st.sampled_from(DTYPES), algo=st.sampled_from(WINO_ALGOS),
       seed=st.integers(0, 2**16))
def test_winograd_matches_naive_sweep(N, C, F, H, W, pad, dtype, algo, seed):
    if H + 2 * pad < 3 or W + 2 * pad < 3:  # the 3x3 kernel must fit in the padded input
        pad = 1 + max(0, 1 - min(H, W) // 2)
    x, w, b, cp = conv_inputs((N, C, H, W, F, 3, 3, 1, pad), dtype, seed)
    previous = fast.set_conv_algorithm(algo)
    try:
        out, cache = FastConv.forward(x, w, b, cp)
        dout = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(dtype)
        got = (out,) + tuple(FastConv.backward(dout, cache))
    finally:
        fast.set_conv_algorithm(previous)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, _exact_conv(x, w, b, cp, dout)):
        assert_close_scaled(a, r, dtype, name, algo)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("max_k", [0, 10**9], ids=["one_gemm", "per_image_gemms"])
def test_im2col_backward_both_gemm_layouts_match_naive(max_k, dtype, monkeypatch, conv_algorithm):
    # The backward picks per-image GEMMs for thin layers (small C*HH*WW): force each way.
    monkeypatch.setattr(fast, "_PER_IMAGE_GEMM_MAX_K", max_k)
    conv_algorithm("im2col")
    check_conv_vs_naive((4, 3, 7, 6, 5, 3, 3, 1, 1), dtype, seed=4)
    check_conv_vs_naive((3, 5, 6, 7, 2, 3, 2, 2, 0), dtype, seed=5)


# ---------------------------------------------------------------- batch split across threads


def _blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algo, case", [
    ("im2col", (5, 3, 7, 6, 4, 3, 3, 1, 1)),    # thin: per-image GEMMs
    ("im2col", (3, 6, 8, 7, 5, 3, 2, 2, 1)),    # one GEMM per chunk
    ("winograd2", (5, 4, 7, 9, 3, 3, 3, 1, 2)),
    ("winograd4", (5, 4, 7, 9, 3, 3, 3, 1, 2)),
])
def test_split_batch_matches_naive(algo, case, dtype, monkeypatch, conv_algorithm):
    # Force the split on small inputs: 2 and 3 threads (3 parts of 5 images: 1, 2, 2).
    _blas_threads()
    monkeypatch.setattr(fast, "_SPLIT_MIN_WORK", 0)
    conv_algorithm(algo)
    for n in (2, 3):
        previous = fast.set_num_threads(n)
        try:
            g = _checks.conv_args(*conv_inputs(case, dtype, 0))
            assert len(fast._batch_parts(g)) == min(n, case[0])
            x, w, b, cp = conv_inputs(case, dtype, 6)
            out, cache = FastConv.forward(x, w, b, cp)
            dout = np.random.default_rng(7).standard_normal(out.shape).astype(dtype)
            got = (out,) + tuple(FastConv.backward(dout, cache))
        finally:
            fast.set_num_threads(previous)
        for name, a, r in zip(("out", "dx", "dw", "db"), got, _exact_conv(x, w, b, cp, dout)):
            assert_close_scaled(a, r, dtype, name, "winograd4" if algo == "winograd4" else "winograd2")


def test_split_batch_restores_blas_threads_and_propagates_errors(monkeypatch):
    before = _blas_threads()
    monkeypatch.setattr(fast, "_SPLIT_MIN_WORK", 0)
    previous = fast.set_num_threads(2)
    try:
        seen = []

        def work(lo, hi):
            seen.append((lo, hi, _blas_threads()))
            if lo > 0:
                raise RuntimeError("worker failed")
            return lo

        with pytest.raises(RuntimeError, match="worker failed"):
            fast._run_parts(work, [(0, 2), (2, 4)])
        assert sorted(s[:2] for s in seen) == [(0, 2), (2, 4)]
        assert all(all(t == 1 for t in s[2]) for s in seen)  # BLAS on one thread inside
        assert sorted(fast._run_parts(lambda lo, hi: hi - lo, [(0, 3), (3, 4), (4, 9)])) == [1, 3, 5]
    finally:
        fast.set_num_threads(previous)
    assert _blas_threads() == before


def test_no_split_when_disabled_small_or_single_threaded(monkeypatch):
    g = _checks.conv_args(*conv_inputs((8, 16, 16, 16, 16, 3, 3, 1, 1), np.float32, 0))
    previous = fast.set_num_threads(2)
    try:
        monkeypatch.setattr(fast, "_SPLIT_MIN_WORK", 0)
        expect = 2 if fast._blas_controller() else 1
        assert len(fast._batch_parts(g)) == expect
        monkeypatch.setattr(fast, "_SPLIT_BATCH", False)
        assert fast._batch_parts(g) == [(0, 8)]
        monkeypatch.setattr(fast, "_SPLIT_BATCH", True)
        fast.set_num_threads(1)
        assert fast._batch_parts(g) == [(0, 8)]
        fast.set_num_threads(2)
        monkeypatch.setattr(fast, "_SPLIT_MIN_WORK", 10**12)
        assert fast._batch_parts(g) == [(0, 8)]
    finally:
        fast.set_num_threads(previous)


def test_split_batch_buffers_stay_within_budget(monkeypatch):
    # Each of the 2 threads gets half the budget: together they stay within it.
    monkeypatch.setattr(fast, "_SPLIT_MIN_WORK", 0)
    _blas_threads()
    N, C, H, W, F = 64, 8, 16, 16, 4
    x, w, b, cp = conv_inputs((N, C, H, W, F, 3, 3, 2, 1), np.float64, seed=0)
    per_image_cols = C * 9 * 8 * 8 * 8
    budget = 8 * per_image_cols
    old = fast.set_column_budget(budget)
    previous = fast.set_num_threads(2)
    try:
        out, cache = FastConv.forward(x, w, b, cp)
        tracemalloc.start()
        FastConv.forward(x, w, b, cp)
        FastConv.backward(np.ones_like(out), cache)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        fast.set_column_budget(old)
        fast.set_num_threads(previous)
    assert peak <= budget + x.nbytes + 2 * out.nbytes + 2**20, (peak, budget)


def test_split_batch_runs_serially_when_no_thread_can_start(monkeypatch):
    class NoThreads:
        _max_workers = 8

        def submit(self, *args):
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(fast, "_executor", NoThreads())
    monkeypatch.setattr(fast, "_blas_controller", lambda: _NullController())
    calls = []
    assert sorted(fast._run_parts(lambda lo, hi: calls.append(lo) or hi - lo, [(0, 2), (2, 5), (5, 6)])) == [1, 2, 3]
    assert sorted(calls) == [0, 2, 5]  # every part exactly once


class _NullController:
    def limit(self, limits):
        import contextlib
        return contextlib.nullcontext()


def _split_conv_in_child(q):
    x, w, b, cp = conv_inputs((4, 3, 8, 8, 4, 3, 3, 1, 1), np.float64, 1)
    q.put(FastConv.forward(x, w, b, cp)[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_split_batch_works_in_a_forked_child(monkeypatch):
    # The worker pool does not survive fork: the child must start its own, not hang.
    import multiprocessing
    _blas_threads()
    monkeypatch.setattr(fast, "_SPLIT_MIN_WORK", 0)
    previous = fast.set_num_threads(2)
    try:
        x, w, b, cp = conv_inputs((4, 3, 8, 8, 4, 3, 3, 1, 1), np.float64, 1)
        expected = FastConv.forward(x, w, b, cp)[0]  # the parent's pool now exists
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=_split_conv_in_child, args=(q,))
        p.start()
        try:
            got = q.get(timeout=60)  # read before join: the child flushes the queue on exit
        except Exception:
            p.kill()
            pytest.fail("FastConv hung (or failed) in a forked child")
        p.join(30)
        assert p.exitcode == 0
        np.testing.assert_array_equal(got, expected)
    finally:
        fast.set_num_threads(previous)
