"""One training step (forward and backward of the loss) of convnet's models against the same network in PyTorch.

Usage::

    python benchmarks/bench_step.py [--models deep,three] [--dtypes float32,float64] [--batch 64]
                                    [--repeats R] [--warmup S] [--threads T] [--no-profile]
                                    [--config machine|user|haswell]

``deep`` is DeepConvNet with 3 x (conv3x3 - spatial batch norm - ReLU - 2x2 max
pool), 32/64/128 filters; ``three`` is ThreeLayerConvNet with its defaults
(32 7x7 filters, hidden 100). Both take a CIFAR-shaped batch (N, 3, 32, 32).
PyTorch runs the same network with the same weights (``torch.nn.functional``,
batch norm in training mode) and the step's loss and gradients are checked
equal first. The convnet step is what the provided Solver runs:
``model.loss(X, y)`` inside :func:`convnet.fast.network_input` (the first
convolution skips the input's gradient).

Timing as ``bench_layers.py``: the two steps interleaved in one process, a
warm-up before every timed sample, median and spread, both BLAS configurations
(child processes). Also reported: minor page faults per convnet step
(getrusage over ``--repeats`` steps run back to back) and, unless
``--no-profile``, where convnet's step spends its time, by layer class
(forward and backward summed over the step).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402

import convnet.fast as fast  # noqa: E402
from convnet import layers, models  # noqa: E402


def make_model(name, dtype):
    if name == "deep":
        return models.DeepConvNet(input_dims=(3, 32, 32), num_filters=(32, 64, 128), max_pools=(0, 1, 2),
                                  batchnorm=True, weight_scale="kaiming", dtype=dtype, seed=0)
    return models.ThreeLayerConvNet(weight_scale=1e-2, dtype=dtype, seed=0)


def convnet_step(model, X, y):
    with fast.network_input(X):
        return model.loss(X, y)


def torch_step(torch, model, name, X, y):
    """A function running one step of the same network in PyTorch; returns (loss, {param: grad})."""
    import torch.nn.functional as TF

    params = {k: torch.from_numpy(v.copy()) for k, v in model.params.items()}
    tX, ty = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))

    def step():
        p = {k: v.detach().requires_grad_() for k, v in params.items()}
        if name == "deep":
            out = tX
            for i in range(1, 4):
                out = TF.conv2d(out, p[f"W{i}"], p[f"b{i}"], padding=1)
                out = TF.batch_norm(out, None, None, p[f"gamma{i}"], p[f"beta{i}"], training=True, eps=1e-5)
                out = TF.max_pool2d(TF.relu(out), 2, 2)
            scores = out.reshape(out.shape[0], -1) @ p["W4"] + p["b4"]
        else:
            out = TF.max_pool2d(TF.relu(TF.conv2d(tX, p["W1"], p["b1"], padding=3)), 2, 2)
            out = TF.relu(out.reshape(out.shape[0], -1) @ p["W2"] + p["b2"])
            scores = out @ p["W3"] + p["b3"]
        loss = TF.cross_entropy(scores, ty)
        loss.backward()
        return loss, {k: v.grad for k, v in p.items()}

    return step


@contextlib.contextmanager
def profiled(totals):
    """Time every forward/backward of the layer classes a model's step goes through, into ``totals``."""
    classes = [fast.FastConv, fast.FastMaxPool, layers.SpatialBatchNorm, layers.ReLU, layers.Linear]
    if hasattr(fast, "FastSpatialBatchNorm"):
        classes.append(fast.FastSpatialBatchNorm)
    classes += [getattr(fast, n) for n in ("FastSpatialBatchNormReLU",) if hasattr(fast, n)]
    saved = []

    def wrap(cls, meth, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                totals[f"{cls.__name__}.{meth}"] += time.perf_counter() - t0
        return timed

    for cls in classes:
        for meth in ("forward", "backward"):
            fn = cls.__dict__[meth]
            saved.append((cls, meth, fn))
            setattr(cls, meth, staticmethod(wrap(cls, meth, fn.__func__)))
    try:
        yield totals
    finally:
        for cls, meth, fn in saved:
            setattr(cls, meth, fn)


def bench_model(name, dtype, args, torch):
    rng = np.random.default_rng(1)
    model = make_model(name, dtype)
    X = rng.standard_normal((args.batch, 3, 32, 32)).astype(dtype)
    y = rng.integers(0, 10, args.batch)
    row = {"model": name, "dtype": np.dtype(dtype).name}
    fns = {"convnet": lambda: convnet_step(model, X, y)}
    if torch is not None:
        tstep = torch_step(torch, model, name, X, y)
        loss, grads = convnet_step(model, X, y)
        tl, tg = tstep()
        # Relative to the largest gradient: a conv bias before batch norm has a zero gradient (rounding only).
        scale = max(float(np.max(np.abs(tg[k].numpy()))) for k in grads)
        row["err"] = max([abs(loss - float(tl.detach())) / abs(float(tl.detach()))] +
                         [float(np.max(np.abs(grads[k] - tg[k].numpy()))) / scale for k in grads])
        fns["torch"] = tstep
    times = H.interleaved(fns, args.repeats, args.warmup)
    for k, ts in times.items():
        row[k], row[k + "_spread"] = H.summary(ts)
    f0 = H.minor_faults()
    for _ in range(args.repeats):
        convnet_step(model, X, y)
    row["faults"] = (H.minor_faults() - f0) / args.repeats
    if not args.no_profile:
        totals = defaultdict(float)
        with profiled(totals):
            for _ in range(args.repeats):
                convnet_step(model, X, y)
        row["profile"] = {k: v / args.repeats for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    return row


def run(config, args):
    threads = H.pin_threads(args.threads)
    torch = H.peer_torch()
    print(f"config {config}: OpenBLAS kernel {H.blas_kernel()}; "
          f"{', '.join(f'{k}={os.environ[k]}' for k in H.BLAS_VARIABLES if k in os.environ) or 'no OPENBLAS_* set'}; "
          f"threads {threads}; torch {getattr(torch, '__version__', 'absent')}; batch {args.batch}; "
          f"repeats {args.repeats}, warm-up {args.warmup} s; load average {os.getloadavg()[0]:.1f}")
    rows, lines = [], []
    for name in args.models.split(","):
        for d in args.dtypes.split(","):
            r = bench_model(name, np.dtype(d), args, torch)
            rows.append(r)
            ratio = f"{r['convnet'] / r['torch']:.2f}" if "torch" in r else "-"
            tms = f"{r['torch'] * 1e3:.1f} ms ±{100 * r['torch_spread']:.0f}%" if "torch" in r else "-"
            line = (f"{name:5} {r['dtype']:7} convnet {r['convnet'] * 1e3:6.1f} ms ±{100 * r['convnet_spread']:.0f}%  "
                    f"torch {tms}  convnet/torch {ratio}  err {r.get('err', float('nan')):.1e}  "
                    f"minor faults/step {r['faults']:.0f}")
            print(line, flush=True)
            lines.append(line)
            if "profile" in r:
                print("    profile (ms per step): " +
                      ", ".join(f"{k} {v * 1e3:.1f}" for k, v in r["profile"].items()))
    return {"config": config, "blas": H.blas_kernel(), "rows": rows, "summary": lines}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="deep,three")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--config", choices=["machine", "user", "haswell"], default=None)
    args = ap.parse_args(argv)
    return H.run_configurations(argv, args.config, lambda c: run(c, args))


if __name__ == "__main__":
    sys.exit(main())
