"""Fuzzing the fast layers with bad arguments and edited caches: a clear ValueError/TypeError, never a crash.

Hypothesis draws a valid call, corrupts up to two things, and checks that the
layer either refuses it with ValueError/TypeError or agrees with the naive layer.
"""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convnet import layers
from convnet.fast import FastAvgPool, FastConv, FastMaxPool

DTYPES = [np.float32, np.float64]
POOLS = {"max": (FastMaxPool, layers.MaxPool), "avg": (FastAvgPool, layers.AvgPool)}
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


BAD_SCALARS = [0, -1, -(2**62), 1.5, True, "2", None, np.float64(2.0)]
BAD_ARRAYS = [
    lambda s: np.zeros(s, dtype=np.int64),
    lambda s: np.zeros(s, dtype=np.complex128),
    lambda s: np.zeros(s, dtype=np.float16),
    lambda s: np.zeros(s, dtype=">f8"),
    lambda s: np.zeros(s, dtype=object),
    lambda s: np.zeros(s).tolist(),
    lambda s: np.zeros(s[1:]),
    lambda s: np.zeros(s + (1,)),
    lambda s: np.zeros(s[:1] + (0,) + s[2:]),
]


CONV_CORRUPTIONS = ["x", "w", "b", "stride", "pad", "drop_stride", "drop_pad", "channels", "bias_len",
                    "dtype_mix", "kernel_too_big", "params_type"]


@FUZZ
@given(N=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(1, 6), W=st.integers(1, 6), F=st.integers(1, 3),
       p=st.integers(0, 2), s=st.integers(1, 3), khw=st.tuples(st.integers(1, 8), st.integers(1, 8)),
       corrupt=st.lists(st.sampled_from(CONV_CORRUPTIONS), max_size=2, unique=True),
       scalar=st.sampled_from(BAD_SCALARS), maker=st.sampled_from(BAD_ARRAYS), dtype=st.sampled_from(DTYPES))
def test_fuzz_conv_never_crashes(N, C, H, W, F, p, s, khw, corrupt, scalar, maker, dtype, tol):
    # Start from a valid call (when the kernel fits) and corrupt up to two things.
    HH, WW = min(khw[0], H + 2 * p), min(khw[1], W + 2 * p)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, HH, WW)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    cp = {"stride": s, "pad": p}
    for c in corrupt:
        if c in ("x", "w", "b"):
            arr = {"x": x, "w": w, "b": b}[c]
            bad = maker(np.shape(arr) if np.ndim(arr) == 4 else (F, 1, 1, 1))
            x, w, b = (bad if c == k else v for k, v in (("x", x), ("w", w), ("b", b)))
        elif c in ("stride", "pad") and isinstance(cp, dict):
            cp[c] = scalar
        elif c.startswith("drop_") and isinstance(cp, dict):
            cp.pop(c[5:], None)
        elif c == "channels":
            w = np.ones((F, C + 1, HH, WW), dtype)
        elif c == "bias_len":
            b = np.ones(F + 1, dtype)
        elif c == "dtype_mix":
            w = np.asarray(w).astype(np.float32 if dtype == np.float64 else np.float64)
        elif c == "kernel_too_big":
            w = np.ones((F, C, H + 2 * p + 1, 1), dtype)
        elif c == "params_type":
            cp = [s, p]
    try:
        out, cache = FastConv.forward(x, w, b, cp)
    except (ValueError, TypeError):
        assert corrupt, "a valid call was rejected"
        return
    ref, _ = layers.Conv.forward(x, w, b, cp)
    np.testing.assert_allclose(out, ref, **tol(out.dtype, 10))
    grads = FastConv.backward(np.ones_like(out), cache)
    assert [g.shape for g in grads] == [x.shape, w.shape, b.shape]


@FUZZ
@given(N=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(1, 7), W=st.integers(1, 7),
       window=st.tuples(st.integers(1, 5), st.integers(1, 5)), s=st.integers(1, 3), p=st.integers(0, 2),
       kind=st.sampled_from(["max", "avg"]),
       corrupt=st.lists(st.sampled_from(["x", "pool_height", "pool_width", "stride", "pad", "drop", "big_pad",
                                         "big_window", "params_type"]), max_size=2, unique=True),
       scalar=st.sampled_from(BAD_SCALARS), maker=st.sampled_from(BAD_ARRAYS), dtype=st.sampled_from(DTYPES),
       drop=st.sampled_from(["pool_height", "pool_width", "stride"]))
