"""Feedback for a failing check: what was called, where the answer differs, and the likely cause.

:func:`report` writes the text a student reads (results.json's ``output``);
the diagnosis comes from :mod:`grader.feedback.diagnosis` (known wrong
variants evaluated on the same inputs, and patterns in the difference).
Everything here runs in the parent, only for failing checks.
"""
from __future__ import annotations

import numpy as np

from grader.compare import Comparison

__all__ = ["report", "array_diff"]

MAX_CAUSES = 2
SMALL = 36  # arrays up to this many elements per slice are printed


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _slice_of(a: np.ndarray, index: tuple):
    """The last two axes of ``a`` at the leading indices of ``index`` (a 2-D slice to print), and its label."""
    if a.ndim <= 2:
        return a, ""
    lead = tuple(index[: a.ndim - 2])
    return a[lead], "[" + ", ".join(str(i) for i in lead) + ", :, :]"


def array_diff(c: Comparison) -> list:
    """Lines describing where an answer differs: the worst elements and, if small, a slice of each side."""
    got, want = c.got, c.want
    lines = [c.line()]
    if c.worst:
        cells = "; ".join(f"[{', '.join(map(str, i))}] expected {_fmt(e)}, got {_fmt(g)}" for i, e, g in c.worst)
        lines.append(f"  largest differences: {cells}")
        if got.shape == want.shape and got.ndim >= 1:
            w, label = _slice_of(want, c.worst[0][0])
            g, _ = _slice_of(got, c.worst[0][0])
            if w.size <= SMALL:
                opts = dict(precision=4, suppress_small=True, max_line_width=100)
                lines.append(f"  expected{label} =\n    " + np.array2string(np.asarray(w), **opts).replace(
                    "\n", "\n    "))
                lines.append(f"  got{label} =\n    " + np.array2string(np.asarray(g), **opts).replace("\n", "\n    "))
    return lines


def _error_lines(answers) -> list:
    lines = []
    for task, e in answers.errors.items():
        where = e.get("where")
        at = f"\n  at {where['file']}:{where['line']}: {where['text']}" if where else ""
        lines.append(f"Your code raised {e['type']}: {e['message']}{at}")
    return lines


def report(check, prep, expected, answers, judgement, public: bool) -> tuple[str, list]:
    """``(output text, likely causes)`` for a failing check."""
    from grader.feedback.diagnosis import diagnose

    lines = [f"Call: {check.describe(prep)}"]
    lines += _error_lines(answers)
    for problem in judgement.problems:
        if not any(problem.endswith(e["message"]) or e["message"] in problem for e in answers.errors.values()):
            lines.append(problem)
    for c in judgement.comparisons:
        if not isinstance(c, Comparison):
            continue
        if c.ok:
            lines.append(f"{c.name}: ok")
            continue
        lines += array_diff(c)
    lines += judgement.notes
    try:
        causes = [c for c in diagnose(check, prep, expected, answers) if c][:MAX_CAUSES]
    except Exception:  # noqa: BLE001 - a diagnosis is a bonus; it never costs the student their feedback
        causes = []
    lines += [f"Likely cause: {c}" for c in causes]
    if public:
        lines.append(f'Run it yourself on the public inputs (same shapes and parameters): '
                     f'python -m grader --explain "{check.name}"')
    return "\n".join(lines), causes
