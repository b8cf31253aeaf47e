"""The parent's runner: assemble a child's package, start it, exchange frames, collect checked answers.

:meth:`Sandbox.run` grades a group of tasks in a fresh child and returns a
:class:`ChildRun`: every answer validated against the shape and dtype the
parent expects (a larger frame is refused before it is read), the errors
the child reported, the first kilobytes of its output, and how it ended.
:meth:`Sandbox.serve` starts a persistent child for timing. Everything the
child may read is written before it starts; afterwards the parent only
talks to it through its pipes and removes its directory with
:func:`grader.sandbox.files.remove_tree`.
"""
from __future__ import annotations

import itertools
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grader.sandbox import isolation, wire
from grader.sandbox.files import remove_tree, write_tree
from grader.sandbox.oracle import Oracle
from grader.sandbox.process import ChildProcess, Closed, Timeout, install_cleanup
from grader.sandbox.submission import STUDENT_FILES, Submission, reference_dir, source_for

__all__ = ["Sandbox", "ServeChild", "ChildRun", "Answer", "proxy_layers_source"]

HERE = Path(__file__).parent
CHILD_FILES = ("child.py", "wire.py", "oracle_client.py")
BLOCKED = ("torch", "scipy", "tensorflow", "jax", "numba", "cupy", "sklearn")
SMALL_ANSWER = 1 << 20  # a wrong-shaped answer up to this size is kept for the diagnosis
MAX_FRAMES = 100_000


@dataclass
class Answer:
    """One answer: the array when it has the expected shape, dtype and finite values; else ``problem``.

    A wrong-shaped or wrong-dtype answer of at most 1 MiB keeps its ``value`` for the diagnosis.
    """

    value: np.ndarray | None
    problem: str | None


def check_answer(arr: np.ndarray, shape, dtype) -> Answer:
    shape, dtype = tuple(shape), np.dtype(dtype)
    if tuple(arr.shape) != shape:
        return Answer(arr if arr.nbytes <= SMALL_ANSWER else None,
                      f"answer has shape {tuple(arr.shape)}, expected {shape}")
    if arr.dtype != dtype:
        return Answer(arr if arr.nbytes <= SMALL_ANSWER else None, f"answer has dtype {arr.dtype}, expected {dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        return Answer(None, "answer holds NaN or infinity")
    return Answer(arr, None)


def _clean(text, limit=2000) -> str:
    text = str(text)[:limit]
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "?" for ch in text)


@dataclass
class ChildRun:
    """What one child gave back: answers by (task, name), reported errors by task, output, how it ended."""

    answers: dict
    errors: dict
    stdout: str
    stderr: str
    returncode: int | None
    ending: str  # "end", "timeout", "exited", or "protocol: ..."
    elapsed: float

    def explain(self, task: str, name: str) -> str:
        """Why an answer is missing."""
        if task in self.errors:
            e = self.errors[task]
            where = e.get("where")
            at = f" (at {where['file']}:{where['line']}: {where['text']})" if where else ""
            return f"your code raised {e['type']}: {e['message']}{at}"
        if self.ending == "timeout":
            return f"the child ran out of time ({self.elapsed:.1f} s) and was killed"
        if self.ending.startswith("protocol"):
            return "the child broke the wire protocol and was killed (" + self.ending[10:] + ")"
        if self.returncode is not None and self.returncode < 0:
            try:
                sig = signal.Signals(-self.returncode).name
            except ValueError:
                sig = str(-self.returncode)
            return f"the child was killed by {sig} before answering"
        if self.ending == "end":
            return "no answer was sent"
        return f"the child exited (status {self.returncode}) before answering"


def proxy_layers_source() -> str:
    """``convnet/layers.py`` for a served child: every layer of the table, computed by the grader."""
    from convnet.specs import LAYERS

    lines = ['"""convnet.layers as served by the grader: each call runs the reference in the grader."""',
             "from oracle_client import layer_class", ""]
    for spec in LAYERS.values():
        lines.append(f"{spec.name} = layer_class({spec.name!r}, {tuple(spec.backwards)!r})")
    lines.append(f"__all__ = {list(LAYERS)!r}")
    return "\n".join(lines) + "\n"


