"""Time the fast conv and pool layers against PyTorch (and JAX/XLA) on real networks' layers.

Usage::

    python benchmarks/bench_layers.py [--quick] [--suite legacy,deep,resnet20,vgg,lenet]
                                      [--batches 1,32,128] [--dtypes float32,float64]
                                      [--repeats R] [--warmup S] [--threads T] [--naive]
                                      [--algorithm auto|im2col|...] [--json out.json]
                                      [--config machine|user|haswell]

Every case is timed forward+backward, the libraries interleaved in one process
(see ``benchmarks/_harness.py``): each timed sample follows a warm-up of
``--warmup`` seconds of that library and is one call, or the mean of the calls
that fill 10 ms for a faster one; rounds rotate the order, and the table
shows the median with the spread ((max - min) / median). Without ``--config``
the script runs itself twice in child processes: the machine's BLAS
configuration and the user's (``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE``
unset), and prints the OpenBLAS kernel each ran and a summary line per
configuration: median and worst fast/torch ratio for conv float32, conv
float64 and pooling, and worst fast/XLA, with the worst ratio's 90 % interval
over the run's rounds (``_harness.ratio_interval``).

Peers: PyTorch CPU (``torch.nn.functional``, autograd backward) and, when
installed, JAX (``jax.jit`` of ``jax.vjp``; skipped with a printed reason
otherwise). Every case checks the fast layer's output and gradients against
PyTorch first (relative error printed as ``err``). GFLOP/s counts
``2*N*F*H_out*W_out*C*k*k`` per forward and 3x that per forward+backward; peak%
divides by numpy's measured GEMM rate. Pooling GB/s counts the input and output
bytes twice (forward and backward).

The suite: ``legacy`` is C1-C4/P1-P3 (``bench`` geometries of ``convnet/specs.py``,
their own batch sizes); the networks (``benchmarks/networks.py``) run at every
batch of ``--batches``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402
import networks  # noqa: E402

import convnet.fast as fast  # noqa: E402
from convnet import layers  # noqa: E402


def _inputs(layer, N, dtype, rng):
    xs, ws = layer.shapes(N)
    x = rng.standard_normal(xs).astype(dtype)
    if layer.kind == "conv":
        w = (rng.standard_normal(ws) / np.sqrt(ws[1] * ws[2] * ws[3])).astype(dtype)
        b = rng.standard_normal(ws[0]).astype(dtype)
        return x, w, b
    return (x,)


def _fast_fns(layer):
    if layer.kind == "conv":
        cp = {"stride": layer.stride, "pad": layer.pad}
        return (lambda x, w, b: fast.FastConv.forward(x, w, b, cp)), fast.FastConv.backward
    pp = {"pool_height": layer.k, "pool_width": layer.k, "stride": layer.stride, "pad": layer.pad}
    cls = fast.FastMaxPool if layer.kind == "max" else fast.FastAvgPool
    return (lambda x: cls.forward(x, pp)), (lambda d, c: (cls.backward(d, c),))


def _naive_fns(layer):
    if layer.kind == "conv":
        cp = {"stride": layer.stride, "pad": layer.pad}
        return (lambda x, w, b: layers.Conv.forward(x, w, b, cp)), layers.Conv.backward
    pp = {"pool_height": layer.k, "pool_width": layer.k, "stride": layer.stride, "pad": layer.pad}
    cls = layers.MaxPool if layer.kind == "max" else layers.AvgPool
    return (lambda x: cls.forward(x, pp)), (lambda d, c: (cls.backward(d, c),))


def _torch_fb(torch, layer, arrays, dout):
    import torch.nn.functional as TF

    ts = [torch.from_numpy(a) for a in arrays]
    td = torch.from_numpy(dout)

    def fwd(*t):
        if layer.kind == "conv":
            return TF.conv2d(*t, stride=layer.stride, padding=layer.pad)
        fn = TF.max_pool2d if layer.kind == "max" else TF.avg_pool2d
        return fn(t[0], layer.k, stride=layer.stride, padding=layer.pad)

    def fb():
        g = [t.detach().requires_grad_() for t in ts]
        out = fwd(*g)
        out.backward(td)
        return out, [t.grad for t in g]

    return fb


def _jax_fb(jax, layer, arrays, dout):
    import jax.numpy as jnp
    from jax import lax

    s, p, k = layer.stride, layer.pad, layer.k

    def fwd(*t):
        if layer.kind == "conv":
            x, w, b = t
            y = lax.conv_general_dilated(x, w, (s, s), [(p, p), (p, p)],
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
            return y + b[None, :, None, None]
        x = t[0]
        if layer.kind == "max":
            return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, k, k), (1, 1, s, s),
                                     [(0, 0), (0, 0), (p, p), (p, p)])
        return lax.reduce_window(x, 0.0, lax.add, (1, 1, k, k), (1, 1, s, s),
                                 [(0, 0), (0, 0), (p, p), (p, p)]) / (k * k)

    @jax.jit
    def step(args, d):
        out, vjp = jax.vjp(fwd, *args)
        return out, vjp(d)

    jargs = tuple(jax.device_put(a) for a in arrays)
    jd = jax.device_put(dout)

    def fb():
        return jax.block_until_ready(step(jargs, jd))

    return fb


def bench_case(layer, N, dtype, args, torch, jax, peaks, rng):
    arrays = _inputs(layer, N, dtype, rng)
    fwd, bwd = _fast_fns(layer)
    out, _ = fwd(*arrays)
    dout = rng.standard_normal(out.shape).astype(dtype)

    def fast_fb():
        o, c = fwd(*arrays)
        return o, bwd(dout, c)

    fns = {"fast": fast_fb}
    row = {"case": layer.name, "label": layer.label(N), "kind": layer.kind, "N": N, "dtype": np.dtype(dtype).name}
    if torch is not None:
        tfb = _torch_fb(torch, layer, arrays, dout)
        fns["torch"] = tfb
        o, g = fast_fb()
        to, tg = tfb()
        row["err"] = max([H.rel_err(o, to.detach().numpy())] + [H.rel_err(a, t.numpy()) for a, t in zip(g, tg)])
    if jax is not None:
        fns["xla"] = _jax_fb(jax, layer, arrays, dout)
    if args.naive and layer.name in networks.legacy_cases():
        # The naive layer is a loop over images: time one, scale by N.
        nf, nb = _naive_fns(layer)
        one = [a[:1].copy() if i == 0 else a for i, a in enumerate(arrays)]

        def naive_fb():
            o, c = nf(*one)
            nb(dout[:1].copy(), c)

        row["naive"] = statistics.median(H.interleaved({"n": naive_fb}, 3, 0.0)["n"]) * N
    times = H.interleaved(fns, args.repeats, args.warmup)
    for name, ts in times.items():
        row[name], row[name + "_spread"] = H.summary(ts)
        row[name + "_samples"] = ts  # round by round, for the ratio's interval
    xs = arrays[0]
    if layer.kind == "conv":
        flops = 2.0 * N * layer.F * out.shape[2] * out.shape[3] * layer.C * layer.k * layer.k
        row["gflops"] = 3 * flops / row["fast"] / 1e9
        row["peak"] = row["gflops"] / peaks[row["dtype"]]
    else:
        row["gbs"] = 2 * (xs.nbytes + out.nbytes) / row["fast"] / 1e9
    return row


def _fmt_row(r):
    def ms(key):
        return f"{r[key] * 1e3:9.2f} ±{100 * r[key + '_spread']:3.0f}%" if key in r else f"{'-':>15}"

    rt = f"{r['fast'] / r['torch']:6.2f}" if "torch" in r else f"{'-':>6}"
    rx = f"{r['fast'] / r['xla']:6.2f}" if "xla" in r else f"{'-':>6}"
    rate = f"{r['gflops']:6.0f} GF/s {100 * r['peak']:4.0f}%" if "gflops" in r else f"{r['gbs']:6.1f} GB/s     "
    err = f"{r['err']:8.1e}" if "err" in r else f"{'-':>8}"
    naive = f" naive/fast {r['naive'] / r['fast']:6.0f}" if "naive" in r else ""
    return (f"{r['case']:12} {r['label']:34} {r['dtype']:7} {ms('fast')} {ms('torch')} {ms('xla')} "
            f"{rt} {rx} {rate} {err}{naive}")


HEADER = (f"{'case':12} {'layer':34} {'dtype':7} {'fast ms':>15} {'torch ms':>15} {'xla ms':>15} "
          f"{'/torch':>6} {'/xla':>6} {'rate (fast)':>20} {'err':>8}")


def _interval(row, peer, level):
    """The ``level`` interval of a row's fast/peer ratio, from its samples (:func:`_harness.ratio_interval`)."""
    return H.ratio_interval(row["fast_samples"], row[peer + "_samples"], level)


