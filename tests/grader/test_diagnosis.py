"""The diagnosis without a sandbox: the variants' formulas, every catalogued mistake on every check's inputs,
each structural detector on a hand-made wrong answer, and the limits on what a student reads.

Answers are built in the test (as the parent would hold them after validation), so each case runs in
milliseconds; the mutation suite (test_mutants.py) checks the same causes through the real grader.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convnet import layers, models, optim
from convnet.specs import LAYERS
from grader.checks import all_checks
from grader.checks.layer import DropoutCheck, LayerBackward, LayerForward, LayerState
from grader.checks.model import KaimingCheck, ModelLoss
from grader.checks.optim import OptimStep
from grader.feedback import detectors, misconceptions
from grader.feedback import variants as V
from grader.feedback.diagnosis import MAX_CAUSES, MAX_CHARS, Case, diagnose

CHECKS = all_checks()
SEEDS = (0, 1, 2)


class Answers:
    """What the parent holds after validating a child's answers (the attributes diagnose reads)."""

    def __init__(self, values=None, raw=None, problems=None, errors=None):
        self.values, self.raw = dict(values or {}), dict(raw or {})
        self.problems, self.errors = dict(problems or {}), dict(errors or {})


def check_named(name):
    return next(c for c in CHECKS if c.name == name)


def prepared(check, seed=0):
    prep = check.prepare(check.rng(seed, public=False), "c.")
    return prep, check.expected(prep)


def as_student(expected, **replace):
    """Answers equal to the expected ones (float64 bookkeeping entries dropped), some replaced."""
    values = {k: np.array(v) for k, v in expected.items() if "fd_error" not in k}
    raw, problems = {}, {}
    for key, value in replace.items():
        key = key.replace("__", ".")
        want = values.get(key)
        if want is not None and (np.shape(value) != want.shape or np.asarray(value).dtype != want.dtype):
            values.pop(key)
            raw[key] = np.asarray(value)
            problems[key] = f"answer has shape {np.shape(value)} or dtype {np.asarray(value).dtype}"
        else:
            values[key] = np.asarray(value, dtype=want.dtype if want is not None else None)
    return Answers(values, raw, problems)


def causes_for(name, seed=0, **replace):
    check = check_named(name)
    prep, expected = prepared(check, seed)
    return diagnose(check, prep, expected, as_student(expected, **replace)), check, prep, expected


# ---------------------------------------------------------------- the variants are right with no switch set


LAYER_CHECKS = [c for c in CHECKS if isinstance(c, (LayerForward, LayerBackward, LayerState))]


@pytest.mark.parametrize("check", LAYER_CHECKS, ids=lambda c: c.name)
def test_unswitched_variants_equal_the_reference(check):
    """Every layer formula of the variants module, with no mistake switched on, reproduces the reference."""
    prep, expected = prepared(check, seed=3)
    case = Case(check, prep, expected, Answers())
    if case.layer not in misconceptions.EVALUATE:
        pytest.skip(f"{case.layer} has no formula")
    got = misconceptions.EVALUATE[case.layer](case, {}, {})
    spec = LAYERS[check.layer]
    call = prep.state["call"].copy()
    out, cache = spec.naive_class.forward(*call.args())
    tol = dict(rtol=1e-4, atol=1e-5) if check.geometry.dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["out"], out, **tol)
    for param, key in spec.mutates:
        np.testing.assert_allclose(got[key], call.params[param][key], **tol)
    if isinstance(check, LayerBackward):
        grads = getattr(spec.naive_class, check.method)(prep.state["dout"], cache)
        grads = grads if isinstance(grads, tuple) else (grads,)
        for name, g in zip(spec.grads, grads):
            np.testing.assert_allclose(got[name], g, **tol)


