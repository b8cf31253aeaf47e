"""Timing checks: the student's naive layer against the reference's, in identical sibling children.

Both children get the same package layout, one BLAS thread and no way to
start another; they run interleaved, run by run, on fresh inputs the parent
sends each time, the idle sibling stopped meanwhile. A run's time is the
parent's clock from sending the inputs to receiving the child's last answer.
The verdict compares the minimum of :data:`REPEATS` runs per side:
``min(student) <= K * min(reference)``. A student whose best run after
:data:`EARLY_STOP_RUNS` runs is over :data:`EARLY_STOP` times the limit, even
against the reference's slowest run, is not timed further: no later run could
plausibly pass, and a finite-difference backward takes seconds per run.

Rule (stated in the README): a timing check is scored only when every timed
answer matches the reference's (speed is measured on correct work), and a run
whose CPU time exceeds its wall time (more than one core) is refused.
"""
from __future__ import annotations

from dataclasses import dataclass


from convnet.specs import LAYERS, Geometry
from grader.checks.base import Check, Judgement
from grader.compare import compare, scale_of
from grader.sandbox import wire

__all__ = ["TimingCheck", "FastSpeedCheck", "K", "REPEATS", "EARLY_STOP", "EARLY_STOP_RUNS"]

K = 10.0  # the student's naive layer may take at most K times the reference's time
REPEATS = 5
# Stop timing after EARLY_STOP_RUNS runs per side once min(student) > EARLY_STOP * K * max(reference).
EARLY_STOP = 3.0
EARLY_STOP_RUNS = 2
FAST_SPEEDUP = 100.0
FAST_REPEATS = 50  # fast-layer calls per timed round trip, so the wire's cost is amortised


def _single_core(child) -> str | None:
    """A refusal when a child's CPU time over its runs exceeds its wall time (it used another core)."""
    if child.cpu > 1.25 * child.wall + 0.05:
        return f"used {child.cpu:.2f} s of CPU in {child.wall:.2f} s of wall time: more than one core"
    return None


@dataclass(kw_only=True)
class TimingCheck(Check):
    """The student's naive ``layer`` (forward, or forward and backward) within K times the reference's time."""

    layer: str
    geometry: Geometry
    passes: str = "fwdbwd"  # or "fwd"
    file: str = "layers.py"
    timing: bool = True
    visibility: str = "hidden"

    def _task(self, call):
        spec = LAYERS[self.layer]
        args = [wire.A(k) for k in call.arrays] + [wire.encode_args(p, {}, "") for p in call.params.values()]
        if self.passes == "fwd":
            return wire.task("call", "run", fn=f"layers.{self.layer}.forward", args=args, outs={"out": [0]}), ["out"]
        n = len(spec.arrays)
        return (wire.task("fwdbwd", "run", fn=f"layers.{self.layer}", args=args, dout="dout", ngrads=n),
                ["out", *(f"d{k}" for k in range(n))])

    def describe(self, prep=None):
        return f"{self.layer} {'forward' if self.passes == 'fwd' else 'forward and backward'} on {self.geometry.label}"

    def run_serial(self, box, rng) -> Judgement:
        spec = LAYERS[self.layer]
        student = box.serve(self.name, files="student")
        reference = box.serve(self.name + "-ref", files="reference")
        times = {"student": [], "reference": []}
        problem = None
        try:
            if not reference.alive:
                raise RuntimeError("the reference timing child did not start")
            for rep in range(REPEATS):
                call = spec.call(rng, self.geometry)
                task, names = self._task(call)
                inputs = dict(call.arrays)
                ref_out = spec.naive_class.forward(*call.copy().args())
                if self.passes == "fwdbwd":
                    inputs["dout"] = rng.standard_normal(ref_out[0].shape)
                expect = {"out": (ref_out[0].shape, ref_out[0].dtype)}
                expect.update({f"d{k}": (a.shape, a.dtype) for k, a in enumerate(call.arrays.values())})
                expect = {n: expect[n] for n in names}
                order = [("reference", reference), ("student", student)]
                answers = {}
                for side, child in (order if rep % 2 == 0 else order[::-1]):
                    other = student if child is reference else reference
                    other.pause()
                    child.resume()
                    t, answers[side] = child.run(task, inputs, expect, timeout=box.timeout)
                    other.resume()
                    times[side].append(t)
                if times["reference"][-1] is None:
                    raise RuntimeError("the reference timing child failed")
                if times["student"][-1] is None:
                    problem = "your code stopped answering (" + ("timed out" if student.child.returncode is None
                                                                 else "exited") + ")"
                    break
                problem = self._wrong(names, answers, inputs)
                if problem:
                    problem = f"run {rep + 1}: {problem}; timing is scored only for correct answers"
                    break
                if rep + 1 >= EARLY_STOP_RUNS and min(times["student"]) > EARLY_STOP * K * max(times["reference"]):
                    break
            problem = problem or _single_core(student)
        finally:
            student.close()
            reference.close()
        ref = [t for t in times["reference"] if t is not None]
        extra = {"reference_s": [round(t, 5) for t in ref], "K": K, "cpu_s": round(student.cpu, 4),
                 "wall_s": round(student.wall, 4),
                 "student_s": [None if t is None else round(t, 5) for t in times["student"]]}
        if problem:
            return Judgement(False, problem, extra=extra)
        ratio = min(times["student"]) / min(ref)
        extra["ratio"] = ratio
        ok = ratio <= K
        runs = len(times["student"])
        stopped = "" if runs == REPEATS else f", stopped early: over {EARLY_STOP:g}x the limit"
        return Judgement(ok, f"{ratio:.2f}x the reference's time (limit {K:g}x; min of {runs}{stopped}: "
                             f"{min(times['student']) * 1e3:.1f} ms vs {min(ref) * 1e3:.1f} ms)", extra=extra)

    @staticmethod
    def _wrong(names, answers, inputs):
        for n in names:
            got, want = answers["student"].get(n), answers["reference"].get(n)
            if got is None or got.problem or want is None or want.problem:
                return f"the timed answer {n} is missing or malformed"
            c = compare(n, got.value, want.value, scale=scale_of(want.value, *inputs.values()))
            if not c.ok:
                return f"the timed answer {n} differs from the reference's (max error {c.error:.2e})"
        return None


