"""The grader's catalogue: what is compared, with which tolerance, for how many points, seen by whom.

A check is declarative: its ``name``, the student ``file`` and ``target``
symbol it grades, its ``inputs`` (``"public"``: fixed inputs drawn from a seed
derived from the check's name; ``"secret"``: drawn from the run's secret seed,
held by the parent only), its tolerance ``tol``, its ``points``, its
``visibility`` (``"visible"``: students see it and can run it locally;
``"hidden"``: only the autograder has it), and its ``tags``. Its methods say
which tasks the child runs (:meth:`Check.prepare`), what the trusted reference
answers (:meth:`Check.expected`, computed in the parent) and how the two
compare (:meth:`Check.judge`, in the parent; the child never decides).

Visible checks live here (:data:`VISIBLE`); hidden ones, the timing checks and
the fast-path checks in :mod:`grader.checks.hidden`, which the student
release leaves out.

Expected values in a release
----------------------------
A student release has the reference solution stubbed, so the visible checks
cannot compute their expected values there. We chose to ship them:
:func:`build_public_expected` evaluates every visible check's public inputs
with the trusted reference and writes ``public_expected.npz`` (plain arrays,
no pickle) beside this file; the release generator calls it. When the hidden
module is absent (release mode: :func:`release_mode`), visible checks read
their expected values from that file. Backward checks against finite
differences of the student's own forward need no expected values at all.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Check", "Prepared", "VISIBLE", "all_checks", "release_mode", "build_public_expected",
           "rel_error", "PUBLIC_EXPECTED"]

PUBLIC_EXPECTED = Path(__file__).with_name("public_expected.npz")
H = 1e-6  # finite-difference step (float64)


def rel_error(x, y) -> float:
    """Global relative error ``max|x - y| / max(|x| + |y|)`` (EECS 498's), computed in the parent."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size == 0:
        return 0.0
    return float(np.max(np.abs(x - y)) / max(float(np.max(np.abs(x) + np.abs(y))), 1e-10))


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode())


def A(name: str) -> dict:
    """Argument spec: the input array ``name``."""
    return {"$a": name}


@dataclass
class Prepared:
    """A check's share of a child: tasks, input arrays, expected answer names, and parent-side state."""

    tasks: list
    inputs: dict
    expect: dict
    state: dict = field(default_factory=dict)


@dataclass
class Check:
    name: str
    file: str
    target: str
    points: float
    visibility: str = "visible"
    inputs: str = "public"
    tol: float = 1e-7
    tags: tuple = ()
    fast: bool = False
    group: str = ""

    def __post_init__(self):
        if not self.group:
            self.group = self.target
        self.tags = tuple(self.tags) or (self.file.removesuffix(".py"),)

    def rng(self, secret_seed: int):
        if self.inputs == "public":
            return np.random.default_rng(seed_of(self.name))
        return np.random.default_rng([secret_seed, seed_of(self.name)])

    def prepare(self, rng, p: str) -> Prepared:  # pragma: no cover - abstract
        raise NotImplementedError

    def expected(self, state: dict) -> dict:
        """The reference's answers (arrays by name); {} when the check needs none."""
        return {}

    def judge(self, answers: dict, state: dict, expected: dict):  # pragma: no cover - abstract
        """``(passed, message, extra)`` from validated answers."""
        raise NotImplementedError


# ---------------------------------------------------------------- helpers


def ref_attr(path: str):
    """The trusted reference's ``convnet.<module>.<attr...>`` (parent side)."""
    import importlib

    mod, *attrs = path.split(".")
    obj = importlib.import_module("convnet." + mod)
    for a in attrs:
        obj = getattr(obj, a)
    return obj


def spaced(rng, shape, low=-1.0, high=1.0):
    """Distinct values at least ``(high-low)/size`` apart, shuffled (no ties for max-pool, no kinks near 0)."""
    n = int(np.prod(shape))
    vals = np.linspace(low, high, n)
    return rng.permutation(vals).reshape(shape)


def away_from_zero(rng, shape, margin=0.05):
    x = rng.standard_normal(shape)
    x[np.abs(x) < margin] += np.sign(x[np.abs(x) < margin] + 1e-12) * 2 * margin
    return x