@pytest.mark.parametrize("rule", ["sgd", "sgd_momentum", "rmsprop", "adam"])
@pytest.mark.parametrize("fresh", [False, True])
def test_unswitched_update_rules_equal_the_reference(rule, fresh):
    rng = np.random.default_rng(4)
    w, dw = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    config = {"learning_rate": 0.05}
    if not fresh:
        state = {"sgd": {}, "sgd_momentum": {"velocity": 0}, "rmsprop": {"cache": 0}, "adam": {"m": 0, "v": 0}}[rule]
        config.update({k: rng.random((3, 4)) for k in state})
        if rule == "adam":
            config["t"] = 7
    next_w, state = V.update(rule, w, dw, dict(config))
    ref_w, ref_config = getattr(optim, rule)(w.copy(), dw.copy(), dict(config))
    np.testing.assert_allclose(next_w, ref_w, rtol=1e-12, atol=1e-15)
    for k, v in state.items():
        np.testing.assert_allclose(v, ref_config[k], rtol=1e-12, atol=1e-15)


def test_fcn_loss_equals_the_reference_model_with_its_seeded_dropout():
    net = models.FullyConnectedNet([6, 5], input_dim=12, num_classes=4, dropout=0.3, reg=0.0, dtype=np.float64,
                                   seed=3)
    rng = np.random.default_rng(5)
    net.params = {k: 0.5 * rng.standard_normal(v.shape) for k, v in net.params.items()}
    X, y = rng.standard_normal((6, 12)), rng.integers(0, 4, 6)
    loss, grads = net.loss(X, y)
    mine, my_grads = V.fcn_loss(net.params, X, y, layers=3, p=0.3, seed=3)
    assert mine == pytest.approx(loss, rel=1e-12)
    for k, g in grads.items():
        np.testing.assert_allclose(my_grads[k], g, rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------- every catalogued mistake is recognised where it shows


def _layer_cases():
    for check in LAYER_CHECKS:
        spec = LAYERS[check.layer]
        for m in misconceptions.CATALOGUE:
            if spec.name in m.applies and spec.name in misconceptions.EVALUATE:
                yield pytest.param(check, m, id=f"{check.name} | {m.cause[:50]}")


@pytest.mark.parametrize("check, mistake", list(_layer_cases()))
def test_a_catalogued_layer_mistake_is_diagnosed_wherever_it_changes_a_judged_answer(check, mistake):
    """Answers computed with the mistake: diagnose names it, unless these inputs cannot show it."""
    prep, expected = prepared(check, seed=1)
    case = Case(check, prep, expected, Answers())
    wrong = misconceptions.EVALUATE[check.layer](case, mistake.fwd, mistake.bwd)
    replace = {case.keys[n].replace(".", "__"): v.astype(check.geometry.dtype) for n, v in wrong.items()
               if n in case.keys and v is not None}
    answers = as_student(expected, **replace)
    student = Case(check, prep, expected, answers)
    if not student.failing():
        return  # the mistake makes no difference on these inputs (a ceil that equals the floor, no padding...)
    found = [c for c, _ in misconceptions.find(student)]
    assert mistake.cause in found
    causes = diagnose(check, prep, expected, answers)
    assert 1 <= len(causes) <= MAX_CAUSES


def test_the_right_answers_match_no_misconception():
    for check in CHECKS:
        if not isinstance(check, (LayerForward, LayerBackward, LayerState, ModelLoss, OptimStep)):
            continue
        prep, expected = prepared(check, seed=2)
        assert misconceptions.find(Case(check, prep, expected, as_student(expected))) == [], check.name


@pytest.mark.parametrize("seed", SEEDS)
def test_two_mistakes_in_one_backward_give_two_causes(seed):
    check = check_named("Conv.backward: stride 2, pad 1, non-square 3x2 kernel")
    prep, expected = prepared(check, seed)
    call = prep.state["call"]
    x, w = call.arrays["x"], call.arrays["w"]
    dx, _, _ = V.conv_backward(x, w, prep.state["dout"], 2, 1, flip=True)
    _, _, db = V.conv_backward(x, w, prep.state["dout"], 2, 1, db_mean=True)
    causes = diagnose(check, prep, expected, as_student(expected, fb__d0=dx, fb__d2=db))
    assert len(causes) == 2
    assert any("rotated by 180 degrees" in c for c in causes) and any("averages db" in c for c in causes)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mistake, expect", [
    (dict(loss_w=0.5, grad_w=0.5), "0.5 factor"), (dict(grad_w=0.0), "not in the gradients"),
    (dict(loss_w=0.0), "not in the loss"), (dict(biases=True), "biases"),
    (dict(data_factor=lambda case: 6), "summed over the batch"),
    (dict(data_factor=lambda case: 6, grads_only=True), "not divided by N"),
])
def test_model_regularisation_mistakes(seed, mistake, expect):
    check = check_named("TwoLayerNet loss and gradients (reg 0.1)")
    prep, expected = prepared(check, seed)
    case = Case(check, prep, expected, Answers())
    wrong = misconceptions._reg_variant(**mistake)(case)
    causes = diagnose(check, prep, expected, as_student(expected, **{"loss__" + k: v for k, v in wrong.items()}))
    assert any(expect in c for c in causes), causes


