"""Running untrusted student code: child processes, their lock-in, and the wire protocol.

Trust model (see DESIGN.md): this parent process is trusted; every child runs
student code and is trusted with nothing. A child is a fresh
``python -I -S _runner.py JOBDIR`` (:mod:`grader._child` copied into JOBDIR):

========================  ==========================================================
layer                      what it guarantees
========================  ==========================================================
private JOBDIR             a fresh temporary directory holding the assembled
                           ``convnet`` package (student files, stubs for missing
                           ones, the support files _checks/gradcheck/losses, and
                           fast/ with the compiled ``_fast`` modules only where
                           the check allows the fast path; ``__init__.py`` is a
                           minimal one, so importing the package imports nothing
                           the check did not ask for), a ``site`` directory with
                           numpy only, the inputs, and ``out/``; it is the cwd.
``-I -S``                  no site-packages, no ``.pth`` files, no editable finder:
                           the reference ``convnet`` and ``grader`` are not importable.
Landlock (when available)  reads only below: the standard library (without its
                           site-packages), numpy and its bundled libraries, the
                           system's shared libraries, a few /dev, /proc, /sys
                           files; writes only in JOBDIR; no TCP; (ABI >= 6) no
                           signals or abstract sockets outside the sandbox. The
                           reference sources, the grader, torch and scipy are
                           unreadable. This is the layer that makes the
                           reference unreadable; without it, it is only
                           unimportable (a warning is printed).
seccomp                    no fork/vfork/exec/clone3 (threads only), no sockets,
                           no ptrace, no kill/tgkill/pidfd signals, no
                           process_vm_readv/writev: fork bombs and escapes fail.
capabilities dropped       when the child is uid 0 (the interpreter is not
                           reachable by an unprivileged uid), every capability
                           and the bounding set are cleared.
uid/gid drop               when the parent is root and the interpreter and numpy
                           are reachable by ``nobody`` (65534): the child runs as
                           nobody/nogroup; JOBDIR is chowned to it.
rlimits                    CPU seconds, address space, file size (stdout floods
                           end with SIGXFSZ), open files, no core; processes
                           (RLIMIT_NPROC only binds a non-root uid). The runner
                           sets them on itself before reading any student file
                           (no preexec_fn: the parent is multi-threaded).
wall clock                 the parent kills the child's process group (its own
                           session) at the deadline.
blocked imports            a meta-path finder refusing torch, scipy, convnet.fast
                           and convnet._fast (naive checks, where fast/ and the
                           extension are not copied either).
========================  ==========================================================

The wire carries arrays only: the parent writes ``inputs.npz`` and
``job.json`` (names and literals), the child writes ``out/<task>__<name>.npy``.
The parent opens each answer with ``O_NOFOLLOW``, bounds its size, loads it with
``allow_pickle=False`` and checks it is a plain ndarray of the expected shape
and dtype with finite values (:func:`validate`). stdout and stderr go to files
of which the first 10 kB are kept.
"""
from __future__ import annotations

import ctypes
import io
import itertools
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["STUDENT_FILES", "SUPPORT_FILES", "Submission", "load_submission", "Sandbox", "ChildResult",
           "validate", "layers_available"]

STUDENT_FILES = ("layers.py", "sandwich.py", "models.py", "optim.py", "solver.py")
SUPPORT_FILES = ("_checks.py", "gradcheck.py", "losses.py")
FAST_FILES = ("fast",)  # the fast path's package (its .py files); the compiled _fast modules are copied beside it
NOBODY = 65534
OUTPUT_LIMIT = 10_000
MAX_ANSWER_BYTES = 64 << 20
MAX_SOURCE_BYTES = 2 << 20
RUNNER = Path(__file__).with_name("_child.py")


# ---------------------------------------------------------------- submissions


@dataclass
class Submission:
    """Student files by name (text), and the names that were expected but absent."""

    files: dict
    missing: list
    origin: str
    notes: list = field(default_factory=list)


def _pick(candidates: dict, name: str):
    """Among archive/dir paths ending in ``name``, prefer ``convnet/name``, then the shortest."""
    hits = [p for p in candidates if p.split("/")[-1] == name and "__MACOSX" not in p.split("/")]
    if not hits:
        return None
    hits.sort(key=lambda p: (not p.endswith("convnet/" + name), p.count("/"), p))
    return hits[0]


