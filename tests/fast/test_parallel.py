"""Threads (convnet/fast/parallel.py): the batch split of FastConv, BLAS limits, the pooling kernels' count."""
import contextlib
import os

import numpy as np
import pytest

import convnet.fast as fast
from convnet import _checks
from convnet.fast import FastConv, FastMaxPool, parallel
from convnet.fast._config import Settings

DTYPES = [np.float32, np.float64]


def _blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


class _NullController:
    def limit(self, limits):
        return contextlib.nullcontext()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algo, case", [
    ("im2col", (5, 3, 7, 6, 4, 3, 3, 1, 1)),    # thin: per-image GEMMs
    ("im2col", (3, 6, 8, 7, 5, 3, 2, 2, 1)),    # one GEMM per chunk
    ("winograd2", (5, 4, 7, 9, 3, 3, 3, 1, 2)),
    ("winograd4", (5, 4, 7, 9, 3, 3, 3, 1, 2)),
])
def test_split_batch_matches_naive(algo, case, dtype, conv_inputs, exact_conv, assert_close_scaled):
    # Force the split on small inputs: 2 and 3 threads, parts of one image and up.
    _blas_threads()
    for n in (2, 3):
        with fast.config(split_min_work=0, conv_algorithm=algo, num_threads=n, min_part_images=1):
            g = _checks.conv_args(*conv_inputs(case, dtype, 0))
            parts = parallel.batch_parts(g, Settings(num_threads=n, split_min_work=0, min_part_images=1))
            # One part per thread at least; several per thread once the batch holds two images per thread.
            assert len(parts) >= min(n, case[0]) and (len(parts) > n or case[0] < 2 * n)
            x, w, b, cp = conv_inputs(case, dtype, 6)
            out, cache = FastConv.forward(x, w, b, cp)
            dout = np.random.default_rng(7).standard_normal(out.shape).astype(dtype)
            got = (out,) + tuple(FastConv.backward(dout, cache))
        for name, a, r in zip(("out", "dx", "dw", "db"), got, exact_conv(x, w, b, cp, dout)):
            assert_close_scaled(a, r, dtype, name, "winograd4" if algo == "winograd4" else "winograd2")


@pytest.mark.parametrize("min_work, held", [(None, True), (1, False)], ids=["default", "lowered"])
def test_small_layer_holds_blas_at_one_thread_for_the_filter_transforms(min_work, held, conv_inputs, monkeypatch):
    # Not only the parts: the transform of w (forward; backward reuses it) and of dU too; a busy machine stalls
    # them otherwise.
    # Lowering blas_threads_min_work below the layer's work leaves BLAS's threads to it.
    before = _blas_threads()
    if max(before, default=1) < 2:
        pytest.skip(f"BLAS runs {before} thread(s) here: there is no second thread to hold back")
    from convnet.fast import _backend

    seen = []
    for name in ("winograd_filter", "winograd_filter_adjoint"):
        real = getattr(_backend, name)
        monkeypatch.setattr(_backend, name, lambda *a, real=real: seen.append(_blas_threads()) or real(*a))
    settings = {} if min_work is None else {"blas_threads_min_work": min_work}
    with fast.config(conv_algorithm="winograd2", num_threads=2, **settings):
        x, w, b, cp = conv_inputs((1, 4, 8, 8, 4, 3, 3, 1, 1), np.float64, 0)
        out, cache = FastConv.forward(x, w, b, cp)
        FastConv.backward(np.ones_like(out), cache)
    assert len(seen) == 2 and all(threads == ([1] * len(before) if held else before) for threads in seen), seen
    assert _blas_threads() == before


