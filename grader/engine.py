"""Grading: prepare every check in the parent, run the children, judge the answers, collect verdicts."""
from __future__ import annotations

import secrets
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from grader import checks as catalogue
from grader.sandbox import Sandbox, layers_available, validate

__all__ = ["Verdict", "grade"]

# Timing-sensitive checks of concurrent gradings (batch mode) never overlap each other.
_SERIAL_LOCK = threading.Lock()


@dataclass
class Verdict:
    name: str
    max_score: float
    score: float
    message: str
    seconds: float = 0.0
    visibility: str = "visible"
    tags: tuple = ()
    extra: dict = field(default_factory=dict)
    output: str = ""
    ok: bool | None = None  # the comparison's outcome; None: decided by the score

    @property
    def passed(self) -> bool:
        if self.ok is not None:
            return bool(self.ok)
        return self.score >= self.max_score and self.max_score > 0


def _fail(check, message, **extra) -> Verdict:
    return Verdict(check.name, check.points, 0.0, message, visibility=check.visibility, tags=check.tags,
                   extra=extra, ok=False)


def _expected(check, state, release: bool) -> dict:
    if release and check.visibility == "visible" and check.inputs == "public":
        return catalogue.load_public_expected(check)
    return check.expected(state)


def _judge(check, prep, expected, result, prefix) -> Verdict:
    """Validate each answer (plain ndarray, shape, dtype, finite) and let the check compare."""
    try:
        shapes = check.shapes(prep.state, expected) if hasattr(check, "shapes") else {}
    except Exception:  # noqa: BLE001
        shapes = {}
    answers = {}
    for tid, names in prep.expect.items():
        local = tid[len(prefix):]
        for name in names:
            raw = result.get(tid, name)
            want = shapes.get(f"{local}.{name}") or shapes.get(name)
            if want is None and name in expected:
                e = np.asarray(expected[name])
                want = (e.shape, e.dtype)
            shape, dtype = want if want else (None, None)
            arr, msg = validate(raw, shape, dtype)
            if msg:
                if raw is None:
                    msg = result.explain(tid)
                return _fail(check, f"{name}: {msg}")
            answers[name] = arr
            answers[f"{local}.{name}"] = arr
    try:
        ok, message, extra = check.judge(answers, prep.state, expected)
    except Exception as exc:  # noqa: BLE001 - a malformed answer fails the check, never the grader
        return _fail(check, f"could not compare the answers ({type(exc).__name__}: {exc})")
    return Verdict(check.name, check.points, check.points if ok else 0.0, message, visibility=check.visibility,
                   tags=check.tags, extra=dict(extra or {}), ok=bool(ok))


def _preflight(box, submission, files, jobs, timeout) -> dict:
    """Import each graded student file in its own child; {file: reason} for those that do not import.

    This only saves time (a file that hangs or exits at import would otherwise cost
    one timeout per check group); a file that imports here is still checked everywhere.
    """
    present = sorted(f for f in files if f in submission.files)

    def one(name):
        module = name.removesuffix(".py")
        tid = "import_" + module
        r = box.run("import-" + module, [{"op": "import", "id": tid, "module": module}], {}, {tid: ["ok"]},
                    fast=True, timeout=timeout)
        arr, msg = validate(r.get(tid, "ok"), (1,), np.float64)
        return name, (None if msg is None else r.explain(tid))

    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        return {name: why for name, why in pool.map(one, present) if why}


def grade(submission, *, visible_only=False, jobs=2, timeout=30.0, progress=None, layers=None,
          secret_seed=None, memory=2 << 30, select=None) -> dict:
    """Grade ``submission``; returns ``{"verdicts": [...], "layers": ..., "seed": ..., "release": ...}``.

    ``progress`` (optional) is called with ``(done, total, name)`` after each check group;
    ``select`` (optional) is a predicate on checks: only those are graded (tests use it).
    """
    release = catalogue.release_mode()
    visible_only = visible_only or release
    checks = catalogue.all_checks(visible_only)
    if select is not None:
        checks = [c for c in checks if select(c)]
    seed = secrets.randbits(63) if secret_seed is None else int(secret_seed)
    layers = dict(layers or layers_available())
    box = Sandbox(submission, timeout=timeout, layers=layers, memory=memory)
    verdicts = {}
    groups = {}
    serial = []
    try:
        broken = _preflight(box, submission, {c.file for c in checks}, jobs, min(timeout, 15.0))
        for i, check in enumerate(checks):
            if check.file in submission.missing:
                verdicts[check.name] = _fail(check, f"{check.file} was expected (as {check.file} or "
                                                    f"convnet/{check.file}) but the submission does not have it")
                continue
            if check.file in broken:
                verdicts[check.name] = _fail(check, f"importing {check.file} failed: {broken[check.file]}")
                continue
            if getattr(check, "serial", False):
                serial.append(check)
                continue
            prefix = f"c{i}."
            t0 = time.perf_counter()
            try:
                prep = check.prepare(check.rng(seed), prefix)
                expected = _expected(check, prep.state, release)
            except Exception as exc:  # noqa: BLE001 - the grader's own failure, reported per check
                verdicts[check.name] = _fail(check, f"internal grader error: {type(exc).__name__}: {exc}",
                                             traceback=traceback.format_exc()[-2000:])
                continue
            groups.setdefault(check.group, []).append((check, prep, expected, prefix, time.perf_counter() - t0))
        total = len(groups) + len(serial)
        done = [0]

        def run_group(item):
            key, members = item
            tasks, inputs, expect = [], {}, {}
            for check, prep, _, _, _ in members:
                tasks += prep.tasks
                inputs.update(prep.inputs)
                expect.update(prep.expect)
            fast = any(c.fast for c, *_ in members)
            result = box.run(key, tasks, inputs, expect, fast=fast)
            out = []
            for check, prep, expected, prefix, prep_time in members:
                v = _judge(check, prep, expected, result, prefix)
                v.seconds = prep_time + result.elapsed / len(members)
                if v.score < v.max_score and (result.stdout or result.stderr):
                    v.output = ("stdout:\n" + result.stdout if result.stdout else "") + \
                               ("\nstderr:\n" + result.stderr if result.stderr else "")
                out.append(v)
            return key, out

        with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
            for key, out in pool.map(run_group, groups.items()):
                for v in out:
                    verdicts[v.name] = v
                done[0] += 1
                if progress:
                    progress(done[0], total, key)
        # Timing-sensitive checks run alone, one after the other, after the pool has drained.
        for check in serial:
            t0 = time.perf_counter()
            try:
                with _SERIAL_LOCK:
                    v = check.run_serial(box, seed)
            except Exception as exc:  # noqa: BLE001
                v = _fail(check, f"internal grader error: {type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc()[-2000:])
            v.seconds = time.perf_counter() - t0
            verdicts[check.name] = v
            done[0] += 1
            if progress:
                progress(done[0], total, check.name)
    finally:
        box.close()
    ordered = [verdicts[c.name] for c in checks]
    for c, v in zip(checks, ordered):
        v.extra.setdefault("inputs", c.inputs)
    return {"verdicts": ordered, "layers": layers, "seed": seed, "release": release, "visible_only": visible_only,
            "notes": list(submission.notes), "missing": list(submission.missing)}
