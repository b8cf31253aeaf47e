"""Convolution by Winograd F(2x2, 3x3) or F(4x4, 3x3), for 3x3 stride-1 layers (any padding).

Forward, per chunk of images: the input tiles are transformed (``B^T d B``)
into ``V`` of shape (nk, C, P) (P tiles, nk = (m+2)^2 positions per tile), nk
batched GEMMs ``(F, C) @ (C, P)`` multiply them by the transformed filters
``U`` (nk, F, C) into ``M``, and the output transform (``A^T M A`` plus the
bias) writes every m x m output tile. Backward runs the adjoints:
``dM = A dY A^T``, ``dU += dM V^T`` (dw is ``G^T dU G``), ``dV = U^T dM``, and
the input adjoint gives dx. The matrices are in :mod:`convnet.fast.winograd`.
Chunks are bounded like im2col's columns, on the transformed tiles. With
numpy's OpenBLAS callable from the kernels, a batch part is one GIL-free call
that runs every chunk's transforms and GEMMs (``_conv_part.winograd_forward``
and ``winograd_backward``, as im2col's compiled parts). Their GEMMs are not
shared with the kernels' worker thread: on one image, the nk small GEMMs are a
small part of the time, and sharing them measured no faster
(benchmarks/README.md).
"""
from __future__ import annotations

import numpy as np

from convnet import _checks
from convnet.fast import _backend, parallel, results, workspace
from convnet.fast.conv_im2col import bias_gradient
from convnet.fast.winograd import F2, F4

__all__ = ["Winograd", "WINOGRAD2", "WINOGRAD4", "CHUNK_TARGET"]

# Longer chunks mean longer GEMMs until the transforms miss the L2 cache (benchmarks/README.md: chunk sizes).
CHUNK_TARGET = 5 * 2**18
# A filter transform's element costs about this many pooling elements (parallel_min_work decides its threads).
FILTER_WORK_SCALE = 8
# Slabs read together, a multiple of 4 KiB apart, fall in the same cache sets: skew them by this many bytes.
SLAB_SKEW = 320


