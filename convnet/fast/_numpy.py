"""The numpy fallback of the compiled kernels: the same names, arguments and outputs.

Used when ``CONVNET_PUREPYTHON=1`` or the extension is missing (see
:mod:`convnet.fast._backend`). Each function fills caller-allocated,
C-contiguous outputs exactly as its Cython twin in ``convnet/_fast`` does and
accepts the same ``nthreads`` argument, which it ignores. Loops run over
kernel or tile offsets only, each step vectorised over every element.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convnet._checks import output_size
from convnet.fast.winograd import TRANSFORMS

# ---------------------------------------------------------------- im2col (convnet._fast._im2col)


def im2col_into(x, cols, HH, WW, stride, pad, nthreads=1):
    """``cols[(c, kh, kw), n, (i, j)] = xpad[n, c, i*stride + kh, j*stride + kw]``; cols is (K, N, P)."""
    N, C, H, W = x.shape
    H_out, W_out = output_size(H, HH, stride, pad), output_size(W, WW, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    win = sliding_window_view(xp, (HH, WW), axis=(2, 3))[:, :, ::stride, ::stride]
    # win: (N, C, H_out, W_out, HH, WW) -> (C, HH, WW, N, H_out, W_out)
    cols.reshape(C, HH, WW, N, H_out, W_out)[...] = win.transpose(1, 4, 5, 0, 2, 3)


def col2im_into(cols, dx, HH, WW, stride, pad, nthreads=1):
    """Adjoint of :func:`im2col_into`: dx (overwritten) accumulates every column entry."""
    N, C, H, W = dx.shape
    H_out, W_out = output_size(H, HH, stride, pad), output_size(W, WW, stride, pad)
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=dx.dtype)
    c6 = cols.reshape(C, HH, WW, N, H_out, W_out)
    hspan, wspan = stride * (H_out - 1) + 1, stride * (W_out - 1) + 1
    for kh in range(HH):
        for kw in range(WW):
            dxp[:, :, kh:kh + hspan:stride, kw:kw + wspan:stride] += c6[:, kh, kw].transpose(1, 0, 2, 3)
    dx[...] = dxp[:, :, pad:pad + H, pad:pad + W]


def bias_transpose(res, b, out):
    """``out[n, f, p] = res[f, n, p] + b[f]``."""
    np.add(res.transpose(1, 0, 2), b.reshape(1, -1, 1), out=out)


def im2row_into(x, rows, xt, HH, WW, stride, pad):
    """``rows[n, (i, j), (kh, kw, c)] = xpad[n, c, i*stride + kh, j*stride + kw]``; rows is (N, P, K), xt unused."""
    N, C, H, W = x.shape
    H_out, W_out = output_size(H, HH, stride, pad), output_size(W, WW, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    win = sliding_window_view(xp, (HH, WW), axis=(2, 3))[:, :, ::stride, ::stride]
    # win: (N, C, H_out, W_out, HH, WW) -> (N, H_out, W_out, HH, WW, C)
    rows.reshape(N, H_out, W_out, HH, WW, C)[...] = win.transpose(0, 2, 3, 4, 5, 1)


def row2im_into(rows, dx, xt, HH, WW, stride, pad):
    """Adjoint of :func:`im2row_into`: dx (overwritten) accumulates every row entry; xt unused."""
    N, C, H, W = dx.shape
    H_out, W_out = output_size(H, HH, stride, pad), output_size(W, WW, stride, pad)
    cols = rows.reshape(N, H_out * W_out, HH, WW, C).transpose(4, 2, 3, 0, 1)
    col2im_into(np.ascontiguousarray(cols).reshape(C * HH * WW, N, H_out * W_out), dx, HH, WW, stride, pad)


def transpose_planes(src, dst, b=None):
    """``dst[n, q, p] = src[n, p, q]`` (+ ``b[q]`` when b is given)."""
    if b is None:
        dst[...] = src.transpose(0, 2, 1)
    else:
        np.add(src.transpose(0, 2, 1), b.reshape(1, -1, 1), out=dst)


# ---------------------------------------------------------------- pooling (convnet._fast._pool)


def _windows(xp, ph, pw, stride, H_out, W_out):
    """View of every pooling window of the planes xp (P, Hp, Wp): (P, H_out, W_out, ph, pw)."""
    win = sliding_window_view(xp, (ph, pw), axis=(1, 2))
    return win[:, ::stride, ::stride][:, :H_out, :W_out]


def maxpool_forward(x, out, argmax, ph, pw, stride, pad, nthreads=1):
    """out = max of each window of the planes x (P, H, W); argmax = flat index ``h*W + w`` of its first maximum."""
    W = x.shape[2]
    H_out, W_out = out.shape[1:]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf) if pad else x
    win = _windows(xp, ph, pw, stride, H_out, W_out).reshape(-1, H_out, W_out, ph * pw)
    a = np.argmax(win, axis=-1)  # first maximum in row-major order (and the first NaN)
    out[...] = np.take_along_axis(win, a[..., None], axis=-1)[..., 0]
    hs = (np.arange(H_out) * stride - pad)[:, None]
    ws = (np.arange(W_out) * stride - pad)[None, :]
    idx = (hs + a // pw) * W + (ws + a % pw)
    if pad:
        # A window of nothing but -inf: PyTorch picks its first real element, not the padding.
        first = np.maximum(hs, 0) * W + np.maximum(ws, 0)
        idx = np.where(out == -np.inf, first, idx)
    argmax[...] = idx


def maxpool_backward(dout, argmax, dx, nthreads=1):
    """dx (P, H*W, overwritten) = each window's gradient dout (P, Q) added at its argmax (P, Q)."""
    P, HW = dx.shape
    flat = (np.arange(P, dtype=np.int64)[:, None] * HW + argmax).ravel()
    dx[...] = np.bincount(flat, weights=dout.ravel(), minlength=P * HW).reshape(P, HW)


