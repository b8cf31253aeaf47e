"""Scratch memory the convolution reuses from call to call.

The convolution's per-call buffers (im2col's columns and their gradient, the
Winograd tiles, the filter transforms' temporaries) are a few MB each. Freed
after every call, glibc hands memory of that size back to the kernel, so the
next call touches fresh pages: one minor page fault per 4 KiB (905 faults and
about 2.5 ms per backward pass of a 5x5 layer on 32 images of 6x14x14, whose
arithmetic takes 0.6 ms; benchmarks/README.md).

Each thread keeps its own buffers, one per name (the job it does, e.g.
``'im2col.cols'``), grown to the largest size asked for. Buffers are kept
while all kept buffers together stay within the ``workspace_limit`` setting
(:func:`convnet.fast.config`); past it a request gets a fresh array that is
freed after the call, as before. :func:`release` frees every kept buffer.

Rules for callers (the reason reuse is safe): a buffer is scratch inside one
call on one thread. It never backs an array a layer returns or keeps in a
cache, and one name is never in use twice at once on a thread.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from convnet.fast import _config

__all__ = ["empty", "release", "held_bytes", "Kept"]

# Buffers start on a cache line: the kernels' vector loads and BLAS's packing prefer it.
ALIGN = 64


class Kept:
    """Buffers kept between calls (a dict or OrderedDict) and the bytes they hold; changed under a lock."""

    def __init__(self, buffers):
        self.lock = threading.Lock()
        self.buffers = buffers
        self.held = 0

    def release(self) -> int:
        """Drop every buffer; returns the bytes they held."""
        with self.lock:
            freed, self.held = self.held, 0
            self.buffers.clear()
        return freed


# Keyed by (thread ident, name).
_POOL = Kept({})


def _aligned(nbytes: int) -> np.ndarray:
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + nbytes]


def empty(name: str, shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` in this thread's buffer ``name``.

    Parameters
    ----------
    name : str
        The buffer's job; one name is never in use twice at once on a thread.
    shape : tuple of int
    dtype : numpy dtype

    Returns
    -------
    ndarray
        A view of the kept buffer, or a fresh array when keeping it would pass
        the ``workspace_limit`` setting.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    key = (threading.get_ident(), name)
    buf = _POOL.buffers.get(key)
    if buf is None or buf.nbytes < nbytes:
        buf = _grow(key, nbytes)
    return buf[:nbytes].view(dtype).reshape(shape)


def _grow(key, nbytes: int) -> np.ndarray:
    limit = _config.settings().workspace_limit
    with _POOL.lock:
        old = _POOL.buffers.get(key)
        kept = old.nbytes if old is not None else 0
        if _POOL.held - kept + nbytes > limit:
            return _aligned(nbytes)  # over the limit: this call's alone, the old buffer stays for smaller requests
        buf = _aligned(nbytes)
        _POOL.buffers[key] = buf
        _POOL.held += nbytes - kept
        return buf


def release() -> int:
    """Free every kept buffer (of all threads); returns the bytes they held.

    Arrays in use by a running call stay valid: numpy frees their memory when
    that call drops them.
    """
    return _POOL.release()


def held_bytes() -> int:
    """Bytes the kept buffers hold now, at most the ``workspace_limit`` setting."""
    return _POOL.held
