"""FastMaxPool and FastAvgPool: direct loops over the N*C planes, split across threads.

A pooling layer splits its planes across ``num_threads`` threads when its
input has at least ``parallel_min_work`` elements (float64 ones count twice in
max pooling's forward pass, which does the most work per byte)
(:func:`convnet.fast.parallel.run_planes`); each kernel call runs on one thread.
Max pooling keeps the flat index ``h*W + w`` of each window's first maximum
(row-major, as PyTorch; a NaN wins its window) for the backward pass.
"""
from __future__ import annotations

import numpy as np

from convnet import _checks
from convnet.fast import _backend, _config, parallel, results
from convnet.fast._caches import AvgPoolCache, MaxPoolCache, check_fast_cache

__all__ = ["FastMaxPool", "FastAvgPool"]


def _check_plane(g, layer):
    if g.H * g.W >= 2**31:
        raise ValueError(f"{layer}: an input plane of {g.H}x{g.W} elements is too large "
                         f"for int32 argmax indices")


def _params(g):
    return {"pool_height": g.pool_height, "pool_width": g.pool_width, "stride": g.stride, "pad": g.pad}


class FastMaxPool:
    """Max pooling by direct loops; any window, stride and padding (padding is -inf)."""

    @staticmethod
    def forward(x, pool_param):
        """Max-pool forward pass; same contract as :meth:`convnet.layers.MaxPool.forward`.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W), float32 or float64
        pool_param : dict
            ``'pool_height'``, ``'pool_width'``, ``'stride'`` : int >= 1;
            ``'pad'`` : int, optional, default 0, at most half the window
            (implicit -inf padding, as PyTorch's ``max_pool2d``).

        Returns
        -------
        out : ndarray of shape (N, C, H_out, W_out), x's dtype
        cache : MaxPoolCache
            Holds the flat index ``h*W + w`` of each window's first maximum in
            row-major order; accepted only by :meth:`FastMaxPool.backward`.
        """
        g = _checks.pool_args(x, pool_param, "FastMaxPool")
        _check_plane(g, "FastMaxPool")
        xc = np.ascontiguousarray(x)
        out = results.empty((g.N, g.C, g.H_out, g.W_out), x.dtype)
        argmax = results.empty((g.N, g.C, g.H_out, g.W_out), np.int32)
        planes = g.N * g.C
        x3, o3 = xc.reshape(planes, g.H, g.W), out.reshape(planes, g.H_out, g.W_out)
        a3 = argmax.reshape(planes, g.H_out, g.W_out)
        parallel.run_planes(_backend.maxpool_forward, (x3, o3, a3), (g.pool_height, g.pool_width, g.stride, g.pad),
                            parallel.traffic(x), _config.settings())
        return out, MaxPoolCache(x, _params(g), argmax)

    @staticmethod
    def backward(dout, cache):
        """Max-pool backward pass: each window's gradient goes to its first maximum; overlaps add up.

        Parameters
        ----------
        dout : ndarray of shape (N, C, H_out, W_out), the forward pass's dtype
        cache : MaxPoolCache
            What :meth:`FastMaxPool.forward` returned.

        Returns
        -------
        dx : ndarray of shape (N, C, H, W)
        """
        cache = check_fast_cache(cache, MaxPoolCache, "FastMaxPool")
        g = _checks.pool_args(cache.x, cache.pool_param, "FastMaxPool")
        _check_plane(g, "FastMaxPool")
        shape = (g.N, g.C, g.H_out, g.W_out)
        dout = _checks.check_dout(dout, shape, cache.x.dtype, "FastMaxPool")
        argmax = cache.argmax
        # The kernel writes dx at these indices: check them, the cache may have been edited.
        if not isinstance(argmax, np.ndarray) or argmax.dtype != np.int32 or argmax.shape != shape:
            raise ValueError(f"FastMaxPool: the cache's argmax must be an int32 array of shape {shape}; "
                             "pass the cache FastMaxPool.forward returned, unmodified")
        # The indices the kernel reads: negative ones read as 2**31 and above, so one pass checks both bounds.
        argmax = np.ascontiguousarray(argmax)
        if _backend.index_bound(argmax.reshape(-1)) >= g.H * g.W:
            lo, hi = int(argmax.min()), int(argmax.max())
            raise ValueError(f"FastMaxPool: the cache's argmax holds indices in [{lo}, {hi}], outside "
                             f"[0, {g.H * g.W}) for {g.H}x{g.W} planes; the cache was modified")
        dout = np.ascontiguousarray(dout)
        # dx is overwritten: the kernel zeroes each plane just before scattering into it.
        dx = results.empty((g.N, g.C, g.H, g.W), dout.dtype)
        planes = g.N * g.C
        d2, a2 = dout.reshape(planes, g.H_out * g.W_out), argmax.reshape(planes, g.H_out * g.W_out)
        dx2 = dx.reshape(planes, g.H * g.W)
        parallel.run_planes(_backend.maxpool_backward, (d2, a2, dx2), (), dx.size, _config.settings())
        return dx


class FastAvgPool:
    """Average pooling by direct loops; zero padding counts in the divisor (PyTorch's default)."""

    @staticmethod
    def forward(x, pool_param):
        """Average-pool forward pass; same contract as :meth:`convnet.layers.AvgPool.forward`.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W), float32 or float64
        pool_param : dict
            As :meth:`FastMaxPool.forward`; padding is zeros and every window
            divides by ``pool_height * pool_width`` (``count_include_pad=True``).

        Returns
        -------
        out : ndarray of shape (N, C, H_out, W_out), x's dtype
        cache : AvgPoolCache
            Accepted only by :meth:`FastAvgPool.backward`.
        """
        g = _checks.pool_args(x, pool_param, "FastAvgPool")
        xc = np.ascontiguousarray(x)
        out = results.empty((g.N, g.C, g.H_out, g.W_out), x.dtype)
        planes = g.N * g.C
        x3, o3 = xc.reshape(planes, g.H, g.W), out.reshape(planes, g.H_out, g.W_out)
        parallel.run_planes(_backend.avgpool_forward, (x3, o3), (g.pool_height, g.pool_width, g.stride, g.pad),
                            x.size, _config.settings())
        return out, AvgPoolCache(x, _params(g))

    @staticmethod
    def backward(dout, cache):
        """Average-pool backward pass: each window spreads ``dout / (ph * pw)``; overlaps add up.

        Parameters
        ----------
        dout : ndarray of shape (N, C, H_out, W_out), the forward pass's dtype
        cache : AvgPoolCache
            What :meth:`FastAvgPool.forward` returned.

        Returns
        -------
        dx : ndarray of shape (N, C, H, W)
        """
        cache = check_fast_cache(cache, AvgPoolCache, "FastAvgPool")
        g = _checks.pool_args(cache.x, cache.pool_param, "FastAvgPool")
        dout = _checks.check_dout(dout, (g.N, g.C, g.H_out, g.W_out), cache.x.dtype, "FastAvgPool")
        dout = np.ascontiguousarray(dout)
        dx = results.empty((g.N, g.C, g.H, g.W), dout.dtype)
        planes = g.N * g.C
        d3, dx3 = dout.reshape(planes, g.H_out, g.W_out), dx.reshape(planes, g.H, g.W)
        parallel.run_planes(_backend.avgpool_backward, (d3, dx3), (g.pool_height, g.pool_width, g.stride, g.pad),
                            dx.size, _config.settings())
        return dx
