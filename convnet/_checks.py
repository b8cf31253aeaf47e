"""Argument validation and output sizes, shared by the naive and the fast layers.

Every public layer calls one of the ``*_args`` functions below before doing any
work. They raise ``TypeError`` for a wrong kind of object or dtype and
``ValueError`` for a wrong shape or value, and always name the offending values.
The fast path relies on them: a kernel only ever sees arguments that passed here.
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class ConvGeometry(NamedTuple):
    """Validated convolution geometry; every field is a plain ``int``."""

    N: int
    C: int
    H: int
    W: int
    F: int
    HH: int
    WW: int
    stride: int
    pad: int
    H_out: int
    W_out: int


class PoolGeometry(NamedTuple):
    """Validated pooling geometry; every field is a plain ``int``."""

    N: int
    C: int
    H: int
    W: int
    pool_height: int
    pool_width: int
    stride: int
    pad: int
    H_out: int
    W_out: int


# ---------------------------------------------------------------- primitives


def output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Number of window positions along one axis: ``1 + (size + 2*pad - kernel) // stride``.

    The floor matches PyTorch (``ceil_mode=False``). Callers validate first;
    the result may be <= 0, which the ``*_args`` functions reject.
    """
    return 1 + (size + 2 * pad - kernel) // stride


def check_array(name: str, a, ndim=None) -> np.ndarray:
    """Check that ``a`` is a float32/float64 ndarray of rank ``ndim`` (int, tuple, or None)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {a.dtype}; expected float32 or float64")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name} must have rank {want}, got shape {a.shape} (rank {a.ndim})")
    return a


def check_float_dtype(dtype, name: str = "dtype") -> np.dtype:
    """A dtype argument (``np.float32``, ``'float64'``, ...) that names float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def check_same_dtype(**arrays: np.ndarray) -> np.dtype:
    """All arrays share one dtype; mixed float32/float64 is refused, not silently upcast."""
    dtypes = {name: a.dtype for name, a in arrays.items()}
    first = next(iter(dtypes.values()))
    if any(d != first for d in dtypes.values()):
        listing = ", ".join(f"{n} is {d}" for n, d in dtypes.items())
        raise ValueError(f"mixed dtypes: {listing}; cast them to one dtype first")
    return first


