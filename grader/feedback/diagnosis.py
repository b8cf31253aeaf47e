"""The likely cause of a wrong answer: known wrong variants, and patterns in the difference.

:func:`diagnose` runs in the parent, only for a failing check. It looks at
the evidence two ways:

* the misconception catalogue (:mod:`grader.feedback.misconceptions`): each
  known mistake is computed on the check's own inputs; when the student's
  answers match it on every judged answer it changes (and not the reference),
  its cause is reported;
* structural detectors (:mod:`grader.feedback.detectors`): a constant ratio to
  the expected values, errors only where windows overlap or touch the padding,
  a transposed result, a shape that is the padded, flattened or ceil-rounded
  one, a changed dtype, an update that goes uphill.

At most :data:`MAX_CAUSES` causes come back, catalogue first, each one line in
the student's terms. A student release ships without the catalogue (its
variants are working solutions), so there only the detectors speak.
"""
from __future__ import annotations

import numpy as np

from grader.compare import compare, scale_of

__all__ = ["diagnose", "Case", "MAX_CAUSES", "MAX_CHARS"]

MAX_CAUSES = 2
MAX_CHARS = 300


class Case:
    """One failing check's evidence under logical names ("out", "dx", "loss", "g:W1", "next_w", ...).

    ``kind`` is one of forward, backward, state, dropout, loss, init, kaiming, optim, other.
    """

    def __init__(self, check, prep, expected, answers):
        from grader.checks.layer import DropoutCheck, LayerBackward, LayerForward, LayerState
        from grader.checks.model import KaimingCheck, ModelInit, ModelLoss
        from grader.checks.optim import OptimStep

        self.check, self.prep, self.expected, self.answers = check, prep, expected, answers
        self.layer = getattr(check, "layer", None)
        self.arrays, self.params, self.scale = {}, {}, 1.0
        self.dtype = "float64"
        self.dout = None
        self.keys = {}  # logical name -> check key
        self.judged = []  # logical names the verdict depends on
        if isinstance(check, (LayerForward, LayerBackward, LayerState, DropoutCheck)):
            call = prep.state["call"]
            self.arrays = {k: np.asarray(v) for k, v in call.arrays.items()}
            self.params = call.params
            self.dtype = check.geometry.dtype
            self.scale = scale_of(*call.arrays.values(), *[v for p in call.params.values() for v in p.values()
                                                           if isinstance(v, np.ndarray)])
        if isinstance(check, LayerForward):
            self.kind = "forward"
            self.keys, self.judged = {"out": "fwd.out"}, ["out"]
        elif isinstance(check, LayerBackward):
            self.kind = "backward"
            self.dout = prep.state["dout"]
            grads = list(check.spec.grads)
            self.keys = {"out": "fb.out", **{g: f"fb.d{k}" for k, g in enumerate(grads)}}
            self.judged = grads
            self.scale = scale_of(self.scale, self.dout, *(expected.get(f"fb.d{k}", 0) for k in range(len(grads))))
        elif isinstance(check, LayerState):
            self.kind = "state"
            self.keys = {key: f"state.{key}" for _, key in check.spec.mutates}
            self.judged = list(self.keys)
        elif isinstance(check, DropoutCheck):
            self.kind = "dropout"
            self.dout = prep.state["dout"]
        elif isinstance(check, ModelLoss):
            self.kind = "loss"
            self.keys = {"loss": "loss.loss"}
            if not check.initial:
                self.keys.update({f"g:{k}": f"loss.g:{k}" for k in prep.state["keys"]})
            if check.scores:
                self.keys["scores"] = "scores.scores"
            self.judged = list(self.keys)
            self.scale = scale_of(prep.state["X"], *prep.state["params"].values())
        elif isinstance(check, ModelInit):
            self.kind = "init"
            self.keys = {f"p:{k}": f"init.p:{k}" for k in prep.state["keys"]}
            self.judged = list(self.keys)
        elif isinstance(check, KaimingCheck):
            self.kind = "kaiming"
            self.keys, self.judged = {"w": "w.w"}, ["w"]
        elif isinstance(check, OptimStep):
            from grader.sandbox import wire

            self.kind = "optim"
            self.config = wire.decode(prep.state["config"], prep.state["inputs"])
            names = ["next_w", *_optim_state(check)]
            self.keys = {n: f"step.{n}" for n in names}
            self.judged = names
            self.scale = scale_of(prep.state["dw"])
        else:
            self.kind = "other"

    # -- answers

    def got(self, name):
        """The student's answer under a logical name, wrong-shaped ones included (None if absent)."""
        key = self.keys.get(name)
        if key is None:
            return None
        value = self.answers.values.get(key)
        return self.answers.raw.get(key) if value is None else value

    def want(self, name):
        key = self.keys.get(name)
        return None if key is None else self.expected.get(key)

    def problem(self, name):
        key = self.keys.get(name)
        return None if key is None else self.answers.problems.get(key)

    def allow(self, name) -> float:
        key = self.keys.get(name, "")
        if key.startswith("fb.d"):
            return 2 * float(self.expected.get("fb.fd_error" + key[4:], 0.0))
        return 0.0

    def _pair(self, name, a, b, allow=0.0) -> bool:
        """``a`` and ``b`` agree within the check's tolerance (never when their shapes differ)."""
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if self.kind == "optim" and name == "next_w":
            w = self.prep.state["w"]
            a, b = a - w, b - w
            scale = scale_of(b, self.prep.state["dw"]) * 1e-2
        else:
            scale = scale_of(b, self.scale)
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            return bool(np.array_equal(a, b, equal_nan=True))
        return compare(name, a, b, scale=scale, dtype=self.dtype, allow=allow).ok

    def shape(self, name):
        """The expected answer's shape (random initialisations have a shape but no expected values)."""
        if self.kind == "kaiming":
            return tuple(self.prep.state["shape"])
        want = self.want(name)
        return None if want is None else tuple(np.shape(want))

    def correct(self, name) -> bool:
        got, want = self.got(name), self.want(name)
        if self.kind in ("init", "kaiming"):
            return self.problem(name) is None  # random draws: the judge decides on statistics
        if self.problem(name) is not None or got is None or want is None:
            return False
        return self._pair(name, got, want, self.allow(name))

    def failing(self) -> list:
        """Judged names whose answer is missing or differs from the expected one."""
        return [n for n in self.judged if not self.correct(n)]

    def explains(self, predicted: dict) -> list:
        """The judged names a variant changes, if the student matches it on all of them (else [])."""
        changed = []
        for name, value in predicted.items():
            if name not in self.judged or value is None:
                continue
            want = self.want(name)
            if want is not None and self._pair(name, value, want, self.allow(name)):
                continue  # this answer is the same under the variant
            got = self.got(name)
            if got is None:
                # A variant that overflows explains an answer refused for holding NaN or infinity.
                if np.all(np.isfinite(value)) or "NaN or infinity" not in (self.problem(name) or ""):
                    return []
            elif not self._pair(name, got, value):
                return []
            changed.append(name)
        return changed