def summarise(rows, level: float = 0.9) -> list:
    """The summary lines: median and worst fast/peer per group; where the rows hold their samples, the worst
    ratio's ``level`` interval and how many of the layers above 1.0 have that whole interval above 1.0."""
    lines = []
    groups = [("conv float32", lambda r: r["kind"] == "conv" and r["dtype"] == "float32"),
              ("conv float64", lambda r: r["kind"] == "conv" and r["dtype"] == "float64"),
              ("pool", lambda r: r["kind"] != "conv")]
    for label, pred in groups:
        sel = [r for r in rows if pred(r)]
        for peer in ("torch", "xla"):
            ratios = [(r["fast"] / r[peer], r) for r in sel if peer in r]
            if not ratios:
                continue
            worst, wr = max(ratios, key=lambda t: t[0])
            over = [r for q, r in ratios if q > 1.0]
            line = (f"{label:12} fast/{peer:5}: median {statistics.median(q for q, _ in ratios):.2f}, "
                    f"worst {worst:.2f} ({wr['case']} N={wr['N']}")
            if all("fast_samples" in r and peer + "_samples" in r for _, r in ratios):
                # The worst row is among those over 1.0 whenever it is above: one interval per row.
                intervals = {id(r): _interval(r, peer, level) for r in over + [wr]}
                low, high = intervals[id(wr)]
                sure = sum(1 for r in over if intervals[id(r)][0] > 1.0)
                line += (f"; {100 * level:.0f}% interval {low:.2f}-{high:.2f}), {len(over)}/{len(ratios)} layers "
                         f"above 1.0, {sure} with the whole interval above")
            else:
                line += f"), {len(over)}/{len(ratios)} layers above 1.0"
            lines.append(line)
    return lines


