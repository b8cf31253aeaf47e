"""Compiled kernels of the fast path (private).

The kernels here never validate their arguments: call them only through
:mod:`convnet.fast`, whose wrappers check shapes, dtypes and parameters with
:mod:`convnet._checks`, make inputs C-contiguous and allocate the outputs.

- ``_im2col``: ``im2col`` and ``col2im`` (fused float32/float64).
- ``_pool``: max and average pooling, forward and backward.
- ``_winograd``: Winograd F(2x2, 3x3) and F(4x4, 3x3) tile transforms and their adjoints.
"""
