"""FastConv (convnet/fast/conv.py, conv_im2col.py): against the naive layer, PyTorch, and its algorithm choice.

The Winograd algorithms are tested in test_winograd.py, the batch split in
test_parallel.py; here the algorithm is the one ``auto`` picks unless a test says.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet.fast as fast
from convnet import _checks, layers
from convnet.fast import FastConv, conv_im2col
from convnet.fast.conv import (WINOGRAD2, WINOGRAD4, WINOGRAD4_MIN_SIZE, WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_PIXELS,
                               choose)
from convnet.fast.conv_im2col import IM2COL, chunk_size

DTYPES = [np.float32, np.float64]


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


@pytest.fixture(scope="module")
def check_conv_vs_naive(conv_inputs, tol):
    """``check(case, dtype, seed=0)``: FastConv forward and backward against the naive layer."""
    def check(case, dtype, seed=0):
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
    return check


@pytest.fixture(scope="module")
def check_conv_vs_torch(conv_inputs, tol, torch):
    """``check(case, dtype, seed)``: FastConv forward and backward against torch's conv2d."""
    import torch.nn.functional as TF

    def check(case, dtype, seed):
        x, w, b, cp = conv_inputs(case, dtype, seed)
        out, cache = FastConv.forward(x, w, b, cp)
        dout = np.random.default_rng(seed + 7).standard_normal(out.shape).astype(dtype)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        t_out = TF.conv2d(tx, tw, tb, stride=cp["stride"], padding=cp["pad"])
        t_out.backward(torch.from_numpy(dout))
        np.testing.assert_allclose(out, t_out.detach().numpy(), **tol(dtype, np.sqrt(w[0].size)))
        dx, dw, db = FastConv.backward(dout, cache)
        np.testing.assert_allclose(dx, tx.grad.numpy(), **tol(dtype, np.sqrt(w.shape[0] * w.shape[2] * w.shape[3])))
        np.testing.assert_allclose(dw, tw.grad.numpy(), **tol(dtype, np.sqrt(dout.size)))
        np.testing.assert_allclose(db, tb.grad.numpy(), **tol(dtype, np.sqrt(dout.size)))
    return check