@dataclass(kw_only=True)
class FastSpeedCheck(Check):
    """The grading environment: FastConv forward+backward at least FAST_SPEEDUP times faster than the naive layer."""

    file: str = "fast.py"
    target: str = "environment"
    timing: bool = True
    visibility: str = "hidden"
    points: float = 0

    def run_serial(self, box, rng) -> Judgement:
        spec = LAYERS["Conv"]
        geometry = Geometry(label="16 images, 2 channels, 16x16, 3x3 kernel",
                            dims=dict(x=(16, 2, 16, 16), w=(4, 2, 3, 3), stride=1, pad=1))
        child = box.serve(self.name, files="reference", fast=True)
        times = {"layers": [], "fast": []}
        try:
            for _ in range(3):
                call = spec.call(rng, geometry)
                args = [wire.A(k) for k in call.arrays] + [call.params["conv_param"]]
                inputs = dict(call.arrays, dout=rng.standard_normal((16, 4, 16, 16)))
                expect = {"out": ((16, 4, 16, 16), "float64"), "d0": ((16, 2, 16, 16), "float64"),
                          "d1": ((4, 2, 3, 3), "float64"), "d2": ((4,), "float64")}
                for impl, fn, repeat in (("layers", "layers.Conv", 1), ("fast", "fast.FastConv", FAST_REPEATS)):
                    task = wire.task("fwdbwd", "run", fn=fn, args=args, dout="dout", ngrads=3, repeat=repeat)
                    t, ans = child.run(task, inputs, expect, timeout=box.timeout)
                    if t is None or any(a.problem for a in ans.values()) or len(ans) != 4:
                        raise RuntimeError(f"the timing child failed: {child.output()[1][-500:]}")
                    times[impl].append(t / repeat)
        finally:
            child.close()
        speedup = min(times["layers"]) / min(times["fast"])
        ok = speedup >= FAST_SPEEDUP
        return Judgement(ok, ("" if ok else "ENVIRONMENT: ") + f"FastConv is {speedup:.0f}x faster than the naive "
                         f"reference (needs {FAST_SPEEDUP:g}x)",
                         extra={"speedup": speedup, "naive_s": times["layers"], "fast_s": times["fast"]})
