"""Every graded computation written once more, vectorised, with switches that turn on a known mistake.

The misconception catalogue (:mod:`grader.feedback.misconceptions`) calls
these with one switch set to get what a student who made that mistake would
return on the same inputs. With every switch at its default each function
computes the right answer. Nothing here calls the reference solution, so the
diagnosis also works in a student release, where the reference is stubbed.
All arithmetic is float64.

This module and the catalogue hold working solutions, so the student release
leaves both out (``grader/release/manifest.py``); there the diagnosis uses the
structural detectors only.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from grader.feedback.detectors import out_size

__all__ = ["conv_forward", "conv_backward", "pool_forward", "pool_backward", "bn_forward",
           "bn_backward", "spatial_bn", "linear", "relu_backward", "fcn_loss", "update", "softmax_loss"]


def _pad(x, p, value=0.0):
    return np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (0, 0), (p, p), (p, p)), constant_values=value)


def _windows(xp, kh, kw, s, Ho, Wo):
    """(N, C, Ho, Wo, kh, kw): the window of every output position (a view)."""
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::s, ::s][:, :, :Ho, :Wo]


def _scatter(cols, padded_shape, s):
    """The adjoint of :func:`_windows`: add each window's (kh, kw) values back where it was read."""
    N, C, Ho, Wo, kh, kw = cols.shape
    dxp = np.zeros(padded_shape)
    for a in range(kh):
        for b in range(kw):
            dxp[:, :, a:a + s * (Ho - 1) + 1:s, b:b + s * (Wo - 1) + 1:s] += cols[..., a, b]
    return dxp


def _crop(dxp, p, H, W, how="right"):
    if how == "none":
        return dxp
    if how == "p:-p":
        return dxp[:, :, p:-p, p:-p]
    return dxp[:, :, p:p + H, p:p + W]


# ---------------------------------------------------------------- convolution


def conv_forward(x, w, b, stride, pad, *, flip=False, bias=True):
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    Ho, Wo = out_size(H, kh, stride, pad), out_size(W, kw, stride, pad)
    wk = np.asarray(w, dtype=np.float64)[:, :, ::-1, ::-1] if flip else np.asarray(w, dtype=np.float64)
    out = np.einsum("ncijab,fcab->nfij", _windows(_pad(x, pad), kh, kw, stride, Ho, Wo), wk)
    return out + np.asarray(b, dtype=np.float64)[None, :, None, None] if bias else out


def conv_backward(x, w, dout, stride, pad, *, flip=False, ignore_stride=False, db_mean=False, dw_assign=False,
                  crop="right"):
    """``(dx, dw, db)``; ``ignore_stride`` reads every window as if the stride were 1."""
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    dout = np.asarray(dout, dtype=np.float64)
    Ho, Wo = dout.shape[2:]
    xp = _pad(x, pad)
    s = 1 if ignore_stride else stride
    win = _windows(xp, kh, kw, s, Ho, Wo)
    if dw_assign:
        # A loop over (n, f, i, j) that assigns keeps only the last window's term.
        dw = dout[-1, :, -1, -1][:, None, None, None] * win[-1, :, -1, -1][None]
    else:
        dw = np.einsum("nfij,ncijab->fcab", dout, win)
    wk = np.asarray(w, dtype=np.float64)[:, :, ::-1, ::-1] if flip else np.asarray(w, dtype=np.float64)
    dx = _crop(_scatter(np.einsum("nfij,fcab->ncijab", dout, wk), xp.shape, s), pad, H, W, crop)
    db = dout.sum(axis=(0, 2, 3)) / (N * Ho * Wo if db_mean else 1)
    return dx, dw, db


# ---------------------------------------------------------------- pooling


def pool_forward(x, ph, pw, stride, pad, kind, *, pad_value=None, exclude_pad=False):
    N, C, H, W = x.shape
    Ho, Wo = out_size(H, ph, stride, pad), out_size(W, pw, stride, pad)
    if kind == "max":
        value = -np.inf if pad_value is None else pad_value
        return _windows(_pad(x, pad, value), ph, pw, stride, Ho, Wo).max(axis=(4, 5))
    sums = _windows(_pad(x, pad), ph, pw, stride, Ho, Wo).sum(axis=(4, 5))
    if exclude_pad:
        inside = _windows(_pad(np.ones((1, 1, H, W)), pad), ph, pw, stride, Ho, Wo).sum(axis=(4, 5))
        return sums / inside
    return sums / (ph * pw)


