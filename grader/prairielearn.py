"""PrairieLearn's external-grader results, converted from Gradescope's results.json.

The conversion is a pure function of the Gradescope-format dict (what
:func:`grader.__main__.grade_one` returns and ``--json`` writes), so it does not
depend on how the grader computed it. PrairieLearn's format: ``gradable``,
``score`` in [0, 1], ``message``, ``output`` and ``tests`` (``name``,
``description``, ``points``, ``max_points``, ``message``, ``output``); the whole
file must stay under 1 MB.

PrairieLearn shows every test it receives, so tests that Gradescope would hide
(``visibility`` ``hidden``, ``after_due_date`` or ``after_published``) are folded
into one "Hidden checks" entry that carries their points and how many passed,
without names or output. A grader failure (no tests) is reported as not
gradable: the student keeps the attempt and sees the message.
"""
from __future__ import annotations

import json
import math

__all__ = ["to_prairielearn", "diagnosis_lines", "HIDDEN_VISIBILITIES", "SIZE_LIMIT"]

HIDDEN_VISIBILITIES = frozenset({"hidden", "after_due_date", "after_published"})
# PrairieLearn refuses results larger than 1 MB; keep a margin for its own wrapping.
SIZE_LIMIT = 900_000
FAILURE_MESSAGE = "The autograder could not grade this submission; please tell the course staff."


def _number(value, default=0.0) -> float:
    """A finite float, or ``default`` for anything else (bools, strings, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    value = float(value)
    return value if math.isfinite(value) else default


def _points(test: dict) -> tuple:
    """``(points, max_points)``: non-negative, points at most max_points."""
    top = max(0.0, _number(test.get("max_score")))
    return min(top, max(0.0, _number(test.get("score")))), top


def _text(value) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def diagnosis_lines(test: dict) -> list:
    """The test's ``extra_data["diagnosis"]`` as a list of non-empty strings (a string or a list of them)."""
    extra = test.get("extra_data")
    raw = extra.get("diagnosis") if isinstance(extra, dict) else None
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        return []
    return [line.strip() for line in raw if isinstance(line, str) and line.strip()]


def _failure(results) -> dict:
    output = _text(results.get("output")) if isinstance(results, dict) else ""
    if not output:
        output = "The grader returned no results."
    return {"gradable": False, "score": 0.0, "message": FAILURE_MESSAGE, "format_errors": [output],
            "output": output, "tests": []}


def _passed(test: dict, points: float, max_points: float) -> bool:
    status = test.get("status")
    if status in ("passed", "failed"):
        return status == "passed"
    return points >= max_points


def _visible_test(test: dict) -> dict:
    points, max_points = _points(test)
    output = _text(test.get("output"))
    passed = _passed(test, points, max_points)
    first = output.strip().splitlines()[0] if output.strip() else ""
    message = "passed" if passed else (first or "failed")
    if not passed:
        message += "".join(f"\nLikely cause: {line}" for line in diagnosis_lines(test))
    tags = test.get("tags") if isinstance(test.get("tags"), list) else []
    return {"name": _text(test.get("name")) or "unnamed check",
            "description": ", ".join(_text(t) for t in tags),
            "points": points, "max_points": max_points, "message": message, "output": output}


def _hidden_summary(tests: list) -> dict:
    pairs = [_points(t) for t in tests]
    points, max_points = sum(p for p, _ in pairs), sum(m for _, m in pairs)
    passed = sum(_passed(t, p, m) for t, (p, m) in zip(tests, pairs))
    return {"name": "Hidden checks",
            "description": "secret inputs and timing; their details are not shown",
            "points": points, "max_points": max_points,
            "message": f"{passed} of {len(tests)} hidden checks passed", "output": ""}


def _fit(doc: dict, limit: int) -> dict:
    """Shorten the tests' output (then the overall output) until the JSON is under ``limit`` bytes."""
    def size():
        return len(json.dumps(doc).encode())

    cap = max([len(t["output"]) for t in doc["tests"]] + [0])
    while size() > limit and cap > 0:
        cap //= 2
        for t in doc["tests"]:
            if len(t["output"]) > cap:
                t["output"] = t["output"][:cap] + ("\n[truncated]" if cap else "")
    if size() > limit:
        doc["output"] = doc["output"][: max(0, limit // 4)] + "\n[truncated]"
    return doc


def to_prairielearn(results, *, show_hidden: bool = False, limit: int = SIZE_LIMIT) -> dict:
    """Convert a Gradescope results.json dict to PrairieLearn's external-grader results.

    Parameters
    ----------
    results : dict
        Gradescope's format: ``score``, ``output``, ``tests`` (each with ``name``,
        ``score``, ``max_score``, ``status``, ``output``, ``visibility``, ``tags``,
        ``extra_data``). Anything malformed, or an empty ``tests`` list (what the
        grader writes when it fails), gives a not-gradable result.
    show_hidden : bool
        List hidden tests one by one (for staff) instead of one summary entry.
    limit : int
        Maximum size of the JSON in bytes; test outputs are truncated to fit.

    Returns
    -------
    dict
        ``gradable``, ``score`` in [0, 1], ``message``, ``output``, ``tests``
        (``name``, ``description``, ``points``, ``max_points``, ``message``,
        ``output``); with ``gradable`` false, ``format_errors`` too.
    """
    if not isinstance(results, dict):
        return _failure(results)
    tests = results.get("tests")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, dict) for t in tests):
        return _failure(results)
    shown, hidden = [], []
    for t in tests:
        hide = not show_hidden and t.get("visibility", "visible") in HIDDEN_VISIBILITIES
        (hidden if hide else shown).append(t)
    out_tests = [_visible_test(t) for t in shown]
    if hidden:
        out_tests.append(_hidden_summary(hidden))
    total = sum(_points(t)[1] for t in tests)
    earned = _number(results.get("score"), default=sum(_points(t)[0] for t in tests))
    score = min(1.0, max(0.0, earned / total)) if total > 0 else 0.0
    output = _text(results.get("output"))
    message = output.strip().splitlines()[0] if output.strip() else f"Score: {earned:g} / {total:g}"
    doc = {"gradable": True, "score": round(score, 6), "message": message, "output": output, "tests": out_tests}
    return _fit(doc, limit)