def load_submission(path) -> Submission:
    """Read a submission directory or .zip: ``layers.py`` or ``convnet/layers.py`` (any depth), etc."""
    path = Path(path)
    texts = {}
    notes = []
    if path.is_dir():
        found = {}
        for root, dirs, files in os.walk(path, followlinks=False):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
            for f in files:
                if f in STUDENT_FILES:
                    full = Path(root, f)
                    found[full.relative_to(path).as_posix()] = full
        for name in STUDENT_FILES:
            key = _pick(found, name)
            if key is None:
                continue
            full = found[key]
            if full.is_symlink() or not full.is_file():
                notes.append(f"{key}: not a regular file, ignored")
                continue
            data = full.read_bytes()[:MAX_SOURCE_BYTES + 1]
            texts[name] = data
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            infos = {i.filename.rstrip("/"): i for i in z.infolist() if not i.is_dir()}
            for name in STUDENT_FILES:
                key = _pick(infos, name)
                if key is None:
                    continue
                info = infos[key]
                if info.file_size > MAX_SOURCE_BYTES:
                    notes.append(f"{key}: larger than {MAX_SOURCE_BYTES} bytes, ignored")
                    continue
                with z.open(info) as fh:
                    texts[name] = fh.read(MAX_SOURCE_BYTES + 1)
    else:
        raise FileNotFoundError(f"submission {path} is neither a directory nor a .zip file")
    files = {}
    for name, data in texts.items():
        if len(data) > MAX_SOURCE_BYTES:
            notes.append(f"{name}: larger than {MAX_SOURCE_BYTES} bytes, ignored")
            continue
        try:
            files[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            notes.append(f"{name}: not UTF-8 text, ignored")
    missing = [n for n in STUDENT_FILES if n not in files]
    return Submission(files, missing, str(path), notes)


def reference_dir() -> Path:
    """The installed package's directory (the trusted reference, or the stubs in a release)."""
    import convnet

    return Path(convnet.__file__).resolve().parent


def reference_submission() -> Submission:
    """The bundled reference as a submission (what ``python -m grader`` grades by default)."""
    ref = reference_dir()
    files = {n: (ref / n).read_text() for n in STUDENT_FILES if (ref / n).is_file()}
    return Submission(files, [n for n in STUDENT_FILES if n not in files], str(ref))


# CPython 3.11's ast.parse is not thread-safe (one recursion counter per interpreter: SystemError
# "AST constructor recursion depth mismatch"), and the grader's threads stub files concurrently.
_STUB_LOCK = threading.Lock()


def stub_source(name: str) -> str:
    """The stubbed version of a student file (solution regions replaced by ``raise NotImplementedError``)."""
    text = (reference_dir() / name).read_text()
    try:
        from grader.release import strip_solutions
    except ImportError:  # pragma: no cover - the release engineer's module is part of the grader
        return _fallback_strip(text)
    try:
        with _STUB_LOCK:
            return strip_solutions(text, name)
    except ValueError:
        return _fallback_strip(text)


def _fallback_strip(text: str) -> str:
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        s = line.strip()
        if s == "# BEGIN SOLUTION":
            skipping = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}raise NotImplementedError('missing file')\n")
        elif s == "# END SOLUTION":
            skipping = False
        elif not skipping:
            out.append(line)
    return "".join(out)


# ---------------------------------------------------------------- layers


def _landlock_abi() -> int:
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        abi = libc.syscall(ctypes.c_long(444), ctypes.c_void_p(None), ctypes.c_size_t(0), ctypes.c_uint32(1))
        return max(int(abi), 0)
    except OSError:
        return 0


def _reachable_by_others(path: Path) -> bool:
    """Every directory above ``path`` is o+x and the path itself o+r (so ``nobody`` can use it)."""
    p = path.resolve()
    for parent in [*reversed(p.parents)]:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
    return bool(os.stat(p).st_mode & stat.S_IROTH)


def _numpy_paths() -> list:
    base = Path(np.__file__).resolve().parent
    paths = [base]
    libs = base.parent / "numpy.libs"
    if libs.is_dir():
        paths.append(libs.resolve())
    return paths


def _interpreter_paths() -> list:
    """The standard library's entries (not its site-packages) and the interpreter's own libraries."""
    out = []
    stdlib = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"])
    for entry in stdlib.iterdir():
        if entry.name in ("site-packages", "dist-packages"):
            continue
        out.append(entry)
    dynload = stdlib / "lib-dynload"
    if dynload.is_dir():
        out.append(dynload)
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    if libdir.is_dir():
        out += [p for p in libdir.glob("libpython*")]
    return out


