"""Sandwich layers: common chains of layers packaged as one layer, as in EECS 498.

Each sandwich is a class with static ``forward`` and ``backward``, like the
layers it is made of. They are all built by one helper, :func:`_sandwich`,
from a list of stages; nothing is hand-copied:

* ``forward(x, <arrays of each stage in order>, <parameter dicts of each stage in order>)``
  chains the stages' forward passes and returns ``(out, cache)``, where the
  cache is the tuple of the stages' caches;
* ``backward(dout, cache)`` runs the stages' backward passes in reverse and
  returns ``dx`` followed by the gradients of the arrays in ``forward``'s order.

| sandwich | forward | backward returns |
|---|---|---|
| ``Linear_ReLU`` | ``(x, w, b)`` | dx, dw, db |
| ``Conv_ReLU`` | ``(x, w, b, conv_param)`` | dx, dw, db |
| ``Conv_ReLU_Pool`` | ``(x, w, b, conv_param, pool_param)`` | dx, dw, db |
| ``Linear_BatchNorm_ReLU`` | ``(x, w, b, gamma, beta, bn_param)`` | dx, dw, db, dgamma, dbeta |
| ``Conv_BatchNorm_ReLU`` | ``(x, w, b, gamma, beta, conv_param, bn_param)`` | dx, dw, db, dgamma, dbeta |
| ``Conv_BatchNorm_ReLU_Pool`` | ``(x, w, b, gamma, beta, conv_param, bn_param, pool_param)`` | dx, dw, db, dgamma, dbeta |

Convolution and pooling use the fast path (:class:`convnet.fast.FastConv`,
:class:`convnet.fast.FastMaxPool`), as the course's sandwich layers do. Spatial
batch norm and the ReLU after it run as one fast stage,
:class:`convnet.fast.batchnorm.FastSpatialBatchNormReLU`, where that module is
installed, and ReLU then max pooling as :class:`convnet.fast.fused.FastReLUMaxPool`
(pooling first: the ReLU then covers a quarter of the data). The student starter
leaves both out (one holds the batch-norm backward; students' sandwiches use their
own ReLU), and there the stages are the naive :class:`~convnet.layers.SpatialBatchNorm`
and :class:`~convnet.layers.ReLU` with :class:`~convnet.fast.FastMaxPool`.
"""
from __future__ import annotations

import importlib.util
import inspect
from typing import NamedTuple

from convnet import _checks
from convnet.fast import FastConv, FastMaxPool
from convnet.layers import BatchNorm, Linear, ReLU, SpatialBatchNorm

__all__ = ["Linear_ReLU", "Conv_ReLU", "Conv_ReLU_Pool", "Linear_BatchNorm_ReLU",
           "Conv_BatchNorm_ReLU", "Conv_BatchNorm_ReLU_Pool"]


class Stage(NamedTuple):
    """One layer of a sandwich: the layer class, names of its array and dict arguments (after x)."""

    layer: type
    arrays: tuple = ()
    params: tuple = ()


