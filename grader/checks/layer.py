"""Checks of the layers, built from the table of layers (:data:`convnet.specs.LAYERS`).

For each layer: a forward check and a backward check against finite
differences of the *reference* forward (visible; tiny, every coordinate
perturbed), and for every hidden geometry a forward check and one check per
backward method against the reference (hidden). The backward checks run the
student's forward and then the student's backward on its cache, as a network
would; if the forward's output is wrong on the same inputs the feedback says
to fix it first, but only the backward's own gradients decide its verdict.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convnet.specs import LAYERS, Geometry
from grader.checks.base import Check, Judgement, Prepared
from grader.compare import compare, scale_of
from grader.sandbox import wire

__all__ = ["LayerForward", "LayerBackward", "LayerState", "DropoutCheck", "layer_checks", "encode_call",
           "numeric_gradients"]

H = 1e-6  # finite-difference step (float64)


def encode_call(call, prefix: str) -> tuple[list, dict]:
    """``(argument specs, input arrays)`` of a :class:`convnet.specs.Call`, names prefixed."""
    inputs = {prefix + k: v for k, v in call.arrays.items()}
    args = [wire.A(prefix + k) for k in call.arrays]
    extra = {}
    for name, param in call.params.items():
        args.append(wire.encode_args(param, extra, f"{prefix}{name}."))
    inputs.update(extra)
    return args, inputs


def _describe_value(v) -> str:
    if isinstance(v, np.ndarray):
        return f"array {tuple(v.shape)}"
    return repr(v)


def describe_call(spec, method: str, call, geometry: Geometry) -> str:
    parts = [f"{k} {tuple(v.shape)} {v.dtype}" for k, v in call.arrays.items()]
    for name, param in call.params.items():
        shown = {k: (_describe_value(v) if isinstance(v, np.ndarray) else v) for k, v in param.items()}
        parts.append(f"{name}={shown}")
    names = ", ".join([*call.arrays, *call.params])
    return f"{spec.name}.{method}({names}) on {geometry.label}: " + ", ".join(parts)


def numeric_gradients(forward, call, dout, names=None) -> list:
    """Centred finite differences of ``sum(forward(call) * dout)`` w.r.t. the arrays ``names`` of ``call``
    (default all), every coordinate."""
    grads = []
    for name, a in call.arrays.items():
        if names is not None and name not in names:
            continue
        g = np.zeros(a.shape, dtype=np.float64)
        flat, gflat = a.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + H
            plus = forward(call.copy())
            flat[i] = old - H
            minus = forward(call.copy())
            flat[i] = old
            gflat[i] = np.sum((plus - minus) * dout) / (2 * H)
        grads.append(g)
    return grads


@dataclass(kw_only=True)
class _LayerCheck(Check):
    layer: str
    geometry: Geometry

    @property
    def spec(self):
        return LAYERS[self.layer]

    def _call(self, rng):
        return self.spec.call(rng, self.geometry)

    def _inputs_code(self) -> list:
        """Code building the public inputs exactly as :meth:`prepare` does."""
        spec = self.spec
        names = [*spec.arrays, *spec.params]
        return [
            "from convnet.specs import LAYERS",
            "from grader.checks.base import seed_of",
            "",
            f"rng = np.random.default_rng(seed_of({self.name!r}))",
            f"spec = LAYERS[{self.layer!r}]",
            f"geometry = spec.geometries[{self._role()!r}]" if self._role() else "# (a hidden geometry)",
            "call = spec.call(rng, geometry)",
            f"{', '.join(names)}{',' if len(names) == 1 else ''} = call.args()",
            "",
            f"from convnet.layers import {self.layer}",
        ]

    def _role(self):
        return next((r for r, g in self.spec.geometries.items() if g is self.geometry), None)

    def reference_forward(self):
        """The forward pass finite differences are taken of: the table's vectorised formulation of the
        definition where it has one (fast, and independent of the naive reference), else the naive reference."""
        if self.spec.independent is not None:
            return self.spec.independent
        layer = self.spec.naive_class
        return lambda c: layer.forward(*c.args())[0]

    def _scale(self, prep, *more):
        call = prep.state["call"]
        params = [v for p in call.params.values() for v in p.values() if isinstance(v, np.ndarray)]
        return scale_of(*call.arrays.values(), *params, *more)


@dataclass(kw_only=True)
class LayerForward(_LayerCheck):
    """The student's forward output against the reference's, same inputs."""

    def prepare(self, rng, prefix):
        call = self._call(rng)
        args, inputs = encode_call(call, prefix)
        tid = prefix + "fwd"
        task = wire.task("call", tid, fn=f"layers.{self.layer}.forward", args=args, outs={"out": [0]})
        return Prepared([task], inputs, {tid: ["out"]}, {"call": call})

    def expected(self, prep):
        return {"fwd.out": self.spec.naive_class.forward(*prep.state["call"].copy().args())[0]}

    def describe(self, prep):
        return describe_call(self.spec, "forward", prep.state["call"], self.geometry)

    def snippet(self, prep, expected):
        from grader.explain import literal

        names = [*self.spec.arrays, *self.spec.params]
        return self._inputs_code() + [
            f"out, cache = {self.layer}.forward({', '.join(names)})",
            literal("expected_out", expected["fwd.out"]),
            'print("max error:", np.max(np.abs(out - expected_out)))',
        ]

    def judge(self, answers, prep, expected):
        want = expected["fwd.out"]
        got = answers.get("fwd", "out")
        if got is None:
            return Judgement(False, "no output", problems=[f"out: {answers.problem('fwd', 'out')}"])
        c = compare("out", got, want, scale=self._scale(prep, want), dtype=self.geometry.dtype)
        return Judgement(c.ok, c.line(), [c], extra={"rel_error": c.relative})


@dataclass(kw_only=True)
class LayerBackward(_LayerCheck):
    """The student's backward (after the student's forward) against finite differences or the reference."""

    method: str = "backward"
    against: str = "reference"  # or "fd": numeric gradients of the reference forward

    def prepare(self, rng, prefix):
        call = self._call(rng)
        out_shape = self.spec.independent(call.copy()).shape
        dout = rng.standard_normal(out_shape).astype(self.geometry.dtype)
        args, inputs = encode_call(call, prefix)
        inputs[prefix + "dout"] = dout
        tid = prefix + "fb"
        n = len(self.spec.arrays)
        task = wire.task("fwdbwd", tid, fn=f"layers.{self.layer}", bwd=self.method, args=args, dout=prefix + "dout",
                         ngrads=n)
        return Prepared([task], inputs, {tid: ["out", *(f"d{k}" for k in range(n))]}, {"call": call, "dout": dout})

    def expected(self, prep):
        layer = self.spec.naive_class
        call, dout = prep.state["call"], prep.state["dout"]
        out, cache = layer.forward(*call.copy().args())
        grads = getattr(layer, self.method)(dout, cache)
        grads = grads if isinstance(grads, tuple) else (grads,)
        exp = {"fb.out": out}
        if self.against == "fd":
            numeric = numeric_gradients(self.reference_forward(), call.copy(), dout)
            for k, (num, ana) in enumerate(zip(numeric, grads)):
                exp[f"fb.d{k}"] = num.astype(call.arrays[self.spec.arrays[k]].dtype)
                # The numeric gradient's own error, measured against the analytic reference here.
                exp[f"fb.fd_error{k}"] = np.array(float(np.max(np.abs(num - ana))) if num.size else 0.0)
        else:
            for k, g in enumerate(grads):
                exp[f"fb.d{k}"] = g
        return exp

    def shapes(self, prep, expected):
        return {k: v for k, v in expected.items() if not k.startswith("fb.fd_error")}

    def describe(self, prep):
        return describe_call(self.spec, self.method, prep.state["call"], self.geometry) + \
            f"; dout {tuple(prep.state['dout'].shape)}"

    def snippet(self, prep, expected):
        from grader.explain import literal

        names = [*self.spec.arrays, *self.spec.params]
        grads = list(self.spec.grads)
        lines = self._inputs_code() + [
            f"out, cache = {self.layer}.forward({', '.join(names)})",
            f"dout = rng.standard_normal(out.shape).astype(np.{self.geometry.dtype})",
            f"{', '.join(grads)} = {self.layer}.{self.method}(dout, cache)",
        ]
        what = "numeric gradients of the reference's forward" if self.against == "fd" else "the reference's gradients"
        lines.append(f"# expected: {what}")
        for k, g in enumerate(grads):
            lines.append(literal(f"expected_{g}", expected[f"fb.d{k}"]))
            lines.append(f'print("{g} max error:", np.max(np.abs({g} - expected_{g})))')
        return lines

    def judge(self, answers, prep, expected):
        problems, comparisons, notes = [], [], []
        scale = self._scale(prep, prep.state["dout"], *(expected[f"fb.d{k}"] for k in range(len(self.spec.arrays))))
        for k, gname in enumerate(self.spec.grads):
            got = answers.get("fb", f"d{k}")
            if got is None:
                problems.append(f"{gname}: {answers.problem('fb', f'd{k}')}")
                continue
            allow = 2 * float(expected.get(f"fb.fd_error{k}", 0.0))
            label = gname + (" vs finite differences" if self.against == "fd" else "")
            comparisons.append(compare(label, got, expected[f"fb.d{k}"], scale=scale, dtype=self.geometry.dtype,
                                       allow=allow))
        out = answers.get("fb", "out")
        if out is not None:
            fwd = compare("out", out, expected["fb.out"], scale=self._scale(prep, expected["fb.out"]),
                          dtype=self.geometry.dtype)
            if not fwd.ok:
                notes.append(f"fix forward first: {self.layer}.forward's output differs on these inputs "
                             f"(max error {fwd.error:.2e}), and backward ran on its cache")
        ok = not problems and all(c.ok for c in comparisons)
        failing = [c.name for c in comparisons if not c.ok]
        summary = ("gradients match" if ok else
                   "wrong: " + ", ".join(failing + [p.split(':')[0] for p in problems]))
        return Judgement(ok, summary, comparisons, problems, notes,
                         extra={"rel_errors": {c.name: c.relative for c in comparisons}})


@dataclass(kw_only=True)
class LayerState(_LayerCheck):
    """What forward writes into its parameter dict (batch norm's running statistics), against the reference."""

    def prepare(self, rng, prefix):
        call = self._call(rng)
        args, inputs = encode_call(call, prefix)
        tid = prefix + "state"
        position = {p: len(call.arrays) + i for i, p in enumerate(call.params)}
        mutated = {key: [position[param], key] for param, key in self.spec.mutates}
        task = wire.task("call", tid, fn=f"layers.{self.layer}.forward", args=args, outs={}, mutated=mutated)
        return Prepared([task], inputs, {tid: list(mutated)}, {"call": call})

    def expected(self, prep):
        call = prep.state["call"].copy()
        self.spec.naive_class.forward(*call.args())
        return {f"state.{key}": np.asarray(call.params[param][key]) for param, key in self.spec.mutates}

    def describe(self, prep):
        return describe_call(self.spec, "forward", prep.state["call"], self.geometry)

    def judge(self, answers, prep, expected):
        problems, comparisons = [], []
        for _, key in self.spec.mutates:
            got = answers.get("state", key)
            if got is None:
                problems.append(f"{key}: {answers.problem('state', key)}")
                continue
            want = expected[f"state.{key}"]
            comparisons.append(compare(key, got, want, scale=self._scale(prep, want), dtype=self.geometry.dtype))
        ok = not problems and all(c.ok for c in comparisons)
        return Judgement(ok, "running statistics match" if ok else "running statistics differ", comparisons,
                         problems)


@dataclass(kw_only=True)
class DropoutCheck(_LayerCheck):
    """Inverted dropout, graded by what must hold whatever random numbers the student draws.

    ``part="forward"``: the fraction dropped in train mode is p (within the sampling spread), kept units are
    scaled by 1/(1-p), test mode is the identity. ``part="backward"``: dx is dout through the mask the
    student's own forward used (``out / x``), so a forward bug does not cost the backward's points.
    """

    part: str = "forward"

    def prepare(self, rng, prefix):
        call = self._call(rng)
        args, inputs = encode_call(call, prefix)
        dout = rng.standard_normal(call.arrays["x"].shape).astype(self.geometry.dtype)
        inputs[prefix + "dout"] = dout
        shape = (call.arrays["x"].shape, np.dtype(self.geometry.dtype))
        if self.part == "backward":
            tasks = [wire.task("fwdbwd", prefix + "tr", fn=f"layers.{self.layer}", args=args, dout=prefix + "dout",
                               ngrads=1)]
            expect = {prefix + "tr": ["out", "d0"]}
        else:
            test_args = [args[0], dict(args[1], mode="test")]
            tasks = [wire.task("call", prefix + "tr", fn=f"layers.{self.layer}.forward", args=args,
                               outs={"out": [0]}),
                     wire.task("call", prefix + "te", fn=f"layers.{self.layer}.forward", args=test_args,
                               outs={"out": [0]})]
            expect = {prefix + "tr": ["out"], prefix + "te": ["out"]}
        return Prepared(tasks, inputs, expect, {"call": call, "dout": dout, "shape": shape})

    def shapes(self, prep, expected):
        s = prep.state["shape"]
        return {"tr.out": s, "tr.d0": s, "te.out": s}

    def snippet(self, prep, expected):
        lines = self._inputs_code() + [f"out, cache = {self.layer}.forward(x, dropout_param)"]
        if self.part == "backward":
            lines += ["dout = rng.standard_normal(x.shape)",
                      f"dx = {self.layer}.backward(dout, cache)",
                      'print("dx max error:", np.max(np.abs(dx - dout * out / x)))  # dout through your mask']
        else:
            lines += ['print("dropped", np.mean(out == 0), "expected about", dropout_param["p"])',
                      'kept = out != 0',
                      'print("kept units error:", np.max(np.abs(out[kept] - x[kept] / (1 - dropout_param["p"]))))',
                      f'test, _ = {self.layer}.forward(x, dict(dropout_param, mode="test"))',
                      'print("test mode error:", np.max(np.abs(test - x)))']
        return lines

    def describe(self, prep):
        what = "forward in train and test mode" if self.part == "forward" else "forward then backward (train mode)"
        return describe_call(self.spec, self.part, prep.state["call"], self.geometry) + f": {what}"

    def judge(self, answers, prep, expected):
        call, dout = prep.state["call"], prep.state["dout"]
        x, p = call.arrays["x"], call.params["dropout_param"]["p"]
        scale = 1 / (1 - p)
        if self.part == "backward":
            out, dx = answers.get("tr", "out"), answers.get("tr", "d0")
            if dx is None or out is None:
                problems = [f"{'out' if k.endswith('out') else 'dx'}: {v}" for k, v in answers.problems.items()]
                return Judgement(False, "missing answers", problems=problems)
            c = compare("dx (dout through your forward's mask, out / x)", dx, dout * (out / x),
                        scale=scale_of(dout) * scale, dtype=self.geometry.dtype)
            return Judgement(c.ok, "backward uses the forward's mask" if c.ok else "dx differs", [c])
        problems = [f"{k.replace('tr.', 'train ').replace('te.', 'test ')}: {v}" for k, v in answers.problems.items()]
        if problems:
            return Judgement(False, "missing answers", problems=problems)
        out, test = answers.get("tr", "out"), answers.get("te", "out")
        kept = out != 0
        frac = 1 - float(kept.mean())
        # Binomial spread: 6 standard deviations of the dropped fraction.
        spread = 6 * np.sqrt(p * (1 - p) / x.size)
        comparisons = [
            compare("kept units (x / (1 - p))", out[kept], x[kept] * scale, scale=scale_of(x) * scale,
                    dtype=self.geometry.dtype),
            compare("test mode output (x)", test, x, scale=scale_of(x), dtype=self.geometry.dtype),
        ]
        if abs(frac - p) > spread:
            problems.append(f"train mode dropped {frac:.3f} of the units; with p = {p} (the probability of "
                            f"dropping a unit) it should be within {spread:.3f} of {p}")
        ok = not problems and all(c.ok for c in comparisons)
        return Judgement(ok, f"dropped {frac:.3f} (p={p})" if ok else "dropout differs", comparisons, problems,
                         extra={"drop_fraction": frac, "p": p})


def layer_checks(hidden: bool) -> list:
    """The checks of every layer of the table: the visible ones, and the hidden ones when asked."""
    out = []
    for spec in LAYERS.values():
        pts = spec.points
        public = spec.geometries["public"]
        common = dict(file="layers.py", layer=spec.name, group=f"layers.{spec.name}", tags=("layers",),
                      serve=tuple(spec.uses))
        if spec.stochastic:
            for part in ("forward", *spec.backwards):
                out.append(DropoutCheck(name=f"{spec.name}.{part}", target=f"{spec.name}.{part}", part=part,
                                        points=pts["forward" if part == "forward" else "backward"], geometry=public,
                                        **common))
                if hidden:
                    out += [DropoutCheck(name=f"{spec.name}.{part}: {g.label}", target=f"{spec.name}.{part}",
                                         part=part, points=pts["hidden"], visibility="hidden", geometry=g, **common)
                            for g in spec.hidden()]
            continue
        out.append(LayerForward(name=f"{spec.name}.forward", target=f"{spec.name}.forward", points=pts["forward"],
                                geometry=public, **common))
        for method in spec.backwards:
            out.append(LayerBackward(name=f"{spec.name}.{method} vs finite differences",
                                     target=f"{spec.name}.{method}", method=method, against="fd",
                                     points=pts["backward"] if method == "backward" else pts["hidden"],
                                     geometry=spec.geometries["fd"], **common))
        if not hidden:
            continue
        for g in spec.hidden():
            out.append(LayerForward(name=f"{spec.name}.forward: {g.label}", target=f"{spec.name}.forward",
                                    points=pts["hidden"], visibility="hidden", geometry=g, **common))
            for method in spec.backwards:
                out.append(LayerBackward(name=f"{spec.name}.{method}: {g.label}", target=f"{spec.name}.{method}",
                                         points=pts["hidden"], visibility="hidden", geometry=g, method=method,
                                         **common))
            if spec.mutates and (g.dims.get("running") or g.dims.get("mode") == "test"):
                out.append(LayerState(name=f"{spec.name} running statistics: {g.label}",
                                      target=f"{spec.name}.forward", points=pts["hidden"], visibility="hidden",
                                      geometry=g, **common))
    return out