class Sandbox:
    """Runs groups of tasks of one submission in sandboxed children.

    Parameters
    ----------
    submission : Submission
    timeout : float
        Wall-clock seconds per child.
    memory : int
        RLIMIT_AS bytes (numpy with OpenBLAS needs a few hundred MB of address space).
    layers : dict, optional
        Which isolation layers to use; default :func:`isolation.layers_available`.
    allow_threads : bool
        Tests only: leave thread creation to the rlimits (to exercise the CPU-time check).
    """

    def __init__(self, submission: Submission, timeout: float = 30.0, memory: int = 2 << 30, layers=None,
                 allow_threads: bool = False):
        install_cleanup()
        self.submission = submission
        self.timeout = timeout
        self.memory = memory
        self.layers = dict(layers or isolation.layers_available())
        self.allow_threads = allow_threads
        self.ref = reference_dir()
        self.root = Path(tempfile.mkdtemp(prefix="convnet-grade-"))
        os.chmod(self.root, 0o711)
        self.outputs = self.root / ".outputs"
        self.outputs.mkdir(mode=0o700)
        self._read_paths = isolation.read_paths()
        self._counter = itertools.count(1)
        # Every source a child may get, made now: parsing is not safe from several threads at once.
        self._sources = {name: source_for(name, submission) for name in STUDENT_FILES
                         if name in submission.files or (self.ref / name).is_file()}

    def close(self):
        remove_tree(self.root)

    # -- the child's files

    def _package(self, files: str, fast: bool) -> dict:
        """``{relative path: content}`` of the child's ``pkg/convnet``."""
        pkg = {"__init__.py": '"""convnet as assembled by the grader."""\n'}
        for path in sorted(self.ref.glob("*.py")):
            if path.name not in ("__init__.py", "__main__.py", "fast.py", *STUDENT_FILES):
                pkg[path.name] = path
        if fast:
            fast_pkg = self.ref / "fast"
            if fast_pkg.is_dir():
                pkg.update({f"fast/{p.name}": p for p in fast_pkg.glob("*.py")})
            elif (self.ref / "fast.py").is_file():
                pkg["fast.py"] = self.ref / "fast.py"
            kernels = self.ref / "_fast"
            if kernels.is_dir():
                pkg.update({f"_fast/{p.name}": p for p in kernels.iterdir()
                            if p.name == "__init__.py" or p.suffix in (".so", ".pyd")})
        for name in STUDENT_FILES:
            if files == "reference":
                if (self.ref / name).is_file():
                    pkg[name] = self.ref / name
            elif files == "served" and name == "layers.py":
                pkg[name] = proxy_layers_source()
            elif name in self._sources:
                pkg[name] = self._sources[name]
        return {f"pkg/convnet/{k}": v for k, v in pkg.items()}

    def _jobdir(self, tag: str, files: str, fast: bool) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in tag)[:60]
        jobdir = self.root / f"{next(self._counter):03d}-{safe}"
        jobdir.mkdir(mode=0o755)
        tree = {f"lib/{name}": HERE / name for name in CHILD_FILES}
        tree.update(self._package(files, fast))
        write_tree(jobdir, tree)
        site = jobdir / "site"
        site.mkdir()
        for p in isolation.numpy_paths():
            os.symlink(p, site / p.name)
        tp = isolation.threadpoolctl_path()
        if tp is not None:
            os.symlink(tp, site / tp.name)
        for d in [jobdir, *(p for p in jobdir.rglob("*") if p.is_dir() and not p.is_symlink())]:
            os.chmod(d, 0o755)
        work = jobdir / "work"
        work.mkdir(mode=0o700)
        if self.layers.get("uid_drop"):
            os.chown(work, isolation.NOBODY, isolation.NOBODY)
        return jobdir

    def _config(self, jobdir: Path, files: str, fast: bool, cpu: float, serve=()) -> dict:
        limits = {"RLIMIT_CPU": (int(cpu) + 1, int(cpu) + 3), "RLIMIT_AS": (self.memory, self.memory),
                  "RLIMIT_FSIZE": (64 << 20, 64 << 20), "RLIMIT_NOFILE": (64, 64), "RLIMIT_CORE": (0, 0)}
        if self.layers.get("uid_drop"):
            limits["RLIMIT_NPROC"] = (64, 64)
        blocked = list(BLOCKED) + ([] if fast else ["convnet.fast", "convnet._fast"])
        allow, getters = isolation.seccomp_numbers()
        if self.allow_threads:
            allow = allow + [56, 435]  # clone, clone3 (threads; RLIMIT_NPROC and the CPU check still apply)
        return {
            "landlock": bool(self.layers.get("landlock")), "read_paths": self._read_paths + [str(jobdir)],
            "rw_paths": [str(jobdir / "work")], "drop_caps": bool(self.layers.get("drop_caps")),
            "seccomp": allow if self.layers.get("seccomp") else None, "seccomp_getters": getters,
            "rlimits": limits, "blocked": blocked, "oracle": files == "served" or bool(serve),
            "serve": list(serve),
            "sys_path": [str(jobdir / "lib"), str(jobdir / "site"), str(jobdir / "pkg")],
            "student_files": list(STUDENT_FILES),
        }

    def _env(self, jobdir: Path) -> dict:
        env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(jobdir / "work"),
               "TMPDIR": str(jobdir / "work")}
        # The machine's BLAS kernel selection, passed on unchanged (never set here).
        for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    def start(self, tag: str, files: str = "student", fast: bool = False, cpu: float | None = None, serve=()):
        """A fresh child (its job directory written first); returns ``(child, jobdir)``."""
        jobdir = self._jobdir(tag, files, fast)
        config = self._config(jobdir, files, fast, self.timeout if cpu is None else cpu, serve)
        user = isolation.NOBODY if self.layers.get("uid_drop") else None
        child = ChildProcess(jobdir / "lib" / "child.py", config, cwd=jobdir / "work", outputs_dir=self.outputs,
                             user=user, env=self._env(jobdir))
        return child, jobdir

    # -- running

    def run(self, tag: str, tasks: list, inputs: dict, expect: dict, *, files: str = "student", fast: bool = False,
            timeout: float | None = None, serve=()) -> ChildRun:
        """Run ``tasks`` in a fresh child; ``expect`` is ``{task id: {name: (shape, dtype)}}``.

        ``serve`` names layers the grader answers for (in place of the student's) in a "student" child.
        """
        timeout = self.timeout if timeout is None else timeout
        t0 = time.monotonic()
        deadline = t0 + timeout
        child, jobdir = self.start(tag, files, fast, cpu=timeout, serve=serve)
        oracle = Oracle() if files == "served" or serve else None
        answers, errors = {}, {}
        ending = "exited"
        try:
            self._expect_ready(child, deadline)
            child.send("job", {"tasks": tasks}, inputs, deadline=deadline)
            for _ in range(MAX_FRAMES):
                kind, meta, arrays = child.recv(deadline, lambda k, m, listing: self._limit(k, m, expect, oracle))
                if kind == "answer":
                    self._take_answer(meta, arrays, expect, answers)
                elif kind == "error":
                    tid = str(meta.get("task"))
                    errors[tid] = _error_info(meta)
                elif kind == "oracle":
                    reply = oracle.serve(meta, arrays) if oracle else (
                        "oracle-error", {"type": "RuntimeError", "message": "no layers are served here"}, {})
                    child.send(*reply, deadline=deadline)
                elif kind == "end":
                    ending = "end"
                    break
        except Timeout:
            ending = "timeout"
        except Closed:
            ending = "exited"
        except wire.WireError as exc:
            ending = f"protocol: {exc}"
        finally:
            stdout, stderr = child.close()
            remove_tree(jobdir)
        return ChildRun(answers, errors, stdout, stderr, child.returncode, ending, time.monotonic() - t0)

    @staticmethod
    def _expect_ready(child, deadline):
        kind, _, _ = child.recv(deadline, lambda *a: 0)
        if kind != "ready":
            raise wire.WireError(f"expected 'ready', got {kind!r}")

    @staticmethod
    def _limit(kind, meta, expect, oracle) -> int:
        if kind == "answer":
            want = expect.get(str(meta.get("task")), {}).get(str(meta.get("name")))
            if want is None:
                return 0
            nbytes = int(np.prod(want[0], dtype=np.int64)) * np.dtype(want[1]).itemsize
            return min(max(16 * nbytes, SMALL_ANSWER), 64 << 20)
        if kind == "oracle" and oracle is not None:
            return oracle.request_cap()
        return 0

    @staticmethod
    def _take_answer(meta, arrays, expect, answers):
        tid, name = str(meta.get("task")), str(meta.get("name"))
        want = expect.get(tid, {}).get(name)
        if want is None or list(arrays) != ["value"]:
            return
        answers[(tid, name)] = check_answer(arrays["value"], *want)

    def serve(self, tag: str, *, files: str = "student", fast: bool = False) -> "ServeChild":
        """A persistent child for timing (see :class:`ServeChild`)."""
        return ServeChild(self, tag, files, fast)


