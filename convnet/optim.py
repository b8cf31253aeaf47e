"""First-order update rules, as in EECS 498: ``next_w, config = rule(w, dw, config)``.

Every rule takes the current weights ``w``, their gradient ``dw`` and a
``config`` dict holding the hyper-parameters and any state the rule keeps
between steps (velocity, moment estimates). Missing keys are filled with the
course's defaults, so ``config=None`` works for the first step; pass the
returned ``config`` to the next call. ``next_w`` has ``w``'s dtype and ``w``
itself is never modified.

| rule | config keys (default) |
|---|---|
| ``sgd`` | ``learning_rate`` (1e-2) |
| ``sgd_momentum`` | ``learning_rate`` (1e-2), ``momentum`` (0.9), ``velocity`` (zeros) |
| ``rmsprop`` | ``learning_rate`` (1e-2), ``decay_rate`` (0.99), ``epsilon`` (1e-8), ``cache`` (zeros) |
| ``adam`` | ``learning_rate`` (1e-3), ``beta1`` (0.9), ``beta2`` (0.999), ``epsilon`` (1e-8), ``m``, ``v`` (zeros), ``t`` (0) |
"""
from __future__ import annotations

import numpy as np

from convnet import _checks

__all__ = ["sgd", "sgd_momentum", "rmsprop", "adam", "UPDATE_RULES"]


