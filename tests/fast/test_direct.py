"""Direct convolution (convnet/fast/conv_direct.py, convnet/_fast/_direct.pyx): naive layer, PyTorch, finite
differences, non-finite inputs, chunks and threads, images shared with the kernels' worker, choice."""
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convnet import _checks, fast
from convnet.fast import FastConv, conv_direct
from convnet.fast.conv import DIRECT, DIRECT_MAX_CHANNELS, IM2COL, POINTWISE, choose, prefers_direct
from convnet.fast.conv_direct import filter_block, shares_images

DTYPES = [np.float32, np.float64]
# (N, C, H, W, F, HH, WW, stride, pad)
CASES = [
    (2, 3, 32, 32, 6, 5, 5, 1, 0),    # LeNet's first layer: 28-wide rows, a partial vector each
    (3, 6, 14, 14, 16, 5, 5, 1, 0),   # LeNet's second: 10-wide rows, F = 16 in blocks of 4
    (2, 3, 12, 12, 32, 3, 3, 1, 1),   # DeepConvNet's first, smaller maps
    (1, 3, 9, 11, 7, 3, 2, 1, 1),     # non-square kernel, odd F (dw pairs the last filter with zeros)
    (2, 1, 7, 5, 1, 3, 3, 1, 2),      # one channel, one filter, pad = kernel - 1
    (2, 4, 6, 37, 13, 4, 3, 1, 1),    # rows longer than two vectors, F = 13 in blocks of 5
    (1, 2, 5, 5, 3, 5, 5, 1, 4),      # every output is mostly padding
    (1, 3, 32, 32, 32, 7, 7, 1, 3),   # ThreeLayerConvNet's 7x7
]
# Sums in a different order from the naive layer's: rounding of the inputs' scale times sqrt(taps).
REL = {np.float32: 2e-6, np.float64: 1e-14}


@pytest.fixture(autouse=True)
def _need_kernels():
    if not DIRECT.is_usable_for(_checks.conv_args(*_inputs((1, 1, 3, 3, 1, 3, 3, 1, 0), np.float64, 0))):
        pytest.skip("the direct convolution needs the compiled kernels (GCC or clang build)")


def _inputs(case, dtype, seed):
    N, C, H, W, F, HH, WW, s, p = case
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, C, H, W)).astype(dtype), rng.standard_normal((F, C, HH, WW)).astype(dtype),
            rng.standard_normal(F).astype(dtype), {"stride": s, "pad": p})


def _run(x, w, b, cp, dout=None, seed=1):
    with fast.config(conv_algorithm="direct"):
        assert choose(_checks.conv_args(x, w, b, cp), "direct") is DIRECT
        out, cache = FastConv.forward(x, w, b, cp)
        if dout is None:
            dout = np.random.default_rng(seed).standard_normal(out.shape).astype(x.dtype)
        return (out,) + tuple(FastConv.backward(dout, cache)), dout


def _assert_close(a, ref, dtype, what):
    assert a.shape == ref.shape and a.dtype == dtype, what
    err = float(np.max(np.abs(a.astype(np.float64) - ref)))
    bound = REL[dtype] * max(float(np.max(np.abs(ref))), 1.0)
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_matches_naive(case, dtype, exact_conv):
    x, w, b, cp = _inputs(case, dtype, 3)
    got, dout = _run(x, w, b, cp)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, exact_conv(x, w, b, cp, dout)):
        _assert_close(a, r, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[7]])
def test_matches_pytorch(case, dtype, torch):
    import torch.nn.functional as TF

    x, w, b, cp = _inputs(case, dtype, 4)
    (out, dx, dw, db), dout = _run(x, w, b, cp)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ty = TF.conv2d(tx, tw, tb, stride=1, padding=cp["pad"])
    ty.backward(torch.from_numpy(dout))
    for name, a, t in (("out", out, ty), ("dx", dx, tx.grad), ("dw", dw, tw.grad), ("db", db, tb.grad)):
        _assert_close(a, t.detach().numpy().astype(np.float64), dtype, name)


