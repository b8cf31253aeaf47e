"""Red-team submissions: each scores nothing it did not earn and cannot read, write or outlive anything.

Each submission is the reference's layers.py with one layer redefined by a
file under ``redteam/<name>/layers.py``. We grade a few layer groups (the
attacked one and untouched neighbours) and assert exactly which checks lose
their points, that nothing outside the job directory was read into the
feedback or written, that the grading finished in its time bound, and that
no process is left. The whole module runs in both modes: as root with
capabilities dropped, and (in CI, through a system-wide interpreter) with the
children as uid 65534; ``CONVNET_EXPECT_UID_DROP=1`` makes the second
mode mandatory instead of whatever this machine allows.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from grader import checks as catalogue
from grader import engine, sandbox
from grader.checks import public, timing
from grader.sandbox import wire

GROUPS = ("layers.Conv", "layers.ReLU", "layers.MaxPool")
LAYERS = sandbox.layers_available()


def test_the_expected_isolation_mode():
    if os.environ.get("CONVNET_EXPECT_UID_DROP") == "1":
        assert LAYERS["uid_drop"], LAYERS
    assert LAYERS["seccomp"] == (sys.platform.startswith("linux") and os.uname().machine == "x86_64")


def conv_all(c):
    return c.group == "layers.Conv"


def conv_fwd(c):
    return c.group == "layers.Conv" and c.target == "Conv.forward"


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
    "thread_bomb": conv_all,
    "answer_bomb": conv_all,
    "monkeypatch": conv_fwd,
    "ndarray_subclass": conv_fwd,
    "lying_eq": lambda c: c.group == "layers.ReLU" and c.target == "ReLU.forward",
    "nan_output": lambda c: c.group == "layers.MaxPool" and c.target == "MaxPool.forward",
    "print_flood": conv_all,
    "fast_delegate": conv_all,
    "torch_delegate": conv_all,
    "read_reference": conv_fwd,
    "half_right": lambda c: c.target == "Conv.backward",
    "plant_links": lambda c: False,
    "deep_tree": lambda c: False,
    # One submission per channel out: Conv.forward is right only if the channel opened.
    "escape:io_uring": conv_fwd,
    "escape:socket": conv_fwd,
    "escape:sysv_shm": conv_fwd,
    "escape:userns": conv_fwd,
}


def _select(c):
    return c.group in GROUPS and not c.timing


def _grade(path, select=_select, timeout=5.0, **kw):
    sub = sandbox.load_submission(path)
    return engine.grade(sub, jobs=2, timeout=timeout, secret_seed=1234, select=select, **kw)


def _processes_under(roots) -> list:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if any(str(root).encode() in cmd for root in roots):
            found.append(pid)
    return found


@pytest.fixture
def secret(tmp_path):
    """A root-readable file a submission must never get into its feedback."""
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-MARKER-3141592653\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def sandbox_roots(monkeypatch):
    made = []
    real = sandbox.runner.tempfile.mkdtemp

    def recording(*a, **k):
        made.append(real(*a, **k))
        return made[-1]

    monkeypatch.setattr(sandbox.runner.tempfile, "mkdtemp", recording)
    return made


def _sysv_segments() -> set:
    try:
        with open("/proc/sysvipc/shm") as fh:
            return {line.split()[1] for line in fh.readlines()[1:]}
    except OSError:
        return set()


@pytest.mark.parametrize("case", sorted(CASES))
def test_redteam_scores_only_what_it_earned(case, make_submission, secret, sandbox_roots):
    patch, _, kind = case.partition(":")
    path = make_submission(patch, files=("layers.py",), subst={"@SECRET@": str(secret), "@KIND@": kind})
    before = secret.read_bytes()
    shm = _sysv_segments()
    t0 = time.perf_counter()
    graded = _grade(path, timeout=30 if case == "deep_tree" else 5)
    assert time.perf_counter() - t0 < 90  # bounded: at worst one timeout per group
    loses = CASES[case]
    checks = {c.name: c for c in catalogue.all_checks() if _select(c)}
    assert set(checks) == {v.name for v in graded.verdicts}
    for v in graded.verdicts:
        if loses(checks[v.name]):
            assert v.score == 0 and not v.passed, (case, v.name, v.message)
        else:
            assert v.score == v.max_score and v.passed, (case, v.name, v.message, v.output[-500:])
        assert len(v.output) < 25_000  # the child's output reaches the report truncated
        assert "TOP-SECRET-MARKER" not in v.output + v.message
    if case in ("exit_import", "loop_import"):
        assert all("importing layers.py failed" in v.message for v in graded.verdicts)
    if case == "half_right":
        earned = sum(c.points for c in checks.values() if not loses(c))
        assert graded.score == earned > 0
    assert secret.read_bytes() == before
    assert _sysv_segments() <= shm  # nothing made that outlives the grader
    assert sandbox_roots and all(not os.path.exists(r) for r in sandbox_roots)  # everything removed
    assert _processes_under(sandbox_roots) == []


def test_planted_links_are_never_followed_even_without_landlock_or_seccomp(make_submission, secret, sandbox_roots):
    """With the kernel layers off the child can plant its links and FIFOs; the parent still never opens them."""
    path = make_submission("plant_links", files=("layers.py",), subst={"@SECRET@": str(secret)})
    layers = dict(LAYERS, landlock=False, seccomp=False)
    before = secret.read_bytes()
    t0 = time.perf_counter()
    graded = _grade(path, layers=layers)
    assert time.perf_counter() - t0 < 60
    assert all(v.passed for v in graded.verdicts), [(v.name, v.message) for v in graded.verdicts if not v.passed]
    assert all("TOP-SECRET-MARKER" not in v.output for v in graded.verdicts)
    assert secret.read_bytes() == before
    assert all(not os.path.exists(r) for r in sandbox_roots)


def test_a_deep_tree_is_removed_without_recursion_even_without_landlock(make_submission, sandbox_roots):
    path = make_submission("deep_tree", files=("layers.py",))
    graded = _grade(path, layers=dict(LAYERS, landlock=False, seccomp=False), timeout=30,
                    select=lambda c: c.group == "layers.ReLU")
    assert graded.verdicts and all(v.passed for v in graded.verdicts)
    assert all(not os.path.exists(r) for r in sandbox_roots)


def test_the_child_has_no_way_out():
    """Inside a child: every channel out is refused, the limits are set, the blocked imports fail."""
    sub = sandbox.reference_submission()
    sub.files["layers.py"] += '''

def probe():
    import ctypes, os, resource, socket, threading
    import numpy as np
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    got = [resource.getrlimit(getattr(resource, n))[0] for n in ("RLIMIT_AS", "RLIMIT_NOFILE", "RLIMIT_FSIZE")]
    def did(action):
        try:
            result = action()
        except Exception:
            return 0.0
        return 0.0 if result is None or result is False else 1.0
    def sys_ok(*args):
        return libc.syscall(*args) >= 0
    attempts = [
        lambda: __import__("convnet.fast"), lambda: __import__("torch"), lambda: __import__("scipy"),
        lambda: threading.Thread(target=lambda: None).start() or True,
        lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
        lambda: sys_ok(425, 8, ctypes.create_string_buffer(120)),
        lambda: sys_ok(29, 0, 4096, 0o1600),
        lambda: sys_ok(64, 0, 1, 0o1600),
        lambda: libc.syscall(272, 0x10000000) == 0,
        lambda: libc.prctl(1, 0, 0, 0, 0) == 0,
        lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1000, 1000)) or True,
        lambda: os.kill(os.getppid(), 0) or True,
        lambda: os.symlink("/etc/passwd", "link") or True,
        lambda: os.mkfifo("fifo") or True,
        lambda: open("../lib/child.py", "a"),
    ]
    return np.array(got + [did(f) for f in attempts], dtype=float)
'''
    box = sandbox.Sandbox(sub, timeout=20, memory=1 << 30)
    try:
        tid = "t"
        run = box.run("probe", [wire.task("call", tid, fn="layers.probe", args=[], outs={"out": []})], {},
                      {tid: {"out": ((19,), "float64")}})
    finally:
        box.close()
    answer = run.answers.get((tid, "out"))
    assert answer is not None and answer.problem is None, (run.errors, run.stderr)
    arr = answer.value
    assert arr[:3].tolist() == [1 << 30, 64, 64 << 20]
    names = ["convnet.fast", "torch", "scipy", "thread", "udp socket", "unix socket", "io_uring", "shmget",
             "semget", "unshare", "prctl", "raise a limit", "signal the parent", "symlink", "mkfifo",
             "write the runner"]
    allowed = dict(zip(names, arr[3:].tolist()))
    if not (LAYERS["landlock"] or LAYERS["uid_drop"]):
        allowed.pop("write the runner")
    if LAYERS["seccomp"]:
        assert {k: v for k, v in allowed.items() if v} == {}, allowed
    else:  # without seccomp at least the imports are blocked
        assert allowed["convnet.fast"] == allowed["torch"] == allowed["scipy"] == 0


def test_answer_bomb_leaves_the_parent_small(make_submission, tmp_path):
    """A child sending a 1 GB answer: refused before it is read, so the parent stays small."""
    path = make_submission("answer_bomb", files=("layers.py",))
    out = tmp_path / "results.json"
    # VmHWM is this process's own peak; ru_maxrss would carry over pytest's peak through exec.
    code = (f"import sys; from grader.__main__ import main; "
            f"rc = main([{str(path)!r}, '--json', {str(out)!r}, '--quiet', '--visible-only', '--timeout', '20']); "
            f"print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]); sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    peak_kib = int(run.stdout.split()[-1])
    assert peak_kib < 600 * 1024, peak_kib
    data = json.loads(out.read_text())
    conv = [t for t in data["tests"] if t["name"].startswith("Conv.forward")]
    assert conv and all(t["score"] == 0 for t in conv)
    assert any(t["score"] > 0 for t in data["tests"] if t["name"].startswith("ReLU"))


def _public_table() -> str:
    """Every public Conv.forward input of the release, with its expected output, keyed by the input's bytes."""
    check = next(c for c in catalogue.visible_checks() if c.name == "Conv.forward")
    prep = check.prepare(check.rng(0, public=True), "c.")
    x, w, b = (prep.state["call"].arrays[k] for k in ("x", "w", "b"))
    key = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in (x, w, b))).hexdigest()
    return repr({key: check.expected(prep)["fwd.out"].tolist()})


