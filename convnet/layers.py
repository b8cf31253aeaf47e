"""Naive reference layers of EECS 498 assignment 3, on numpy.

Every layer is a class with static ``forward`` and ``backward``:
``forward(...)`` returns ``(out, cache)`` and ``backward(dout, cache)`` returns
the gradients in the order of ``forward``'s array arguments.

``Conv``, ``MaxPool`` and ``AvgPool`` loop over output positions in Python,
as the assignment teaches; they are the reference the students reproduce and
the baseline of the fast path (:mod:`convnet.fast`). The other layers are
vectorised.

Validation lives in :mod:`convnet._checks` and runs outside the solution
regions, so a student starter validates exactly like the reference.
"""
from __future__ import annotations

import numpy as np

from convnet import _checks, correlate

__all__ = ["Linear", "ReLU", "Conv", "MaxPool", "AvgPool", "BatchNorm", "SpatialBatchNorm", "Dropout"]


class Linear:
    """Fully connected layer ``out = x.reshape(N, D) @ w + b``."""

    @staticmethod
    def forward(x, w, b):
        """Affine forward pass.

        Parameters
        ----------
        x : ndarray of shape (N, d_1, ..., d_k)
            Input minibatch; each example is flattened to ``D = d_1 * ... * d_k`` features.
        w : ndarray of shape (D, M)
            Weights.
        b : ndarray of shape (M,)
            Biases.

        Returns
        -------
        out : ndarray of shape (N, M)
        cache : tuple ``(x, w, b)``
        """
        _checks.linear_args(x, w, b)
        # BEGIN SOLUTION
        out = x.reshape(x.shape[0], -1) @ w + b
        # END SOLUTION
        cache = (x, w, b)
        return out, cache

    @staticmethod
    def backward(dout, cache):
        """Affine backward pass.

        Parameters
        ----------
        dout : ndarray of shape (N, M)
            Upstream gradient.
        cache : tuple
            What :meth:`Linear.forward` returned.

        Returns
        -------
        dx : ndarray of shape (N, d_1, ..., d_k)
        dw : ndarray of shape (D, M)
        db : ndarray of shape (M,)
        """
        x, w, b = _checks.check_cache(cache, 3, "Linear")
        N, D, M = _checks.linear_args(x, w, b)
        _checks.check_dout(dout, (N, M), x.dtype, "Linear")
        # BEGIN SOLUTION
        dx = (dout @ w.T).reshape(x.shape)
        dw = x.reshape(N, D).T @ dout
        db = dout.sum(axis=0)
        # END SOLUTION
        return dx, dw, db


class ReLU:
    """Rectified linear unit ``out = max(x, 0)``."""

    @staticmethod
    def forward(x):
        """ReLU forward pass.

        Parameters
        ----------
        x : ndarray of any shape

        Returns
        -------
        out : ndarray of x's shape and dtype
        cache : tuple ``(x,)``
        """
        _checks.check_array("x", x)
        # BEGIN SOLUTION
        out = np.maximum(x, 0)
        # END SOLUTION
        cache = (x,)
        return out, cache

    @staticmethod
    def backward(dout, cache):
        """ReLU backward pass: the gradient flows where ``x > 0`` (zero at ``x == 0``, as PyTorch).

        Returns
        -------
        dx : ndarray of x's shape
        """
        (x,) = _checks.check_cache(cache, 1, "ReLU")
        _checks.check_dout(dout, x.shape, x.dtype, "ReLU")
        # BEGIN SOLUTION
        dx = dout * (x > 0)
        # END SOLUTION
        return dx