def compare(name, got, want, tol):
    """``(ok, message, err)`` comparing an answer with the expected array."""
    err = rel_error(got, want)
    if not err < tol:
        return False, f"{name}: relative error {err:.2e} exceeds {tol:.0e}", err
    return True, "", err


def _decode(spec, inputs):
    """Parent-side twin of the child's argument decoding (for the reference)."""
    if isinstance(spec, dict):
        if "$a" in spec:
            return np.array(inputs[spec["$a"]], copy=True)
        if "$dtype" in spec:
            return np.dtype(spec["$dtype"]).type
        if "$tuple" in spec:
            return tuple(_decode(s, inputs) for s in spec["$tuple"])
        return {k: _decode(v, inputs) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_decode(s, inputs) for s in spec]
    return spec


# ---------------------------------------------------------------- layer checks


@dataclass
class Case:
    """Inputs of one layer call: arrays (named), literal args, and which arrays get gradients."""

    arrays: dict
    args: list  # argument specs (A(name) or literals)
    grad_args: tuple = ()  # argument positions differentiated by backward, in order

    def prefixed(self, p):
        arrays = {p + k: v for k, v in self.arrays.items()}

        def pre(spec):
            if isinstance(spec, dict):
                if "$a" in spec:
                    return {"$a": p + spec["$a"]}
                return {k: pre(v) for k, v in spec.items()}
            if isinstance(spec, list):
                return [pre(s) for s in spec]
            return spec

        return arrays, [pre(a) for a in self.args]


@dataclass
class LayerForward(Check):
    """The student's ``forward`` output against the reference's on the same inputs."""

    case: object = None  # callable rng -> Case
    method: str = "forward"

    def prepare(self, rng, p):
        case = self.case(rng)
        arrays, args = case.prefixed(p)
        tid = p + "fwd"
        task = {"op": "call", "id": tid, "fn": f"{self.target}.{self.method}", "args": args, "outs": {"out": [0]}}
        return Prepared([task], arrays, {tid: ["out"]}, {"tid": tid, "arrays": arrays, "args": args})

    def expected(self, state):
        args = _decode(state["args"], state["arrays"])
        return {"out": ref_attr(f"{self.target}.{self.method}")(*args)[0]}

    def judge(self, answers, state, expected):
        want = expected["out"]
        ok, msg, err = compare("out", answers["out"], want, self.tol)
        return ok, msg or f"relative error {err:.1e}", {"rel_error": err}

    def shapes(self, state, expected):
        return {"out": (expected["out"].shape, expected["out"].dtype)}


@dataclass
class LayerBackwardRef(Check):
    """The student's backward (after their forward) against the reference's, same inputs and dout."""

    case: object = None
    bwd: str = "backward"

    def prepare(self, rng, p):
        case = self.case(rng)
        ref_out = self._ref_out(case)
        case.arrays["dout"] = rng.standard_normal(ref_out.shape).astype(ref_out.dtype)
        arrays, args = case.prefixed(p)
        tid = p + "fb"
        n = len(case.grad_args)
        task = {"op": "fwdbwd", "id": tid, "fn": self.target, "bwd": self.bwd, "args": args, "dout": p + "dout",
                "ngrads": n}
        gnames = ["d" + case.args[i]["$a"] for i in case.grad_args]
        return Prepared([task], arrays, {tid: ["out"] + [f"d{k}" for k in range(n)]},
                        {"tid": tid, "arrays": arrays, "args": args, "n": n, "p": p, "gnames": gnames})

    def _ref_out(self, case):
        args = _decode(case.args, case.arrays)
        return self.out_of(args)

    def out_of(self, args):
        return ref_attr(f"{self.target}.forward")(*args)[0]

    def expected(self, state):
        args = _decode(state["args"], state["arrays"])
        out, cache = ref_attr(f"{self.target}.forward")(*args)
        grads = ref_attr(f"{self.target}.{self.bwd}")(state["arrays"][state["p"] + "dout"], cache)
        if state["n"] == 1:
            grads = (grads,)
        return {"out": out, **{f"d{k}": g for k, g in enumerate(grads)}}

    def judge(self, answers, state, expected):
        errs = {}
        for k in range(state["n"]):
            gname = state.get("gnames", [f"gradient {i + 1}" for i in range(state["n"])])[k]
            ok, msg, err = compare(gname, answers[f"d{k}"], expected[f"d{k}"], self.tol)
            errs[f"d{k}"] = err
            if not ok:
                return False, msg, {"rel_errors": errs}
        return True, "max relative error " + f"{max(errs.values()):.1e}", {"rel_errors": errs}