SYSTEM_READ = ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
               "/usr/lib/aarch64-linux-gnu", "/etc/ld.so.cache", "/etc/localtime", "/dev/null", "/dev/zero",
               "/dev/urandom", "/proc/cpuinfo", "/proc/meminfo", "/sys/devices/system/cpu", "/usr/share/zoneinfo"]


def layers_available() -> dict:
    """Which isolation layers this machine gives the children (reported in results.json)."""
    root = os.geteuid() == 0
    python_ok = _reachable_by_others(Path(sys.executable)) and all(_reachable_by_others(p) for p in _numpy_paths())
    stdlib_ok = _reachable_by_others(Path(sysconfig.get_paths()["stdlib"]) / "os.py")
    uid_drop = root and python_ok and stdlib_ok
    abi = _landlock_abi()
    return {
        "landlock_abi": abi,
        "landlock": abi >= 1,
        "seccomp": sys.platform.startswith("linux") and os.uname().machine == "x86_64",
        "uid_drop": uid_drop,
        "drop_caps": root and not uid_drop,
        "rlimits": True,
        "root": root,
        "uid_drop_blocked_by": None if (uid_drop or not root) else
        "the interpreter or numpy is not reachable by uid 65534 (a 0700 directory above it)",
    }


# ---------------------------------------------------------------- answers


