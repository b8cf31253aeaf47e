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
