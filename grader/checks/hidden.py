"""Hidden checks: secret-seed inputs, timing against the reference, the fast path. Not in the student release.

Timing (:class:`TimingCheck`): the student's naive layer and the reference's
run in two identical sibling children (same assembled package layout,
single-threaded BLAS), interleaved run by run on fresh inputs written by the
parent for each run; the idle sibling is stopped (SIGSTOP) while the other is
timed. The time of a run is the parent's wall clock around the request; the
verdict uses the minimum of :data:`REPEATS` runs per side: the student passes
when ``min(student) <= K * min(reference)``. Each timed answer is checked
against the reference child's answer to the same inputs, so a child that
answers early or wrongly fails. A backward by finite differences is
hundreds of times slower than the reference and fails.

Fast path (:class:`FastPathCheck`, :class:`FastSpeedCheck`): ``convnet.fast``
is provided code, not the student's, so these checks validate the grading
environment (a broken build, a missing extension): they are worth 0 points,
visible to staff only, and a failure is printed loudly. They run in a trusted
child (the reference package) like every other computation of that kind.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from grader.checks import (
    A, Case, CallCheck, Check, LayerBackwardRef, LayerForward, ModelLossCheck, Prepared, _decode,
    _optim_case, compare, conv_case, linear_case, pool_case, bn_case, ref_attr, rel_error, relu_case, spaced,
    tiny_three_layer_kwargs, TINY_THREE_LAYER_SHAPES,
)
from grader.engine import Verdict

K = 10.0  # the student's naive layer may take at most K times the reference's time
REPEATS = 5  # runs per side; the minimum is compared
FAST_SPEEDUP = 100.0  # FastConv must be at least this much faster than the naive reference
FAST_REPEATS = 50  # the fast layer runs this many times per timed round trip, so the wire's cost is amortised


def _layer_hidden():
    L = "layers.py"
    out = []

    def pair(layer, case, pts=(2, 2), tol=1e-7, bwd="backward", **kw):
        out.append(LayerForward(f"{layer}.forward (secret inputs)", L, f"layers.{layer}", pts[0], "hidden",
                                "secret", tol, case=case, **kw))
        out.append(LayerBackwardRef(f"{layer}.{bwd} vs reference (secret inputs)", L, f"layers.{layer}", pts[1],
                                    "hidden", "secret", tol, case=case, bwd=bwd, **kw))

    pair("Linear", linear_case((4, 3, 2), 6), pts=(1, 1))
    pair("ReLU", relu_case((5, 7)), pts=(1, 1))
    pair("Conv", conv_case((2, 3, 7, 6), (4, 3, 3, 2), 2, 1), pts=(3, 3))
    out.append(LayerForward("Conv.forward float32 keeps dtype (secret inputs)", L, "layers.Conv", 1, "hidden",
                            "secret", 1e-5, case=_f32(conv_case((2, 2, 5, 5), (3, 2, 3, 3), 1, 0))))
    pair("MaxPool", pool_case((2, 2, 7, 7), 3, 2, 2, pad=1), pts=(2, 2))
    pair("AvgPool", pool_case((2, 2, 7, 7), 3, 2, 2, pad=1), pts=(2, 2))
    pair("BatchNorm", bn_case((7, 5)), pts=(1, 2))
    out.append(LayerBackwardRef("BatchNorm.backward_alt vs reference (secret inputs)", L, "layers.BatchNorm", 1,
                                "hidden", "secret", 1e-7, case=bn_case((6, 4)), bwd="backward_alt"))
    out.append(LayerForward("BatchNorm.forward test mode (secret inputs)", L, "layers.BatchNorm", 1, "hidden",
                            "secret", 1e-7, case=bn_case((5, 4), mode="test")))
    out.append(CallCheck("BatchNorm running statistics (secret inputs)", L, "layers.BatchNorm.forward", 2,
                         "hidden", "secret", 1e-7, case=_bn_running((9, 4)), outs={},
                         mutated={"running_mean": (3, "running_mean"), "running_var": (3, "running_var")},
                         group="layers.BatchNorm"))
    pair("SpatialBatchNorm", bn_case((2, 3, 3, 4)), pts=(1, 2))
    return out


def _f32(make):
    def f(rng):
        case = make(rng)
        case.arrays = {k: v.astype(np.float32) for k, v in case.arrays.items()}
        return case
    return f


def _bn_running(shape):
    def make(rng):
        D = shape[1]
        arrays = {"x": rng.standard_normal(shape) * 3 - 1, "gamma": rng.standard_normal(D),
                  "beta": rng.standard_normal(D), "rm": rng.standard_normal(D), "rv": rng.random(D) + 0.5}
        bn = {"mode": "train", "eps": 1e-5, "momentum": 0.8, "running_mean": A("rm"), "running_var": A("rv")}
        return Case(arrays, [A("x"), A("gamma"), A("beta"), bn])
    return make


def _sandwich_hidden():
    S = "sandwich.py"
    out = []
    pool = {"pool_height": 2, "pool_width": 2, "stride": 2}
    bn = {"mode": "train", "eps": 1e-5, "momentum": 0.9}

    def conv_arrays(r, F=3):
        return {"x": r.standard_normal((2, 2, 6, 6)), "w": r.standard_normal((F, 2, 3, 3)) * 0.5,
                "b": r.standard_normal(F)}

    cases = {
        "Linear_ReLU": lambda r: Case({"x": r.standard_normal((4, 2, 3)), "w": r.standard_normal((6, 5)),
                                       "b": r.standard_normal(5)}, [A("x"), A("w"), A("b")], (0, 1, 2)),
        "Conv_ReLU": lambda r: Case(conv_arrays(r), [A("x"), A("w"), A("b"), {"stride": 1, "pad": 1}], (0, 1, 2)),
        "Conv_ReLU_Pool": lambda r: Case(conv_arrays(r), [A("x"), A("w"), A("b"), {"stride": 1, "pad": 1}, pool],
                                         (0, 1, 2)),
        "Linear_BatchNorm_ReLU": lambda r: Case(
            {"x": r.standard_normal((6, 4)), "w": r.standard_normal((4, 5)), "b": r.standard_normal(5),
             "gamma": r.standard_normal(5), "beta": r.standard_normal(5)},
            [A("x"), A("w"), A("b"), A("gamma"), A("beta"), bn], (0, 1, 2, 3, 4)),
        "Conv_BatchNorm_ReLU": lambda r: Case(
            {**conv_arrays(r), "gamma": r.standard_normal(3), "beta": r.standard_normal(3)},
            [A("x"), A("w"), A("b"), A("gamma"), A("beta"), {"stride": 1, "pad": 1}, bn], (0, 1, 2, 3, 4)),
        "Conv_BatchNorm_ReLU_Pool": lambda r: Case(
            {**conv_arrays(r), "gamma": r.standard_normal(3), "beta": r.standard_normal(3)},
            [A("x"), A("w"), A("b"), A("gamma"), A("beta"), {"stride": 1, "pad": 1}, bn, pool], (0, 1, 2, 3, 4)),
    }
    for name, case in cases.items():
        out.append(LayerBackwardRef(f"{name} forward+backward vs reference (secret inputs)", S, f"sandwich.{name}",
                                    1, "hidden", "secret", 1e-7, case=case, fast=True, group="sandwich"))
    return out


def _deep_kwargs(batchnorm):
    return {"input_dims": {"$tuple": [3, 8, 8]}, "num_filters": [4, 4], "max_pools": [0, 1], "batchnorm": batchnorm,
            "num_classes": 5, "weight_scale": 1e-2, "reg": 0.05, "dtype": {"$dtype": "float64"}}


@dataclass
class OverfitCheck(Check):
    """Train the student's model on a small batch (plain SGD in the child); the parent scores the parameters."""

    kwargs: dict = field(default_factory=dict)
    N: int = 10
    steps: int = 100
    lr: float = 0.1
    threshold: float = 0.9

    def prepare(self, rng, p):
        C, Hh, Ww = _decode(self.kwargs["input_dims"], {})
        X = rng.standard_normal((self.N, C, Hh, Ww))
        y = rng.integers(0, self.kwargs["num_classes"], self.N)
        kwargs = dict(self.kwargs, seed=int(rng.integers(0, 2**31)))
        keys = sorted(TINY_THREE_LAYER_SHAPES)
        tid = p + "fit"
        task = {"op": "overfit", "id": tid, "cls": self.target, "kwargs": kwargs, "X": A(p + "X"),
                "y": A(p + "y"), "steps": self.steps, "lr": self.lr, "keys": keys}
        return Prepared([task], {p + "X": X, p + "y": y}, {tid: [f"p:{k}" for k in keys]},
                        {"X": X, "y": y, "keys": keys})

    def shapes(self, state, expected):
        return {f"p:{k}": (s, np.float64) for k, s in TINY_THREE_LAYER_SHAPES.items()}

    def judge(self, answers, state, expected):
        model = ref_attr(self.target)(**_decode(self.kwargs, {}))
        for k in state["keys"]:
            model.params[k] = answers[f"p:{k}"]
        acc = float(np.mean(np.argmax(model.loss(state["X"]), axis=1) == state["y"]))
        return acc >= self.threshold, f"training accuracy {acc:.2f} after {self.steps} SGD steps " \
                                      f"(needs {self.threshold})", {"train_accuracy": acc}


