"""Sandwich layers against composing the naive layers by hand and against finite differences."""
import numpy as np
import pytest

from convnet import sandwich
from convnet.gradcheck import compute_numeric_gradient, rel_error
from convnet.layers import BatchNorm, Conv, Linear, MaxPool, ReLU, SpatialBatchNorm

CONV = {"stride": 1, "pad": 1}
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


def _inputs(name, rng, dtype=np.float64):
    """Arguments of each sandwich's forward (after x) and x itself."""
    conv = name.startswith("Conv")
    x = rng.standard_normal((3, 2, 6, 6) if conv else (4, 2, 3)).astype(dtype)
    if conv:
        w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
        b = rng.standard_normal(3).astype(dtype)
    else:
        w = rng.standard_normal((6, 5)).astype(dtype)
        b = rng.standard_normal(5).astype(dtype)
    arrays = [w, b]
    M = w.shape[0] if conv else w.shape[1]
    if "BatchNorm" in name:
        arrays += [rng.uniform(0.5, 1.5, M).astype(dtype), rng.standard_normal(M).astype(dtype)]
    params = []
    if conv:
        params.append(dict(CONV))
    if "BatchNorm" in name:
        params.append({"mode": "train"})
    if name.endswith("Pool"):
        params.append(dict(POOL))
    return x, arrays, params


def _by_hand(name, x, arrays, params):
    """The same chain written out with the naive layers: forward output and a backward function."""
    conv = name.startswith("Conv")
    params = list(params)
    caches = []
    first = Conv if conv else Linear
    out, c = first.forward(x, arrays[0], arrays[1], *([params.pop(0)] if conv else []))
    caches.append((first, c))
    if "BatchNorm" in name:
        bn = SpatialBatchNorm if conv else BatchNorm
        out, c = bn.forward(out, arrays[2], arrays[3], params.pop(0))
        caches.append((bn, c))
    out, c = ReLU.forward(out)
    caches.append((ReLU, c))
    if name.endswith("Pool"):
        out, c = MaxPool.forward(out, params.pop(0))
        caches.append((MaxPool, c))

    def backward(dout):
        grads = []
        for layer, cache in reversed(caches):
            res = layer.backward(dout, cache)
            if isinstance(res, tuple):
                dout, *g = res
                grads = g + grads
            else:
                dout = res
        return (dout, *grads)

    return out, backward


NAMES = ["Linear_ReLU", "Conv_ReLU", "Conv_ReLU_Pool", "Linear_BatchNorm_ReLU",
         "Conv_BatchNorm_ReLU", "Conv_BatchNorm_ReLU_Pool"]


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-11)])
@pytest.mark.parametrize("name", NAMES)
def test_matches_hand_composition(name, dtype, tol):
    rng = np.random.default_rng(0)
    x, arrays, params = _inputs(name, rng, dtype)
    layer = getattr(sandwich, name)
    out, cache = layer.forward(x, *arrays, *params)
    _, _, params2 = _inputs(name, np.random.default_rng(0), dtype)
    ref, ref_backward = _by_hand(name, x, arrays, params2)
    assert out.dtype == dtype
    assert rel_error(out, ref) < tol
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = layer.backward(dout, cache)
    ref_grads = ref_backward(dout)
    assert len(grads) == 1 + len(arrays)
    for g, r, a in zip(grads, ref_grads, [x, *arrays]):
        assert g.shape == a.shape and g.dtype == dtype
        # Error relative to the gradient's scale (a bias before batch norm has a gradient of ~0).
        assert np.max(np.abs(g - r)) <= tol * max(1.0, float(np.max(np.abs(r))))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_finite_differences(name):
    rng = np.random.default_rng(1)
    x, arrays, params = _inputs(name, rng)
    layer = getattr(sandwich, name)
    out, cache = layer.forward(x, *arrays, *params)
    dout = rng.standard_normal(out.shape)
    grads = layer.backward(dout, cache)
    inputs = [x, *arrays]
    for i, (a, g) in enumerate(zip(inputs, grads)):
        def f(_):
            return layer.forward(*inputs, *params)[0]
        num = compute_numeric_gradient(f, a, dout, h=1e-6)
        if "BatchNorm" in name and i == 2:
            # A bias in front of batch norm is cancelled by the mean: its gradient is exactly zero.
            assert np.max(np.abs(num)) < 1e-7 and np.max(np.abs(g)) < 1e-10
        else:
            assert rel_error(num, g) < 1e-7, (name, i)


