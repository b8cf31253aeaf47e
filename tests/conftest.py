"""Shared by the whole suite: per-dtype tolerances, the PyTorch oracle, the fast path's build, and an
unimplemented starter stub reported as one line ("not implemented yet: Conv.forward"), not a traceback."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

_STUB = re.compile(r"^([\w.]+): implement me$")


def stub_name(exc):
    """The stub behind ``exc`` (a NotImplementedError raised by a starter stub, possibly wrapped), or None."""
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, NotImplementedError):
            m = _STUB.match(str(e))
            if m:
                return m.group(1)
        stack += list(getattr(e, "exceptions", ())) + [e.__cause__, e.__context__]
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.excinfo is not None:
        name = stub_name(call.excinfo.value)
        if name:
            report.longrepr = f"not implemented yet: {name}"


def _tol(dtype, scale=1.0):
    """assert_allclose tolerances; float32 sums of a few hundred terms lose ~1e-6 relative."""
    if np.dtype(dtype) == np.float32:
        return {"rtol": 2e-4, "atol": 2e-4 * scale}
    return {"rtol": 1e-9, "atol": 1e-10 * scale}


@pytest.fixture(scope="session")
def tol():
    """``tol(dtype, scale=1.0)``: assert_allclose keywords for the dtype, atol times ``scale``.

    ``scale`` is the size of the values compared (e.g. the square root of the
    number of terms in each sum of standard-normal products).
    """
    return _tol


@pytest.fixture(scope="session")
def torch():
    """The PyTorch oracle; the test skips, saying why, when torch is not installed."""
    return pytest.importorskip("torch", reason="PyTorch is the oracle; pip install torch==2.13.0")


@pytest.fixture(scope="session")
def have_cython():
    """``convnet.fast.HAVE_CYTHON``: True when the compiled kernels are in use."""
    from convnet import fast

    return fast.HAVE_CYTHON


@pytest.fixture(scope="session")
def compiled(have_cython):
    """The compiled kernel modules (``.im2col``, ``.pool``, ``.winograd``); the test skips without them."""
    if not have_cython:
        pytest.skip("compiled kernels not in use (CONVNET_PUREPYTHON=1 or not built)")
    from convnet._fast import _im2col, _pool, _winograd

    return SimpleNamespace(im2col=_im2col, pool=_pool, winograd=_winograd)


# A 6x6 map pooled with 2x2 windows, small enough to check by hand. With loss = mean(pool(x)) every
# output's upstream gradient is 1 / (number of outputs), so dx is a count per element over that number:
# for max pooling how many windows pick the element as their (first) maximum, for average pooling how
# many windows contain it, each contributing a quarter. PyTorch prints these gradients rounded to four
# decimals: 0.1111 and 0.04 (max, stride 2 and 1), 0.0278 and 0.01 (average, stride 2 and 1).
_POOL_X = np.array([[1, 3, 4, 2, 5, 2],
                    [4, 2, 5, 6, 8, 3],
                    [5, 3, 7, 8, 9, 3],
                    [8, 4, 3, 6, 0, 2],
                    [7, 10, 3, 6, 3, 5],
                    [4, 7, 2, 4, 7, 8]], dtype=np.float64)
_POOL_COUNTS = {
    ("max", 2): [[0, 0, 0, 0, 0, 0],
                 [1, 0, 0, 1, 1, 0],
                 [0, 0, 0, 1, 1, 0],
                 [1, 0, 0, 0, 0, 0],
                 [0, 1, 0, 1, 0, 0],
                 [0, 0, 0, 0, 0, 1]],
    ("max", 1): [[0, 0, 0, 0, 0, 0],
                 [1, 0, 1, 1, 2, 0],
                 [1, 0, 2, 2, 4, 0],
                 [1, 0, 0, 2, 0, 0],
                 [0, 4, 0, 1, 0, 1],
                 [0, 0, 0, 0, 1, 1]],
    ("avg", 2): [[1] * 6] * 6,
    ("avg", 1): [[1, 2, 2, 2, 2, 1]] + [[2, 4, 4, 4, 4, 2]] * 4 + [[1, 2, 2, 2, 2, 1]],
}
_POOL_PRINTED = {("max", 2): 0.1111, ("max", 1): 0.04, ("avg", 2): 0.0278, ("avg", 1): 0.01}


@pytest.fixture(params=sorted(_POOL_COUNTS), ids=lambda ks: f"{ks[0]}-stride{ks[1]}")
def pool_by_hand(request):
    """One case of the 6x6 example (2x2 windows): ``.kind`` ("max" or "avg"), ``.stride``, ``.x`` (6, 6)
    float64, ``.grad`` the (6, 6) gradient of mean(pool(x)), ``.printed`` PyTorch's printed smallest
    nonzero gradient, ``.out`` the pooled map."""
    kind, stride = request.param
    n = 1 + (6 - 2) // stride
    share = 1.0 if kind == "max" else 0.25
    windows = np.lib.stride_tricks.sliding_window_view(_POOL_X, (2, 2))[::stride, ::stride]
    out = windows.max(axis=(2, 3)) if kind == "max" else windows.mean(axis=(2, 3))
    return SimpleNamespace(kind=kind, stride=stride, x=_POOL_X.copy(), out=out,
                           grad=np.array(_POOL_COUNTS[kind, stride], dtype=np.float64) * share / n**2,
                           printed=_POOL_PRINTED[kind, stride])