def index_bound(idx):
    """The largest of the int32 indices ``idx`` (1-d) read as unsigned, 0 if empty (a negative one reads as
    2**31 or more)."""
    return int(np.maximum.reduce(idx.view(np.uint32))) if idx.size else 0


def avgpool_forward(x, out, ph, pw, stride, pad, nthreads=1):
    """out = sum of each window of the planes x (P, H, W) / (ph*pw): zero padding counts."""
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad))) if pad else x
    s = _windows(xp, ph, pw, stride, *out.shape[1:]).sum(axis=(-2, -1))
    np.multiply(s, x.dtype.type(1.0 / (ph * pw)), out=out)


def avgpool_backward(dout, dx, ph, pw, stride, pad, nthreads=1):
    """dx (P, H, W, overwritten) = dout (P, H_out, W_out) / (ph*pw) spread over each window."""
    P, H, W = dx.shape
    H_out, W_out = dout.shape[1:]
    dxp = np.zeros((P, H + 2 * pad, W + 2 * pad), dtype=dx.dtype)
    d = dout * dout.dtype.type(1.0 / (ph * pw))
    hspan, wspan = stride * (H_out - 1) + 1, stride * (W_out - 1) + 1
    for kh in range(ph):
        for kw in range(pw):
            dxp[:, kh:kh + hspan:stride, kw:kw + wspan:stride] += d
    dx[...] = dxp[:, pad:pad + H, pad:pad + W]


# ---------------------------------------------------------------- Winograd (convnet._fast._winograd)


