"""Fixtures shared by the whole suite: per-dtype tolerances, the PyTorch oracle, the fast path's build."""
from types import SimpleNamespace

import numpy as np
import pytest


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