def check_int(name: str, value, minimum: int) -> int:
    """An integer (not a bool, not a float) that is at least ``minimum``."""
    if type(value) is not int:  # plain ints skip the slow isinstance checks against the numbers ABCs
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
        value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_real(name: str, value, low=None, high=None, low_open=False, high_open=False) -> float:
    """A real number (not a bool) inside the stated interval."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return value


def check_params(name: str, params, required=(), optional=None, allowed=None) -> dict:
    """``params`` is a mapping holding every key in ``required`` and no other key.

    The valid keys are ``required``, the keys of ``optional`` (defaults filled
    in) and ``allowed`` (accepted, no default); an unknown key (a misspelt
    ``'padd'``) is a ValueError listing the valid ones. Returns a plain dict.
    """
    if type(params) is dict and params.keys() <= {*required, *(optional or ()), *(allowed or ())} \
            and all(k in params for k in required):
        return {**optional, **params} if optional else dict(params)  # a valid dict: no messages to build
    if not isinstance(params, Mapping):
        raise TypeError(f"{name} must be a dict, got {type(params).__name__}")
    missing = [k for k in required if k not in params]
    if missing:
        raise ValueError(f"{name} is missing key(s) {missing}; it has {sorted(map(str, params))}")
    valid = [*required, *(optional or {}), *(allowed or ())]
    unknown = [k for k in params if k not in valid]
    if unknown:
        raise ValueError(f"{name} has unknown key(s) {sorted(unknown, key=str)}; "
                         f"the valid keys are {valid}")
    out = dict(optional or {})
    out.update(params)
    return out


def physical_memory() -> int:
    """Bytes of physical memory (2**40 where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not POSIX
        return 2**40


# A layer whose output or padded input would need more bytes than this is refused before any allocation.
MEMORY_BOUND = physical_memory()


def check_memory(layer: str, what: str, shape, itemsize: int, pad: int, param: str) -> None:
    """ValueError naming the pad and the bytes when an array of ``shape`` would exceed :data:`MEMORY_BOUND`."""
    nbytes = math.prod(int(n) for n in shape) * int(itemsize)
    if nbytes > MEMORY_BOUND:
        raise ValueError(f"{layer}: {param}['pad'] = {pad} makes the {what} of shape {tuple(shape)} need "
                         f"{nbytes} bytes ({nbytes / 2**30:.1f} GiB), more than the bound of {MEMORY_BOUND} bytes "
                         f"(this machine's memory); reduce the pad or the input size")


def check_dout(dout, shape, dtype, layer: str) -> np.ndarray:
    """The upstream gradient has the forward output's shape and dtype."""
    check_array("dout", dout)
    if dout.shape != tuple(shape):
        raise ValueError(f"{layer}: dout has shape {dout.shape} but the forward output had shape {tuple(shape)}")
    if dout.dtype != dtype:
        raise ValueError(f"{layer}: dout is {dout.dtype} but the forward pass ran in {dtype}")
    return dout


def check_cache(cache, length: int, layer: str) -> tuple:
    """A naive layer's cache is the tuple its own forward returned."""
    owner = getattr(cache, "layer", None)
    if owner is not None and not isinstance(cache, tuple):
        raise TypeError(f"{layer}.backward got a cache made by {owner}.forward; pass it to {owner}.backward")
    if not isinstance(cache, tuple) or len(cache) != length:
        got = f"a tuple of length {len(cache)}" if isinstance(cache, tuple) else type(cache).__name__
        raise TypeError(f"{layer}.backward expects the cache returned by {layer}.forward "
                        f"(a tuple of length {length}), got {got}")
    return cache


# ---------------------------------------------------------------- layers


def linear_args(x, w, b) -> tuple[int, int, int]:
    """Validate Linear inputs; returns ``(N, D, M)``."""
    check_array("x", x)
    check_array("w", w, 2)
    check_array("b", b, 1)
    check_same_dtype(x=x, w=w, b=b)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, d1, ..., dk) with rank >= 2, got shape {x.shape}")
    N = x.shape[0]
    D = math.prod(x.shape[1:])
    if w.shape[0] != D:
        raise ValueError(f"x of shape {x.shape} flattens to D={D} features but w has shape {w.shape} "
                         f"(expects D={w.shape[0]})")
    M = w.shape[1]
    if b.shape != (M,):
        raise ValueError(f"b has shape {b.shape} but w has {M} outputs; expected b of shape ({M},)")
    return N, D, M


# The geometries of valid calls, by everything they depend on: a layer called again with the same shapes and
# parameters skips its dozens of checks (several microseconds, as much as a small layer's kernels).
_GEOMETRIES: dict = {}
_GEOMETRIES_MAX = 4096
_PLAIN_INTS = tuple((int,) * n for n in range(8))


def _geometry_key(kind: str, arrays: tuple, params):
    """A key for :data:`_GEOMETRIES`, or None: only plain ndarrays and a plain dict of plain ints are remembered
    (a bool or an Integral subclass is validated every time, as is any other input)."""
    if type(params) is not dict or len(params) >= len(_PLAIN_INTS) \
            or tuple(map(type, params.values())) != _PLAIN_INTS[len(params)]:
        return None
    key = [kind, MEMORY_BOUND, tuple(params.items())]  # the bound too: it decides validity (and tests patch it)
    for a in arrays:
        if type(a) is not np.ndarray:
            return None
        key += (a.shape, a.dtype)
    return tuple(key)


def _remember(key, geometry):
    if key is not None:
        if len(_GEOMETRIES) >= _GEOMETRIES_MAX:
            _GEOMETRIES.clear()
        _GEOMETRIES[key] = geometry
    return geometry