@pytest.mark.parametrize("seed", SEEDS)
def test_fcn_without_dropout_backward(seed):
    check = check_named("FullyConnectedNet loss and gradients (dropout 0.3, reg 0.05)")
    prep, expected = prepared(check, seed)
    st_ = prep.state
    loss, grads = V.fcn_loss(st_["params"], st_["X"], st_["y"], layers=3, p=0.3, seed=3, dropout_backward=False)
    reg = check.kwargs["reg"]
    replace = {f"loss__g:{k}": g + (2 * reg * st_["params"][k] if k.startswith("W") else 0) for k, g in grads.items()}
    causes = diagnose(check, prep, expected, as_student(expected, **replace))
    assert any("Dropout.backward" in c for c in causes), causes


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name, switches, expect", [
    ("optim.sgd_momentum", dict(sign=-1.0), "wrong sign"),
    ("optim.sgd_momentum", dict(old_velocity=True), "old velocity"),
    ("optim.rmsprop: the first step (config=None state)", dict(eps_inside=True), "inside the square root"),
    ("optim.rmsprop", dict(decay_swapped=True), "decay_rate"),
    ("optim.adam", dict(t_after=True), "t is incremented after"),
    ("optim.adam: other hyper-parameters", dict(bias_correction=False), "bias correction"),
])
def test_update_rule_mistakes(seed, name, switches, expect):
    check = check_named(name)
    prep, expected = prepared(check, seed)
    case = Case(check, prep, expected, Answers())
    next_w, state = V.update(check.rule, prep.state["w"], prep.state["dw"], case.config, **switches)
    replace = {"step__next_w": next_w, **{f"step__{k}": v for k, v in state.items()}}
    answers = as_student(expected, **replace)
    assert Case(check, prep, expected, answers).failing(), "the mistake must show on these inputs"
    causes = diagnose(check, prep, expected, answers)
    assert any(expect in c for c in causes), causes


def test_adam_first_step_with_t_after_the_correction_overflows_and_is_still_diagnosed():
    check = check_named("optim.adam: the first step (config=None state)")
    prep, expected = prepared(check)
    answers = as_student(expected)
    answers.values.pop("step.next_w")
    answers.problems["step.next_w"] = "answer holds NaN or infinity"
    causes = diagnose(check, prep, expected, answers)
    assert any("t is incremented after" in c for c in causes), causes


# ---------------------------------------------------------------- structural detectors on hand-made answers


def _bump_shared(e):
    from convnet.stride import overlap_count

    e = e.copy()
    e[:, :, overlap_count(e.shape[2:], 3, 2) > 1] += 1.0
    return e


def _set_rows(e, rows, value=None, factor=1.0):
    e = e.copy()
    e[:, :, rows, :] = e[:, :, rows, :] * factor if value is None else value
    return e


