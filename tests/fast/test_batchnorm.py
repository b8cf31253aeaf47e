"""The fast spatial batch norm (and its fused ReLU): the naive layer, PyTorch, finite differences, errors,
and the sandwich's fallback to the naive layers where the module is absent (the student starter)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convnet import fast, gradcheck, layers
from convnet.fast import batchnorm as fbn

TOL = {np.float32: 2e-5, np.float64: 1e-12}
LAYERS = [(fbn.FastSpatialBatchNorm, False), (fbn.FastSpatialBatchNormReLU, True)]


def _inputs(shape, dtype, seed, offset=2.0):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (3 * rng.standard_normal(shape) + offset).astype(dtype)
    gamma = rng.standard_normal(C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    running = {"running_mean": rng.standard_normal(C).astype(dtype), "running_var": rng.random(C).astype(dtype) + 0.5}
    return x, gamma, beta, dout, running


def _naive(x, gamma, beta, bn_param, dout, relu):
    out, cache = layers.SpatialBatchNorm.forward(x, gamma, beta, bn_param)
    d = dout
    if relu:
        out, rcache = layers.ReLU.forward(out)
        d = layers.ReLU.backward(dout, rcache)
    return (out,) + tuple(layers.SpatialBatchNorm.backward(d, cache))


def _close(a, ref, dtype, what):
    assert a.dtype == ref.dtype == dtype, what
    scale = max(float(np.max(np.abs(ref))), 1.0)
    err = float(np.max(np.abs(a.astype(np.float64) - ref))) if a.size else 0.0
    assert err <= TOL[dtype] * scale, f"{what}: error {err:.3g}"


def test_hand_checked_case():
    # One channel, values 1, 3, 5, 7: mean 4, biased variance 5.
    x = np.array([1.0, 3.0, 5.0, 7.0]).reshape(2, 1, 1, 2)
    out, cache = fbn.FastSpatialBatchNorm.forward(x, np.array([2.0]), np.array([1.0]), {"mode": "train", "eps": 1e-12})
    np.testing.assert_allclose(out.ravel(), 2 * (np.array([1, 3, 5, 7]) - 4) / np.sqrt(5) + 1, rtol=1e-10)
    # dout = 1 everywhere: dx is zero (a shift of every input changes nothing), dbeta = 4, dgamma = sum(xhat) = 0.
    dx, dgamma, dbeta = fbn.FastSpatialBatchNorm.backward(np.ones_like(x), cache)
    np.testing.assert_allclose(dx, 0, atol=1e-10)
    assert dbeta[0] == 4 and abs(dgamma[0]) < 1e-10
    out_r, _ = fbn.FastSpatialBatchNormReLU.forward(x, np.array([2.0]), np.array([1.0]), {"mode": "train", "eps": 1e-12})
    np.testing.assert_array_equal(out_r, np.maximum(out, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("cls, relu", LAYERS)
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (2, 16, 33, 35), (1, 2, 1, 1), (3, 5, 1, 7)])
def test_matches_the_naive_layer(cls, relu, mode, dtype, shape):
    x, gamma, beta, dout, running = _inputs(shape, dtype, seed=sum(shape))
    p_naive = {"mode": mode, "momentum": 0.8, **{k: v.copy() for k, v in running.items()}}
    p_fast = {"mode": mode, "momentum": 0.8, **{k: v.copy() for k, v in running.items()}}
    ref = _naive(x, gamma, beta, p_naive, dout, relu)
    out, cache = cls.forward(x, gamma, beta, p_fast)
    got = (out,) + tuple(cls.backward(dout, cache))
    for name, a, r in zip(("out", "dx", "dgamma", "dbeta"), got, ref):
        _close(a, r, dtype, name)
    for key in ("running_mean", "running_var"):
        _close(p_fast[key], p_naive[key], dtype, key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, relu", LAYERS)
def test_matches_pytorch(torch, cls, relu, dtype):
    import torch.nn.functional as TF

    x, gamma, beta, dout, _ = _inputs((8, 6, 7, 9), dtype, seed=3)
    out, cache = cls.forward(x, gamma, beta, {"mode": "train"})
    dx, dgamma, dbeta = cls.backward(dout, cache)
    tx, tg, tb = (torch.from_numpy(a).requires_grad_() for a in (x, gamma, beta))
    ty = TF.batch_norm(tx, None, None, tg, tb, training=True, eps=1e-5)
    if relu:
        ty = TF.relu(ty)
    ty.backward(torch.from_numpy(dout))
    for name, a, t in (("out", out, ty), ("dx", dx, tx.grad), ("dgamma", dgamma, tg.grad), ("dbeta", dbeta, tb.grad)):
        _close(a, t.detach().numpy(), dtype, name)


@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("cls, relu", LAYERS)
def test_finite_differences(cls, relu, mode):
    x, gamma, beta, dout, running = _inputs((2, 3, 3, 4), np.float64, seed=5, offset=0.3)

    def param():
        return {"mode": mode, **{k: v.copy() for k, v in running.items()}}

    _, cache = cls.forward(x, gamma, beta, param())
    dx, dgamma, dbeta = cls.backward(dout, cache)
    for name, arr, grad in (("x", x, dx), ("gamma", gamma, dgamma), ("beta", beta, dbeta)):
        def f(_):
            return cls.forward(x, gamma, beta, param())[0]

        num = gradcheck.compute_numeric_gradient(f, arr, dout, h=1e-6)
        assert gradcheck.rel_error(num, grad) < 1e-7, name


def test_large_mean_keeps_the_variance_accurate():
    # Data far from zero: a plain sum of squares minus the squared mean would cancel to noise in float32.
    rng = np.random.default_rng(0)
    x = (1000 + rng.standard_normal((16, 2, 32, 32))).astype(np.float32)
    out, _ = fbn.FastSpatialBatchNorm.forward(x, np.ones(2, np.float32), np.zeros(2, np.float32), {"mode": "train"})
    ref = (x - x.astype(np.float64).mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(
        x.astype(np.float64).var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    assert np.max(np.abs(out - ref)) < 1e-3


def test_errors_name_the_problem():
    x, gamma, beta, dout, _ = _inputs((2, 3, 4, 4), np.float64, seed=1)
    with pytest.raises(ValueError, match=r"bn_param has unknown key\(s\) \['epsilon'\]"):
        fbn.FastSpatialBatchNorm.forward(x, gamma, beta, {"mode": "train", "epsilon": 1e-3})
    with pytest.raises(ValueError, match="gamma has shape"):
        fbn.FastSpatialBatchNorm.forward(x, gamma[:2], beta, {"mode": "train"})
    with pytest.raises(ValueError, match="mixed dtypes"):
        fbn.FastSpatialBatchNorm.forward(x.astype(np.float32), gamma, beta, {"mode": "train"})
    _, cache = fbn.FastSpatialBatchNorm.forward(x, gamma, beta, {"mode": "train"})
    with pytest.raises(ValueError, match="dout has shape"):
        fbn.FastSpatialBatchNorm.backward(dout[:1], cache)
    with pytest.raises(TypeError, match="made by FastSpatialBatchNorm.forward"):
        fbn.FastSpatialBatchNormReLU.backward(dout, cache)
    with pytest.raises(TypeError, match="tuple cache"):
        fbn.FastSpatialBatchNorm.backward(dout, (x,))


@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 4), C=st.integers(1, 5), H=st.integers(1, 9), W=st.integers(1, 40),
       relu=st.booleans(), mode=st.sampled_from(["train", "test"]), f32=st.booleans(), seed=st.integers(0, 99))
def test_fuzz_against_naive(N, C, H, W, relu, mode, f32, seed):
    dtype = np.float32 if f32 else np.float64
    x, gamma, beta, dout, running = _inputs((N, C, H, W), dtype, seed)
    if mode == "train" and N * H * W == 1:
        x = x + 0  # one element per channel: variance 0, the output is beta (both layers agree)
    cls = fbn.FastSpatialBatchNormReLU if relu else fbn.FastSpatialBatchNorm
    ref = _naive(x, gamma, beta, {"mode": mode, **{k: v.copy() for k, v in running.items()}}, dout, relu)
    out, cache = cls.forward(x, gamma, beta, {"mode": mode, **{k: v.copy() for k, v in running.items()}})
    got = (out,) + tuple(cls.backward(dout, cache))
    # dx sums terms of size |gamma| |dout| / sqrt(var + eps) per channel that cancel in train mode: with a few
    # elements per channel the variance can be tiny, and the rounding of those terms is what both layers leave.
    var = x.astype(np.float64).var(axis=(0, 2, 3)) if mode == "train" else running["running_var"]
    terms = float(np.max(np.abs(gamma) * np.abs(dout).max(axis=(0, 2, 3)) / np.sqrt(var + 1e-5)))
    for name, a, r in zip(("out", "dx", "dgamma", "dbeta"), got, ref):
        # A channel of one element has variance 0: 1/sqrt(eps) amplifies rounding; scale the tolerance by it.
        tol = TOL[dtype] * (300 if mode == "train" and N * H * W == 1 else 1)
        scale = max(float(np.max(np.abs(r))), 1.0, terms if name == "dx" else 0.0)
        assert float(np.max(np.abs(a.astype(np.float64) - r))) <= tol * scale, name


def test_sandwich_uses_the_fused_stage():
    from convnet import sandwich

    names = [s.layer.__name__ for s in sandwich.Conv_BatchNorm_ReLU_Pool.stages]
    assert names == ["FastConv", "FastSpatialBatchNormReLU", "FastMaxPool"]
    assert [s.layer.__name__ for s in sandwich.Conv_BatchNorm_ReLU.stages] == ["FastConv", "FastSpatialBatchNormReLU"]


def test_released_without_the_fast_batchnorm():
    from grader.release import manifest

    for path in ("convnet/fast/batchnorm.py", "convnet/_fast/_batchnorm.pyx", "convnet/_fast/_batchnorm_v3.pyx",
                 "convnet/_fast/_batchnorm_v4.pyx", "convnet/fast/fused.py"):
        assert path in manifest.EXCLUDED
    files = manifest.release_inputs(manifest.repository_root())
    names = [f.rsplit("/", 1)[-1] for f in files]
    assert not [n for n in names if "batchnorm" in n or n == "fused.py"], "the starter must not carry them"


SANDWICH_FALLBACK = r"""
import sys
import numpy as np
sys.modules["convnet.fast.batchnorm"] = None  # as in the starter: the modules are absent
sys.modules["convnet.fast.fused"] = None
from convnet import fast, models, sandwich
from convnet.layers import ReLU, SpatialBatchNorm
stages = [s.layer for s in sandwich.Conv_BatchNorm_ReLU_Pool.stages]
assert stages[1:3] == [SpatialBatchNorm, ReLU], stages
assert [s.layer for s in sandwich.Conv_ReLU_Pool.stages][1:] == [ReLU, fast.FastMaxPool]
assert not hasattr(fast, "FastSpatialBatchNormReLU") and not hasattr(fast, "FastReLUMaxPool")
out = {}
for bn in (True, False):
    m = models.DeepConvNet(num_filters=(4, 6), max_pools=(0, 1), batchnorm=bn, input_dims=(3, 8, 8),
                           weight_scale="kaiming", dtype=np.float64, seed=0)
    X = np.random.default_rng(0).standard_normal((5, 3, 8, 8)); y = np.array([0, 1, 2, 3, 4])
    loss, grads = m.loss(X, y)
    out.update({f"{bn}:loss": loss, **{f"{bn}:{k}": v for k, v in grads.items()}})
