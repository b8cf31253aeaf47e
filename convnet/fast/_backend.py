"""The kernels the fast layers call: the compiled ones or the numpy fallback, picked once at import.

Both sets expose the same names with the same arguments (caller-allocated,
C-contiguous outputs; ``nthreads`` OpenMP threads, ignored by numpy), so the
layers never ask which one runs:

============================  ==================================================
``im2col_into``               (x, cols, HH, WW, stride, pad, nthreads)
``col2im_into``               (cols, dx, HH, WW, stride, pad, nthreads)
``bias_transpose``            (res, b, out)
``im2row_into``               (x, rows, xt, HH, WW, stride, pad)
``row2im_into``               (rows, dx, xt, HH, WW, stride, pad)
``transpose_planes``          (src, dst, b)
``maxpool_forward``           (x, out, argmax, ph, pw, stride, pad, nthreads)
``maxpool_backward``          (dout, argmax, dx, nthreads)
``index_bound``               (idx): the largest of int32 indices read as unsigned
``avgpool_forward``           (x, out, ph, pw, stride, pad, nthreads)
``avgpool_backward``          (dout, dx, ph, pw, stride, pad, nthreads)
``winograd_input``            (x, V, pad, tH, tW, nthreads, m, transposed)
``winograd_input_adjoint``    (dV, dx, pad, tH, tW, nthreads, m)
``winograd_output``           (M, b, out, tH, tW, nthreads, m)
``winograd_output_adjoint``   (dout, dM, tH, tW, nthreads, m)
``winograd_filter``           (w, U, G, lo, hi)
``winograd_filter_adjoint``   (dU, dw, G, lo, hi)
============================  ==================================================

With the compiled kernels, :data:`conv_part` is the ``_conv_part`` module (a
batch part of the im2col, im2row and Winograd convolutions in one GIL-free call,
and the direct convolution's images shared with its worker thread) when
:data:`GEMM_IN_KERNELS`: numpy's BLAS is an OpenBLAS whose GEMMs it can call
(:mod:`convnet.fast._cblas`); else None, and the GEMMs go through numpy.

The compiled kernels never validate: their callers in :mod:`convnet.fast`
check every argument with :mod:`convnet._checks` first.

Each compiled module is built for the baseline and, on x86-64, for x86-64-v3
(AVX2, FMA) and x86-64-v4 (AVX-512) (see setup.py). :data:`CPU_VARIANT` is the
one in use: the most capable that this CPU runs and that was built, or the one
``CONVNET_CPU_VARIANT`` names (baseline, x86-64-v3, x86-64-v4; an error if
this CPU cannot run it or it was not built).
"""
from __future__ import annotations

import importlib
import importlib.util
import os

from convnet.fast._config import PUREPYTHON, REQUIRE_CYTHON

__all__ = ["HAVE_CYTHON", "IMPORT_ERROR", "CPU_VARIANT", "GEMM_IN_KERNELS", "GEMM_ILP64", "conv_part", "direct",
           "VARIANTS",
           "cpu_supports", "kernel_module",
           "im2col_into", "col2im_into", "bias_transpose", "im2row_into", "row2im_into", "transpose_planes",
           "maxpool_forward", "index_bound",
           "maxpool_backward", "avgpool_forward", "avgpool_backward", "winograd_input", "winograd_input_adjoint",
           "winograd_output", "winograd_output_adjoint", "winograd_filter", "winograd_filter_adjoint"]

# Builds of each kernel module: variant name -> module-name suffix and the CPU features it needs
# (the x86-64 micro-architecture levels; setup.py compiles them with -march=x86-64-v3 / -v4).
VARIANTS = {
    "baseline": ("", ()),
    "x86-64-v3": ("_v3", ("AVX2", "FMA3", "F16C", "BMI", "BMI2", "LZCNT", "MOVBE")),
    "x86-64-v4": ("_v4", ("AVX2", "FMA3", "F16C", "BMI", "BMI2", "LZCNT", "MOVBE",
                          "AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512VL")),
}
# /proc/cpuinfo's names for the features above, where numpy does not say.
_CPUINFO_NAMES = {"FMA3": "fma", "BMI": "bmi1", "LZCNT": "abm"}