def test_backward_order_is_forward_argument_order():
    rng = np.random.default_rng(2)
    x, (w, b, gamma, beta), params = _inputs("Conv_BatchNorm_ReLU_Pool", rng)
    out, cache = sandwich.Conv_BatchNorm_ReLU_Pool.forward(x, w, b, gamma, beta, *params)
    dx, dw, db, dgamma, dbeta = sandwich.Conv_BatchNorm_ReLU_Pool.backward(np.ones_like(out), cache)
    assert (dx.shape, dw.shape, db.shape, dgamma.shape, dbeta.shape) == (x.shape, w.shape, b.shape, (3,), (3,))
    # dbeta is the sum of the upstream gradient reaching the batch-norm output.
    assert out.shape == (3, 3, 3, 3)


def test_keyword_arguments_and_bn_param_updated():
    rng = np.random.default_rng(3)
    x, (w, b, gamma, beta), _ = _inputs("Linear_BatchNorm_ReLU", rng)
    bn_param = {"mode": "train", "momentum": 0.5}
    out_kw, _ = sandwich.Linear_BatchNorm_ReLU.forward(x=x, w=w, b=b, gamma=gamma, beta=beta, bn_param=bn_param)
    # Running statistics reach the caller's dict: 0.5 * 0 + 0.5 * batch mean.
    h = x.reshape(4, -1) @ w + b
    np.testing.assert_allclose(bn_param["running_mean"], 0.5 * h.mean(axis=0), rtol=1e-12)
    out_pos, _ = sandwich.Linear_BatchNorm_ReLU.forward(x, w, b, gamma, beta, {"mode": "train"})
    np.testing.assert_allclose(out_kw, out_pos, rtol=1e-12)


def test_argument_errors_are_clear():
    rng = np.random.default_rng(4)
    x, (w, b), (conv_param, pool_param) = _inputs("Conv_ReLU_Pool", rng)
    with pytest.raises(TypeError, match=r"Conv_ReLU_Pool.forward.*pool_param"):
        sandwich.Conv_ReLU_Pool.forward(x, w, b, conv_param)
    with pytest.raises(ValueError, match="channels"):
        sandwich.Conv_ReLU_Pool.forward(x[:, :1], w, b, conv_param, pool_param)
    out, cache = sandwich.Conv_ReLU_Pool.forward(x, w, b, conv_param, pool_param)
    with pytest.raises(TypeError, match="Conv_ReLU_Pool.backward"):
        sandwich.Conv_ReLU_Pool.backward(out, cache[:-1])
    _, other = sandwich.Conv_ReLU.forward(x, w, b, conv_param)
    with pytest.raises((TypeError, ValueError)):
        sandwich.Conv_ReLU_Pool.backward(out, (*other, None))


def test_one_helper_builds_every_sandwich():
    # Each class lists its stages; the docs and signature come from them.
    import inspect
    for name in NAMES:
        cls = getattr(sandwich, name)
        assert [s.layer.__name__ for s in cls.stages][0] in ("Linear", "FastConv")
        params = list(inspect.signature(cls.forward).parameters)
        assert params[0] == "x"
    assert list(inspect.signature(sandwich.Conv_BatchNorm_ReLU_Pool.forward).parameters) == [
        "x", "w", "b", "gamma", "beta", "conv_param", "bn_param", "pool_param"]
