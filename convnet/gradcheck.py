"""Numerical gradient checking, as in EECS 498 (centred differences, global relative error)."""
from __future__ import annotations

import numpy as np


def compute_numeric_gradient(f, x, dLdf=None, h=1e-7):
    """Numeric gradient of ``f`` at ``x`` by centred differences.

    Parameters
    ----------
    f : callable
        ``f(x)`` returns an ndarray (or scalar); ``x`` is modified in place and restored.
    x : ndarray of float64
        The point at which to differentiate. It is perturbed in place, one element at a time.
    dLdf : ndarray of f(x)'s shape, optional
        Upstream gradient; the result is ``sum(dLdf * df/dx)``. Defaults to ones.
    h : float
        Step size.

    Returns
    -------
    grad : ndarray of x's shape
    """
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise TypeError(f"x must be a floating ndarray, got {type(x).__name__}"
                        f"{'' if not isinstance(x, np.ndarray) else ' of dtype ' + str(x.dtype)}")
    if not (isinstance(h, (int, float)) and h > 0):
        raise ValueError(f"h must be a positive number, got {h!r}")
    fx = np.asarray(f(x))
    if dLdf is None:
        dLdf = np.ones_like(fx, dtype=np.float64)
    dLdf = np.asarray(dLdf)
    if dLdf.shape != fx.shape:
        raise ValueError(f"dLdf has shape {dLdf.shape} but f(x) has shape {fx.shape}")
    grad = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)  # a view when x is contiguous, so writes reach x
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so that it can be perturbed in place")
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        pos = np.array(f(x), dtype=np.float64, copy=True)
        flat[i] = old - h
        neg = np.array(f(x), dtype=np.float64, copy=True)
        flat[i] = old
        gflat[i] = np.sum((pos - neg) * dLdf) / (2.0 * h)
    return grad.astype(x.dtype, copy=False)


def rel_error(x, y, eps=1e-10):
    """Global relative error ``max|x - y| / max(|x| + |y|, eps)``, as in EECS 498."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"cannot compare shapes {x.shape} and {y.shape}")
    if x.size == 0:
        return 0.0
    top = np.max(np.abs(x - y))
    bot = max(float(np.max(np.abs(x) + np.abs(y))), eps)
    return float(top / bot)


def grad_check_sparse(f, x, analytic_grad, num_checks=10, h=1e-7, seed=None, verbose=True):
    """Compare ``analytic_grad`` with centred differences of scalar ``f`` at random elements.

    Returns the list of per-element relative errors ``|num - ana| / (|num| + |ana|)``.
    """
    if analytic_grad.shape != x.shape:
        raise ValueError(f"analytic_grad has shape {analytic_grad.shape} but x has shape {x.shape}")
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(int(num_checks)):
        ix = tuple(int(rng.integers(m)) for m in x.shape)
        old = x[ix]
        x[ix] = old + h
        fxph = float(f(x))
        x[ix] = old - h
        fxmh = float(f(x))
        x[ix] = old
        num = (fxph - fxmh) / (2 * h)
        ana = float(analytic_grad[ix])
        denom = abs(num) + abs(ana)
        err = 0.0 if denom == 0 else abs(num - ana) / denom
        errors.append(err)
        if verbose:
            print(f"numerical: {num:f} analytic: {ana:f}, relative error: {err:e}")
    return errors


def assert_within_rounding(ours, reference, magnitude, terms):
    """Assert that ``ours`` equals ``reference`` up to the rounding of sums of ``terms`` products.

    A sum of K products computed in any order, in a floating type of machine
    epsilon eps, is within about K*eps/2 of the exact sum times the same sum
    over absolute values; two such computations are within K*eps of each
    other. The tolerance is scaled to the data elementwise: an entry that
    cancels to zero is compared as zero, and no entry passes for being small.

    Parameters
    ----------
    ours : ndarray, float32 or float64
        The result under test; eps is its dtype's.
    reference : array_like of ours' shape
        Another computation of the same sums (any dtype at least as precise).
    magnitude : array_like of ours' shape
        The same sums over the absolute values of the factors, in float64.
    terms : int
        An upper bound on the number of products in each entry.

    Raises
    ------
    AssertionError
        Naming the worst entry, its error and its bound.
    """
    ours = np.asarray(ours)
    reference = np.asarray(reference, dtype=np.float64)
    magnitude = np.asarray(magnitude, dtype=np.float64)
    if not ours.shape == reference.shape == magnitude.shape:
        raise ValueError(f"shapes differ: ours {ours.shape}, reference {reference.shape}, magnitude {magnitude.shape}")
    err = np.abs(ours.astype(np.float64) - reference)
    bound = terms * np.finfo(ours.dtype).eps * magnitude
    if ours.size and not (err <= bound).all():
        worst = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(f"entry {tuple(int(i) for i in worst)}: error {err[worst]:.3g} above the rounding bound "
                             f"{bound[worst]:.3g} ({terms} terms, {ours.dtype}); largest error {err.max():.3g}")