def run(config, args):
    threads = H.pin_threads(args.threads)
    fast.set_conv_algorithm(args.algorithm)
    torch = H.peer_torch()
    dtypes = [np.dtype(d) for d in args.dtypes.split(",") if d]
    jax = None if args.no_jax else H.peer_jax(x64=np.dtype(np.float64) in dtypes)
    print(f"config {config}: OpenBLAS kernel {H.blas_kernel()}; "
          f"{', '.join(f'{k}={os.environ[k]}' for k in H.BLAS_VARIABLES if k in os.environ) or 'no OPENBLAS_* set'}")
    print(f"threads {threads} (BLAS, fast, torch); HAVE_CYTHON={fast.HAVE_CYTHON}; algorithm {args.algorithm}; "
          f"torch {getattr(torch, '__version__', 'absent')}; "
          f"jax {getattr(jax, '__version__', 'absent: ' + (H.jax_reason() or '--no-jax'))}; "
          f"numpy {np.__version__}; python {platform.python_version()}; "
          f"repeats {args.repeats}, warm-up {args.warmup} s; load average {os.getloadavg()[0]:.1f}")
    peaks = {d.name: H.gemm_peak(d) for d in dtypes}
    print("numpy GEMM peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    cases = []
    legacy = networks.legacy_cases()
    for group in args.suite.split(","):
        if group == "legacy":
            cases += [legacy[n] for n in legacy if not args.only or n in args.only]
        else:
            for layer in networks.NETWORKS[group]:
                if args.only and layer.name not in args.only:
                    continue
                cases += [(layer, N) for N in args.batches]
    rng = np.random.default_rng(0)
    rows = []
    print(HEADER)
    print("-" * len(HEADER))
    for layer, N in cases:
        for d in dtypes:
            r = bench_case(layer, N, d, args, torch, jax, peaks, rng)
            rows.append(r)
            print(_fmt_row(r), flush=True)
    lines = summarise(rows)
    print()
    for line in lines:
        print(line)
    return {"config": config, "blas": H.blas_kernel(), "peaks": peaks, "threads": threads, "rows": rows,
            "summary": lines}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="legacy,deep,resnet20,vgg,lenet")
    ap.add_argument("--only", default="", help="comma-separated case names (C1, deep.conv2, ...)")
    ap.add_argument("--batches", default="1,32,128")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=float, default=0.1, help="seconds of warm-up before every timed sample")
    ap.add_argument("--threads", type=int, default=None, help="threads for BLAS, the fast path and torch")
    ap.add_argument("--algorithm", choices=list(fast.CONV_ALGORITHMS), default="auto")
    ap.add_argument("--naive", action="store_true", help="also time the naive layer on C1-C4/P1-P3")
    ap.add_argument("--no-jax", action="store_true", help="leave XLA out")
    ap.add_argument("--quick", action="store_true",
                    help="sanity run: batch 32, float32, 3 repeats, 0.02 s warm-up, one BLAS configuration")
    ap.add_argument("--json", help="write the rows and summaries to this file")
    ap.add_argument("--config", choices=["machine", "user", "haswell"], default=None,
                    help="run one BLAS configuration in this process (default: both, in child processes)")
    args = ap.parse_args(argv)
    if args.quick:
        args.batches, args.dtypes, args.repeats, args.warmup = "32", "float32", 3, 0.02
        args.config = args.config or "machine"
    args.batches = [int(b) for b in str(args.batches).split(",") if b]
    args.only = {c for c in args.only.split(",") if c}
    unknown = [g for g in args.suite.split(",") if g != "legacy" and g not in networks.NETWORKS]
    if unknown:
        ap.error(f"unknown suite group(s) {unknown}; choose from legacy, {', '.join(networks.NETWORKS)}")

    def one(config):
        result = run(config, args)
        if args.json:
            import json

            path = args.json if args.config else f"{os.path.splitext(args.json)[0]}.{config}.json"
            with open(path, "w") as fh:
                json.dump(result, fh, indent=1)
        return result

    return H.run_configurations(argv, args.config, one)


if __name__ == "__main__":
    sys.exit(main())
