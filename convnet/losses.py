"""Classification losses: softmax (cross-entropy) and multiclass SVM, averaged over the batch."""
from __future__ import annotations

import numpy as np

from convnet import _checks

__all__ = ["softmax_loss", "svm_loss"]


def softmax_loss(x, y):
    """Softmax cross-entropy loss and its gradient.

    Parameters
    ----------
    x : ndarray of shape (N, C)
        Class scores.
    y : ndarray of int, shape (N,)
        Labels, ``0 <= y[i] < C``.

    Returns
    -------
    loss : float
        ``mean_i(-log softmax(x_i)[y_i])``.
    dx : ndarray of shape (N, C), x's dtype
    """
    N, _ = _checks.loss_args(x, y)
    # Shifting by the row maximum keeps exp() finite without changing the softmax.
    shifted = x - x.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -float(log_probs[np.arange(N), y].sum()) / N
    dx = np.exp(log_probs)
    dx[np.arange(N), y] -= 1
    dx /= N
    return loss, dx.astype(x.dtype, copy=False)


def svm_loss(x, y):
    """Multiclass SVM (hinge) loss with margin 1, and its gradient.

    Parameters
    ----------
    x : ndarray of shape (N, C)
        Class scores.
    y : ndarray of int, shape (N,)
        Labels, ``0 <= y[i] < C``.

    Returns
    -------
    loss : float
        ``mean_i sum_{j != y_i} max(0, x_ij - x_iy_i + 1)``.
    dx : ndarray of shape (N, C), x's dtype
    """
    N, _ = _checks.loss_args(x, y)
    rows = np.arange(N)
    margins = np.maximum(0, x - x[rows, y][:, None] + 1)
    margins[rows, y] = 0
    loss = float(margins.sum()) / N
    positive = (margins > 0).astype(x.dtype)
    dx = positive
    dx[rows, y] -= positive.sum(axis=1)
    dx /= N
    return loss, dx