def test_batch_parts_are_contiguous_and_balanced(conv_inputs):
    _blas_threads()
    g = _checks.conv_args(*conv_inputs((12, 3, 7, 6, 4, 3, 3, 1, 1), np.float64, 0))
    assert parallel.batch_parts(g, Settings(num_threads=3, split_min_work=0, min_part_images=1)) == [
        (i, i + 1) for i in range(12)]
    assert parallel.split(5, 3) == [(0, 1), (1, 3), (3, 5)]
    assert parallel.split(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert parallel.split(3, 1) == [(0, 3)] and parallel.split(2, 9) == [(0, 1), (1, 2)]


class _NeverRuns:
    """An executor whose workers are never scheduled (a busy machine): submit() succeeds, nothing runs."""

    def __init__(self):
        self.pending = []

    def submit(self, fn, *args):
        self.pending.append((fn, args))


def test_caller_never_waits_for_a_worker_that_has_not_started():
    never = _NeverRuns()
    calls = []
    got = parallel.run_parts(lambda lo, hi: calls.append(lo) or hi - lo, [(0, 2), (2, 5), (5, 6), (6, 10)],
                             executor=never, blas=_NullController(), workers=3)
    assert got == [2, 3, 1, 4] and calls == [0, 2, 5, 6]  # all on the caller, in order
    assert len(never.pending) == 3
    for fn, args in never.pending:  # the late workers start now: nothing left for them
        fn(*args)
    assert calls == [0, 2, 5, 6]


def test_late_worker_takes_what_is_left():
    # A worker that starts while the caller is busy with part 0 takes the next parts.
    import threading

    started = threading.Event()
    owners = {}

    class Late:
        def submit(self, fn, *args):
            t = threading.Thread(target=lambda: (started.wait(10), fn(*args)))
            t.start()

    def work(lo, hi):
        owners[lo] = threading.current_thread().name
        if lo == 0:
            started.set()
            for _ in range(200):  # let the worker claim parts 1.. meanwhile
                if len(owners) > 1:
                    break
                threading.Event().wait(0.01)
        return lo

    assert parallel.run_parts(work, [(0, 1), (1, 2), (2, 3)], executor=Late(), blas=_NullController(),
                              workers=1) == [0, 1, 2]
    assert owners[0] == threading.current_thread().name
    assert any(name != threading.current_thread().name for name in owners.values())


def test_split_batch_restores_blas_threads_and_propagates_errors():
    before = _blas_threads()
    seen = []

    def work(lo, hi):
        seen.append((lo, hi, _blas_threads()))
        if lo > 0:
            raise RuntimeError("worker failed")
        return lo

    with pytest.raises(RuntimeError, match="worker failed"):
        parallel.run_parts(work, [(0, 2), (2, 4)])
    assert sorted(s[:2] for s in seen) == [(0, 2), (2, 4)]
    assert all(all(t == 1 for t in s[2]) for s in seen)  # BLAS on one thread inside
    assert sorted(parallel.run_parts(lambda lo, hi: hi - lo, [(0, 3), (3, 4), (4, 9)])) == [1, 3, 5]
    assert _blas_threads() == before


@pytest.mark.parametrize("N,threads,parts", [(8, 2, 2), (32, 2, 2), (63, 2, 2), (64, 2, 4), (100, 2, 6), (128, 2, 8),
                                             (1000, 2, 8), (96, 3, 6), (5, 3, 3)])
def test_parts_hold_min_part_images_where_the_batch_allows(N, threads, parts, conv_inputs):
    if not parallel.blas_controller():
        pytest.skip("without threadpoolctl the batch is never split")
    g = _checks.conv_args(*conv_inputs((N, 2, 5, 5, 2, 3, 3, 1, 1), np.float32, 0))
    got = parallel.batch_parts(g, Settings(num_threads=threads, split_min_work=0, min_part_images=16))
    assert len(got) == parts and got[0][0] == 0 and got[-1][1] == N
    assert all(a[1] == b[0] for a, b in zip(got, got[1:]))


def test_no_split_when_disabled_small_or_single_threaded(conv_inputs):
    g = _checks.conv_args(*conv_inputs((8, 16, 16, 16, 16, 3, 3, 1, 1), np.float32, 0))
    expect = 2 * parallel.PARTS_PER_THREAD if parallel.blas_controller() else 1
    assert len(parallel.batch_parts(g, Settings(num_threads=2, split_min_work=0, min_part_images=1))) == expect
    assert parallel.batch_parts(g, Settings(num_threads=2, split_min_work=0, split_batch=False)) == [(0, 8)]
    assert parallel.batch_parts(g, Settings(num_threads=1, split_min_work=0)) == [(0, 8)]
    assert parallel.batch_parts(g, Settings(num_threads=2, split_min_work=10**12)) == [(0, 8)]


def test_split_batch_buffers_stay_within_budget(conv_inputs):
    # Each of the 2 threads gets half the budget: together they stay within it.
    import tracemalloc
    _blas_threads()
    N, C, H, W, F = 64, 8, 16, 16, 4
    x, w, b, cp = conv_inputs((N, C, H, W, F, 3, 3, 2, 1), np.float64, seed=0)
    per_image_cols = C * 9 * 8 * 8 * 8
    budget = 8 * per_image_cols
    with fast.config(split_min_work=0, column_budget=budget, num_threads=2):
        out, cache = FastConv.forward(x, w, b, cp)
        tracemalloc.start()
        FastConv.forward(x, w, b, cp)
        FastConv.backward(np.ones_like(out), cache)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= budget + x.nbytes + 2 * out.nbytes + 2**20, (peak, budget)


def test_split_batch_runs_serially_when_no_thread_can_start():
    class NoThreads:
        def submit(self, *args):
            raise RuntimeError("can't start new thread")

    calls = []
    assert sorted(parallel.run_parts(lambda lo, hi: calls.append(lo) or hi - lo, [(0, 2), (2, 5), (5, 6)],
                                     executor=NoThreads(), blas=_NullController())) == [1, 2, 3]
    assert sorted(calls) == [0, 2, 5]  # every part exactly once


def _split_conv_in_child(q, conv_inputs):
    with fast.config(split_min_work=0, num_threads=2):
        x, w, b, cp = conv_inputs((4, 3, 8, 8, 4, 3, 3, 1, 1), np.float64, 1)
        q.put(FastConv.forward(x, w, b, cp)[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_split_batch_works_in_a_forked_child(conv_inputs):
    # The worker pool does not survive fork: the child must start its own, not hang.
    import multiprocessing
    _blas_threads()
    with fast.config(split_min_work=0, num_threads=2):
        x, w, b, cp = conv_inputs((4, 3, 8, 8, 4, 3, 3, 1, 1), np.float64, 1)
        expected = FastConv.forward(x, w, b, cp)[0]  # the parent's pool now exists
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=_split_conv_in_child, args=(q, conv_inputs))
        p.start()
        try:
            got = q.get(timeout=60)  # read before join: the child flushes the queue on exit
        except Exception:
            p.kill()
            pytest.fail("FastConv hung (or failed) in a forked child")
        p.join(30)
        assert p.exitcode == 0
    np.testing.assert_array_equal(got, expected)


def test_num_threads_reaches_the_pool_kernels(monkeypatch, compiled):
    # The thread count is what the kernels are given; results do not depend on it.
    calls = []
    real = parallel.kernel_threads
    monkeypatch.setattr(parallel, "kernel_threads", lambda work, s: calls.append(real(work, s)) or calls[-1])
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    outs = []
    for n in (1, 2):
        with fast.config(num_threads=n, parallel_min_work=0):
            outs.append(FastMaxPool.forward(x, {"pool_height": 2, "pool_width": 2, "stride": 2})[0])
    assert calls == [1, 2]
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_run_planes_gives_one_thread_the_whole_arrays_and_threads_every_plane_once(threads):
    seen = []

    def kernel(a, b, scale, nthreads):
        seen.append((a.shape[0], nthreads, np.shares_memory(a, src)))
        b[:] = a * scale

    src = np.arange(22.0).reshape(11, 2)
    dst = np.full_like(src, np.nan)
    parallel.run_planes(kernel, (src, dst), (3.0,), src.size, Settings(num_threads=threads, parallel_min_work=5))
    np.testing.assert_array_equal(dst, 3 * src)
    assert all(n == 1 and shared for _, n, shared in seen)  # each call on one thread, on views of the arrays
    assert sum(k for k, _, _ in seen) == 11
    assert len(seen) == (1 if threads == 1 else min(11, threads * parallel.PARTS_PER_THREAD))
    seen.clear()
    parallel.run_planes(kernel, (src, dst), (1.0,), src.size, Settings(num_threads=threads, parallel_min_work=23))
    assert [k for k, _, _ in seen] == [11]  # below parallel_min_work: one call whatever the threads


def test_kernel_threads_follow_the_settings():
    assert parallel.kernel_threads(10, Settings(num_threads=4, parallel_min_work=10)) == 4
    assert parallel.kernel_threads(9, Settings(num_threads=4, parallel_min_work=10)) == 1


def test_fold_combines_in_part_order_whatever_finishes_first():
    # Non-associative fold (string concatenation) with parts finishing in reverse order on real threads.
    import threading
    import time

    def work(lo, hi):
        time.sleep(0.002 * (6 - lo))
        return str(lo)

    for workers in (0, 1, 3):
        got = parallel.run_parts(work, [(i, i + 1) for i in range(6)], workers=workers, limit_blas=False,
                                 fold=lambda acc, r: acc + r)
        assert got == "012345"
    with pytest.raises(ZeroDivisionError):
        parallel.run_parts(lambda lo, hi: lo, [(0, 1), (1, 2)], workers=1, limit_blas=False,
                           fold=lambda acc, r: acc / 0)
    assert threading.active_count() >= 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_conv_is_deterministic(dtype, conv_inputs):
    # dw and db are folded in part order: repeated split runs agree bit for bit with each other.
    x, w, b, cp = conv_inputs((16, 8, 12, 12, 8, 3, 3, 1, 1), dtype, seed=4)
    with fast.config(split_min_work=0, num_threads=2, min_part_images=1):  # 8 parts: folds out of order too
        out, cache = FastConv.forward(x, w, b, cp)
        dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
        first = FastConv.backward(dout, cache)
        for _ in range(5):
            again = FastConv.backward(dout, cache)
            for a, r in zip(again, first):
                np.testing.assert_array_equal(a, r)


class _CountingLibrary:
    """A threadpoolctl library controller that is not OpenBLAS: its own get and set are the way in."""

    internal_api = "mkl"

    def __init__(self, n):
        self.num_threads, self.calls = n, []

    def set_num_threads(self, n):
        self.calls.append(n)
        self.num_threads = n


def test_one_thread_uses_a_controllers_own_calls_where_it_is_not_openblas():
    libs = [_CountingLibrary(4), _CountingLibrary(1)]
    with parallel._OneThread(libs):
        assert [lib.num_threads for lib in libs] == [1, 1]
    assert [lib.num_threads for lib in libs] == [4, 1] and [lib.calls for lib in libs] == [[1, 4], []]


def test_one_thread_calls_openblas_directly():
    # The C functions themselves, not threadpoolctl's wrappers (which look the symbols up on every call).
    libs = [lib for lib in getattr(parallel.blas_controller() or None, "lib_controllers", [])
            if lib.internal_api == "openblas"]
    if not libs:
        pytest.skip("no OpenBLAS is loaded here (numpy uses another BLAS, or threadpoolctl is missing)")
    get, set_ = parallel._thread_functions(libs[0])
    assert type(get).__name__ == "_FuncPtr" and get() == libs[0].num_threads
    before = get()
    set_(1)
    assert libs[0].num_threads == 1
    set_(before)
    assert libs[0].num_threads == before


def test_one_blas_thread_holds_and_restores_every_blas_library():
    before = _blas_threads()
    if max(before, default=1) < 2:
        pytest.skip(f"BLAS runs {before} thread(s) here: nothing to hold back")
    with parallel.one_blas_thread():
        assert all(n == 1 for n in _blas_threads())
        with parallel.one_blas_thread():  # nested: the inner exit leaves the outer limit in place
            pass
        assert all(n == 1 for n in _blas_threads())
    assert _blas_threads() == before
    with pytest.raises(ZeroDivisionError):
        with parallel.one_blas_thread():
            1 / 0
    assert _blas_threads() == before
    with parallel.one_blas_thread(active=False):
        assert _blas_threads() == before


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_give_one_threads_results_on_several(dtype, compiled, threads_agree):
    # One thread runs a plain loop, more run an OpenMP region over the same per-plane functions: same outputs.
    rng = np.random.default_rng(9)
    run = threads_agree

    x = rng.standard_normal((3, 5, 9, 8)).astype(dtype)
    planes = x.reshape(15, 9, 8)
    pool, im2col = compiled.pool, compiled.im2col
    out, arg = run(lambda o, a, t: pool.maxpool_forward(planes, o, a, 3, 3, 2, 1, t),
                   np.empty((15, 4, 3), dtype), np.empty((15, 4, 3), np.int32))
    run(lambda d, t: pool.maxpool_backward(out.reshape(15, 12), arg.reshape(15, 12), d, t), np.empty((15, 72), dtype))
    avg, = run(lambda o, t: pool.avgpool_forward(planes, o, 3, 3, 1, 1, t), np.empty((15, 9, 8), dtype))  # separable
    run(lambda d, t: pool.avgpool_backward(avg, d, 3, 3, 1, 1, t), np.empty((15, 9, 8), dtype))
    mean, = run(lambda o, t: pool.avgpool_forward(planes, o, 9, 8, 1, 0, t), np.empty((15, 1, 1), dtype))  # global
    run(lambda d, t: pool.avgpool_backward(mean, d, 9, 8, 1, 0, t), np.empty((15, 9, 8), dtype))
    cols, = run(lambda c, t: im2col.im2col_into(x, c, 3, 3, 2, 1, t), np.empty((45, 3, 20), dtype))
    run(lambda d, t: im2col.col2im_into(cols, d, 3, 3, 2, 1, t), np.empty(x.shape, dtype))
