"""Direct convolution for stride-1 layers with few channels: no im2col columns.

A layer such as LeNet's first, 3 channels to 6 filters of 5x5, makes im2col
columns 75 times each input pixel, and then a GEMM of only 6 rows reads them
back: the copies, not the multiplications, take the time. Here each image is
padded once into a small plane stack and the compiled kernels
(``convnet/_fast/_direct.pyx``) accumulate blocks of outputs in registers
straight from it:

- forward: ``fb`` filters times a vector of one output row at a time;
- dx: the same kernel on dout padded by ``kernel - 1 - pad``, with the filters
  flipped and their two channel axes swapped;
- dw: sums over the pixels of dout times the padded image, 2 filters by 6 taps
  at a time, or, where the filters fill at least the share of the vector lanes
  that a row's pixels do (:func:`dw_by_filters`), 6 taps by two vectors of filters.

Where the batch is not split (one image, or a few small ones) and there are
two threads, each image's output rows and dw's tap blocks are shared with the
kernels' worker thread instead (:func:`shares_images`, ``convnet/_fast/_conv_part.pyx``).

Extra memory is a few padded images per thread, whatever N. Usable with the
compiled kernels only, for stride 1 and ``pad < min(HH, WW)``.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from convnet import _checks
from convnet.fast import _backend, workspace

__all__ = ["Direct", "DIRECT", "filter_block", "dw_by_filters", "shares_images", "SHARE_MIN_WORK"]

# dw pads this many bytes of images at a time and sums them in each pass over its taps (an L2 cache's share).
DW_CHUNK_BYTES = 128 * 2**10
# The forward kernel's filter blocks: 1 to 6 filters per pass (six ymm pairs of accumulators fill the registers).
MAX_BLOCK = 6
# Multiply-adds per image from which an unsplit batch shares its images with the kernels' worker: below, a job's
# blocks take a few us and the worker's spin after each job costs more than it saves (benchmarks/README.md).
SHARE_MIN_WORK = 2**17


def filter_block(F: int) -> int:
    """Filters the forward kernel holds per pass for a layer of ``F`` filters: all of them up to
    :data:`MAX_BLOCK`, else the block of 4 to 6 that pads ``F`` least (the larger on a tie)."""
    if F <= MAX_BLOCK:
        return F
    return min(range(MAX_BLOCK, 3, -1), key=lambda fb: -(-F // fb) * fb)


def dw_by_filters(F: int, W_out: int, itemsize: int) -> bool:
    """Whether dw holds the filters in its vector lanes (two vectors of them per pass) rather than a row's
    pixels (one vector): where ``F`` fills at least the share of its lanes that ``W_out`` fills of its own
    (with no tail to mask and no sums across lanes, it wins the ties: benchmarks/README.md)."""
    row = _backend.direct.dw_lanes(itemsize)
    return F / _filter_lanes(F, itemsize) >= W_out / (-(-W_out // row) * row)


def shares_images(g: _checks.ConvGeometry, s, lo: int, hi: int) -> bool:
    """Whether a part shares each image's rows (and dw's taps) with the kernels' worker thread: the part is the
    whole batch (a batch too small to split, such as one image) of images of at least :data:`SHARE_MIN_WORK`
    multiply-adds, ``num_threads`` >= 2, the ``split_image_gemms`` setting, and the compiled parts' module
    loaded. The caller never waits for the worker (``convnet/_fast/_conv_part.pyx``)."""
    return (s.split_image_gemms and s.num_threads >= 2 and lo == 0 and hi == g.N
            and g.F * g.C * g.HH * g.WW * g.H_out * g.W_out >= SHARE_MIN_WORK and _backend.conv_part is not None)


def _filter_lanes(F: int, itemsize: int) -> int:
    """``F`` rounded up to whole pairs of dw's vectors: the filters' lanes when dw holds them."""
    pair = 2 * _backend.direct.dw_lanes(itemsize)
    return -(-F // pair) * pair


def _blocked(wmat, fb):
    """(F, T) filters as (ceil(F/fb), T, fb), zero filters past F: one pass's weights for a tap side by side."""
    F, T = wmat.shape
    nblk = -(-F // fb)
    out = np.zeros((nblk * fb, T), dtype=wmat.dtype)
    out[:F] = wmat
    return np.ascontiguousarray(out.reshape(nblk, fb, T).transpose(0, 2, 1)).ravel()


def _offsets(C, HH, WW, Hp, Wpp, multiple=1):
    """Offsets of the taps (c, ky, kx), in im2col's order, in a (C, Hp, Wpp) stack; padded with 0s to a multiple."""
    c, ky, kx = np.meshgrid(np.arange(C), np.arange(HH), np.arange(WW), indexing="ij")
    off = ((c * Hp + ky) * Wpp + kx).ravel().astype(np.intp)
    off = np.concatenate([off, np.zeros(-len(off) % multiple, dtype=np.intp)])
    off.setflags(write=False)
    return off


def _row_width(width_out, WW, itemsize):
    """Elements per padded row: whole pairs of vectors of ``width_out`` outputs, plus the kernel's reach."""
    lanes = _backend.direct.lanes(itemsize)
    return -(-width_out // lanes) * lanes + WW - 1


class _Layout(NamedTuple):
    """Where a layer's kernels read: x padded into (C, Hp, Wpp) with tap offsets ``off`` (dw's, ``dw_off``, in
    multiples of its tap block), dout padded into (F, Hq, Wq) with offsets ``dx_off`` for dx, and dout's rows
    copied into rows of ``Wq_dw`` (whole vectors) for dw."""
    Hp: int
    Wpp: int
    off: np.ndarray
    dw_off: np.ndarray
    Hq: int
    Wq: int
    dx_off: np.ndarray
    Wq_dw: int
    zeros: np.ndarray  # Wq_dw zeros (dw's partner of an odd F's last filter) and dx's zero bias, read-only


@functools.lru_cache(maxsize=256)
def _layout(C, F, H, W, HH, WW, pad, itemsize):
    # Cached: the offsets cost more to build than a small layer's forward pass.
    W_out = W + 2 * pad - WW + 1
    Hp, Wpp = H + 2 * pad, _row_width(W_out, WW, itemsize)
    Hq, Wq = H + HH - 1, _row_width(W, WW, itemsize)
    Wq_dw = -(-W_out // _backend.direct.dw_lanes(itemsize)) * _backend.direct.dw_lanes(itemsize)
    zeros = np.zeros(max(Wq_dw, -(-C // filter_block(C)) * filter_block(C)), dtype=np.float32 if itemsize == 4
                     else np.float64)
    zeros.setflags(write=False)
    return _Layout(Hp, Wpp, _offsets(C, HH, WW, Hp, Wpp), _offsets(C, HH, WW, Hp, Wpp, _backend.direct.DW_TAPS),
                   Hq, Wq, _offsets(F, HH, WW, Hq, Wq), Wq_dw, zeros)


def _layout_of(g, itemsize):
    return _layout(g.C, g.F, g.H, g.W, g.HH, g.WW, g.pad, itemsize)


class Direct:
    """The direct convolution for :class:`~convnet.fast.FastConv`, on images ``lo:hi`` of the batch."""

    name = "direct"

    def is_usable_for(self, g: _checks.ConvGeometry) -> bool:
        """Stride 1 with ``pad < min(HH, WW)`` (dx's adjoint pads dout by ``kernel - 1 - pad``), with compiled
        kernels that have the vector code (GCC or clang builds)."""
        return (_backend.direct is not None and _backend.direct.VECTORIZED and g.stride == 1
                and g.pad < min(g.HH, g.WW))

    def filter_operand(self, w, g, s):
        """(blocked filters, block) for the forward kernel."""
        fb = filter_block(g.F)
        return _blocked(w.reshape(g.F, -1), fb), fb

    # FastConv.backward skips the operand when dx is not needed (a network's first layer).
    operand_only_for_dx = True
    operand_serves_backward = False
    # No BLAS call (db is summed in the dw kernel's pass): BLAS's threads are left alone (benchmarks/README.md).
    uses_blas = False

    def backward_operand(self, w, g, s):
        """(blocked flipped filters with channels and filters swapped, block) for dx."""
        fb = filter_block(g.C)
        flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(g.C, -1)
        return _blocked(flipped, fb), fb

    def filter_gradient(self, dw, shape, s):
        """dw (F, taps padded to the kernel's block), summed over the parts, in the filters' shape."""
        F, C, HH, WW = shape
        return np.ascontiguousarray(dw[:, :C * HH * WW]).reshape(shape)

    def forward(self, x, operand, b, out, g, lo, hi, share, s):
        """out[lo:hi] (N, F, H_out, W_out)."""
        wt, fb = operand
        lay = _layout_of(g, x.itemsize)
        bias = np.zeros(len(wt) // len(lay.off), dtype=x.dtype)
        bias[:g.F] = b
        scratch = workspace.empty("direct.pad", (g.C * lay.Hp * lay.Wpp,), x.dtype)
        if shares_images(g, s, lo, hi):
            _backend.conv_part.direct_forward(x, wt, bias, out, scratch, lay.off, fb, lay.Hp, lay.Wpp, g.pad, g.pad,
                                              lo, hi, True)
        else:
            _backend.direct.correlate(x, wt, bias, out, scratch, lay.off, fb, lay.Hp, lay.Wpp, g.pad, g.pad, lo, hi)

    def backward(self, x, operand, dout, dx, g, lo, hi, share, s):
        """dx[lo:hi] (overwritten; dx None: not computed); returns images lo:hi's share of dw, (F, taps
        padded), and of db, (F,) float64."""
        lay = _layout_of(g, x.itemsize)
        by_filters = dw_by_filters(g.F, g.W_out, x.itemsize)
        Fp = _filter_lanes(g.F, x.itemsize)
        dout_image = g.H_out * g.W_out * Fp if by_filters else g.F * g.H_out * lay.Wq_dw
        per_image = g.C * lay.Hp * lay.Wpp + dout_image
        shared = shares_images(g, s, lo, hi)
        nb = 1 if shared else max(1, min(hi - lo, DW_CHUNK_BYTES // (per_image * x.itemsize)))
        scratch = workspace.empty("direct.pad", (nb * g.C * lay.Hp * lay.Wpp,), x.dtype)
        dscratch = workspace.empty("direct.dout", (nb * dout_image,), x.dtype)
        db = np.zeros(g.F)
        # dw^T (taps, Fp) with the filters in the lanes, else dw (F, taps).
        acc = np.zeros((len(lay.dw_off), Fp) if by_filters else (g.F, len(lay.dw_off)), dtype=x.dtype)
        top, left = g.HH - 1 - g.pad, g.WW - 1 - g.pad  # dx: the adjoint correlation pads dout this much
        if shared:
            # dw's taps and dx's rows in one job per image: dx pads dout into a buffer of its own.
            wt, fb = operand if dx is not None else (None, 1)
            dpad = workspace.empty("direct.dx", (g.F * lay.Hq * lay.Wq,), x.dtype) if dx is not None else None
            _backend.conv_part.direct_backward(x, dout, acc, db, scratch, dscratch, lay.zeros, lay.dw_off, lay.Hp,
                                               lay.Wpp, lay.Wq_dw, g.pad, by_filters, dx, wt, lay.dx_off, fb,
                                               lay.Hq, lay.Wq, top, left, dpad, lo, hi, True)
        else:
            _backend.direct.filter_gradient(x, dout, acc, db, scratch, dscratch, lay.zeros, lay.dw_off, lay.Hp,
                                            lay.Wpp, lay.Wq_dw, g.pad, lo, hi, nb, by_filters)
            if dx is not None:
                wt, fb = operand
                dpad = workspace.empty("direct.dout", (g.F * lay.Hq * lay.Wq,), x.dtype)  # dw is done with it
                _backend.direct.correlate(dout, wt, lay.zeros, dx, dpad, lay.dx_off, fb, lay.Hq, lay.Wq, top, left,
                                          lo, hi)
        return (acc[:, :g.F].T if by_filters else acc), db


DIRECT = Direct()
