"""1x1 convolution (any stride, no padding) as GEMMs on the input as it lies, without im2col.

A 1x1 filter bank is a matrix ``W`` (F, C): each image's output is
``W @ x[n]`` with ``x[n]`` viewed as (C, H*W), already the layout of NCHW, so
the forward pass is one batched GEMM writing the output in place and the
backward pass two (``dx[n] = W^T dout[n]``, ``dw = sum_n dout[n] x[n]^T``).
Stride s reads every s-th row and column: those are first copied into a
contiguous (C, H_out*W_out) block per image (a quarter of x for s = 2), and
dx is zero except at the positions read. Chunks of images are bounded by the
column budget, so extra memory does not grow with N.
"""
from __future__ import annotations

import numpy as np

from convnet import _checks
from convnet.fast import workspace
from convnet.fast.conv_im2col import bias_gradient

__all__ = ["Pointwise", "POINTWISE"]


class Pointwise:
    """The 1x1 convolution for :class:`~convnet.fast.FastConv`, on images ``lo:hi`` of the batch."""

    name = "pointwise"

    def is_usable_for(self, g: _checks.ConvGeometry) -> bool:
        """1x1 kernels without padding, any stride."""
        return g.HH == 1 and g.WW == 1 and g.pad == 0

    def filter_operand(self, w, g, s):
        """The filters as a matrix (F, C)."""
        return w.reshape(g.F, g.C)

    backward_operand = filter_operand
    # A view of w: nothing to skip.
    operand_only_for_dx = False
    operand_serves_backward = False
    # Its GEMMs run on numpy's BLAS: one BLAS thread while the batch is split, or for a small layer.
    uses_blas = True

    def filter_gradient(self, dw, shape, s):
        """dw (F, C), summed over the parts, in the filters' shape."""
        return dw.reshape(shape)

    @staticmethod
    def _chunk(g, itemsize, budget, share):
        # Images per chunk: the strided copy of x (stride > 1) and dw's per-image products fit the budget.
        per_image = (g.C * g.H_out * g.W_out + g.F * g.C) * itemsize
        return int(max(1, min(g.N, (budget // share) // per_image)))

    @staticmethod
    def _input(x, g, n0, m, buf):
        """Images n0:n0+m of x as (m, C, H_out*W_out): a view (stride 1) or a copy into buf."""
        if g.stride == 1:
            return x[n0:n0 + m].reshape(m, g.C, g.H * g.W)
        s = g.stride
        view = buf[:m * g.C * g.H_out * g.W_out].reshape(m, g.C, g.H_out, g.W_out)
        np.copyto(view, x[n0:n0 + m, :, :s * g.H_out:s, :s * g.W_out:s])
        return view.reshape(m, g.C, g.H_out * g.W_out)

    def _buffer(self, g, x, nb):
        return workspace.empty("pointwise.gather", (nb * g.C * g.H_out * g.W_out,), x.dtype) if g.stride > 1 else None

    def forward(self, x, wmat, b, out, g, lo, hi, share, s):
        """out[lo:hi] (N, F, H_out, W_out) = W @ x[n] + b."""
        P = g.H_out * g.W_out
        o3 = out.reshape(g.N, g.F, P)
        nb = min(self._chunk(g, x.itemsize, s.column_budget, share), hi - lo)
        buf = self._buffer(g, x, nb)
        for n0 in range(lo, hi, nb):  # a loop over chunks of the batch, not elements
            m = min(nb, hi - n0)
            np.matmul(wmat, self._input(x, g, n0, m, buf), out=o3[n0:n0 + m])
            o3[n0:n0 + m] += b[:, None]

    def backward(self, x, wmat, dout, dx, g, lo, hi, share, s):
        """dx[lo:hi] (overwritten; dx None: not computed); returns images lo:hi's share of dw, (F, C), and of
        db, (F,) float64."""
        P = g.H_out * g.W_out
        d3 = dout.reshape(g.N, g.F, P)
        dw = np.zeros((g.F, g.C), dtype=x.dtype)
        nb = min(self._chunk(g, x.itemsize, s.column_budget, share), hi - lo)
        buf = self._buffer(g, x, nb)
        wT = wmat.T
        for n0 in range(lo, hi, nb):
            m = min(nb, hi - n0)
            xs = self._input(x, g, n0, m, buf)
            dw += np.matmul(d3[n0:n0 + m], xs.transpose(0, 2, 1)).sum(axis=0)
            if dx is None:
                continue
            if g.stride == 1:
                np.matmul(wT, d3[n0:n0 + m], out=dx[n0:n0 + m].reshape(m, g.C, P))
            else:
                st = g.stride
                np.matmul(wT, d3[n0:n0 + m], out=xs)  # the strided copy is used up: its buffer takes dx's values
                dx[n0:n0 + m] = 0
                dx[n0:n0 + m, :, :st * g.H_out:st, :st * g.W_out:st] = xs.reshape(m, g.C, g.H_out, g.W_out)
        return dw, bias_gradient(dout, lo, hi)


POINTWISE = Pointwise()
