"""Convolution by im2col + GEMM (any kernel, stride and padding), and the public im2col / col2im.

Forward, per chunk of n images: im2col fills a column buffer of shape
``(C*HH*WW, n*H_out*W_out)``, one BLAS GEMM (numpy ``matmul``) multiplies it by
the filters, and one pass moves the result to NCHW with the bias. Backward
recomputes the columns chunk by chunk; dw and the column gradient take two more
GEMMs (for thin layers, ``C*HH*WW <= per_image_gemm_max_k``, per-image GEMMs
that read dout as it lies) and col2im turns the column gradient into dx.
Chunks hold at most :data:`CHUNK_TARGET` bytes of columns and never more than
the column budget, so extra memory does not grow with N.

Where :func:`compiled_part` holds, a batch part's whole pipeline (the kernels
and its GEMMs, through numpy's OpenBLAS) runs in one compiled call that does
not hold the GIL (``convnet/_fast/_conv_part.pyx``); otherwise each step is a
numpy call, and two threads' parts wait for the GIL between their steps.
"""
from __future__ import annotations

import numpy as np

from convnet import _checks
from convnet.fast import _backend, _config, parallel, workspace

__all__ = ["im2col", "col2im", "chunk_size", "compiled_part", "split_gemms", "bias_gradient", "Im2col", "IM2COL",
           "CHUNK_TARGET"]

# Columns up to this size are still in cache when the GEMM reads them (benchmarks/README.md: chunk sizes).
CHUNK_TARGET = 2 * 2**20
# Below this many columns per chunk, dw's GEMM writes dw as it lies: adding its result into the transposed
# view costs more than the short GEMM itself (benchmarks/README.md: dw's orientation).
DW_DIRECT_MAX_COLUMNS = 512


