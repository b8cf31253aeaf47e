"""FastConv: the convolution layer, run by the algorithm :func:`choose` picks for each layer.

Algorithms, each an object with one predicate ``is_usable_for(geometry)`` (and
``operand_only_for_dx``: whether its ``backward_operand`` serves dx alone;
``operand_serves_backward``: whether the forward pass's ``filter_operand``,
kept in the cache, is also backward's, of shape ``operand_shape(geometry)``):

- :data:`~convnet.fast.conv_im2col.IM2COL`: im2col + GEMM, any layer;
- :data:`~convnet.fast.conv_im2row.IM2ROW`: im2row + GEMM (the transposed layout), any layer;
- :data:`~convnet.fast.conv_pointwise.POINTWISE`: 1x1 layers without padding, GEMMs on x as it lies;
- :data:`~convnet.fast.conv_direct.DIRECT`: stride-1 layers, from the padded input without columns;
- :data:`~convnet.fast.conv_winograd.WINOGRAD4`, :data:`~convnet.fast.conv_winograd.WINOGRAD2`:
  Winograd F(4x4, 3x3) and F(2x2, 3x3), 3x3 stride-1 layers.

:func:`choose` takes the first usable one in the order of preference the
``conv_algorithm`` setting gives (:func:`preference`). Whatever the algorithm,
a large enough batch is split across threads (:mod:`convnet.fast.parallel`).
"""
from __future__ import annotations

import numpy as np

from convnet import _checks
from convnet.fast import _config, parallel, results
from convnet.fast._backend import HAVE_CYTHON
from convnet.fast._caches import ConvCache, check_fast_cache
from convnet.fast.conv_direct import DIRECT
from convnet.fast.conv_im2col import IM2COL
from convnet.fast.conv_im2row import IM2ROW
from convnet.fast.conv_pointwise import POINTWISE
from convnet.fast.conv_winograd import WINOGRAD2, WINOGRAD4
from convnet.fast.inputs import is_network_input

__all__ = ["FastConv", "choose", "preference", "WINOGRAD_MIN_CHANNELS", "WINOGRAD4_MIN_SIZE",
           "WINOGRAD_MIN_PIXELS", "IM2ROW_MAX_WIDTH", "IM2ROW_MIN_PIXELS", "prefers_im2row", "DIRECT_MAX_CHANNELS",
           "prefers_direct", "prefers_pointwise"]

# 'auto' takes Winograd from this many input and output channels: thinner batched GEMMs do not pay for the transforms.
WINOGRAD_MIN_CHANNELS = 16
# 'auto' takes F(4x4) only on output maps this large both ways: on 8x8 and 14x14 maps F(2x2) runs faster
# (benchmarks/README.md) and, with 9x smaller transform coefficients, rounds less.
WINOGRAD4_MIN_SIZE = 16
# 'auto' takes Winograd from this many output pixels per call (N * H_out * W_out), one 14x14 image: below, the
# two filter transforms of a step and the short batched GEMMs cost more than the multiplications saved (12x12).
WINOGRAD_MIN_PIXELS = 196
# 'auto' takes im2row (prefers_im2row) on output rows narrower than this and calls of this many output pixels:
# wider rows make im2col's copies efficient, fewer pixels make the (pixels, K) GEMM short (benchmarks/README.md).
IM2ROW_MAX_WIDTH = 16
IM2ROW_MIN_PIXELS = 1024
# 'auto' takes the direct convolution up to this many input channels, by itemsize: im2col's columns then copy
# each input pixel HH*WW times for a GEMM of only C*HH*WW rows; in float32 direct also beats Winograd at 16
# channels, in float64 not (benchmarks/README.md: the constants table).
DIRECT_MAX_CHANNELS = {4: 16, 8: 8}


def prefers_pointwise(g: _checks.ConvGeometry) -> bool:
    """Whether ``'auto'`` (with the compiled kernels) takes the 1x1 GEMMs for a layer they can run: at stride 1
    only, where they read x as it lies. Strided, they copy the input as im2col does, and im2col's compiled
    batch parts run as fast or faster at every batch size measured (benchmarks/README.md)."""
    return POINTWISE.is_usable_for(g) and g.stride == 1


def prefers_direct(g: _checks.ConvGeometry, itemsize: int) -> bool:
    """Whether ``'auto'`` takes the direct convolution: a layer it can run (stride 1, ``pad < min(HH, WW)``)
    with at most :data:`DIRECT_MAX_CHANNELS` ``[itemsize]`` input channels, such as a network's first layer
    on RGB images."""
    return g.C <= DIRECT_MAX_CHANNELS[itemsize] and DIRECT.is_usable_for(g)