def test_hand_checked_case():
    # A 2x2 filter of ones over a 3x3 ramp: each output sums a 2x2 window; pad 1 adds a ring of partial sums.
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    (out, dx, dw, db), _ = _run(x, np.ones((1, 1, 2, 2)), np.array([0.5]), {"stride": 1, "pad": 1},
                                dout=np.ones((1, 1, 4, 4)))
    expect = np.array([[0, 1, 3, 2], [3, 8, 12, 7], [9, 20, 24, 13], [6, 13, 15, 8]]) + 0.5
    np.testing.assert_array_equal(out[0, 0], expect)
    np.testing.assert_array_equal(dx, np.full((1, 1, 3, 3), 4.0))  # every input is in 4 windows
    np.testing.assert_array_equal(dw.ravel(), [36, 36, 36, 36])     # each tap sees all 9 inputs once
    assert db[0] == 16


def test_finite_differences_float64():
    x, w, b, cp = _inputs((2, 2, 5, 6, 3, 3, 3, 1, 1), np.float64, 9)
    (out, dx, dw, db), dout = _run(x, w, b, cp)
    h = 1e-6

    def loss(x_, w_, b_):
        with fast.config(conv_algorithm="direct"):
            return float(np.sum(FastConv.forward(x_, w_, b_, cp)[0] * dout))

    rng = np.random.default_rng(0)
    for arr, grad in ((x, dx), (w, dw), (b, db)):
        for idx in [tuple(rng.integers(0, n) for n in arr.shape) for _ in range(6)]:
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += h
            minus[idx] -= h
            args = [(plus if a is arr else a) for a in (x, w, b)], [(minus if a is arr else a) for a in (x, w, b)]
            numeric = (loss(*args[0]) - loss(*args[1])) / (2 * h)
            assert abs(numeric - grad[idx]) <= 1e-7 * max(1.0, abs(numeric)), (idx, numeric, grad[idx])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("by_filters", [False, True])
def test_non_finite_inputs_as_im2col(dtype, by_filters, monkeypatch):
    # An infinity in the last input columns, which only some taps reach: the lanes past a row's end are
    # masked (or, with the filters in the lanes, never read), so dw stays finite where no output read it
    # (a product by a zero dout would give NaN).
    monkeypatch.setattr(conv_direct, "dw_by_filters", lambda *a: by_filters)
    x, w, b, cp = _inputs((2, 3, 12, 21, 4, 5, 5, 1, 0), dtype, 5)
    x[1, 2, 4, 19] = np.inf
    x[0, 1, 7, 20] = -np.inf
    got, dout = _run(x, w, b, cp)
    with fast.config(conv_algorithm="im2col"):
        out, cache = FastConv.forward(x, w, b, cp)
        ref = (out,) + tuple(FastConv.backward(dout, cache))
    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(r), err_msg=name)
        np.testing.assert_array_equal(np.isinf(a), np.isinf(r), err_msg=name)
        fin = np.isfinite(r)
        assert fin.any(), name
        _assert_close(np.where(fin, a, 0), np.where(fin, r, 0).astype(np.float64), dtype, name)
    assert np.isfinite(got[2][:, :, :, 0]).all()  # kx = 0 never reaches columns 19 and 20


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("by_filters", [False, True])
def test_chunks_parts_and_threads_agree(dtype, by_filters, monkeypatch, exact_conv):
    monkeypatch.setattr(conv_direct, "dw_by_filters", lambda *a: by_filters)
    # dw sums padded images in chunks: one image per chunk, and the whole batch split between threads.
    x, w, b, cp = _inputs((11, 3, 10, 13, 5, 3, 3, 1, 1), dtype, 6)
    got, dout = _run(x, w, b, cp)
    monkeypatch.setattr(conv_direct, "DW_CHUNK_BYTES", 1)
    with fast.config(split_min_work=0, num_threads=2):
        chunked, _ = _run(x, w, b, cp, dout=dout)
    for name, a, c, r in zip(("out", "dx", "dw", "db"), got, chunked, exact_conv(x, w, b, cp, dout)):
        _assert_close(a, r, dtype, name)
        _assert_close(c, r, dtype, name)