def _read_npy(path: Path):
    """Open an answer without following links, bounded in size; a plain ndarray or an error string."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "the answer is not a regular file"
        if st.st_size > MAX_ANSWER_BYTES:
            return f"the answer is larger than {MAX_ANSWER_BYTES} bytes"
        data = os.read(fd, st.st_size + 1)
    finally:
        os.close(fd)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable answer is just wrong
        return f"unreadable answer ({type(exc).__name__}: {str(exc)[:200]})"
    if type(arr) is not np.ndarray:
        return f"the answer is {type(arr).__name__}, not a plain ndarray"
    return arr


def validate(arr, shape=None, dtype=None, finite=True):
    """Check an answer; returns ``(array, None)`` or ``(None, message)``."""
    if arr is None:
        return None, "no answer"
    if isinstance(arr, str):
        return None, arr
    if type(arr) is not np.ndarray:
        return None, f"answer is {type(arr).__name__}, not numpy.ndarray"
    if arr.dtype.kind not in "fiub" or arr.dtype.hasobject:
        return None, f"answer has dtype {arr.dtype}, expected {dtype}"
    if shape is not None and tuple(arr.shape) != tuple(shape):
        return None, f"answer has shape {tuple(arr.shape)}, expected {tuple(shape)}"
    if dtype is not None and arr.dtype != np.dtype(dtype):
        return None, f"answer has dtype {arr.dtype}, expected {np.dtype(dtype)}"
    if finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        return None, "answer holds NaN or infinity"
    return arr, None


@dataclass
class ChildResult:
    """What a child left behind: answers by (task, name), child-reported errors, output, exit status."""

    answers: dict
    errors: dict
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool
    elapsed: float

    def get(self, task: str, name: str):
        return self.answers.get((task, name))

    def explain(self, task: str) -> str:
        """A short reason for a missing answer."""
        if task in self.errors:
            return "error in the submission: " + self.errors[task]
        if self.timed_out:
            return f"the child ran out of time ({self.elapsed:.1f} s) and was killed"
        if self.returncode is not None and self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = str(-self.returncode)
            return f"the child was killed by {name} before answering"
        return f"the child exited (status {self.returncode}) before answering"


def _truncate(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read(OUTPUT_LIMIT + 1)
            size = os.fstat(fh.fileno()).st_size
    except OSError:
        return ""
    text = data[:OUTPUT_LIMIT].decode("utf-8", "replace")
    if size > OUTPUT_LIMIT:
        text += f"\n[... {size - OUTPUT_LIMIT} more bytes truncated]"
    return text


# ---------------------------------------------------------------- the sandbox


class Sandbox:
    """Makes child working directories and runs children in them.

    Parameters
    ----------
    submission : Submission
    timeout : float
        Wall-clock seconds per child.
    memory : int
        RLIMIT_AS bytes (numpy with OpenBLAS needs a few hundred MB of address space).
    layers : dict, optional
        Which isolation layers to use; default :func:`layers_available`.
    """

    def __init__(self, submission: Submission, timeout: float = 30.0, memory: int = 2 << 30, layers=None):
        self.submission = submission
        self.timeout = timeout
        self.memory = memory
        self.layers = dict(layers or layers_available())
        self.ref = reference_dir()
        self.root = Path(tempfile.mkdtemp(prefix="convnet-grade-"))
        os.chmod(self.root, 0o711)
        self._stubs = {}
        self._read_paths = [str(p) for p in _interpreter_paths() + _numpy_paths()] + \
            [p for p in SYSTEM_READ if os.path.exists(p)]
        self._counter = itertools.count(1)

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)

    # -- assembling a package

    def source(self, name: str) -> str:
        if name in self.submission.files:
            return self.submission.files[name]
        if name not in self._stubs:
            self._stubs[name] = stub_source(name)
        return self._stubs[name]

    def _assemble(self, jobdir: Path, fast: bool, trusted: bool):
        pkg = jobdir / "pkg" / "convnet"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text('"""convnet as assembled by the grader."""\n')
        for name in SUPPORT_FILES:
            shutil.copyfile(self.ref / name, pkg / name)
        if fast:
            for name in FAST_FILES:
                if (self.ref / name).is_dir():
                    (pkg / name).mkdir()
                    for f in (self.ref / name).glob("*.py"):
                        shutil.copyfile(f, pkg / name / f.name)
            src = self.ref / "_fast"
            if src.is_dir():
                (pkg / "_fast").mkdir()
                for f in src.iterdir():
                    if f.name == "__init__.py" or f.suffix in (".so", ".pyd"):
                        shutil.copyfile(f, pkg / "_fast" / f.name)
        for name in STUDENT_FILES:
            if trusted:
                if (self.ref / name).is_file():
                    shutil.copyfile(self.ref / name, pkg / name)
            else:
                (pkg / name).write_text(self.source(name))
        site = jobdir / "site"
        site.mkdir()
        for p in _numpy_paths():
            os.symlink(p, site / p.name)

    def _jobdir(self, tag: str, tasks, inputs: dict, fast: bool, trusted: bool, serve=None, cpu=None) -> Path:
        jobdir = self.root / f"{next(self._counter):03d}-{tag.replace('/', '_').replace(':', '_')}"
        jobdir.mkdir(mode=0o700)
        self._assemble(jobdir, fast, trusted)
        (jobdir / "out").mkdir()
        shutil.copyfile(RUNNER, jobdir / "_runner.py")
        blocked = ["torch", "scipy", "tensorflow", "jax", "numba", "cupy", "sklearn"]
        if not fast:
            blocked += ["convnet.fast", "convnet._fast"]
        config = {"landlock": self.layers.get("landlock", False), "seccomp": self.layers.get("seccomp", False),
                  "drop_caps": self.layers.get("drop_caps", False), "read_paths": self._read_paths,
                  "blocked": blocked, "rlimits": self._rlimits(self.timeout if cpu is None else cpu)}
        (jobdir / "config.json").write_text(json.dumps(config))
        job = {"tasks": tasks}
        if serve:
            job["serve"] = serve
        (jobdir / "job.json").write_text(json.dumps(job))
        np.savez(jobdir / "inputs.npz", **inputs)
        if self.layers.get("uid_drop"):
            for p in [jobdir, *jobdir.rglob("*")]:
                os.lchown(p, NOBODY, NOBODY)
        return jobdir

    # -- running

    def _rlimits(self, cpu: float) -> dict:
        """The limits the runner sets on itself before it reads any student file."""
        limits = {"RLIMIT_CPU": (int(cpu) + 1, int(cpu) + 3), "RLIMIT_AS": (self.memory, self.memory),
                  "RLIMIT_FSIZE": (64 << 20, 64 << 20), "RLIMIT_NOFILE": (64, 64), "RLIMIT_CORE": (0, 0)}
        if self.layers.get("uid_drop"):
            limits["RLIMIT_NPROC"] = (64, 64)
        return limits

    def _popen_kwargs(self, jobdir: Path):
        env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(jobdir), "TMPDIR": str(jobdir)}
        kw = dict(cwd=jobdir, env=env, start_new_session=True, close_fds=True)
        if self.layers.get("uid_drop"):
            kw.update(user=NOBODY, group=NOBODY, extra_groups=[])
        return kw

    def _kill(self, proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass

    def run(self, tag: str, tasks: list, inputs: dict, expect: dict, fast: bool = False, trusted: bool = False,
            timeout: float | None = None) -> ChildResult:
        """Run ``tasks`` in a fresh child and collect the answers named in ``expect`` {task id: [names]}."""
        timeout = self.timeout if timeout is None else timeout
        jobdir = self._jobdir(tag, tasks, inputs, fast, trusted, cpu=timeout)
        out_path, err_path = jobdir / "stdout.txt", jobdir / "stderr.txt"
        t0 = time.perf_counter()
        timed_out = False
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            if self.layers.get("uid_drop"):
                os.fchown(out.fileno(), NOBODY, NOBODY)
                os.fchown(err.fileno(), NOBODY, NOBODY)
            proc = subprocess.Popen([sys.executable, "-I", "-S", str(jobdir / "_runner.py"), str(jobdir)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    **self._popen_kwargs(jobdir))
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                self._kill(proc)
        elapsed = time.perf_counter() - t0
        answers, errors = {}, {}
        for tid, names in expect.items():
            for name in names:
                answers[(tid, name)] = _read_npy(jobdir / "out" / f"{tid}__{name}.npy")
            err = jobdir / "out" / f"{tid}.err"
            if err.exists() and not err.is_symlink():
                errors[tid] = _truncate(err)[:500]
        result = ChildResult(answers, errors, _truncate(out_path), _truncate(err_path),
                             proc.returncode, timed_out, elapsed)
        shutil.rmtree(jobdir, ignore_errors=True)
        return result

    def serve(self, tag: str, tasks: list, fast: bool = False, trusted: bool = False):
        """Start a persistent child for timing (see :class:`ServeChild`)."""
        return ServeChild(self, tag, tasks, fast, trusted)


class ServeChild:
    """A persistent child answering one run per request, timed by the parent.

    The parent writes the run's inputs to a fresh file, sends ``"<task> <file>"``
    on stdin and waits for a line on a private pipe (fd 3 in the child). The
    time is the parent's wall clock around that round trip; the answer is
    then read from ``out/`` and checked by the caller, so a child that says
    "done" early has no answer to show.
    """

    def __init__(self, box: Sandbox, tag: str, tasks: list, fast: bool, trusted: bool):
        self.box = box
        r, w = os.pipe()
        os.set_inheritable(w, True)
        self.jobdir = box._jobdir(tag, tasks, {}, fast, trusted, serve=w, cpu=600)
        self._out = open(self.jobdir / "stdout.txt", "wb")
        self._err = open(self.jobdir / "stderr.txt", "wb")
        kw = box._popen_kwargs(self.jobdir)
        kw.pop("close_fds")
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", str(self.jobdir / "_runner.py"), str(self.jobdir)],
                                     stdin=subprocess.PIPE, stdout=self._out, stderr=self._err,
                                     pass_fds=(w,), **kw)
        os.close(w)
        self._ctl = os.fdopen(r, "rb", buffering=0)
        self._buf = b""
        self._runs = 0
        self.alive = self._readline(box.timeout) == "ready"

    def _readline(self, timeout: float):
        deadline = time.perf_counter() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._ctl], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._ctl.fileno(), 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("ascii", "replace").strip()

    def run(self, task: int, inputs: dict, names: list, timeout: float):
        """One timed run; returns ``(seconds or None, {name: answer})``."""
        if not self.alive:
            return None, {}
        self._runs += 1
        stem = f"run{self._runs:04d}"
        path = self.jobdir / f"{stem}.npz"
        np.savez(path, **inputs)
        if self.box.layers.get("uid_drop"):
            os.chown(path, NOBODY, NOBODY)
        try:
            t0 = time.perf_counter()
            self.proc.stdin.write(f"{task} {stem}.npz\n".encode())
            self.proc.stdin.flush()
            line = self._readline(timeout)
            elapsed = time.perf_counter() - t0
        except (BrokenPipeError, OSError):
            line = None
        answers = {n: _read_npy(self.jobdir / "out" / f"{stem}__{n}.npy") for n in names}
        for n in names:
            try:
                os.unlink(self.jobdir / "out" / f"{stem}__{n}.npy")
            except OSError:
                pass
        os.unlink(path)
        if line != "done":
            self.alive = False
            self.close()
            return None, answers
        return elapsed, answers

    def pause(self):
        """Stop the child (SIGSTOP to its group) so it cannot steal CPU while its sibling is timed."""
        if self.alive:
            try:
                os.killpg(self.proc.pid, signal.SIGSTOP)
            except (ProcessLookupError, PermissionError):
                pass

    def resume(self):
        if self.alive:
            try:
                os.killpg(self.proc.pid, signal.SIGCONT)
            except (ProcessLookupError, PermissionError):
                pass

    def output(self) -> tuple:
        return _truncate(self.jobdir / "stdout.txt"), _truncate(self.jobdir / "stderr.txt")

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.box._kill(self.proc)
        self._out.close()
        self._err.close()
        self._ctl.close()