@dataclass
class LayerBackwardFD(Check):
    """The student's backward against centred finite differences of the student's own forward.

    The child returns the forward outputs at the base point and at each
    perturbed point (one coordinate +-h at a time, coordinates drawn by the
    parent); the parent forms the numeric gradient and compares.
    """

    case: object = None
    per_arg: int = 10

    def prepare(self, rng, p):
        case = self.case(rng)
        args = _decode(case.args, case.arrays)
        out_shape = self.out_shape(args)
        case.arrays["dout"] = rng.standard_normal(out_shape)
        rows = []
        for argi in case.grad_args:
            size = case.arrays[case.args[argi]["$a"]].size
            idx = rng.choice(size, size=min(size, self.per_arg), replace=False)
            for i in idx:
                rows += [(argi, int(i), 1.0), (argi, int(i), -1.0)]
        case.arrays["pert"] = np.array(rows, dtype=np.float64)
        arrays, pargs = case.prefixed(p)
        n = len(case.grad_args)
        t1 = {"op": "fwdbwd", "id": p + "fb", "fn": self.target, "args": pargs, "dout": p + "dout", "ngrads": n}
        t2 = {"op": "fwdbatch", "id": p + "fd", "fn": self.target, "args": pargs, "pert": p + "pert", "h": H}
        return Prepared([t1, t2], arrays, {p + "fb": [f"d{k}" for k in range(n)], p + "fd": ["outs"]},
                        {"case": case, "rows": rows, "out_shape": out_shape, "n": n})

    def out_shape(self, args):
        return self.shape_fn(args)

    shape_fn: object = None

    def judge(self, answers, state, expected):
        case, rows = state["case"], state["rows"]
        outs = answers["outs"]
        dout = case.arrays["dout"]
        errs = {}
        for k, argi in enumerate(case.grad_args):
            sel = [j for j, r in enumerate(rows) if r[0] == argi]
            num, ana = [], []
            grad = answers[f"d{k}"].reshape(-1)
            for j in range(0, len(sel), 2):
                plus, minus = outs[sel[j]], outs[sel[j + 1]]
                num.append(np.sum((plus - minus) * dout) / (2 * H))
                ana.append(grad[rows[sel[j]][1]])
            gname = "d" + case.args[argi]["$a"]
            ok, msg, err = compare(f"{gname} vs finite differences", np.array(ana), np.array(num), self.tol)
            errs[f"d{k}"] = err
            if not ok:
                return False, msg, {"rel_errors": errs}
        return True, f"max relative error {max(errs.values()):.1e}", {"rel_errors": errs}

    def shapes(self, state, expected):
        n_rows = len(state["rows"])
        arrays = state["case"].arrays
        shp = {"outs": ((n_rows, *state["out_shape"]), np.float64)}
        for k, argi in enumerate(state["case"].grad_args):
            a = arrays[state["case"].args[argi]["$a"]]
            shp[f"d{k}"] = (a.shape, a.dtype)
        return shp


# ---------------------------------------------------------------- cases


def _conv_shape(args):
    from convnet import _checks

    g = _checks.conv_args(*args[:4])
    return (g.N, g.F, g.H_out, g.W_out)


def _pool_shape(args):
    from convnet import _checks

    g = _checks.pool_args(args[0], args[1])
    return (g.N, g.C, g.H_out, g.W_out)


def _same_shape(args):
    return args[0].shape


def _linear_shape(args):
    return (args[0].shape[0], args[1].shape[1])


def linear_case(shape=(3, 2, 3, 2), M=5):
    def make(rng):
        D = int(np.prod(shape[1:]))
        return Case({"x": rng.standard_normal(shape), "w": rng.standard_normal((D, M)) * 0.5,
                     "b": rng.standard_normal(M)}, [A("x"), A("w"), A("b")], (0, 1, 2))
    return make


