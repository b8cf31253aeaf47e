"""What a fast layer's forward keeps for its backward: small objects only that backward accepts."""
from __future__ import annotations

__all__ = ["ConvCache", "MaxPoolCache", "AvgPoolCache", "check_fast_cache"]


class _FastCache:
    """Base of the fast caches: small objects, recognised by their ``layer`` name."""

    __slots__ = ("layer",)

    def __repr__(self):
        return f"<{self.layer} cache>"


class ConvCache(_FastCache):
    """What :meth:`FastConv.forward` keeps: the inputs, and an algorithm's filter operand where it serves
    backward too (Winograd's transformed filters, at most 4x w's size); backward recomputes the columns."""

    __slots__ = ("x", "w", "b", "conv_param", "need_dx", "operand")

    def __init__(self, x, w, b, conv_param, need_dx=True):
        self.layer = "FastConv"
        self.x, self.w, self.b, self.conv_param = x, w, b, conv_param
        # False for a network's input (convnet.fast.inputs): backward returns None for dx.
        self.need_dx = need_dx
        # (algorithm, its filter operand) when the algorithm's operand_serves_backward, else None.
        self.operand = None


class MaxPoolCache(_FastCache):
    """What :meth:`FastMaxPool.forward` keeps: the input and the flat argmax per window."""

    __slots__ = ("x", "pool_param", "argmax")

    def __init__(self, x, pool_param, argmax):
        self.layer = "FastMaxPool"
        self.x, self.pool_param, self.argmax = x, pool_param, argmax


class AvgPoolCache(_FastCache):
    """What :meth:`FastAvgPool.forward` keeps: the input and the pooling parameters."""

    __slots__ = ("x", "pool_param")

    def __init__(self, x, pool_param):
        self.layer = "FastAvgPool"
        self.x, self.pool_param = x, pool_param


def check_fast_cache(cache, cls, layer):
    """``cache`` if it is a ``cls`` (made by ``layer``'s forward), else a TypeError naming what it is."""
    if type(cache) is cls:
        return cache
    owner = getattr(cache, "layer", None)
    if isinstance(cache, tuple):
        raise TypeError(f"{layer}.backward got a tuple cache (from a naive layer's forward?); "
                        f"it needs the cache returned by {layer}.forward")
    if isinstance(owner, str):
        raise TypeError(f"{layer}.backward got a cache made by {owner}.forward; pass it to {owner}.backward")
    raise TypeError(f"{layer}.backward expects the cache returned by {layer}.forward, "
                    f"got {type(cache).__name__}")