class Conv:
    """2-D convolution (cross-correlation, as PyTorch's ``conv2d``) with naive loops."""

    @staticmethod
    def forward(x, w, b, conv_param):
        """Convolution forward pass.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W)
        w : ndarray of shape (F, C, HH, WW)
            Filters; HH and WW may differ.
        b : ndarray of shape (F,)
        conv_param : dict
            ``'stride'`` : int >= 1, ``'pad'`` : int >= 0 (zero padding on every side).

        Returns
        -------
        out : ndarray of shape (N, F, H_out, W_out)
            ``H_out = 1 + (H + 2*pad - HH) // stride``, ``W_out = 1 + (W + 2*pad - WW) // stride``.
        cache : tuple ``(x, w, b, conv_param)``
        """
        g = _checks.conv_args(x, w, b, conv_param)
        # BEGIN SOLUTION
        s, p = g.stride, g.pad
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        out = np.empty((g.N, g.F, g.H_out, g.W_out), dtype=x.dtype)
        for n in range(g.N):
            for f in range(g.F):
                for i in range(g.H_out):
                    for j in range(g.W_out):
                        window = xp[n, :, i * s:i * s + g.HH, j * s:j * s + g.WW]
                        out[n, f, i, j] = np.sum(window * w[f]) + b[f]
        # END SOLUTION
        cache = (x, w, b, conv_param)
        return out, cache

    @staticmethod
    def _unpack(dout, cache):
        """Validate the cache and dout (shared by both backward passes); returns x, w and the geometry."""
        x, w, b, conv_param = _checks.check_cache(cache, 4, "Conv")
        g = _checks.conv_args(x, w, b, conv_param)
        _checks.check_dout(dout, (g.N, g.F, g.H_out, g.W_out), x.dtype, "Conv")
        return x, w, g

    @staticmethod
    def backward(dout, cache):
        """Convolution backward pass.

        Parameters
        ----------
        dout : ndarray of shape (N, F, H_out, W_out)
        cache : tuple
            What :meth:`Conv.forward` returned.

        Returns
        -------
        dx : ndarray of shape (N, C, H, W)
        dw : ndarray of shape (F, C, HH, WW)
        db : ndarray of shape (F,)
        """
        x, w, g = Conv._unpack(dout, cache)
        # BEGIN SOLUTION
        s, p = g.stride, g.pad
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        dxp = np.zeros_like(xp)
        dw = np.zeros_like(w)
        db = dout.sum(axis=(0, 2, 3))
        for n in range(g.N):
            for f in range(g.F):
                for i in range(g.H_out):
                    for j in range(g.W_out):
                        # Each output spreads its gradient over the window it read (the "spray" view of conv backward).
                        hs, ws = i * s, j * s
                        d = dout[n, f, i, j]
                        dw[f] += d * xp[n, :, hs:hs + g.HH, ws:ws + g.WW]
                        dxp[n, :, hs:hs + g.HH, ws:ws + g.WW] += d * w[f]
        dx = dxp[:, :, p:p + g.H, p:p + g.W].copy()
        # END SOLUTION
        return dx, dw, db

    @staticmethod
    def backward_alt(dout, cache):
        """Convolution backward pass through the zero-inserted gradient, vectorised.

        A stride-s output is the stride-1 output read every s positions, so
        ``dout`` with s - 1 zeros inserted between its entries (and zeros in the
        last rows and columns no window reads) is the gradient of that stride-1
        output, of size ``(H + 2*pad - HH + 1, W + 2*pad - WW + 1)``. Then

        - ``dx`` is its full correlation with the filters rotated by 180 degrees,
          cropped by ``pad`` on every side;
        - ``dw`` is the valid correlation of the padded input with it;
        - ``db`` is the sum of ``dout``.

        The building blocks are in :mod:`convnet.correlate` (``dilate``,
        ``rot180``, ``correlate2d``, ``full_correlate2d``); mind which axes play
        the batch, the channels and the filters in each correlation.

        Parameters
        ----------
        dout : ndarray of shape (N, F, H_out, W_out)
        cache : tuple
            What :meth:`Conv.forward` returned.

        Returns
        -------
        dx : ndarray of shape (N, C, H, W)
        dw : ndarray of shape (F, C, HH, WW)
        db : ndarray of shape (F,)
            The same values as :meth:`backward`.
        """
        x, w, g = Conv._unpack(dout, cache)
        # BEGIN SOLUTION
        p = g.pad
        d = correlate.dilate(dout, g.stride, size=(g.H + 2 * p - g.HH + 1, g.W + 2 * p - g.WW + 1))
        # The filters' C axis becomes the output channels of dx's correlation, F its input channels.
        dxp = correlate.full_correlate2d(d, correlate.rot180(w).transpose(1, 0, 2, 3))
        dx = dxp[:, :, p:p + g.H, p:p + g.W].copy()
        # The batch axis is summed over: it becomes the channel axis of both operands.
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))).transpose(1, 0, 2, 3)
        dw = np.ascontiguousarray(correlate.correlate2d(xp, d.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3))
        db = np.sum(dout, axis=(0, 2, 3))
        # END SOLUTION
        return dx, dw, db


