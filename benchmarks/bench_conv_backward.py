"""Backward of strided convolutions: FastConv's col2im path against the zero-inserted gradient.

Usage::

    python benchmarks/bench_conv_backward.py [--repeats R] [--dtypes float32,float64]
                                             [--threads T] [--stat median|min] [--json out.json]

The prototype computes dx as the full correlation of the zero-inserted
("dilated") upstream gradient with the rotated filters: ``dilate`` to the
stride-1 output size, then a stride-1 ``convnet.fast.im2col`` of it (padded by
``kernel - 1 - pad``, which also crops the padding) and one GEMM with the
rotated filters laid out (C, F*HH*WW). dw and db are computed as FastConv's
im2col path does (im2col of x, one GEMM with dout; the sum of dout), so the
prototype's backward differs from today's in dx only. Both numpy paths process
the batch in chunks whose columns fit ``convnet.fast.get_column_budget()``.

``convnet.layers.Conv.backward_alt``, the plain-numpy form of the same
formulation (dw too from the dilated gradient), is timed beside them.

Printed per case and dtype, in one run with one thread count for numpy's BLAS,
the Cython kernels and torch: the whole backward (FastConv.backward, the
prototype, PyTorch's ``aten::convolution_backward``, forward not included) and
dx alone (the col2im path from public pieces, the prototype's, PyTorch's with
only the input gradient requested), as ms and ratios. The dx GEMM of the
prototype multiplies zeros: it does stride**2 times the col2im path's flops.
The script checks that the prototype's dx equals FastConv's (relative to the
largest entry: 1e-5 in float32, 1e-12 in float64) and exits 1 if not.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

import bench_layers
import convnet.fast as fast
from convnet import layers
from convnet.correlate import dilate, rot180

try:
    import threadpoolctl
except ImportError:  # pragma: no cover
    threadpoolctl = None

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

CASES = {
    "C3": ((32, 32, 32, 32), (64, 32, 3, 3), 2, 1),
    "S5": ((32, 16, 28, 28), (32, 16, 5, 5), 2, 2),
}
CHECK_TOL = {"float32": 1e-5, "float64": 1e-12}


def _chunks(N, per_image_bytes):
    """[(lo, hi), ...] covering the batch, each chunk's columns within the column budget."""
    nb = max(1, min(N, fast.get_column_budget() // max(1, per_image_bytes)))
    return [(lo, min(N, lo + nb)) for lo in range(0, N, nb)]


def dx_col2im(dout, w, x_shape, stride, pad):
    """dx as FastConv's im2col path computes it: columns of w^T dout, added back by col2im."""
    N, F, Ho, Wo = dout.shape
    _, C, HH, WW = w.shape
    wT = np.ascontiguousarray(w.reshape(F, C * HH * WW).T)
    dx = np.empty(x_shape, dtype=dout.dtype)
    for lo, hi in _chunks(N, C * HH * WW * Ho * Wo * dout.itemsize):
        dmat = np.ascontiguousarray(dout[lo:hi].transpose(1, 0, 2, 3)).reshape(F, -1)
        dx[lo:hi] = fast.col2im(wT @ dmat, (hi - lo,) + tuple(x_shape[1:]), HH, WW, stride, pad)
    return dx


def dx_dilated(dout, w, x_shape, stride, pad):
    """dx as a stride-1 im2col GEMM of the zero-inserted gradient with the rotated filters."""
    N, F, Ho, Wo = dout.shape
    _, C, HH, WW = w.shape
    H, W = x_shape[2:]
    if HH != WW or pad > HH - 1:
        raise ValueError(f"the prototype needs a square kernel and pad <= kernel - 1, got {HH}x{WW}, pad {pad}")
    wrot = np.ascontiguousarray(rot180(w).transpose(1, 0, 2, 3)).reshape(C, F * HH * WW)
    size = (H + 2 * pad - HH + 1, W + 2 * pad - WW + 1)
    dx = np.empty(x_shape, dtype=dout.dtype)
    for lo, hi in _chunks(N, F * HH * WW * H * W * dout.itemsize):
        cols = fast.im2col(dilate(dout[lo:hi], stride, size=size), HH, WW, 1, HH - 1 - pad)
        dx[lo:hi] = (wrot @ cols).reshape(C, hi - lo, H, W).transpose(1, 0, 2, 3)
    return dx


def dx_dilated_stages(dout, w, x_shape, stride, pad, repeats):
    """Median seconds of the prototype's three stages over the batch: dilate, im2col, GEMM (+ transpose)."""
    N, F, Ho, Wo = dout.shape
    _, C, HH, WW = w.shape
    H, W = x_shape[2:]
    wrot = np.ascontiguousarray(rot180(w).transpose(1, 0, 2, 3)).reshape(C, F * HH * WW)
    size = (H + 2 * pad - HH + 1, W + 2 * pad - WW + 1)
    dx = np.empty(x_shape, dtype=dout.dtype)
    runs = []
    for _ in range(repeats + 1):  # the first is a warm-up
        spent = np.zeros(3)
        for lo, hi in _chunks(N, F * HH * WW * H * W * dout.itemsize):
            t0 = time.perf_counter()
            d = dilate(dout[lo:hi], stride, size=size)
            t1 = time.perf_counter()
            cols = fast.im2col(d, HH, WW, 1, HH - 1 - pad)
            t2 = time.perf_counter()
            dx[lo:hi] = (wrot @ cols).reshape(C, hi - lo, H, W).transpose(1, 0, 2, 3)
            spent += (t1 - t0, t2 - t1, time.perf_counter() - t2)
        runs.append(spent)
    return np.median(runs[1:], axis=0)


def dw_im2col(x, dout, w_shape, stride, pad):
    """dw as FastConv's im2col path computes it: dout times the columns of x."""
    N, F, Ho, Wo = dout.shape
    _, C, HH, WW = w_shape
    dw = np.zeros((F, C * HH * WW), dtype=x.dtype)
    for lo, hi in _chunks(N, C * HH * WW * Ho * Wo * x.itemsize):
        cols = fast.im2col(x[lo:hi], HH, WW, stride, pad)
        dmat = np.ascontiguousarray(dout[lo:hi].transpose(1, 0, 2, 3)).reshape(F, -1)
        dw += dmat @ cols.T
    return dw.reshape(w_shape)


def backward_dilated(x, w, dout, stride, pad):
    """The prototype's (dx, dw, db)."""
    return (dx_dilated(dout, w, x.shape, stride, pad), dw_im2col(x, dout, w.shape, stride, pad),
            dout.sum(axis=(0, 2, 3)))


def bench_case(spec, dtype, repeats, rng):
    xs, ws, stride, pad = spec
    x = rng.standard_normal(xs).astype(dtype)
    w = (rng.standard_normal(ws) * 0.1).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    out, cache = fast.FastConv.forward(x, w, b, {"stride": stride, "pad": pad})
    dout = rng.standard_normal(out.shape).astype(dtype)
    reference = fast.FastConv.backward(dout, cache)[0]
    ours = backward_dilated(x, w, dout, stride, pad)[0]
    error = float(np.abs(ours - reference).max() / np.abs(reference).max())
    r = {"dx_error": error, "dx_ok": error <= CHECK_TOL[np.dtype(dtype).name]}
    timeit = bench_layers.timeit
    r["fast_bwd"] = timeit(lambda: fast.FastConv.backward(dout, cache), repeats)
    r["dilated_bwd"] = timeit(lambda: backward_dilated(x, w, dout, stride, pad), repeats)
    naive_cache = (x, w, b, {"stride": stride, "pad": pad})
    r["alt_bwd"] = timeit(lambda: layers.Conv.backward_alt(dout, naive_cache), max(1, repeats // 3))
    r["col2im_dx"] = timeit(lambda: dx_col2im(dout, w, x.shape, stride, pad), repeats)
    r["dilated_dx"] = timeit(lambda: dx_dilated(dout, w, x.shape, stride, pad), repeats)
    r["dilated_dx_stages"] = dx_dilated_stages(dout, w, x.shape, stride, pad, repeats).tolist()
    if torch is not None:
        tx, tw, td = (torch.from_numpy(a) for a in (x, w, dout))
        args = ([ws[0]], [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], 1)

        def torch_bwd(mask):
            with torch.no_grad():
                torch.ops.aten.convolution_backward(td, tx, tw, *args, mask)

        r["torch_bwd"] = timeit(lambda: torch_bwd([True, True, True]), repeats)
        r["torch_dx"] = timeit(lambda: torch_bwd([True, False, False]), repeats)
        theirs = torch.ops.aten.convolution_backward(td, tx, tw, *args, [True, False, False])[0].numpy()
        r["torch_dx_error"] = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--threads", type=int, default=None, help="threads for BLAS, OpenMP and torch")
    ap.add_argument("--stat", choices=["median", "min"], default="median")
    args = ap.parse_args(argv)
    bench_layers.STAT = statistics.median if args.stat == "median" else min
    dtypes = [np.dtype(d.strip()) for d in args.dtypes.split(",") if d.strip()]
    if any(d not in (np.float32, np.float64) for d in dtypes):
        ap.error("dtypes must be float32 and/or float64")
    limiter = None
    if threadpoolctl is not None:
        blas = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        threads = args.threads or (blas[0] if blas else os.cpu_count())
        limiter = threadpoolctl.threadpool_limits(limits=threads)
    else:
        threads = args.threads or os.cpu_count()
    if torch is not None:
        torch.set_num_threads(threads)
    fast.set_num_threads(threads)
    blas_env = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"threads {threads} (BLAS, OpenMP, torch); HAVE_CYTHON={fast.HAVE_CYTHON}; "
          f"torch {None if torch is None else torch.__version__}; repeats {args.repeats} ({args.stat}); "
          f"column budget {fast.get_column_budget() >> 20} MiB; "
          + ", ".join(f"{k}={v}" for k, v in blas_env.items())
          + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    peaks = {d.name: bench_layers.gemm_peak(d, args.repeats) for d in dtypes}
    print("numpy GEMM peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))

    rng = np.random.default_rng(0)
    results, ok = [], True
    hdr = (f"{'case':4} {'dtype':7} | {'fast':>7} {'dilated':>7} {'torch':>7} {'dil/fast':>8} {'fast/tch':>8} "
           f"{'dil/tch':>7} | {'col2im':>7} {'dilated':>7} {'torch':>7} {'dil/c2i':>7} {'c2i/tch':>7} "
           f"{'dil/tch':>7} | {'dx err':>7}")
    print(f"{'':12} | {'whole backward, ms and ratios':^50} | {'dx only, ms and ratios':^50} |")
    print(hdr)
    print("-" * len(hdr))
    for name, spec in CASES.items():
        for d in dtypes:
            r = bench_case(spec, d, args.repeats, rng)
            ok &= r["dx_ok"]
            tb, tdx = r.get("torch_bwd"), r.get("torch_dx")

            def ratio(a, b, width):
                return f"{a / b:{width}.2f}" if b else f"{'-':>{width}}"

            print(f"{name:4} {d.name:7} | {r['fast_bwd'] * 1e3:7.2f} {r['dilated_bwd'] * 1e3:7.2f} "
                  f"{(tb or float('nan')) * 1e3:7.2f} {ratio(r['dilated_bwd'], r['fast_bwd'], 8)} "
                  f"{ratio(r['fast_bwd'], tb, 8)} {ratio(r['dilated_bwd'], tb, 7)} | "
                  f"{r['col2im_dx'] * 1e3:7.2f} {r['dilated_dx'] * 1e3:7.2f} {(tdx or float('nan')) * 1e3:7.2f} "
                  f"{ratio(r['dilated_dx'], r['col2im_dx'], 7)} {ratio(r['col2im_dx'], tdx, 7)} "
                  f"{ratio(r['dilated_dx'], tdx, 7)} | {r['dx_error']:7.1e}")
            results.append({"case": name, "dtype": d.name, **r})
    print("\nlayers.Conv.backward_alt (plain numpy, the same formulation for dx and dw), ms and over FastConv.backward:")
    for r in results:
        print(f"{r['case']:4} {r['dtype']:7} {r['alt_bwd'] * 1e3:8.2f} {r['alt_bwd'] / r['fast_bwd']:6.1f}")
    print("\nthe prototype's dx by stage, ms (dilate, im2col of the dilated gradient, GEMM with the rotated filters "
          "and the transpose into dx), and its GEMM's flops over the col2im path's:")
    for r in results:
        stride = CASES[r["case"]][2]
        stages = " / ".join(f"{t * 1e3:.2f}" for t in r["dilated_dx_stages"])
        print(f"{r['case']:4} {r['dtype']:7} {stages}   x{stride ** 2}")
    if limiter is not None:
        limiter.restore_original_limits()
    print("dx err: max |prototype dx - FastConv dx| / max |FastConv dx|; "
          + ("every case within " if ok else "FAILED: above ") + str(CHECK_TOL))
    if args.json:
        meta = {"threads": threads, "gemm_peak_gflops": peaks, "have_cython": fast.HAVE_CYTHON, "stat": args.stat, "repeats": args.repeats,
                "torch": None if torch is None else torch.__version__, **blas_env,
                "cases": {k: list(map(list, v[:2])) + list(v[2:]) for k, v in CASES.items()}}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=1)
        print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
