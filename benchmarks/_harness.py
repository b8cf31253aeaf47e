"""What the benchmarks share: interleaved timing, the two BLAS configurations, peers, page faults.

Timing (:func:`interleaved`): every library's function runs in the same
process; each round warms every library up for a fixed time (calls until
``warmup`` seconds have passed, at least one) immediately before its timed
sample, and the rounds rotate the order of the libraries. A library therefore
never starts a timed call from idle (after >= 0.25 s of idle a batch-split
convolution ran about 2x slower for its next calls) and machine-wide
load spikes spread over all of them. A sample is one call, or for a function
faster than ``SAMPLE_TIME`` the mean of the back-to-back calls that fill it (at
the warm-up's pace): one sub-millisecond call is mostly the machine's noise.

BLAS configurations (:func:`run_configurations`): on some processors the
environment sets ``OPENBLAS_CORETYPE`` (and ``OPENBLAS_L2_SIZE``), which holds
numpy's OpenBLAS to an older kernel; a user's machine has no such override.
The benchmark runs once as the machine is set up ("machine") and once more in a
child process with both variables removed for that command alone ("user"), and
prints which OpenBLAS kernel ran in each (threadpoolctl).
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

try:
    import threadpoolctl
except ImportError:  # pragma: no cover
    threadpoolctl = None

BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# ---------------------------------------------------------------- timing


# A timed sample lasts at least this long: faster functions are timed over several back-to-back calls.
SAMPLE_TIME = 0.01


def interleaved(fns: dict, repeats: int, warmup: float, sample_time: float = SAMPLE_TIME) -> dict:
    """``{name: [seconds per call, ...]}``: ``repeats`` timed samples of each function, interleaved.

    Round r times the functions in an order rotated by r; before each sample
    the function runs untimed until ``warmup`` seconds have passed (at least
    once). A sample is the mean over ``k`` back-to-back calls, ``k`` the calls
    that take ``sample_time`` at the warm-up's pace (1 for slower functions).
    """
    names = list(fns)
    times = {n: [] for n in names}
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(i + r) % len(names)]
            fn = fns[name]
            t0 = time.perf_counter()
            t_end = t0 + warmup
            fn()
            calls = 1
            while time.perf_counter() < t_end:
                fn()
                calls += 1
            pace = (time.perf_counter() - t0) / calls
            k = max(1, min(1000, int(sample_time / pace))) if pace > 0 else 1
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            times[name].append((time.perf_counter() - t0) / k)
    return times


def summary(ts) -> tuple:
    """(median, spread): spread is (max - min) / median over the timed calls."""
    med = statistics.median(ts)
    return med, (max(ts) - min(ts)) / med


def ratio_interval(a, b, level: float = 0.9, resamples: int = 2000, seed: int = 0) -> tuple:
    """(low, high): the ``level`` bootstrap interval of ``median(a) / median(b)``.

    ``a[i]`` and ``b[i]`` are the samples of round ``i`` of :func:`interleaved`,
    timed moments apart, so whole rounds are resampled (pairs): a slow spell of
    the machine that hit both libraries stays in one resampled round. The
    interval shows how far the ratio of medians moves when the run's rounds are
    drawn again; it does not see a machine that drifts between runs. A fixed
    ``seed`` makes it repeatable.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two equal-length non-empty sample lists, got {a.shape} and {b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rounds = np.random.default_rng(seed).integers(0, a.size, size=(resamples, a.size))
    q = np.median(a[rounds], axis=1) / np.median(b[rounds], axis=1)
    low, high = np.quantile(q, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def minor_faults() -> int:
    """Minor page faults of this process so far (getrusage)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def gemm_peak(dtype, repeats=5) -> float:
    """GFLOP/s of numpy matmul on 1024x1024 matrices: the best of ``repeats`` (a peak, not a median)."""
    rng = np.random.default_rng(0)
    n = 1024
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    a @ b
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def rel_err(a, ref) -> float:
    """max|a - ref| / max(max|ref|, 1e-30) in float64."""
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(a - ref)) / max(float(np.max(np.abs(ref))), 1e-30)) if ref.size else 0.0


# ---------------------------------------------------------------- threads and BLAS


def blas_kernel() -> str:
    """The OpenBLAS kernel numpy runs ('SkylakeX', 'Haswell', ...), from threadpoolctl."""
    if threadpoolctl is None:
        return "unknown (no threadpoolctl)"
    arch = [f"{i.get('internal_api')} {i.get('architecture', '?')}"
            for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    return ", ".join(arch) or "no BLAS found"


def pin_threads(threads):
    """Give numpy's BLAS, the fast path and torch ``threads`` threads; returns the count.

    ``threads`` None: BLAS's current count.
    """
    import convnet.fast as fast

    if threadpoolctl is not None:
        info = threadpoolctl.threadpool_info()
        blas = [i["num_threads"] for i in info if i["user_api"] == "blas"]
        threads = threads or (blas[0] if blas else os.cpu_count())
        threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
    else:
        threads = threads or os.cpu_count()
    fast.set_num_threads(threads)
    torch = peer_torch()
    if torch is not None:
        torch.set_num_threads(threads)
    return threads


def peer_torch():
    """torch, or None (printed once) when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


_JAX_REASON = []


def peer_jax(x64: bool):
    """jax (with float64 enabled if ``x64``), or None; :func:`jax_reason` says why not."""
    try:
        import jax
    except ImportError as exc:
        _JAX_REASON[:] = [f"jax not installed ({exc}); `pip install jax jaxlib` adds XLA as a peer"]
        return None
    if x64:
        jax.config.update("jax_enable_x64", True)
    return jax


def jax_reason() -> str:
    return _JAX_REASON[0] if _JAX_REASON else ""


# ---------------------------------------------------------------- the two BLAS configurations


def machine_sets_blas() -> dict:
    """The BLAS variables the environment sets (empty when none is)."""
    return {k: os.environ[k] for k in BLAS_VARIABLES if k in os.environ}


def config_environment(config: str) -> dict:
    """This process's environment with the BLAS variables of ``config``: 'machine' as set here,
    'user' without them, 'haswell' with ``OPENBLAS_CORETYPE=Haswell``."""
    env = dict(os.environ)
    if config == "user":
        for k in BLAS_VARIABLES:
            env.pop(k, None)
    elif config == "haswell":
        env["OPENBLAS_CORETYPE"] = "Haswell"
    return env


def run_configurations(argv, config, run) -> int:
    """Run ``run(config) -> dict`` for the machine configuration here, then re-exec for the user's.

    ``config`` is the ``--config`` value: ``None`` (both, this process being the
    parent), ``'machine'``, ``'user'`` or ``'haswell'`` (a child: run that one,
    write its result as JSON to ``$CONVNET_BENCH_RESULT``). ``'haswell'``
    emulates the override on a machine that does not set it. The parent
    prints each configuration's summary lines again at the end.
    """
    if config is not None:
        env = config_environment(config)
        if any(env.get(k) != os.environ.get(k) for k in BLAS_VARIABLES):
            # OpenBLAS reads the variables once, at load: only a fresh process gets this configuration's kernel.
            return subprocess.call([sys.executable, *sys.argv], env=env)
        result = run(config)
        out = os.environ.get("CONVNET_BENCH_RESULT")
        if out:
            with open(out, "w") as fh:
                json.dump(result, fh)
        return 0
    env_set = machine_sets_blas()
    configs = ["machine", "user"] if env_set else ["user", "haswell"]
    if not env_set:
        print(f"note: this environment sets none of {BLAS_VARIABLES}: its configuration is the user's; "
              "the machine override is emulated with OPENBLAS_CORETYPE=Haswell in a child process")
    results = {}
    for c in configs:
        env = config_environment(c)
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
            env["CONVNET_BENCH_RESULT"] = tmp.name
        print(f"\n======== BLAS configuration '{c}' "
              f"({'variables as set here' if c == 'machine' else 'OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset' if c == 'user' else 'OPENBLAS_CORETYPE=Haswell'})",
              flush=True)
        status = subprocess.call([sys.executable, *sys.argv[:1], *argv, "--config", c], env=env)
        if status != 0:
            print(f"configuration {c} failed with exit code {status}")
            return status
        with open(tmp.name) as fh:
            results[c] = json.load(fh)
        os.unlink(tmp.name)
    print("\n======== summary")
    for c, r in results.items():
        for line in r.get("summary", []):
            print(f"[{c:8}] {line}")
    return 0
