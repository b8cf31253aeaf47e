"""Runtime settings of the fast path, held in one object.

Every setting lives in one immutable :class:`Settings`, replaced as a whole
when anything changes: a layer reads one consistent snapshot per call
(:func:`settings`) and hands it to the threads it starts. Change settings with
:func:`config`, a context manager that restores them, or the ``set_*``
functions; read them with :func:`get_config` or the ``get_*`` functions. They
are process-wide, not per thread, like the thread counts they control.

Environment variables, read once at import
------------------------------------------
CONVNET_PUREPYTHON=1
    Use the numpy implementation instead of the compiled kernels.
CONVNET_REQUIRE_CYTHON=1
    Importing :mod:`convnet.fast` raises ``ImportError`` when the compiled
    kernels cannot be imported (unless ``CONVNET_PUREPYTHON=1`` is also set).
CONVNET_COLUMN_BUDGET=<bytes>
    Initial ``column_budget`` (default 64 MiB).
OMP_NUM_THREADS=<n>
    Default ``num_threads`` (otherwise the number of usable CPUs).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading

import numpy as np

from convnet import _checks
from convnet.fast._env import flag

__all__ = ["Settings", "config", "get_config", "settings", "CONV_ALGORITHMS", "set_num_threads",
           "get_num_threads", "set_column_budget", "get_column_budget", "set_conv_algorithm",
           "get_conv_algorithm"]

# Which kernels run is decided once: switching under a running layer would mix implementations.
PUREPYTHON = flag("CONVNET_PUREPYTHON")
REQUIRE_CYTHON = flag("CONVNET_REQUIRE_CYTHON")

CONV_ALGORITHMS = ("auto", "im2col", "im2row", "direct", "pointwise", "winograd", "winograd2", "winograd4")

# Bounds the convolution's extra memory whatever the batch size (benchmarks/README.md: chunk sizes).
DEFAULT_COLUMN_BUDGET = 64 * 2**20
# The conv kernels run between BLAS calls: OpenMP workers spinning after a prange would fight BLAS's threads.
CONV_KERNEL_THREADS = 1
# Below this many elements a pooling or batch-norm layer runs on one thread: waking a second costs more than the work
# (benchmarks/README.md: a split costs 0.1-0.3 ms here; from 2**21 on, two threads took 0.57-0.98 of one's time).
PARALLEL_MIN_WORK = 1 << 21
# Below this many multiply-adds (forward) splitting the batch across threads costs more than it saves
# (benchmarks/README.md: LeNet's 5x5 layers and the ResNet stem at batch 32 gained 10-40 % from 2**22 on).
SPLIT_MIN_WORK = 1 << 22
# Below this many multiply-adds (forward) a convolution's GEMMs run on one BLAS thread: on a quiet machine BLAS's
# threads gain 15-35 % from 2**20 on, but with one core busy a descheduled one stalls every GEMM (2-6x slower).
BLAS_THREADS_MIN_WORK = 1 << 24
# A batch part of fewer images runs its GEMMs on too few columns: N = 32 ran 10-30 % slower in 8 parts than in 2.
MIN_PART_IMAGES = 16
# Scratch kept between calls (convnet.fast.workspace): the column budget plus room for the filter transforms.
DEFAULT_WORKSPACE_LIMIT = 128 * 2**20
# Bytes of returned arrays kept for reuse (results.py): two training steps' large results of a small network.
DEFAULT_RESULT_CACHE_LIMIT = 512 * 2**20
# Thin layers (C*HH*WW up to this) run per-image backward GEMMs on dout as it lies, not on a transposed copy.
PER_IMAGE_GEMM_MAX_K = 32


def _default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _parse_budget(value) -> int:
    try:
        return _checks.check_int("column budget", int(value) if isinstance(value, str) else value, 1)
    except ValueError as exc:
        raise ValueError(f"CONVNET_COLUMN_BUDGET / column budget must be a positive integer "
                         f"number of bytes, got {value!r}") from exc


DEFAULT_THREADS = _default_threads()
_ENV_BUDGET = os.environ.get("CONVNET_COLUMN_BUDGET", "").strip()
INITIAL_COLUMN_BUDGET = _parse_budget(_ENV_BUDGET) if _ENV_BUDGET else DEFAULT_COLUMN_BUDGET


@dataclasses.dataclass(frozen=True)
class Settings:
    """One snapshot of the fast path's settings.

    Attributes
    ----------
    num_threads : int >= 1
        Threads for the pooling and batch-norm layers (planes or channels split
        between them) and for a convolution's batch split (one-thread BLAS
        each; needs threadpoolctl). 1: no thread is ever started.
    column_budget : int >= 1
        Bytes the convolution's per-chunk buffers may hold in one call.
    conv_algorithm : str
        One of :data:`CONV_ALGORITHMS` (see :func:`set_conv_algorithm`).
    conv_kernel_threads : int >= 1
        OpenMP threads inside the convolution's kernels (im2col, col2im, the
        Winograd transforms) where their GEMMs go through numpy
        (``gemm_in_kernels`` off, or no OpenBLAS found); a compiled batch part
        runs on its thread. Tuning, as the settings below: for tests and benchmarks.
    parallel_min_work : int >= 0
        Elements from which a pooling or batch-norm layer uses ``num_threads``
        threads; in batch norm and max pooling's forward pass a float64
        element counts twice (their time follows the bytes they move).
    split_batch : bool
        Whether a convolution may split its batch across threads at all.
    split_min_work : int >= 0
        Forward multiply-adds from which a convolution splits its batch.
    blas_threads_min_work : int >= 0
        Forward multiply-adds from which a convolution that does not split its
        batch (one image, or a small batch) lets BLAS use its own threads;
        below, its GEMMs run on one BLAS thread. Lower it on a machine whose
        cores are otherwise idle (benchmarks/README.md: BLAS's threads for smaller layers).
    per_image_gemm_max_k : int >= 0
        Largest ``C*HH*WW`` whose im2col backward runs per-image GEMMs.
    min_part_images : int >= 1
        Images a batch part should hold: a split batch gets up to
        ``PARTS_PER_THREAD`` parts per thread, fewer when they would hold fewer images.
    workspace_limit : int >= 0
        Bytes of scratch buffers the convolution may keep between calls
        (:mod:`convnet.fast.workspace`); 0 keeps none.
    result_cache_limit : int >= 0
        Bytes of the layers' returned arrays kept for reuse once nothing else
        holds them (:mod:`convnet.fast.results`); 0 keeps none.
    gemm_in_kernels : bool
        Whether the im2col and im2row convolutions run each batch part in one
        compiled call that does its GEMMs itself, without the GIL (where
        ``convnet.fast._backend.GEMM_IN_KERNELS``: numpy's BLAS is an OpenBLAS
        the kernels can call); False: the GEMMs go through numpy.
    split_image_gemms : bool
        Whether such a compiled call, when it is a whole batch under
        ``blas_threads_min_work`` (one image, a small batch), shares its GEMMs
        with one worker thread of the kernels (``num_threads`` >= 2), and
        whether the direct convolution, on a batch it does not split, shares
        each image's output rows and filter-gradient taps with that worker
        (images of ``conv_direct.SHARE_MIN_WORK`` multiply-adds and more). The
        calling thread never waits for that worker: a block the worker has not
        finished in time is computed again by the caller.
    """

    num_threads: int = DEFAULT_THREADS
    column_budget: int = INITIAL_COLUMN_BUDGET
    conv_algorithm: str = "auto"
    conv_kernel_threads: int = CONV_KERNEL_THREADS
    parallel_min_work: int = PARALLEL_MIN_WORK
    split_batch: bool = True
    split_min_work: int = SPLIT_MIN_WORK
    blas_threads_min_work: int = BLAS_THREADS_MIN_WORK
    per_image_gemm_max_k: int = PER_IMAGE_GEMM_MAX_K
    min_part_images: int = MIN_PART_IMAGES
    workspace_limit: int = DEFAULT_WORKSPACE_LIMIT
    result_cache_limit: int = DEFAULT_RESULT_CACHE_LIMIT
    gemm_in_kernels: bool = True
    split_image_gemms: bool = True


def _threads(label, value) -> int:
    if value is None:
        value = 0
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{label} must be an int >= 0 or None, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{label} must be >= 0 (0 or None: default {DEFAULT_THREADS}), got {value}")
    return int(value) if value else DEFAULT_THREADS


def _algorithm(label, value) -> str:
    if not isinstance(value, str) or value not in CONV_ALGORITHMS:
        raise ValueError(f"{label} must be one of {CONV_ALGORITHMS}, got {value!r}")
    return value


def _boolean(label, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{label} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def _at_least(minimum):
    return lambda label, value: _checks.check_int(label, value, minimum)


# How each setting is checked; num_threads 0 or None means the default.
_VALIDATORS = {
    "num_threads": _threads,
    "column_budget": _at_least(1),
    "conv_algorithm": _algorithm,
    "conv_kernel_threads": _at_least(1),
    "parallel_min_work": _at_least(0),
    "split_batch": _boolean,
    "split_min_work": _at_least(0),
    "blas_threads_min_work": _at_least(0),
    "per_image_gemm_max_k": _at_least(0),
    "min_part_images": _at_least(1),
    "workspace_limit": _at_least(0),
    "result_cache_limit": _at_least(0),
    "gemm_in_kernels": _boolean,
    "split_image_gemms": _boolean,
}


class _State:
    """The current :class:`Settings`; replaced, never mutated, under a lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.current = Settings()


_STATE = _State()


def settings() -> Settings:
    """The current settings: one immutable snapshot (read it once per call)."""
    return _STATE.current


def _update(labels=None, /, **changes) -> Settings:
    """Validate ``changes``, apply them all or none; returns the previous settings."""
    unknown = sorted(set(changes) - set(_VALIDATORS))
    if unknown:
        raise TypeError(f"unknown fast-path setting(s) {unknown}; the settings are {list(_VALIDATORS)}")
    labels = labels or {}
    checked = {k: _VALIDATORS[k](labels.get(k, f"config: {k}"), v) for k, v in changes.items()}
    with _STATE.lock:
        previous = _STATE.current
        _STATE.current = dataclasses.replace(previous, **checked)
    return previous


def _restore(previous: Settings) -> None:
    with _STATE.lock:
        _STATE.current = previous


def get_config() -> dict:
    """The current settings as a dict (a copy): ``{'num_threads': ..., 'column_budget': ..., ...}``."""
    return dataclasses.asdict(_STATE.current)


@contextlib.contextmanager
def config(**changes):
    """Change fast-path settings for the duration of a ``with`` block, then restore all of them.

    Parameters
    ----------
    **changes
        Any fields of :class:`Settings`: ``num_threads`` (0 or None: the
        default), ``column_budget``, ``conv_algorithm``, and the tuning
        settings ``conv_kernel_threads``, ``parallel_min_work``,
        ``split_batch``, ``split_min_work``, ``blas_threads_min_work``, ``per_image_gemm_max_k``,
        ``min_part_images``, ``gemm_in_kernels``, ``split_image_gemms``, ``workspace_limit`` (bytes of scratch kept
        between calls) and ``result_cache_limit`` (bytes of returned arrays kept
        for reuse); :func:`convnet.fast.release_workspaces` frees both.

    Yields
    ------
    dict
        The settings in force inside the block (:func:`get_config`).

    Raises
    ------
    TypeError
        For an unknown setting or a value of the wrong type; nothing is changed.
    ValueError
        For a value out of range; nothing is changed.

    Examples
    --------
    >>> from convnet import fast
    >>> with fast.config(num_threads=1, conv_algorithm="im2col"):
    ...     fast.get_conv_algorithm()
    'im2col'
    """
    previous = _update(**changes)
    try:
        yield get_config()
    finally:
        _restore(previous)


def set_num_threads(n=None) -> int:
    """Set how many threads the fast layers may use; returns the previous count.

    Parameters
    ----------
    n : int >= 0 or None
        Thread count for the pooling and batch-norm layers (their planes or
        channels split between ``n`` threads) and for the convolution, which
        splits a large enough batch into parts claimed by ``n`` threads, each
        with single-threaded BLAS (through threadpoolctl, for the duration of
        the call; without threadpoolctl the batch is not split). With ``n = 1``
        no thread is ever started. ``None`` or
        ``0`` restores the default: ``OMP_NUM_THREADS`` if set at import, else
        the number of usable CPUs. numpy's BLAS thread count outside the
        convolution is not affected (use ``threadpoolctl`` for it).

    Raises
    ------
    TypeError
        If n is not an int (bool included) or None.
    ValueError
        If n is negative.
    """
    return _update({"num_threads": "set_num_threads: n"}, num_threads=n).num_threads


def get_num_threads() -> int:
    """Number of threads the fast layers may use (see :func:`set_num_threads`)."""
    return _STATE.current.num_threads


def set_column_budget(nbytes: int) -> int:
    """Set the byte budget of the convolution's column buffers; returns the previous one.

    Parameters
    ----------
    nbytes : int >= 1
        Upper bound on the bytes held by the convolution's buffers in one call
        (im2col: the columns, and in the backward pass their gradient; Winograd:
        the transformed tiles). The batch is processed in chunks of as many
        images as fit (and at most a cache-sized amount per chunk); a single
        image always fits, so the bound is ``max(nbytes, one image's buffers)``.
    """
    return _update({"column_budget": "nbytes"}, column_budget=nbytes).column_budget


def get_column_budget() -> int:
    """Current column-buffer budget in bytes (default 64 MiB or ``CONVNET_COLUMN_BUDGET``)."""
    return _STATE.current.column_budget


def set_conv_algorithm(name: str) -> str:
    """Choose how :class:`~convnet.fast.FastConv` computes a convolution; returns the previous choice.

    Parameters
    ----------
    name : {'auto', 'im2col', 'im2row', 'direct', 'pointwise', 'winograd', 'winograd2', 'winograd4'}
        ``'im2col'``: im2col + GEMM for every layer. ``'im2row'``: its transposed layout (one row per
        output pixel, channels last) for every layer. ``'direct'``: stride-1 layers with
        ``pad < min(HH, WW)`` straight from the padded input, without columns (compiled kernels), im2col
        for the others. ``'pointwise'``: 1x1
        layers without padding as GEMMs on x as it lies (no im2col), im2col for
        the others. ``'winograd2'`` /
        ``'winograd4'``: Winograd F(2x2, 3x3) / F(4x4, 3x3) for every 3x3
        stride-1 layer (any padding), im2col for the others. ``'winograd'``:
        of those two, the one with fewer multiplications for the layer's output
        size (F(4x4, 3x3) unless partial edge tiles waste more than it saves).
        ``'auto'`` (default): ``'pointwise'`` for 1x1 layers without padding; ``'direct'`` where it
        is usable for layers of at most 8 input channels (16 in float32);
        for 3x3 stride-1 layers with at least 16 input and 16 output channels (and 196 output pixels per call),
        when the compiled kernels are in use, ``'winograd'`` but F(4x4, 3x3)
        only on output maps of at least 16x16; for the other layers, with the compiled kernels,
        ``'im2row'`` for strided layers and, in float32, for output rows narrower than 16, in calls
        of at least 1024 output pixels when a kernel row (``WW*C`` elements) is at least as long as
        an output row's input span (``W_out*stride``), im2col otherwise.

    The measured rounding of F(4x4, 3x3) in float32 grows through batch norm's
    backward (its mean subtraction cancels): in a DeepConvNet step the filter
    gradients of the layers below an F(4x4) layer came out 1e-4 to 2e-3 off in
    float32, against about 1e-6 with F(2x2) or im2col (benchmarks/README.md).

    Notes
    -----
    Winograd adds and subtracts inputs before multiplying, so its rounding
    error is relative to the scale of a whole tile rather than of each output:
    measured max|error| / max|exact| is about 3e-7 (F(2x2, 3x3)) and 5e-6
    (F(4x4, 3x3)) in float32, against up to 1e-6 for im2col; 2e-15 and 7e-15
    in float64. Choose ``'im2col'`` or ``'winograd2'`` where that matters more
    than speed.
    """
    return _update({"conv_algorithm": "conv algorithm"}, conv_algorithm=name).conv_algorithm


def get_conv_algorithm() -> str:
    """The current choice of :func:`set_conv_algorithm` (default ``'auto'``)."""
    return _STATE.current.conv_algorithm
