"""Kernels built for the CPU (baseline, x86-64-v3, x86-64-v4): choice at import, override, agreement."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from convnet import fast
from convnet.fast import _backend, _cblas, batchnorm

KERNELS = {"_im2col": ("im2col_into", "col2im_into", "bias_transpose", "im2row_into", "row2im_into", "transpose_planes"),
           "_pool": ("maxpool_forward", "maxpool_backward", "avgpool_forward", "avgpool_backward", "index_bound"),
           "_winograd": ("winograd_input", "winograd_input_adjoint", "winograd_output", "winograd_output_adjoint")}
BN_KERNELS = ("bn_stats", "bn_affine", "bn_grad_sums", "bn_dx")


def _built(variant):
    suffix = _backend.VARIANTS[variant][0]
    return all(importlib.util.find_spec(f"convnet._fast.{m}{suffix}") for m in (*KERNELS, "_batchnorm", "_conv_part"))


RUNNABLE = [v for v in _backend.VARIANTS if v != "baseline" and _built(v) and _backend.cpu_supports(v)]


def test_cpu_supports_by_feature_set():
    v3 = set(_backend.VARIANTS["x86-64-v3"][1])
    assert _backend.cpu_supports("baseline", set())
    assert _backend.cpu_supports("x86-64-v3", v3) and not _backend.cpu_supports("x86-64-v4", v3)
    assert not _backend.cpu_supports("x86-64-v3", v3 - {"FMA3"})
    assert _backend.cpu_supports("x86-64-v4", v3 | set(_backend.VARIANTS["x86-64-v4"][1]))


def test_the_chosen_variant_is_the_best_runnable_one(compiled):
    if os.environ.get("CONVNET_CPU_VARIANT"):
        pytest.skip("CONVNET_CPU_VARIANT overrides the choice")
    best = max(["baseline", *RUNNABLE], key=list(_backend.VARIANTS).index)
    assert fast.CPU_VARIANT == best
    assert _backend.im2col_into is _backend.kernel_module("_im2col").im2col_into


def _import_in_child(variant, where):
    env = dict(os.environ, CONVNET_CPU_VARIANT=variant)
    # Outside the source tree: `python -c` puts the working directory first on sys.path.
    return subprocess.run([sys.executable, "-c", "import convnet.fast as f; print(f.CPU_VARIANT)"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=where)


def test_environment_override(compiled, tmp_path):
    run = _import_in_child("baseline", tmp_path)
    assert run.returncode == 0 and run.stdout.split()[-1] == "baseline", run.stderr
    bad = _import_in_child("x86-64-v9", tmp_path)
    assert bad.returncode != 0 and "CONVNET_CPU_VARIANT='x86-64-v9'; choose one of" in bad.stderr


def _use(monkeypatch, variant):
    """Route every kernel call of the layers to ``variant``'s modules."""
    for module, names in KERNELS.items():
        mod = _backend.kernel_module(module, variant)
        for name in names:
            monkeypatch.setattr(_backend, name, getattr(mod, name))
    mod = _backend.kernel_module("_batchnorm", variant)
    for name in BN_KERNELS:
        monkeypatch.setattr(batchnorm, name, getattr(mod, name))
    if _backend.direct is not None:
        monkeypatch.setattr(_backend, "direct", _backend.kernel_module("_direct", variant))
    if _backend.GEMM_IN_KERNELS:  # the batch parts that call numpy's BLAS themselves
        mod = _backend.kernel_module("_conv_part", variant)
        mod.set_gemm(*_cblas.find_gemm())
        monkeypatch.setattr(_backend, "conv_part", mod)


def _every_layer(dtype):
    """Outputs and gradients of every fast layer (each conv algorithm) on fixed inputs."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 16, 11, 10)).astype(dtype)
    w = rng.standard_normal((16, 16, 3, 3)).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    results = []
    for algo, cp in (("im2col", {"stride": 2, "pad": 1}), ("im2col", {"stride": 1, "pad": 2}),
                     ("im2row", {"stride": 2, "pad": 1}), ("im2row", {"stride": 1, "pad": 2}),
                     ("winograd2", {"stride": 1, "pad": 1}), ("winograd4", {"stride": 1, "pad": 0})):
        with fast.config(conv_algorithm=algo):
            out, cache = fast.FastConv.forward(x, w, b, cp)
            results += [out, *fast.FastConv.backward(np.ones_like(out), cache)]
    if _backend.direct is not None and _backend.direct.VECTORIZED:  # whole batches, then one image shared
        for images, shared in ((x, False), (x[:1], True)):
            with fast.config(conv_algorithm="direct", num_threads=2, split_image_gemms=shared):
                out, cache = fast.FastConv.forward(images, w, b, {"stride": 1, "pad": 1})
                results += [out, *fast.FastConv.backward(np.ones_like(out), cache)]
    for cls, pp in ((fast.FastMaxPool, (3, 2, 2, 1)), (fast.FastAvgPool, (3, 3, 1, 1)), (fast.FastAvgPool, (2, 2, 2, 0))):
        param = dict(zip(("pool_height", "pool_width", "stride", "pad"), pp))
        out, cache = cls.forward(x, param)
        results += [out, cls.backward(out * 2, cache)]
    for cls in (fast.FastSpatialBatchNorm, fast.FastSpatialBatchNormReLU):
        out, cache = cls.forward(x, b, b, {"mode": "train"})
        results += [out, *cls.backward(x, cache)]
    return results


@pytest.mark.parametrize("variant", RUNNABLE or [pytest.param(None, marks=pytest.mark.skip(
    reason="no x86-64-v3/v4 kernels built here, or this CPU cannot run them"))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_variant_agrees_with_the_baseline(variant, dtype, monkeypatch, compiled):
    with monkeypatch.context() as m:
        _use(m, "baseline")
        ref = _every_layer(dtype)
    with monkeypatch.context() as m:
        _use(m, variant)
        got = _every_layer(dtype)
    # FMA contraction and vectorised sums round differently: agreement to a few units of the dtype's precision.
    tol = 5e-5 if dtype == np.float32 else 1e-12
    for i, (a, r) in enumerate(zip(got, ref)):
        assert a.dtype == r.dtype and a.shape == r.shape, i
        scale = max(1.0, float(np.max(np.abs(r))))
        assert float(np.max(np.abs(a.astype(np.float64) - r))) <= tol * scale, (variant, i)
