"""The benchmark's statistics: the bootstrap interval of a fast/peer ratio and the summary lines that use it."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name):
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def harness():
    return _load("_harness")


@pytest.fixture(scope="module")
def bench_layers():
    return _load("bench_layers")


# Round-to-round drift of the machine: each round's speed differs by up to 2x.
DRIFT = np.array([1.0, 1.9, 1.2, 0.95, 1.6, 1.1, 2.0, 1.3, 1.05])


def test_proportional_rounds_give_a_point(harness):
    # The peer's samples drift 2x between rounds; the fast samples are 0.8x the peer's round by round. Resampling
    # whole rounds keeps each pair together, so the ratio does not move at all.
    lo, hi = harness.ratio_interval(0.8 * DRIFT, DRIFT)
    assert lo == pytest.approx(0.8, rel=1e-12) and hi == pytest.approx(0.8, rel=1e-12)


def test_interval_scales_with_the_noise(harness):
    # With the peer steady, median(1 + k*d) = 1 + k*median(d): the interval around 1 stretches exactly k times.
    d = np.array([0.3, -0.1, 0.05, -0.4, 0.2, 0.0, 0.15, -0.25, 0.1, -0.05, 0.35])
    ones = np.ones_like(d)
    lo1, hi1 = harness.ratio_interval(1 + d, ones)
    lo3, hi3 = harness.ratio_interval(1 + 3 * d, ones)
    assert lo1 < np.median(1 + d) < hi1
    assert lo3 - 1 == pytest.approx(3 * (lo1 - 1)) and hi3 - 1 == pytest.approx(3 * (hi1 - 1))
    # A wider level contains the narrower one; the seed makes it repeatable.
    lo5, hi5 = harness.ratio_interval(1 + d, ones, level=0.5)
    assert lo1 <= lo5 <= hi5 <= hi1
    assert harness.ratio_interval(1 + d, ones) == (lo1, hi1)


@pytest.mark.parametrize("a, b, level, match", [
    ([1.0, 2.0], [1.0], 0.9, r"\(2,\) and \(1,\)"),
    ([], [], 0.9, r"\(0,\) and \(0,\)"),
    ([1.0], [1.0], 1.0, "level must be in \\(0, 1\\), got 1.0"),
    ([1.0], [1.0], 0.0, "got 0.0"),
])
def test_bad_samples(harness, a, b, level, match):
    with pytest.raises(ValueError, match=match):
        harness.ratio_interval(a, b, level)


def _row(case, fast, peer):
    fast, peer = list(fast), list(peer)
    return {"case": case, "N": 1, "kind": "conv", "dtype": "float64", "fast": float(np.median(fast)),
            "torch": float(np.median(peer)), "fast_samples": fast, "torch_samples": peer}


def test_summary_counts_layers_above_one_by_their_interval(bench_layers):
    ones = np.ones(9)
    noise = np.array([0.6, -0.5, 0.4, -0.45, 0.05, 0.5, -0.6, 0.55, -0.35])
    rows = [_row("slow", 1.5 * DRIFT, DRIFT),            # 1.5, steady: above 1.0 whatever the rounds drawn
            _row("noisy", 1.05 + noise, ones),           # 1.10, but its interval reaches below 1.0
            _row("fine", 0.7 * DRIFT, DRIFT)]
    line, = bench_layers.summarise(rows)
    assert line.startswith("conv float64 fast/torch: median 1.10, worst 1.50 (slow N=1; 90% interval 1.50-1.50)")
    assert line.endswith("2/3 layers above 1.0, 1 with the whole interval above")


def test_summary_without_samples(bench_layers):
    rows = [{k: v for k, v in _row("a", 1.2 * DRIFT, DRIFT).items() if not k.endswith("_samples")}]
    assert bench_layers.summarise(rows) == ["conv float64 fast/torch: median 1.20, worst 1.20 (a N=1), "
                                            "1/1 layers above 1.0"]