def _cpu_features() -> set:
    """The CPU's features by numpy's names (numpy's own dispatch table, else /proc/cpuinfo)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            __cpu_features__ = None
    if __cpu_features__ is not None:
        return {k for k, v in __cpu_features__.items() if v}
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return set()
    names = {n for feats in (f for _, f in VARIANTS.values()) for n in feats}
    return {n for n in names if _CPUINFO_NAMES.get(n, n.lower()) in flags}


def cpu_supports(variant: str, features=None) -> bool:
    """Whether this CPU (or the feature set ``features``) runs kernels built for ``variant``."""
    features = _cpu_features() if features is None else features
    return set(VARIANTS[variant][1]) <= set(features)


def _choose_variant() -> str:
    """CONVNET_CPU_VARIANT if set (checked), else the most capable variant this CPU runs and that was built."""
    wanted = os.environ.get("CONVNET_CPU_VARIANT", "").strip()
    if wanted:
        if wanted not in VARIANTS:
            raise ImportError(f"CONVNET_CPU_VARIANT={wanted!r}; choose one of {list(VARIANTS)}")
        if not cpu_supports(wanted):
            raise ImportError(f"CONVNET_CPU_VARIANT={wanted!r}, but this CPU lacks "
                              f"{sorted(set(VARIANTS[wanted][1]) - _cpu_features())}")
        if importlib.util.find_spec(f"convnet._fast._im2col{VARIANTS[wanted][0]}") is None:
            raise ImportError(f"CONVNET_CPU_VARIANT={wanted!r}, but its kernels were not built")
        return wanted
    for name in reversed(list(VARIANTS)):
        if cpu_supports(name) and importlib.util.find_spec(f"convnet._fast._im2col{VARIANTS[name][0]}"):
            return name
    return "baseline"


def kernel_module(name: str, variant: str = None):
    """The compiled kernel module ``name`` ('_im2col', ...) built for ``variant`` (default :data:`CPU_VARIANT`)."""
    return importlib.import_module(f"convnet._fast.{name}{VARIANTS[variant or CPU_VARIANT][0]}")


IMPORT_ERROR = None
CPU_VARIANT = "baseline"
if not PUREPYTHON:
    CPU_VARIANT = _choose_variant()  # a bad CONVNET_CPU_VARIANT is an error, not a silent fallback
    try:
        _im2col, _pool, _winograd = (kernel_module(n) for n in ("_im2col", "_pool", "_winograd"))
        bias_transpose, col2im_into, im2col_into = _im2col.bias_transpose, _im2col.col2im_into, _im2col.im2col_into
        im2row_into, row2im_into, transpose_planes = _im2col.im2row_into, _im2col.row2im_into, _im2col.transpose_planes
        avgpool_backward, avgpool_forward = _pool.avgpool_backward, _pool.avgpool_forward
        maxpool_backward, maxpool_forward = _pool.maxpool_backward, _pool.maxpool_forward
        index_bound = _pool.index_bound
        winograd_input, winograd_input_adjoint = _winograd.winograd_input, _winograd.winograd_input_adjoint
        winograd_output, winograd_output_adjoint = _winograd.winograd_output, _winograd.winograd_output_adjoint
        winograd_filter, winograd_filter_adjoint = _winograd.winograd_filter, _winograd.winograd_filter_adjoint
        _conv_part = kernel_module("_conv_part")
        _direct = kernel_module("_direct")
    except ImportError as exc:  # the extension was not built (or failed to load)
        IMPORT_ERROR = exc

HAVE_CYTHON = not PUREPYTHON and IMPORT_ERROR is None

# The direct convolution's kernels (convnet.fast.conv_direct), compiled only: None without them.
direct = _direct if HAVE_CYTHON else None
conv_part = None
if HAVE_CYTHON:
    from convnet.fast._cblas import find_gemm

    _gemm = find_gemm()
    if _gemm is not None:
        _conv_part.set_gemm(*_gemm)
        conv_part = _conv_part
GEMM_IN_KERNELS = conv_part is not None
GEMM_ILP64 = GEMM_IN_KERNELS and _gemm[2]

if not HAVE_CYTHON:
    CPU_VARIANT = None
    if REQUIRE_CYTHON and not PUREPYTHON:
        raise ImportError(
            "CONVNET_REQUIRE_CYTHON=1 but the compiled kernels convnet._fast._im2col/_pool/_winograd cannot be "
            f"imported ({IMPORT_ERROR}); build them with `python setup.py build_ext --inplace` "
            "or `pip install .`, or set CONVNET_PUREPYTHON=1 to use numpy"
        )
    from convnet.fast._numpy import (avgpool_backward, avgpool_forward, bias_transpose,  # noqa: F811
                                     col2im_into, im2col_into, im2row_into, index_bound, maxpool_backward,
                                     maxpool_forward,
                                     row2im_into, transpose_planes,
                                     winograd_filter, winograd_filter_adjoint, winograd_input,
                                     winograd_input_adjoint, winograd_output, winograd_output_adjoint)
