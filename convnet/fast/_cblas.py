"""numpy's own BLAS for the compiled kernels: where its ``cblas_sgemm`` and ``cblas_dgemm`` are.

The batch-part kernels (``convnet/_fast/_conv_part.pyx``) call the GEMM that
numpy's ``matmul`` calls, so threadpoolctl's limits, the
``OPENBLAS_CORETYPE`` a user sets and the results are the same as numpy's.
Only OpenBLAS is used this way: its ``openblas_get_config`` says whether it
takes 64-bit integers (``USE64BITINT``), which a call must match. Any other
BLAS (MKL, Accelerate), or a platform where the symbols cannot be looked up
through numpy's extension module, leaves the GEMMs to numpy.
"""
from __future__ import annotations

import ctypes

__all__ = ["find_gemm"]

# (prefix, suffix) of the symbol names: a plain OpenBLAS, and the scipy-openblas builds numpy's wheels carry.
_NAMINGS = (("", ""), ("scipy_", "64_"), ("scipy_", ""), ("", "64_"))


def _numpy_extension() -> str:
    try:
        from numpy._core import _multiarray_umath as module
    except ImportError:  # numpy < 2
        from numpy.core import _multiarray_umath as module
    return module.__file__


def find_gemm(path: str = None):
    """``(sgemm, dgemm, ilp64)``: the addresses of numpy's OpenBLAS ``cblas_sgemm``/``cblas_dgemm`` and
    whether they take 64-bit integers; None where numpy's BLAS is not an OpenBLAS found this way.

    Parameters
    ----------
    path : str, optional
        The shared object whose symbols (its own and its dependencies') are
        searched; default numpy's ``_multiarray_umath``, which links the BLAS.
    """
    try:
        lib = ctypes.CDLL(path or _numpy_extension())
    except (OSError, ImportError, AttributeError):
        return None
    for prefix, suffix in _NAMINGS:
        try:
            sgemm = getattr(lib, f"{prefix}cblas_sgemm{suffix}")
            dgemm = getattr(lib, f"{prefix}cblas_dgemm{suffix}")
            get_config = getattr(lib, f"{prefix}openblas_get_config{suffix}")
        except AttributeError:
            continue
        get_config.restype = ctypes.c_char_p
        get_config.argtypes = []
        config = get_config() or b""
        address = ctypes.cast(sgemm, ctypes.c_void_p).value, ctypes.cast(dgemm, ctypes.c_void_p).value
        return address[0], address[1], b"USE64BITINT" in config
    return None
