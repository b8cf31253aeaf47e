"""Checks of ``models.py``: initialisation, Kaiming, loss and gradients, overfitting; and the one end-to-end check.

Model checks run the student's ``models.py`` on layers served by the
grader's reference (``files="served"``), so a layer bug is charged to the
layer's checks, not to every model. The end-to-end check trains the
student's model with the student's own layers, optimizer and Solver.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from grader.checks.base import Check, Judgement, Prepared
from grader.compare import compare, scale_of
from grader.sandbox import wire

__all__ = ["ModelInit", "ModelLoss", "ModelOverfit", "KaimingCheck", "EndToEnd", "model_kwargs"]


def model_kwargs(**kw) -> dict:
    """Constructor arguments as wire specs (tuples and dtypes encoded)."""
    out = {}
    for k, v in kw.items():
        if k == "input_dims":
            v = {"$tuple": list(v)}
        elif k == "dtype":
            v = {"$dtype": np.dtype(v).name}
        out[k] = v
    return out


def _reference_model(cls: str, kwargs: dict):
    from convnet.specs import resolve

    return resolve(f"models.{cls}")(**wire.decode(kwargs, {}))


def _kwargs_code(kwargs: dict) -> str:
    """Constructor arguments as Python source."""
    parts = []
    for k, v in kwargs.items():
        if isinstance(v, dict) and "$tuple" in v:
            v = tuple(v["$tuple"])
        elif isinstance(v, dict) and "$dtype" in v:
            parts.append(f"{k}=np.{v['$dtype']}")
            continue
        parts.append(f"{k}={v!r}")
    return ", ".join(parts)


def _input_shape(kwargs: dict) -> tuple:
    if "input_dims" in kwargs:
        return tuple(kwargs["input_dims"]["$tuple"])
    return (kwargs["input_dim"],)


@dataclass(kw_only=True)
class _ModelCheck(Check):
    cls: str
    kwargs: dict
    file: str = "models.py"
    files: str = "served"
    fast: bool = True
    group: str = "models"

    def param_shapes(self) -> dict:
        """``{key: shape}`` of the model's parameters: the reference's, or in a release the shipped ones."""
        try:
            return {k: v.shape for k, v in _reference_model(self.cls, self.kwargs).params.items()}
        except NotImplementedError:
            from grader.checks.public import shipped_shapes

            return shipped_shapes(self.name)

    def describe(self, prep):
        shown = {k: (tuple(v["$tuple"]) if isinstance(v, dict) and "$tuple" in v else
                     v["$dtype"] if isinstance(v, dict) and "$dtype" in v else v) for k, v in self.kwargs.items()}
        return f"{self.cls}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


@dataclass(kw_only=True)
class ModelInit(_ModelCheck):
    """Parameter names and shapes, zero biases (and betas), unit gammas, weights' std close to weight_scale."""

    def prepare(self, rng, prefix):
        kwargs = dict(self.kwargs, seed=int(rng.integers(0, 2**31)))
        keys = sorted(self.param_shapes())
        tid = prefix + "init"
        return Prepared([wire.task("model_init", tid, cls=f"models.{self.cls}", kwargs=kwargs, keys=keys)], {},
                        {tid: [f"p:{k}" for k in keys]}, {"keys": keys})

    def expected(self, prep):
        model = _reference_model(self.cls, self.kwargs)
        return {f"init.p:{k}": v for k, v in model.params.items()}

    def snippet(self, prep, expected):
        return ["from grader.checks.base import seed_of", "",
                f"rng = np.random.default_rng(seed_of({self.name!r}))",
                "seed = int(rng.integers(0, 2**31))",
                f"from convnet.models import {self.cls}",
                f"model = {self.cls}({_kwargs_code({k: v for k, v in self.kwargs.items() if k != 'seed'})}, "
                f"seed=seed)",
                "for key, value in sorted(model.params.items()):",
                "    print(key, value.shape, 'std %.4g' % value.std(), 'mean %.3g' % value.mean())",
                f"# expected: weights with standard deviation weight_scale = {self.kwargs.get('weight_scale')}, "
                f"biases and betas 0, gammas 1, shapes {({k: tuple(v.shape) for k, v in expected.items()})!r}"]

    def judge(self, answers, prep, expected):
        problems, stds = [], {}
        scale = self.kwargs.get("weight_scale", 1e-3)
        for k in prep.state["keys"]:
            a = answers.get("init", f"p:{k}")
            if a is None:
                problems.append(f"{k}: {answers.problem('init', f'p:{k}')}")
            elif k.startswith(("b", "beta")):
                if np.any(a != 0):
                    problems.append(f"{k} should start at zero (max |{k}| = {np.max(np.abs(a)):.3g})")
            elif k.startswith("gamma"):
                if np.any(a != 1):
                    problems.append(f"{k} should start at one")
            else:
                stds[k] = s = float(a.std())
                # Sampling spread of a std estimate over a.size draws, with a wide margin.
                if abs(s - scale) > max(0.1 * scale, 6 * scale / math.sqrt(2 * a.size)):
                    problems.append(f"{k} has standard deviation {s:.3g}; weights should be drawn with "
                                    f"standard deviation weight_scale = {scale}")
        ok = not problems
        return Judgement(ok, "shapes and scales right" if ok else "initialisation differs", problems=problems,
                         extra={"std": stds})