class MaxPool:
    """Max pooling with naive loops; any window, stride and padding (padding is -inf)."""

    @staticmethod
    def forward(x, pool_param):
        """Max-pool forward pass.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W)
        pool_param : dict
            ``'pool_height'``, ``'pool_width'``, ``'stride'`` : int >= 1;
            ``'pad'`` : int, optional, default 0, at most half the window on each axis
            (implicit -inf padding, as PyTorch's ``max_pool2d``).

        Returns
        -------
        out : ndarray of shape (N, C, H_out, W_out)
            ``H_out = 1 + (H + 2*pad - pool_height) // stride``, likewise W_out.
        cache : tuple ``(x, pool_param)``
        """
        g = _checks.pool_args(x, pool_param, "MaxPool")
        # BEGIN SOLUTION
        s, p = g.stride, g.pad
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
        out = np.empty((g.N, g.C, g.H_out, g.W_out), dtype=x.dtype)
        for n in range(g.N):
            for c in range(g.C):
                for i in range(g.H_out):
                    for j in range(g.W_out):
                        out[n, c, i, j] = xp[n, c, i * s:i * s + g.pool_height, j * s:j * s + g.pool_width].max()
        # END SOLUTION
        cache = (x, pool_param)
        return out, cache

    @staticmethod
    def backward(dout, cache):
        """Max-pool backward pass.

        Each window sends its gradient to its first maximum in row-major order
        (PyTorch's convention); where windows overlap the gradients add up.

        Returns
        -------
        dx : ndarray of shape (N, C, H, W)
        """
        x, pool_param = _checks.check_cache(cache, 2, "MaxPool")
        g = _checks.pool_args(x, pool_param, "MaxPool")
        _checks.check_dout(dout, (g.N, g.C, g.H_out, g.W_out), x.dtype, "MaxPool")
        # BEGIN SOLUTION
        s, p = g.stride, g.pad
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
        dxp = np.zeros_like(xp)
        for n in range(g.N):
            for c in range(g.C):
                for i in range(g.H_out):
                    for j in range(g.W_out):
                        window = xp[n, c, i * s:i * s + g.pool_height, j * s:j * s + g.pool_width]
                        a, bb = np.unravel_index(np.argmax(window), window.shape)
                        dxp[n, c, i * s + a, j * s + bb] += dout[n, c, i, j]
        dx = dxp[:, :, p:p + g.H, p:p + g.W].copy()
        # END SOLUTION
        return dx


class AvgPool:
    """Average pooling with naive loops; zero padding counts in the divisor (PyTorch's default)."""

    @staticmethod
    def forward(x, pool_param):
        """Average-pool forward pass.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W)
        pool_param : dict
            As :meth:`MaxPool.forward`; padding is zeros and every window divides
            by ``pool_height * pool_width`` (``count_include_pad=True``).

        Returns
        -------
        out : ndarray of shape (N, C, H_out, W_out)
        cache : tuple ``(x, pool_param)``
        """
        g = _checks.pool_args(x, pool_param, "AvgPool")
        # BEGIN SOLUTION
        s, p = g.stride, g.pad
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        out = np.empty((g.N, g.C, g.H_out, g.W_out), dtype=x.dtype)
        for n in range(g.N):
            for c in range(g.C):
                for i in range(g.H_out):
                    for j in range(g.W_out):
                        out[n, c, i, j] = xp[n, c, i * s:i * s + g.pool_height, j * s:j * s + g.pool_width].mean()
        # END SOLUTION
        cache = (x, pool_param)
        return out, cache

    @staticmethod
    def backward(dout, cache):
        """Average-pool backward pass: each window spreads ``dout / (ph * pw)`` evenly; overlaps add up.

        Returns
        -------
        dx : ndarray of shape (N, C, H, W)
        """
        x, pool_param = _checks.check_cache(cache, 2, "AvgPool")
        g = _checks.pool_args(x, pool_param, "AvgPool")
        _checks.check_dout(dout, (g.N, g.C, g.H_out, g.W_out), x.dtype, "AvgPool")
        # BEGIN SOLUTION
        s, p = g.stride, g.pad
        ph, pw = g.pool_height, g.pool_width
        dxp = np.zeros((g.N, g.C, g.H + 2 * p, g.W + 2 * p), dtype=x.dtype)
        scale = x.dtype.type(1.0 / (ph * pw))
        for n in range(g.N):
            for c in range(g.C):
                for i in range(g.H_out):
                    for j in range(g.W_out):
                        dxp[n, c, i * s:i * s + ph, j * s:j * s + pw] += dout[n, c, i, j] * scale
        dx = dxp[:, :, p:p + g.H, p:p + g.W].copy()
        # END SOLUTION
        return dx


