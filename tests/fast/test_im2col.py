"""im2col / col2im (convnet/fast/conv_im2col.py, _numpy.py, convnet/_fast/_im2col.pyx) against a loop reference."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet.fast as fast
from convnet.fast import _numpy

DTYPES = [np.float32, np.float64]
# (N, C, H, W, HH, WW, stride, pad): non-square kernels and inputs, strides that
# do not divide, 1x1 kernels, a kernel as large as the padded input.
CASES = [
    (2, 3, 5, 5, 3, 3, 1, 1),
    (2, 2, 7, 6, 3, 2, 2, 1),
    (1, 3, 6, 9, 2, 4, 3, 2),
    (3, 4, 5, 4, 1, 1, 1, 0),
    (2, 2, 4, 5, 1, 1, 2, 1),
    (2, 1, 4, 3, 6, 5, 1, 1),
    (1, 2, 8, 8, 5, 3, 4, 0),
    (2, 2, 3, 3, 3, 3, 2, 3),
]


def ref_im2col(x, HH, WW, stride, pad):
    """Straightforward loops: one column per output position, rows ordered (c, kh, kw)."""
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho = 1 + (H + 2 * pad - HH) // stride
    Wo = 1 + (W + 2 * pad - WW) // stride
    cols = np.zeros((C * HH * WW, N * Ho * Wo), dtype=x.dtype)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                patch = xp[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                cols[:, (n * Ho + i) * Wo + j] = patch.ravel()
    return cols


def ref_col2im(cols, shape, HH, WW, stride, pad):
    N, C, H, W = shape
    Ho = 1 + (H + 2 * pad - HH) // stride
    Wo = 1 + (W + 2 * pad - WW) // stride
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                col = cols[:, (n * Ho + i) * Wo + j].reshape(C, HH, WW)
                dxp[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW] += col
    return dxp[:, :, pad:pad + H, pad:pad + W]


def _tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


def _sizes(case):
    N, C, H, W, HH, WW, s, p = case
    Ho, Wo = 1 + (H + 2 * p - HH) // s, 1 + (W + 2 * p - WW) // s
    return C * HH * WW, N * Ho * Wo, Ho, Wo


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_im2col_matches_reference(case, dtype):
    N, C, H, W, HH, WW, s, p = case
    x = np.random.default_rng(1).standard_normal((N, C, H, W)).astype(dtype)
    cols = fast.im2col(x, HH, WW, s, p)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, ref_im2col(x, HH, WW, s, p))  # pure copies: exact


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_col2im_matches_reference(case, dtype):
    N, C, H, W, HH, WW, s, p = case
    K, M, _, _ = _sizes(case)
    cols = np.random.default_rng(2).standard_normal((K, M)).astype(dtype)
    dx = fast.col2im(cols, (N, C, H, W), HH, WW, s, p)
    assert dx.dtype == dtype and dx.shape == (N, C, H, W)
    np.testing.assert_allclose(dx, ref_col2im(cols, (N, C, H, W), HH, WW, s, p), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_numpy_fallback_matches_reference(case, dtype):
    # The fallback is exercised here in every mode, not only under CONVNET_PUREPYTHON=1.
    N, C, H, W, HH, WW, s, p = case
    K, M, Ho, Wo = _sizes(case)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    cols = np.empty((K, M), dtype=dtype)
    _numpy.im2col_into(x, cols.reshape(K, N, Ho * Wo), HH, WW, s, p)
    np.testing.assert_array_equal(cols, ref_im2col(x, HH, WW, s, p))
    c = rng.standard_normal((K, M)).astype(dtype)
    dx = np.empty_like(x)
    _numpy.col2im_into(c.reshape(K, N, Ho * Wo), dx, HH, WW, s, p)
    np.testing.assert_allclose(dx, ref_col2im(c, x.shape, HH, WW, s, p), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [(3, 2, 7, 6, 3, 2, 2, 1), (2, 2, 5, 40, 3, 3, 1, 1), (2, 3, 4, 37, 2, 5, 2, 2),
                                  (2, 1, 2, 3, 5, 5, 1, 3)],
                         ids=["short_rows", "rows_of_40_stride1", "rows_of_18_stride2", "taps_in_padding_only"])
def test_kernels_called_directly(case, dtype, compiled):
    # The raw kernels fill caller-allocated outputs (NaN-filled here: every entry must be written);
    # col2im must zero its output itself.
    N, C, H, W, HH, WW, s, p = case
    K, M, Ho, Wo = _sizes(case)
    x = np.random.default_rng(4).standard_normal((N, C, H, W)).astype(dtype)
    cols = np.full((K, N, Ho * Wo), np.nan, dtype=dtype)
    compiled.im2col.im2col_into(x, cols, HH, WW, s, p)
    np.testing.assert_array_equal(cols.reshape(K, M), ref_im2col(x, HH, WW, s, p))
    dx = np.full_like(x, np.nan)
    compiled.im2col.col2im_into(cols, dx, HH, WW, s, p)
    np.testing.assert_allclose(dx, ref_col2im(cols.reshape(K, M), x.shape, HH, WW, s, p), **_tol(dtype))


@st.composite
def geometries(draw):
    N = draw(st.integers(1, 3))
    C = draw(st.integers(1, 3))
    H = draw(st.integers(1, 9))
    W = draw(st.integers(1, 9))
    p = draw(st.integers(0, 3))
    HH = draw(st.integers(1, H + 2 * p))
    WW = draw(st.integers(1, W + 2 * p))
    s = draw(st.integers(1, 4))
    return N, C, H, W, HH, WW, s, p


@settings(max_examples=60, deadline=None)
@given(case=geometries(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_im2col_and_adjoint_sweep(case, dtype, seed):
    N, C, H, W, HH, WW, s, p = case
    K, M, _, _ = _sizes(case)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    c = rng.standard_normal((K, M)).astype(dtype)
    cols = fast.im2col(x, HH, WW, s, p)
    np.testing.assert_array_equal(cols, ref_im2col(x, HH, WW, s, p))
    dx = fast.col2im(c, (N, C, H, W), HH, WW, s, p)
    # col2im is the adjoint of im2col: <im2col(x), c> == <x, col2im(c)>.
    lhs = np.vdot(cols.astype(np.float64), c.astype(np.float64))
    rhs = np.vdot(x.astype(np.float64), dx.astype(np.float64))
    scale = np.sqrt(cols.size) + 1.0
    assert abs(lhs - rhs) <= (1e-4 if dtype == np.float32 else 1e-10) * scale


def test_wrappers_reject_bad_arguments():
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match="larger than the padded input"):
        fast.im2col(x, 7, 3, 1, 1)
    with pytest.raises(TypeError, match="dtype"):
        fast.im2col(x.astype(np.int64), 3, 3)
    with pytest.raises(ValueError, match="stride"):
        fast.im2col(x, 3, 3, 0, 0)
    with pytest.raises(ValueError, match=r"cols has shape \(18, 5\)"):
        fast.col2im(np.zeros((18, 5)), (1, 2, 4, 4), 3, 3, 1, 0)
    with pytest.raises(ValueError, match="x_shape"):
        fast.col2im(np.zeros((18, 4)), (1, 2, 4), 3, 3, 1, 0)
    with pytest.raises(ValueError):
        fast.col2im(np.zeros((18, 4)), (1, 2, 4, -4), 3, 3, 1, 0)


@pytest.mark.parametrize("dtype, rel", [(np.float32, 1e-6), (np.float64, 1e-14)])
def test_bias_gradient_sums_images_lo_to_hi(dtype, rel):
    # Offset dout so that the sums are large: the per-image sums in dout's dtype must still be within
    # rounding of the exact ones, relative to the sum of the terms' sizes.
    from convnet.fast.conv_im2col import bias_gradient

    dout = (np.random.default_rng(0).standard_normal((6, 3, 31, 29)) + 3).astype(dtype)
    db = bias_gradient(dout, 1, 5)
    exact = dout[1:5].astype(np.float64).sum(axis=(0, 2, 3))
    assert db.dtype == np.float64 and db.shape == (3,)
    assert np.all(np.abs(db - exact) <= rel * np.abs(dout[1:5]).astype(np.float64).sum(axis=(0, 2, 3)))
    np.testing.assert_array_equal(bias_gradient(np.ones((2, 2, 1, 1), dtype), 0, 1), [1.0, 1.0])