# One image's output rows and dw's tap blocks shared with the kernels' worker (shares_images): one image (two
# vectors of rows, odd F), a one-row output, rows past two vectors with F in blocks of 5, two images, a 7x7.
SHARED_CASES = [(1, 3, 32, 32, 32, 3, 3, 1, 1), (1, 3, 9, 11, 7, 3, 2, 1, 1), (1, 2, 3, 30, 9, 3, 3, 1, 0),
                (1, 4, 6, 37, 13, 4, 3, 1, 1), (2, 6, 14, 14, 16, 5, 5, 1, 0), (1, 3, 32, 32, 8, 7, 7, 1, 3)]
SHARED = {"num_threads": 2, "split_image_gemms": True}


def test_shares_images_predicate(monkeypatch):
    g = SimpleNamespace(N=2, F=32, C=3, HH=3, WW=3, H_out=32, W_out=32)  # DeepConvNet's first layer
    s = fast._config.Settings(num_threads=2)
    assert shares_images(g, s, 0, 2) is (fast._backend.conv_part is not None)
    monkeypatch.setattr(fast._backend, "conv_part", object())
    assert shares_images(g, s, 0, 2)
    assert not shares_images(g, s, 0, 1) and not shares_images(g, s, 1, 2)  # a batch part, not the batch
    assert not shares_images(g, fast._config.Settings(num_threads=1), 0, 2)
    assert not shares_images(g, fast._config.Settings(num_threads=2, split_image_gemms=False), 0, 2)
    # Images of fewer multiply-adds than SHARE_MIN_WORK stay on the calling thread.
    small = SimpleNamespace(N=10, F=8, C=3, HH=3, WW=3, H_out=8, W_out=8)
    assert conv_direct.SHARE_MIN_WORK > 8 * 27 * 64 and not shares_images(small, s, 0, 10)
    monkeypatch.setattr(conv_direct, "SHARE_MIN_WORK", 8 * 27 * 64)
    assert shares_images(small, s, 0, 10)
    monkeypatch.setattr(fast._backend, "conv_part", None)
    assert not shares_images(g, s, 0, 2)


def test_small_images_post_no_job(gemm_in_kernels, idle_worker):
    # A grading check's network (8 filters on 3x8x8 images, batches of 10): jobs of a few us each would leave
    # the worker spinning after every call, against other processes on the same cores.
    x, w, b, cp = _inputs((10, 3, 8, 8, 8, 3, 3, 1, 1), np.float64, 8)
    before = idle_worker()
    with fast.config(split_batch=False, **SHARED):
        got, dout = _run(x, w, b, cp)
    assert gemm_in_kernels.split_state()[1] == before
    with fast.config(split_batch=False, split_image_gemms=False, num_threads=2):
        alone, _ = _run(x, w, b, cp, dout=dout)
    assert all(np.array_equal(a, r) for a, r in zip(got, alone))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("by_filters", [False, True])
@pytest.mark.parametrize("case", SHARED_CASES)
def test_shared_images_match_one_thread(case, by_filters, dtype, monkeypatch, exact_conv, gemm_in_kernels,
                                        idle_worker):
    monkeypatch.setattr(conv_direct, "dw_by_filters", lambda *a: by_filters)
    monkeypatch.setattr(conv_direct, "SHARE_MIN_WORK", 0)  # the small geometries too
    x, w, b, cp = _inputs(case, dtype, 3)
    with fast.config(num_threads=2, split_image_gemms=False):
        alone, dout = _run(x, w, b, cp)
    before = idle_worker()
    with fast.config(split_batch=False, **SHARED):  # the whole batch in one part
        shared, _ = _run(x, w, b, cp, dout=dout)
    assert gemm_in_kernels.split_state()[1] > before  # shared, not run alone
    for name, a, got, r in zip(("out", "dx", "dw", "db"), alone, shared, exact_conv(x, w, b, cp, dout)):
        _assert_close(got, r, dtype, name)
        if len(x) == 1:  # the same kernels over the same sums, whichever thread ran a block
            assert np.array_equal(got, a), name