def test_fuzz_pool_never_crashes(N, C, H, W, window, s, p, kind, corrupt, scalar, maker, dtype, drop,
                                 tol, pool_param):
    Fast, Naive = POOLS[kind]
    ph, pw = window
    p = min(p, ph // 2, pw // 2)
    ph, pw = min(ph, H + 2 * p), min(pw, W + 2 * p)
    p = min(p, ph // 2, pw // 2)
    x = np.random.default_rng(0).standard_normal((N, C, H, W)).astype(dtype)
    pp = pool_param(ph, pw, s, p)
    for c in corrupt:
        if c == "x":
            x = maker(np.shape(x))
        elif not isinstance(pp, dict):
            continue
        elif c in pp:
            pp[c] = scalar
        elif c == "drop":
            pp.pop(drop, None)
        elif c == "big_pad":
            pp["pad"] = max(ph, pw)
        elif c == "big_window":
            pp["pool_width"] = W + 2 * p + 1
        elif c == "params_type":
            pp = (ph, pw, s)
    try:
        out, cache = Fast.forward(x, pp)
    except (ValueError, TypeError):
        assert corrupt, "a valid call was rejected"
        return
    ref, rcache = Naive.forward(x, pp)
    np.testing.assert_allclose(out, ref, **tol(out.dtype))
    dout = np.ones_like(out)
    np.testing.assert_allclose(Fast.backward(dout, cache), Naive.backward(dout, rcache), **tol(out.dtype))


CACHE_EDITS = ["x_shape", "x_dtype", "x_list", "argmax_big", "argmax_neg", "argmax_dtype", "argmax_shape",
               "argmax_none", "param_stride", "param_pad", "param_missing", "layer_name", "w_channels", "b_len"]


@FUZZ
@given(layer=st.sampled_from(["conv", "max", "avg"]), edit=st.sampled_from(CACHE_EDITS),
       value=st.integers(-(2**40), 2**40), dout_kind=st.sampled_from(["ok", "f32", "shape", "noncontig"]))
def test_fuzz_edited_caches_never_crash(layer, edit, value, dout_kind, pool_param):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5))
    if layer == "conv":
        Fast = FastConv
        out, cache = Fast.forward(x, rng.standard_normal((2, 3, 3, 2)), np.zeros(2), {"stride": 2, "pad": 1})
        params = cache.conv_param
    else:
        Fast = POOLS[layer][0]
        out, cache = Fast.forward(x, pool_param(3, 2, 1, 1))
        params = cache.pool_param
    if edit == "x_shape":
        cache.x = rng.standard_normal((2, 3, abs(value) % 9 + 1, 5))
    elif edit == "x_dtype":
        cache.x = cache.x.astype(np.float32)
    elif edit == "x_list":
        cache.x = cache.x.tolist()
    elif edit.startswith("argmax") and layer == "max":
        a = cache.argmax.copy()
        if edit == "argmax_big":
            a.flat[abs(value) % a.size] = abs(value) % 2**31
        elif edit == "argmax_neg":
            a.flat[abs(value) % a.size] = -(abs(value) % 2**31) - 1
        elif edit == "argmax_dtype":
            a = a.astype(np.int64) + value
        elif edit == "argmax_shape":
            a = a[:1]
        else:
            a = None
        cache.argmax = a
    elif edit == "param_stride":
        params["stride"] = value
    elif edit == "param_pad":
        params["pad"] = value
    elif edit == "param_missing":
        params.pop("stride")
    elif edit == "layer_name":
        cache.layer = "FastSomethingElse"
    elif edit == "w_channels" and layer == "conv":
        cache.w = rng.standard_normal((2, abs(value) % 5 + 1, 3, 2))
    elif edit == "b_len" and layer == "conv":
        cache.b = np.zeros(abs(value) % 4)
    dout = {"ok": np.ones_like(out), "f32": np.ones(out.shape, np.float32), "shape": np.ones(out.shape[1:]),
            "noncontig": np.ones(out.shape[::-1]).T}[dout_kind]
    try:
        grads = Fast.backward(dout, cache)
    except (ValueError, TypeError):
        return
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert grads[0].shape == np.asarray(cache.x).shape and np.isfinite(grads[0]).all()