@dataclass(kw_only=True)
class ModelLoss(_ModelCheck):
    """Loss and every gradient for given parameters against the reference model; or the initial loss ~ log(C)."""

    N: int = 6
    initial: bool = False
    scores: bool = False  # also compare the scores of test mode (y=None)

    def prepare(self, rng, prefix):
        shapes = self.param_shapes()
        num_classes = self.kwargs["num_classes"]
        X = rng.standard_normal((self.N, *_input_shape(self.kwargs)))
        y = rng.integers(0, num_classes, self.N)
        inputs = {prefix + "X": X, prefix + "y": y}
        params = {}
        for k, shape in sorted(shapes.items()):
            if k.startswith("gamma"):
                v = 1 + 0.1 * rng.standard_normal(shape)
            else:
                v = rng.standard_normal(shape) * (1e-3 if self.initial else 0.3)
            params[k] = v
            inputs[prefix + "p:" + k] = v
        keys = sorted(shapes)
        common = dict(cls=f"models.{self.cls}", kwargs=self.kwargs, keys=[] if self.initial else keys,
                      X=wire.A(prefix + "X"), params={k: prefix + "p:" + k for k in keys})
        tasks = [wire.task("model_loss", prefix + "loss", y=wire.A(prefix + "y"), **common)]
        expect = {prefix + "loss": ["loss"] + ([] if self.initial else [f"g:{k}" for k in keys])}
        if self.scores:
            tasks.append(wire.task("model_loss", prefix + "scores", y=None, **common))
            expect[prefix + "scores"] = ["scores"]
        return Prepared(tasks, inputs, expect, {"params": params, "X": X, "y": y, "keys": keys, "C": num_classes})

    def snippet(self, prep, expected):
        from grader.explain import literal

        shapes = self.param_shapes()
        lines = ["from grader.checks.base import seed_of", "",
                 f"rng = np.random.default_rng(seed_of({self.name!r}))",
                 f"X = rng.standard_normal(({self.N}, *{_input_shape(self.kwargs)!r}))",
                 f"y = rng.integers(0, {self.kwargs['num_classes']}, {self.N})",
                 f"from convnet.models import {self.cls}",
                 f"model = {self.cls}({_kwargs_code(self.kwargs)})"]
        for k in sorted(shapes):
            if k.startswith("gamma"):
                lines.append(f"model.params[{k!r}] = 1 + 0.1 * rng.standard_normal({shapes[k]!r})")
            else:
                lines.append(f"model.params[{k!r}] = rng.standard_normal({shapes[k]!r}) * "
                             f"{1e-3 if self.initial else 0.3}")
        if self.scores:
            lines.append("scores = model.loss(X)")
        if self.initial:
            return lines + ["loss, grads = model.loss(X, y)",
                            f'print("loss", loss, "expected about log({self.kwargs["num_classes"]}) =", '
                            f'np.log({self.kwargs["num_classes"]}))']
        lines += ["loss, grads = model.loss(X, y)", literal("expected_loss", expected["loss.loss"]),
                  'print("loss error:", abs(loss - expected_loss))']
        for k in sorted(shapes):
            lines.append(literal(f"expected_grad_{k}", expected[f"loss.g:{k}"]))
            lines.append(f'print("grads[{k!r}] max error:", np.max(np.abs(grads[{k!r}] - expected_grad_{k})))')
        return lines

    def expected(self, prep):
        if self.initial:
            return {"loss.loss": np.array(math.log(prep.state["C"]))}
        model = _reference_model(self.cls, self.kwargs)
        for k, v in prep.state["params"].items():
            model.params[k] = v.copy()
        exp = {}
        if self.scores:
            exp["scores.scores"] = model.loss(prep.state["X"].copy())
        loss, grads = model.loss(prep.state["X"].copy(), prep.state["y"].copy())
        exp["loss.loss"] = np.array(loss, dtype=np.float64)
        exp.update({f"loss.g:{k}": g for k, g in grads.items()})
        return exp

    def judge(self, answers, prep, expected):
        loss = answers.get("loss", "loss")
        if self.initial:
            if loss is None:
                return Judgement(False, "no loss", problems=[f"loss: {answers.problem('loss', 'loss')}"])
            want = float(expected["loss.loss"])
            ok = abs(float(loss) - want) < 0.05
            return Judgement(ok, f"initial loss {float(loss):.4f}, expected about log({prep.state['C']}) = "
                                 f"{want:.4f} with tiny weights", extra={"loss": float(loss)})
        problems, comparisons = [], []
        data_scale = scale_of(prep.state["X"], *prep.state["params"].values())
        names = [("loss", "loss", "loss")] + [("loss", f"g:{k}", f"grads[{k!r}]") for k in prep.state["keys"]]
        if self.scores:
            names.insert(0, ("scores", "scores", "scores (test mode)"))
        for task, name, label in names:
            got = answers.get(task, name)
            if got is None:
                problems.append(f"{label}: {answers.problem(task, name)}")
                continue
            want = expected[f"{task}.{name}"]
            comparisons.append(compare(label, got, want, scale=scale_of(want, data_scale), dtype="float64"))
        ok = not problems and all(c.ok for c in comparisons)
        failing = [c.name for c in comparisons if not c.ok] + [p.split(":")[0] for p in problems]
        return Judgement(ok, "loss and gradients match" if ok else "differs: " + ", ".join(failing), comparisons,
                         problems, extra={"rel_errors": {c.name: c.relative for c in comparisons}})