def test_shared_images_of_a_network_input(gemm_in_kernels, idle_worker):
    x, w, b, cp = _inputs(SHARED_CASES[0], np.float64, 4)
    dout = np.random.default_rng(5).standard_normal((1, 32, 32, 32))
    with fast.config(conv_algorithm="direct", split_image_gemms=False, num_threads=2):
        ref = FastConv.backward(dout, FastConv.forward(x, w, b, cp)[1])
    before = idle_worker()
    with fast.config(conv_algorithm="direct", **SHARED), fast.network_input(x):
        dx, dw, db = FastConv.backward(dout, FastConv.forward(x, w, b, cp)[1])
    assert gemm_in_kernels.split_state()[1] > before
    assert dx is None and np.array_equal(dw, ref[1]) and np.array_equal(db, ref[2])


def test_shared_images_never_wait_for_a_stalled_worker(stalled_worker, taken_back):
    # The caller takes back the block the sleeping worker claimed; while the worker holds the job, the next
    # call runs alone, and the job's arrays stay alive.
    part = stalled_worker
    x, w, b, cp = _inputs(SHARED_CASES[0], np.float64, 6)
    dout = np.random.default_rng(7).standard_normal((1, 32, 32, 32))
    with fast.config(split_image_gemms=False):
        ref, _ = _run(x, w, b, cp, dout=dout)

    def call():
        with fast.config(**SHARED):
            return _run(x, w, b, cp, dout=dout)[0]

    got, elapsed = taken_back(part, call)
    assert elapsed < 0.5, f"the layer took {elapsed:.2f} s with the worker asleep for 1 s in its block"
    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        assert np.array_equal(a, r), name
    worker, posted, finished, _ = part.split_state()
    assert worker == 1 and finished < posted and part.held() is not None
    with fast.config(**SHARED):
        again, _ = _run(x, w, b, cp, dout=dout)
    assert part.split_state()[1] == posted  # the worker is busy: this call ran alone
    for name, a, r in zip(("out", "dx", "dw", "db"), again, ref):
        assert np.array_equal(a, r), name


def test_network_input_skips_dx():
    x, w, b, cp = _inputs((2, 3, 8, 8, 4, 3, 3, 1, 1), np.float32, 2)
    with fast.config(conv_algorithm="direct"), fast.network_input(x):
        out, cache = FastConv.forward(x, w, b, cp)
    dx, dw, db = FastConv.backward(np.ones_like(out), cache)
    assert dx is None and dw.shape == w.shape


@pytest.mark.parametrize("F, W_out, itemsize, by_filters", [
    (16, 10, 4, True),    # LeNet's second layer: 16 of 16 filter lanes against 10 of 16 row lanes
    (6, 28, 4, False),    # LeNet's first: 6 of 16 against 28 of 32
    (32, 32, 4, True),    # full either way: filters (no tail mask, no sums across lanes)
    (12, 32, 4, False),   # 12 of 16 against 32 of 32
    (32, 12, 4, True),
    (7, 10, 8, True),     # float64: 7 of 8 against 10 of 12
    (4, 17, 8, False),
])
def test_dw_by_filters(F, W_out, itemsize, by_filters, exact_conv):
    assert conv_direct.dw_by_filters(F, W_out, itemsize) is by_filters
    dtype = np.float32 if itemsize == 4 else np.float64
    x, w, b, cp = _inputs((3, 2, 7, W_out + 2, F, 3, 3, 1, 0), dtype, 8)
    got, dout = _run(x, w, b, cp)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, exact_conv(x, w, b, cp, dout)):
        _assert_close(a, r, dtype, name)


