"""Checks of ``optim.py``: the step each rule takes (``next_w - w``) and the state it returns.

Comparing ``next_w`` itself would measure the step against ``w``, which is
far larger: a step with the wrong sign would look like a small relative error.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from grader.checks.base import Check, Judgement, Prepared
from grader.compare import compare, scale_of
from grader.sandbox import wire

__all__ = ["OptimStep", "RULES"]

# Each rule's state entries in config (arrays; adam's t is an integer).
RULES = {"sgd": (), "sgd_momentum": ("velocity",), "rmsprop": ("cache",), "adam": ("m", "v")}


@dataclass(kw_only=True)
class OptimStep(Check):
    """One update of ``rule`` against the reference's: the step and every state entry."""

    rule: str
    hyper: dict = field(default_factory=dict)  # non-default hyper-parameters
    t: int = 5  # adam's step count before the update
    fresh: bool = False  # start from config without state (the first step)
    file: str = "optim.py"
    group: str = "optim"

    def prepare(self, rng, prefix):
        shape = (4, 5)
        w, dw = rng.standard_normal(shape), rng.standard_normal(shape)
        inputs = {prefix + "w": w, prefix + "dw": dw}
        config = {"learning_rate": 1e-2, **self.hyper}
        for k in RULES[self.rule] if not self.fresh else ():
            inputs[prefix + k] = rng.random(shape) * 0.1
            config[k] = wire.A(prefix + k)
        if self.rule == "adam" and not self.fresh:
            config["t"] = self.t
        outs = {"next_w": [0], **{k: [1, k] for k in RULES[self.rule]}}
        if self.rule == "adam":
            outs["t"] = [1, "t"]
        tid = prefix + "step"
        task = wire.task("call", tid, fn=f"optim.{self.rule}", args=[wire.A(prefix + "w"), wire.A(prefix + "dw"),
                                                                       config], outs=outs)
        return Prepared([task], inputs, {tid: list(outs)}, {"w": w, "dw": dw, "config": config, "inputs": inputs})

    def expected(self, prep):
        from convnet import optim

        config = wire.decode(prep.state["config"], prep.state["inputs"])
        next_w, config = getattr(optim, self.rule)(prep.state["w"].copy(), prep.state["dw"].copy(), config)
        exp = {"step.next_w": next_w, **{f"step.{k}": config[k] for k in RULES[self.rule]}}
        if self.rule == "adam":
            exp["step.t"] = np.array(config["t"], dtype=np.float64)
        return exp

    def describe(self, prep):
        config = {k: ("array (4, 5)" if isinstance(v, dict) else v) for k, v in prep.state["config"].items()}
        return f"{self.rule}(w (4, 5), dw (4, 5), config={config})"

    def snippet(self, prep, expected):
        from grader.explain import literal

        lines = ["from grader.checks.base import seed_of", "",
                 f"rng = np.random.default_rng(seed_of({self.name!r}))",
                 "w, dw = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))"]
        config = {k: v for k, v in prep.state["config"].items() if not isinstance(v, dict)}
        lines.append(f"config = {config!r}")
        for k in RULES[self.rule] if not self.fresh else ():
            lines.append(f"config[{k!r}] = rng.random((4, 5)) * 0.1")
        lines += [f"from convnet.optim import {self.rule}", f"next_w, config = {self.rule}(w.copy(), dw, config)",
                  literal("expected_next_w", expected["step.next_w"]),
                  'print("step error:", np.max(np.abs((next_w - w) - (expected_next_w - w))))']
        return lines

    def judge(self, answers, prep, expected):
        w, dw = prep.state["w"], prep.state["dw"]
        problems, comparisons = [], []
        next_w = answers.get("step", "next_w")
        if next_w is None:
            problems.append(f"next_w: {answers.problem('step', 'next_w')}")
        else:
            want = expected["step.next_w"] - w
            comparisons.append(compare("step (next_w - w)", next_w - w, want, scale=scale_of(want, dw) * 1e-2,
                                       dtype="float64"))
        for k in RULES[self.rule] + (("t",) if self.rule == "adam" else ()):
            got = answers.get("step", k)
            if got is None:
                problems.append(f"config[{k!r}]: {answers.problem('step', k)}")
                continue
            want = expected[f"step.{k}"]
            comparisons.append(compare(f"config[{k!r}]", got, want, scale=scale_of(want, dw), dtype="float64"))
        ok = not problems and all(c.ok for c in comparisons)
        failing = [c.name for c in comparisons if not c.ok] + [p.split(":")[0] for p in problems]
        return Judgement(ok, "step and state match" if ok else "differs: " + ", ".join(failing), comparisons,
                         problems, extra={"rel_errors": {c.name: c.relative for c in comparisons}})