def _optim_state(check) -> list:
    from grader.checks.optim import RULES

    return [*RULES[check.rule], *(("t",) if check.rule == "adam" else ())]


def _catalogue(case) -> list:
    """The catalogue's matches; none in a student release, which leaves the catalogue out (it holds solutions)."""
    try:
        from grader.feedback import misconceptions
    except ImportError:
        return []
    return misconceptions.find(case)


def _clean(cause: str) -> str:
    line = " ".join(str(cause).split())
    return line if len(line) <= MAX_CHARS else line[:MAX_CHARS - 3].rstrip() + "..."


def diagnose(check, prep, expected, answers) -> list:
    """Up to :data:`MAX_CAUSES` likely causes of a failing check, most specific first."""
    from grader.feedback import detectors

    case = Case(check, prep, expected, answers)
    if case.kind == "other":
        return []
    causes, explained = [], set()
    for cause, names in _catalogue(case):
        causes.append(_clean(cause))
        explained |= set(names or case.judged or ["*"])
    for cause, name in detectors.find(case):
        if (name is None and causes) or name in explained:
            continue  # the catalogue already explains this answer
        causes.append(_clean(cause))
    unique = []
    for cause in causes:
        if cause not in unique:
            unique.append(cause)
    return unique[:MAX_CAUSES]