def _error_info(meta) -> dict:
    where = meta.get("where")
    if isinstance(where, dict):
        where = {"file": _clean(where.get("file", "?"), 60), "line": int(where.get("line", 0) or 0)
                 if str(where.get("line", "0")).isdigit() else 0, "text": _clean(where.get("text", ""), 200)}
    else:
        where = None
    return {"type": _clean(meta.get("type", "Error"), 60), "message": _clean(meta.get("message", ""), 1000),
            "where": where}


class ServeChild:
    """A persistent child answering one timed run per request.

    The parent sends a run's task and fresh inputs, with the clock started
    before the send, and stops it when the child's ``done`` arrives; every
    answer must arrive before ``done``, so no work happens off the clock.
    The idle sibling of a timing pair is stopped (SIGSTOP) meanwhile.
    """

    def __init__(self, box: Sandbox, tag: str, files: str, fast: bool):
        self.box = box
        self.child, self.jobdir = box.start(tag, files, fast, cpu=600)
        self.runs = 0
        self.cpu = 0.0
        self.wall = 0.0
        try:
            Sandbox._expect_ready(self.child, time.monotonic() + box.timeout)
            self.alive = True
        except (Timeout, Closed, wire.WireError):
            self.alive = False

    def run(self, task: dict, inputs: dict, expect: dict, timeout: float):
        """One timed run; returns ``(seconds or None, {name: Answer})``."""
        if not self.alive:
            return None, {}
        self.runs += 1
        tid = f"run{self.runs}"
        task = dict(task, id=tid)
        want = {tid: expect}
        answers = {}
        cpu0 = self.child.cpu_seconds()
        t0 = time.monotonic()
        deadline = t0 + timeout
        try:
            self.child.send("run", {"task": task, "run": self.runs}, inputs, deadline=deadline)
            while True:
                kind, meta, arrays = self.child.recv(deadline, lambda k, m, listing: Sandbox._limit(k, m, want, None))
                if kind == "answer":
                    Sandbox._take_answer(meta, arrays, want, answers)
                elif kind == "done":
                    break
            elapsed = time.monotonic() - t0
        except (Timeout, Closed, wire.WireError):
            self.alive = False
            self.close()
            return None, {name: a for (_, name), a in answers.items()}
        self.wall += elapsed
        self.cpu += self.child.cpu_seconds() - cpu0
        return elapsed, {name: a for (_, name), a in answers.items()}

    def pause(self):
        if self.alive:
            self.child.signal_group(signal.SIGSTOP)

    def resume(self):
        if self.alive:
            self.child.signal_group(signal.SIGCONT)

    def output(self) -> tuple:
        return self.child.close()

    def close(self):
        self.child.signal_group(signal.SIGCONT)
        out = self.child.close()
        remove_tree(self.jobdir)
        return out
