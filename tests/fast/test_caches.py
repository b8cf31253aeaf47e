"""The fast layers' caches (convnet/fast/_caches.py): only their own backward takes them, edits are caught."""
import numpy as np
import pytest

from convnet import layers
from convnet.fast import FastAvgPool, FastConv, FastMaxPool

POOLS = {"max": (FastMaxPool, layers.MaxPool), "avg": (FastAvgPool, layers.AvgPool)}


def test_caches_only_fit_their_own_backward(pool_param):
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    w, b, cp = np.ones((2, 3, 3, 3)), np.zeros(2), {"stride": 1, "pad": 1}
    pp = pool_param(2, 2, 2)
    out_c, fc = FastConv.forward(x, w, b, cp)
    _, nc = layers.Conv.forward(x, w, b, cp)
    out_m, fm = FastMaxPool.forward(x, pp)
    _, nm = layers.MaxPool.forward(x, pp)
    out_a, fa = FastAvgPool.forward(x, pp)
    assert fc.layer == "FastConv" and fm.layer == "FastMaxPool" and fa.layer == "FastAvgPool"
    assert repr(fc) == "<FastConv cache>"
    with pytest.raises(TypeError, match="FastConv.forward"):
        layers.Conv.backward(out_c, fc)
    with pytest.raises(TypeError, match="naive"):
        FastConv.backward(out_c, nc)
    with pytest.raises(TypeError, match="FastMaxPool"):
        FastAvgPool.backward(out_a, fm)
    with pytest.raises(TypeError, match="FastAvgPool"):
        FastMaxPool.backward(out_m, fa)
    with pytest.raises(TypeError, match="naive"):
        FastMaxPool.backward(out_m, nm)
    with pytest.raises(TypeError, match="FastMaxPool.forward"):
        layers.MaxPool.backward(out_m, fm)
    with pytest.raises(TypeError):
        FastConv.backward(out_c, None)


def test_edited_caches_are_rejected(pool_param):
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    pp = pool_param(2, 2, 2)
    out, cache = FastMaxPool.forward(x, pp)
    dout = np.ones_like(out)
    cache.argmax = cache.argmax.copy()
    cache.argmax[0, 0, 0, 0] = 36
    with pytest.raises(ValueError, match="outside"):
        FastMaxPool.backward(dout, cache)
    cache.argmax[0, 0, 0, 0] = -1
    with pytest.raises(ValueError, match="outside"):
        FastMaxPool.backward(dout, cache)
    # A strided argmax: the contiguous copy the kernel reads is the one checked.
    wide = np.zeros((2, 3, 3, 6), np.int32)
    wide[..., ::2] = FastMaxPool.forward(x, pp)[1].argmax
    wide[1, 2, 2, 4] = 2**31 - 1
    cache.argmax = wide[..., ::2]
    with pytest.raises(ValueError, match=r"outside \[0, 36\)"):
        FastMaxPool.backward(dout, cache)
    cache.argmax = cache.argmax.astype(np.int64)
    with pytest.raises(ValueError, match="int32"):
        FastMaxPool.backward(dout, cache)
    cache.argmax = cache.argmax[:, :, :2]
    with pytest.raises(ValueError, match="int32"):
        FastMaxPool.backward(dout, cache)
    _, cache = FastMaxPool.forward(x, pp)
    cache.x = x[:, :, :4]  # geometry changes: dout no longer fits
    with pytest.raises(ValueError, match="dout has shape"):
        FastMaxPool.backward(dout, cache)
    _, cache = FastConv.forward(x, np.ones((2, 3, 3, 3)), np.zeros(2), {"stride": 1, "pad": 1})
    cache.conv_param["pad"] = 0
    with pytest.raises(ValueError, match="dout has shape"):
        FastConv.backward(np.ones((2, 2, 6, 6)), cache)
    cache.conv_param["pad"] = -3
    with pytest.raises(ValueError, match="pad"):
        FastConv.backward(np.ones((2, 2, 6, 6)), cache)


@pytest.mark.parametrize("Fast", [FastConv, FastMaxPool, FastAvgPool])
def test_dout_is_checked(Fast, pool_param):
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    if Fast is FastConv:
        out, cache = Fast.forward(x, np.ones((2, 3, 3, 3), np.float32), np.zeros(2, np.float32),
                                  {"stride": 1, "pad": 0})
    else:
        out, cache = Fast.forward(x, pool_param(2, 2, 2))
    with pytest.raises(ValueError, match="float32"):
        Fast.backward(out.astype(np.float64), cache)
    with pytest.raises(ValueError, match="shape"):
        Fast.backward(out[:1], cache)
    with pytest.raises(TypeError):
        Fast.backward(out.tolist(), cache)
    with pytest.raises(TypeError):
        Fast.backward(out.astype(np.int32), cache)


def test_read_only_inputs_and_small_caches(pool_param, tol):
    # Read-only arrays (e.g. np.load(mmap_mode='r')) work: the kernels take const views.
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((2, 3, 3, 3)), np.zeros(2)
    for a in (x, w, b):
        a.setflags(write=False)
    out, cache = FastConv.forward(x, w, b, {"stride": 1, "pad": 1})
    dout = np.ones_like(out)
    dout.setflags(write=False)
    ref = layers.Conv.backward(dout, layers.Conv.forward(x, w, b, {"stride": 1, "pad": 1})[1])
    for g, r in zip(FastConv.backward(dout, cache), ref):
        np.testing.assert_allclose(g, r, **tol(np.float64))
    assert not hasattr(cache, "__dict__")  # __slots__: nothing else can be attached
    for Fast, Naive in POOLS.values():
        out, cache = Fast.forward(x, pool_param(2, 2, 2))
        if hasattr(cache, "argmax"):
            cache.argmax.setflags(write=False)
        dout = np.ones_like(out)
        dout.setflags(write=False)
        np.testing.assert_allclose(Fast.backward(dout, cache),
                                   Naive.backward(dout, Naive.forward(x, pool_param(2, 2, 2))[1]), **tol(np.float64))
        assert not hasattr(cache, "__dict__")