@dataclass(kw_only=True)
class ModelOverfit(_ModelCheck):
    """Plain SGD (the runner's loop, the student's loss) on a small batch; the parent scores the parameters."""

    N: int = 10
    steps: int = 150
    lr: float = 0.1
    # The reference fits all 10 (every one of 2000 seeds, on hidden.TRAINING's network).
    threshold: float = 0.6

    def prepare(self, rng, prefix):
        X = rng.standard_normal((self.N, *_input_shape(self.kwargs)))
        y = rng.integers(0, self.kwargs["num_classes"], self.N)
        keys = sorted(self.param_shapes())
        kwargs = dict(self.kwargs, seed=int(rng.integers(0, 2**31)))
        tid = prefix + "fit"
        task = wire.task("overfit", tid, cls=f"models.{self.cls}", kwargs=kwargs, keys=keys, X=wire.A(prefix + "X"),
                         y=wire.A(prefix + "y"), steps=self.steps, lr=self.lr)
        return Prepared([task], {prefix + "X": X, prefix + "y": y}, {tid: [f"p:{k}" for k in keys]},
                        {"X": X, "y": y, "keys": keys})

    def expected(self, prep):
        return {f"fit.p:{k}": v for k, v in _reference_model(self.cls, self.kwargs).params.items()}

    def judge(self, answers, prep, expected):
        model = _reference_model(self.cls, self.kwargs)
        problems = [f"{k}: {v}" for k, v in answers.problems.items()]
        if problems:
            return Judgement(False, "missing parameters", problems=problems)
        for k in prep.state["keys"]:
            model.params[k] = answers.get("fit", f"p:{k}")
        acc = float(np.mean(np.argmax(model.loss(prep.state["X"]), axis=1) == prep.state["y"]))
        ok = acc >= self.threshold
        return Judgement(ok, f"training accuracy {acc:.2f} after {self.steps} SGD steps (needs {self.threshold})",
                         extra={"train_accuracy": acc})


