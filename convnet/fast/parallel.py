"""Threads for the fast layers: a convolution's batch, the pooling planes, the batch-norm channels.

A convolution with enough work splits its batch into contiguous parts,
up to :data:`PARTS_PER_THREAD` per thread (fewer where parts would hold fewer
than ``min_part_images`` images). Each part runs the whole pipeline
(im2col or the Winograd transforms, the GEMMs, col2im) on whichever of the
``num_threads`` threads claims it (:func:`run_parts`) while numpy's BLAS is
limited to one thread through threadpoolctl: BLAS's own threads gain little
on chunk-sized GEMMs, and their spinning workers slow the kernels between
them (see benchmarks/README.md). Each thread gets an equal share of the
column budget. Without threadpoolctl the batch is not split. The pooling and
batch-norm kernels split their planes or channels the same way
(:func:`run_split`); the kernels themselves run on one thread each.

Parts are claimed, not assigned: the calling thread works too and never
waits for a worker that has not started, so on a busy machine (more runnable
threads than cores) a descheduled worker delays a call by at most the part it
holds, where OpenMP's barrier waited for it whole time slices. With
``num_threads=1`` no thread is ever started.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["traffic", "kernel_threads", "batch_parts", "forward_work", "small_work", "small_for_blas_threads", "blas_controller",
           "one_blas_thread", "run_parts", "split", "run_split", "run_planes", "PARTS_PER_THREAD"]

# Parts per thread: a thread that is descheduled leaves its unclaimed parts to the others.
PARTS_PER_THREAD = 4


def traffic(a) -> int:
    """``a``'s size in float32 elements (a float64 one counts twice): the work of a kernel whose time follows the
    bytes it moves (batch norm, max pooling's forward pass)."""
    return a.size * a.itemsize // 4


def kernel_threads(work: int, s) -> int:
    """Threads for a pooling or batch-norm kernel over ``work`` elements under the settings ``s``."""
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


@functools.lru_cache(maxsize=None)
def _thread_functions(lib):
    """(get, set) of one threadpoolctl library controller's thread count: OpenBLAS's own C functions where
    they are found (threadpoolctl looks each symbol up again on every call), else the controller's.
    Found once per controller (controllers compare by identity)."""
    dll = getattr(lib, "dynlib", None)
    if getattr(lib, "internal_api", None) == "openblas" and dll is not None:
        for prefix, suffix in (("", ""), ("scipy_", "64_"), ("scipy_", ""), ("", "64_")):
            try:
                return (getattr(dll, f"{prefix}openblas_get_num_threads{suffix}"),
                        getattr(dll, f"{prefix}openblas_set_num_threads{suffix}"))
            except AttributeError:
                continue
    return (lambda: lib.num_threads), lib.set_num_threads


class _OneThread:
    """Holds threadpoolctl's BLAS libraries at one thread while it lasts, restoring each one's count after.

    The libraries' own get/set calls (:func:`_thread_functions`): threadpoolctl's
    ``limit()`` costs about 12 us per use and its controllers' get/set 1.5 us
    together, which a one-image layer pays twice per step.
    """

    def __init__(self, libs):
        self.functions = [_thread_functions(lib) for lib in libs]
        self.saved = ()

    def __enter__(self):
        self.saved = [(set_, get()) for get, set_ in self.functions]
        for set_, n in self.saved:
            if n != 1:
                set_(1)
        return self

    def __exit__(self, *exc):
        for set_, n in self.saved:
            if n != 1:
                set_(n)


def one_blas_thread(active: bool = True):
    """A context that holds BLAS at one thread while it lasts, when ``active`` and threadpoolctl is there."""
    return _limit(blas_controller() if active else None)


def forward_work(g) -> int:
    """A convolution's forward multiply-adds: ``N*F*H_out*W_out*C*HH*WW``."""
    return g.N * g.F * g.H_out * g.W_out * g.C * g.HH * g.WW


def small_work(g, s) -> bool:
    """A convolution below ``split_min_work``: too small to split its batch."""
    return forward_work(g) < s.split_min_work


def small_for_blas_threads(g, s) -> bool:
    """A convolution below the ``blas_threads_min_work`` setting: its GEMMs run on one BLAS thread."""
    return forward_work(g) < s.blas_threads_min_work


def batch_parts(g, s) -> list:
    """``[(lo, hi), ...]``: contiguous slices of the batch, one per thread (one slice: no split).

    Parameters
    ----------
    g : convnet._checks.ConvGeometry
    s : convnet.fast._config.Settings
        ``num_threads``, ``split_batch``, ``split_min_work`` and ``min_part_images`` decide:
        up to :data:`PARTS_PER_THREAD` parts per thread, each of at least
        ``min_part_images`` images where the batch allows.
    """
    nthreads = min(s.num_threads, g.N)
    if not s.split_batch or nthreads < 2 or small_work(g, s) or not blas_controller():
        return [(0, g.N)]
    per_thread = max(1, min(PARTS_PER_THREAD, g.N // (nthreads * s.min_part_images)))
    return split(g.N, nthreads * per_thread)


class _Claims:
    """Parts handed out one at a time to whichever thread asks next; the results in part order.

    With ``fold``, results are folded into one value in part order as soon as
    their predecessors are in (``fold(fold(r0, r1), r2)...``): the same
    arithmetic whichever thread ran which part, and at most the results that
    finished out of order are held at once.
    """

    def __init__(self, fn, parts, fold=None):
        self.fn, self.parts, self.fold = fn, parts, fold
        self.cond = threading.Condition()
        self.next = 0
        self.running = 0
        self.results = [None] * len(parts)
        self.done = [False] * len(parts)
        self.folded = 0  # results[0] holds the fold of the first `folded` results
        self.errors = []

    def _store(self, i, result):
        # Under the lock.
        self.results[i] = result
        self.done[i] = True
        if self.fold is None:
            return
        while self.folded < len(self.parts) and self.done[self.folded]:
            if self.folded > 0:
                self.results[0] = self.fold(self.results[0], self.results[self.folded])
                self.results[self.folded] = None
            self.folded += 1

    def work(self):
        """Run unclaimed parts until none is left (or one failed); returns at once if none is."""
        while True:
            with self.cond:
                if self.next >= len(self.parts) or self.errors:
                    return
                i = self.next
                self.next += 1
                self.running += 1
            try:
                result = self.fn(*self.parts[i])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                with self.cond:
                    self.errors.append(exc)
                    self.running -= 1
                    self.cond.notify_all()
                return
            with self.cond:
                try:
                    self._store(i, result)
                except BaseException as exc:  # noqa: BLE001 - a failed fold, handed to the caller
                    self.errors.append(exc)
                self.running -= 1
                self.cond.notify_all()

    def wait(self):
        """Until no claimed part is still running."""
        with self.cond:
            while self.running:
                self.cond.wait()


def run_parts(fn, parts, executor=None, blas=None, workers=None, limit_blas=True, fold=None):
    """``[fn(lo, hi) for (lo, hi) in parts]``, the parts claimed one by one by this thread and ``workers`` others.

    The calling thread works through the parts too and never waits for a
    worker that has not started: a worker that starts late (the machine is
    busy, its thread was not scheduled) finds no part left and returns. The
    caller only waits for parts already running. So a preempted thread costs
    at most one part, and with no thread at all (a sandbox that forbids
    them, interpreter shutdown) every part runs on the calling thread.
    While parts run, BLAS is limited to one thread (``blas``, default
    :func:`blas_controller`) unless ``limit_blas`` is False. An exception in
    a part stops further claims and is raised once the running parts end.

    Parameters
    ----------
    fn : callable (lo, hi) -> object
    parts : list of (int, int)
    executor : concurrent.futures.Executor, optional
        Default: a thread pool shared by every call.
    blas : object with ``limit(limits=1)``, optional
        A threadpoolctl controller; without threadpoolctl BLAS is left as it is.
    workers : int, optional
        Threads besides the caller (default ``len(parts) - 1``).
    limit_blas : bool
        Hold BLAS at one thread while the parts run (for parts that call BLAS).
    fold : callable (acc, result) -> acc, optional
        Combine the results in part order (deterministic whichever thread ran
        what) and return the combination instead of the list.

    Returns
    -------
    list, or the folded value with ``fold``
    """
    workers = len(parts) - 1 if workers is None else min(workers, len(parts) - 1)
    if workers < 1:
        if blas is None and limit_blas:
            blas = blas_controller()
        with _limit(blas) if limit_blas else contextlib.nullcontext():
            results = [fn(*p) for p in parts]
        if fold is None:
            return results
        acc = results[0]
        for r in results[1:]:
            acc = fold(acc, r)
        return acc
    if executor is None:
        executor = _WORKERS.get_executor(workers)
    if blas is None and limit_blas:
        blas = blas_controller()
    claims = _Claims(fn, parts, fold)
    with _limit(blas) if limit_blas else contextlib.nullcontext():
        try:
            try:
                for _ in range(workers):
                    executor.submit(claims.work)
            except RuntimeError as exc:
                if "thread" not in str(exc) and "shutdown" not in str(exc):
                    raise
            claims.work()
        finally:
            claims.wait()  # no part may run once BLAS threads come back
    if claims.errors:
        raise claims.errors[0]
    return claims.results if fold is None else claims.results[0]


def _limit(blas):
    # A test's controller may have only limit(); threadpoolctl's has lib_controllers too.
    if blas is None:
        return contextlib.nullcontext()
    libs = getattr(blas, "lib_controllers", None)
    return _OneThread(libs) if libs is not None else blas.limit(limits=1)


def split(n: int, pieces: int) -> list:
    """``[(lo, hi), ...]``: ``min(pieces, n)`` contiguous, balanced slices of ``range(n)``."""
    pieces = max(1, min(pieces, n))
    bounds = [n * i // pieces for i in range(pieces + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(pieces)]


def run_split(fn, n: int, work: int, s) -> None:
    """``fn(lo, hi)`` over slices of ``range(n)``, on :func:`kernel_threads` threads (no BLAS inside)."""
    threads = kernel_threads(work, s)
    if threads == 1:
        fn(0, n)  # the common small call: no parts to hand out
        return
    _run_split_on(fn, n, threads)


def _run_split_on(fn, n: int, threads: int) -> None:
    run_parts(fn, split(n, threads * PARTS_PER_THREAD), workers=threads - 1, limit_blas=False)


def run_planes(kernel, arrays, args, work: int, s) -> None:
    """``kernel(*arrays, *args, 1)`` with the arrays' leading axis split as :func:`run_split` splits ``range(n)``.

    On one thread the kernel gets the whole arrays in one call: a small layer
    pays no slicing and no closure (a one-image pooling layer's kernels take
    2-3 us, their call as much again).
    """
    threads = kernel_threads(work, s)
    if threads == 1:
        kernel(*arrays, *args, 1)
        return
    _run_split_on(lambda lo, hi: kernel(*[a[lo:hi] for a in arrays], *args, 1), arrays[0].shape[0], threads)
