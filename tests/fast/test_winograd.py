"""Winograd F(2x2, 3x3) and F(4x4, 3x3) (convnet/fast/winograd.py, conv_winograd.py, convnet/_fast/_winograd.pyx).

The matrices are defined once, in convnet.fast.winograd; the tests below check
that they compute a convolution, that both kernel sets (compiled and numpy)
apply exactly them, and that FastConv by Winograd matches the exact result
within Winograd's rounding (``assert_close_scaled``).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import as_strided

import convnet.fast as fast
from convnet import _checks
from convnet.fast import FastConv, _backend, _config, _numpy
from convnet.fast.conv import choose
from convnet.fast.conv_winograd import CHUNK_TARGET, WINOGRAD2, WINOGRAD4
from convnet.fast.winograd import TRANSFORMS

DTYPES = [np.float32, np.float64]
WINO_ALGOS = ["winograd2", "winograd4"]
# Both kernel sets: the one in use and the numpy fallback (the same module when CONVNET_PUREPYTHON=1).
KERNEL_SETS = [pytest.param(_backend, id="in_use"), pytest.param(_numpy, id="numpy")]

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


# ---------------------------------------------------------------- the matrices and the kernels


@pytest.mark.parametrize("m", [2, 4])
def test_matrices_compute_a_one_dimensional_correlation(m):
    # A^T [(G g) * (B^T d)] = the m outputs of correlating the (m+2)-vector d with the 3-tap g.
    t = TRANSFORMS[m]
    rng = np.random.default_rng(m)
    for _ in range(5):
        d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
        exact = [d[i:i + 3] @ g for i in range(m)]
        np.testing.assert_allclose(t.AT @ ((t.G @ g) * (t.BT @ d)), exact, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernels", KERNEL_SETS)
@pytest.mark.parametrize("m", [2, 4])
def test_kernels_apply_exactly_the_matrices_of_winograd_py(m, kernels):
    # One tile per image, one impulse per image: the kernels' outputs are the matrices' entries,
    # exactly (integer coefficients on 0/1 inputs). kron(X, X)[(r, s), (i, j)] = X[r, i] * X[s, j].
    t = TRANSFORMS[m]
    a, nk = t.alpha, t.nk
    BTBT, ATAT = np.kron(t.BT, t.BT), np.kron(t.AT, t.AT)
    impulses = np.eye(nk).reshape(nk, 1, a, a)  # image n = (i, j) holds d = e_ij

    V = np.full((nk, 1, nk), np.nan)
    kernels.winograd_input(impulses, V, 0, 1, 1, 1, m, False)
    np.testing.assert_array_equal(V[:, 0, :], BTBT)  # V[(r, s), n = (i, j)] = (B^T e_ij B)[r, s]
    VT = np.full((nk, nk, 1), np.nan)
    kernels.winograd_input(impulses, VT, 0, 1, 1, 1, m, True)
    np.testing.assert_array_equal(VT[:, :, 0], BTBT)

    dx = np.full((nk, 1, a, a), np.nan)
    kernels.winograd_input_adjoint(np.eye(nk).reshape(nk, 1, nk), dx, 0, 1, 1, 1, m)
    np.testing.assert_array_equal(dx.reshape(nk, nk), BTBT)  # dx[n = (r, s)] = B e_rs B^T

    out = np.full((nk, 1, m, m), np.nan)
    kernels.winograd_output(np.eye(nk).reshape(nk, 1, nk), np.zeros(1), out, 1, 1, 1, m)
    np.testing.assert_array_equal(out.reshape(nk, m * m), ATAT.T)  # out[n = (r, s)] = A^T e_rs A

    dM = np.full((nk, 1, m * m), np.nan)
    kernels.winograd_output_adjoint(np.eye(m * m).reshape(m * m, 1, m, m), dM, 1, 1, 1, m)
    np.testing.assert_array_equal(dM[:, 0, :], ATAT.T)  # dM[(r, s), n = (a, b)] = (A e_ab A^T)[r, s]


@pytest.mark.parametrize("m", [2, 4])
def test_filter_transform_and_its_adjoint(m):
    t = TRANSFORMS[m]
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2, 3, 3))
    U = t.filter(w)
    assert U.shape == (t.nk, 3, 2) and U.flags.c_contiguous
    np.testing.assert_allclose(U.reshape(t.alpha, t.alpha, 3, 2), np.einsum("ri,fcij,sj->rsfc", t.G, w, t.G),
                               rtol=1e-13, atol=1e-13)
    dU = rng.standard_normal(U.shape)
    np.testing.assert_allclose(np.vdot(U, dU), np.vdot(w, t.filter_adjoint(dU, w.shape)), rtol=1e-12)


# (F, C): one pair; fewer pairs than a block; several blocks with a partial last one (the kernels take 128 a time).
FILTER_SHAPES = [(1, 1), (3, 5), (17, 30), (64, 33)]


@pytest.mark.parametrize("kernels", KERNEL_SETS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("FC", FILTER_SHAPES, ids=lambda fc: f"{fc[0]}x{fc[1]}")
def test_filter_kernels_apply_the_transform_and_its_adjoint(kernels, dtype, m, FC, tol):
    t = TRANSFORMS[m]
    F, C = FC
    rng = np.random.default_rng(F * C)
    w = rng.standard_normal((F, C, 3, 3)).astype(dtype)
    dU = rng.standard_normal((t.nk, F, C)).astype(dtype)
    U = np.full((t.nk, F, C), np.nan, dtype=dtype)
    kernels.winograd_filter(w, U, t.G, 0, -1)
    np.testing.assert_allclose(U, t.filter(w.astype(np.float64)), **tol(dtype))
    dw = np.full(w.shape, np.nan, dtype=dtype)
    kernels.winograd_filter_adjoint(dU, dw, t.G, 0, -1)
    np.testing.assert_allclose(dw, t.filter_adjoint(dU.astype(np.float64), w.shape), **tol(dtype))


@pytest.mark.parametrize("kernels", KERNEL_SETS)
def test_filter_kernels_write_only_their_range_of_pairs(kernels):
    # The pairs are split between threads: each call may touch only pairs lo..hi-1 (the same values as in one call).
    t = TRANSFORMS[2]
    F, C = 13, 21
    rng = np.random.default_rng(1)
    w, dU = rng.standard_normal((F, C, 3, 3)), rng.standard_normal((t.nk, F, C))
    whole = np.empty((t.nk, F, C))
    kernels.winograd_filter(w, whole, t.G, 0, F * C)
    dw_whole = np.empty(w.shape)
    kernels.winograd_filter_adjoint(dU, dw_whole, t.G, 0, F * C)
    for lo, hi in [(0, 1), (5, 140), (130, 273), (272, 273)]:
        U = np.full_like(whole, np.nan)
        kernels.winograd_filter(w, U, t.G, lo, hi)
        flat, ref = U.reshape(t.nk, -1), whole.reshape(t.nk, -1)
        np.testing.assert_array_equal(flat[:, lo:hi], ref[:, lo:hi])
        assert np.isnan(flat[:, :lo]).all() and np.isnan(flat[:, hi:]).all()
        dw = np.full_like(dw_whole, np.nan)
        kernels.winograd_filter_adjoint(dU, dw, t.G, lo, hi)
        np.testing.assert_array_equal(dw.reshape(-1, 9)[lo:hi], dw_whole.reshape(-1, 9)[lo:hi])
        assert np.isnan(dw.reshape(-1, 9)[:lo]).all() and np.isnan(dw.reshape(-1, 9)[hi:]).all()


@pytest.mark.parametrize("algo", WINO_ALGOS)
@pytest.mark.parametrize("shape", [(2, 3, 7, 5, 4, 2), (2, 3, 38, 21, 2, 1)], ids=["small", "two_tile_blocks"])
def test_winograd_numpy_fallback_matches_kernels(shape, algo, compiled):
    # The numpy transforms (CONVNET_PUREPYTHON=1) and the Cython ones agree; 38x21 has
    # more than 16 tiles per plane (the kernels' block size) and partial edge tiles.
    N, C, H, W, F, p = shape
    m = int(algo[-1])
    t = TRANSFORMS[m]
    Ho, Wo = H + 2 * p - 2, W + 2 * p - 2
    tH, tW = -(-Ho // m), -(-Wo // m)
    P = N * tH * tW
    rng = np.random.default_rng(8)
    x, dout = rng.standard_normal((N, C, H, W)), rng.standard_normal((N, F, Ho, Wo))
    V0, M0, b = rng.standard_normal((t.nk, C, P)), rng.standard_normal((t.nk, F, P)), rng.standard_normal(F)

    def slabs(rows):  # (nk, rows, P) with C-contiguous slabs 5 elements apart, as the layer lays them out
        return as_strided(np.full(t.nk * (rows * P + 5), np.nan), (t.nk, rows, P), (8 * (rows * P + 5), 8 * P, 8))

    results = []
    for kernels in (compiled.winograd, _numpy):
        V, VT, dM = slabs(C), np.full((t.nk, P, C), np.nan), slabs(F)
        dx, out = np.full(x.shape, np.nan), np.full(dout.shape, np.nan)
        kernels.winograd_input(x, V, p, tH, tW, 1, m, False)
        kernels.winograd_input(x, VT, p, tH, tW, 1, m, True)
        kernels.winograd_input_adjoint(V0, dx, p, tH, tW, 1, m)
        kernels.winograd_output(M0, b, out, tH, tW, 1, m)
        kernels.winograd_output_adjoint(dout, dM, tH, tW, 1, m)
        results.append((V.copy(), VT, dx, out, dM.copy()))
    for name, a, r in zip(("V", "VT", "dx", "out", "dM"), *results):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("algo", WINO_ALGOS)
def test_winograd_input_adjoint_overwrites_dx(algo, compiled):
    # The backward hands the kernel np.empty memory: every plane of dx must be written, not added to.
    m = int(algo[-1])
    N, C, H, W, pad = 2, 3, 9, 7, 1
    tH, tW = -(-(H + 2 * pad - 2) // m), -(-(W + 2 * pad - 2) // m)
    dV = np.random.default_rng(0).standard_normal(((m + 2) ** 2, C, N * tH * tW))
    results = []
    for fill in (0.0, np.nan, 1e30):
        dx = np.full((N, C, H, W), fill)
        compiled.winograd.winograd_input_adjoint(dV, dx, pad, tH, tW, 1, m)
        results.append(dx)
    assert np.all(np.isfinite(results[1]))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


# ---------------------------------------------------------------- FastConv by Winograd


@pytest.mark.parametrize("algo", WINO_ALGOS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(WINO_CASES.values()), ids=list(WINO_CASES))
def test_winograd_matches_naive(case, dtype, algo, conv_algorithm, conv_inputs, exact_conv, assert_close_scaled):
    N, C, H, W, F, p = case
    x, w, b, cp = conv_inputs((N, C, H, W, F, 3, 3, 1, p), dtype, seed=sum(case))
    conv_algorithm(algo)
    assert choose(_checks.conv_args(x, w, b, cp), fast.get_conv_algorithm()).transform.m == int(algo[-1])
    out, cache = FastConv.forward(x, w, b, cp)
    dout = np.random.default_rng(5).standard_normal(out.shape).astype(dtype)
    got = (out,) + tuple(FastConv.backward(dout, cache))
    for name, a, r in zip(("out", "dx", "dw", "db"), got, exact_conv(x, w, b, cp, dout)):
        assert_close_scaled(a, r, dtype, name, algo)


def test_winograd4_hand_checked_tile():
    # One 6x6 input patch -> one 4x4 tile: with a kernel that picks the centre tap
    # the output is the patch's interior, exactly (the transforms are exact on integers).
    x = np.arange(36.0).reshape(1, 1, 6, 6)
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 1, 1] = 1.0
    with fast.config(conv_algorithm="winograd4"):
        out, cache = FastConv.forward(x, w, np.array([0.5]), {"stride": 1, "pad": 0})
        dx, dw, db = FastConv.backward(np.ones((1, 1, 4, 4)), cache)
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
def test_winograd_matches_torch(pad, dtype, algo, conv_algorithm, torch, conv_inputs, assert_close_scaled):
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
def test_winograd_agrees_with_im2col(dtype, algo, conv_algorithm, conv_inputs, assert_close_scaled):
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
def test_backward_takes_the_forwards_transformed_filters(dtype, algo, conv_inputs, monkeypatch):
    # The forward's U is kept in the cache and serves dV = U^T dM: backward transforms the filters once (dw's).
    x, w, b, cp = conv_inputs((2, 5, 7, 6, 4, 3, 3, 1, 1), dtype, seed=31)
    dout = np.random.default_rng(32).standard_normal((2, 4, 7, 6)).astype(dtype)
    chosen = choose(_checks.conv_args(x, w, b, cp), algo)
    with fast.config(conv_algorithm=algo):
        out, cache = FastConv.forward(x, w, b, cp)
        kept_algo, U = cache.operand
        assert kept_algo is chosen and U.shape == chosen.operand_shape(_checks.conv_args(x, w, b, cp))
        np.testing.assert_array_equal(U, chosen.filter_operand(w, _checks.conv_args(x, w, b, cp),
                                                               _config.settings()))
        fresh = FastConv.backward(dout, FastConv.forward(x, w, b, cp)[1])

        def refuse(*args):
            raise AssertionError("backward transformed the filters again")

        monkeypatch.setattr(chosen, "backward_operand", refuse)
        got = FastConv.backward(dout, cache)
    for a, r in zip(got, fresh):
        np.testing.assert_array_equal(a, r)


EDITS = {
    "dropped": lambda algo, U: None,
    "another algorithm": lambda algo, U: (WINOGRAD4 if algo is WINOGRAD2 else WINOGRAD2, U),
    "wrong shape": lambda algo, U: (algo, np.ascontiguousarray(U[:, :1])),
    "wrong dtype": lambda algo, U: (algo, U.astype(np.float32)),
    "not contiguous": lambda algo, U: (algo, np.asfortranarray(U)),
    "a list": lambda algo, U: (algo, U.tolist()),
    "not a pair": lambda algo, U: (algo, U, U),
    "garbage": lambda algo, U: (algo, np.full_like(U, np.nan)),
}


@pytest.mark.parametrize("algo", WINO_ALGOS)
@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_an_edited_kept_operand_is_never_trusted_blindly(edit, algo, conv_inputs):
    # A cache is a plain object: backward uses its operand only as forward left it (garbage of the right
    # layout is the caller's own values, as an edited x or w would be), else it transforms w again.
    x, w, b, cp = conv_inputs((2, 5, 7, 6, 4, 3, 3, 1, 1), np.float64, seed=33)
    dout = np.random.default_rng(34).standard_normal((2, 4, 7, 6))
    with fast.config(conv_algorithm=algo):
        ref = FastConv.backward(dout, FastConv.forward(x, w, b, cp)[1])
        _, cache = FastConv.forward(x, w, b, cp)
        cache.operand = edit(*cache.operand)
        dx, dw, db = FastConv.backward(dout, cache)
    if edit is EDITS["garbage"]:
        assert np.isnan(dx).all()
    else:
        np.testing.assert_array_equal(dx, ref[0])
    np.testing.assert_array_equal(dw, ref[1])
    np.testing.assert_array_equal(db, ref[2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_under_another_algorithm_than_forward(dtype, conv_inputs, exact_conv, assert_close_scaled):
    # The settings may change between the passes: the kept U is then not the backward algorithm's.
    x, w, b, cp = conv_inputs((2, 5, 7, 6, 4, 3, 3, 1, 1), dtype, seed=35)
    dout = np.random.default_rng(36).standard_normal((2, 4, 7, 6)).astype(dtype)
    with fast.config(conv_algorithm="winograd4"):
        out, cache = FastConv.forward(x, w, b, cp)
    with fast.config(conv_algorithm="winograd2"):
        got = FastConv.backward(dout, cache)
    for name, a, r in zip(("dx", "dw", "db"), got, exact_conv(x, w, b, cp, dout)[1:]):
        assert_close_scaled(a, r, dtype, name, "winograd2")


@pytest.mark.parametrize("algo", WINO_ALGOS)
@pytest.mark.parametrize("case", [WINO_CASES["pad1_odd"], WINO_CASES["pad2_odd"]])
def test_winograd_kernels_multithreaded(case, algo, compiled, conv_inputs, exact_conv, assert_close_scaled):
    N, C, H, W, F, p = case
    x, w, b, cp = conv_inputs((N, C, H, W, F, 3, 3, 1, p), np.float64, seed=1)
    # The kernels' OpenMP loops: the compiled batch part runs on its thread, so its GEMMs go through numpy here.
    with fast.config(conv_kernel_threads=2, conv_algorithm=algo, gemm_in_kernels=False):
        out, cache = FastConv.forward(x, w, b, cp)
        dout = np.random.default_rng(5).standard_normal(out.shape)
        got = (out,) + tuple(FastConv.backward(dout, cache))
    for name, a, r in zip(("out", "dx", "dw", "db"), got, exact_conv(x, w, b, cp, dout)):
        assert_close_scaled(a, r, np.float64, name, algo)


@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 4), F=st.integers(1, 4), H=st.integers(1, 22), W=st.integers(1, 22),
       pad=st.integers(0, 3), dtype=st.sampled_from(DTYPES), algo=st.sampled_from(WINO_ALGOS),
       seed=st.integers(0, 2**16))
def test_winograd_matches_naive_sweep(N, C, F, H, W, pad, dtype, algo, seed, conv_inputs, exact_conv,
                                      assert_close_scaled):
    if H + 2 * pad < 3 or W + 2 * pad < 3:  # the 3x3 kernel must fit in the padded input
        pad = 1 + max(0, 1 - min(H, W) // 2)
    x, w, b, cp = conv_inputs((N, C, H, W, F, 3, 3, 1, pad), dtype, seed)
    with fast.config(conv_algorithm=algo):
        out, cache = FastConv.forward(x, w, b, cp)
        dout = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(dtype)
        got = (out,) + tuple(FastConv.backward(dout, cache))
    for name, a, r in zip(("out", "dx", "dw", "db"), got, exact_conv(x, w, b, cp, dout)):
        assert_close_scaled(a, r, dtype, name, algo)


# ---------------------------------------------------------------- chunks and memory


@pytest.mark.parametrize("algo", WINO_ALGOS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_chunked_batch_matches_unchunked(dtype, algo, conv_inputs, wino_rel):
    # A one-byte budget forces one image per chunk, a large one takes the batch at once.
    x, w, b, cp = conv_inputs((5, 3, 7, 6, 4, 3, 3, 1, 1), dtype, seed=21)
    g = _checks.conv_args(x, w, b, cp)
    dout = np.random.default_rng(22).standard_normal((5, 4, 7, 6)).astype(dtype)
    results = []
    for budget in (1, 2**30):
        with fast.config(column_budget=budget, conv_algorithm=algo):
            out, cache = FastConv.forward(x, w, b, cp)
            n = choose(g, algo).chunk_size(g, x.itemsize, fast.get_column_budget())
            results.append((n, out, FastConv.backward(dout, cache)))
    (n1, out1, grads1), (n5, out5, grads5) = results
    assert (n1, n5) == (1, 5)
    rel = wino_rel[algo, dtype]
    np.testing.assert_allclose(out1, out5, rtol=rel, atol=rel)
    for a, r in zip(grads1, grads5):
        np.testing.assert_allclose(a, r, rtol=rel, atol=rel * 10)


@pytest.mark.parametrize("algo, per_image", [
    ("winograd2", 16 * (8 + 8) * 8 * 8 * 8),  # 4x4 transformed tiles, 8x8 of them: 128 KiB
    ("winograd4", 36 * (8 + 8) * 4 * 4 * 8),  # 6x6 transformed tiles, 4x4 of them: 72 KiB
])
def test_winograd_buffers_stay_within_budget(algo, per_image, conv_inputs, conv_peaks):
    N, C, H, W, F = 64, 8, 16, 16, 8
    x, w, b, cp = conv_inputs((N, C, H, W, F, 3, 3, 1, 1), np.float64, seed=0)
    budget = 2 * per_image
    with fast.config(column_budget=budget, conv_algorithm=algo):
        g = _checks.conv_args(x, w, b, cp)
        assert choose(g, fast.get_conv_algorithm()).chunk_size(g, 8, fast.get_column_budget()) == 2
        out, fwd_peak, bwd_peak = conv_peaks(x, w, b, cp)
    # tiles (+ up to 4 KiB padding per slab) + output (+ filter transforms); backward adds dx.
    slack = 32 * 4096 + 2**20
    assert fwd_peak <= budget + out.nbytes + slack, (fwd_peak, budget)
    assert bwd_peak <= budget + x.nbytes + slack, (bwd_peak, budget)
    assert fwd_peak < N * per_image


def test_winograd_chunk_size_of_each_tile_size(conv_inputs):
    g = _checks.conv_args(*conv_inputs((64, 8, 16, 16, 8, 3, 3, 1, 1), np.float64, seed=0))
    # (C + F) * (m+2)^2 * tiles * 8 bytes per image: 128 KiB for F(2x2), 72 KiB for F(4x4)
    assert WINOGRAD2.chunk_size(g, 8, 2**30) == CHUNK_TARGET // (16 * 16 * 64 * 8)
    assert WINOGRAD4.chunk_size(g, 8, 2**30) == CHUNK_TARGET // (16 * 36 * 16 * 8)
    # The budget binds below the target, split between `share` threads; never below one image.
    assert WINOGRAD4.chunk_size(g, 8, 10 * 16 * 36 * 16 * 8) == 10
    assert WINOGRAD4.chunk_size(g, 8, 10 * 16 * 36 * 16 * 8, share=2) == 5
    assert WINOGRAD4.chunk_size(g, 8, 1) == 1
