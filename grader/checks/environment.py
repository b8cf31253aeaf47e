"""Checks of the grading environment: the provided fast path, in a trusted child, worth no points.

``convnet.fast`` is provided code, not the student's; these checks catch a
broken build or a missing extension on the grading machine and say so loudly.
"""
from __future__ import annotations

from dataclasses import dataclass

from convnet.specs import LAYERS
from grader.checks.layer import LayerBackward, numeric_gradients
from grader.compare import compare

__all__ = ["FastPathCheck", "environment_checks"]


@dataclass(kw_only=True)
class FastPathCheck(LayerBackward):
    """A fast layer's forward and backward against the naive reference and finite differences."""

    files: str = "reference"
    fast: bool = True
    visibility: str = "hidden"
    points: float = 0
    file: str = "fast.py"

    def prepare(self, rng, prefix):
        prep = super().prepare(rng, prefix)
        prep.tasks[0]["fn"] = f"fast.{self.spec.fast}"
        return prep

    def expected(self, prep):
        exp = super().expected(prep)
        call, dout = prep.state["call"], prep.state["dout"]
        first = self.spec.arrays[0]
        exp["fb.numeric0"] = numeric_gradients(self.reference_forward(), call.copy(), dout, names=[first])[0]
        return exp

    def shapes(self, prep, expected):
        return {k: v for k, v in expected.items() if k != "fb.numeric0"}

    def judge(self, answers, prep, expected):
        j = super().judge(answers, prep, expected)
        got = answers.get("fb", "d0")
        if got is not None:
            num = expected["fb.numeric0"]
            j.comparisons.append(compare("dx vs finite differences", got, num, scale=self._scale(prep, num),
                                         allow=1e-6 * float(abs(num).max())))
        j.ok = j.ok and all(c.ok for c in j.comparisons)
        if not j.ok:
            j.summary = "ENVIRONMENT: the fast path disagrees with the naive reference: " + j.summary
        return j


def environment_checks() -> list:
    out = []
    for spec in LAYERS.values():
        if spec.fast:
            g = spec.hidden()[0]
            out.append(FastPathCheck(name=f"environment: {spec.fast} vs the naive reference",
                                     target="environment", layer=spec.name, geometry=g, group="environment",
                                     tags=("environment", "fast")))
    return out

