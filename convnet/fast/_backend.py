"""The kernels the fast layers call: the compiled ones or the numpy fallback, picked once at import.

Both sets expose the same names with the same arguments (caller-allocated,
C-contiguous outputs; ``nthreads`` OpenMP threads, ignored by numpy), so the
layers never ask which one runs:

============================  ==================================================
``im2col_into``               (x, cols, HH, WW, stride, pad, nthreads)
``col2im_into``               (cols, dx, HH, WW, stride, pad, nthreads)
``bias_transpose``            (res, b, out)
``maxpool_forward``           (x, out, argmax, ph, pw, stride, pad, nthreads)
``maxpool_backward``          (dout, argmax, dx, nthreads)
``avgpool_forward``           (x, out, ph, pw, stride, pad, nthreads)
``avgpool_backward``          (dout, dx, ph, pw, stride, pad, nthreads)
``winograd_input``            (x, V, pad, tH, tW, nthreads, m, transposed)
``winograd_input_adjoint``    (dV, dx, pad, tH, tW, nthreads, m)
``winograd_output``           (M, b, out, tH, tW, nthreads, m)
``winograd_output_adjoint``   (dout, dM, tH, tW, nthreads, m)
============================  ==================================================

The compiled kernels never validate: their callers in :mod:`convnet.fast`
check every argument with :mod:`convnet._checks` first.
"""
from __future__ import annotations

from convnet.fast._config import PUREPYTHON, REQUIRE_CYTHON

__all__ = ["HAVE_CYTHON", "IMPORT_ERROR", "im2col_into", "col2im_into", "bias_transpose", "maxpool_forward",
           "maxpool_backward", "avgpool_forward", "avgpool_backward", "winograd_input", "winograd_input_adjoint",
           "winograd_output", "winograd_output_adjoint"]

IMPORT_ERROR = None
if not PUREPYTHON:
    try:
        from convnet._fast._im2col import bias_transpose, col2im_into, im2col_into
        from convnet._fast._pool import avgpool_backward, avgpool_forward, maxpool_backward, maxpool_forward
        from convnet._fast._winograd import (winograd_input, winograd_input_adjoint, winograd_output,
                                             winograd_output_adjoint)
    except ImportError as exc:  # the extension was not built (or failed to load)
        IMPORT_ERROR = exc

HAVE_CYTHON = not PUREPYTHON and IMPORT_ERROR is None

if not HAVE_CYTHON:
    if REQUIRE_CYTHON and not PUREPYTHON:
        raise ImportError(
            "CONVNET_REQUIRE_CYTHON=1 but the compiled kernels convnet._fast._im2col/_pool/_winograd cannot be "
            f"imported ({IMPORT_ERROR}); build them with `python setup.py build_ext --inplace` "
            "or `pip install .`, or set CONVNET_PUREPYTHON=1 to use numpy"
        )
    from convnet.fast._numpy import (avgpool_backward, avgpool_forward, bias_transpose,  # noqa: F811
                                     col2im_into, im2col_into, maxpool_backward, maxpool_forward,
                                     winograd_input, winograd_input_adjoint, winograd_output,
                                     winograd_output_adjoint)