def _sandwich(name: str, *stages: Stage, doc: str = "") -> type:
    """Build a sandwich layer class that chains ``stages`` forward and reverses them backward."""
    array_names = [a for s in stages for a in s.arrays]
    param_names = [p for s in stages for p in s.params]
    arg_names = ["x", *array_names, *param_names]
    if len(set(arg_names)) != len(arg_names):
        raise ValueError(f"{name}: duplicate argument names {arg_names}")
    P = inspect.Parameter
    signature = inspect.Signature([P(a, P.POSITIONAL_OR_KEYWORD) for a in arg_names])
    n_stages = len(stages)

    def forward(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{name}.forward{signature}: {exc}") from None
        values = bound.arguments
        out = values["x"]
        caches = []
        for stage in stages:
            stage_args = [values[a] for a in stage.arrays] + [values[p] for p in stage.params]
            out, cache = stage.layer.forward(out, *stage_args)
            caches.append(cache)
        return out, tuple(caches)

    def backward(dout, cache):
        caches = _checks.check_cache(cache, n_stages, name)
        grads = [None] * n_stages
        for i in reversed(range(n_stages)):
            result = stages[i].layer.backward(dout, caches[i])
            if stages[i].arrays:
                dout, *grads[i] = result
            else:
                dout, grads[i] = result, []
        return (dout, *(g for stage_grads in grads for g in stage_grads))

    chain = " -> ".join(s.layer.__name__ for s in stages)
    forward.__name__, backward.__name__ = "forward", "backward"
    forward.__qualname__, backward.__qualname__ = f"{name}.forward", f"{name}.backward"
    forward.__signature__ = signature
    forward.__doc__ = (f"{chain} forward pass.\n\n"
                       f"Arguments are passed on to the stage that owns them: "
                       f"{', '.join(arg_names)}.\n\n"
                       f"Returns\n-------\nout : ndarray\n    The last stage's output.\n"
                       f"cache : tuple\n    One cache per stage ({n_stages} items).\n")
    backward.__doc__ = (f"{chain} backward pass.\n\n"
                        f"Returns\n-------\n"
                        f"{', '.join('d' + a for a in ['x', *array_names])} : ndarray\n"
                        f"    Gradients in the order of forward's array arguments.\n")
    namespace = {
        "__doc__": doc or f"Sandwich layer {chain}.",
        "__module__": __name__,
        "stages": stages,
        "forward": staticmethod(forward),
        "backward": staticmethod(backward),
    }
    return type(name, (), namespace)


_LINEAR = Stage(Linear, ("w", "b"))
_CONV = Stage(FastConv, ("w", "b"), ("conv_param",))
_RELU = Stage(ReLU)
_POOL = Stage(FastMaxPool, (), ("pool_param",))
_BN = Stage(BatchNorm, ("gamma", "beta"), ("bn_param",))
_SBN = Stage(SpatialBatchNorm, ("gamma", "beta"), ("bn_param",))


def _fast_batchnorm_relu():
    """The fused fast spatial batch norm + ReLU stage, or None where its module is absent (the starter)."""
    if importlib.util.find_spec("convnet.fast.batchnorm") is None:
        return None
    from convnet.fast.batchnorm import FastSpatialBatchNormReLU

    return Stage(FastSpatialBatchNormReLU, ("gamma", "beta"), ("bn_param",))


def _fast_relu_pool():
    """The fused ReLU + max pool stage, or None where its module is absent (the starter)."""
    if importlib.util.find_spec("convnet.fast.fused") is None:
        return None
    from convnet.fast.fused import FastReLUMaxPool

    return Stage(FastReLUMaxPool, (), ("pool_param",))


_SBN_RELU = _fast_batchnorm_relu()
_RELU_POOL = _fast_relu_pool()
# Spatial batch norm then ReLU, ReLU then max pool: one fused stage each when the fast ones exist.
_CONV_BN_RELU = (_CONV, _SBN_RELU) if _SBN_RELU is not None else (_CONV, _SBN, _RELU)
_RELU_THEN_POOL = (_RELU_POOL,) if _RELU_POOL is not None else (_RELU, _POOL)

Linear_ReLU = _sandwich("Linear_ReLU", _LINEAR, _RELU,
                        doc="Linear followed by ReLU; x (N, d_1, ..., d_k), w (D, M), b (M,).")
Conv_ReLU = _sandwich("Conv_ReLU", _CONV, _RELU,
                      doc="Convolution followed by ReLU; x (N, C, H, W), w (F, C, HH, WW), b (F,).")
Conv_ReLU_Pool = _sandwich("Conv_ReLU_Pool", _CONV, *_RELU_THEN_POOL,
                           doc="Convolution, ReLU, then max pooling.")
Linear_BatchNorm_ReLU = _sandwich("Linear_BatchNorm_ReLU", _LINEAR, _BN, _RELU,
                                  doc="Linear, batch norm over (N, M), then ReLU; gamma, beta (M,).")
Conv_BatchNorm_ReLU = _sandwich("Conv_BatchNorm_ReLU", *_CONV_BN_RELU,
                                doc="Convolution, spatial batch norm, then ReLU; gamma, beta (F,).")
Conv_BatchNorm_ReLU_Pool = _sandwich("Conv_BatchNorm_ReLU_Pool", *_CONV_BN_RELU, _POOL,
                                     doc="Convolution, spatial batch norm, ReLU, then max pooling.")