def _slab_buffer(name, nk, rows, P, dtype):
    """Empty (nk, slab) array in workspace ``name``: rows*P elements per slab, slabs :data:`SLAB_SKEW` bytes past 4 KiB apart."""
    itemsize = np.dtype(dtype).itemsize
    nbytes = -(-rows * P * itemsize // 64) * 64
    nbytes += (SLAB_SKEW - nbytes % 4096) % 4096
    return workspace.empty(name, (nk, nbytes // itemsize), dtype)


def _slabs(buf, rows, cols):
    """The (nk, rows, cols) view of a :func:`_slab_buffer`, each slab C-contiguous (slicing, not as_strided: 10x cheaper)."""
    return buf[:, :rows * cols].reshape(buf.shape[0], rows, cols)


class Winograd:
    """One Winograd convolution for :class:`~convnet.fast.FastConv`, F(m x m, 3x3) with m = ``transform.m``.

    ``forward`` and ``backward`` work on the images ``lo:hi`` of the batch, so
    that threads can share one call; ``share`` threads split the column budget.
    """

    def __init__(self, transform):
        self.transform = transform
        self.name = f"winograd{transform.m}"

    def __repr__(self):
        return f"<{self.name}: {self.transform!r}>"

    def is_usable_for(self, g: _checks.ConvGeometry) -> bool:
        """3x3 kernels with stride 1, any padding."""
        return g.HH == 3 and g.WW == 3 and g.stride == 1

    def multiplies(self, g: _checks.ConvGeometry) -> int:
        """Multiplications per (input, output) channel pair and image."""
        return self.transform.multiplies(g)

    def chunk_size(self, g: _checks.ConvGeometry, itemsize: int, budget: int, share: int = 1) -> int:
        """Images per chunk: their transformed tiles fit in ``budget // share`` bytes (and :data:`CHUNK_TARGET`); >= 1.

        One image holds ``(m+2)^2 * (C + F) * ceil(H_out/m) * ceil(W_out/m)``
        transformed elements: input tiles and output tiles (the backward pass
        reuses the input tiles' buffer for their gradient).
        """
        per_image = (g.C + g.F) * self.multiplies(g) * itemsize
        limit = min(budget // share, CHUNK_TARGET)
        return int(max(1, min(g.N, limit // per_image)))

    def filter_operand(self, w, g, s):
        """``U`` (nk, F, C): the transformed filters, a fresh array (the forward pass keeps it for backward)."""
        t = self.transform
        U = results.empty(self.operand_shape(g), w.dtype)
        parallel.run_split(lambda lo, hi: _backend.winograd_filter(w, U, t.G, lo, hi),
                           g.F * g.C, t.nk * g.F * g.C * FILTER_WORK_SCALE, s)
        return U

    def operand_shape(self, g: _checks.ConvGeometry) -> tuple:
        """The shape of :meth:`filter_operand`'s ``U``: (nk, F, C)."""
        return (self.transform.nk, g.F, g.C)

    # U is also the left operand, transposed, of backward's dV = U^T dM.
    backward_operand = filter_operand
    # FastConv.backward skips the operand (a filter transform) when dx is not needed.
    operand_only_for_dx = True
    # The forward's U serves backward too (dV = U^T dM as a transposed GEMM): a filter transform less per step.
    operand_serves_backward = True
    # Its GEMMs run on numpy's BLAS: one BLAS thread while the batch is split, or for a small layer.
    uses_blas = True

    def filter_gradient(self, dU, shape, s):
        """dw (F, C, 3, 3), a fresh array, from ``dU`` (nk, F, C) summed over the parts."""
        dw = np.empty(shape, dtype=dU.dtype)
        parallel.run_split(lambda lo, hi: _backend.winograd_filter_adjoint(dU, dw, self.transform.G, lo, hi),
                           shape[0] * shape[1], dU.size * FILTER_WORK_SCALE, s)
        return dw

    def _buffers(self, g, dtype, nb):
        """The slab buffers of chunks of ``nb`` images: V's (nk, >= C*nb*T) and M's (nk, >= F*nb*T)."""
        t = self.transform
        tH, tW = t.tiles(g)
        return (_slab_buffer("winograd.V", t.nk, g.C, nb * tH * tW, dtype),
                _slab_buffer("winograd.M", t.nk, g.F, nb * tH * tW, dtype))

    def _chunks(self, g, lo, hi, nb, vbuf, mbuf):
        """[(n0, m, V, M, VT), ...]: the chunks of images lo:hi with views of the slab buffers:
        V (nk, C, m*T) and M (nk, F, m*T), and VT (nk, m*T, C), a second view of V's memory.
        The views are made once per chunk size, not per chunk."""
        tH, tW = self.transform.tiles(g)
        T = tH * tW
        views = {}
        chunks = []
        for n0 in range(lo, hi, nb):
            m = min(nb, hi - n0)
            if m not in views:
                views[m] = (_slabs(vbuf, g.C, m * T), _slabs(mbuf, g.F, m * T), _slabs(vbuf, m * T, g.C))
            chunks.append((n0, m) + views[m])
        return chunks

    def compiled_gemms(self, g, s, nb: int) -> bool:
        """Whether a part in chunks of ``nb`` images runs as one compiled call, transforms and GEMMs (the
        ``gemm_in_kernels`` setting, numpy's OpenBLAS found, and, for a BLAS of 32-bit integers, every
        slab under 2**31 elements)."""
        if not (s.gemm_in_kernels and _backend.GEMM_IN_KERNELS):
            return False
        tH, tW = self.transform.tiles(g)
        return _backend.GEMM_ILP64 or max(g.F, g.C) * nb * tH * tW < 2**31 - 2**16

    def forward(self, x, U, b, out, g, lo, hi, share, s):
        """out[lo:hi] (N, F, H_out, W_out); U from :meth:`filter_operand`, b contiguous."""
        m_tile, nt = self.transform.m, s.conv_kernel_threads
        tH, tW = self.transform.tiles(g)
        nb = min(self.chunk_size(g, x.itemsize, s.column_budget, share), hi - lo)
        vbuf, mbuf = self._buffers(g, x.dtype, nb)
        if self.compiled_gemms(g, s, nb):  # the whole part in one call
            _backend.conv_part.winograd_forward(x, U, b, out, vbuf, mbuf, g.pad, tH, tW, m_tile, lo, hi, nb)
            return
        for n0, m, V, M, _ in self._chunks(g, lo, hi, nb, vbuf, mbuf):
            _backend.winograd_input(x[n0:n0 + m], V, g.pad, tH, tW, nt, m_tile, False)
            np.matmul(U, V, out=M)
            _backend.winograd_output(M, b, out[n0:n0 + m], tH, tW, nt, m_tile)

    def backward(self, x, U, dout, dx, g, lo, hi, share, s):
        """dx[lo:hi] (overwritten; dx None: not computed); returns images lo:hi's share of ``dU`` (nk, F, C)
        and of db, (F,) float64.

        Per chunk: dM = A dY A^T and the input tiles V; dU += dM V^T;
        dV = U^T dM, whose input adjoint is dx. (Keeping several chunks' tiles
        for longer dw GEMMs is slower: the transforms then miss the cache.)
        """
        m_tile, nt = self.transform.m, s.conv_kernel_threads
        tH, tW = self.transform.tiles(g)
        shape = (self.transform.nk, g.F, g.C)
        # The whole batch in one part: dU goes no further than filter_gradient, so it may live in the workspace.
        dU = workspace.empty("winograd.dU", shape, x.dtype) if (lo, hi) == (0, g.N) else np.empty(shape, x.dtype)
        nb = min(self.chunk_size(g, x.itemsize, s.column_budget, share), hi - lo)
        vbuf, mbuf = self._buffers(g, x.dtype, nb)
        if self.compiled_gemms(g, s, nb):  # the whole part in one call
            db = np.empty(g.F)
            _backend.conv_part.winograd_backward(x, U, dout, dx, dU, db, vbuf, mbuf, g.pad, tH, tW, m_tile, lo, hi,
                                                 nb)
            return dU, db
        for i, (n0, m, V, dM, VT) in enumerate(self._chunks(g, lo, hi, nb, vbuf, mbuf)):
            _backend.winograd_output_adjoint(dout[n0:n0 + m], dM, tH, tW, nt, m_tile)
            # The tiles laid out (P, C) make dM @ VT an NN GEMM, faster than dM @ V^T.
            _backend.winograd_input(x[n0:n0 + m], VT, g.pad, tH, tW, nt, m_tile, True)
            if i == 0:
                np.matmul(dM, VT, out=dU)  # no zeroed dU to add the first chunk to
            else:
                dU += np.matmul(dM, VT, out=workspace.empty("winograd.dU_chunk", shape, x.dtype))
            if dx is None:
                continue
            # The tiles are used up: their memory takes their gradient.
            np.matmul(U.transpose(0, 2, 1), dM, out=V)
            _backend.winograd_input_adjoint(V, dx[n0:n0 + m], g.pad, tH, tW, nt, m_tile)
        return dU, bias_gradient(dout, lo, hi)


WINOGRAD2 = Winograd(F2)
WINOGRAD4 = Winograd(F4)