def relu_case(shape=(4, 6)):
    def make(rng):
        return Case({"x": away_from_zero(rng, shape)}, [A("x")], (0,))
    return make


def conv_case(x_shape, w_shape, stride, pad):
    def make(rng):
        return Case({"x": rng.standard_normal(x_shape), "w": rng.standard_normal(w_shape) * 0.5,
                     "b": rng.standard_normal(w_shape[0])},
                    [A("x"), A("w"), A("b"), {"stride": stride, "pad": pad}], (0, 1, 2))
    return make


def pool_case(x_shape, ph, pw, stride, pad=0):
    def make(rng):
        param = {"pool_height": ph, "pool_width": pw, "stride": stride}
        if pad:
            param["pad"] = pad
        return Case({"x": spaced(rng, x_shape)}, [A("x"), param], (0,))
    return make


def bn_case(shape, mode="train", spatial=False):
    def make(rng):
        D = shape[1]
        arrays = {"x": rng.standard_normal(shape) * 2 + 1, "gamma": rng.standard_normal(D),
                  "beta": rng.standard_normal(D)}
        bn = {"mode": mode, "eps": 1e-5, "momentum": 0.9}
        if mode == "test":
            arrays["rm"], arrays["rv"] = rng.standard_normal(D), rng.random(D) + 0.5
            bn.update(running_mean=A("rm"), running_var=A("rv"))
        return Case(arrays, [A("x"), A("gamma"), A("beta"), bn], (0, 1, 2))
    return make


# ---------------------------------------------------------------- other checks


@dataclass
class CallCheck(Check):
    """Call ``target`` with a case's arguments; compare chosen outputs (and mutated dict entries) with the reference."""

    case: object = None  # rng -> Case
    outs: dict = field(default_factory=lambda: {"out": [0]})
    mutated: dict = field(default_factory=dict)  # name -> (arg index, key)

    def prepare(self, rng, p):
        case = self.case(rng)
        arrays, args = case.prefixed(p)
        tid = p + "call"
        task = {"op": "call", "id": tid, "fn": self.target, "args": args, "outs": self.outs, "mutated": self.mutated}
        return Prepared([task], arrays, {tid: list(self.outs) + list(self.mutated)},
                        {"arrays": arrays, "args": args})

    def expected(self, state):
        args = _decode(state["args"], state["arrays"])
        result = ref_attr(self.target)(*args)
        exp = {}
        for name, path in self.outs.items():
            v = result
            for q in path:
                v = v[q]
            exp[name] = np.asarray(v)
        for name, (i, key) in self.mutated.items():
            exp[name] = np.asarray(args[i][key])
        return exp

    def judge(self, answers, state, expected):
        errs = {}
        for name in [*self.outs, *self.mutated]:
            ok, msg, err = compare(name, answers[name], expected[name], self.tol)
            errs[name] = err
            if not ok:
                return False, msg, {"rel_errors": errs}
        return True, f"max relative error {max(errs.values()):.1e}", {"rel_errors": errs}


@dataclass
class DropoutCheck(Check):
    """Dropout statistics (train), identity (test), and backward through the forward's mask."""

    p_drop: float = 0.3

    def prepare(self, rng, p):
        x = rng.random((200, 50)) + 0.5
        dout = rng.standard_normal(x.shape)
        seed = int(rng.integers(0, 2**31))
        arrays = {p + "x": x, p + "dout": dout}
        train = {"p": self.p_drop, "mode": "train", "seed": seed}
        tasks = [
            {"op": "fwdbwd", "id": p + "tr", "fn": self.target, "args": [A(p + "x"), train], "dout": p + "dout",
             "ngrads": 1},
            {"op": "call", "id": p + "te", "fn": self.target + ".forward",
             "args": [A(p + "x"), {"p": self.p_drop, "mode": "test"}], "outs": {"out": [0]}},
        ]
        return Prepared(tasks, arrays, {p + "tr": ["out", "d0"], p + "te": ["out"]}, {"x": x, "dout": dout})

    def judge(self, answers, state, expected):
        x, dout = state["x"], state["dout"]
        out, dx, test = answers["tr.out"], answers["tr.d0"], answers["te.out"]
        kept = out != 0
        frac = 1 - kept.mean()
        scale = 1 / (1 - self.p_drop)
        extra = {"drop_fraction": float(frac)}
        if abs(frac - self.p_drop) > 0.03:
            return False, f"train mode dropped {frac:.3f} of the units, expected p={self.p_drop}", extra
        if rel_error(out[kept], x[kept] * scale) > 1e-7:
            return False, f"kept units are not scaled by 1/(1-p) = {scale:.4f}", extra
        if rel_error(dx, dout * kept * scale) > 1e-7:
            return False, "backward does not use the forward's mask", extra
        if rel_error(test, x) > 1e-12:
            return False, "test mode is not the identity", extra
        return True, f"dropped {frac:.3f} (p={self.p_drop})", extra

    def shapes(self, state, expected):
        s = (state["x"].shape, np.float64)
        return {"tr.out": s, "tr.d0": s, "te.out": s}