AVG_OVERLAP = "AvgPool.backward: 3x3 window, stride 1: overlapping windows"
LINEAR_FLAT = "Linear.backward: x (4, 3, 2): the batch and the flattening"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name, key, make, expect", [
    (AVG_OVERLAP, "fb__d0", lambda e: e / 9, "1/(pool_height * pool_width (the window size))"),
    (AVG_OVERLAP, "fb__d0", lambda e: -e, "opposite sign"),
    ("MaxPool.backward vs finite differences", "fb__d0", _bump_shared, "several windows"),
    ("AvgPool.forward: 3x2 window, stride 2, pad 1: padding counts in the divisor", "fwd__out",
     lambda e: _set_rows(e, 0, factor=1.5), "cover the padding"),
    ("Conv.forward: pad 0", "fwd__out", lambda e: e + np.arange(1.0, 1.0 + e.shape[1])[None, :, None, None],
     "constant for each filter"),
    ("MaxPool.forward: stride 3 that does not divide (floor)", "fwd__out", lambda e: _set_rows(e, -1, 0.123),
     "last index of H (rows)"),
    ("Conv.forward", "fwd__out", lambda e: e.swapaxes(2, 3), "H (rows) and W (columns) swapped"),
    ("Conv.backward: stride 2, pad 1, non-square 3x2 kernel", "fb__d0",
     lambda e: np.pad(e, ((0, 0), (0, 0), (1, 1), (1, 1))), "padded shape"),
    (LINEAR_FLAT, "fb__d0", lambda e: e.reshape(4, 6), "flattened"),
    (LINEAR_FLAT, "fb__d1", lambda e: e.T.copy(), "transposed"),
    ("Conv.backward: pad 0", "fb__d0", lambda e: e[:, :, 0:0, 0:0], "p:-p"),
    ("MaxPool.forward: stride 3 that does not divide (floor)", "fwd__out",
     lambda e: np.zeros(e.shape[:2] + (3, 3)), "ceil"),
    ("Conv.backward: pad 0", "fb__d2", lambda e: e[None, :, None, None], "keepdims"),
    ("ReLU.forward: float32 keeps its dtype", "fwd__out", lambda e: e.astype(np.float64), "float64"),
])
def test_structural_detectors(seed, name, key, make, expect):
    """A hand-made wrong answer with one pattern: the detector names it (no catalogued mistake explains it)."""
    check = check_named(name)
    prep, expected = prepared(check, seed)
    causes = diagnose(check, prep, expected, as_student(expected, **{key: make(expected[key.replace("__", ".")])}))
    assert any(expect in c for c in causes), causes


def test_an_update_that_goes_uphill_by_an_unknown_rule():
    check = check_named("optim.sgd")
    prep, expected = prepared(check)
    w = prep.state["w"]
    uphill = w + 0.7 * (w - expected["step.next_w"]) + 1e-3 * np.sin(w)
    causes = diagnose(check, prep, expected, as_student(expected, step__next_w=uphill))
    assert any("uphill" in c for c in causes), causes


def test_an_exception_from_a_float_size():
    check = check_named("Conv.forward")
    prep, expected = prepared(check)
    answers = Answers(problems={"fwd.out": "your code raised TypeError"},
                      errors={"fwd": {"type": "TypeError", "message": "'float' object cannot be interpreted as an "
                                                                     "integer", "where": None}})
    assert any("// (floor division)" in c for c in diagnose(check, prep, expected, answers))


@pytest.mark.parametrize("seed", SEEDS)
def test_kaiming_spread_off_by_k(seed):
    check = check_named("kaiming_initializer for a convolution (fan_in = Din * K * K)")
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((64, 16, 3, 3)).astype(np.float32) * math.sqrt(2 / 16)
    prep = check.prepare(rng, "c.")
    causes = diagnose(check, prep, {}, Answers(values={"w.w": w}))
    assert any("Din * K * K" in c for c in causes), causes


