"""A grade is a measurement: the reference against itself passes every check's comparison on 500 secret seeds.

Each seed draws every check's inputs as the grader does, computes the
expected values in this process as the parent does, and computes the
answers with the child's own task code (:class:`grader.sandbox.child.Runner`)
on the reference package, through the wire's encoding and the parent's
answer validation; then the check judges. Only the process isolation is
left out (the red-team and end-to-end tests cover it), so the seeds fit in CI.
The two training checks, a third of a seed's time, have their own test on
300 seeds, which also asks for a margin on the accuracy.
"""
from __future__ import annotations

import os
import secrets
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from grader import checks as catalogue
from grader.checks.base import Answers
from grader.checks.model import EndToEnd, ModelOverfit
from grader.engine import _prepare
from grader.sandbox import wire
from grader.sandbox.child import Runner
from grader.sandbox.runner import ChildRun, check_answer

SEEDS = 500
TRAINING_SEEDS = 300


def _answers_in_process(item) -> ChildRun:
    frames = []

    def send(kind, meta, arrays=None):
        # Through the wire's encoding, as the child's frames are.
        data = b"".join(bytes(b) for b in wire.encode(kind, meta, arrays))
        n_json, _ = wire.parse_header(data[:wire.HEADER.size])
        body = data[wire.HEADER.size:wire.HEADER.size + n_json]
        kind, meta, listing = wire.parse_body(body)
        frames.append((kind, meta, wire.split_payload(listing, data[wire.HEADER.size + n_json:])))

    runner = Runner(send, {k: np.asarray(v) for k, v in item.prep.inputs.items()})
    for task in item.prep.tasks:
        runner.run(task)
    answers, errors = {}, {}
    for kind, meta, arrays in frames:
        if kind == "answer":
            want = item.prep.expect[meta["task"]][meta["name"]]
            answers[(meta["task"], meta["name"])] = check_answer(arrays["value"], *want)
        elif kind == "error":
            errors[meta["task"]] = meta
    return ChildRun(answers, errors, "", "", 0, "end", 0.0)


def _one_seed(seed: int, training: bool = True) -> list:
    failures = []
    for i, check in enumerate(catalogue.all_checks()):
        if check.timing or (not training and isinstance(check, (ModelOverfit, EndToEnd))):
            continue
        item = _prepare(check, seed, f"c{i}.", release=False)
        run = _answers_in_process(item)
        j = check.judge(Answers(run, item.prep, item.prefix), item.prep, item.expected)
        if not j.ok:
            worst = [c.line() for c in j.comparisons if not c.ok]
            failures.append((seed, check.name, j.summary, worst, j.problems, run.errors))
    return failures


def _no_training(seed: int) -> list:
    return _one_seed(seed, training=False)


def _training_accuracies(seed: int) -> dict:
    out = {}
    for i, check in enumerate(catalogue.all_checks()):
        if isinstance(check, (ModelOverfit, EndToEnd)):
            item = _prepare(check, seed, f"c{i}.", release=False)
            run = _answers_in_process(item)
            j = check.judge(Answers(run, item.prep, item.prefix), item.prep, item.expected)
            out[check.name] = (j.extra.get("train_accuracy", 0.0), check.threshold, j.ok, j.summary)
    return out


def test_the_training_checks_pass_the_reference_with_room_to_spare():
    """Training is the one check with a tail: its worst seed must clear the threshold by two examples in ten."""
    seeds = [secrets.randbits(63) for _ in range(TRAINING_SEEDS)]
    with ProcessPoolExecutor(max_workers=max(1, min(2, len(os.sched_getaffinity(0))))) as pool:
        runs = list(pool.map(_training_accuracies, seeds, chunksize=20))
    assert len(runs[0]) == 2
    for name, (_, threshold, _, _) in runs[0].items():
        worst = min(run[name][0] for run in runs)
        assert worst >= threshold + 0.2, (name, worst, threshold)
        failed = [(seed, run[name][3]) for seed, run in zip(seeds, runs) if not run[name][2]]
        assert failed == [], failed[:5]


def test_the_reference_passes_every_comparison_on_500_secret_seeds():
    seeds = [secrets.randbits(63) for _ in range(SEEDS)]
    workers = max(1, min(2, len(os.sched_getaffinity(0))))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        failures = [f for batch in pool.map(_no_training, seeds, chunksize=25) for f in batch]
    assert failures == [], failures[:5]


@pytest.mark.parametrize("seed", [0, 1, 2**62 + 12345])
def test_one_seed_runs_every_non_timing_check(seed):
    names = [c.name for c in catalogue.all_checks() if not c.timing]
    assert len(names) > 80
    assert _one_seed(seed) == []