class BatchNorm:
    """Batch normalisation over the batch axis of (N, D) inputs."""

    @staticmethod
    def forward(x, gamma, beta, bn_param):
        """Batch-norm forward pass.

        In ``'train'`` mode the batch mean and biased variance normalise ``x`` and
        update ``bn_param['running_mean']`` / ``['running_var']`` as
        ``running = momentum * running + (1 - momentum) * batch`` (zeros at first).
        In ``'test'`` mode the running statistics normalise ``x``.

        Parameters
        ----------
        x : ndarray of shape (N, D)
        gamma : ndarray of shape (D,)
            Scale.
        beta : ndarray of shape (D,)
            Shift.
        bn_param : dict
            ``'mode'`` : 'train' or 'test' (required); ``'eps'`` : float > 0, default 1e-5;
            ``'momentum'`` : float in [0, 1], default 0.9; ``'running_mean'``, ``'running_var'`` :
            ndarray of shape (D,), created as zeros when absent and updated in place of the dict.

        Returns
        -------
        out : ndarray of shape (N, D)
        cache : tuple ``(x, gamma, mean, var, eps, mode)``
            ``mean`` and ``var`` are the statistics that normalised ``x``.
        """
        p = _checks.batchnorm_args(x, gamma, beta, bn_param)
        D = x.shape[1]
        eps, momentum, mode = p["eps"], p["momentum"], p["mode"]
        running_mean = p.get("running_mean")
        running_var = p.get("running_var")
        running_mean = np.zeros(D, dtype=x.dtype) if running_mean is None else running_mean
        running_var = np.zeros(D, dtype=x.dtype) if running_var is None else running_var
        # BEGIN SOLUTION
        if mode == "train":
            mean = x.mean(axis=0)
            var = x.var(axis=0)
            running_mean = momentum * running_mean + (1 - momentum) * mean
            running_var = momentum * running_var + (1 - momentum) * var
        else:
            mean, var = running_mean, running_var
        out = gamma * (x - mean) / np.sqrt(var + eps) + beta
        # END SOLUTION
        bn_param["running_mean"] = np.asarray(running_mean, dtype=x.dtype)
        bn_param["running_var"] = np.asarray(running_var, dtype=x.dtype)
        cache = (x, gamma, np.asarray(mean, dtype=x.dtype), np.asarray(var, dtype=x.dtype), eps, mode)
        return out.astype(x.dtype, copy=False), cache

    @staticmethod
    def _unpack(dout, cache, layer="BatchNorm"):
        x, gamma, mean, var, eps, mode = _checks.check_cache(cache, 6, layer)
        _checks.check_dout(dout, x.shape, x.dtype, layer)
        return x, gamma, mean, var, eps, mode

    @staticmethod
    def backward(dout, cache):
        """Batch-norm backward pass, through the computation graph step by step.

        Parameters
        ----------
        dout : ndarray of shape (N, D)
        cache : tuple
            What :meth:`BatchNorm.forward` returned.

        Returns
        -------
        dx : ndarray of shape (N, D)
        dgamma : ndarray of shape (D,)
        dbeta : ndarray of shape (D,)
        """
        x, gamma, mean, var, eps, mode = BatchNorm._unpack(dout, cache)
        # BEGIN SOLUTION
        N = x.shape[0]
        xc = x - mean
        std = np.sqrt(var + eps)
        xhat = xc / std
        dbeta = dout.sum(axis=0)
        dgamma = (dout * xhat).sum(axis=0)
        dxhat = dout * gamma
        if mode == "test":
            dx = dxhat / std
        else:
            dstd = -(dxhat * xc).sum(axis=0) / std ** 2
            dvar = dstd / (2 * std)
            dxc = dxhat / std + 2 * xc * dvar / N
            dx = dxc - dxc.sum(axis=0) / N
        # END SOLUTION
        return dx, dgamma, dbeta

    @staticmethod
    def backward_alt(dout, cache):
        """Batch-norm backward pass in the simplified closed form.

        ``dx = gamma / (N * std) * (N * dout - sum(dout) - xhat * sum(dout * xhat))``.
        Returns the same values as :meth:`backward`.
        """
        x, gamma, mean, var, eps, mode = BatchNorm._unpack(dout, cache)
        # BEGIN SOLUTION
        N = x.shape[0]
        std = np.sqrt(var + eps)
        xhat = (x - mean) / std
        dbeta = dout.sum(axis=0)
        dgamma = (dout * xhat).sum(axis=0)
        if mode == "test":
            dx = dout * gamma / std
        else:
            dx = gamma / (N * std) * (N * dout - dbeta - xhat * dgamma)
        # END SOLUTION
        return dx, dgamma, dbeta


