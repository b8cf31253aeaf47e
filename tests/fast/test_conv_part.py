"""A batch part in one compiled call (convnet/_fast/_conv_part.pyx, convnet/fast/_cblas.py): numpy's OpenBLAS
found, the same results as the numpy path, and no GIL held while a part runs."""
import ctypes.util
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

import convnet.fast as fast
from convnet.fast import FastConv, _backend, _cblas, conv_im2col, network_input
from convnet.fast.conv_im2col import compiled_part

DTYPES = [np.float32, np.float64]
# Agreement of the compiled part with numpy's path: the same GEMMs, summed in another order where dw and db
# add chunks, images or parts; relative to the array's scale.
REL = {np.float32: 2e-6, np.float64: 1e-14}


def test_numpy_openblas_is_found(compiled, numpy_blas):
    blas = numpy_blas
    if "openblas" not in str(blas.get("name", "")).lower():
        pytest.skip(f"numpy's BLAS is {blas.get('name', 'unknown')}, not OpenBLAS")
    found = _cblas.find_gemm()
    assert found is not None and _backend.GEMM_IN_KERNELS
    sgemm, dgemm, ilp64 = found
    assert sgemm and dgemm and sgemm != dgemm
    assert ilp64 is ("USE64BITINT" in blas.get("openblas configuration", ""))
    assert _backend.conv_part.gemm_ready()


def test_no_gemm_without_openblas(tmp_path):
    libc = ctypes.util.find_library("c")
    if libc is None:
        pytest.skip("no C library found to search")
    assert _cblas.find_gemm(libc) is None  # no cblas_sgemm there
    assert _cblas.find_gemm(str(tmp_path / "missing.so")) is None


