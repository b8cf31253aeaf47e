"""The convolution's kept scratch buffers (convnet/fast/workspace.py): reuse, bounds, release, threads."""
import threading

import numpy as np
import pytest

import convnet.fast as fast
from convnet.fast import FastConv, _backend, workspace

DTYPES = [np.float32, np.float64]
# (algorithm, case): each algorithm's buffers; case (N, C, H, W, F, HH, WW, stride, pad).
LAYERS = [("im2col", (4, 3, 9, 8, 5, 5, 5, 1, 1)), ("im2col", (3, 4, 9, 9, 6, 3, 3, 2, 1)),
          ("winograd2", (3, 5, 8, 9, 4, 3, 3, 1, 1)), ("winograd4", (2, 4, 12, 10, 5, 3, 3, 1, 0)),
          ("pointwise", (3, 6, 9, 7, 4, 1, 1, 2, 0)), ("im2row", (3, 4, 9, 9, 6, 3, 3, 2, 1)),
          ("im2row", (4, 3, 9, 8, 5, 5, 5, 1, 1))]


def _kept():
    return list(workspace._POOL.buffers.values())


@pytest.fixture(autouse=True)
def _fresh_pool():
    workspace.release()
    yield
    workspace.release()


def _run(x, w, b, cp, dout):
    out, cache = FastConv.forward(x, w, b, cp)
    return (out,) + tuple(FastConv.backward(dout, cache))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algo,case", LAYERS)
def test_results_never_live_in_a_kept_buffer(algo, case, dtype, conv_inputs, exact_conv, tol):
    x, w, b, cp = conv_inputs(case, dtype, 0)
    dout = np.random.default_rng(1).standard_normal((case[0], case[4], *FastConv.forward(x, w, b, cp)[0].shape[2:]))
    dout = dout.astype(dtype)
    with fast.config(conv_algorithm=algo, num_threads=1):
        results = _run(x, w, b, cp, dout)
    assert _kept(), "the layer kept no buffer"
    for r in results:
        assert not any(np.shares_memory(r, buf) for buf in _kept())
    for r, ref in zip(results, exact_conv(x, w, b, cp, dout)):
        np.testing.assert_allclose(r, ref, **tol(dtype, 10 if algo == "winograd4" else 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_second_layer_between_forward_and_backward_leaves_the_first_intact(dtype, conv_inputs, exact_conv, tol):
    # Layer B reuses (and overwrites) every buffer layer A used; A's backward must not depend on them.
    for algo, case in LAYERS:
        xa, wa, ba, cpa = conv_inputs(case, dtype, 2)
        xb, wb, bb, cpb = conv_inputs(tuple(n + 1 if i in (0, 1, 4) else n for i, n in enumerate(case)), dtype, 3)
        with fast.config(conv_algorithm=algo, num_threads=1):
            out_a, cache_a = FastConv.forward(xa, wa, ba, cpa)
            dout_a = np.random.default_rng(4).standard_normal(out_a.shape).astype(dtype)
            out_b, cache_b = FastConv.forward(xb, wb, bb, cpb)
            FastConv.backward(np.ones_like(out_b), cache_b)
            got = (out_a,) + tuple(FastConv.backward(dout_a, cache_a))
        for r, ref in zip(got, exact_conv(xa, wa, ba, cpa, dout_a)):
            np.testing.assert_allclose(r, ref, **tol(dtype, 10 if algo == "winograd4" else 1), err_msg=algo)


def test_kept_bytes_stay_within_the_limit_and_release_frees_them(conv_inputs):
    x, w, b, cp = conv_inputs((4, 8, 12, 12, 16, 3, 3, 1, 1), np.float64, 0)
    with fast.config(conv_algorithm="im2col", num_threads=1):
        out, cache = FastConv.forward(x, w, b, cp)
        FastConv.backward(out, cache)
    full = workspace.held_bytes()
    # im2col's columns of the 4 images (one chunk): 8*9 rows of 4*144 float64 entries, and their gradient;
    # a part in one compiled call also keeps the forward GEMM's result and dout gathered, 16 rows each.
    extra = 2 * 16 * 4 * 144 * 8 if _backend.GEMM_IN_KERNELS else 0
    assert full == sum(buf.nbytes for buf in _kept()) == 2 * 8 * 9 * 4 * 144 * 8 + extra
    assert workspace.release() == full and workspace.held_bytes() == 0 and not _kept()
    for limit in (0, full // 2, full - 1):
        workspace.release()
        with fast.config(conv_algorithm="im2col", num_threads=1, workspace_limit=limit):
            for _ in range(3):
                out2, cache = FastConv.forward(x, w, b, cp)
                FastConv.backward(out2, cache)
            assert workspace.held_bytes() <= limit
            assert sum(buf.nbytes for buf in _kept()) == workspace.held_bytes()
        np.testing.assert_array_equal(out2, out)


_FAULTS_CHILD = """
import resource, sys
import numpy as np
from convnet import fast
from convnet.fast import FastConv
rng = np.random.default_rng(0)
x = rng.standard_normal((32, 6, 14, 14)).astype(np.float32)
w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
with fast.config(workspace_limit=int(sys.argv[1]), conv_algorithm="im2col"):
    out, cache = FastConv.forward(x, w, np.zeros(16, np.float32), {"stride": 1, "pad": 0})
    for _ in range(3):
        FastConv.backward(out, cache)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        FastConv.backward(out, cache)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def test_repeated_calls_fault_in_no_fresh_pages(child_number):
    # LeNet's second conv at batch 32: two 1.9 MB column buffers per backward (930 pages), which glibc hands
    # back to the kernel on free: 460-960 minor faults per call without kept buffers on this machine, 0-3 with.
    # The returned dx, dw and db are fresh arrays whatever happens (an allocator that quarantines freed
    # memory, as AddressSanitizer's, faults them in anew: 139 pages kept, 1380 fresh), so the bound leaves room.
    kept = child_number(_FAULTS_CHILD, fast.get_config()["workspace_limit"])
    fresh = child_number(_FAULTS_CHILD, 0)
    assert kept < 300 and kept < fresh / 3, f"{kept:.0f} minor page faults per call kept, {fresh:.0f} fresh"


def test_threads_keep_buffers_of_their_own(conv_inputs, exact_conv, tol):
    cases = [(2, 3, 11, 10, 4, 5, 5, 1, 2), (3, 4, 10, 12, 3, 3, 3, 2, 1)]
    inputs = [conv_inputs(c, np.float64, 5 + i) for i, c in enumerate(cases)]
    douts = [np.random.default_rng(9).standard_normal(FastConv.forward(*args)[0].shape) for args in inputs]
    refs = [exact_conv(*args, d) for args, d in zip(inputs, douts)]
    workspace.release()
    errors = []

    def loop(i):
        try:
            for _ in range(30):
                for r, ref in zip(_run(*inputs[i], douts[i]), refs[i]):
                    np.testing.assert_allclose(r, ref, **tol(np.float64))
        except AssertionError as exc:  # handed to the main thread
            errors.append(exc)

    with fast.config(conv_algorithm="im2col", num_threads=1):
        threads = [threading.Thread(target=loop, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert len({key[0] for key in workspace._POOL.buffers}) == 2  # one set of buffers per thread


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (1.5, TypeError), ("64", TypeError)])
def test_workspace_limit_is_checked(bad, exc):
    with pytest.raises(exc, match="workspace_limit"):
        with fast.config(workspace_limit=bad):
            pass
