"""Grading: prepare every check in the parent, run the children, judge each answer, collect verdicts.

The parent prepares each check's inputs and the reference's answers, groups
checks that share a child (their target's class and which files they need),
runs the groups in sandboxed children, judges every check on its own answers
(failing ones get feedback: the call, where the answer differs, the likely
cause), then runs the timing checks one at a time.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from grader import checks as catalogue
from grader import feedback
from grader.checks.base import Answers
from grader.checks.public import load_public_expected
from grader.sandbox import Sandbox, layers_available, wire
from grader.verdict import Verdict

__all__ = ["grade", "Graded"]

# Timing-sensitive checks of concurrent gradings never overlap: threads of this process (batch mode) take
# the lock, and processes on this machine (cluster workers) an exclusive lock on a shared file.
_SERIAL_LOCK = threading.Lock()
_LOCK_FILE = os.path.join(tempfile.gettempdir(), f"convnet-grade-timing-{os.geteuid()}.lock")


@contextlib.contextmanager
def timing_slot():
    """Hold the machine's timing slot (the file lock is skipped if the file cannot be opened safely)."""
    with _SERIAL_LOCK:
        try:
            fd = os.open(_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


@dataclass
class Graded:
    """A graded submission: the verdicts in catalogue order and how they were obtained."""

    verdicts: list
    seed: int
    release: bool
    visible_only: bool
    layers: dict
    notes: list = field(default_factory=list)
    missing: list = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(v.score for v in self.verdicts)

    @property
    def max_score(self) -> float:
        return sum(v.max_score for v in self.verdicts)


def _verdict(check, ok, message, output="", **extra) -> Verdict:
    extra["passed"] = bool(ok)
    return Verdict(check.name, check.points, check.points if ok else 0.0, message, output,
                   visibility=check.visibility, tags=check.tags, extra=extra, target=check.target)


def _files(check, release: bool) -> str:
    # A release has no reference to serve: its model checks run on the student's own layers.
    return "student" if (release and check.files == "served") else check.files


@dataclass
class _Item:
    check: object
    prep: object
    expected: dict
    prefix: str
    seconds: float


def _expect(check, prep, expected) -> dict:
    """``{task id: {name: (shape, dtype)}}`` from the expected values (or the check's own shapes)."""
    shapes = check.shapes(prep, expected) if hasattr(check, "shapes") else expected
    out = {}
    for tid, names in prep.expect.items():
        local = tid.split(".", 1)[1]
        out[tid] = {}
        for name in names:
            value = shapes[f"{local}.{name}"]
            out[tid][name] = value if isinstance(value, tuple) else (np.shape(value), np.asarray(value).dtype)
    return out


def _prepare(check, seed, prefix, release) -> _Item:
    t0 = time.perf_counter()
    public = release and check.visibility == "visible"
    prep = check.prepare(check.rng(seed, public=public), prefix)
    expected = load_public_expected(check) if public else check.expected(prep)
    prep.expect = _expect(check, prep, expected)
    return _Item(check, prep, expected, prefix, time.perf_counter() - t0)


def _judge(item: _Item, run, public: bool) -> Verdict:
    check, prep = item.check, item.prep
    answers = Answers(run, prep, item.prefix)
    try:
        j = check.judge(answers, prep, item.expected)
    except Exception as exc:  # noqa: BLE001 - a malformed answer fails the check, never the grader
        return _verdict(check, False, f"could not compare the answers ({type(exc).__name__}: {exc})")
    output, extra = "", dict(j.extra)
    if not j.ok:
        output, causes = feedback.report(check, prep, item.expected, answers, j, public=public)
        if causes:
            extra["diagnosis"] = causes
        if run.stdout or run.stderr:
            output += ("\n\nYour code printed:\n" + (run.stdout or "") + (run.stderr or ""))[:4000]
    return _verdict(check, j.ok, j.summary, output, **extra)


def _preflight(box, submission, files, jobs, timeout) -> dict:
    """Import each student file in its own child; ``{file: reason}`` for those that do not import.

    Only a time saver (a file that hangs at import would otherwise cost a timeout per group).
    """
    present = sorted(f for f in files if f in submission.files)

    def one(name):
        module = name.removesuffix(".py")
        tid = "import_" + module
        files_mode = "served" if name != "layers.py" else "student"
        r = box.run("import-" + module, [wire.task("import", tid, module=module)], {},
                    {tid: {"ok": ((1,), "float64")}}, files=files_mode, fast=True, timeout=timeout)
        answer = r.answers.get((tid, "ok"))
        return name, (None if answer is not None and answer.problem is None else r.explain(tid, "ok"))

    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        return {name: why for name, why in pool.map(one, present) if why}


def grade(submission, *, visible_only=False, jobs=2, timeout=30.0, progress=None, layers=None, secret_seed=None,
          memory=2 << 30, select=None, sandbox_options=None) -> Graded:
    """Grade ``submission``.

    Parameters
    ----------
    submission : grader.sandbox.Submission
    visible_only : bool
        Only the visible checks (always so in a student release).
    jobs : int
        Children run at once.
    timeout : float
        Wall-clock seconds per child.
    progress : callable, optional
        Called with ``(done, total, name)`` after each group.
    secret_seed : int, optional
        The seed of every check's inputs; default a fresh random one.
    select : callable, optional
        A predicate on checks: only those are graded (tests use it).
    """
    release = catalogue.release_mode()
    visible_only = visible_only or release
    checks = catalogue.all_checks(visible_only)
    if select is not None:
        checks = [c for c in checks if select(c)]
    seed = secrets.randbits(63) if secret_seed is None else int(secret_seed)
    layers = dict(layers or layers_available())
    box = Sandbox(submission, timeout=timeout, layers=layers, memory=memory, **(sandbox_options or {}))
    verdicts, groups, serial = {}, {}, []
    try:
        broken = _preflight(box, submission, {c.file for c in checks}, jobs, min(timeout, 15.0))
        for i, check in enumerate(checks):
            files = _files(check, release)
            if check.file in submission.missing:
                verdicts[check.name] = _verdict(check, False, f"{check.file} is missing from the submission "
                                                              f"(as {check.file} or convnet/{check.file})")
                continue
            needed = {check.file} | ({"layers.py"} if files == "student" and check.file != "layers.py" else set())
            bad = [f for f in sorted(needed) if f in broken]
            if bad:
                verdicts[check.name] = _verdict(check, False, f"importing {bad[0]} failed: {broken[bad[0]]}")
                continue
            if check.timing:
                serial.append(check)
                continue
            try:
                item = _prepare(check, seed, f"c{i}.", release)
            except Exception as exc:  # noqa: BLE001 - the grader's own failure, reported per check
                verdicts[check.name] = _verdict(check, False, f"internal grader error: {type(exc).__name__}: {exc}",
                                                traceback=traceback.format_exc()[-2000:])
                continue
            serve = () if release else check.serve  # a release has no reference to serve
            groups.setdefault((check.group, files, check.fast, serve), []).append(item)
        total = len(groups) + len(serial)
        done = [0]

        def run_group(entry):
            (group, files, fast, serve), items = entry
            tasks, inputs, expect = [], {}, {}
            for item in items:
                tasks += item.prep.tasks
                inputs.update(item.prep.inputs)
                expect.update(item.prep.expect)
            run = box.run(group, tasks, inputs, expect, files=files, fast=fast, serve=serve)
            out = []
            for item in items:
                v = _judge(item, run, public=item.check.visibility == "visible")
                v.seconds = item.seconds + run.elapsed / len(items)
                out.append(v)
            return group, out

        with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
            for group, out in pool.map(run_group, groups.items()):
                for v in out:
                    verdicts[v.name] = v
                done[0] += 1
                if progress:
                    progress(done[0], total, group)
        for check in serial:
            t0 = time.perf_counter()
            try:
                with timing_slot():
                    j = check.run_serial(box, check.rng(seed, public=False))
                v = _verdict(check, j.ok, j.summary, **j.extra)
            except Exception as exc:  # noqa: BLE001
                v = _verdict(check, False, f"internal grader error: {type(exc).__name__}: {exc}",
                             traceback=traceback.format_exc()[-2000:])
            v.seconds = time.perf_counter() - t0
            verdicts[check.name] = v
            done[0] += 1
            if progress:
                progress(done[0], total, check.name)
    finally:
        box.close()
    ordered = [verdicts[c.name] for c in checks]
    return Graded(ordered, seed, release, visible_only, layers, list(submission.notes), list(submission.missing))
