"""Time the naive, fast and PyTorch convolution and pooling layers side by side.

Usage::

    python benchmarks/bench_layers.py [--json out.json] [--repeats R]
                                      [--cases C1,C2,P1] [--dtypes float32,float64]

Every case runs in one process with one thread count for everybody: numpy's
BLAS threads, the OpenMP threads of the Cython kernels and ``torch.set_num_threads``
are all set to ``--threads`` (default: BLAS's current count) and printed.
Times are the median (or ``--stat min``) of ``--repeats`` runs after one warm-up.
The naive layer is timed on one image (median of 3 after a warm-up) and scaled
linearly to the case's N (it is a loop over images). GFLOP/s counts 2*N*F*H_out*W_out*C*HH*WW per forward pass and
three times that for forward+backward; "peak%" divides by numpy's measured
GEMM rate for the dtype. Pooling GB/s counts the bytes of the input and the
output once per pass (forward) or twice (forward+backward). "mem" is the
tracemalloc peak of one fast forward+backward call, outputs included.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc

import numpy as np

import convnet.fast as fast
from convnet import layers

try:  # optional: pin numpy's BLAS and OpenMP threads
    import threadpoolctl
except ImportError:  # pragma: no cover
    threadpoolctl = None

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # pragma: no cover
    torch = None

CASES = {
    "C1": ("conv", (64, 3, 32, 32), (32, 3, 3, 3), 1, 1),
    "C2": ("conv", (64, 64, 16, 16), (64, 64, 3, 3), 1, 1),
    "C3": ("conv", (32, 32, 32, 32), (64, 32, 3, 3), 2, 1),
    "C4": ("conv", (50, 3, 32, 32), (32, 3, 7, 7), 1, 3),
    "P1": ("max", (64, 64, 32, 32), (2, 2), 2, 0),
    "P2": ("max", (64, 64, 33, 33), (3, 3), 2, 0),
    "P3": ("avg", (64, 64, 32, 32), (2, 2), 2, 0),
}


STAT = statistics.median


# The naive layers take 0.1-0.3 s per image: a few repeats (not --repeats) of one image.
NAIVE_REPEATS = 3


def timeit(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return STAT(times)


def gemm_peak(dtype, repeats):
    """GFLOP/s of numpy matmul on square matrices (the BLAS this numpy uses)."""
    rng = np.random.default_rng(0)
    best = 0.0
    for n in (512, 1024):
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        a @ b  # warm-up
        for _ in range(max(3, repeats)):  # a peak: the best run, not the median
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def tracemalloc_peak(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def bench_conv(name, spec, dtype, repeats, rng):
    _, xs, ws, stride, pad = spec
    x = rng.standard_normal(xs).astype(dtype)
    w = (rng.standard_normal(ws) * 0.1).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    cp = {"stride": stride, "pad": pad}
    out, cache = fast.FastConv.forward(x, w, b, cp)
    dout = rng.standard_normal(out.shape).astype(dtype)
    N, F, Ho, Wo = out.shape
    flops = 2.0 * N * F * Ho * Wo * ws[1] * ws[2] * ws[3]
    r = {}
    r["fast_fwd"] = timeit(lambda: fast.FastConv.forward(x, w, b, cp), repeats)

    def fast_fb():
        o, c = fast.FastConv.forward(x, w, b, cp)
        fast.FastConv.backward(dout, c)

    r["fast_fb"] = timeit(fast_fb, repeats)
    r["mem"] = tracemalloc_peak(fast_fb)
    # Naive: one image, scaled by N.
    xs1, ds1 = x[:1].copy(), dout[:1].copy()

    def naive_fwd():
        layers.Conv.forward(xs1, w, b, cp)

    def naive_fb():
        o, c = layers.Conv.forward(xs1, w, b, cp)
        layers.Conv.backward(ds1, c)

    r["naive_fwd"] = timeit(naive_fwd, NAIVE_REPEATS) * N
    r["naive_fb"] = timeit(naive_fb, NAIVE_REPEATS) * N
    if torch is not None:
        tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
        td = torch.from_numpy(dout)

        def torch_fwd():
            with torch.no_grad():
                TF.conv2d(tx, tw, tb, stride=stride, padding=pad)

        def torch_fb():
            gx, gw, gb = (t.detach().requires_grad_() for t in (tx, tw, tb))
            TF.conv2d(gx, gw, gb, stride=stride, padding=pad).backward(td)

        r["torch_fwd"] = timeit(torch_fwd, repeats)
        r["torch_fb"] = timeit(torch_fb, repeats)
    r["gflop_fwd"] = flops / r["fast_fwd"] / 1e9
    r["gflop_fb"] = 3 * flops / r["fast_fb"] / 1e9
    r["flops_fwd"] = flops
    return r


def bench_pool(name, spec, dtype, repeats, rng):
    kind, xs, (ph, pw), stride, pad = spec
    x = rng.standard_normal(xs).astype(dtype)
    pp = {"pool_height": ph, "pool_width": pw, "stride": stride, "pad": pad}
    Fast = fast.FastMaxPool if kind == "max" else fast.FastAvgPool
    Naive = layers.MaxPool if kind == "max" else layers.AvgPool
    out, cache = Fast.forward(x, pp)
    dout = rng.standard_normal(out.shape).astype(dtype)
    r = {}
    r["fast_fwd"] = timeit(lambda: Fast.forward(x, pp), repeats)

    def fast_fb():
        o, c = Fast.forward(x, pp)
        Fast.backward(dout, c)

    r["fast_fb"] = timeit(fast_fb, repeats)
    r["mem"] = tracemalloc_peak(fast_fb)
    xs1, ds1 = x[:1].copy(), dout[:1].copy()

    def naive_fwd():
        Naive.forward(xs1, pp)

    def naive_fb():
        o, c = Naive.forward(xs1, pp)
        Naive.backward(ds1, c)

    N = x.shape[0]
    r["naive_fwd"] = timeit(naive_fwd, NAIVE_REPEATS) * N
    r["naive_fb"] = timeit(naive_fb, NAIVE_REPEATS) * N
    if torch is not None:
        tx, td = torch.from_numpy(x), torch.from_numpy(dout)
        tfn = TF.max_pool2d if kind == "max" else TF.avg_pool2d

        def torch_fwd():
            with torch.no_grad():
                tfn(tx, (ph, pw), stride=stride, padding=pad)

        def torch_fb():
            gx = tx.detach().requires_grad_()
            tfn(gx, (ph, pw), stride=stride, padding=pad).backward(td)

        r["torch_fwd"] = timeit(torch_fwd, repeats)
        r["torch_fb"] = timeit(torch_fb, repeats)
    nbytes = x.nbytes + out.nbytes
    r["gbs_fwd"] = nbytes / r["fast_fwd"] / 1e9
    r["gbs_fb"] = 2 * nbytes / r["fast_fb"] / 1e9
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--threads", type=int, default=None, help="threads for BLAS, OpenMP and torch")
    ap.add_argument("--algorithm", choices=list(fast.CONV_ALGORITHMS), default="auto",
                    help="convolution algorithm of the fast layer (default auto: Winograd where it pays)")
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="statistic over the repeats (min resists a busy machine better)")
    args = ap.parse_args(argv)
    global STAT
    STAT = statistics.median if args.stat == "median" else min
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    dtypes = [np.dtype(d.strip()) for d in args.dtypes.split(",") if d.strip()]
    if any(d not in (np.float32, np.float64) for d in dtypes):
        ap.error("dtypes must be float32 and/or float64")

    limiter = None
    if threadpoolctl is not None:
        info = threadpoolctl.threadpool_info()
        blas = [i["num_threads"] for i in info if i["user_api"] == "blas"]
        threads = args.threads or (blas[0] if blas else os.cpu_count())
        limiter = threadpoolctl.threadpool_limits(limits=threads)
    else:
        threads = args.threads or os.cpu_count()
    if torch is not None:
        torch.set_num_threads(threads)
    # The Cython pooling kernels split planes over this many OpenMP threads.
    fast.set_num_threads(threads)
    fast.set_conv_algorithm(args.algorithm)

    meta = {
        "python": sys.version.split()[0], "numpy": np.__version__, "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "threads": threads, "have_cython": fast.HAVE_CYTHON,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "column_budget": fast.get_column_budget(), "stat": args.stat, "algorithm": args.algorithm,
        "load_average": os.getloadavg()[0],
    }
    print(f"threads: numpy BLAS / OpenMP {threads}, torch {meta['torch_threads']}; "
          f"HAVE_CYTHON={fast.HAVE_CYTHON}; conv algorithm {args.algorithm}; torch {meta['torch']}; "
          f"repeats {args.repeats} ({args.stat}); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    peaks = {}
    for d in dtypes:
        peaks[d.name] = gemm_peak(d, args.repeats)
        print(f"numpy GEMM peak {d.name}: {peaks[d.name]:.1f} GFLOP/s")
    meta["gemm_peak_gflops"] = peaks

    rng = np.random.default_rng(0)
    results = []
    hdr = (f"{'case':4} {'dtype':7} {'pass':7} {'naive ms':>10} {'fast ms':>9} {'torch ms':>9} "
           f"{'fast/torch':>10} {'naive/fast':>10} {'rate':>16} {'peak%':>6} {'mem MiB':>8}")
    print(hdr)
    print("-" * len(hdr))
    for name in cases:
        spec = CASES[name]
        for d in dtypes:
            r = (bench_conv if spec[0] == "conv" else bench_pool)(name, spec, d, args.repeats, rng)
            for kind, label in (("fwd", "fwd"), ("fb", "fwd+bwd")):
                fast_t = r[f"fast_{kind}"]
                torch_t = r.get(f"torch_{kind}")
                ratio = f"{fast_t / torch_t:10.2f}" if torch_t else f"{'-':>10}"
                tms = f"{torch_t * 1e3:9.2f}" if torch_t else f"{'-':>9}"
                if spec[0] == "conv":
                    rate = r[f"gflop_{kind}"]
                    rate_s = f"{rate:9.1f} GFLOP/s"
                    peak_s = f"{100 * rate / peaks[d.name]:5.0f}%"
                else:
                    rate_s = f"{r[f'gbs_{kind}']:12.1f} GB/s"
                    peak_s = f"{'':6}"
                print(f"{name:4} {d.name:7} {label:7} {r[f'naive_{kind}'] * 1e3:10.1f} {fast_t * 1e3:9.2f} {tms} "
                      f"{ratio} {r[f'naive_{kind}'] / fast_t:10.0f} {rate_s:>16} {peak_s} "
                      f"{r['mem'] / 2**20 if kind == 'fb' else float('nan'):8.1f}")
            results.append({"case": name, "dtype": d.name, **r})
    if limiter is not None:
        limiter.restore_original_limits()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
