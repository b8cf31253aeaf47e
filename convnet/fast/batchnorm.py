"""FastSpatialBatchNorm and FastSpatialBatchNormReLU: spatial batch norm in two passes over NCHW data.

The naive :class:`convnet.layers.SpatialBatchNorm` moves the channels last and
calls :class:`~convnet.layers.BatchNorm`, several passes and temporaries; here
the forward pass reads x once for the per-channel statistics and once more to
write the output, and the backward pass reads (x, dout) once for two sums per
channel and once more to write dx, on the NCHW layout as it lies.
``FastSpatialBatchNormReLU`` applies the ReLU that follows in the same
passes (its backward masks dout where the output was zero, recomputed from x),
saving the ReLU layer's own pass and array each way.

Not part of the student starter (the release leaves this module and its kernel
out: they hold the batch-norm backward); :mod:`convnet.sandwich` falls back to
the naive layers when this module is absent.
"""
from __future__ import annotations

import numpy as np

from convnet import _checks
from convnet.fast import _backend, _config, parallel, results
from convnet.fast._caches import _FastCache, check_fast_cache

__all__ = ["FastSpatialBatchNorm", "FastSpatialBatchNormReLU", "HAVE_KERNELS"]

IMPORT_ERROR = None
if _backend.HAVE_CYTHON:
    try:
        _kernels = _backend.kernel_module("_batchnorm")  # the CPU variant the other kernels use
        bn_affine, bn_dx, bn_grad_sums, bn_stats = (_kernels.bn_affine, _kernels.bn_dx, _kernels.bn_grad_sums,
                                                    _kernels.bn_stats)
    except ImportError as exc:  # the extension was not built
        IMPORT_ERROR = exc
HAVE_KERNELS = _backend.HAVE_CYTHON and IMPORT_ERROR is None
if not HAVE_KERNELS:
    if _config.REQUIRE_CYTHON and not _config.PUREPYTHON:
        raise ImportError(f"CONVNET_REQUIRE_CYTHON=1 but convnet._fast._batchnorm cannot be imported "
                          f"({IMPORT_ERROR}); build it with `python setup.py build_ext --inplace`")

    # The numpy twins of the kernels: same arguments, same outputs, nthreads ignored.
    def bn_stats(x, mean, var, c0, c1, nthreads=1):
        mean[c0:c1] = x[:, c0:c1].mean(axis=(0, 2), dtype=np.float64)
        var[c0:c1] = x[:, c0:c1].var(axis=(0, 2), dtype=np.float64)

    def bn_affine(x, y, scale, shift, relu, c0, c1, nthreads=1):
        x = x[:, c0:c1]
        z = x * scale[c0:c1].astype(x.dtype)[:, None] + shift[c0:c1].astype(x.dtype)[:, None]
        y[:, c0:c1] = np.maximum(z, 0) if relu else z

    def _dy(x, dout, scale, shift, relu):
        if not relu:
            return dout
        return np.where(x * scale.astype(x.dtype)[:, None] + shift.astype(x.dtype)[:, None] > 0, dout, 0)

    def bn_grad_sums(x, dout, scale, shift, mean, relu, sdy, sdyx, c0, c1, nthreads=1):
        x, dout, scale, shift, mean = x[:, c0:c1], dout[:, c0:c1], scale[c0:c1], shift[c0:c1], mean[c0:c1]
        dy = _dy(x, dout, scale, shift, relu)
        sdy[c0:c1] = dy.sum(axis=(0, 2), dtype=np.float64)
        sdyx[c0:c1] = (dy * (x - mean.astype(x.dtype)[:, None])).sum(axis=(0, 2), dtype=np.float64)

    def bn_dx(x, dout, dx, scale, shift, mean, k1, k2, g, relu, c0, c1, nthreads=1):
        c = slice(c0, c1)
        dy = _dy(x[:, c], dout[:, c], scale[c], shift[c], relu)
        t = x.dtype.type
        dx[:, c] = (g[c].astype(t)[:, None] * dy - k1[c].astype(t)[:, None]
                    - k2[c].astype(t)[:, None] * (x[:, c] - mean[c].astype(t)[:, None]))


class SpatialBatchNormCache(_FastCache):
    """What the fast spatial batch norm's forward keeps: x, gamma and the per-channel float64 statistics."""

    __slots__ = ("x", "gamma", "mean", "invstd", "scale", "shift", "mode", "relu")

    def __init__(self, layer, x, gamma, mean, invstd, scale, shift, mode, relu):
        self.layer = layer
        self.x, self.gamma, self.mean, self.invstd = x, gamma, mean, invstd
        self.scale, self.shift, self.mode, self.relu = scale, shift, mode, relu


