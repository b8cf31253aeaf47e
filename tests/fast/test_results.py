"""The layers' returned arrays, reused once nothing else holds them (convnet/fast/results.py)."""
import gc
import threading

import numpy as np
import pytest

import convnet.fast as fast
from convnet.fast import FastConv, FastMaxPool, results

BIG = (results.MIN_BYTES // 8 + 40,)  # float64 elements: just past the size from which results are kept


@pytest.fixture(autouse=True)
def _fresh_cache():
    results.release()
    yield
    results.release()


def _addr(a):
    return a.__array_interface__["data"][0]


def test_a_dropped_result_is_reused_and_a_small_one_is_plain():
    a = results.empty(BIG, np.float64)
    where = _addr(a)
    assert results.held_bytes() == a.nbytes
    del a
    b = results.empty(BIG, np.float64)
    assert _addr(b) == where and results.held_bytes() == b.nbytes
    # Same bytes, another dtype and shape: the same buffer.
    del b
    c = results.empty((2, BIG[0]), np.float32)
    assert _addr(c) == where and c.shape == (2, BIG[0]) and c.dtype == np.float32 and c.flags.c_contiguous
    small = results.empty((results.MIN_BYTES // 8 - 1,), np.float64)
    assert small.flags.owndata and results.held_bytes() == c.nbytes


def test_the_most_recently_used_free_buffer_is_handed_out():
    # Three results of one size, dropped in turn: a fourth request gets the one dropped last, and keeps
    # getting it while each is dropped before the next (no rotation through buffers gone cold).
    a, b, c = (results.empty(BIG, np.float64) for _ in range(3))
    where = {name: _addr(arr) for name, arr in zip("abc", (a, b, c))}
    del c, a
    d = results.empty(BIG, np.float64)
    assert _addr(d) == where["c"]
    del d
    for _ in range(4):
        e = results.empty(BIG, np.float64)
        assert _addr(e) == where["c"]
        del e
    assert _addr(results.empty(BIG, np.float64)) == where["c"] and results.held_bytes() == 3 * b.nbytes


class _Holder:
    def __init__(self, obj):
        self.obj = obj


# Everything that keeps a result's memory reachable from Python: the result must not be handed out again.
# Each entry: (make the holder from the result, read the holder back as float64 values).
HOLDERS = {
    "the array": (lambda a: a, lambda h: h),
    "a slice": (lambda a: a[1:], lambda h: h),
    "a reshaped view": (lambda a: a.reshape(-1, 2)[::2], lambda h: h),
    "a dtype view": (lambda a: a.view(np.int64), lambda h: h.view(np.float64)),
    "a transposed 2-d view": (lambda a: a[:len(a) // 4 * 4].reshape(4, -1).T, lambda h: h),
    "a memoryview": (lambda a: memoryview(a), lambda h: np.asarray(h)),
    "a list": (lambda a: [a], lambda h: h[0]),
    "an object": (lambda a: _Holder(a[3:]), lambda h: h.obj),
    "np.asarray": (lambda a: np.asarray(a), lambda h: h),
}


@pytest.mark.parametrize("how", sorted(HOLDERS))
def test_a_result_anything_still_refers_to_is_never_handed_out_again(how):
    make, read = HOLDERS[how]
    a = results.empty(BIG, np.float64)
    a[:] = 7.0
    where = _addr(a)
    holder = make(a)
    del a
    b = results.empty(BIG, np.float64)
    assert _addr(b) != where
    b[:] = -1.0
    assert np.all(read(holder) == 7.0)
    del holder
    gc.collect()
    c = results.empty(BIG, np.float64)
    assert _addr(c) == where


def test_the_limit_bounds_the_kept_bytes_least_recently_used_go_first():
    nbytes = BIG[0] * 8
    with fast.config(result_cache_limit=3 * nbytes):
        live = [results.empty(BIG, np.float64) for _ in range(5)]
        assert results.held_bytes() == 3 * nbytes
        for i, a in enumerate(live):
            a[:] = i  # the dropped ones stay valid for their holders
        kept = [_addr(a) for a in live[2:]]
        del live[:], a
        again = [results.empty(BIG, np.float64) for _ in range(3)]
        assert sorted(_addr(a) for a in again) == sorted(kept)
        assert results.held_bytes() <= 3 * nbytes
    with fast.config(result_cache_limit=nbytes - 1):
        plain = results.empty(BIG, np.float64)
        assert plain.flags.owndata and results.held_bytes() <= nbytes - 1


def test_release_and_a_zero_limit_keep_nothing_and_held_results_stay_valid():
    a = results.empty(BIG, np.float64)
    a[:] = 3.0
    assert fast.release_workspaces() >= a.nbytes and results.held_bytes() == 0
    assert np.all(a == 3.0)
    with fast.config(result_cache_limit=0):
        b = results.empty(BIG, np.float64)
        assert b.flags.owndata and results.held_bytes() == 0


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (2.0, TypeError), ("1", TypeError)])
def test_result_cache_limit_is_checked(bad, exc):
    with pytest.raises(exc, match="result_cache_limit"):
        with fast.config(result_cache_limit=bad):
            pass


def test_threads_never_share_a_live_result():
    errors = []

    def loop(k):
        try:
            mine = []
            for i in range(300):
                a = results.empty(BIG, np.float64)
                a[:] = k * 1000 + i
                mine.append((a, k * 1000 + i))
                if len(mine) > 2:
                    old, value = mine.pop(0)
                    assert np.all(old == value), f"thread {k}: a result it held was handed to another"
        except AssertionError as exc:  # handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert results.held_bytes() <= fast.get_config()["result_cache_limit"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_reuse_results_without_touching_the_ones_a_caller_holds(dtype):
    rng = np.random.default_rng(4)
    pp = {"pool_height": 2, "pool_width": 2, "stride": 2}
    xs = [rng.standard_normal((8, 16, 96, 96)).astype(dtype) for _ in range(3)]  # 4.7 MB and more
    w = rng.standard_normal((16, 16, 3, 3)).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    cp = {"stride": 1, "pad": 1}
    held, seen = [], set()
    for step in range(6):
        x = xs[step % 3]
        out, cache = FastConv.forward(x, w, b, cp)
        pooled, pcache = FastMaxPool.forward(out, pp)
        dout = FastMaxPool.backward(pooled, pcache)
        dx, dw, db = FastConv.backward(dout, cache)
        seen.update(_addr(a) for a in (out, dout, dx))
        # Every third step's results stay with the caller; later steps must not write into them.
        if step % 3 == 0:
            held.append((x, out.copy(), out, dx.copy(), dx))
    for x, out_copy, out, dx_copy, dx in held:
        np.testing.assert_array_equal(out, out_copy)
        np.testing.assert_array_equal(dx, dx_copy)
    # Without reuse six steps would give 18 addresses; with it the free ones come back.
    assert len(seen) < 12, f"{len(seen)} distinct result buffers in 6 steps"
    with fast.config(result_cache_limit=0):
        ref, _ = FastConv.forward(xs[0], w, b, cp)
    np.testing.assert_array_equal(held[0][2], ref)


_FAULTS_CHILD = r"""
import resource, sys
import numpy as np
from convnet import fast
from convnet.fast import FastMaxPool
x = np.random.default_rng(0).standard_normal((32, 64, 56, 56))  # dx is 51 MB: past glibc's largest mmap threshold
pp = {"pool_height": 2, "pool_width": 2, "stride": 2}
with fast.config(result_cache_limit=int(sys.argv[1])):
    for _ in range(3):
        out, cache = FastMaxPool.forward(x, pp)
        dx = FastMaxPool.backward(out, cache)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        out, cache = FastMaxPool.forward(x, pp)
        dx = FastMaxPool.backward(out, cache)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def test_repeated_layer_calls_fault_in_no_fresh_pages(child_number):
    if not fast.HAVE_CYTHON:
        pytest.skip("the numpy fallback's pooling makes temporaries as large as its results, fresh each call")
    # Each step returns 70 MB (out, argmax, dx): 13,000 faults of 4 KiB pages per step fresh on this machine
    # (some come from glibc's heap), 0.1 kept: the loop holds one step's results, the step before's are free.
    # 4 KiB pages (no huge-page advice): the faults count bytes.
    kept = child_number(_FAULTS_CHILD, fast.get_config()["result_cache_limit"], NUMPY_MADVISE_HUGEPAGE="0")
    fresh = child_number(_FAULTS_CHILD, 0, NUMPY_MADVISE_HUGEPAGE="0")
    assert kept < 500 and fresh > 3000, f"{kept:.0f} minor page faults per step kept, {fresh:.0f} fresh"
