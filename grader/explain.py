"""``python -m grader --explain "CHECK NAME"``: a visible check's public inputs and call, as code to run.

The code rebuilds the exact public inputs from the generator the grader
uses (so it stays short), calls the function the check grades, and compares
the result with the expected values, printed as literals when small.
"""
from __future__ import annotations

import numpy as np

__all__ = ["explain", "literal", "find_check"]

MAX_LITERAL = 2000


def literal(name: str, value) -> str:
    """``name = np.array([...], dtype=...)`` reproducing ``value`` exactly (or a comment when large)."""
    a = np.asarray(value)
    if a.size > MAX_LITERAL:
        return f"# {name}: an array of shape {a.shape}, too large to print here"
    with np.printoptions(precision=17, floatmode="unique", threshold=MAX_LITERAL + 1, linewidth=110):
        body = np.array2string(a, separator=", ")
    return f"{name} = np.array({body}, dtype=np.{a.dtype.name})"


def find_check(name: str):
    """The visible check called ``name`` (or the only one whose name starts with it)."""
    from grader.checks import visible_checks

    checks = visible_checks()
    exact = [c for c in checks if c.name == name]
    if exact:
        return exact[0]
    close = [c for c in checks if c.name.lower().startswith(name.lower())]
    if len(close) == 1:
        return close[0]
    known = "\n  ".join(c.name for c in checks)
    what = "matches several" if close else "is not"
    raise KeyError(f"{name!r} {what} a visible check's name; the visible checks are:\n  {known}")


def explain(name: str) -> str:
    """Runnable code for the visible check ``name`` on its public inputs."""
    from grader.checks import release_mode
    from grader.checks.public import load_public_expected

    check = find_check(name)
    prep = check.prepare(check.rng(0, public=True), "")
    expected = load_public_expected(check) if release_mode() else check.expected(prep)
    lines = [f"# {check.name}: {check.describe(prep)}",
             "# The public inputs (the autograder uses fresh values of the same shapes and parameters).",
             "import numpy as np", ""]
    lines += check.snippet(prep, expected)
    return "\n".join(lines) + "\n"