def pool_backward(x, dout, ph, pw, stride, pad, kind, *, ties="first", assign=False, pad_value=None,
                  divide=True, exclude_pad=False):
    N, C, H, W = x.shape
    dout = np.asarray(dout, dtype=np.float64)
    Ho, Wo = dout.shape[2:]
    fill = (-np.inf if pad_value is None else pad_value) if kind == "max" else 0.0
    xp = _pad(x, pad, fill)
    win = _windows(xp, ph, pw, stride, Ho, Wo).reshape(N, C, Ho, Wo, ph * pw)
    if kind == "max":
        if ties == "all":
            share = (win == win.max(axis=-1, keepdims=True)).astype(np.float64)
        else:
            share = np.zeros_like(win)
            np.put_along_axis(share, win.argmax(axis=-1)[..., None], 1.0, axis=-1)
    else:
        share = np.ones_like(win)
        if exclude_pad:
            inside = _windows(_pad(np.ones((1, 1, H, W)), pad), ph, pw, stride, Ho, Wo).reshape(1, 1, Ho, Wo, -1)
            share = share / inside.sum(axis=-1, keepdims=True)
        elif divide:
            share = share / (ph * pw)
    cols = (share * dout[..., None]).reshape(N, C, Ho, Wo, ph, pw)
    if not assign:
        return _crop(_scatter(cols, xp.shape, stride), pad, H, W)
    # Assignment in a loop over output positions: where windows overlap the last one wins.
    dxp = np.zeros(xp.shape)
    mask = share.reshape(N, C, Ho, Wo, ph, pw) != 0
    for i in range(Ho):
        for j in range(Wo):
            region = dxp[:, :, i * stride:i * stride + ph, j * stride:j * stride + pw]
            m = mask[:, :, i, j]
            region[m] = cols[:, :, i, j][m]
            if kind != "max":
                region[...] = cols[:, :, i, j]
    return _crop(dxp, pad, H, W)


# ---------------------------------------------------------------- batch normalisation


def bn_forward(x, gamma, beta, bn, *, ddof=0, eps_outside=False, test_batch=False, momentum_swapped=False):
    """``(out, running_mean, running_var, mean, var)`` for (N, D) inputs; mean and var normalised x."""
    x = np.asarray(x, dtype=np.float64)
    eps, momentum, mode = bn.get("eps", 1e-5), bn.get("momentum", 0.9), bn["mode"]
    D = x.shape[1]
    rm = np.asarray(bn.get("running_mean", np.zeros(D)), dtype=np.float64)
    rv = np.asarray(bn.get("running_var", np.zeros(D)), dtype=np.float64)
    if mode == "train" or test_batch:
        mean, var = x.mean(axis=0), x.var(axis=0, ddof=ddof)
        if mode == "train":
            keep = 1 - momentum if momentum_swapped else momentum
            rm, rv = keep * rm + (1 - keep) * mean, keep * rv + (1 - keep) * var
    else:
        mean, var = rm, rv
    std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
    return gamma * (x - mean) / std + beta, rm, rv, mean, var


def bn_backward(x, gamma, dout, mean, var, eps, mode, *, mean_path=True, dgamma_x=False, variance_term=True):
    """``(dx, dgamma, dbeta)`` given the statistics forward normalised with."""
    x, dout = np.asarray(x, dtype=np.float64), np.asarray(dout, dtype=np.float64)
    N = x.shape[0]
    std = np.sqrt(var + eps)
    xhat = (x - mean) / std
    dbeta = dout.sum(axis=0)
    dgamma = (dout * (x if dgamma_x else xhat)).sum(axis=0)
    true_dgamma = (dout * xhat).sum(axis=0)
    if mode == "test":
        return dout * gamma / std, dgamma, dbeta
    # The graph's steps and the closed form agree for any var: sum(xhat) is 0 whatever var normalised it.
    dx = gamma / (N * std) * (N * dout - (dbeta if mean_path else 0) - (xhat * true_dgamma if variance_term else 0))
    return dx, dgamma, dbeta


def spatial_bn(x, gamma, beta, bn, dout=None, *, transpose=True, fwd=None, bwd=None):
    """Spatial batch norm by the flattening to (N*H*W, C): ``(out, rm, rv, dx, dgamma, dbeta)``."""
    N, C, H, W = x.shape

    def flat(a):
        a = np.asarray(a, dtype=np.float64)
        return a.transpose(0, 2, 3, 1).reshape(-1, C) if transpose else a.reshape(-1, C)

    def unflat(a):
        return a.reshape(N, H, W, C).transpose(0, 3, 1, 2) if transpose else a.reshape(N, C, H, W)

    out, rm, rv, mean, var = bn_forward(flat(x), gamma, beta, bn, **(fwd or {}))
    grads = (None, None, None)
    if dout is not None:
        dx, dgamma, dbeta = bn_backward(flat(x), gamma, flat(dout), mean, var, bn.get("eps", 1e-5), bn["mode"],
                                        **(bwd or {}))
        grads = (unflat(dx), dgamma, dbeta)
    return (unflat(out), rm, rv, *grads)


# ---------------------------------------------------------------- linear and ReLU


