"""Fixtures of the fast-path tests: layer inputs, the exact reference, Winograd's error bound, the algorithm switch,
the kernels' worker thread."""
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import convnet
from convnet import fast, layers
from convnet.fast import _backend

# Winograd adds and subtracts a tile's inputs (and products) before and after the
# multiplications, so its rounding error is relative to the scale of the whole
# tile, not of each output entry. Measured max|fast - exact| / max|exact| over
# random layers: F(2x2, 3x3) 3e-7 (float32) and 2e-15 (float64); F(4x4, 3x3),
# whose transforms multiply by up to 8 and 1/24, 5e-6 and 9e-15. The bounds
# leave a 10-30x margin.
WINO_REL = {("winograd2", np.float32): 1e-5, ("winograd2", np.float64): 1e-13,
            ("winograd4", np.float32): 1e-4, ("winograd4", np.float64): 2e-13}


def _conv_inputs(case, dtype, seed):
    """x, w, b (standard normal, ``dtype``) and conv_param for case (N, C, H, W, F, HH, WW, stride, pad)."""
    N, C, H, W, F, HH, WW, s, p = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, HH, WW)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, w, b, {"stride": s, "pad": p}


def _pool_param(ph, pw, s, p=0):
    return {"pool_height": ph, "pool_width": pw, "stride": s, "pad": p}


def _exact_conv(x, w, b, cp, dout):
    """The naive layer in float64: (out, dx, dw, db), the reference for both dtypes."""
    x64, w64, b64, d64 = (a.astype(np.float64) for a in (x, w, b, dout))
    out, cache = layers.Conv.forward(x64, w64, b64, cp)
    return (out,) + tuple(layers.Conv.backward(d64, cache))


def _assert_close_scaled(a, ref, dtype, what="", algo="winograd2"):
    """max|a - ref| <= WINO_REL[algo, dtype] * max(max|ref|, 1) (an error relative to the array's scale).

    The floor of 1 is the scale of the standard-normal inputs: a result that
    cancels to near zero (e.g. db, a sum of a few dout entries) still carries
    rounding errors of the size of its terms.
    """
    assert a.shape == ref.shape and a.dtype == dtype, what
    err = float(np.max(np.abs(a.astype(np.float64) - ref))) if a.size else 0.0
    bound = WINO_REL[algo, np.dtype(dtype).type] * max(float(np.max(np.abs(ref))), 1.0)
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


@pytest.fixture(scope="session")
def conv_inputs():
    """``conv_inputs(case, dtype, seed)`` -> x, w, b, conv_param; case (N, C, H, W, F, HH, WW, stride, pad)."""
    return _conv_inputs


@pytest.fixture(scope="session")
def pool_param():
    """``pool_param(ph, pw, stride, pad=0)`` -> the pool_param dict."""
    return _pool_param


@pytest.fixture(scope="session")
def exact_conv():
    """``exact_conv(x, w, b, conv_param, dout)`` -> (out, dx, dw, db) of the naive layer in float64."""
    return _exact_conv


@pytest.fixture(scope="session")
def wino_rel():
    """``{(algo, dtype): bound}``: Winograd's error bound relative to the result's scale."""
    return WINO_REL


@pytest.fixture(scope="session")
def assert_close_scaled():
    """``assert_close_scaled(a, ref, dtype, what, algo)``: Winograd's error bound, relative to the array's scale."""
    return _assert_close_scaled


def _conv_peaks(x, w, b, cp):
    """(out, forward peak, backward peak): tracemalloc's peak bytes of one FastConv forward, then backward.

    Results are not kept for reuse here: a kept result would count as the next call's memory.
    """
    with fast.config(result_cache_limit=0):
        out, cache = fast.FastConv.forward(x, w, b, cp)
        dout = np.ones_like(out)
        tracemalloc.start()
        try:
            fast.FastConv.forward(x, w, b, cp)
            fwd_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            fast.FastConv.backward(dout, cache)
            bwd_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return out, fwd_peak, bwd_peak


@pytest.fixture(scope="session")
def conv_peaks():
    """``conv_peaks(x, w, b, conv_param)`` -> (out, forward peak, backward peak) in bytes (tracemalloc)."""
    return _conv_peaks


