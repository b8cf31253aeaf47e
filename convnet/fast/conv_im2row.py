"""Convolution by im2row + GEMM: im2col's transposed layout, one row per output pixel (any kernel, stride, padding).

Forward, per chunk of n images: im2row fills a row buffer of shape
``(n*H_out*W_out, HH*WW*C)`` through a channels-last copy of each image, so
the taps of one kernel row are one contiguous run of ``WW*C`` elements
whatever the stride (im2col copies runs of ``W_out`` elements, gathered with
the stride). One GEMM multiplies the rows by the filters reordered to
``(F, HH*WW*C)``, and one pass transposes each image's ``(P, F)`` result to
NCHW with the bias. Backward transposes dout the other way, takes dw and the
row gradient in two GEMMs, and row2im adds the row gradient back (channels
last, then transposed to NCHW). Chunks are sized as im2col's
(:func:`~convnet.fast.conv_im2col.chunk_size`), and a part runs as one
compiled call where :func:`~convnet.fast.conv_im2col.compiled_part` holds.

``'auto'`` takes it where :func:`~convnet.fast.conv.prefers_im2row` (measurements in benchmarks/README.md).
"""
from __future__ import annotations

import numpy as np

from convnet import _checks
from convnet.fast import _backend, workspace
from convnet.fast.conv_im2col import bias_gradient, chunk_size, compiled_part, split_gemms

__all__ = ["Im2row", "IM2ROW"]


class Im2row:
    """The im2row + GEMM convolution, for :class:`~convnet.fast.FastConv`.

    ``forward`` and ``backward`` work on the images ``lo:hi`` of the batch, as
    :class:`~convnet.fast.conv_im2col.Im2col`'s do.
    """

    name = "im2row"

    def is_usable_for(self, g: _checks.ConvGeometry) -> bool:
        """Any kernel, stride and padding."""
        return True

    def filter_operand(self, w, g, s):
        """The filters with the channel axis last: (F, HH*WW*C), the GEMM's (transposed) right operand."""
        return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(g.F, g.HH * g.WW * g.C)

    backward_operand = filter_operand
    # The compiled backward reads the operand's shape even when it skips dx.
    operand_only_for_dx = False
    operand_serves_backward = False
    # Its GEMMs run on numpy's BLAS: one BLAS thread while the batch is split, or for a small layer.
    uses_blas = True

    def filter_gradient(self, dw, shape, s):
        """dw (F, HH*WW*C), summed over the parts, in the filters' shape (F, C, HH, WW)."""
        F, C, HH, WW = shape
        return np.ascontiguousarray(dw.reshape(F, HH, WW, C).transpose(0, 3, 1, 2))

    def forward(self, x, wt, b, out, g, lo, hi, share, s):
        """out[lo:hi] (N, F, H_out, W_out), b contiguous."""
        K, P = g.C * g.HH * g.WW, g.H_out * g.W_out
        out = out.reshape(g.N, g.F, P)
        nb = min(chunk_size(g, x.itemsize, s.column_budget, buffers=share), hi - lo)
        buf = workspace.empty("im2row.rows", (nb * P * K,), x.dtype)
        xt = workspace.empty("im2row.image", (g.C * g.H * g.W,), x.dtype)
        if compiled_part(g, s, nb):
            res = workspace.empty("im2row.res", (nb * P * g.F,), x.dtype)
            _backend.conv_part.im2row_forward(x, wt, b, out, buf, res, xt, lo, hi, nb, g.HH, g.WW, g.stride, g.pad,
                                              split_gemms(g, s, lo, hi))
            return
        for n0 in range(lo, hi, nb):  # a loop over chunks of the batch, not elements
            m = min(nb, hi - n0)
            rows = buf[:m * P * K].reshape(m * P, K)
            _backend.im2row_into(x[n0:n0 + m], rows.reshape(m, P, K), xt, g.HH, g.WW, g.stride, g.pad)
            res = np.matmul(rows, wt.T)
            _backend.transpose_planes(res.reshape(m, P, g.F), out[n0:n0 + m], b)

    def backward(self, x, wt, dout, dx, g, lo, hi, share, s):
        """dx[lo:hi] (overwritten; dx None: not computed); returns images lo:hi's share of dw, (F, HH*WW*C),
        and of db, (F,) float64."""
        K, P = g.C * g.HH * g.WW, g.H_out * g.W_out
        d3 = dout.reshape(g.N, g.F, P)
        dw = np.empty((g.F, K), dtype=x.dtype)
        nb = min(chunk_size(g, x.itemsize, s.column_budget, buffers=2 * share), hi - lo)
        buf = workspace.empty("im2row.rows", (nb * P * K,), x.dtype)
        dbuf = workspace.empty("im2row.drows", (nb * P * K,), x.dtype) if dx is not None else None
        tbuf = workspace.empty("im2row.dout", (nb * P * g.F,), x.dtype)
        xt = workspace.empty("im2row.image", (g.C * g.H * g.W,), x.dtype)
        if compiled_part(g, s, nb):
            db = np.empty(g.F, dtype=np.float64)
            _backend.conv_part.im2row_backward(x, wt, d3, dx, dw, db, buf, buf if dbuf is None else dbuf, tbuf, xt,
                                               lo, hi, nb, g.HH, g.WW, g.stride, g.pad, split_gemms(g, s, lo, hi))
            return dw, db
        for n0 in range(lo, hi, nb):
            m = min(nb, hi - n0)
            rows = buf[:m * P * K].reshape(m * P, K)
            _backend.im2row_into(x[n0:n0 + m], rows.reshape(m, P, K), xt, g.HH, g.WW, g.stride, g.pad)
            dT = tbuf[:m * P * g.F].reshape(m * P, g.F)
            _backend.transpose_planes(d3[n0:n0 + m], dT.reshape(m, P, g.F), None)
            if n0 == lo:
                np.matmul(dT.T, rows, out=dw)
            else:
                dw += np.matmul(dT.T, rows)
            if dx is None:
                continue
            drows = dbuf[:m * P * K].reshape(m * P, K)
            np.matmul(dT, wt, out=drows)
            _backend.row2im_into(drows.reshape(m, P, K), dx[n0:n0 + m], xt, g.HH, g.WW, g.stride, g.pad)
        return dw, bias_gradient(dout, lo, hi)


IM2ROW = Im2row()