# ---------------------------------------------------------------- models


def tiny_three_layer_kwargs():
    return {"input_dims": {"$tuple": [3, 8, 8]}, "num_filters": 4, "filter_size": 3, "hidden_dim": 10,
            "num_classes": 5, "weight_scale": 1e-2, "reg": 0.0, "dtype": {"$dtype": "float64"}}


# ThreeLayerConvNet on 3x8x8 inputs, 4 filters 3x3 (pad 1 keeps 8x8, the pool halves it), hidden 10, 5 classes.
TINY_THREE_LAYER_SHAPES = {"W1": (4, 3, 3, 3), "b1": (4,), "W2": (4 * 4 * 4, 10), "b2": (10,), "W3": (10, 5),
                           "b3": (5,)}


def _model_shapes(cls_path, kwargs):
    model = ref_attr(cls_path)(**_decode(kwargs, {}))
    return {k: v.shape for k, v in model.params.items()}


@dataclass
class ModelInitCheck(Check):
    """Parameter names and shapes, zero biases, weights' standard deviation close to weight_scale."""

    kwargs: dict = field(default_factory=dict)
    weight_scale: float = 1e-2
    pshapes: dict = None

    def prepare(self, rng, p):
        kwargs = dict(self.kwargs, seed=int(rng.integers(0, 2**31)))
        keys = sorted(self.param_shapes())
        tid = p + "init"
        return Prepared([{"op": "model_init", "id": tid, "cls": self.target, "kwargs": kwargs, "keys": keys}],
                        {}, {tid: [f"p:{k}" for k in keys]}, {"keys": keys})

    def param_shapes(self):
        shapes = self.pshapes or getattr(self, "_shapes", None)
        if shapes is None:
            shapes = _model_shapes(self.target, self.kwargs)
            self._shapes = shapes
        return shapes

    def judge(self, answers, state, expected):
        stds = {}
        for k in state["keys"]:
            a = answers[f"p:{k}"]
            if k.startswith("b") or k.startswith("beta"):
                if np.any(a != 0):
                    return False, f"{k} should start at zero", {}
            elif k.startswith("gamma"):
                if np.any(a != 1):
                    return False, f"{k} should start at one", {}
            else:
                s = float(a.std())
                stds[k] = s
                if not abs(s - self.weight_scale) < 0.25 * self.weight_scale:
                    return False, f"{k} has std {s:.3g}, expected about weight_scale={self.weight_scale}", {"std": stds}
        return True, "shapes and scales right", {"std": stds}

    def shapes(self, state, expected):
        return {f"p:{k}": (v, np.float64) for k, v in self.param_shapes().items()}