np.savez(sys.argv[1], **out)
"""


def test_sandwich_falls_back_to_the_naive_layers_without_the_module(tmp_path):
    from convnet import models

    out = tmp_path / "naive.npz"
    # Run outside the source tree: `python -c` puts the working directory first on sys.path.
    subprocess.run([sys.executable, "-c", SANDWICH_FALLBACK, str(out)], check=True, env=dict(os.environ),
                   timeout=120, cwd=tmp_path)
    naive = np.load(out)
    for bn in (True, False):  # with batch norm (fused BN + ReLU) and without (fused ReLU + pool)
        m = models.DeepConvNet(num_filters=(4, 6), max_pools=(0, 1), batchnorm=bn, input_dims=(3, 8, 8),
                               weight_scale="kaiming", dtype=np.float64, seed=0)
        X = np.random.default_rng(0).standard_normal((5, 3, 8, 8))
        loss, grads = m.loss(X, np.array([0, 1, 2, 3, 4]))
        assert abs(loss - float(naive[f"{bn}:loss"])) < 1e-12
        for k, g in grads.items():
            np.testing.assert_allclose(g, naive[f"{bn}:{k}"], rtol=1e-9, atol=1e-12, err_msg=k)


def test_fast_path_exports():
    assert fast.FastSpatialBatchNorm is fbn.FastSpatialBatchNorm
    assert fast.FastSpatialBatchNormReLU is fbn.FastSpatialBatchNormReLU


@pytest.mark.parametrize("cls, relu", LAYERS)
def test_threads_split_channels_with_identical_results(cls, relu):
    x, gamma, beta, dout, _ = _inputs((4, 9, 10, 10), np.float32, seed=8)
    results = []
    for n in (1, 2, 3):
        with fast.config(num_threads=n, parallel_min_work=0):
            out, cache = cls.forward(x, gamma, beta, {"mode": "train"})
            results.append((out,) + tuple(cls.backward(dout, cache)))
    for other in results[1:]:
        for a, r in zip(other, results[0]):
            np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_start_at_parallel_min_work_with_float64_counted_twice(dtype, monkeypatch):
    # 256 elements against parallel_min_work 300: one thread in float32, two in float64 (the bytes of 512).
    from convnet.fast import parallel

    seen = []
    real = parallel.kernel_threads
    monkeypatch.setattr(parallel, "kernel_threads", lambda work, s: seen.append((work, real(work, s))) or seen[-1][1])
    x, gamma, beta, dout, _ = _inputs((2, 2, 8, 8), dtype, seed=3)
    with fast.config(parallel_min_work=300, num_threads=2):
        out, cache = fbn.FastSpatialBatchNorm.forward(x, gamma, beta, {"mode": "train"})
        fbn.FastSpatialBatchNorm.backward(dout, cache)
    want = (512, 2) if dtype == np.float64 else (256, 1)
    assert seen == [want] * 4  # statistics, affine map, gradient sums, dx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_give_one_threads_results_on_several(dtype, threads_agree):
    # One thread runs a plain loop, more run an OpenMP region over the same per-channel functions: same outputs.
    if not fbn.HAVE_KERNELS:
        pytest.skip("the compiled batch-norm kernels are not built or not in use")
    run = threads_agree
    rng = np.random.default_rng(9)
    x3, dout = (rng.standard_normal((3, 5, 72)).astype(dtype) for _ in range(2))
    scale, shift, k1, k2, g = (rng.standard_normal(5) for _ in range(5))
    mean, var = run(lambda m, v, t: fbn.bn_stats(x3, m, v, 0, 5, t), np.empty(5), np.empty(5))
    run(lambda y, t: fbn.bn_affine(x3, y, scale, shift, True, 0, 5, t), np.empty_like(x3))
    run(lambda a, b, t: fbn.bn_grad_sums(x3, dout, scale, shift, mean, True, a, b, 0, 5, t), np.empty(5), np.empty(5))
    run(lambda d, t: fbn.bn_dx(x3, dout, d, scale, shift, mean, k1, k2, g, True, 0, 5, t), np.empty_like(x3))


# ---------------------------------------------------------------- the fused ReLU + max pool (convnet/fast/fused.py)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pp", [(2, 2, 2, 0), (3, 3, 2, 1), (2, 2, 1, 0)])
def test_relu_maxpool_matches_relu_then_pool(dtype, pp):
    from convnet.fast.fused import FastReLUMaxPool

    ph, pw, s, p = pp
    param = {"pool_height": ph, "pool_width": pw, "stride": s, "pad": p}
    rng = np.random.default_rng(ph + s)
    x = rng.standard_normal((3, 4, 9, 8)).astype(dtype)
    x[0, 0] = -1.0  # a plane of ties below zero: no gradient anywhere
    r, rc = layers.ReLU.forward(x)
    ref, pc = layers.MaxPool.forward(r, param)
    out, cache = FastReLUMaxPool.forward(x, param)
    np.testing.assert_array_equal(out, ref)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dref = layers.ReLU.backward(layers.MaxPool.backward(dout, pc), rc)
    got = FastReLUMaxPool.backward(dout, cache)
    if s >= max(ph, pw):
        np.testing.assert_array_equal(got, dref)
    else:  # overlapping windows: an input's few gradients may be summed in another order (numpy fallback)
        np.testing.assert_allclose(got, dref, rtol=0, atol=8 * np.finfo(dtype).eps * np.abs(dout).max())
        np.testing.assert_array_equal(got != 0, dref != 0)
    with pytest.raises(ValueError, match="dout has shape"):
        FastReLUMaxPool.backward(dout[:1], cache)
    with pytest.raises(TypeError, match="FastReLUMaxPool.backward"):
        FastReLUMaxPool.backward(dout, (x, param))


def test_conv_relu_pool_uses_the_fused_stage():
    from convnet import sandwich

    assert [s.layer.__name__ for s in sandwich.Conv_ReLU_Pool.stages] == ["FastConv", "FastReLUMaxPool"]