@settings(max_examples=40, deadline=None)
@given(case=conv_cases(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_conv_matches_naive_sweep(case, dtype, seed, check_conv_vs_naive):
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
def test_conv_regressions_vs_naive(case, dtype, check_conv_vs_naive):
    check_conv_vs_naive(case, dtype)


@settings(max_examples=40, deadline=None)
@given(case=conv_cases(max_n=4, max_c=6, max_hw=14, max_f=6), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_conv_matches_torch_sweep(case, dtype, seed, check_conv_vs_torch):
    check_conv_vs_torch(case, dtype, seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CONV_REGRESSIONS.values()), ids=list(CONV_REGRESSIONS))
def test_conv_regressions_vs_torch(case, dtype, check_conv_vs_torch):
    check_conv_vs_torch(case, dtype, 3)


@pytest.mark.parametrize("case", list(CONV_REGRESSIONS.values()), ids=list(CONV_REGRESSIONS))
def test_conv_kernels_multithreaded(case, check_conv_vs_naive, compiled):
    # The conv kernels run on one OpenMP thread by default: force 2 (the GEMMs through numpy, where it applies).
    with fast.config(conv_kernel_threads=2, gemm_in_kernels=False):
        check_conv_vs_naive(case, np.float64, seed=9)


def test_conv_accepts_non_contiguous_arrays(tol):
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


# ---------------------------------------------------------------- im2col's chunks and GEMM layouts


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_chunked_batch_matches_unchunked(dtype, conv_inputs, tol):
    # A tiny budget forces one image per chunk; the result must not change.
    case = (5, 3, 9, 8, 4, 3, 2, 2, 1)
    x, w, b, cp = conv_inputs(case, dtype, 11)
    out_full, cache_full = FastConv.forward(x, w, b, cp)
    dout = np.random.default_rng(12).standard_normal(out_full.shape).astype(dtype)
    grads_full = FastConv.backward(dout, cache_full)
    with fast.config(column_budget=1):
        g = _checks.conv_args(x, w, b, cp)
        assert chunk_size(g, x.itemsize, fast.get_column_budget()) == 1
        out, cache = FastConv.forward(x, w, b, cp)
        grads = FastConv.backward(dout, cache)
    np.testing.assert_allclose(out, out_full, **tol(dtype))
    for a, r in zip(grads, grads_full):
        np.testing.assert_allclose(a, r, **tol(dtype))


def test_conv_column_buffer_stays_within_budget(conv_peaks):
    # Extra memory must not grow with N: tracemalloc sees numpy's allocations.
    N, C, H, W, F = 64, 8, 16, 16, 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((F, C, 3, 3))
    b = np.zeros(F)
    cp = {"stride": 1, "pad": 1}
    per_image_cols = C * 9 * H * W * 8  # 147 KiB; all 64 images: 9 MiB
    budget = 4 * per_image_cols
    with fast.config(column_budget=budget):
        g = _checks.conv_args(x, w, b, cp)
        assert chunk_size(g, 8, fast.get_column_budget()) == 4
        assert chunk_size(g, 8, fast.get_column_budget(), buffers=2) == 2
        out, fwd_peak, bwd_peak = conv_peaks(x, w, b, cp)
    out_bytes = out.nbytes
    # forward: columns + output + one chunk's GEMM result; backward: dx + 2 buffers + chunk temporaries.
    assert fwd_peak <= budget + 2 * out_bytes + 2**20, (fwd_peak, budget, out_bytes)
    assert bwd_peak <= budget + x.nbytes + 2 * out_bytes + 2**20, (bwd_peak, budget, x.nbytes)
    assert fwd_peak < N * per_image_cols  # the whole batch's columns would not fit


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("max_k", [0, 10**9], ids=["one_gemm", "per_image_gemms"])
def test_im2col_backward_both_gemm_layouts_match_naive(max_k, dtype, check_conv_vs_naive):
    # The backward picks per-image GEMMs for thin layers (small C*HH*WW): force each way.
    with fast.config(per_image_gemm_max_k=max_k, conv_algorithm="im2col"):
        check_conv_vs_naive((4, 3, 7, 6, 5, 3, 3, 1, 1), dtype, seed=4)
        check_conv_vs_naive((3, 5, 6, 7, 2, 3, 2, 2, 0), dtype, seed=5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("direct_max", [0, 10**9], ids=["dw_transposed", "dw_direct"])
@pytest.mark.parametrize("budget", [1, None], ids=["chunk_per_image", "one_chunk"])
def test_im2col_backward_both_dw_orientations_match_naive(direct_max, budget, dtype, monkeypatch,
                                                           check_conv_vs_naive):
    # dw's GEMM writes dw as it lies for short chunks and adds into dw^T for long ones: force each way,
    # with one chunk (the first chunk's direct write) and with several (the later chunks' sums).
    monkeypatch.setattr(conv_im2col, "DW_DIRECT_MAX_COLUMNS", direct_max)
    forced = {"per_image_gemm_max_k": 0, "conv_algorithm": "im2col"}
    with fast.config(**forced, **({} if budget is None else {"column_budget": budget})):
        check_conv_vs_naive((4, 6, 7, 6, 5, 3, 3, 1, 1), dtype, seed=6)
        check_conv_vs_naive((3, 5, 6, 7, 2, 3, 2, 2, 0), dtype, seed=7)


# ---------------------------------------------------------------- the choice of algorithm


@pytest.mark.parametrize("case, expect", [
    ((4, 16, 8, 8, 16, 3, 3, 1, 1), True),   # enough channels and 4*8*8 = 256 output pixels: Winograd
    ((3, 16, 8, 8, 16, 3, 3, 1, 1), False),  # 192 output pixels: im2col
    ((1, 16, 16, 16, 16, 3, 3, 1, 1), True),   # one 16x16 image: 256
    ((1, 16, 14, 14, 16, 3, 3, 1, 1), True),   # one 14x14 image: 196
    ((1, 32, 12, 12, 16, 3, 3, 1, 1), False),  # one 12x12 image: 144
    ((4, 3, 8, 8, 32, 3, 3, 1, 1), False),   # C1-like: 3 channels, the direct convolution
    ((4, 16, 8, 8, 8, 3, 3, 1, 1), False),   # too few output channels
    ((4, 16, 8, 8, 16, 3, 3, 2, 1), False),  # stride 2
    ((4, 16, 8, 8, 16, 5, 5, 1, 2), False),  # 5x5
    ((4, 16, 8, 8, 16, 3, 2, 1, 1), False),  # 3x2
])
def test_auto_picks_winograd_only_where_it_pays(case, expect, conv_inputs, have_cython):
    g = _checks.conv_args(*conv_inputs(case, np.float32, 0))
    assert (choose(g, "auto") in (WINOGRAD2, WINOGRAD4)) is (expect and have_cython)
    assert (choose(g, "auto", have_cython=True) in (WINOGRAD2, WINOGRAD4)) is expect
    assert choose(g, "auto", have_cython=False) is IM2COL  # the numpy transforms do not pay
    assert choose(g, "im2col") is IM2COL
    assert (choose(g, "winograd") is not IM2COL) is (g.HH == g.WW == 3 and g.stride == 1)
    assert WINOGRAD_MIN_CHANNELS == 16
    assert WINOGRAD_MIN_PIXELS == 196


@pytest.mark.parametrize("hw, m, m_auto", [
    ((16, 16), 4, 4),   # F(4x4): 36*4*4 = 576 multiplications per channel pair, F(2x2): 16*8*8 = 1024
    ((8, 8), 4, 2),     # 144 vs 256, but 'auto' keeps F(4x4) for maps of 16 and more
    ((14, 14), 4, 2),   # 576 vs 784
    ((2, 2), 2, 2),     # one tile either way: 16 vs 36
    ((5, 5), 2, 2),     # 36*2*2 = 144 vs 16*3*3 = 144: a tie goes to the more accurate F(2x2)
    ((6, 30), 4, 2),    # 36*2*8 = 576 vs 16*3*15 = 720
    ((16, 40), 4, 4),
])
def test_winograd_picks_the_tile_with_fewer_multiplications(hw, m, m_auto, conv_inputs, have_cython):
    # 64 images: every map size here has the output pixels 'auto' asks of Winograd.
    g = _checks.conv_args(*conv_inputs((64, 16, hw[0], hw[1], 16, 3, 3, 1, 1), np.float32, 0))
    assert choose(g, "winograd").transform.m == m
    assert choose(g, "auto", have_cython=True).transform.m == m_auto
    assert WINOGRAD4_MIN_SIZE == 16
    assert choose(g, "winograd2").transform.m == 2
    assert choose(g, "winograd4").transform.m == 4


@pytest.mark.parametrize("algo", ["winograd", "winograd2", "winograd4"])
@pytest.mark.parametrize("case", [(2, 3, 7, 6, 2, 3, 2, 1, 1), (2, 3, 8, 7, 2, 3, 3, 2, 1),
                                  (2, 2, 6, 6, 3, 5, 5, 1, 2)])
def test_forced_winograd_falls_back_to_im2col_elsewhere(case, algo, conv_inputs, check_conv_vs_naive):
    assert choose(_checks.conv_args(*conv_inputs(case, np.float64, 2)), algo) is IM2COL
    with fast.config(conv_algorithm=algo):
        check_conv_vs_naive(case, np.float64, seed=2)


def test_a_layers_plan_is_kept_until_the_settings_change(conv_inputs):
    # A repeated geometry reuses its plan; fast.config makes a new settings snapshot, and a new plan with it.
    from convnet.fast import conv, parallel

    g = _checks.conv_args(*conv_inputs((2, 16, 16, 16, 16, 3, 3, 1, 1), np.float64, 0))
    with fast.config(conv_algorithm="im2col"):
        first = conv._plan(g, 8)
        assert conv._plan(g, 8) is first and first[1] is IM2COL
        with fast.config(conv_algorithm="winograd2"):
            assert conv._plan(g, 8)[1].name == "winograd2"
        assert conv._plan(g, 8)[1] is IM2COL
    with fast.config(num_threads=2, split_min_work=0, min_part_images=1):
        assert len(conv._plan(g, 8)[2]) == (2 if parallel.blas_controller() else 1)


def test_blas_is_held_at_one_thread_only_for_an_algorithm_that_uses_it(conv_inputs, compiled):
    # One small image: im2col's GEMMs get one BLAS thread; the direct kernels call no BLAS and leave it alone,
    # whether the batch is split across threads or not.
    from convnet.fast import conv, parallel

    g = _checks.conv_args(*conv_inputs((1, 3, 16, 16, 8, 3, 3, 1, 1), np.float32, 0))
    algorithms = (IM2COL, conv.IM2ROW, conv.POINTWISE, conv.WINOGRAD4, conv.DIRECT)
    assert [a.uses_blas for a in algorithms] == [True, True, True, True, False]
    for setting, limit in (("im2col", True), ("direct", False)):
        with fast.config(conv_algorithm=setting):
            _, algo, parts, held = conv._plan(g, 4)
            assert algo.name == setting and len(parts) == 1 and held is limit
    big = _checks.conv_args(*conv_inputs((8, 3, 16, 16, 8, 3, 3, 1, 1), np.float32, 0))
    with fast.config(conv_algorithm="direct", num_threads=2, split_min_work=0, min_part_images=1):
        _, algo, parts, held = conv._plan(big, 4)
        assert algo.name == "direct" and (len(parts) > 1) is (parallel.blas_controller() is not None)
        assert held is False
    with fast.config(conv_algorithm="im2col", num_threads=2, split_min_work=0, min_part_images=1,
                     blas_threads_min_work=0):
        _, algo, parts, held = conv._plan(big, 4)
        assert algo.name == "im2col" and held is (len(parts) > 1)