@dataclass
class ModelLossCheck(Check):
    """Loss and gradients for given parameters, against the reference model (or log C at tiny weights)."""

    kwargs: dict = field(default_factory=dict)
    N: int = 6
    initial: bool = False  # compare the loss with log(num_classes) instead of the reference
    pshapes: dict = None  # parameter shapes; None: ask the reference model

    def prepare(self, rng, p):
        shapes = self.pshapes or _model_shapes(self.target, self.kwargs)
        C, Hh, Ww = _decode(self.kwargs["input_dims"], {})
        num_classes = self.kwargs["num_classes"]
        arrays = {p + "X": rng.standard_normal((self.N, C, Hh, Ww)), p + "y": rng.integers(0, num_classes, self.N)}
        params = {}
        for k, s in sorted(shapes.items()):
            scale = 1e-3 if self.initial else 0.3
            v = rng.standard_normal(s) * scale
            if k.startswith("gamma"):
                v = 1 + 0.1 * rng.standard_normal(s)
            params[k] = v
            arrays[p + "p:" + k] = v
        keys = sorted(shapes)
        tid = p + "loss"
        task = {"op": "model_loss", "id": tid, "cls": self.target, "kwargs": self.kwargs, "params": keys,
                "X": A(p + "X"), "y": A(p + "y"), "keys": keys}
        # the child's model.params keys come from inputs named "p:<key>": rename with the prefix
        task["prefix"] = p
        return Prepared([task], arrays, {tid: ["loss"] + [f"g:{k}" for k in keys]},
                        {"params": params, "X": arrays[p + "X"], "y": arrays[p + "y"], "keys": keys,
                         "shapes": shapes, "C": num_classes})

    def expected(self, state):
        if self.initial:
            return {}
        model = ref_attr(self.target)(**_decode(self.kwargs, {}))
        for k, v in state["params"].items():
            model.params[k] = v.copy()
        loss, grads = model.loss(state["X"].copy(), state["y"].copy())
        return {"loss": np.array(loss, dtype=np.float64), **{f"g:{k}": g for k, g in grads.items()}}

    def judge(self, answers, state, expected):
        loss = float(answers["loss"])
        if self.initial:
            want = math.log(state["C"])
            ok = abs(loss - want) < 0.05
            return ok, f"initial loss {loss:.4f}, expected about log({state['C']}) = {want:.4f}", {"loss": loss}
        ok, msg, err = compare("loss", loss, expected["loss"], self.tol)
        if not ok:
            return False, msg, {"loss": loss}
        errs = {}
        for k in state["keys"]:
            ok, msg, err = compare(f"grad {k}", answers[f"g:{k}"], expected[f"g:{k}"], self.tol)
            errs[k] = err
            if not ok:
                return False, msg, {"rel_errors": errs}
        return True, f"loss and {len(errs)} gradients match (max relative error {max(errs.values()):.1e})", \
            {"rel_errors": errs}

    def shapes(self, state, expected):
        shp = {"loss": ((), np.float64)}
        shp.update({f"g:{k}": (s, np.float64) for k, s in state["shapes"].items()})
        return shp


# ---------------------------------------------------------------- the visible catalogue


def _layer_checks():
    L = "layers.py"
    out = []

    def trio(layer, fwd_case, fd_case, shape_fn, pts=(1, 2), tol=1e-7, fd_tol=1e-6, **kw):
        out.append(LayerForward(f"{layer}.forward (public inputs)", L, f"layers.{layer}", pts[0], tol=tol,
                                case=fwd_case, **kw))
        out.append(LayerBackwardFD(f"{layer}.backward vs finite differences (public inputs)", L, f"layers.{layer}",
                                   pts[1], tol=fd_tol, case=fd_case, shape_fn=shape_fn, **kw))

    trio("Linear", linear_case(), linear_case((2, 3, 2), 3), _linear_shape)
    trio("ReLU", relu_case(), relu_case((3, 5)), _same_shape)
    trio("Conv", conv_case((2, 3, 6, 6), (3, 3, 3, 3), 1, 1), conv_case((1, 2, 5, 5), (2, 2, 3, 3), 2, 1),
         _conv_shape, pts=(2, 3))
    trio("MaxPool", pool_case((2, 3, 6, 6), 2, 2, 2), pool_case((1, 2, 5, 5), 3, 3, 2), _pool_shape, pts=(1, 2))
    trio("AvgPool", pool_case((2, 3, 6, 6), 2, 2, 2), pool_case((1, 2, 5, 5), 3, 3, 2), _pool_shape, pts=(1, 2))
    trio("BatchNorm", bn_case((8, 4)), bn_case((6, 3)), _same_shape, pts=(1, 2), fd_tol=1e-5)
    trio("SpatialBatchNorm", bn_case((3, 2, 3, 3)), bn_case((2, 2, 2, 3)), _same_shape, pts=(1, 2), fd_tol=1e-5)
    out.append(DropoutCheck("Dropout forward/backward statistics (public inputs)", L, "layers.Dropout", 2))
    return out