def prefers_im2row(g: _checks.ConvGeometry, itemsize: int) -> bool:
    """Whether ``'auto'`` takes im2row over im2col: for strided layers, and in float32 for short output rows
    (``W_out`` under :data:`IM2ROW_MAX_WIDTH`, im2col's copies), in calls of at least
    :data:`IM2ROW_MIN_PIXELS` output pixels (the GEMM's rows), where a kernel row (``WW*C`` contiguous
    elements, channels last) is at least as long as an output row's input span (``W_out*stride``).

    Measured (benchmarks/README.md, the constants table): 2-29 % faster on such layers, strided ones 6-16 %
    in both dtypes; slower on stride-1 layers in float64 (0-5 %) and on 16-wide outputs, on a few images
    (7-14 %), and with few channels (up to 2x).
    """
    return ((g.stride > 1 or (itemsize == 4 and g.W_out < IM2ROW_MAX_WIDTH))
            and g.N * g.H_out * g.W_out >= IM2ROW_MIN_PIXELS and g.WW * g.C >= g.W_out * g.stride)


def preference(g: _checks.ConvGeometry, setting: str, have_cython: bool = HAVE_CYTHON,
               itemsize: int = 8) -> tuple:
    """The algorithms to try for layer ``g`` of ``itemsize``-byte elements under the ``conv_algorithm``
    setting, most preferred first.

    ``'im2col'``: im2col only. ``'im2row'``: im2row only. ``'pointwise'``: the 1x1 GEMMs where usable,
    then im2col. ``'winograd2'``, ``'winograd4'``: that Winograd,
    then im2col. ``'winograd'``: the Winograd with fewer multiplications for
    this output size (a tie goes to F(2x2, 3x3), the more accurate), the other,
    then im2col. ``'direct'``: the direct convolution where usable, then im2col.
    ``'auto'``: the 1x1 GEMMs for 1x1 layers without padding (with the compiled kernels, where
    :func:`prefers_pointwise`, else im2col); with the compiled kernels, the direct
    convolution where :func:`prefers_direct`; with the compiled kernels and at least
    :data:`WINOGRAD_MIN_CHANNELS` input and output channels, as ``'winograd'``
    but F(4x4) only on output maps of at least :data:`WINOGRAD4_MIN_SIZE` both
    ways; for the other layers, with the compiled kernels, im2row where
    :func:`prefers_im2row`, else im2col. ``'auto'`` also leaves Winograd out for a
    call of fewer than :data:`WINOGRAD_MIN_PIXELS` output pixels.
    """
    if setting == "im2col":
        return (IM2COL,)
    if setting == "im2row":
        return (IM2ROW,)
    if setting == "pointwise" or (setting == "auto" and POINTWISE.is_usable_for(g)):
        return (IM2COL,) if setting == "auto" and have_cython and not prefers_pointwise(g) else (POINTWISE, IM2COL)
    if setting == "direct" or (setting == "auto" and have_cython and prefers_direct(g, itemsize)):
        return (DIRECT, IM2COL)
    if setting == "winograd2":
        return (WINOGRAD2, IM2COL)
    if setting == "winograd4":
        return (WINOGRAD4, IM2COL)
    fallback = (IM2ROW, IM2COL) if setting == "auto" and have_cython and prefers_im2row(g, itemsize) else (IM2COL,)
    if setting == "auto" and not (have_cython and min(g.C, g.F) >= WINOGRAD_MIN_CHANNELS
                                  and g.N * g.H_out * g.W_out >= WINOGRAD_MIN_PIXELS):
        return fallback
    small = setting == "auto" and min(g.H_out, g.W_out) < WINOGRAD4_MIN_SIZE
    if WINOGRAD4.multiplies(g) < WINOGRAD2.multiplies(g) and not small:
        return (WINOGRAD4, WINOGRAD2) + fallback
    return (WINOGRAD2, WINOGRAD4) + fallback


def choose(g: _checks.ConvGeometry, setting: str, have_cython: bool = HAVE_CYTHON, itemsize: int = 8):
    """The first algorithm of :func:`preference` usable for layer ``g`` (im2col always is)."""
    return next(algo for algo in preference(g, setting, have_cython, itemsize) if algo.is_usable_for(g))


# (geometry, itemsize) -> _plan's answer, valid while the settings snapshot in it is the current one.
_PLANS: dict = {}
_PLANS_MAX = 4096


def _plan(g, itemsize):
    """(settings, algorithm, batch parts, limit BLAS) for one call: one snapshot of the settings decides all.

    For an algorithm that ``uses_blas``, BLAS runs on one thread when the batch
    is split (the parts are the parallelism) and for layers below the
    ``blas_threads_min_work`` setting (on a busy machine a descheduled BLAS
    thread stalls the GEMM); a large layer with fewer images than threads keeps
    BLAS's threads, its parallelism within the image.
    A layer called again under the same settings gets the same answer (a few us of a small layer's call).
    """
    s = _config.settings()
    known = _PLANS.get((g, itemsize))
    if known is not None and known[0] is s:
        return known
    parts = parallel.batch_parts(g, s)
    algo = choose(g, s.conv_algorithm, itemsize=itemsize)
    limit = algo.uses_blas and (len(parts) > 1 or (s.split_batch and parallel.small_for_blas_threads(g, s)))
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    plan = _PLANS[g, itemsize] = (s, algo, tuple(parts), limit)
    return plan


