"""``python -m convnet check``: every layer's forward and backward against independent computations.

Forward passes are compared with a vectorised formulation written here from
the definitions (``sliding_window_view`` and ``einsum``), backward passes with
centred finite differences of the layer's own forward, in float64. The result
is a table with one row per layer and a pass/fail verdict; the exit code is 1
when any row fails, so the command works in scripts and CI.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convnet import layers, losses
from convnet.gradcheck import compute_numeric_gradient, rel_error

# Tolerances for float64: forward agrees to rounding, finite differences to ~1e-8.
FORWARD_TOL = 1e-10
BACKWARD_TOL = 1e-7


def _windows(x, kh, kw, stride, pad, fill=0.0):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    # (N, C, H', W', kh, kw) view of every window, subsampled by the stride.
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]


def _conv_ref(x, w, b, stride, pad):
    win = _windows(x, w.shape[2], w.shape[3], stride, pad)
    return np.einsum("nchwij,fcij->nfhw", win, w) + b[None, :, None, None]


def _numeric_grads(forward, arrays, dout):
    """Numeric gradient of ``sum(forward(*arrays) * dout)`` with respect to each array."""
    grads = []
    for k, a in enumerate(arrays):
        def f(_, k=k):
            return forward(*arrays)
        grads.append(compute_numeric_gradient(f, a, dout, h=1e-6))
    return grads


def _case(name, forward, backward, arrays, reference):
    t0 = time.perf_counter()
    out, cache = forward(*arrays)
    fwd_err = rel_error(out, reference(*arrays)) if reference is not None else None
    dout = np.random.default_rng(1).standard_normal(out.shape)
    analytic = backward(dout, cache)
    analytic = analytic if isinstance(analytic, tuple) else (analytic,)
    numeric = _numeric_grads(lambda *a: forward(*a)[0], arrays, dout)
    bwd_err = max(rel_error(a, n) for a, n in zip(analytic, numeric))
    ok = (fwd_err is None or fwd_err < FORWARD_TOL) and bwd_err < BACKWARD_TOL
    return {"layer": name, "forward": fwd_err, "backward": bwd_err, "ok": ok,
            "seconds": time.perf_counter() - t0}


def run_checks(seed: int = 0) -> list[dict]:
    """Run every layer check in float64; returns one dict per layer."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal
    conv_param = {"stride": 2, "pad": 1}
    pool = {"pool_height": 3, "pool_width": 2, "stride": 1, "pad": 1}
    rows = []

    x, w, b = r((2, 3)), r((3, 4)), r(4)
    rows.append(_case("Linear", lambda x, w, b: layers.Linear.forward(x, w, b), layers.Linear.backward,
                      [x, w, b], lambda x, w, b: x @ w + b))
    x = r((3, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep finite differences away from the kink
    rows.append(_case("ReLU", layers.ReLU.forward, layers.ReLU.backward, [x], lambda x: x * (x > 0)))

    x, w, b = r((2, 3, 6, 5)), r((4, 3, 3, 2)), r(4)
    rows.append(_case("Conv", lambda x, w, b: layers.Conv.forward(x, w, b, conv_param),
                      layers.Conv.backward, [x, w, b], lambda x, w, b: _conv_ref(x, w, b, 2, 1)))

    # A permutation keeps every window's maximum unique, so the max is differentiable.
    x = rng.permutation(2 * 2 * 5 * 6).reshape(2, 2, 5, 6) / 7.0
    rows.append(_case("MaxPool", lambda x: layers.MaxPool.forward(x, pool), layers.MaxPool.backward, [x],
                      lambda x: _windows(x, 3, 2, 1, 1, -np.inf).max(axis=(4, 5))))
    x = r((2, 2, 5, 6))
    rows.append(_case("AvgPool", lambda x: layers.AvgPool.forward(x, pool), layers.AvgPool.backward, [x],
                      lambda x: _windows(x, 3, 2, 1, 1).mean(axis=(4, 5))))

    x, gamma, beta = r((6, 4)) * 2 + 1, r(4), r(4)

    def bn_ref(x, gamma, beta):
        return gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) + beta

    rows.append(_case("BatchNorm", lambda x, g, b: layers.BatchNorm.forward(x, g, b, {"mode": "train"}),
                      layers.BatchNorm.backward, [x, gamma, beta], bn_ref))
    rows.append(_case("BatchNorm.backward_alt",
                      lambda x, g, b: layers.BatchNorm.forward(x, g, b, {"mode": "train"}),
                      layers.BatchNorm.backward_alt, [x, gamma, beta], bn_ref))
    x = r((2, 3, 4, 3))

    def sbn_ref(x, gamma, beta):
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        var = x.var(axis=(0, 2, 3), keepdims=True)
        return gamma[:, None, None] * (x - mean) / np.sqrt(var + 1e-5) + beta[:, None, None]

    rows.append(_case("SpatialBatchNorm",
                      lambda x, g, b: layers.SpatialBatchNorm.forward(x, g, b, {"mode": "train"}),
                      layers.SpatialBatchNorm.backward, [x, gamma[:3], beta[:3]], sbn_ref))

    x = r((4, 5))
    dp = {"p": 0.3, "mode": "train", "seed": 3}
    keep = np.random.default_rng(3).random(x.shape) >= 0.3
    rows.append(_case("Dropout", lambda x: layers.Dropout.forward(x, dp), layers.Dropout.backward, [x],
                      lambda x: x * keep / 0.7))

    for name, fn in (("softmax_loss", losses.softmax_loss), ("svm_loss", losses.svm_loss)):
        scores, y = r((5, 4)), rng.integers(0, 4, 5)
        t0 = time.perf_counter()
        _, dx = fn(scores, y)
        num = compute_numeric_gradient(lambda s: np.array(fn(s, y)[0]), scores, h=1e-6)
        err = rel_error(dx, num)
        rows.append({"layer": name, "forward": None, "backward": err, "ok": err < BACKWARD_TOL,
                     "seconds": time.perf_counter() - t0})
    return rows


def format_table(rows: list[dict]) -> str:
    def fmt(v):
        return "-" if v is None else f"{v:.2e}"

    lines = [f"{'layer':24s} {'forward err':>12s} {'backward err':>13s} {'time':>8s}  result",
             "-" * 68]
    for row in rows:
        lines.append(f"{row['layer']:24s} {fmt(row['forward']):>12s} {fmt(row['backward']):>13s} "
                     f"{row['seconds'] * 1e3:6.0f}ms  {'PASS' if row['ok'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convnet check", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    args = parser.parse_args(argv)
    rows = run_checks(args.seed)
    print(format_table(rows))
    failed = [r["layer"] for r in rows if not r["ok"]]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} layers pass"
          f" (forward tolerance {FORWARD_TOL:g}, backward tolerance {BACKWARD_TOL:g}, float64)")
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0
