"""The arrays the fast layers return, recycled once nothing else holds them.

A layer's output and its gradients are new arrays on every call, up to
hundreds of MB. glibc serves an array past its mmap threshold (32 MiB at
most) from a fresh mapping and unmaps it when it is freed, so each call faults
its results in again. With numpy's huge-page advice those faults can stall a
call for tens of milliseconds while the kernel compacts memory
(benchmarks/README.md, the constants table: returned arrays reused).

The layers take their results from here instead. Each result is a view of a
buffer this module keeps. A later request for the same number of bytes gets
that buffer again once this module's reference is the only one left: no
result, view, memoryview or cache still refers to it, so no caller can see
the reuse. Kept buffers together stay within the ``result_cache_limit``
setting (:func:`convnet.fast.config`); past it the least recently used are
dropped (the arrays stay valid for whoever holds them).
:func:`convnet.fast.release_workspaces` drops them all.
"""
from __future__ import annotations

import collections
import math
import sys

import numpy as np

from convnet.fast import _config
from convnet.fast.workspace import Kept

__all__ = ["empty", "release", "held_bytes", "MIN_BYTES"]

# Smaller results: glibc's heap reuses them (its mmap threshold adapts up to 32 MiB), and numpy advises
# huge pages only from 4 MiB.
MIN_BYTES = 4 << 20


# Least recently used first, keyed by id.
_CACHE = Kept(collections.OrderedDict())


def _refs_when_free() -> int:
    # The reference count a kept buffer shows in _free_buffer's loop when nothing else holds it.
    kept = {0: np.empty(1, dtype=np.uint8)}
    for raw in reversed(kept.values()):
        return sys.getrefcount(raw)


_FREE_REFS = _refs_when_free()


def _free_buffer(kept, nbytes: int):
    # The most recently used free buffer: it is the likeliest still in cache (taking the least recently used
    # rotated a layer's result through every free buffer of its size).
    for raw in reversed(kept.values()):
        if raw.nbytes == nbytes and sys.getrefcount(raw) <= _FREE_REFS:
            return raw
    return None


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array for a layer to return.

    Parameters
    ----------
    shape : tuple of int
    dtype : numpy dtype

    Returns
    -------
    ndarray
        A view of a kept buffer nothing else refers to, or of a new kept
        buffer; a plain ``np.empty`` array below :data:`MIN_BYTES` or when
        ``result_cache_limit`` cannot hold it.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    limit = _config.settings().result_cache_limit
    c = _CACHE
    with c.lock:
        raw = _free_buffer(c.buffers, nbytes) if nbytes <= limit else None
        if raw is not None:
            c.buffers.move_to_end(id(raw))
        else:
            need = nbytes if nbytes <= limit else 0  # too large to keep: only trim to a lowered limit
            while c.buffers and c.held + need > limit:
                c.held -= c.buffers.popitem(last=False)[1].nbytes
            if nbytes > limit:
                return np.empty(shape, dtype=dtype)
            raw = np.empty(nbytes, dtype=np.uint8)
            c.buffers[id(raw)] = raw
            c.held += nbytes
        # The view is made under the lock: from here its reference marks the buffer as taken.
        return raw.view(dtype).reshape(shape)


def release() -> int:
    """Drop every kept buffer; returns the bytes they held.

    Results still held elsewhere stay valid: numpy frees each buffer when its
    last view goes.
    """
    return _CACHE.release()


def held_bytes() -> int:
    """Bytes of the kept buffers, at most the ``result_cache_limit`` setting."""
    return _CACHE.held