def conv_args(x, w, b, conv_param) -> ConvGeometry:
    """Validate Conv inputs and compute the output size.

    x (N, C, H, W), w (F, C, HH, WW), b (F,), conv_param {'stride': int >= 1, 'pad': int >= 0}.
    """
    key = _geometry_key("conv", (x, w, b), conv_param)
    known = _GEOMETRIES.get(key)
    if known is not None:
        return known
    return _remember(key, _conv_args(x, w, b, conv_param))


def _conv_args(x, w, b, conv_param) -> ConvGeometry:
    check_array("x", x, 4)
    check_array("w", w, 4)
    check_array("b", b, 1)
    check_same_dtype(x=x, w=w, b=b)
    params = check_params("conv_param", conv_param, required=("stride", "pad"))
    stride = check_int("conv_param['stride']", params["stride"], 1)
    pad = check_int("conv_param['pad']", params["pad"], 0)
    N, C, H, W = x.shape
    F, Cw, HH, WW = w.shape
    if Cw != C:
        raise ValueError(f"x has {C} channels (shape {x.shape}) but w expects {Cw} (shape {w.shape})")
    if b.shape != (F,):
        raise ValueError(f"b has shape {b.shape} but w has {F} filters; expected b of shape ({F},)")
    for name, n in (("N", N), ("C", C), ("H", H), ("W", W)):
        if n == 0:
            raise ValueError(f"x has an empty dimension {name}=0 (shape {x.shape})")
    for name, n in (("F", F), ("HH", HH), ("WW", WW)):
        if n == 0:
            raise ValueError(f"w has an empty dimension {name}=0 (shape {w.shape})")
    if HH > H + 2 * pad or WW > W + 2 * pad:
        raise ValueError(f"kernel {HH}x{WW} is larger than the padded input "
                         f"{H + 2 * pad}x{W + 2 * pad} (x {H}x{W}, pad {pad})")
    H_out = output_size(H, HH, stride, pad)
    W_out = output_size(W, WW, stride, pad)
    check_memory("conv", "output", (N, F, H_out, W_out), x.itemsize, pad, "conv_param")
    check_memory("conv", "padded input", (N, C, H + 2 * pad, W + 2 * pad), x.itemsize, pad, "conv_param")
    return ConvGeometry(N, C, H, W, F, HH, WW, stride, pad, H_out, W_out)


def pool_args(x, pool_param, layer: str = "pool") -> PoolGeometry:
    """Validate MaxPool/AvgPool inputs and compute the output size.

    x (N, C, H, W); pool_param {'pool_height': int >= 1, 'pool_width': int >= 1,
    'stride': int >= 1, 'pad': int >= 0 (optional, default 0)}. As in PyTorch,
    pad must be at most half the window on each axis, so every window holds at
    least one real input element.
    """
    key = _geometry_key("pool", (x,), pool_param)
    known = _GEOMETRIES.get(key)
    if known is not None:
        return known
    return _remember(key, _pool_args(x, pool_param, layer))


def _pool_args(x, pool_param, layer: str) -> PoolGeometry:
    check_array("x", x, 4)
    params = check_params("pool_param", pool_param,
                          required=("pool_height", "pool_width", "stride"), optional={"pad": 0})
    ph = check_int("pool_param['pool_height']", params["pool_height"], 1)
    pw = check_int("pool_param['pool_width']", params["pool_width"], 1)
    stride = check_int("pool_param['stride']", params["stride"], 1)
    pad = check_int("pool_param['pad']", params["pad"], 0)
    N, C, H, W = x.shape
    for name, n in (("N", N), ("C", C), ("H", H), ("W", W)):
        if n == 0:
            raise ValueError(f"x has an empty dimension {name}=0 (shape {x.shape})")
    if 2 * pad > ph or 2 * pad > pw:
        raise ValueError(f"{layer}: pad {pad} must be at most half the window "
                         f"{ph}x{pw} (pad <= {min(ph, pw) // 2})")
    if ph > H + 2 * pad or pw > W + 2 * pad:
        raise ValueError(f"{layer}: window {ph}x{pw} is larger than the padded input "
                         f"{H + 2 * pad}x{W + 2 * pad} (x {H}x{W}, pad {pad})")
    H_out = output_size(H, ph, stride, pad)
    W_out = output_size(W, pw, stride, pad)
    if pad:  # without padding the output and the padded input are no larger than x, which exists
        check_memory(layer, "output", (N, C, H_out, W_out), x.itemsize, pad, "pool_param")
        check_memory(layer, "padded input", (N, C, H + 2 * pad, W + 2 * pad), x.itemsize, pad, "pool_param")
    return PoolGeometry(N, C, H, W, ph, pw, stride, pad, H_out, W_out)