def _prepare(rule, w, dw, config, defaults, state=()):
    """Validate ``w``/``dw``, fill ``config`` with defaults and zero state arrays; returns config."""
    _checks.check_array("w", w)
    _checks.check_array("dw", dw)
    if dw.shape != w.shape:
        raise ValueError(f"{rule}: dw has shape {dw.shape} but w has shape {w.shape}")
    if dw.dtype != w.dtype:
        raise ValueError(f"{rule}: dw is {dw.dtype} but w is {w.dtype}; cast them to one dtype first")
    if config is None:
        config = {}
    elif not isinstance(config, dict):
        raise TypeError(f"{rule}: config must be a dict or None, got {type(config).__name__}")
    for key, value in defaults.items():
        config.setdefault(key, value)
    config["learning_rate"] = _checks.check_real(f"{rule}: config['learning_rate']",
                                                 config["learning_rate"], low=0.0)
    for key in state:
        if config.get(key) is None:
            config[key] = np.zeros_like(w)
        else:
            s = _checks.check_array(f"{rule}: config[{key!r}]", config[key])
            if s.shape != w.shape:
                raise ValueError(f"{rule}: config[{key!r}] has shape {s.shape} but w has shape {w.shape}; "
                                 f"use one config dict per parameter")
    return config


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent: ``w - learning_rate * dw``.

    Parameters
    ----------
    w : ndarray of float32 or float64, any shape
        Current weights (not modified).
    dw : ndarray of w's shape
        Gradient of the loss with respect to ``w``.
    config : dict or None
        ``'learning_rate'`` : float >= 0, default 1e-2.

    Returns
    -------
    next_w : ndarray of w's shape and dtype
    config : dict
        The same dict, defaults filled in.
    """
    config = _prepare("sgd", w, dw, config, {"learning_rate": 1e-2})
    next_w = w - config["learning_rate"] * dw
    return next_w.astype(w.dtype, copy=False), config


def sgd_momentum(w, dw, config=None):
    """Stochastic gradient descent with momentum.

    ``v = momentum * v - learning_rate * dw``; ``next_w = w + v``.

    Parameters
    ----------
    w : ndarray of float32 or float64, any shape
    dw : ndarray of w's shape
    config : dict or None
        ``'learning_rate'`` : float >= 0, default 1e-2; ``'momentum'`` : float in [0, 1],
        default 0.9; ``'velocity'`` : ndarray of w's shape, default zeros (updated).

    Returns
    -------
    next_w : ndarray of w's shape and dtype
    config : dict
        With ``'velocity'`` replaced by the new velocity.
    """
    config = _prepare("sgd_momentum", w, dw, config, {"learning_rate": 1e-2, "momentum": 0.9},
                      state=("velocity",))
    config["momentum"] = _checks.check_real("sgd_momentum: config['momentum']", config["momentum"], 0.0, 1.0)
    v = config["velocity"]
    # BEGIN SOLUTION
    v = config["momentum"] * v - config["learning_rate"] * dw
    next_w = w + v
    # END SOLUTION
    config["velocity"] = v.astype(w.dtype, copy=False)
    return next_w.astype(w.dtype, copy=False), config


def rmsprop(w, dw, config=None):
    """RMSProp: a per-element step size from a running average of squared gradients.

    ``cache = decay_rate * cache + (1 - decay_rate) * dw**2``;
    ``next_w = w - learning_rate * dw / (sqrt(cache) + epsilon)``.

    Parameters
    ----------
    w : ndarray of float32 or float64, any shape
    dw : ndarray of w's shape
    config : dict or None
        ``'learning_rate'`` : float >= 0, default 1e-2; ``'decay_rate'`` : float in [0, 1],
        default 0.99; ``'epsilon'`` : float > 0, default 1e-8; ``'cache'`` : ndarray of
        w's shape, default zeros (updated).

    Returns
    -------
    next_w : ndarray of w's shape and dtype
    config : dict
        With ``'cache'`` replaced by the new running average.
    """
    config = _prepare("rmsprop", w, dw, config,
                      {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8}, state=("cache",))
    config["decay_rate"] = _checks.check_real("rmsprop: config['decay_rate']", config["decay_rate"], 0.0, 1.0)
    config["epsilon"] = _checks.check_real("rmsprop: config['epsilon']", config["epsilon"], 0.0, low_open=True)
    cache = config["cache"]
    # BEGIN SOLUTION
    rho = config["decay_rate"]
    cache = rho * cache + (1 - rho) * dw * dw
    next_w = w - config["learning_rate"] * dw / (np.sqrt(cache) + config["epsilon"])
    # END SOLUTION
    config["cache"] = cache.astype(w.dtype, copy=False)
    return next_w.astype(w.dtype, copy=False), config


def adam(w, dw, config=None):
    """Adam: bias-corrected running averages of the gradient and its square.

    ``t += 1``; ``m = beta1*m + (1-beta1)*dw``; ``v = beta2*v + (1-beta2)*dw**2``;
    ``next_w = w - learning_rate * (m / (1-beta1**t)) / (sqrt(v / (1-beta2**t)) + epsilon)``.
    ``t`` is incremented *before* the bias correction, so the first step uses ``t = 1``.

    Parameters
    ----------
    w : ndarray of float32 or float64, any shape
    dw : ndarray of w's shape
    config : dict or None
        ``'learning_rate'`` : float >= 0, default 1e-3; ``'beta1'`` : float in [0, 1),
        default 0.9; ``'beta2'`` : float in [0, 1), default 0.999; ``'epsilon'`` : float > 0,
        default 1e-8; ``'m'``, ``'v'`` : ndarray of w's shape, default zeros; ``'t'`` : int >= 0,
        default 0 (all three updated).

    Returns
    -------
    next_w : ndarray of w's shape and dtype
    config : dict
        With the new ``'m'``, ``'v'`` and ``'t'``.
    """
    config = _prepare("adam", w, dw, config,
                      {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "t": 0},
                      state=("m", "v"))
    for key in ("beta1", "beta2"):
        config[key] = _checks.check_real(f"adam: config[{key!r}]", config[key], 0.0, 1.0, high_open=True)
    config["epsilon"] = _checks.check_real("adam: config['epsilon']", config["epsilon"], 0.0, low_open=True)
    config["t"] = _checks.check_int("adam: config['t']", config["t"], 0)
    m, v, t = config["m"], config["v"], config["t"]
    # BEGIN SOLUTION
    beta1, beta2 = config["beta1"], config["beta2"]
    t = t + 1
    m = beta1 * m + (1 - beta1) * dw
    v = beta2 * v + (1 - beta2) * dw * dw
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    next_w = w - config["learning_rate"] * m_hat / (np.sqrt(v_hat) + config["epsilon"])
    # END SOLUTION
    config["m"] = m.astype(w.dtype, copy=False)
    config["v"] = v.astype(w.dtype, copy=False)
    config["t"] = int(t)
    return next_w.astype(w.dtype, copy=False), config


#: Update rules by name, as accepted by :class:`convnet.solver.Solver`'s ``update_rule``.
UPDATE_RULES = {"sgd": sgd, "sgd_momentum": sgd_momentum, "rmsprop": rmsprop, "adam": adam}
