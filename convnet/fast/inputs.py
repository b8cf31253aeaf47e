"""Marking a network's input, so that the first convolution does not compute a gradient nobody reads.

A training step needs the gradients of the parameters, not of the input
images; for the first layer, im2col's dx (a GEMM and col2im) is wasted work.
Inside ``with network_input(X):`` a :class:`~convnet.fast.FastConv` whose
``x`` is this very array object (identity, not equality) keeps no dx: its
backward returns ``None`` in dx's place. The provided
:class:`~convnet.solver.Solver` marks each minibatch this way, and
:meth:`convnet.models.Model._check_X` carries the mark over to the array it
converts X to, so a model's ``loss`` needs no change. Outside the block, or
for any other array, nothing changes. The mark is per thread.
"""
from __future__ import annotations

import contextlib
import threading

__all__ = ["network_input", "is_network_input", "carry_mark"]

_LOCAL = threading.local()


def _marked() -> list:
    return getattr(_LOCAL, "marked", None) or []


@contextlib.contextmanager
def network_input(X):
    """Within the block, a FastConv on exactly ``X`` returns ``None`` for dx (its backward skips that work).

    Parameters
    ----------
    X : ndarray
        The minibatch a model's ``loss`` receives.

    Yields
    ------
    X
    """
    previous = getattr(_LOCAL, "marked", None)
    _LOCAL.marked = [X]
    try:
        yield X
    finally:
        _LOCAL.marked = previous


def is_network_input(x) -> bool:
    """True inside :func:`network_input` for the marked array (or one :func:`carry_mark` added)."""
    return any(x is m for m in _marked())


def carry_mark(original, converted):
    """Mark ``converted`` too when ``original`` is marked (a dtype conversion of the input); returns it."""
    marked = _marked()
    if converted is not original and any(original is m for m in marked):
        marked.append(converted)
    return converted
