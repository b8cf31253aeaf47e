"""The table of layers: one entry per layer, read by everything that iterates over layers.

Each :class:`LayerSpec` says what a layer is (its naive and fast classes,
forward's array and dict arguments, the gradients backward returns, the
functions a student implements) and how to make inputs for it (a generator
and named :class:`Geometry` values). The self-check (``python -m convnet
check``), the grader's catalogues, the table-driven tests and the benchmarks
all read :data:`LAYERS`; adding a layer means writing the layer, adding its
entry here, and its tests.

Geometry roles
--------------
``check``
    the self-check's case (float64, finite differences valid).
``public``
    the grader's visible forward check.
``fd``
    the grader's visible backward check: tiny, every coordinate is perturbed.
``hidden``
    the grader's hidden cases, each a forward and a backward check.
``bench``
    the benchmark's cases (fast layers only).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Geometry", "Call", "LayerSpec", "LAYERS", "spec", "resolve"]


@dataclass(frozen=True, kw_only=True)
class Geometry:
    """One input configuration of a layer.

    Parameters
    ----------
    label : str
        What the case exercises, in a student's words ("stride 2, non-square kernel").
    dims : dict
        Keyword arguments of the layer's generator (shapes and parameter values).
    dtype : str
        ``'float64'`` or ``'float32'``; every array of the call has it.
    fd : bool
        Whether finite differences are valid at these inputs (False where max-pool windows
        hold tied maxima, which makes the output non-differentiable).
    """

    label: str
    dims: dict
    dtype: str = "float64"
    fd: bool = True


@dataclass
class Call:
    """The arguments of one forward call: arrays by name and parameter dicts by name.

    ``args()`` lists them in forward's order (arrays first, then dicts). A
    parameter dict may hold arrays (batch norm's running statistics).
    """

    arrays: dict
    params: dict = field(default_factory=dict)

    def args(self) -> list:
        return [*self.arrays.values(), *self.params.values()]

    def copy(self) -> "Call":
        """A deep copy: forward passes may write into parameter dicts."""
        def cp(v):
            if isinstance(v, np.ndarray):
                return v.copy()
            if isinstance(v, dict):
                return {k: cp(x) for k, x in v.items()}
            return v
        return Call({k: v.copy() for k, v in self.arrays.items()}, {k: cp(v) for k, v in self.params.items()})


@dataclass(frozen=True, kw_only=True)
class LayerSpec:
    """One layer of the table.

    Parameters
    ----------
    name : str
        The class name in :mod:`convnet.layers` ("Conv").
    arrays : tuple of str
        forward's array arguments, in order ("x", "w", "b"); backward returns their gradients.
    params : tuple of str
        forward's dict arguments after the arrays ("conv_param",).
    make : callable
        ``make(rng, dtype, **dims) -> Call``: inputs for one geometry.
    geometries : dict
        Geometries by role (see the module docstring); ``hidden`` is a tuple, ``bench`` a dict.
    fast : str or None
        The fast class's name in :mod:`convnet.fast`, if any.
    backwards : tuple of str
        The backward methods, each returning the same gradients ("backward", "backward_alt").
    mutates : tuple of (str, str)
        ``(param, key)`` entries forward writes into a parameter dict (running statistics).
    stochastic : bool
        The forward draws random numbers (its output is graded by statistics, not equality).
    uses : tuple of str
        Other layers of the table this layer's implementation calls (SpatialBatchNorm calls BatchNorm):
        the grader serves them from the reference while it grades this layer, so their bugs cost only
        their own checks.
    independent : callable or None
        ``independent(call) -> out``: the forward pass computed another way (vectorised, from
        the definition), for the self-check and the tests.
    torch : callable or None
        ``torch(torch_module, tensors, call) -> out``: PyTorch's forward, the oracle; ``tensors``
        maps the array names to tensors.
    points : dict
        The grader's points by check kind: ``forward``, ``backward`` (visible checks) and
        ``hidden`` (each hidden forward or backward check).
    """

    name: str
    arrays: tuple
    params: tuple = ()
    make: Callable
    geometries: dict
    fast: str | None = None
    backwards: tuple = ("backward",)
    mutates: tuple = ()
    stochastic: bool = False
    uses: tuple = ()
    independent: Callable | None = None
    torch: Callable | None = None
    points: dict = field(default_factory=lambda: {"forward": 1, "backward": 2, "hidden": 1})

    @property
    def grads(self) -> tuple:
        """The names of backward's return values ("dx", "dw", "db")."""
        return tuple("d" + a for a in self.arrays)

    @property
    def stubs(self) -> tuple:
        """The functions a student implements ("Conv.forward", "Conv.backward", ...)."""
        return (f"{self.name}.forward", *(f"{self.name}.{b}" for b in self.backwards))

    @property
    def naive_class(self):
        return resolve(f"layers.{self.name}")

    @property
    def fast_class(self):
        return resolve(f"fast.{self.fast}") if self.fast else None

    def call(self, rng, role_or_geometry="check") -> Call:
        """Inputs for a geometry (or the geometry of a role) drawn from ``rng``."""
        g = self.geometries[role_or_geometry] if isinstance(role_or_geometry, str) else role_or_geometry
        return self.make(rng, np.dtype(g.dtype), **g.dims)

    def hidden(self) -> tuple:
        return tuple(self.geometries.get("hidden", ()))


def resolve(path: str):
    """``'layers.Conv'`` -> :class:`convnet.layers.Conv` (attributes after the module name)."""
    module, *attrs = path.split(".")
    obj = importlib.import_module("convnet." + module)
    for a in attrs:
        obj = getattr(obj, a)
    return obj


# ---------------------------------------------------------------- generators


def _spaced(rng, shape, dtype, low=-1.0, high=1.0):
    """Distinct values at least (high - low) / size apart, shuffled: every window has one maximum."""
    n = int(np.prod(shape))
    return rng.permutation(np.linspace(low, high, n)).reshape(shape).astype(dtype)


def _tied(rng, shape, dtype):
    """Values from a set of five, so most windows hold their maximum more than once."""
    return rng.integers(-2, 3, size=shape).astype(dtype)


def _away_from_zero(rng, shape, dtype, margin=0.05):
    """Normal values with none closer to 0 than ``margin`` (ReLU's kink)."""
    x = rng.standard_normal(shape)
    small = np.abs(x) < margin
    x[small] = np.where(x[small] < 0, -1, 1) * (margin + rng.random(int(small.sum())))
    return x.astype(dtype)


def _linear(rng, dtype, x=(2, 3), M=4):
    D = int(np.prod(x[1:]))
    return Call({"x": rng.standard_normal(x).astype(dtype), "w": (0.5 * rng.standard_normal((D, M))).astype(dtype),
                 "b": rng.standard_normal(M).astype(dtype)})


def _relu(rng, dtype, x=(3, 5), zeros=False):
    values = _away_from_zero(rng, x, dtype)
    if zeros:
        # Exact zeros, where ReLU's gradient is 0 by PyTorch's convention (finite differences are invalid there).
        values.reshape(-1)[rng.permutation(values.size)[: max(1, values.size // 4)]] = 0
    return Call({"x": values})


def _conv(rng, dtype, x, w, stride=1, pad=0):
    return Call({"x": rng.standard_normal(x).astype(dtype), "w": (0.5 * rng.standard_normal(w)).astype(dtype),
                 "b": rng.standard_normal(w[0]).astype(dtype)},
                {"conv_param": {"stride": stride, "pad": pad}})


def _pool(rng, dtype, x, window, stride, pad=0, ties=False):
    param = {"pool_height": window[0], "pool_width": window[1], "stride": stride}
    if pad:
        param["pad"] = pad
    values = _tied(rng, x, dtype) if ties else _spaced(rng, x, dtype)
    return Call({"x": values}, {"pool_param": param})


def _batchnorm(rng, dtype, x, mode="train", momentum=0.9, running=False):
    D = x[1]
    bn = {"mode": mode, "eps": 1e-5, "momentum": momentum}
    if mode == "test" or running:
        bn["running_mean"] = rng.standard_normal(D).astype(dtype)
        bn["running_var"] = (rng.random(D) + 0.5).astype(dtype)
    return Call({"x": (2 * rng.standard_normal(x) + 1).astype(dtype), "gamma": rng.standard_normal(D).astype(dtype),
                 "beta": rng.standard_normal(D).astype(dtype)}, {"bn_param": bn})


def _dropout(rng, dtype, x=(200, 50), p=0.3):
    return Call({"x": (rng.random(x) + 0.5).astype(dtype)},
                {"dropout_param": {"p": p, "mode": "train", "seed": int(rng.integers(0, 2**31))}})


# ---------------------------------------------------------------- independent forward passes


def _windows(x, kh, kw, stride, pad, fill=0.0):
    from numpy.lib.stride_tricks import as_strided

    N, C, H, W = x.shape
    # The padded copy by hand: np.pad's generality costs 20x more, and finite differences call this thousands of times.
    xp = np.full((N, C, H + 2 * pad, W + 2 * pad), fill, dtype=x.dtype)
    xp[:, :, pad:pad + H, pad:pad + W] = x
    # (N, C, H', W', kh, kw): window (i, j) starts at row i*stride, column j*stride of xp (sliding_window_view's
    # windows subsampled by the stride, without its checks).
    sn, sc, sh, sw = xp.strides
    shape = (N, C, (xp.shape[2] - kh) // stride + 1, (xp.shape[3] - kw) // stride + 1, kh, kw)
    return as_strided(xp, shape, (sn, sc, sh * stride, sw * stride, sh, sw), writeable=False)


def _crop(win, H_out, W_out):
    return win[:, :, :H_out, :W_out]


def _conv_independent(call):
    x, w, b = call.arrays["x"], call.arrays["w"], call.arrays["b"]
    p = call.params["conv_param"]
    H_out = 1 + (x.shape[2] + 2 * p["pad"] - w.shape[2]) // p["stride"]
    W_out = 1 + (x.shape[3] + 2 * p["pad"] - w.shape[3]) // p["stride"]
    win = _crop(_windows(x, w.shape[2], w.shape[3], p["stride"], p["pad"]), H_out, W_out)
    return np.einsum("nchwij,fcij->nfhw", win, w) + b[None, :, None, None]


def _pool_independent(reduce, fill):
    def forward(call):
        x, p = call.arrays["x"], call.params["pool_param"]
        ph, pw, s, pad = p["pool_height"], p["pool_width"], p["stride"], p.get("pad", 0)
        H_out = 1 + (x.shape[2] + 2 * pad - ph) // s
        W_out = 1 + (x.shape[3] + 2 * pad - pw) // s
        return reduce(_crop(_windows(x, ph, pw, s, pad, fill), H_out, W_out), axis=(4, 5))
    return forward


def _bn_independent(axes):
    def forward(call):
        x, gamma, beta = call.arrays["x"], call.arrays["gamma"], call.arrays["beta"]
        bn = call.params["bn_param"]
        shape = [1] * x.ndim
        shape[1] = x.shape[1]
        if bn["mode"] == "train":
            mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
        else:
            mean, var = bn["running_mean"].reshape(shape), bn["running_var"].reshape(shape)
        return gamma.reshape(shape) * (x - mean) / np.sqrt(var + bn.get("eps", 1e-5)) + beta.reshape(shape)
    return forward


# ---------------------------------------------------------------- PyTorch's forward passes


def _torch_conv(torch, t, call):
    p = call.params["conv_param"]
    return torch.nn.functional.conv2d(t["x"], t["w"], t["b"], stride=p["stride"], padding=p["pad"])


def _torch_pool(kind):
    def forward(torch, t, call):
        p = call.params["pool_param"]
        kw = dict(kernel_size=(p["pool_height"], p["pool_width"]), stride=p["stride"], padding=p.get("pad", 0))
        if kind == "max":
            return torch.nn.functional.max_pool2d(t["x"], **kw)
        return torch.nn.functional.avg_pool2d(t["x"], count_include_pad=True, **kw)
    return forward


def _torch_bn(torch, t, call):
    bn = call.params["bn_param"]
    train = bn["mode"] == "train"
    rm = None if train else torch.tensor(bn["running_mean"])
    rv = None if train else torch.tensor(bn["running_var"])
    return torch.nn.functional.batch_norm(t["x"], rm, rv, t["gamma"], t["beta"], training=train,
                                          eps=bn.get("eps", 1e-5))


def _torch_linear(torch, t, call):
    return t["x"].reshape(t["x"].shape[0], -1) @ t["w"] + t["b"]


# ---------------------------------------------------------------- the table

G = Geometry

LAYERS = {
    "Linear": LayerSpec(
        name="Linear", arrays=("x", "w", "b"), make=_linear,
        independent=lambda c: np.einsum("nd,dm->nm", c.arrays["x"].reshape(len(c.arrays["x"]), -1),
                                        c.arrays["w"]) + c.arrays["b"],
        torch=_torch_linear,
        geometries={
            "check": G(label="x (2, 3)", dims=dict(x=(2, 3), M=4)),
            "public": G(label="x (3, 2, 3, 2) flattened to 12 features", dims=dict(x=(3, 2, 3, 2), M=5)),
            "fd": G(label="x (2, 3, 2) flattened to 6 features", dims=dict(x=(2, 3, 2), M=3)),
            "hidden": (
                G(label="x (4, 3, 2): the batch and the flattening", dims=dict(x=(4, 3, 2), M=6)),
                G(label="float32 keeps its dtype", dims=dict(x=(3, 5), M=4), dtype="float32"),
            ),
        },
        points={"forward": 1, "backward": 2, "hidden": 1},
    ),
    "ReLU": LayerSpec(
        name="ReLU", arrays=("x",), make=_relu,
        independent=lambda c: np.where(c.arrays["x"] > 0, c.arrays["x"], 0),
        torch=lambda torch, t, c: torch.relu(t["x"]),
        geometries={
            "check": G(label="x (3, 5)", dims=dict(x=(3, 5))),
            "public": G(label="x (4, 6)", dims=dict(x=(4, 6))),
            "fd": G(label="x (3, 5)", dims=dict(x=(3, 5))),
            "hidden": (
                G(label="x (2, 3, 4, 5): any shape", dims=dict(x=(2, 3, 4, 5))),
                G(label="exact zeros in x: no gradient flows there (x > 0, as PyTorch)",
                  dims=dict(x=(4, 6), zeros=True), fd=False),
                G(label="float32 keeps its dtype", dims=dict(x=(5, 7)), dtype="float32"),
            ),
        },
        points={"forward": 1, "backward": 1, "hidden": 1},
    ),
    "Conv": LayerSpec(
        name="Conv", arrays=("x", "w", "b"), params=("conv_param",), make=_conv, fast="FastConv",
        backwards=("backward", "backward_alt"),
        independent=_conv_independent, torch=_torch_conv,
        geometries={
            "check": G(label="stride 2, pad 1, 3x2 kernel", dims=dict(x=(2, 3, 6, 5), w=(4, 3, 3, 2), stride=2, pad=1)),
            "public": G(label="stride 1, pad 1", dims=dict(x=(2, 3, 6, 6), w=(3, 3, 3, 3), stride=1, pad=1)),
            "fd": G(label="stride 2, pad 1, two images", dims=dict(x=(2, 2, 5, 5), w=(2, 2, 3, 3), stride=2, pad=1)),
            "hidden": (
                G(label="stride 2, pad 1, non-square 3x2 kernel",
                  dims=dict(x=(2, 3, 7, 6), w=(4, 3, 3, 2), stride=2, pad=1)),
                G(label="pad 0", dims=dict(x=(2, 2, 6, 5), w=(3, 2, 3, 3), stride=1, pad=0)),
                G(label="stride 3 that does not divide (floor)",
                  dims=dict(x=(2, 2, 8, 8), w=(3, 2, 3, 3), stride=3, pad=1)),
                G(label="float32 keeps its dtype", dims=dict(x=(2, 2, 5, 5), w=(3, 2, 3, 3), stride=1, pad=1),
                  dtype="float32"),
            ),
            "bench": {
                "C1": G(label="3 channels, 3x3/1", dims=dict(x=(64, 3, 32, 32), w=(32, 3, 3, 3), stride=1, pad=1)),
                "C2": G(label="64 channels, 3x3/1", dims=dict(x=(64, 64, 16, 16), w=(64, 64, 3, 3), stride=1, pad=1)),
                "C3": G(label="32 channels, 3x3/2", dims=dict(x=(32, 32, 32, 32), w=(64, 32, 3, 3), stride=2, pad=1)),
                "C4": G(label="3 channels, 7x7/1", dims=dict(x=(50, 3, 32, 32), w=(32, 3, 7, 7), stride=1, pad=3)),
            },
        },
        points={"forward": 2, "backward": 3, "hidden": 1},
    ),
    "MaxPool": LayerSpec(
        name="MaxPool", arrays=("x",), params=("pool_param",), make=_pool, fast="FastMaxPool",
        independent=_pool_independent(np.max, -np.inf), torch=_torch_pool("max"),
        geometries={
            "check": G(label="3x2 window, stride 1, pad 1", dims=dict(x=(2, 2, 5, 6), window=(3, 2), stride=1, pad=1)),
            "public": G(label="2x2 window, stride 2", dims=dict(x=(2, 3, 6, 6), window=(2, 2), stride=2)),
            "fd": G(label="3x3 windows, stride 2: overlapping windows",
                    dims=dict(x=(2, 2, 5, 5), window=(3, 3), stride=2)),
            "hidden": (
                G(label="3x2 window, stride 2, pad 1", dims=dict(x=(2, 2, 7, 7), window=(3, 2), stride=2, pad=1)),
                G(label="tied maxima: the first in row-major order takes the gradient",
                  dims=dict(x=(2, 2, 6, 6), window=(2, 2), stride=1, ties=True), fd=False),
                G(label="stride 3 that does not divide (floor)", dims=dict(x=(2, 2, 8, 8), window=(3, 3), stride=3)),
                G(label="float32 keeps its dtype", dims=dict(x=(2, 2, 6, 6), window=(2, 2), stride=2),
                  dtype="float32"),
            ),
            "bench": {
                "P1": G(label="2x2/2", dims=dict(x=(64, 64, 32, 32), window=(2, 2), stride=2)),
                "P2": G(label="3x3/2 overlapping", dims=dict(x=(64, 64, 33, 33), window=(3, 3), stride=2)),
            },
        },
        points={"forward": 1, "backward": 2, "hidden": 1},
    ),
    "AvgPool": LayerSpec(
        name="AvgPool", arrays=("x",), params=("pool_param",), make=_pool, fast="FastAvgPool",
        independent=_pool_independent(np.mean, 0.0), torch=_torch_pool("avg"),
        geometries={
            "check": G(label="3x2 window, stride 1, pad 1", dims=dict(x=(2, 2, 5, 6), window=(3, 2), stride=1, pad=1)),
            "public": G(label="2x2 window, stride 2", dims=dict(x=(2, 3, 6, 6), window=(2, 2), stride=2)),
            "fd": G(label="3x3 windows, stride 2: overlapping windows",
                    dims=dict(x=(2, 2, 5, 5), window=(3, 3), stride=2)),
            "hidden": (
                G(label="3x2 window, stride 2, pad 1: padding counts in the divisor",
                  dims=dict(x=(2, 2, 7, 7), window=(3, 2), stride=2, pad=1)),
                G(label="3x3 window, stride 1: overlapping windows", dims=dict(x=(2, 2, 6, 6), window=(3, 3), stride=1)),
                G(label="float32 keeps its dtype", dims=dict(x=(2, 2, 6, 6), window=(2, 2), stride=2),
                  dtype="float32"),
            ),
            "bench": {
                "P3": G(label="2x2/2", dims=dict(x=(64, 64, 32, 32), window=(2, 2), stride=2)),
            },
        },
        points={"forward": 1, "backward": 2, "hidden": 1},
    ),
    "BatchNorm": LayerSpec(
        name="BatchNorm", arrays=("x", "gamma", "beta"), params=("bn_param",), make=_batchnorm,
        backwards=("backward", "backward_alt"), mutates=(("bn_param", "running_mean"), ("bn_param", "running_var")),
        independent=_bn_independent(0), torch=_torch_bn,
        geometries={
            "check": G(label="x (6, 4)", dims=dict(x=(6, 4))),
            "public": G(label="x (8, 4), train mode", dims=dict(x=(8, 4))),
            "fd": G(label="x (6, 3), train mode", dims=dict(x=(6, 3))),
            "hidden": (
                G(label="x (7, 5), train mode, running statistics updated with momentum 0.8",
                  dims=dict(x=(7, 5), momentum=0.8, running=True)),
                G(label="test mode: the running statistics normalise", dims=dict(x=(5, 4), mode="test")),
                G(label="float32 keeps its dtype", dims=dict(x=(6, 3)), dtype="float32"),
            ),
        },
        points={"forward": 1, "backward": 2, "hidden": 1},
    ),
    "SpatialBatchNorm": LayerSpec(
        name="SpatialBatchNorm", arrays=("x", "gamma", "beta"), params=("bn_param",), make=_batchnorm,
        uses=("BatchNorm",), mutates=(("bn_param", "running_mean"), ("bn_param", "running_var")),
        independent=_bn_independent((0, 2, 3)), torch=_torch_bn,
        geometries={
            "check": G(label="x (2, 3, 4, 3)", dims=dict(x=(2, 3, 4, 3))),
            "public": G(label="x (3, 2, 3, 3), train mode", dims=dict(x=(3, 2, 3, 3))),
            "fd": G(label="x (2, 2, 2, 3), train mode", dims=dict(x=(2, 2, 2, 3))),
            "hidden": (
                G(label="x (2, 3, 3, 4), train mode, running statistics updated",
                  dims=dict(x=(2, 3, 3, 4), momentum=0.8, running=True)),
                G(label="test mode: the running statistics normalise", dims=dict(x=(2, 3, 2, 2), mode="test")),
            ),
        },
        points={"forward": 1, "backward": 2, "hidden": 1},
    ),
    "Dropout": LayerSpec(
        name="Dropout", arrays=("x",), params=("dropout_param",), make=_dropout, stochastic=True,
        geometries={
            "check": G(label="x (4, 5), p 0.3", dims=dict(x=(4, 5))),
            "public": G(label="x (200, 50), p 0.3", dims=dict(x=(200, 50), p=0.3)),
            "hidden": (G(label="x (100, 80), p 0.6", dims=dict(x=(100, 80), p=0.6)),),
        },
        points={"forward": 1, "backward": 1, "hidden": 1},
    ),
}


def spec(name: str) -> LayerSpec:
    """The table's entry for a layer, with a clear error for an unknown name."""
    try:
        return LAYERS[name]
    except KeyError:
        raise KeyError(f"no layer {name!r} in the table; known: {', '.join(LAYERS)}") from None