def test_looking_up_the_shipped_public_answers_earns_nothing_in_the_autograder(make_submission, tmp_path,
                                                                             monkeypatch):
    path = make_submission("lookup_public", files=("layers.py",), subst={"@TABLE@": _public_table()})
    visible = lambda c: c.name == "Conv.forward"  # noqa: E731
    # The instructor's grader draws fresh inputs: the table misses and the check scores 0.
    graded = _grade(path, select=visible)
    assert [v.score for v in graded.verdicts] == [0]
    # A student's local run (release mode, public inputs) would score it: the trade-off the README states.
    monkeypatch.setattr(public, "PUBLIC_EXPECTED", public.build_public_expected(tmp_path / "pe.npz"))
    monkeypatch.setattr(catalogue, "release_mode", lambda: True)
    graded = _grade(path, select=visible)
    assert [v.passed for v in graded.verdicts] == [True]


def test_raising_blas_threads_does_not_give_a_second_core(make_submission):
    path = make_submission("blas_threads", files=("layers.py",))
    graded = _grade(path, timeout=10, select=lambda c: c.timing and c.name.startswith("Conv.forward time"))
    (v,) = graded.verdicts
    # OpenBLAS cannot start its threads here: the layer stalls (and fails) or runs on one core.
    assert v.extra["cpu_s"] <= 1.25 * v.extra["wall_s"] + 0.05, v.extra
    assert not v.passed or v.extra["ratio"] <= 10


