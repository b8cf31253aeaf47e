"""Compiled kernels of the fast path (private).

The kernels here never validate their arguments: call them only through
:mod:`convnet.fast`, whose wrappers check shapes, dtypes and parameters with
:mod:`convnet._checks`, make inputs C-contiguous and allocate the outputs.

- ``_im2col``: ``im2col``/``col2im`` and ``im2row``/``row2im`` (fused float32/float64), their loops
  in ``_lowering.pxd``.
- ``_conv_part``: a batch part of the im2col and im2row convolutions in one call without the GIL,
  its GEMMs through numpy's OpenBLAS.
- ``_pool``: max and average pooling, forward and backward.
- ``_winograd``: Winograd F(2x2, 3x3) and F(4x4, 3x3) tile transforms and their adjoints.
- ``_batchnorm``: spatial batch norm, forward and backward.

Each has ``_v3``/``_v4`` variants (the same source built for x86-64-v3 and -v4).
"""