def winograd_input(x, V, pad, tH, tW, nthreads=1, m=2, transposed=False):
    """``V[k, c, (n*tH + ti)*tW + tj] = (B^T d B)[k]`` for tile (ti, tj) of plane x[n, c].

    ``transposed``: V is (nk, P, C) instead and gets ``V[k, p, c]``.
    """
    if transposed:
        tiles = np.empty((V.shape[0], V.shape[2], V.shape[1]), dtype=V.dtype)
        winograd_input(x, tiles, pad, tH, tW, nthreads, m)
        V[...] = tiles.transpose(0, 2, 1)
        return
    t = TRANSFORMS[m]
    n, C, H, W = x.shape
    a = t.alpha
    xp = np.zeros((n, C, m * tH + 2, m * tW + 2), dtype=x.dtype)
    xp[:, :, pad:pad + H, pad:pad + W] = x
    tiles = sliding_window_view(xp, (a, a), axis=(2, 3))[:, :, ::m, ::m]
    BT = t.BT.astype(x.dtype)
    V.reshape(a, a, C, n, tH, tW)[...] = np.einsum("ir,ncabrs,js->ijcnab", BT, tiles, BT, optimize=True)


def winograd_input_adjoint(dV, dx, pad, tH, tW, nthreads=1, m=2):
    """Adjoint of :func:`winograd_input`: dx[n, c] (overwritten) = the sum over its tiles of ``B dV B^T``."""
    t = TRANSFORMS[m]
    n, C, H, W = dx.shape
    a = t.alpha
    BT = t.BT.astype(dx.dtype)
    dd = np.einsum("ir,ijcnab,js->rsncab", BT, dV.reshape(a, a, C, n, tH, tW), BT, optimize=True)
    dxp = np.zeros((n, C, m * tH + 2, m * tW + 2), dtype=dx.dtype)
    for r in range(a):
        for s in range(a):
            dxp[:, :, r:r + m * tH:m, s:s + m * tW:m] += dd[r, s]
    dx[...] = dxp[:, :, pad:pad + H, pad:pad + W]


def winograd_output(M, b, out, tH, tW, nthreads=1, m=2):
    """``out[n, f] = A^T M A + b[f]`` per tile of image n; edge tiles cropped."""
    t = TRANSFORMS[m]
    n, F, Ho, Wo = out.shape
    a = t.alpha
    AT = t.AT.astype(out.dtype)
    y = np.einsum("ai,ijfnhw,bj->nfhawb", AT, M.reshape(a, a, F, n, tH, tW), AT, optimize=True)
    out[...] = y.reshape(n, F, m * tH, m * tW)[:, :, :Ho, :Wo] + b.reshape(1, F, 1, 1)


def winograd_output_adjoint(dout, dM, tH, tW, nthreads=1, m=2):
    """Adjoint of :func:`winograd_output` without the bias: ``dM[:, f, tiles of n] = A dY A^T``."""
    t = TRANSFORMS[m]
    n, F, Ho, Wo = dout.shape
    a = t.alpha
    dyp = np.zeros((n, F, m * tH, m * tW), dtype=dout.dtype)
    dyp[:, :, :Ho, :Wo] = dout
    AT = t.AT.astype(dout.dtype)
    dM.reshape(a, a, F, n, tH, tW)[...] = np.einsum("ai,nfhawb,bj->ijfnhw", AT,
                                                     dyp.reshape(n, F, tH, m, tW, m), AT, optimize=True)


def winograd_filter(w, U, G, lo=0, hi=-1):
    """``U[k, f, c] = (G w[f, c] G^T)[r, s]`` for the pairs lo <= j < hi (j = f*C + c)."""
    full = TRANSFORMS[G.shape[0] - 2].filter(w)
    J = full.shape[1] * full.shape[2]
    hi = J if hi < 0 else hi
    U.reshape(-1, J)[:, lo:hi] = full.reshape(-1, J)[:, lo:hi]


def winograd_filter_adjoint(dU, dw, G, lo=0, hi=-1):
    """``dw[f, c] = G^T dU[:, f, c] G`` for the pairs lo <= j < hi (j = f*C + c)."""
    full = TRANSFORMS[G.shape[0] - 2].filter_adjoint(dU, dw.shape)
    J = dw.shape[0] * dw.shape[1]
    hi = J if hi < 0 else hi
    dw.reshape(J, 9)[lo:hi] = full.reshape(J, 9)[lo:hi]