def _kept_operand(cache, algo, g, dtype) -> bool:
    """Whether the cache holds ``algo``'s forward operand for layer ``g`` as forward made it (the cache is a
    plain object a caller could have edited; the settings may have chosen another algorithm since)."""
    kept = cache.operand
    if not (type(kept) is tuple and len(kept) == 2 and kept[0] is algo):
        return False
    op = kept[1]
    return (type(op) is np.ndarray and op.dtype == dtype and op.flags.c_contiguous
            and op.shape == algo.operand_shape(g))


class FastConv:
    """2-D convolution (cross-correlation, as PyTorch's ``conv2d``) by im2col or im2row + GEMM, or Winograd."""

    @staticmethod
    def forward(x, w, b, conv_param):
        """Convolution forward pass; same contract as :meth:`convnet.layers.Conv.forward`.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W)
        w : ndarray of shape (F, C, HH, WW)
        b : ndarray of shape (F,)
        conv_param : dict
            ``'stride'`` : int >= 1, ``'pad'`` : int >= 0 (zero padding on every side).
            x, w and b share one dtype (float32 or float64).

        Returns
        -------
        out : ndarray of shape (N, F, H_out, W_out), x's dtype
            H_out and W_out as :meth:`convnet.layers.Conv.forward`.
        cache : ConvCache
            Accepted only by :meth:`FastConv.backward`.
        """
        g = _checks.conv_args(x, w, b, conv_param)
        cache = ConvCache(x, w, b, {"stride": g.stride, "pad": g.pad}, need_dx=not is_network_input(x))
        s, algo, parts, limit = _plan(g, x.itemsize)
        x = np.ascontiguousarray(x)
        bvec = np.ascontiguousarray(b)
        out = results.empty((g.N, g.F, g.H_out, g.W_out), x.dtype)
        share = min(s.num_threads, len(parts))
        # The filter transform's small GEMMs run under the parts' BLAS setting too: a second BLAS thread
        # stalls them whenever the machine is busy.
        with parallel.one_blas_thread(limit):
            operand = algo.filter_operand(np.ascontiguousarray(w), g, s)
            parallel.run_parts(lambda lo, hi: algo.forward(x, operand, bvec, out, g, lo, hi, share, s), parts,
                               workers=share - 1, limit_blas=False)
        if cache.need_dx and algo.operand_serves_backward:
            cache.operand = (algo, operand)
        return out, cache

    @staticmethod
    def backward(dout, cache):
        """Convolution backward pass.

        Parameters
        ----------
        dout : ndarray of shape (N, F, H_out, W_out), the forward pass's dtype
        cache : ConvCache
            What :meth:`FastConv.forward` returned.

        Returns
        -------
        dx : ndarray of shape (N, C, H, W), or None
            None when forward's x was a network's input marked by
            :func:`convnet.fast.network_input` (nothing needs its gradient).
        dw : ndarray of shape (F, C, HH, WW)
        db : ndarray of shape (F,)
        """
        cache = check_fast_cache(cache, ConvCache, "FastConv")
        x, w, b = cache.x, cache.w, cache.b
        # Re-validate: the cache is a plain object a caller could have edited.
        g = _checks.conv_args(x, w, b, cache.conv_param)
        dout = _checks.check_dout(dout, (g.N, g.F, g.H_out, g.W_out), x.dtype, "FastConv")
        s, algo, parts, limit = _plan(g, x.itemsize)
        x = np.ascontiguousarray(x)
        dout = np.ascontiguousarray(dout)
        dx = results.empty(x.shape, x.dtype) if cache.need_dx else None

        share = min(s.num_threads, len(parts))

        def part(lo, hi):
            # Each part sums its own images' dout for db: less serial work on the calling thread.
            return list(algo.backward(x, operand, dout, dx, g, lo, hi, share, s))

        def fold(acc, r):
            acc[0] += r[0]
            acc[1] += r[1]
            return acc

        with parallel.one_blas_thread(limit):  # as in forward
            if _kept_operand(cache, algo, g, x.dtype):
                operand = cache.operand[1]
            elif dx is None and algo.operand_only_for_dx:
                operand = None
            else:
                operand = algo.backward_operand(np.ascontiguousarray(w), g, s)
            # Folded in part order: the same sums whichever thread ran which part.
            dw, db = parallel.run_parts(part, parts, workers=share - 1, fold=fold, limit_blas=False)
            dw = algo.filter_gradient(dw, w.shape, s)
        return dx, dw, db.astype(x.dtype)
