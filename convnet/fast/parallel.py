"""Threads for the fast layers: a convolution's batch split across threads, the pooling kernels' count.

A convolution with enough work splits its batch into ``num_threads``
contiguous parts. Each part runs the whole pipeline (im2col or the Winograd
transforms, the GEMMs, col2im) on its own thread while numpy's BLAS is
limited to one thread through threadpoolctl: BLAS's own threads gain little
on chunk-sized GEMMs, and their spinning workers slow the kernels between
them (see benchmarks/README.md). Each part gets an equal share of the column
budget. Without threadpoolctl the batch is not split. The pooling kernels
split their planes across OpenMP threads instead (:func:`kernel_threads`).
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

__all__ = ["kernel_threads", "batch_parts", "blas_controller", "run_parts"]


def kernel_threads(work: int, s) -> int:
    """OpenMP threads for a pooling kernel over ``work`` elements under the settings ``s``."""
    return s.num_threads if work >= s.parallel_min_work else 1


class _Workers:
    """The worker threads and the BLAS controller, made on first use and shared by every call."""

    def __init__(self):
        self.executor = None
        self.blas = None
        self.blas_probed = False

    def forget_executor(self):
        # A forked child inherits the pool object but not its threads: start afresh.
        self.executor = None

    def get_executor(self, workers: int) -> ThreadPoolExecutor:
        if self.executor is None or self.executor._max_workers < workers:
            self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convnet-fast")
        return self.executor


_WORKERS = _Workers()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WORKERS.forget_executor)


def blas_controller():
    """threadpoolctl's controller of the BLAS libraries loaded in this process, or None without threadpoolctl."""
    if not _WORKERS.blas_probed:
        try:
            from threadpoolctl import ThreadpoolController
            _WORKERS.blas = ThreadpoolController().select(user_api="blas")
        except Exception:  # not installed, or it cannot inspect this process
            _WORKERS.blas = None
        _WORKERS.blas_probed = True
    return _WORKERS.blas


def batch_parts(g, s) -> list:
    """``[(lo, hi), ...]``: contiguous slices of the batch, one per thread (one slice: no split).

    Parameters
    ----------
    g : convnet._checks.ConvGeometry
    s : convnet.fast._config.Settings
        ``num_threads``, ``split_batch`` and ``split_min_work`` decide.
    """
    nthreads = min(s.num_threads, g.N)
    work = g.N * g.F * g.H_out * g.W_out * g.C * g.HH * g.WW
    if not s.split_batch or nthreads < 2 or work < s.split_min_work or not blas_controller():
        return [(0, g.N)]
    bounds = [g.N * i // nthreads for i in range(nthreads + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(nthreads)]


def run_parts(fn, parts, executor=None, blas=None) -> list:
    """``[fn(lo, hi) for (lo, hi) in parts]`` in some order, parts after the first on worker threads.

    While the workers run, BLAS is limited to one thread (``blas``, default
    :func:`blas_controller`). Parts no thread could be started for (in a
    sandbox, at interpreter shutdown) run on the calling thread. An exception
    in any part is raised after every worker has finished.

    Parameters
    ----------
    fn : callable (lo, hi) -> object
    parts : list of (int, int)
    executor : concurrent.futures.Executor, optional
        Default: a thread pool shared by every call.
    blas : object with ``limit(limits=1)``, optional
        A threadpoolctl controller; without threadpoolctl BLAS is left as it is.
    """
    if len(parts) == 1:
        return [fn(*parts[0])]
    if executor is None:
        executor = _WORKERS.get_executor(len(parts) - 1)
    if blas is None:
        blas = blas_controller()
    with blas.limit(limits=1) if blas is not None else contextlib.nullcontext():
        futures = []
        try:
            try:
                for lo, hi in parts[1:]:
                    futures.append(executor.submit(fn, lo, hi))
            except RuntimeError as exc:
                if "thread" not in str(exc) and "shutdown" not in str(exc):
                    raise
            mine = [fn(lo, hi) for lo, hi in [parts[0]] + parts[1 + len(futures):]]
        finally:
            theirs = [f.result() for f in futures]  # wait for every worker before BLAS threads come back
    return mine + theirs