def _forward(x, gamma, beta, bn_param, relu, layer):
    p = _checks.batchnorm_args(x, gamma, beta, bn_param, spatial=True)
    N, C, H, W = x.shape
    eps, momentum, mode = p["eps"], p["momentum"], p["mode"]
    running_mean = p.get("running_mean")
    running_var = p.get("running_var")
    running_mean = np.zeros(C, dtype=x.dtype) if running_mean is None else running_mean
    running_var = np.zeros(C, dtype=x.dtype) if running_var is None else running_var
    xc = np.ascontiguousarray(x).reshape(N, C, H * W)
    s = _config.settings()
    if mode == "train":
        mean = np.empty(C)
        var = np.empty(C)
        parallel.run_split(lambda c0, c1: bn_stats(xc, mean, var, c0, c1), C, parallel.traffic(x), s)
        # The naive layer's update, in x's dtype.
        bn_param["running_mean"] = np.asarray(momentum * running_mean + (1 - momentum) * mean.astype(x.dtype),
                                              dtype=x.dtype)
        bn_param["running_var"] = np.asarray(momentum * running_var + (1 - momentum) * var.astype(x.dtype),
                                             dtype=x.dtype)
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
        bn_param["running_mean"] = np.asarray(running_mean, dtype=x.dtype)
        bn_param["running_var"] = np.asarray(running_var, dtype=x.dtype)
    invstd = 1.0 / np.sqrt(var + eps)
    scale = gamma.astype(np.float64) * invstd
    shift = beta.astype(np.float64) - mean * scale
    out = results.empty(xc.shape, xc.dtype)
    parallel.run_split(lambda c0, c1: bn_affine(xc, out, scale, shift, relu, c0, c1), C, parallel.traffic(x), s)
    cache = SpatialBatchNormCache(layer, x, gamma, mean, invstd, scale, shift, mode, relu)
    return out.reshape(N, C, H, W), cache


def _backward(dout, cache, relu, layer, cls):
    cache = check_fast_cache(cache, cls, layer)
    if cache.layer != layer:
        raise TypeError(f"{layer}.backward got a cache made by {cache.layer}.forward; pass it to {cache.layer}.backward")
    x = cache.x
    _checks.check_array("x", x, 4)
    dout = _checks.check_dout(dout, x.shape, x.dtype, layer)
    N, C, H, W = x.shape
    M = N * H * W
    xc = np.ascontiguousarray(x).reshape(N, C, H * W)
    dc = np.ascontiguousarray(dout).reshape(N, C, H * W)
    s = _config.settings()
    sdy = np.empty(C)
    sdyx = np.empty(C)
    parallel.run_split(lambda c0, c1: bn_grad_sums(xc, dc, cache.scale, cache.shift, cache.mean, relu, sdy, sdyx,
                                                   c0, c1), C, parallel.traffic(x), s)
    g = cache.scale
    if cache.mode == "train":
        k1 = g * sdy / M
        k2 = g * cache.invstd ** 2 * sdyx / M
    else:
        k1 = k2 = np.zeros(C)
    dx = results.empty(xc.shape, xc.dtype)
    parallel.run_split(lambda c0, c1: bn_dx(xc, dc, dx, cache.scale, cache.shift, cache.mean, k1, k2, g, relu,
                                            c0, c1), C, parallel.traffic(x), s)
    dt = x.dtype
    return dx.reshape(N, C, H, W), (cache.invstd * sdyx).astype(dt), sdy.astype(dt)


class FastSpatialBatchNorm:
    """Spatial batch norm in two passes each way; same contract as :class:`convnet.layers.SpatialBatchNorm`."""

    @staticmethod
    def forward(x, gamma, beta, bn_param):
        """Spatial batch-norm forward pass.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W), float32 or float64
        gamma, beta : ndarray of shape (C,), x's dtype
        bn_param : dict
            As :meth:`convnet.layers.BatchNorm.forward` (``'mode'``, ``'eps'``,
            ``'momentum'``, ``'running_mean'``, ``'running_var'``); the running
            statistics (C,) are replaced in the dict as the naive layer does.

        Returns
        -------
        out : ndarray of shape (N, C, H, W)
        cache : SpatialBatchNormCache
            Accepted only by :meth:`FastSpatialBatchNorm.backward`.
        """
        return _forward(x, gamma, beta, bn_param, False, "FastSpatialBatchNorm")

    @staticmethod
    def backward(dout, cache):
        """Spatial batch-norm backward pass: dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
        return _backward(dout, cache, False, "FastSpatialBatchNorm", SpatialBatchNormCache)


class FastSpatialBatchNormReLU:
    """Spatial batch norm followed by ReLU, in the same two passes each way."""

    @staticmethod
    def forward(x, gamma, beta, bn_param):
        """``max(SpatialBatchNorm(x), 0)``; arguments as :meth:`FastSpatialBatchNorm.forward`.

        Returns
        -------
        out : ndarray of shape (N, C, H, W)
        cache : SpatialBatchNormCache
            Accepted only by :meth:`FastSpatialBatchNormReLU.backward`.
        """
        return _forward(x, gamma, beta, bn_param, True, "FastSpatialBatchNormReLU")

    @staticmethod
    def backward(dout, cache):
        """dx (N, C, H, W), dgamma (C,), dbeta (C,); dout flows where the output was positive (as ReLU)."""
        return _backward(dout, cache, True, "FastSpatialBatchNormReLU", SpatialBatchNormCache)