@dataclass(kw_only=True)
class KaimingCheck(Check):
    """kaiming_initializer: shape, dtype, mean ~ 0 and std ~ sqrt(gain / fan_in) with fan_in = Din (* K * K)."""

    Din: int
    Dout: int
    K: int | None = None
    relu: bool = True
    dtype: str = "float32"
    file: str = "models.py"
    target: str = "kaiming_initializer"
    group: str = "models"
    files: str = "served"
    fast: bool = True

    def prepare(self, rng, prefix):
        tid = prefix + "w"
        kwargs = {"K": self.K, "relu": self.relu, "dtype": {"$dtype": self.dtype},
                  "rng": {"$rng": int(rng.integers(0, 2**31))}}
        task = wire.task("call", tid, fn="models.kaiming_initializer", args=[self.Din, self.Dout], kwargs=kwargs,
                         outs={"w": []})
        shape = (self.Din, self.Dout) if self.K is None else (self.Dout, self.Din, self.K, self.K)
        return Prepared([task], {}, {tid: ["w"]}, {"shape": shape})

    def shapes(self, prep, expected):
        return {"w.w": (prep.state["shape"], np.dtype(self.dtype))}

    def snippet(self, prep, expected):
        fan_in = self.Din * (self.K or 1) ** 2
        return ["from grader.checks.base import seed_of", "from convnet.models import kaiming_initializer", "",
                f"rng = np.random.default_rng(seed_of({self.name!r}))",
                "seed = int(rng.integers(0, 2**31))",
                f"w = kaiming_initializer({self.Din}, {self.Dout}, K={self.K}, relu={self.relu}, "
                f"dtype=np.{self.dtype}, rng=np.random.default_rng(seed))",
                f"print(w.shape, w.dtype, 'std', w.std(), 'expected', "
                f"np.sqrt({2.0 if self.relu else 1.0} / {fan_in}))"]

    def describe(self, prep):
        return f"kaiming_initializer({self.Din}, {self.Dout}, K={self.K}, relu={self.relu}, dtype={self.dtype})"

    def judge(self, answers, prep, expected):
        w = answers.get("w", "w")
        if w is None:
            return Judgement(False, "no weights", problems=[f"weight: {answers.problem('w', 'w')}"])
        fan_in = self.Din * (self.K or 1) ** 2
        want = math.sqrt((2.0 if self.relu else 1.0) / fan_in)
        std, mean = float(w.std()), float(w.mean())
        margin = 6 / math.sqrt(w.size)
        problems = []
        if abs(std - want) > max(0.03, 2 * margin) * want:
            problems.append(f"standard deviation {std:.4g}, expected sqrt({'2' if self.relu else '1'} / fan_in) = "
                            f"{want:.4g} with fan_in = {fan_in}" + (" = Din * K * K" if self.K else " = Din"))
        if abs(mean) > 2 * margin * want:
            problems.append(f"mean {mean:.3g}, expected about 0")
        ok = not problems
        return Judgement(ok, f"std {std:.4g} (expected {want:.4g})", problems=problems,
                         extra={"std": std, "expected_std": want})


@dataclass(kw_only=True)
class EndToEnd(Check):
    """The student's Solver trains the student's model with the student's layers and optimizer."""

    file: str = "solver.py"
    target: str = "end-to-end"
    files: str = "student"
    fast: bool = True
    group: str = "end-to-end"
    cls: str = "ThreeLayerConvNet"
    kwargs: dict = field(default_factory=dict)
    # On hidden.TRAINING's network the reference fits all 20 random labels by epoch 14 (worst of 1000 seeds).
    epochs: int = 80
    threshold: float = 0.5

    def prepare(self, rng, prefix):
        N = 20
        X = rng.standard_normal((N, *_input_shape(self.kwargs)))
        y = rng.integers(0, self.kwargs["num_classes"], N)
        keys = sorted(_reference_model(self.cls, self.kwargs).params)
        data = {"X_train": wire.A(prefix + "X"), "y_train": wire.A(prefix + "y"), "X_val": wire.A(prefix + "X"),
                "y_val": wire.A(prefix + "y")}
        skw = {"update_rule": "adam", "optim_config": {"learning_rate": 1e-2}, "batch_size": 10,
               "num_epochs": self.epochs, "verbose": False, "seed": int(rng.integers(0, 2**31))}
        tid = prefix + "solver"
        task = wire.task("solver", tid, cls=f"models.{self.cls}", kwargs=dict(self.kwargs, seed=1), keys=keys,
                         data=data, solver_kwargs=skw)
        return Prepared([task], {prefix + "X": X, prefix + "y": y},
                        {tid: ["loss_history"] + [f"p:{k}" for k in keys]},
                        {"X": X, "y": y, "keys": keys, "iters": self.epochs * (N // 10)})

    def expected(self, prep):
        model = _reference_model(self.cls, self.kwargs)
        exp = {f"solver.p:{k}": v for k, v in model.params.items()}
        exp["solver.loss_history"] = np.zeros(prep.state["iters"])
        return exp

    def describe(self, prep):
        return (f"Solver(ThreeLayerConvNet, adam, learning_rate 1e-2, batch_size 10, {self.epochs} epochs) on 20 random "
                f"examples, with your layers.py, models.py, optim.py and solver.py")

    def judge(self, answers, prep, expected):
        problems = [f"{k.split('.', 1)[1]}: {v}" for k, v in answers.problems.items()]
        if problems:
            return Judgement(False, "training did not finish", problems=problems)
        model = _reference_model(self.cls, self.kwargs)
        for k in prep.state["keys"]:
            model.params[k] = answers.get("solver", f"p:{k}")
        acc = float(np.mean(np.argmax(model.loss(prep.state["X"]), axis=1) == prep.state["y"]))
        hist = answers.get("solver", "loss_history")
        falling = bool(hist[-5:].mean() < 0.7 * hist[:5].mean())
        ok = acc >= self.threshold and falling
        return Judgement(ok, f"{prep.state['iters']} iterations, training accuracy {acc:.2f} (needs {self.threshold}), loss "
                             f"{hist[:5].mean():.3f} -> {hist[-5:].mean():.3f}", extra={"train_accuracy": acc})
