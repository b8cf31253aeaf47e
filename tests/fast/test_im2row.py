"""im2row (convnet/fast/conv_im2row.py, its kernels in _im2col.pyx and _numpy.py): kernels, layer, choice."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet.fast as fast
from convnet import _checks
from convnet.fast import FastConv, _backend, _numpy, network_input
from convnet.fast.conv import IM2ROW_MAX_WIDTH, IM2ROW_MIN_PIXELS, choose, prefers_direct, prefers_im2row
from convnet.fast.conv_im2col import IM2COL
from convnet.fast.conv_im2row import IM2ROW

DTYPES = [np.float32, np.float64]
# (N, C, H, W, F, HH, WW, stride, pad): strides that do not divide, non-square kernels and inputs, a window
# wholly in the padding (pad 3 with a 3-wide kernel), 1x1 kernels, a kernel as large as the padded input.
CASES = [
    (2, 3, 7, 6, 4, 3, 2, 2, 1),
    (3, 5, 9, 9, 6, 3, 3, 2, 1),
    (1, 2, 5, 5, 3, 3, 3, 1, 3),
    (2, 4, 8, 8, 5, 1, 1, 3, 0),
    (2, 2, 4, 5, 3, 4, 6, 3, 2),
    (2, 2, 3, 3, 2, 7, 7, 1, 2),
    (2, 8, 9, 9, 4, 5, 5, 2, 2),
]
IDS = ["3x2-s2", "3x3-s2", "all-padding-windows", "1x1-s3", "4x6-s3", "kernel=padded-input", "5x5-s2"]
KERNELS = [_numpy] + ([_backend] if fast.HAVE_CYTHON else [])


def ref_im2row(x, HH, WW, stride, pad):
    """Loops: one row per output position (n, i, j), its entries ordered (kh, kw, c)."""
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride
    rows = np.zeros((N, Ho * Wo, HH * WW * C), dtype=x.dtype)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                patch = xp[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                rows[n, i * Wo + j] = patch.transpose(1, 2, 0).ravel()
    return rows


def test_im2row_by_hand():
    # Two channels 3x3 (the second is the first plus 10), 2x2 kernel, stride 1: four windows, channels last.
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    x = np.concatenate([x, x + 10], axis=1)
    for k in KERNELS:
        rows = np.empty((1, 4, 8))
        k.im2row_into(x, rows, np.empty(18), 2, 2, 1, 0)
        assert rows[0, 0].tolist() == [0, 10, 1, 11, 3, 13, 4, 14]
        assert rows[0, 3].tolist() == [4, 14, 5, 15, 7, 17, 8, 18]
        # Stride 2, pad 1: the one window starting at (-1, -1) holds x[:, 0, 0] in its last tap only.
        rows = np.empty((1, 4, 8))
        k.im2row_into(x, rows, np.empty(18), 2, 2, 2, 1)
        assert rows[0, 0].tolist() == [0, 0, 0, 0, 0, 0, 0, 10]


@pytest.mark.parametrize("kernels", KERNELS, ids=lambda k: k.__name__.split(".")[-1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_im2row_matches_loops(case, dtype, kernels, conv_inputs):
    x, w, b, cp = conv_inputs(case, dtype, 0)
    g = _checks.conv_args(x, w, b, cp)
    rows = np.full((g.N, g.H_out * g.W_out, g.C * g.HH * g.WW), np.nan, dtype=dtype)
    kernels.im2row_into(x, rows, np.empty(g.C * g.H * g.W, dtype), g.HH, g.WW, g.stride, g.pad)
    np.testing.assert_array_equal(rows, ref_im2row(x, g.HH, g.WW, g.stride, g.pad))


@pytest.mark.parametrize("kernels", KERNELS, ids=lambda k: k.__name__.split(".")[-1])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_row2im_is_the_adjoint_of_im2row(case, kernels, conv_inputs):
    # <im2row(x), r> = <x, row2im(r)> for every x and r, in float64 (dx starts as garbage: it is overwritten).
    x, w, b, cp = conv_inputs(case, np.float64, 1)
    g = _checks.conv_args(x, w, b, cp)
    r = np.random.default_rng(2).standard_normal((g.N, g.H_out * g.W_out, g.C * g.HH * g.WW))
    rows, dx = np.empty_like(r), np.full_like(x, np.nan)
    xt = np.empty(g.C * g.H * g.W)
    kernels.im2row_into(x, rows, xt, g.HH, g.WW, g.stride, g.pad)
    kernels.row2im_into(r, dx, xt, g.HH, g.WW, g.stride, g.pad)
    lhs, rhs = float(np.sum(rows * r)), float(np.sum(x * dx))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs)) * r.size


@pytest.mark.parametrize("kernels", KERNELS, ids=lambda k: k.__name__.split(".")[-1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 64, 64), (3, 1024, 32), (2, 9, 17)])
def test_transpose_planes(shape, dtype, kernels):
    rng = np.random.default_rng(3)
    src = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape[2]).astype(dtype)
    dst = np.full((shape[0], shape[2], shape[1]), np.nan, dtype=dtype)
    kernels.transpose_planes(src, dst, None)
    np.testing.assert_array_equal(dst, src.transpose(0, 2, 1))
    kernels.transpose_planes(src, dst, b)
    np.testing.assert_array_equal(dst, src.transpose(0, 2, 1) + b[:, None])


# ---------------------------------------------------------------- the layer


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_im2row_layer_matches_torch(case, dtype, conv_inputs, tol, torch):
    import torch.nn.functional as TF

    x, w, b, cp = conv_inputs(case, dtype, 4)
    with fast.config(conv_algorithm="im2row"):
        out, cache = FastConv.forward(x, w, b, cp)
        assert cache.conv_param == cp
        dout = np.random.default_rng(5).standard_normal(out.shape).astype(dtype)
        dx, dw, db = FastConv.backward(dout, cache)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    t_out = TF.conv2d(tx, tw, tb, stride=cp["stride"], padding=cp["pad"])
    t_out.backward(torch.from_numpy(dout))
    for got, ref, terms in ((out, t_out, w[0].size), (dx, tx.grad, w.shape[0] * w.shape[2] * w.shape[3]),
                            (dw, tw.grad, dout.size), (db, tb.grad, dout.size)):
        assert got.dtype == dtype and got.shape == tuple(ref.shape)
        np.testing.assert_allclose(got, ref.detach().numpy(), **tol(dtype, np.sqrt(terms)))


@st.composite
def layers(draw):
    """(N, C, H, W, F, HH, WW, stride, pad) with the kernel inside the padded input."""
    N, C, F = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 5))
    H, W, p = draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(0, 3))
    HH, WW = draw(st.integers(1, min(H + 2 * p, 6))), draw(st.integers(1, min(W + 2 * p, 6)))
    return N, C, H, W, F, HH, WW, draw(st.integers(1, 4)), p


@settings(max_examples=60, deadline=None)
@given(case=layers(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_im2row_layer_matches_the_naive_layer_sweep(case, dtype, seed, conv_inputs, exact_conv, tol):
    x, w, b, cp = conv_inputs(case, dtype, seed)
    with fast.config(conv_algorithm="im2row"):
        out, cache = FastConv.forward(x, w, b, cp)
        dout = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(dtype)
        got = (out, *FastConv.backward(dout, cache))
    for name, a, r, terms in zip(("out", "dx", "dw", "db"), got, exact_conv(x, w, b, cp, dout),
                                 (w[0].size, w.shape[0] * w.shape[2] * w.shape[3], dout.size, dout.size)):
        assert a.dtype == dtype and a.shape == r.shape, name
        np.testing.assert_allclose(a, r, err_msg=name, **tol(dtype, np.sqrt(terms)))


@pytest.mark.parametrize("case", CASES[:3] + CASES[-1:], ids=IDS[:3] + IDS[-1:])
def test_im2row_layer_gradients_by_finite_differences(case, conv_inputs):
    # d/dv sum(out * dout) for every entry v of x, w and b, central differences in float64.
    x, w, b, cp = conv_inputs(case, np.float64, 6)
    with fast.config(conv_algorithm="im2row"):
        out, cache = FastConv.forward(x, w, b, cp)
        dout = np.random.default_rng(7).standard_normal(out.shape)
        grads = FastConv.backward(dout, cache)
        for a, g in zip((x, w, b), grads):
            num = np.empty_like(a)
            flat = a.reshape(-1)
            for i in range(flat.size):
                keep = flat[i]
                flat[i] = keep + 1e-6
                up = float(np.sum(FastConv.forward(x, w, b, cp)[0] * dout))
                flat[i] = keep - 1e-6
                down = float(np.sum(FastConv.forward(x, w, b, cp)[0] * dout))
                flat[i] = keep
                num.reshape(-1)[i] = (up - down) / 2e-6
            np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2row_chunks_parts_and_a_network_input(dtype, conv_inputs, tol):
    # A column budget of one image per chunk, the batch split into parts, and no dx for a network's input:
    # the same results as im2col's.
    case = (9, 16, 10, 10, 8, 3, 3, 2, 1)
    x, w, b, cp = conv_inputs(case, dtype, 8)
    dout = np.random.default_rng(9).standard_normal((9, 8, 5, 5)).astype(dtype)
    with fast.config(conv_algorithm="im2col"):
        out, cache = FastConv.forward(x, w, b, cp)
        ref = (out, *FastConv.backward(dout, cache))
    settings = {"conv_algorithm": "im2row", "column_budget": 1, "split_min_work": 1, "min_part_images": 2}
    with fast.config(**settings):
        out, cache = FastConv.forward(x, w, b, cp)
        got = (out, *FastConv.backward(dout, cache))
        with network_input(x):
            out2, cache2 = FastConv.forward(x, w, b, cp)
        dx2, dw2, db2 = FastConv.backward(dout, cache2)
    for a, r in zip(got, ref):
        np.testing.assert_allclose(a, r, **tol(dtype, 12.0))
    assert dx2 is None
    np.testing.assert_array_equal(out2, got[0])
    np.testing.assert_array_equal(dw2, got[2])
    np.testing.assert_array_equal(db2, got[3])


# ---------------------------------------------------------------- the choice


@pytest.mark.parametrize("case, expect, strided", [
    ((32, 32, 16, 16, 64, 3, 3, 2, 1), True, True),    # ResNet-20's second downsampling layer: 3*32 >= 8*2
    ((16, 32, 16, 16, 64, 3, 3, 2, 1), True, True),    # 1024 pixels
    ((15, 32, 16, 16, 64, 3, 3, 2, 1), False, True),   # 960
    ((32, 32, 32, 32, 64, 3, 3, 2, 1), True, True),    # C3: 16-wide output rows, but strided
    ((32, 16, 32, 32, 32, 3, 3, 2, 1), True, True),    # the first downsampling layer: 3*16 >= 16*2
    ((32, 3, 32, 32, 8, 3, 3, 2, 1), False, True),     # strided, 3*3 < 16*2
    ((32, 6, 14, 14, 16, 5, 5, 1, 0), True, False),    # LeNet's second 5x5: 5*6 >= 10 (auto: direct, 6 channels)
    ((32, 3, 32, 32, 6, 5, 5, 1, 0), False, False),    # LeNet's first: 28-wide
    ((64, 3, 9, 9, 4, 3, 3, 1, 1), True, False),       # 3*3 >= 9 (auto: direct, 3 channels)
    ((64, 3, 10, 10, 4, 3, 3, 1, 1), False, False),    # 3*3 < 10
    ((32, 64, 12, 12, 64, 3, 3, 1, 1), False, False),  # Winograd
    ((32, 64, 16, 16, 64, 1, 1, 2, 0), False, True),   # a 1x1 shortcut: the pointwise GEMMs
])
def test_auto_picks_im2row_for_strided_layers_and_in_float32_where_kernel_rows_outrun_short_output_rows(
        case, expect, strided, conv_inputs, have_cython):
    g = _checks.conv_args(*conv_inputs(case, np.float32, 0))
    assert prefers_im2row(g, 4) or not expect  # Winograd and the pointwise GEMMs come first where they apply
    assert prefers_im2row(g, 8) is (prefers_im2row(g, 4) and strided)  # stride 1 in float64: im2col
    for itemsize in (4, 8):
        # So does the direct convolution where it is preferred and usable (compiled kernels).
        want = expect and (itemsize == 4 or strided) and not (prefers_direct(g, itemsize) and have_cython)
        assert (choose(g, "auto", have_cython=True, itemsize=itemsize) is IM2ROW) is want
        assert (choose(g, "auto", itemsize=itemsize) is IM2ROW) is (want and have_cython)
        assert choose(g, "auto", have_cython=False, itemsize=itemsize) is not IM2ROW  # numpy's copies do not pay
    assert choose(g, "im2row") is IM2ROW and choose(g, "im2col") is IM2COL
    assert (IM2ROW_MAX_WIDTH, IM2ROW_MIN_PIXELS) == (16, 1024)


def test_a_layer_runs_the_algorithm_its_dtype_prefers(conv_inputs, have_cython, monkeypatch):
    # The same geometry in float32 and float64 gets two plans: im2row and im2col.
    ran = []
    monkeypatch.setattr(IM2ROW, "forward", lambda *a: ran.append("im2row"))
    monkeypatch.setattr(IM2COL, "forward", lambda *a: ran.append("im2col"))
    for dtype in (np.float32, np.float64):
        with fast.config(num_threads=1):  # one part: one call each
            FastConv.forward(*conv_inputs((16, 32, 12, 12, 8, 3, 3, 1, 1), dtype, 0))
    assert ran == (["im2row", "im2col"] if have_cython else ["im2col", "im2col"])
