"""convnet: EECS 498 assignment 3 on numpy, with a Cython fast path.

The naive reference layers live in :mod:`convnet.layers`, the fast layers in
:mod:`convnet.fast`, the networks in :mod:`convnet.models`.
"""
__version__ = "0.1.0"

from convnet import layers as _layers
from convnet.gradcheck import compute_numeric_gradient, grad_check_sparse, rel_error  # noqa: F401
from convnet.layers import *  # noqa: F401,F403 - every layer, as layers.__all__ lists them
from convnet.losses import softmax_loss, svm_loss  # noqa: F401

__all__ = [*_layers.__all__, "softmax_loss", "svm_loss", "compute_numeric_gradient", "rel_error",
           "grad_check_sparse"]