class SpatialBatchNorm:
    """Batch normalisation of (N, C, H, W) inputs, statistics per channel over (N, H, W)."""

    @staticmethod
    def forward(x, gamma, beta, bn_param):
        """Spatial batch-norm forward pass.

        Parameters
        ----------
        x : ndarray of shape (N, C, H, W)
        gamma, beta : ndarray of shape (C,)
        bn_param : dict
            As :meth:`BatchNorm.forward`; running statistics have shape (C,).

        Returns
        -------
        out : ndarray of shape (N, C, H, W)
        cache : tuple ``(x_shape, bn_cache)``
        """
        _checks.batchnorm_args(x, gamma, beta, bn_param, spatial=True)
        N, C, H, W = x.shape
        # BEGIN SOLUTION
        # Channels last and flattened: each channel is one feature of an (N*H*W, C) batch.
        flat = x.transpose(0, 2, 3, 1).reshape(-1, C)
        out_flat, bn_cache = BatchNorm.forward(flat, gamma, beta, bn_param)
        out = out_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2)
        # END SOLUTION
        cache = (x.shape, bn_cache)
        return np.ascontiguousarray(out), cache

    @staticmethod
    def backward(dout, cache):
        """Spatial batch-norm backward pass.

        Returns
        -------
        dx : ndarray of shape (N, C, H, W)
        dgamma, dbeta : ndarray of shape (C,)
        """
        shape, bn_cache = _checks.check_cache(cache, 2, "SpatialBatchNorm")
        _checks.check_array("dout", dout, 4)
        if dout.shape != shape:
            raise ValueError(f"SpatialBatchNorm: dout has shape {dout.shape} but the forward output had shape {shape}")
        N, C, H, W = shape
        # BEGIN SOLUTION
        dflat = dout.transpose(0, 2, 3, 1).reshape(-1, C)
        dx_flat, dgamma, dbeta = BatchNorm.backward(dflat, bn_cache)
        dx = np.ascontiguousarray(dx_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2))
        # END SOLUTION
        return dx, dgamma, dbeta


class Dropout:
    """Inverted dropout: in training each unit is zeroed with probability p and the rest scaled by 1/(1-p)."""

    @staticmethod
    def forward(x, dropout_param):
        """Dropout forward pass.

        Parameters
        ----------
        x : ndarray of any shape
        dropout_param : dict
            ``'p'`` : float in [0, 1), the probability of dropping a unit (EECS 498's meaning);
            ``'mode'`` : 'train' or 'test'; ``'seed'`` : int >= 0, optional, makes the mask
            reproducible (``np.random.default_rng(seed)``); without it the global
            ``np.random`` state draws the mask.

        Returns
        -------
        out : ndarray of x's shape and dtype
        cache : tuple ``(shape, dtype, mode, mask)``; mask is None in test mode.
        """
        p = _checks.dropout_args(x, dropout_param)
        mode, drop = p["mode"], p["p"]
        uniform = np.random.default_rng(p["seed"]).random if p["seed"] is not None else np.random.random_sample
        mask = None
        # BEGIN SOLUTION
        if mode == "train":
            mask = ((uniform(x.shape) >= drop) / (1.0 - drop)).astype(x.dtype)
            out = x * mask
        else:
            out = x.copy()
        # END SOLUTION
        cache = (x.shape, x.dtype, mode, mask)
        return out, cache

    @staticmethod
    def backward(dout, cache):
        """Dropout backward pass: the upstream gradient through the same mask.

        Returns
        -------
        dx : ndarray of x's shape
        """
        shape, dtype, mode, mask = _checks.check_cache(cache, 4, "Dropout")
        _checks.check_dout(dout, shape, dtype, "Dropout")
        # BEGIN SOLUTION
        dx = dout * mask if mode == "train" else dout.copy()
        # END SOLUTION
        return dx