def test_compiled_part_predicate(monkeypatch):
    g = SimpleNamespace(F=8, C=4, HH=3, WW=3, H_out=5, W_out=5)
    on, off = fast._config.Settings(gemm_in_kernels=True), fast._config.Settings(gemm_in_kernels=False)
    assert not compiled_part(g, off, 4)
    monkeypatch.setattr(_backend, "GEMM_IN_KERNELS", False)
    assert not compiled_part(g, on, 4)
    monkeypatch.setattr(_backend, "GEMM_IN_KERNELS", True)
    monkeypatch.setattr(_backend, "GEMM_ILP64", False)
    assert compiled_part(g, on, 4)
    assert not compiled_part(g, on, 2**31 // 25 + 1)  # a GEMM dimension past a 32-bit BLAS integer
    monkeypatch.setattr(_backend, "GEMM_ILP64", True)
    assert compiled_part(g, on, 2**31 // 25 + 1)


def _run(x, w, b, cp, dout, settings, as_network_input=False):
    with fast.config(**settings):
        if as_network_input:
            with network_input(x):
                out, cache = FastConv.forward(x, w, b, cp)
        else:
            out, cache = FastConv.forward(x, w, b, cp)
        return (out, *FastConv.backward(dout, cache))


def _assert_scaled(a, r, dtype, what):
    assert a.dtype == r.dtype == dtype and a.shape == r.shape, what
    scale = max(1.0, float(np.max(np.abs(r))))
    assert float(np.max(np.abs(a.astype(np.float64) - r))) <= REL[dtype] * scale, what


# (N, C, H, W, F, HH, WW, stride, pad), the settings: per-image GEMMs (C*HH*WW <= 32) and the gathered dout,
# dw written as it lies (chunks of fewer than 512 columns) and transposed, chunks of one image, parts on threads.
PART_CASES = [
    ((6, 3, 9, 8, 5, 3, 3, 1, 1), {}),
    ((6, 8, 9, 8, 5, 3, 3, 2, 1), {}),
    ((5, 6, 14, 14, 16, 5, 5, 1, 0), {}),
    ((5, 6, 14, 14, 16, 5, 5, 1, 0), {"column_budget": 1}),
    ((9, 16, 10, 10, 8, 3, 2, 2, 1), {"column_budget": 1, "split_min_work": 1, "min_part_images": 2}),
    ((8, 16, 12, 12, 12, 3, 3, 1, 1), {"split_min_work": 1, "min_part_images": 1, "num_threads": 2}),
    ((2, 2, 3, 3, 2, 7, 7, 1, 2), {}),
]
PART_IDS = ["thin-per-image", "stride2", "lenet-c2", "one-image-chunks", "parts-and-chunks", "threads", "big-kernel"]


@pytest.mark.parametrize("case, settings", PART_CASES, ids=PART_IDS)
@pytest.mark.parametrize("algorithm", ["im2col", "im2row"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_compiled_part_matches_the_numpy_path(case, settings, algorithm, dtype, conv_inputs, gemm_in_kernels):
    _check_compiled_against_numpy(case, dict(settings, conv_algorithm=algorithm), dtype, conv_inputs, 3)


def _check_compiled_against_numpy(case, settings, dtype, conv_inputs, seed):
    # gemm_in_kernels on against off: out, dx, dw and db; as a network's input, no dx and the same dw and db.
    x, w, b, cp = conv_inputs(case, dtype, seed)
    dout = np.random.default_rng(seed + 1).standard_normal(FastConv.forward(x, w, b, cp)[0].shape).astype(dtype)
    ref = _run(x, w, b, cp, dout, dict(settings, gemm_in_kernels=False))
    got = _run(x, w, b, cp, dout, dict(settings, gemm_in_kernels=True))
    for what, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        _assert_scaled(a, r, dtype, what)
    got_input = _run(x, w, b, cp, dout, dict(settings, gemm_in_kernels=True), as_network_input=True)
    assert got_input[1] is None
    for a, r in zip(got_input[2:], got[2:]):
        np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("dw_direct_max", [0, 10**9])
def test_both_dw_orientations(dw_direct_max, conv_inputs, monkeypatch, gemm_in_kernels):
    # dw^T accumulated (long chunks) or dw as it lies (short ones): either way the numpy path's dw.
    x, w, b, cp = conv_inputs((4, 8, 10, 10, 6, 3, 3, 1, 1), np.float64, 5)
    dout = np.random.default_rng(6).standard_normal((4, 6, 10, 10))
    monkeypatch.setattr(conv_im2col, "DW_DIRECT_MAX_COLUMNS", dw_direct_max)
    ref = _run(x, w, b, cp, dout, {"conv_algorithm": "im2col", "gemm_in_kernels": False})
    got = _run(x, w, b, cp, dout, {"conv_algorithm": "im2col", "gemm_in_kernels": True})
    for what, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        _assert_scaled(a, r, np.float64, what)


def test_a_tiny_part_by_hand(gemm_in_kernels):
    # One 1x3x3 image of ones, a 2x2 filter of ones, bias 1: each output is 4 + 1; dout of ones sends each
    # input the number of windows covering it, dw = the sum over the 4 windows of 1 = 4, db = 4.
    x = np.ones((1, 1, 3, 3))
    w = np.ones((1, 1, 2, 2))
    b = np.ones(1)
    for algorithm in ("im2col", "im2row"):
        out, dx, dw, db = _run(x, w, b, {"stride": 1, "pad": 0}, np.ones((1, 1, 2, 2)),
                               {"conv_algorithm": algorithm})
        assert out.tolist() == [[[[5.0, 5.0], [5.0, 5.0]]]]
        assert dx.tolist() == [[[[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]]]
        assert dw.tolist() == [[[[4.0, 4.0], [4.0, 4.0]]]] and db.tolist() == [4.0]


@pytest.mark.parametrize("kernel", ["im2col_forward", "im2row_backward"])
def test_a_part_runs_without_the_gil(kernel, gemm_in_kernels):
    # While a part runs on another thread, this thread keeps running Python: with the GIL held for the
    # whole call, no timestamp of this thread could fall inside it.
    rng = np.random.default_rng(0)
    N, C, H, F, K = 16, 32, 32, 32, 32 * 9
    x = rng.standard_normal((N, C, H, H))
    w = rng.standard_normal((F, K))
    b = rng.standard_normal(F)
    P = H * H
    if kernel == "im2col_forward":
        out = np.empty((N, F, P))
        args = (x, w, b, out, np.empty(K * N * P), np.empty(F * N * P), 0, N, N, 3, 3, 1, 1)
    else:
        dout = rng.standard_normal((N, F, P))
        args = (x, w, dout, np.empty_like(x), np.empty((F, K)), np.empty(F), np.empty(N * P * K),
                np.empty(N * P * K), np.empty(N * P * F), np.empty(C * P), 0, N, N, 3, 3, 1, 1)
    call = getattr(gemm_in_kernels, kernel)
    span = []
    started = threading.Event()

    def part():
        started.set()
        t0 = time.perf_counter()
        call(*args)
        span.extend((t0, time.perf_counter()))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # a short hand-over time: the part need not be long to tell
    try:
        worker = threading.Thread(target=part)
        worker.start()
        started.wait()
        stamps = []
        while worker.is_alive():
            stamps.append(time.perf_counter())
        worker.join()
    finally:
        sys.setswitchinterval(interval)
    t0, t1 = span
    # A call that holds the GIL may still let this thread in near its end (a switch interval before the
    # worker's last timestamp): only the first half of the part counts.
    inside = sum(t0 < t < (t0 + t1) / 2 for t in stamps)
    assert t1 - t0 > 0.004, f"the part took {1e3 * (t1 - t0):.1f} ms, too short to tell"
    assert inside >= 100, f"{inside} steps of this thread ran in the first half of the {1e3 * (t1 - t0):.1f} ms part"


# One image's GEMMs shared with the kernels' worker thread (split_image_gemms): whole batches under
# blas_threads_min_work. Per-image GEMMs (K <= 32), the gathered dout, stride 2, two images.
SPLIT_CASES = [
    (1, 3, 9, 9, 8, 3, 3, 1, 1),
    (1, 16, 8, 8, 32, 3, 3, 1, 1),
    (1, 16, 12, 12, 24, 3, 3, 2, 1),
    (2, 6, 14, 14, 16, 5, 5, 1, 0),
]
SPLIT = {"num_threads": 2, "split_image_gemms": True}


def test_split_gemms_predicate(monkeypatch):
    g = SimpleNamespace(N=1, F=64, C=32, HH=3, WW=3, H_out=8, W_out=8)
    s = fast._config.Settings(num_threads=2)
    assert conv_im2col.split_gemms(g, s, 0, 1)
    assert not conv_im2col.split_gemms(g, fast._config.Settings(num_threads=2, split_image_gemms=False), 0, 1)
    assert not conv_im2col.split_gemms(g, fast._config.Settings(num_threads=1), 0, 1)
    assert not conv_im2col.split_gemms(g, fast._config.Settings(num_threads=2, split_batch=False), 0, 1)
    # Above blas_threads_min_work the GEMMs get BLAS's own threads instead.
    assert not conv_im2col.split_gemms(g, fast._config.Settings(num_threads=2, blas_threads_min_work=1), 0, 1)
    g2 = SimpleNamespace(N=4, F=64, C=32, HH=3, WW=3, H_out=8, W_out=8)
    assert conv_im2col.split_gemms(g2, s, 0, 4) and not conv_im2col.split_gemms(g2, s, 0, 2)  # a part of it


@pytest.fixture(params=[1, None], ids=["blocks-of-1-row", "default-blocks"])
def min_rows(request, gemm_in_kernels):
    """The fewest rows of a GEMM's block: 1 (as many blocks as the job holds, partial ones included) or the
    default (blocks of at least 32 rows: each packs the right operand again)."""
    previous = gemm_in_kernels.set_min_rows(request.param or 32)
    yield request.param
    gemm_in_kernels.set_min_rows(previous)


@pytest.mark.parametrize("case", SPLIT_CASES, ids=["per-image", "gathered", "stride2", "two-images"])
@pytest.mark.parametrize("algorithm", ["im2col", "im2row"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_split_gemms_match_one_thread(case, algorithm, dtype, conv_inputs, gemm_in_kernels, min_rows, idle_worker):
    x, w, b, cp = conv_inputs(case, dtype, 7)
    dout = np.random.default_rng(8).standard_normal(FastConv.forward(x, w, b, cp)[0].shape).astype(dtype)
    ref = _run(x, w, b, cp, dout, {"conv_algorithm": algorithm, "num_threads": 2, "split_image_gemms": False})
    before = idle_worker()
    got = _run(x, w, b, cp, dout, dict(SPLIT, conv_algorithm=algorithm))
    for what, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        _assert_scaled(a, r, dtype, what)
    assert gemm_in_kernels.split_state()[1] > before  # shared, not run alone


def test_split_gemms_never_wait_for_a_stalled_worker(conv_inputs, stalled_worker, taken_back):
    # The caller takes back the block the sleeping worker claimed and returns long before it wakes; while
    # the worker holds the job, later calls run alone, and the job's arrays stay alive.
    part = stalled_worker
    case, dtype = (1, 32, 12, 12, 64, 3, 3, 1, 1), np.float64
    x, w, b, cp = conv_inputs(case, dtype, 9)
    dout = np.random.default_rng(10).standard_normal((1, 64, 12, 12))
    ref = _run(x, w, b, cp, dout, {"conv_algorithm": "im2col", "split_image_gemms": False})
    got, elapsed = taken_back(part, lambda: _run(x, w, b, cp, dout, dict(SPLIT, conv_algorithm="im2col")))
    assert elapsed < 0.5, f"the call took {elapsed:.2f} s with the worker asleep for 1 s in its block"
    for what, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        _assert_scaled(a, r, dtype, what)
    worker, posted, finished, _ = part.split_state()
    assert worker == 1 and finished < posted  # the worker is still inside the job
    assert part.held() is not None  # and the pool keeps the job's arrays alive for it
    posted_before = posted
    again = _run(x, w, b, cp, dout, dict(SPLIT, conv_algorithm="im2col"))
    assert part.split_state()[1] == posted_before  # the worker is busy: this call ran alone
    for what, a, r in zip(("out", "dx", "dw", "db"), again, ref):
        _assert_scaled(a, r, dtype, what)


def test_split_gemms_from_two_threads(conv_inputs, gemm_in_kernels):
    # One worker, lent to one call at a time: the other runs alone, both right.
    x, w, b, cp = conv_inputs((1, 16, 8, 8, 32, 3, 3, 1, 1), np.float32, 11)
    dout = np.random.default_rng(12).standard_normal((1, 32, 8, 8)).astype(np.float32)
    ref = _run(x, w, b, cp, dout, {"split_image_gemms": False})
    errors = []

    def calls():
        for _ in range(30):
            got = _run(x, w, b, cp, dout, SPLIT)
            try:
                for what, a, r in zip(("out", "dx", "dw", "db"), got, ref):
                    _assert_scaled(a, r, np.float32, what)
            except AssertionError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=calls) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


_CHILD = """
import sys
import numpy as np
import convnet.fast as fast
from convnet.fast import FastConv, _backend
rng = np.random.default_rng(0)
x, w, b = rng.standard_normal((1, 16, 8, 8)), rng.standard_normal((32, 16, 3, 3)), rng.standard_normal(32)
dout = rng.standard_normal((1, 32, 8, 8))
def run(split):
    with fast.config(num_threads=2, split_image_gemms=split):
        out, cache = FastConv.forward(x, w, b, {"stride": 1, "pad": 1})
        return (out, *FastConv.backward(dout, cache))
"""


def test_split_gemms_without_threads(gemm_in_kernels, tmp_path):
    # Where no thread can start (a sandbox that forbids them), every block runs on the calling thread.
    import subprocess
    code = _CHILD + """
import threading
def refuse(self):
    raise RuntimeError("can't start new thread")
threading.Thread.start = refuse
got, ref = run(True), run(False)
assert all(np.array_equal(a, r) for a, r in zip(got, ref))
print(_backend.conv_part.split_state())
"""
    # cwd: outside the checkout, so the child imports the installed package as this process did.
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(-1,", "0,", "0,", "0)"]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no os.fork on this platform")
def test_split_gemms_after_fork(gemm_in_kernels, tmp_path):
    # The worker thread does not survive a fork: the child starts its own and shares with it.
    import subprocess
    code = _CHILD + """
import os, signal
ref = run(False)
run(True)  # the parent's worker runs
pid = os.fork()
if pid == 0:
    signal.alarm(60)  # a deadlock fails the test instead of hanging it
    got = run(True)
    worker, posted = _backend.conv_part.split_state()[:2]
    os._exit(0 if worker == 1 and posted >= 1 and all(np.allclose(a, r, rtol=1e-13, atol=1e-13)
                                                      for a, r in zip(got, ref)) else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_gemm_on_slabs(split, dtype, gemm_in_kernels):
    # C[i] = A[i] @ B[i] + beta * C[i] on views with padded rows and members apart (Winograd's slabs).
    rng = np.random.default_rng(13)
    nk, M, K, N = 16, 24, 20, 36

    def slab(rows, cols):
        return rng.standard_normal((nk, rows + 3, cols + 5)).astype(dtype)[:, 1:rows + 1, 2:cols + 2]

    A, B, C = slab(M, K), slab(K, N), slab(M, N)
    before = C.astype(np.float64)
    gemm_in_kernels.batched_gemm(A, B, C, 1.0, split)
    _assert_scaled(C, (np.matmul(A.astype(np.float64), B) + before).astype(dtype), dtype, "beta 1")
    gemm_in_kernels.batched_gemm(A, B, C, 0.0, split)
    _assert_scaled(C, np.matmul(A.astype(np.float64), B).astype(dtype), dtype, "beta 0")
    one = slab(M, K)[:1], slab(K, N)[:1], slab(M, N)[:1]  # one member: blocks of rows
    gemm_in_kernels.batched_gemm(*one, 0.0, split)
    _assert_scaled(one[2], np.matmul(one[0].astype(np.float64), one[1]).astype(dtype), dtype, "one member")
    # trans_a: A given as it lies, (nk, K, M), and used transposed (Winograd's dV = U^T dM); rows split too.
    for At, Bt, Ct in ((slab(K, M), B, C), (slab(K, M)[:1], slab(K, N)[:1], slab(M, N)[:1])):
        before = Ct.astype(np.float64)
        gemm_in_kernels.batched_gemm(At, Bt, Ct, 1.0, split, True)
        want = np.matmul(At.astype(np.float64).transpose(0, 2, 1), Bt) + before
        _assert_scaled(Ct, want.astype(dtype), dtype, f"trans_a, {len(At)} member(s)")


def test_winograd_compiled_gemms_predicate(monkeypatch):
    from convnet.fast.conv_winograd import WINOGRAD2
    g = SimpleNamespace(F=8, C=4, HH=3, WW=3, H_out=8, W_out=8, stride=1)  # 4x4 tiles of F(2x2)
    on, off = fast._config.Settings(gemm_in_kernels=True), fast._config.Settings(gemm_in_kernels=False)
    monkeypatch.setattr(_backend, "GEMM_IN_KERNELS", True)
    monkeypatch.setattr(_backend, "GEMM_ILP64", False)
    assert WINOGRAD2.compiled_gemms(g, on, 4) and not WINOGRAD2.compiled_gemms(g, off, 4)
    assert not WINOGRAD2.compiled_gemms(g, on, 2**31 // (8 * 16))  # a slab past a 32-bit BLAS integer
    monkeypatch.setattr(_backend, "GEMM_ILP64", True)
    assert WINOGRAD2.compiled_gemms(g, on, 2**31 // (8 * 16))
    monkeypatch.setattr(_backend, "GEMM_IN_KERNELS", False)
    assert not WINOGRAD2.compiled_gemms(g, on, 4)


# Winograd's batched GEMMs as compiled calls: one image, chunks (dU accumulated),
# parts on threads, a network's input.
WINOGRAD_CASES = [
    ((1, 16, 16, 16, 24, 3, 3, 1, 1), {"num_threads": 2}),
    ((5, 8, 12, 12, 6, 3, 3, 1, 1), {"column_budget": 1}),
    ((8, 16, 12, 12, 12, 3, 3, 1, 0), {"split_min_work": 1, "min_part_images": 1, "num_threads": 2}),
]


@pytest.mark.parametrize("case, settings", WINOGRAD_CASES, ids=["one-image", "chunks", "threads"])
@pytest.mark.parametrize("algorithm", ["winograd2", "winograd4"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_compiled_gemms_match_numpy(case, settings, algorithm, dtype, conv_inputs, gemm_in_kernels):
    _check_compiled_against_numpy(case, dict(settings, conv_algorithm=algorithm), dtype, conv_inputs, 14)
