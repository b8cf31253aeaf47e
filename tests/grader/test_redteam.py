"""Red-team submissions: each scores nothing it did not earn and cannot raise another check or stop the run.

Each submission is the reference's layers.py with one layer redefined by a
file under ``redteam/<name>/layers.py``; we grade a few layer groups (the
attacked one and untouched neighbours) with a fixed seed and assert exactly
which checks lose their points.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from grader import engine, sandbox

GROUPS = ("layers.Conv", "layers.ReLU", "layers.MaxPool")


def _is_timing(c):
    return getattr(c, "serial", False)


def conv_all(c):
    return c.group == "layers.Conv"


def conv_fwd(c):
    return c.group == "layers.Conv" and c.name.startswith("Conv.forward")


def conv_fwd_fd(c):
    return conv_fwd(c) or c.name.startswith("Conv.backward vs finite")


CASES = {
    "exit_import": lambda c: True,
    "loop_import": lambda c: True,
    "exit_in_layer": conv_all,
    "sys_exit": conv_all,
    "atexit_results": lambda c: False,
    "fake_json": lambda c: False,
    "infinite_loop": conv_all,
    "memory_bomb": conv_all,
    "fork_bomb": conv_all,
    "monkeypatch": conv_fwd,
    "ndarray_subclass": conv_all,
    "lying_eq": lambda c: c.group == "layers.ReLU",
    "nan_output": lambda c: c.group == "layers.MaxPool",
    "print_flood": conv_all,
    "fast_delegate": conv_all,
    "torch_delegate": conv_all,
    "read_reference": conv_fwd_fd,
    "half_right": lambda c: c.name.startswith("Conv.backward"),
}


def _grade(path, select, timeout=5.0, **kw):
    sub = sandbox.load_submission(path)
    return engine.grade(sub, jobs=2, timeout=timeout, secret_seed=1234, select=select, **kw)


def _select(c):
    return c.group in GROUPS and not _is_timing(c)


@pytest.mark.parametrize("case", sorted(CASES))
def test_redteam_scores_only_what_it_earned(case, make_submission, tmp_path):
    path = make_submission(case, files=("layers.py",))
    t0 = time.perf_counter()
    graded = _grade(path, _select)
    assert time.perf_counter() - t0 < 60  # bounded: at worst one timeout per group
    loses = CASES[case]
    checks = {c.name: c for c in __import__("grader.checks", fromlist=["all_checks"]).all_checks() if _select(c)}
    assert set(checks) == {v.name for v in graded["verdicts"]}
    for v in graded["verdicts"]:
        c = checks[v.name]
        if loses(c):
            assert v.score == 0 and not v.passed, (case, v.name, v.message)
        else:
            assert v.score == v.max_score and v.passed, (case, v.name, v.message)
    for v in graded["verdicts"]:
        assert len(v.output) < 25_000  # the child's stdout/stderr reach the report truncated
    if case in ("exit_import", "loop_import"):
        assert all("importing layers.py failed" in v.message for v in graded["verdicts"])
    if case == "half_right":
        # exactly the points of the checks it passes
        earned = sum(c.points for c in checks.values() if not loses(c))
        assert sum(v.score for v in graded["verdicts"]) == earned
        assert earned > 0


def test_forged_results_json_is_replaced(make_submission, tmp_path):
    """atexit + direct writes of a forged results.json: the parent's file is the one that stays."""
    from grader.__main__ import main

    results = tmp_path / "out" / "results.json"
    results.parent.mkdir()
    path = make_submission("atexit_results", results=results)
    assert main([str(path), "--json", str(results), "--visible-only", "--quiet", "--timeout", "10"]) == 0
    data = json.loads(results.read_text())
    assert data["score"] != 1000 and data["output"] != "forged"
    assert data["score"] == sum(t["max_score"] for t in data["tests"])


def test_fork_bomb_leaves_no_process(make_submission, monkeypatch):
    made = []
    real_mkdtemp = sandbox.tempfile.mkdtemp

    def recording_mkdtemp(*a, **k):
        made.append(real_mkdtemp(*a, **k))
        return made[-1]

    monkeypatch.setattr(sandbox.tempfile, "mkdtemp", recording_mkdtemp)
    path = make_submission("fork_bomb", files=("layers.py",))
    _grade(path, lambda c: c.group == "layers.Conv" and not _is_timing(c))
    assert made
    leftovers = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if any(root.encode() in cmd for root in made):
            leftovers.append(pid)
    assert leftovers == []


def test_reference_source_is_unreadable_from_the_child(make_submission):
    """Under Landlock the child cannot open the reference's layers.py (the probe returns 0 bytes read)."""
    layers = sandbox.layers_available()
    if not layers["landlock"]:
        pytest.skip("Landlock unavailable: the reference is only unimportable here")
    sub = sandbox.reference_submission()
    ref = sandbox.reference_dir()
    sub.files["layers.py"] += f'''

def probe():
    import numpy as np
    got = []
    for p in ("{ref}/layers.py", "{ref}/models.py", "{ref.parent}/grader/checks/hidden.py"):
        try:
            got.append(len(open(p).read()))
        except OSError:
            got.append(0)
    try:
        import grader  # noqa: F401
        got.append(1)
    except ImportError:
        got.append(0)
    return np.array(got, dtype=float)
'''
    box = sandbox.Sandbox(sub, timeout=20)
    try:
        r = box.run("probe", [{"op": "call", "id": "t", "fn": "layers.probe", "args": [], "outs": {"out": []}}],
                    {}, {"t": ["out"]})
    finally:
        box.close()
    arr, msg = sandbox.validate(r.get("t", "out"), (4,), "float64")
    assert msg is None, (msg, r.errors, r.stderr)
    assert arr.tolist() == [0, 0, 0, 0]


@pytest.mark.slow
def test_fd_backward_fails_timing_only(make_submission):
    path = make_submission("fd_backward", files=("layers.py",))
    graded = _grade(path, lambda c: c.group == "layers.Conv" or (_is_timing(c) and c.target == "layers.Conv"))
    for v in graded["verdicts"]:
        if "forward+backward time" in v.name:
            assert v.score == 0, v.message
        else:
            assert v.score == v.max_score, (v.name, v.message)


def test_child_runs_under_its_limits():
    """The limits, seccomp and the blocked imports are in force when student code runs."""
    sub = sandbox.reference_submission()
    sub.files["layers.py"] += '''

def probe():
    import os
    import resource
    import numpy as np
    got = [resource.getrlimit(getattr(resource, n))[0] for n in
           ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_FSIZE")]
    for mod in ("convnet.fast", "torch", "scipy"):
        try:
            __import__(mod)
            got.append(1)
        except ImportError:
            got.append(0)
    try:
        os.fork()
        got.append(1)
    except OSError:
        got.append(0)
    return np.array(got, dtype=float)
'''
    box = sandbox.Sandbox(sub, timeout=20, memory=1 << 30)
    try:
        r = box.run("limits", [{"op": "call", "id": "t", "fn": "layers.probe", "args": [], "outs": {"out": []}}],
                    {}, {"t": ["out"]})
    finally:
        box.close()
    arr, msg = sandbox.validate(r.get("t", "out"), (8,), "float64")
    assert msg is None, (msg, r.errors, r.stderr)
    assert arr[:4].tolist() == [1 << 30, 21, 64, 64 << 20]
    assert arr[4:7].tolist() == [0, 0, 0]
    if box.layers["seccomp"] or box.layers["uid_drop"]:
        assert arr[7] == 0