@pytest.fixture
def conv_algorithm():
    """Set the conv algorithm for one test and restore the previous choice afterwards."""
    previous = fast.get_conv_algorithm()
    yield fast.set_conv_algorithm
    fast.set_conv_algorithm(previous)


def _threads_agree(call, *outputs):
    got = []
    for nthreads in (1, 2, 3):
        outs = [np.full(o.shape, np.nan if o.dtype.kind == "f" else -1, o.dtype) for o in outputs]
        call(*outs, nthreads)
        got.append(outs)
    for later in got[1:]:
        for a, b in zip(got[0], later):
            np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(o).all() for o in got[0] if o.dtype.kind == "f")
    return got[0]


@pytest.fixture(scope="session")
def threads_agree():
    """``threads_agree(call, *outputs)``: ``call(*outs, nthreads)`` on NaN/-1-filled copies of ``outputs`` for
    1, 2 and 3 threads; asserts the outputs agree and are filled, returns the one-thread outputs."""
    return _threads_agree


def _child_number(code, arg, **env):
    """The last number ``code`` prints, run with ``sys.argv[1] == str(arg)`` in a fresh interpreter.

    Fresh, because glibc's malloc thresholds adapt to what a process freed before. The child imports
    the convnet this process runs (-P: not a source tree in the working directory); ``env`` adds variables.
    """
    env = dict(os.environ, **env)
    here = os.path.dirname(os.path.dirname(os.path.abspath(convnet.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-P", "-c", code, str(arg)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[-1])


@pytest.fixture(scope="session")
def child_number():
    """``child_number(code, arg, **env)``: the last number a fresh interpreter running ``code`` prints
    (page faults per call, counted where no earlier test shaped the allocator)."""
    return _child_number


def _numpy_blas():
    """numpy's build record of its BLAS: {'name': ..., 'openblas configuration': ...}, or {}."""
    try:
        return np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # an older numpy, or a build that does not say
        return {}


@pytest.fixture(scope="session")
def numpy_blas():
    return _numpy_blas()


@pytest.fixture
def gemm_in_kernels(compiled):
    """The ``_conv_part`` module (batch parts in one compiled call, and the worker thread that shares them)."""
    if not _backend.GEMM_IN_KERNELS:
        pytest.skip(f"numpy's BLAS ({_numpy_blas().get('name', 'unknown')}) is not an OpenBLAS the kernels call")
    return _backend.conv_part


def _wait_idle(part, seconds=10):
    # Until the worker has let go of every job posted (a test before may have left it inside one).
    deadline = time.monotonic() + seconds
    while part.split_state()[2] != part.split_state()[1] and time.monotonic() < deadline:
        time.sleep(0.001)


@pytest.fixture
def idle_worker(gemm_in_kernels):
    """A function: waits until the worker has let go of every job posted, and returns the jobs posted so far."""
    def wait():
        _wait_idle(gemm_in_kernels)
        return gemm_in_kernels.split_state()[1]
    return wait


@pytest.fixture
def stalled_worker(gemm_in_kernels):
    """The worker sleeps 1 s in each block it claims, as a descheduled thread; restored and let go after."""
    part = gemm_in_kernels
    _wait_idle(part)
    part.set_stall(1.0)
    yield part
    part.set_stall(0)
    _wait_idle(part)


def _taken_back(part, call):
    """``(result, seconds)`` of the first of up to 20 calls of ``call()`` in which the caller took back a block
    from the stalled worker (it may not be scheduled before the caller ends); skips the test if none did."""
    for _ in range(20):
        taken = part.split_state()[3]
        t0 = time.perf_counter()
        result = call()
        elapsed = time.perf_counter() - t0
        if part.split_state()[3] > taken:
            return result, elapsed
        time.sleep(1.1)
    pytest.skip("the worker never claimed a block in 20 calls (the machine never scheduled it)")


@pytest.fixture(scope="session")
def taken_back():
    """``taken_back(part, call)``: ``(result, seconds)`` of a call of ``call()`` that took a block back from the
    stalled worker."""
    return _taken_back
