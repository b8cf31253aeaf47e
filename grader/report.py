"""The score table and Gradescope's results.json (written atomically, even when grading fails)."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

__all__ = ["results_json", "failure_json", "write_json", "table"]

OUTPUT_LIMIT = 10_000


def _num(x: float) -> float:
    return round(float(x), 6) if math.isfinite(x) else 0.0


def _jsonable(obj):
    """Plain JSON values only (numpy scalars become floats, anything else a string)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    try:
        f = float(obj)
    except (TypeError, ValueError):
        return str(obj)
    return f if math.isfinite(f) else str(f)


def results_json(graded, execution_time: float) -> dict:
    """Gradescope's results.json from :func:`grader.engine.grade`'s result."""
    tests = []
    for number, v in enumerate(graded.verdicts, start=1):
        output = v.message + (("\n" + v.output) if v.output else "")
        tests.append({
            "name": v.name,
            "number": str(number),
            "score": _num(v.score),
            "max_score": _num(v.max_score),
            "status": "passed" if v.passed else "failed",
            "output": output[:OUTPUT_LIMIT],
            "visibility": v.visibility,
            "tags": list(v.tags),
            "extra_data": _jsonable({**v.extra, "target": v.target, "seconds": round(v.seconds, 3)}),
        })
    score = sum(t["score"] for t in tests)
    total = sum(t["max_score"] for t in tests)
    layers = graded.layers
    lines = [f"Score: {score:g} / {total:g}"]
    if graded.missing:
        lines.append("Missing files: " + ", ".join(graded.missing))
    lines += graded.notes
    if not layers.get("landlock"):
        lines.append("warning: Landlock is unavailable here; the reference is unimportable but not unreadable")
    return {
        "score": _num(score),
        "execution_time": _num(execution_time),
        "output": "\n".join(lines),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
        "extra_data": _jsonable({"secret_seed": graded.seed, "sandbox": layers,
                                 "visible_only": graded.visible_only, "release": graded.release}),
    }


def failure_json(message: str, execution_time: float = 0.0) -> dict:
    """The minimal results.json written when the grader itself fails."""
    return {"score": 0.0, "execution_time": _num(execution_time), "visibility": "visible",
            "stdout_visibility": "hidden",
            "output": "The autograder failed before finishing; please tell the course staff.\n" + message[-4000:],
            "tests": []}


def write_json(data: dict, path) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file in the same directory, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, allow_nan=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def table(graded, details: bool = False) -> str:
    """The score table: check, points, time, message (and each failing check's feedback when ``details``)."""
    rows = [(v.name, f"{v.score:g}/{v.max_score:g}", f"{v.seconds:.2f}s",
             ("ok    " if v.passed else "FAIL  ") + (v.message.splitlines()[0][:100] if v.message else ""))
            for v in graded.verdicts]
    w0 = max([len(r[0]) for r in rows] + [5])
    lines = [f"{'check':{w0}}  {'points':>7}  {'time':>7}  message", "-" * (w0 + 30)]
    for name, pts, t, msg in rows:
        lines.append(f"{name:{w0}}  {pts:>7}  {t:>7}  {msg}")
    lines.append("-" * (w0 + 30))
    lines.append(f"{'total':{w0}}  {graded.score:g}/{graded.max_score:g}")
    if details:
        for v in graded.verdicts:
            if not v.passed and v.output:
                lines += ["", f"== {v.name}", v.output]
    return "\n".join(lines)
