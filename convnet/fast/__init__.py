"""Fast convolution and pooling layers with the naive layers' API.

``FastConv``, ``FastMaxPool`` and ``FastAvgPool`` take the same arguments and
return the same results as :class:`convnet.layers.Conv`, ``MaxPool`` and
``AvgPool``. A fast layer's cache is a small object (not a tuple) that only its
own ``backward`` accepts.

How it works (one module per job)
---------------------------------
- :mod:`~convnet.fast.conv`: ``FastConv`` and :func:`~convnet.fast.conv.choose`,
  which picks the algorithm for each layer from the ``conv_algorithm`` setting.
- :mod:`~convnet.fast.conv_im2col`: im2col + one BLAS GEMM per chunk of the
  batch + col2im, for any layer; also the public :func:`im2col` and :func:`col2im`.
- :mod:`~convnet.fast.conv_winograd`: Winograd F(4x4, 3x3) or F(2x2, 3x3) for
  3x3 stride-1 layers, on the matrices of :mod:`~convnet.fast.winograd`.
  Either way chunks are cache-sized and bounded by the column budget
  (:func:`set_column_budget`), so extra memory does not grow with N.
- :mod:`~convnet.fast.parallel`: a large batch is split across
  :func:`get_num_threads` threads, each with one-thread BLAS.
- :mod:`~convnet.fast.workspace`: the convolution's scratch buffers, kept per
  thread between calls (bounded by the ``workspace_limit`` setting; freed by
  :func:`release_workspaces`), so repeated calls do not fault in fresh pages.
- :mod:`~convnet.fast.results`: the arrays the layers return, reused once
  nothing else holds them (bounded by the ``result_cache_limit`` setting;
  also freed by :func:`release_workspaces`).
- :mod:`~convnet.fast.pool`: ``FastMaxPool``, ``FastAvgPool``: direct loops
  over the N*C planes, on OpenMP threads for large inputs.
- ``_config``: the settings (:func:`config`, the ``set_*`` / ``get_*``
  functions); ``_backend``: the compiled kernels of :mod:`convnet._fast`
  (Cython, fused float32/float64, ``nogil``, OpenMP ``prange``) or their numpy
  fallback ``_numpy``, picked once at import. Kernels never validate: every
  layer checks its input with :mod:`convnet._checks` first, makes it
  C-contiguous and allocates the output.

Environment variables (read once, at import)
--------------------------------------------
CONVNET_PUREPYTHON=1
    Do not use the compiled kernels; use the vectorised numpy implementation.
CONVNET_REQUIRE_CYTHON=1
    Importing this module raises ``ImportError`` when the compiled kernels cannot
    be imported (unless ``CONVNET_PUREPYTHON=1`` is also set). CI sets it so a
    missing build cannot pass silently.
CONVNET_COLUMN_BUDGET=<bytes>
    Initial column-buffer budget for the convolution (default 64 MiB).
OMP_NUM_THREADS=<n>
    Default thread count (otherwise the number of usable CPUs).
CONVNET_CPU_VARIANT=baseline|x86-64-v3|x86-64-v4
    Use this build of the compiled kernels instead of the CPU's best.

Attributes
----------
HAVE_CYTHON : bool
    True when the compiled kernels are in use.
CPU_VARIANT : str or None
    Which build of the compiled kernels runs: 'baseline', 'x86-64-v3' (AVX2,
    FMA) or 'x86-64-v4' (AVX-512), chosen at import from the CPU's features
    (``CONVNET_CPU_VARIANT`` overrides); None on the numpy fallback.
GEMM_IN_KERNELS : bool
    True when the compiled kernels can call numpy's BLAS themselves (an
    OpenBLAS): the im2col and im2row convolutions then run each batch part
    in one call without the GIL (the ``gemm_in_kernels`` setting).
CONV_ALGORITHMS : tuple of str
    The values :func:`set_conv_algorithm` accepts.
"""
import importlib.util

from convnet.fast._backend import CPU_VARIANT, GEMM_IN_KERNELS, HAVE_CYTHON
from convnet.fast._config import (CONV_ALGORITHMS, config, get_column_budget, get_config, get_conv_algorithm,
                                  get_num_threads, set_column_budget, set_conv_algorithm, set_num_threads)
from convnet.fast.conv import FastConv
from convnet.fast.conv_im2col import col2im, im2col
from convnet.fast.inputs import network_input
from convnet.fast.pool import FastAvgPool, FastMaxPool
from convnet.fast import results, workspace

__all__ = [
    "FastConv", "FastMaxPool", "FastAvgPool", "HAVE_CYTHON", "CPU_VARIANT", "GEMM_IN_KERNELS",
    "config", "get_config",
    "set_num_threads", "get_num_threads", "set_column_budget", "get_column_budget",
    "set_conv_algorithm", "get_conv_algorithm", "CONV_ALGORITHMS",
    "im2col", "col2im", "network_input", "release_workspaces",
]

# Not in the student starter: the fast spatial batch norm (it holds the batch-norm backward), the fused ReLU.
if importlib.util.find_spec("convnet.fast.batchnorm") is not None:
    from convnet.fast.batchnorm import FastSpatialBatchNorm, FastSpatialBatchNormReLU  # noqa: F401

    __all__ += ["FastSpatialBatchNorm", "FastSpatialBatchNormReLU"]
if importlib.util.find_spec("convnet.fast.fused") is not None:
    from convnet.fast.fused import FastReLUMaxPool  # noqa: F401

    __all__ += ["FastReLUMaxPool"]


def release_workspaces() -> int:
    """Free the convolution's kept scratch buffers and the kept result buffers; returns the bytes they held.

    Arrays a caller still holds stay valid.
    """
    return workspace.release() + results.release()