@dataclass
class SolverCheck(Check):
    """The student's Solver trains the student's model: history length and the trained model's accuracy."""

    def prepare(self, rng, p):
        kwargs = tiny_three_layer_kwargs()
        N = 20
        X = rng.standard_normal((N, 3, 8, 8))
        y = rng.integers(0, 5, N)
        keys = sorted(TINY_THREE_LAYER_SHAPES)
        data = {"X_train": A(p + "X"), "y_train": A(p + "y"), "X_val": A(p + "X"), "y_val": A(p + "y")}
        skw = {"update_rule": "adam", "optim_config": {"learning_rate": 1e-2}, "batch_size": 10, "num_epochs": 25,
               "verbose": False, "seed": int(rng.integers(0, 2**31))}
        tid = p + "solver"
        task = {"op": "solver", "id": tid, "cls": self.target, "kwargs": dict(kwargs, weight_scale=0.1, seed=1),
                "data": data,
                "solver_kwargs": skw, "keys": keys}
        return Prepared([task], {p + "X": X, p + "y": y}, {tid: ["loss_history"] + [f"p:{k}" for k in keys]},
                        {"X": X, "y": y, "keys": keys, "iters": 25 * (N // 10)})

    def shapes(self, state, expected):
        s = {f"p:{k}": (v, np.float64) for k, v in TINY_THREE_LAYER_SHAPES.items()}
        s["loss_history"] = ((state["iters"],), np.float64)
        return s

    def judge(self, answers, state, expected):
        model = ref_attr("models.ThreeLayerConvNet")(**_decode(tiny_three_layer_kwargs(), {}))
        for k in state["keys"]:
            model.params[k] = answers[f"p:{k}"]
        acc = float(np.mean(np.argmax(model.loss(state["X"]), axis=1) == state["y"]))
        hist = answers["loss_history"]
        falling = hist[-5:].mean() < 0.7 * hist[:5].mean()
        return acc >= 0.7 and falling, f"{state['iters']} iterations, training accuracy {acc:.2f} (needs 0.7), " \
            f"loss {hist[:5].mean():.3f} -> {hist[-5:].mean():.3f}", {"train_accuracy": acc}


def _model_hidden():
    M = "models.py"
    three = tiny_three_layer_kwargs()
    three_reg = dict(three, reg=0.1)
    out = [
        ModelLossCheck("ThreeLayerConvNet loss and gradients vs reference (secret inputs)", M,
                       "models.ThreeLayerConvNet", 3, "hidden", "secret", 1e-6, kwargs=three_reg,
                       pshapes=TINY_THREE_LAYER_SHAPES, fast=True, group="models"),
        OverfitCheck("ThreeLayerConvNet overfits a small batch (secret inputs)", M, "models.ThreeLayerConvNet", 2,
                     "hidden", "secret", kwargs=dict(three, weight_scale=0.1), fast=True, group="models"),
    ]
    for bnorm in (False, True):
        tag = " with batch norm" if bnorm else ""
        out.append(ModelLossCheck(f"DeepConvNet{tag} loss and gradients vs reference (secret inputs)", M,
                                  "models.DeepConvNet", 2, "hidden", "secret", 1e-6, kwargs=_deep_kwargs(bnorm),
                                  fast=True, group="models"))
    out.append(CallCheck("kaiming_initializer shape and scale", M, "models.kaiming_initializer", 1, "hidden",
                         "public", case=lambda r: Case({}, [400, 300]), outs={"w": []}, fast=True, group="models"))
    out[-1].judge = _kaiming_judge
    out[-1].expected = lambda state: {}
    out[-1].shapes = lambda state, expected: {"w": ((400, 300), np.float32)}
    out.append(SolverCheck("Solver trains ThreeLayerConvNet (secret inputs)", "solver.py", "models.ThreeLayerConvNet",
                           2, "hidden", "secret", fast=True, group="solver", tags=("solver",)))
    O = "optim.py"
    for rule, state in (("sgd", ()), ("sgd_momentum", ("velocity",)), ("rmsprop", ("cache",)), ("adam", ("m", "v"))):
        out.append(CallCheck(f"optim.{rule} (secret inputs)", O, f"optim.{rule}", 1, "hidden", "secret",
                             case=_optim_case(rule, state), outs={"next_w": [0]},
                             mutated={k: (2, k) for k in state}, fast=True, group="optim"))
    return out


def _kaiming_judge(answers, state, expected):
    w = answers["w"]
    std, want = float(w.std()), math.sqrt(2 / 400)
    ok = abs(std - want) < 0.05 * want and abs(float(w.mean())) < 0.05 * want
    return ok, f"std {std:.4f}, expected sqrt(2/Din) = {want:.4f}", {"std": std}


# ---------------------------------------------------------------- timing


TIMED = {
    "Conv.forward": ("layers.Conv", "fwd", lambda r: [r.standard_normal((4, 3, 16, 16)), r.standard_normal((8, 3, 3, 3)),
                                                      r.standard_normal(8)], {"stride": 1, "pad": 1}, 3),
    "Conv.forward+backward": ("layers.Conv", "fwdbwd",
                              lambda r: [r.standard_normal((2, 3, 12, 12)), r.standard_normal((6, 3, 3, 3)),
                                         r.standard_normal(6)], {"stride": 1, "pad": 1}, 3),
    "MaxPool.forward+backward": ("layers.MaxPool", "fwdbwd", lambda r: [spaced(r, (4, 8, 16, 16))],
                                 {"pool_height": 2, "pool_width": 2, "stride": 2}, 1),
    "AvgPool.forward+backward": ("layers.AvgPool", "fwdbwd", lambda r: [r.standard_normal((4, 8, 16, 16))],
                                 {"pool_height": 2, "pool_width": 2, "stride": 2}, 1),
}


def _timed_task(target, kind, n_arrays, param, ngrads):
    args = [A(f"a{i}") for i in range(n_arrays)] + [param]
    if kind == "fwd":
        return {"op": "call", "fn": target + ".forward", "args": args, "outs": {"out": [0]}}, ["out"]
    return ({"op": "fwdbwd", "fn": target, "args": args, "dout": "dout", "ngrads": ngrads},
            ["out"] + [f"d{k}" for k in range(ngrads)])


@dataclass
class TimingCheck(Check):
    """The student's naive layer takes at most K times the reference's time (interleaved sibling children)."""

    serial: bool = True
    key: str = ""

    def run_serial(self, box, seed):
        target, kind, make, param, ngrads = TIMED[self.key]
        rng = self.rng(seed)
        n_arrays = len(make(np.random.default_rng(0)))
        task, names = _timed_task(target, kind, n_arrays, param, ngrads)
        student = box.serve(self.name, [task], fast=False, trusted=False)
        reference = box.serve(self.name + "-ref", [task], fast=False, trusted=True)
        times = {"student": [], "reference": []}
        message = ""
        try:
            if not reference.alive:
                raise RuntimeError("the reference timing child did not start")
            ref_layer = ref_attr(target)
            for rep in range(REPEATS):
                arrays = make(rng)
                inputs = {f"a{i}": a for i, a in enumerate(arrays)}
                if kind == "fwdbwd":
                    out = ref_layer.forward(*arrays, param)[0]
                    inputs["dout"] = rng.standard_normal(out.shape)
                order = (("reference", reference), ("student", student)) if rep % 2 == 0 else \
                    (("student", student), ("reference", reference))
                answers = {}
                for side, child in order:
                    other = student if child is reference else reference
                    other.pause()
                    child.resume()
                    t, answers[side] = child.run(0, inputs, names, timeout=box.timeout)
                    other.resume()
                    times[side].append(t)
                if times["reference"][-1] is None:
                    raise RuntimeError("the reference timing child failed")
                if times["student"][-1] is None:
                    message = "the student's child stopped answering (" + \
                              ("timed out" if student.proc.poll() is None else "exited") + ")"
                    break
                for n in names:
                    got, want = answers["student"].get(n), answers["reference"].get(n)
                    if not isinstance(got, np.ndarray) or not isinstance(want, np.ndarray) or \
                            got.shape != want.shape or not np.all(np.isfinite(got)) or rel_error(got, want) > 1e-6:
                        message = f"run {rep + 1}: the timed answer {n} is wrong or missing"
                        break
                if message:
                    break
        finally:
            student.close()
            reference.close()
        ref_min = min(t for t in times["reference"] if t is not None)
        extra = {"reference_s": [round(t, 5) for t in times["reference"] if t is not None],
                 "student_s": [round(t, 5) if t is not None else None for t in times["student"]], "K": K}
        if message:
            return Verdict(self.name, self.points, 0.0, message, visibility=self.visibility, tags=self.tags,
                           extra=extra, ok=False)
        st_min = min(times["student"])
        ratio = st_min / ref_min
        extra["ratio"] = ratio
        ok = ratio <= K
        return Verdict(self.name, self.points, self.points if ok else 0.0,
                       f"{ratio:.2f}x the reference's time (limit {K:g}x; min of {REPEATS}: "
                       f"{st_min * 1e3:.1f} ms vs {ref_min * 1e3:.1f} ms)", visibility=self.visibility,
                       tags=self.tags, extra=extra, ok=ok)


def _timing_checks():
    return [TimingCheck(f"{key} time within {K:g}x the reference", "layers.py", TIMED[key][0], 1, "hidden",
                        "secret", tags=("layers", "timing"), key=key) for key in TIMED]


# ---------------------------------------------------------------- the fast path (environment)


def _fast_cases():
    return {
        "FastConv": (conv_case((2, 3, 8, 7), (4, 3, 3, 2), 2, 1), "Conv"),
        "FastMaxPool": (pool_case((2, 3, 7, 7), 3, 2, 2, pad=1), "MaxPool"),
        "FastAvgPool": (pool_case((2, 3, 7, 7), 3, 2, 2, pad=1), "AvgPool"),
    }


@dataclass
class FastPathCheck(Check):
    """convnet.fast's layer (in a trusted child) against the naive reference and finite differences."""

    case: object = None
    naive: str = ""

    def prepare(self, rng, p):
        inner = LayerBackwardRef(self.name, self.file, self.target, 0, case=self.case)
        inner.out_of = lambda args: ref_attr(f"layers.{self.naive}.forward")(*args)[0]
        prep = inner.prepare(rng, p)
        prep.state["inner"] = inner
        return prep

    def expected(self, state):
        args = _decode(state["args"], state["arrays"])
        naive = ref_attr(f"layers.{self.naive}")
        out, cache = naive.forward(*args)
        dout = state["arrays"][state["p"] + "dout"]
        grads = naive.backward(dout, cache)
        grads = (grads,) if state["n"] == 1 else grads
        exp = {"out": out, **{f"d{k}": g for k, g in enumerate(grads)}}
        # finite differences of the naive reference for the first argument (tiny inputs)
        x = args[0]
        num = np.zeros_like(x)
        flat, nflat = x.reshape(-1), num.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + 1e-6
            plus = naive.forward(*args)[0]
            flat[i] = old - 1e-6
            minus = naive.forward(*args)[0]
            flat[i] = old
            nflat[i] = np.sum((plus - minus) * dout) / 2e-6
        state["numeric"] = num
        return exp

    def judge(self, answers, state, expected):
        errs = {}
        for name in expected:
            ok, msg, err = compare(name, answers[name], expected[name], 1e-7)
            errs[name] = err
            if not ok:
                return False, "ENVIRONMENT: " + msg, {"rel_errors": errs}
        ok, msg, err = compare("dx vs finite differences", answers["d0"], state["numeric"], 1e-6)
        errs["fd"] = err
        if not ok:
            return False, "ENVIRONMENT: " + msg, {"rel_errors": errs}
        return True, f"matches the naive reference (max relative error {max(errs.values()):.1e})", \
            {"rel_errors": errs}


@dataclass
class FastSpeedCheck(Check):
    """FastConv forward+backward at least FAST_SPEEDUP times faster than the naive reference (trusted child)."""

    serial: bool = True

    def run_serial(self, box, seed):
        rng = self.rng(seed)
        param = {"stride": 1, "pad": 1}
        tasks = [{"op": "fwdbwd", "fn": "layers.Conv", "args": [A("x"), A("w"), A("b"), param], "dout": "dout",
                  "ngrads": 3},
                 {"op": "fwdbwd", "fn": "fast.FastConv", "args": [A("x"), A("w"), A("b"), param], "dout": "dout",
                  "ngrads": 3, "repeat": FAST_REPEATS}]
        child = box.serve(self.name, tasks, fast=True, trusted=True)
        names = ["out", "d0", "d1", "d2"]
        times = {0: [], 1: []}
        try:
            for rep in range(3):
                # mid-size, few channels: where im2col + GEMM gains most over the per-position Python loop
                x, w = rng.standard_normal((16, 2, 16, 16)), rng.standard_normal((4, 2, 3, 3))
                inputs = {"x": x, "w": w, "b": rng.standard_normal(4), "dout": rng.standard_normal((16, 4, 16, 16))}
                for task in (0, 1):
                    t, ans = child.run(task, inputs, names, timeout=box.timeout)
                    if t is None or not isinstance(ans.get("d1"), np.ndarray):
                        raise RuntimeError(f"the timing child failed: {child.output()[1][-500:]}")
                    times[task].append(t)
        finally:
            child.close()
        speedup = min(times[0]) / (min(times[1]) / FAST_REPEATS)
        ok = speedup >= FAST_SPEEDUP
        return Verdict(self.name, self.points, self.points if ok else 0.0,
                       ("" if ok else "ENVIRONMENT: ") + f"FastConv is {speedup:.0f}x faster than the naive "
                       f"reference (needs {FAST_SPEEDUP:g}x)", visibility=self.visibility, tags=self.tags,
                       extra={"speedup": speedup, "naive_s": times[0], "fast_s": times[1]}, ok=ok)


def _fast_checks():
    out = []
    for name, (case, naive) in _fast_cases().items():
        c = FastPathCheck(f"environment: {name} vs naive reference and finite differences", "fast.py",
                          f"fast.{name}", 0, "hidden", "secret", case=case, naive=naive, fast=True,
                          group="environment", tags=("environment", "fast"))
        out.append(c)
    out.append(FastSpeedCheck(f"environment: FastConv at least {FAST_SPEEDUP:g}x faster than naive", "fast.py",
                              "fast.FastConv", 0, "hidden", "secret", fast=True, tags=("environment", "fast",
                                                                                        "timing")))
    return out


CHECKS = _layer_hidden() + _sandwich_hidden() + _model_hidden() + _timing_checks() + _fast_checks()