@pytest.mark.parametrize("F, block", [(1, 1), (3, 3), (6, 6), (7, 4), (8, 4), (13, 5), (16, 4), (18, 6),
                                      (30, 6), (32, 4)])
def test_filter_block(F, block):
    # Up to 6 filters in one pass; beyond, the block of 4-6 that pads F least, the larger on a tie.
    assert filter_block(F) == block


@pytest.mark.parametrize("case, usable", [
    ((1, 3, 32, 32, 6, 5, 5, 1, 0), True), ((1, 3, 8, 8, 6, 3, 3, 1, 2), True),
    ((1, 3, 8, 8, 6, 3, 3, 2, 1), False),  # stride 2
    ((1, 3, 8, 8, 6, 3, 3, 1, 3), False),  # pad >= kernel: dx's adjoint would crop dout
    ((1, 3, 8, 8, 6, 3, 2, 1, 2), False),  # pad >= the kernel's width
])
def test_predicate_and_choice(case, usable):
    g = _checks.conv_args(*_inputs(case, np.float64, 0))
    assert DIRECT.is_usable_for(g) is usable
    assert choose(g, "direct") is (DIRECT if usable else IM2COL)
    assert choose(g, "auto") is (DIRECT if usable else IM2COL)  # 3 channels
    assert choose(g, "auto", have_cython=False) is IM2COL
    assert choose(g, "im2col") is IM2COL


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [1, 8, 9, 16, 17, 32])
def test_auto_takes_direct_for_few_channels(C, dtype):
    itemsize = np.dtype(dtype).itemsize
    bound = DIRECT_MAX_CHANNELS[itemsize]
    assert bound == {4: 16, 8: 8}[itemsize]
    g = _checks.conv_args(*_inputs((4, C, 16, 16, 16, 3, 3, 1, 1), dtype, 0))
    assert prefers_direct(g, itemsize) is (C <= bound)
    assert (choose(g, "auto", itemsize=itemsize) is DIRECT) is (C <= bound)
    # A 1x1 layer stays with the pointwise GEMMs.
    g1 = _checks.conv_args(*_inputs((4, C, 16, 16, 16, 1, 1, 1, 0), dtype, 0))
    assert choose(g1, "auto", itemsize=itemsize) is POINTWISE


def test_memory_does_not_grow_with_the_batch(conv_peaks):
    peaks = []
    for N in (64, 256):  # dw pads DW_CHUNK_BYTES of images at a time: 11 of these
        x, w, b, cp = _inputs((N, 3, 16, 16, 8, 5, 5, 1, 2), np.float64, 0)
        with fast.config(conv_algorithm="direct", num_threads=1):
            out, fwd, bwd = conv_peaks(x, w, b, cp)
        peaks.append((fwd - out.nbytes, bwd - x.nbytes))  # out and dx are outputs
    assert peaks[1][0] <= peaks[0][0] + 64 * 1024 and peaks[1][1] <= peaks[0][1] + 64 * 1024, peaks


@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 5), H=st.integers(1, 12), W=st.integers(1, 40), F=st.integers(1, 14),
       HH=st.integers(1, 5), WW=st.integers(1, 5), pad=st.integers(0, 4), f32=st.booleans(),
       seed=st.integers(0, 50))
def test_fuzz(exact_conv, N, C, H, W, F, HH, WW, pad, f32, seed):
    pad = min(pad, HH - 1, WW - 1)
    if H + 2 * pad < HH or W + 2 * pad < WW:
        return
    dtype = np.float32 if f32 else np.float64
    x, w, b, cp = _inputs((N, C, H, W, F, HH, WW, 1, pad), dtype, seed)
    got, dout = _run(x, w, b, cp)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, exact_conv(x, w, b, cp, dout)):
        _assert_close(a, r, dtype, name)