def linear(x, w, b, dout=None, *, bias=True, flat_dx=False, dw_transposed=False, db_mean=False):
    """``(out, dx, dw, db)`` of ``x.reshape(N, D) @ w + b``."""
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    N = x.shape[0]
    xf = x.reshape(N, -1)
    out = xf @ w + (np.asarray(b, dtype=np.float64) if bias else 0)
    if dout is None:
        return out, None, None, None
    dout = np.asarray(dout, dtype=np.float64)
    dx = dout @ w.T
    dw = xf.T @ dout
    db = dout.mean(axis=0) if db_mean else dout.sum(axis=0)
    return out, (dx if flat_dx else dx.reshape(x.shape)), (dw.T if dw_transposed else dw), db


def relu_backward(x, dout, *, relu_of_dout=False, unmasked=False, at_zero=False):
    dout = np.asarray(dout, dtype=np.float64)
    if relu_of_dout:
        return np.maximum(dout, 0)
    x = np.asarray(x)
    return dout if unmasked else dout * ((x >= 0) if at_zero else (x > 0))


# ---------------------------------------------------------------- models


def softmax_loss(scores, y):
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    N = scores.shape[0]
    dscores = np.exp(log_probs)
    dscores[np.arange(N), y] -= 1
    return -log_probs[np.arange(N), y].mean(), dscores / N


def fcn_loss(params, X, y, *, layers, p, seed, dropout_backward=True):
    """FullyConnectedNet's data loss and gradients (no L2) with EECS 498's seeded dropout masks."""
    N = X.shape[0]
    h = np.asarray(X, dtype=np.float64).reshape(N, -1)
    caches = []
    for i in range(1, layers):
        a = h @ params[f"W{i}"] + params[f"b{i}"]
        out = np.maximum(a, 0)
        mask = None
        if p:
            # The course's Dropout seeds a fresh generator per call: every layer draws from the same stream start.
            mask = (np.random.default_rng(seed).random(out.shape) >= p) / (1.0 - p)
            out = out * mask
        caches.append((h, a, mask))
        h = out
    scores = h @ params[f"W{layers}"] + params[f"b{layers}"]
    loss, d = softmax_loss(scores, y)
    grads = {f"W{layers}": h.T @ d, f"b{layers}": d.sum(axis=0)}
    d = d @ params[f"W{layers}"].T
    for i in range(layers - 1, 0, -1):
        h_in, a, mask = caches[i - 1]
        if mask is not None and dropout_backward:
            d = d * mask
        d = d * (a > 0)
        grads[f"W{i}"], grads[f"b{i}"] = h_in.T @ d, d.sum(axis=0)
        d = d @ params[f"W{i}"].T
    return loss, grads


# ---------------------------------------------------------------- update rules


def update(rule, w, dw, config, *, sign=1.0, old_velocity=False, eps_inside=False, decay_swapped=False,
           t_after=False, bias_correction=True, no_sqrt=False):
    """``(next_w, state)`` of one step; ``sign=-1`` steps along the gradient instead of against it."""
    w, dw = np.asarray(w, dtype=np.float64), np.asarray(dw, dtype=np.float64)
    lr = config.get("learning_rate", 1e-3 if rule == "adam" else 1e-2)
    zeros = np.zeros_like(w)
    if rule == "sgd":
        return w - sign * lr * dw, {}
    if rule == "sgd_momentum":
        mu = config.get("momentum", 0.9)
        v0 = np.asarray(config.get("velocity", zeros) if config.get("velocity") is not None else zeros)
        v = mu * v0 - sign * lr * dw
        return w + (v0 if old_velocity else v), {"velocity": v}
    if rule == "rmsprop":
        rho, eps = config.get("decay_rate", 0.99), config.get("epsilon", 1e-8)
        c0 = config.get("cache")
        c0 = zeros if c0 is None else np.asarray(c0)
        keep = 1 - rho if decay_swapped else rho
        cache = keep * c0 + (1 - keep) * dw * dw
        root = cache if no_sqrt else np.sqrt(cache + eps) if eps_inside else np.sqrt(cache)
        return w - sign * lr * dw / (root + (0 if eps_inside else eps)), {"cache": cache}
    b1, b2, eps = config.get("beta1", 0.9), config.get("beta2", 0.999), config.get("epsilon", 1e-8)
    m0 = config.get("m")
    v0 = config.get("v")
    m0 = zeros if m0 is None else np.asarray(m0)
    v0 = zeros if v0 is None else np.asarray(v0)
    t = int(config.get("t", 0))
    t_new = t + 1
    tc = t if t_after else t_new
    m = b1 * m0 + (1 - b1) * dw
    v = b2 * v0 + (1 - b2) * dw * dw
    with np.errstate(divide="ignore", invalid="ignore"):
        m_hat = m / (1 - b1 ** tc) if bias_correction else m
        v_hat = v / (1 - b2 ** tc) if bias_correction else v
        root = np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat)
        next_w = w - sign * lr * m_hat / (root + (0 if eps_inside else eps))
    return next_w, {"m": m, "v": v, "t": np.array(float(t_new))}