@pytest.mark.parametrize("seed", SEEDS)
def test_dropout_with_p_as_the_keep_probability(seed):
    check = check_named("Dropout.forward")
    prep, _ = prepared(check, seed)
    x, p = prep.state["call"].arrays["x"], 0.3
    keep = np.random.default_rng(seed).random(x.shape) < p
    values = {"tr.out": x * keep / p, "te.out": x.copy()}
    causes = diagnose(check, prep, {}, Answers(values=values))
    assert any("probability of keeping" in c for c in causes), causes


# ---------------------------------------------------------------- what a student reads


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(CHECKS) - 1), shape=st.lists(st.integers(0, 4), max_size=4),
       fill=st.sampled_from([0.0, 1.0, np.nan, 1e300]), dtype=st.sampled_from(["float32", "float64", "int64"]))
def test_diagnose_never_fails_and_stays_short(index, shape, fill, dtype):
    """Arbitrary answers (any shape, dtype, NaN) give at most two one-line causes, never an exception."""
    check = CHECKS[index]
    if getattr(check, "timing", False) or type(check).__name__ in ("EnvironmentCheck", "FastSpeedCheck"):
        return
    try:
        prep, expected = prepared(check)
    except Exception:  # noqa: BLE001 - checks that need a child to prepare are out of scope here
        return
    with np.errstate(over="ignore", invalid="ignore"):
        junk = np.zeros(shape, dtype) if dtype == "int64" else np.full(shape, fill).astype(dtype)
    keys = [k for k in expected if "fd_error" not in k] or ["fwd.out"]
    answers = Answers(raw={k: junk for k in keys}, problems={k: "answer has the wrong shape" for k in keys})
    causes = diagnose(check, prep, expected, answers)
    assert len(causes) <= MAX_CAUSES
    for c in causes:
        assert isinstance(c, str) and "\n" not in c and 0 < len(c) <= MAX_CHARS


def test_causes_are_short_single_lines_without_reference_code():
    reference = "\n".join(Path(m.__file__).read_text() for m in (layers, models, optim))
    lines = {ln.strip() for ln in reference.splitlines() if len(ln.strip()) > 25}
    for m in misconceptions.CATALOGUE:
        assert len(m.cause) <= MAX_CHARS and "\n" not in m.cause
        assert not any(ln in m.cause for ln in lines), m.cause


def test_readme_lists_every_misconception_and_detector():
    readme = Path(__file__).resolve().parents[2] / "README.md"
    text = re.sub(r"\s+", " ", readme.read_text())
    for row in (misconceptions.table() + "\n" + detectors.table()).splitlines():
        assert re.sub(r"\s+", " ", row) in text, row


def test_without_the_catalogue_the_detectors_still_speak(monkeypatch):
    """A student release leaves the catalogue out: the diagnosis falls back to the structural detectors."""
    import grader.feedback

    monkeypatch.setitem(sys.modules, "grader.feedback.misconceptions", None)  # as if the file were absent
    monkeypatch.delattr(grader.feedback, "misconceptions", raising=False)
    check = check_named("AvgPool.backward: 3x3 window, stride 1: overlapping windows")
    prep, expected = prepared(check)
    causes = diagnose(check, prep, expected, as_student(expected, fb__d0=9 * expected["fb.d0"]))
    assert causes == ["dx is exactly pool_height * pool_width (the window size) times the expected values: a "
                      "division by pool_height * pool_width is missing."]


def test_the_release_leaves_out_every_feedback_file_that_holds_solution_text():
    from grader.release.leaks import leak_lines
    from grader.release.manifest import EXCLUDED

    root = Path(__file__).resolve().parents[2]
    needles = {line for f in ("layers.py", "models.py", "optim.py")
               for _, line in leak_lines((root / "convnet" / f).read_text(), f"convnet/{f}")}
    holding = {p.relative_to(root).as_posix() for p in (root / "grader" / "feedback").glob("*.py")
               if needles & {ln.strip() for ln in p.read_text().splitlines()}}
    assert holding and holding <= set(EXCLUDED), holding - set(EXCLUDED)
    assert "grader/feedback/misconceptions.py" in EXCLUDED and "grader/feedback/variants.py" in EXCLUDED