def _other_visible():
    out = []
    S = "sandwich.py"
    rng_case = {
        "Linear_ReLU": lambda r: Case({"x": r.standard_normal((3, 4)), "w": r.standard_normal((4, 5)),
                                       "b": r.standard_normal(5)}, [A("x"), A("w"), A("b")], (0, 1, 2)),
        "Conv_ReLU": lambda r: Case({"x": r.standard_normal((2, 2, 5, 5)), "w": r.standard_normal((3, 2, 3, 3)),
                                     "b": r.standard_normal(3)},
                                    [A("x"), A("w"), A("b"), {"stride": 1, "pad": 1}], (0, 1, 2)),
    }
    for name, case in rng_case.items():
        out.append(LayerForward(f"{name}.forward (public inputs)", S, f"sandwich.{name}", 1, case=case,
                                fast=True, group="sandwich"))
    M = "models.py"
    out.append(ModelInitCheck("ThreeLayerConvNet initial parameters", M, "models.ThreeLayerConvNet", 1,
                              kwargs=tiny_three_layer_kwargs(), pshapes=TINY_THREE_LAYER_SHAPES, fast=True,
                              group="models"))
    out.append(ModelLossCheck("ThreeLayerConvNet initial loss is about log(C)", M, "models.ThreeLayerConvNet", 1,
                              kwargs=tiny_three_layer_kwargs(), initial=True, pshapes=TINY_THREE_LAYER_SHAPES,
                              fast=True, group="models"))
    O = "optim.py"
    for rule, state in (("sgd", ()), ("sgd_momentum", ("velocity",)), ("rmsprop", ("cache",)), ("adam", ("m", "v"))):
        out.append(CallCheck(f"optim.{rule} (public inputs)", O, f"optim.{rule}", 1, case=_optim_case(rule, state),
                             outs={"next_w": [0]}, mutated={k: (2, k) for k in state}, tol=1e-7,
                             fast=True, group="optim"))
    return out


def _optim_case(rule, state):
    def make(rng):
        shape = (4, 5)
        arrays = {"w": rng.standard_normal(shape), "dw": rng.standard_normal(shape)}
        config = {"learning_rate": 1e-2}
        for k in state:
            arrays[k] = rng.random(shape) * 0.1
            config[k] = A(k)
        if rule == "adam":
            config["t"] = 5
        return Case(arrays, [A("w"), A("dw"), config])
    return make


VISIBLE = _layer_checks() + _other_visible()


def release_mode() -> bool:
    """True in a student release: the hidden module (and the reference solution) is absent."""
    # The file's presence decides, so that a broken hidden module fails loudly instead of hiding its checks.
    here = Path(__file__).parent
    return not ((here / "hidden.py").is_file() or (here / "hidden").is_dir())


def all_checks(visible_only: bool = False) -> list:
    checks = list(VISIBLE)
    if not visible_only and not release_mode():
        from grader.checks import hidden

        checks += hidden.CHECKS
    names = [c.name for c in checks]
    assert len(set(names)) == len(names), "check names must be unique"
    return checks


def build_public_expected(path) -> Path:
    """Evaluate every visible check's public inputs with the trusted reference; write an .npz (no pickle).

    ``path`` is the output file or a directory (then ``public_expected.npz`` in it).
    """
    path = Path(path)
    if path.is_dir() or path.suffix != ".npz":
        path = path / PUBLIC_EXPECTED.name
    store = {}
    for check in VISIBLE:
        prep = check.prepare(check.rng(0), "c.")
        for key, value in check.expected(prep.state).items():
            store[f"{check.name}/{key}"] = np.asarray(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **store)
    tmp.replace(path)
    return path


def load_public_expected(check) -> dict:
    if not PUBLIC_EXPECTED.is_file():
        raise FileNotFoundError(f"{PUBLIC_EXPECTED} is missing: the release should ship it")
    out = {}
    with np.load(PUBLIC_EXPECTED, allow_pickle=False) as z:
        for key in z.files:
            name, _, sub = key.rpartition("/")
            if name == check.name:
                out[sub] = z[key]
    return out