def chunk_size(g: _checks.ConvGeometry, itemsize: int, budget: int, buffers: int = 1) -> int:
    """Images per chunk: ``buffers`` column buffers fit in ``budget`` bytes (and :data:`CHUNK_TARGET` each); >= 1.

    One image's column buffer holds ``C*HH*WW * H_out*W_out`` elements.
    """
    per_image = g.C * g.HH * g.WW * g.H_out * g.W_out * itemsize
    limit = min(budget // buffers, CHUNK_TARGET)
    return int(max(1, min(g.N, limit // per_image)))


def compiled_part(g: _checks.ConvGeometry, s, nb: int) -> bool:
    """Whether a part in chunks of ``nb`` images runs as one compiled call (the ``gemm_in_kernels`` setting,
    numpy's OpenBLAS found, and, for a BLAS of 32-bit integers, every GEMM dimension below 2**31)."""
    if not (s.gemm_in_kernels and _backend.GEMM_IN_KERNELS):
        return False
    return _backend.GEMM_ILP64 or max(g.F, g.C * g.HH * g.WW, nb * g.H_out * g.W_out) < 2**31


def split_gemms(g: _checks.ConvGeometry, s, lo: int, hi: int) -> bool:
    """Whether a compiled part shares its GEMMs with the kernels' worker thread (the ``split_image_gemms``
    setting): the part is the whole batch, under ``blas_threads_min_work`` (BLAS on one thread), with
    ``num_threads`` >= 2. The caller never waits for the worker (``convnet/_fast/_conv_part.pyx``)."""
    return (s.split_image_gemms and s.num_threads >= 2 and lo == 0 and hi == g.N and s.split_batch
            and parallel.small_for_blas_threads(g, s))


def bias_gradient(dout, lo: int, hi: int) -> np.ndarray:
    """db's share of images lo:hi, (F,) float64: dout (N, F, H_out, W_out), C-contiguous, summed over all but F.

    Each image's planes are summed in dout's dtype by one BLAS matrix-vector product, and those sums over
    the images in float64: numpy's float64 sum of float32 data converts element by element, 2-5x slower
    (benchmarks/README.md)."""
    d3 = dout[lo:hi].reshape(hi - lo, dout.shape[1], -1)
    return np.matmul(d3, np.ones(d3.shape[2], dtype=dout.dtype)).sum(axis=0, dtype=np.float64)


def _geometry(x, kernel_height, kernel_width, stride, pad):
    # Reuse conv_args for validation with a zero-size-in-memory dummy filter.
    _checks.check_array("x", x, 4)
    kh = _checks.check_int("kernel_height", kernel_height, 1)
    kw = _checks.check_int("kernel_width", kernel_width, 1)
    w = np.broadcast_to(np.zeros((), dtype=x.dtype), (1, x.shape[1], kh, kw))
    b = np.zeros(1, dtype=x.dtype)
    return _checks.conv_args(x, w, b, {"stride": stride, "pad": pad})


def im2col(x, kernel_height, kernel_width, stride=1, pad=0):
    """Unfold every receptive field of ``x`` into a column.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    kernel_height, kernel_width : int >= 1
        At most ``H + 2*pad`` and ``W + 2*pad``.
    stride : int >= 1
    pad : int >= 0
        Zero padding on every side.

    Returns
    -------
    cols : ndarray of shape (C*kernel_height*kernel_width, N*H_out*W_out)
        ``cols[(c*kh_size + kh)*kw_size + kw, (n*H_out + i)*W_out + j] =
        xpad[n, c, i*stride + kh, j*stride + kw]``, x's dtype.
    """
    g = _geometry(x, kernel_height, kernel_width, stride, pad)
    x = np.ascontiguousarray(x)
    K, P = g.C * g.HH * g.WW, g.H_out * g.W_out
    cols = np.empty((K, g.N * P), dtype=x.dtype)
    _backend.im2col_into(x, cols.reshape(K, g.N, P), g.HH, g.WW, g.stride, g.pad,
                         _config.settings().conv_kernel_threads)
    return cols


def col2im(cols, x_shape, kernel_height, kernel_width, stride=1, pad=0):
    """Adjoint of :func:`im2col`: add every column entry back at the input position it came from.

    Parameters
    ----------
    cols : ndarray of shape (C*kernel_height*kernel_width, N*H_out*W_out), float32 or float64
    x_shape : tuple of 4 ints (N, C, H, W)
    kernel_height, kernel_width, stride, pad : int
        As :func:`im2col`.

    Returns
    -------
    dx : ndarray of shape x_shape, cols' dtype
        Entries that came from the padding are dropped.
    """
    _checks.check_array("cols", cols, 2)
    if not isinstance(x_shape, tuple) or len(x_shape) != 4:
        raise ValueError(f"x_shape must be a tuple (N, C, H, W), got {x_shape!r}")
    for name, n in zip("NCHW", x_shape):
        _checks.check_int(f"x_shape {name}", n, 1)
    dummy = np.broadcast_to(np.zeros((), dtype=cols.dtype), tuple(int(n) for n in x_shape))
    g = _geometry(dummy, kernel_height, kernel_width, stride, pad)
    K, P = g.C * g.HH * g.WW, g.H_out * g.W_out
    if cols.shape != (K, g.N * P):
        raise ValueError(f"cols has shape {cols.shape}; x_shape {tuple(x_shape)} with kernel "
                         f"{g.HH}x{g.WW}, stride {g.stride}, pad {g.pad} needs ({K}, {g.N * P})")
    cols = np.ascontiguousarray(cols)
    dx = np.empty(dummy.shape, dtype=cols.dtype)
    _backend.col2im_into(cols.reshape(K, g.N, P), dx, g.HH, g.WW, g.stride, g.pad,
                         _config.settings().conv_kernel_threads)
    return dx


class Im2col:
    """The im2col + GEMM convolution, for :class:`~convnet.fast.FastConv`.

    ``forward`` and ``backward`` work on the images ``lo:hi`` of the batch, so
    that threads can share one call; ``share`` threads split the column budget.
    """

    name = "im2col"

    def is_usable_for(self, g: _checks.ConvGeometry) -> bool:
        """Any kernel, stride and padding."""
        return True

    def filter_operand(self, w, g, s):
        """The filters as the GEMM's left operand: (F, C*HH*WW)."""
        return w.reshape(g.F, g.C * g.HH * g.WW)

    backward_operand = filter_operand
    # The compiled backward reads the operand's shape even when it skips dx.
    operand_only_for_dx = False
    operand_serves_backward = False
    # Its GEMMs run on numpy's BLAS: one BLAS thread while the batch is split, or for a small layer.
    uses_blas = True

    def filter_gradient(self, dw, shape, s):
        """dw (F, C*HH*WW), summed over the parts, in the filters' shape."""
        return dw.reshape(shape)

    def forward(self, x, wmat, b, out, g, lo, hi, share, s):
        """out[lo:hi] (N, F, H_out, W_out), b contiguous."""
        K, P = g.C * g.HH * g.WW, g.H_out * g.W_out
        out = out.reshape(g.N, g.F, P)
        nb = min(chunk_size(g, x.itemsize, s.column_budget, buffers=share), hi - lo)
        buf = workspace.empty("im2col.cols", (K * nb * P,), x.dtype)
        if compiled_part(g, s, nb):
            res = workspace.empty("im2col.res", (g.F * nb * P,), x.dtype)
            _backend.conv_part.im2col_forward(x, wmat, b, out, buf, res, lo, hi, nb, g.HH, g.WW, g.stride, g.pad,
                                              split_gemms(g, s, lo, hi))
            return
        for n0 in range(lo, hi, nb):  # a loop over chunks of the batch, not elements
            m = min(nb, hi - n0)
            cols = buf[:K * m * P].reshape(K, m * P)
            _backend.im2col_into(x[n0:n0 + m], cols.reshape(K, m, P), g.HH, g.WW, g.stride, g.pad,
                                 s.conv_kernel_threads)
            res = np.matmul(wmat, cols)
            _backend.bias_transpose(res.reshape(g.F, m, P), b, out[n0:n0 + m])

    def backward(self, x, wmat, dout, dx, g, lo, hi, share, s):
        """dx[lo:hi] (overwritten; dx None: not computed); returns images lo:hi's share of dw, (F, C*HH*WW),
        and of db, (F,) float64."""
        K, P = g.C * g.HH * g.WW, g.H_out * g.W_out
        d3 = dout.reshape(g.N, g.F, P)
        nb = min(chunk_size(g, x.itemsize, s.column_budget, buffers=2 * share), hi - lo)
        buf = workspace.empty("im2col.cols", (K * nb * P,), x.dtype)
        dbuf = workspace.empty("im2col.dcols", (K * nb * P,), x.dtype) if dx is not None else None
        if compiled_part(g, s, nb):
            return self._compiled_backward(x, wmat, d3, dx, g, lo, hi, nb, buf, dbuf, s)
        dw = np.zeros((g.F, K), dtype=x.dtype)
        dwT = dw.T  # a long GEMM runs faster producing dw^T
        for n0 in range(lo, hi, nb):
            m = min(nb, hi - n0)
            cols = buf[:K * m * P].reshape(K, m * P)
            _backend.im2col_into(x[n0:n0 + m], cols.reshape(K, m, P), g.HH, g.WW, g.stride, g.pad,
                                 s.conv_kernel_threads)
            if K <= s.per_image_gemm_max_k:
                # Per-image GEMMs on dout as it lies: no transposed copy of it.
                dw += np.matmul(d3[n0:n0 + m], cols.reshape(K, m, P).transpose(1, 2, 0)).sum(axis=0)
                if dx is None:
                    continue
                dcols = dbuf[:K * m * P].reshape(K, m * P)
                np.matmul(wmat.T, d3[n0:n0 + m], out=dcols.reshape(K, m, P).transpose(1, 0, 2))
            else:
                dmat = np.ascontiguousarray(d3[n0:n0 + m].transpose(1, 0, 2)).reshape(g.F, m * P)
                if m * P >= DW_DIRECT_MAX_COLUMNS:
                    dwT += np.matmul(cols, dmat.T)
                elif n0 == lo:
                    np.matmul(dmat, cols.T, out=dw)
                else:
                    dw += np.matmul(dmat, cols.T)
                if dx is None:
                    continue
                dcols = dbuf[:K * m * P].reshape(K, m * P)
                np.matmul(wmat.T, dmat, out=dcols)
            # dx is overwritten: the kernel zeroes each plane just before accumulating into it.
            _backend.col2im_into(dcols.reshape(K, m, P), dx[n0:n0 + m], g.HH, g.WW, g.stride, g.pad,
                                 s.conv_kernel_threads)
        return dw, bias_gradient(dout, lo, hi)

    @staticmethod
    def _compiled_backward(x, wmat, d3, dx, g, lo, hi, nb, buf, dbuf, s):
        # backward's choices (per-image GEMMs, dw's orientation) made once for the part's chunk length.
        K, P = g.C * g.HH * g.WW, g.H_out * g.W_out
        per_image = K <= s.per_image_gemm_max_k
        transposed = not per_image and nb * P >= DW_DIRECT_MAX_COLUMNS
        dw = np.empty((K, g.F) if transposed else (g.F, K), dtype=x.dtype)
        db = np.empty(g.F, dtype=np.float64)
        dmat = buf if per_image else workspace.empty("im2col.dmat", (g.F * nb * P,), x.dtype)
        _backend.conv_part.im2col_backward(x, wmat, d3, dx, dw, db, buf, buf if dbuf is None else dbuf, dmat,
                                           lo, hi, nb, g.HH, g.WW, g.stride, g.pad, per_image, transposed,
                                           split_gemms(g, s, lo, hi))
        return (dw.T if transposed else dw), db


IM2COL = Im2col()