def batchnorm_args(x, gamma, beta, bn_param, spatial: bool = False) -> dict:
    """Validate (Spatial)BatchNorm inputs; returns bn_param with defaults filled in.

    The returned dict is a copy for reading; running statistics are written
    back into the caller's ``bn_param`` by the layer.
    """
    if spatial:
        check_array("x", x, 4)
        D = x.shape[1]
        layout = "(N, C, H, W)"
    else:
        check_array("x", x, 2)
        D = x.shape[1]
        layout = "(N, D)"
    check_array("gamma", gamma, 1)
    check_array("beta", beta, 1)
    check_same_dtype(x=x, gamma=gamma, beta=beta)
    if x.shape[0] == 0 or D == 0 or (spatial and 0 in x.shape):
        raise ValueError(f"x of layout {layout} has an empty dimension (shape {x.shape})")
    for name, a in (("gamma", gamma), ("beta", beta)):
        if a.shape != (D,):
            raise ValueError(f"{name} has shape {a.shape} but x of layout {layout} and shape {x.shape} "
                             f"has {D} features; expected ({D},)")
    p = check_params("bn_param", bn_param, required=("mode",), optional={"eps": 1e-5, "momentum": 0.9},
                     allowed=("running_mean", "running_var"))
    if p["mode"] not in ("train", "test"):
        raise ValueError(f"bn_param['mode'] must be 'train' or 'test', got {p['mode']!r}")
    p["eps"] = check_real("bn_param['eps']", p["eps"], low=0.0, low_open=True)
    p["momentum"] = check_real("bn_param['momentum']", p["momentum"], low=0.0, high=1.0)
    for key in ("running_mean", "running_var"):
        if key in p and p[key] is not None:
            r = check_array(f"bn_param[{key!r}]", p[key], 1)
            if r.shape != (D,):
                raise ValueError(f"bn_param[{key!r}] has shape {r.shape}; expected ({D},) for x of shape {x.shape}")
    return p


def dropout_args(x, dropout_param) -> dict:
    """Validate Dropout inputs; p is the probability of dropping a unit, 0 <= p < 1."""
    check_array("x", x)
    p = check_params("dropout_param", dropout_param, required=("p", "mode"), optional={"seed": None})
    p["p"] = check_real("dropout_param['p']", p["p"], low=0.0, high=1.0, high_open=True)
    if p["mode"] not in ("train", "test"):
        raise ValueError(f"dropout_param['mode'] must be 'train' or 'test', got {p['mode']!r}")
    if p["seed"] is not None:
        p["seed"] = check_int("dropout_param['seed']", p["seed"], 0)
    return p


def loss_args(x, y) -> tuple[int, int]:
    """Validate scores x (N, C) and integer labels y (N,) with 0 <= y[i] < C."""
    check_array("x", x, 2)
    if not isinstance(y, np.ndarray):
        raise TypeError(f"y must be a numpy ndarray of integer labels, got {type(y).__name__}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"y must hold integer labels, got dtype {y.dtype}")
    N, C = x.shape
    if y.shape != (N,):
        raise ValueError(f"y has shape {y.shape} but x has shape {x.shape}; expected y of shape ({N},)")
    if N == 0 or C == 0:
        raise ValueError(f"x has an empty dimension (shape {x.shape})")
    if y.size and (y.min() < 0 or y.max() >= C):
        raise ValueError(f"labels must lie in [0, {C}) for {C} classes, got min {y.min()} and max {y.max()}")
    return N, C