def test_a_run_that_used_more_than_one_core_is_refused():
    """The rule, on measured numbers: CPU time above wall time means a second core did work."""
    from types import SimpleNamespace

    from grader.checks.timing import _single_core

    assert _single_core(SimpleNamespace(cpu=0.30, wall=0.31)) is None
    assert _single_core(SimpleNamespace(cpu=0.40, wall=0.31)) is None  # within the margin for clock ticks
    assert "more than one core" in _single_core(SimpleNamespace(cpu=0.62, wall=0.31))


def test_cpu_time_counts_every_thread_of_a_timed_child():
    """With threads allowed (a test-only setting), both threads' CPU seconds reach the parent's count."""
    sub = sandbox.reference_submission()
    sub.files["layers.py"] += '''

import threading as _threading
import time as _time


def _burn(seconds):
    end = _time.thread_time() + seconds
    while _time.thread_time() < end:
        pass


def burn_two():
    import numpy as np
    helper = _threading.Thread(target=_burn, args=(0.3,))
    helper.start()
    _burn(0.3)
    helper.join()
    return np.ones(1)
'''
    box = sandbox.Sandbox(sub, timeout=30, allow_threads=True)
    try:
        child = box.serve("burn")
        wall, answers = child.run(wire.task("call", "run", fn="layers.burn_two", args=[], outs={"out": []}), {},
                                  {"out": ((1,), "float64")}, timeout=30)
        child.close()
    finally:
        box.close()
    assert wall is not None and answers["out"].problem is None
    assert child.cpu >= 0.55, (child.cpu, child.wall)  # 0.6 s of CPU in two threads, clock ticks aside


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_grader_leaves_no_process(signum, tmp_path):
    """Kill the grader while it times layers (a child stopped, its sibling running): every child goes too."""
    proc = subprocess.Popen([sys.executable, "-m", "grader", "--quiet", "--seed", "3", "--json",
                             str(tmp_path / "r.json")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=tmp_path)
    roots = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        kids = [p for p in _processes_under(["convnet-grade-"])]
        if len(kids) >= 2:  # a timing pair is alive
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    for pid in _processes_under(["convnet-grade-"]):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                roots.append(fh.read().split(b"\0")[3].decode().split("/lib/")[0])
        except (OSError, IndexError):
            pass
    proc.send_signal(signum)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _processes_under(roots or ["convnet-grade-"]):
        time.sleep(0.1)
    assert _processes_under(roots or ["convnet-grade-"]) == []


@pytest.mark.slow
def test_fd_backward_fails_timing_only(make_submission):
    path = make_submission("fd_backward", files=("layers.py",))
    # A run takes about 20 s here, and took over 30 s on a loaded machine: with 90 s the test sees the early
    # stop after two runs, not a timed-out first run.
    graded = _grade(path, timeout=90, select=lambda c: c.group == "layers.Conv" or (c.timing and
                                                                                     c.name.startswith("Conv.")))
    for v in graded.verdicts:
        if "forward+backward time" in v.name:
            # Seconds per run against milliseconds: timed twice, not five times.
            assert v.score == 0, v.message
            assert len(v.extra["student_s"]) == timing.EARLY_STOP_RUNS < timing.REPEATS, v.extra
            assert f"min of {timing.EARLY_STOP_RUNS}, stopped early" in v.message, v.message
        else:
            assert v.score == v.max_score, (v.name, v.message)


def test_reference_source_is_unreadable_from_the_child():
    """Under Landlock the child cannot open the reference's files (the probe reads 0 bytes of each)."""
    if not LAYERS["landlock"]:
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
        run = box.run("probe", [wire.task("call", "t", fn="layers.probe", args=[], outs={"out": []})], {},
                      {"t": {"out": ((4,), "float64")}})
    finally:
        box.close()
    answer = run.answers.get(("t", "out"))
    assert answer is not None and answer.problem is None, (run.errors, run.stderr)
    assert answer.value.tolist() == [0, 0, 0, 0]


def test_served_layers_never_put_the_reference_in_the_child():
    """A model check's child gets a proxy layers.py; the reference's source is not among its files."""
    from grader.sandbox.runner import proxy_layers_source

    box = sandbox.Sandbox(sandbox.reference_submission(), timeout=20)
    try:
        files = box._package("served", fast=True)
    finally:
        box.close()
    assert files["pkg/convnet/layers.py"] == proxy_layers_source()
    assert "BEGIN SOLUTION" not in files["pkg/convnet/layers.py"]
    assert all(not (isinstance(v, Path) and v.name == "layers.py") for v in files.values())


def test_resource_limits_hold_for_a_memory_bomb_under_a_parent_memory_limit(make_submission, tmp_path):
    """The whole grader under a 3 GiB address-space limit with a child allocating without end: it finishes."""
    path = make_submission("memory_bomb", files=("layers.py",))
    out = tmp_path / "results.json"

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    run = subprocess.run([sys.executable, "-m", "grader", str(path), "--json", str(out), "--quiet",
                          "--visible-only", "--timeout", "20"], capture_output=True, text=True, timeout=300,
                         preexec_fn=limit)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(out.read_text())
    assert any(t["score"] > 0 for t in data["tests"])
