"""Winograd F(m x m, 3x3), m = 2 or 4: the transform matrices and what follows from them.

This module is the one definition of the matrices ``G``, ``B^T`` and ``A^T``
(Lavin & Gray, 2015). An m x m output tile of a 3x3 stride-1 convolution is
``A^T [(G g G^T) * (B^T d B)] A`` for the (m+2) x (m+2) input patch ``d``
whose top-left corner is ``(m*ti - pad, m*tj - pad)`` and the filter ``g``;
``k = (m+2)*r + s`` numbers the positions of a transformed tile, which are
the rows of the batched GEMMs. The filter transform runs here (numpy GEMMs);
the tile transforms run in the kernels of :mod:`convnet.fast._backend`: the
numpy fallback multiplies by these matrices, the compiled kernels
(``convnet/_fast/_winograd.pyx``) apply them as unrolled sums, which
``tests/fast/test_winograd.py`` checks against these matrices entry by entry.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Transform", "F2", "F4", "TRANSFORMS"]


class Transform:
    """One Winograd algorithm F(m x m, 3x3).

    Attributes
    ----------
    m : int
        Output tile size.
    alpha : int
        Input tile size, ``m + 2``.
    nk : int
        Positions of a transformed tile, ``alpha**2``.
    G, BT, AT : ndarray of float64, read-only
        Shapes (alpha, 3), (alpha, alpha) and (m, alpha).
    """

    def __init__(self, m, G, BT, AT):
        self.m, self.alpha = m, m + 2
        self.nk = self.alpha ** 2
        self.G, self.BT, self.AT = (np.array(a, dtype=np.float64) for a in (G, BT, AT))
        for a in (self.G, self.BT, self.AT):
            a.setflags(write=False)

    def __repr__(self):
        return f"<Winograd F({self.m}x{self.m}, 3x3)>"

    def tiles(self, g):
        """Tiles per column and per row of one output plane: ``(ceil(H_out/m), ceil(W_out/m))``."""
        return -(-g.H_out // self.m), -(-g.W_out // self.m)

    def multiplies(self, g):
        """Multiplications per (input, output) channel pair and image: (m+2)^2 per tile."""
        tH, tW = self.tiles(g)
        return self.nk * tH * tW

    def filter(self, w):
        """``U[alpha*r + s, f, c] = (G w[f, c] G^T)[r, s]``: shape (nk, F, C), contiguous, w's dtype.

        Two GEMMs with F*C columns on a transposed copy of w (faster than einsum).
        """
        G = self.G.astype(w.dtype)
        F, C = w.shape[:2]
        wt = np.ascontiguousarray(w.transpose(2, 3, 0, 1))
        wg = np.matmul(G, wt.reshape(3, 3, F * C))  # (k, s, fc) = (w G^T)[k, s]
        return (G @ wg.reshape(3, self.alpha * F * C)).reshape(self.nk, F, C)

    def filter_adjoint(self, dU, shape):
        """Adjoint of :meth:`filter`: ``dw[f, c] = G^T dU[:, f, c] G``, of ``shape`` (F, C, 3, 3)."""
        G = self.G.astype(dU.dtype)
        F, C = shape[:2]
        gd = (G.T @ dU.reshape(self.alpha, self.alpha * F * C)).reshape(3, self.alpha, F * C)  # (k, s, fc)
        dwt = np.matmul(G.T, gd)  # (k, l, fc)
        return np.ascontiguousarray(dwt.reshape(9, F * C).T).reshape(F, C, 3, 3)


# Interpolation points 0, 1, -1 and infinity.
F2 = Transform(
    2, G=[[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    AT=[[1, 1, 1, 0], [0, 1, -1, -1]])
# Interpolation points 0, 1, -1, 2, -2 and infinity.
F4 = Transform(
    4, G=[[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
          [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    BT=[[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])
# By output tile size m: the kernels' argument.
TRANSFORMS = {2: F2, 4: F4}
