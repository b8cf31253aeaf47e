"""FastReLUMaxPool: ReLU then max pooling, computed as max pooling then ReLU on the 4x smaller output.

ReLU is monotone, so ``maxpool(relu(x)) = relu(maxpool(x))``, and the gradient
agrees too: where a window's maximum is positive both orders send dout to
its first maximum, elsewhere both send nothing. The ReLU's pass and array
then cover the pooled output only.

Not part of the student starter (whose sandwiches use the student's ReLU);
:mod:`convnet.sandwich` falls back to ReLU and FastMaxPool where it is absent.
"""
from __future__ import annotations

import numpy as np

from convnet import _checks
from convnet.fast._caches import MaxPoolCache, _FastCache, check_fast_cache
from convnet.fast.pool import FastMaxPool

__all__ = ["FastReLUMaxPool"]


class ReLUMaxPoolCache(_FastCache):
    """The max pool's cache and the (ReLU'd) output, whose zeros mask dout."""

    __slots__ = ("pool", "out")

    def __init__(self, pool, out):
        self.layer = "FastReLUMaxPool"
        self.pool, self.out = pool, out


class FastReLUMaxPool:
    """``maxpool(relu(x))``; arguments and results as :class:`~convnet.fast.FastMaxPool`."""

    @staticmethod
    def forward(x, pool_param):
        """ReLU and max-pool forward pass.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W), float32 or float64
        pool_param : dict
            As :meth:`convnet.fast.FastMaxPool.forward`.

        Returns
        -------
        out : ndarray of shape (N, C, H_out, W_out)
        cache : ReLUMaxPoolCache
            Accepted only by :meth:`FastReLUMaxPool.backward`.
        """
        out, cache = FastMaxPool.forward(x, pool_param)
        np.maximum(out, 0, out=out)
        return out, ReLUMaxPoolCache(cache, out)

    @staticmethod
    def backward(dout, cache):
        """dx (N, C, H, W): dout goes to each window's first maximum where that maximum is positive."""
        cache = check_fast_cache(cache, ReLUMaxPoolCache, "FastReLUMaxPool")
        if not isinstance(cache.pool, MaxPoolCache) or not isinstance(cache.out, np.ndarray):
            raise TypeError("FastReLUMaxPool.backward: the cache was modified; pass the one forward returned")
        dout = _checks.check_dout(dout, cache.out.shape, cache.out.dtype, "FastReLUMaxPool")
        return FastMaxPool.backward(np.where(cache.out > 0, dout, dout.dtype.type(0)), cache.pool)
