"""The child: locks itself in, then runs the student's code on the tasks the parent sends.

Copied into each child's private directory with :mod:`wire` (and, when the
check serves the reference layers, :mod:`oracle_client`) and run as
``python -I -S child.py``; it never imports :mod:`grader`. Its only ways out
are the two pipes the parent made: frames in on standard input, frames out
on the descriptor named in the first frame. Nothing it sends is trusted: the
parent bounds, checks and judges every frame itself.

Order of the lock-in, before any student file is read: parent-death signal;
resource limits; Landlock (read only the interpreter, numpy and the job's
package; write only the job's work directory); capabilities dropped when
running as uid 0; numpy imported with one BLAS thread; then a seccomp
allow-list that leaves no way to make a thread, a process, a socket,
io_uring, System V IPC, a namespace, or to change the limits.
"""
import ctypes
import os
import struct
import sys
import traceback

# ------------------------------------------------------------------ lock-in

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, PR_CAPBSET_DROP = 1, 38, 22, 24
SECCOMP_MODE_FILTER = 2
SYS_LANDLOCK = (444, 445, 446)
SIGKILL = 9
AUDIT_ARCH_X86_64 = 0xC000003E


def _no_new_privs():
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def _die_with_parent(parent_pid):
    _libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(70)


def _rlimits(limits):
    import resource

    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), tuple(value))


def _landlock(read_paths, rw_paths, abi_max=None):
    """Reads only below ``read_paths``; everything but making links, FIFOs and sockets below ``rw_paths``."""
    sc = _libc.syscall
    abi = sc(ctypes.c_long(SYS_LANDLOCK[0]), ctypes.c_void_p(None), ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        raise OSError(ctypes.get_errno(), "landlock unavailable")
    fs_all = (1 << 13) - 1
    if abi >= 2:
        fs_all |= 1 << 13  # REFER
    if abi >= 3:
        fs_all |= 1 << 14  # TRUNCATE
    if abi >= 5:
        fs_all |= 1 << 15  # IOCTL_DEV
    net_all = 3 if abi >= 4 else 0  # TCP bind and connect, with no rule: no TCP at all
    scoped = 3 if abi >= 6 else 0  # abstract unix sockets and signals stay inside the sandbox
    attr = struct.pack("QQQ", fs_all, net_all, scoped)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    buf = ctypes.create_string_buffer(attr, 24)
    rfd = sc(ctypes.c_long(SYS_LANDLOCK[0]), buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if rfd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    read = (1 << 0) | (1 << 2) | (1 << 3)  # EXECUTE | READ_FILE | READ_DIR
    # MAKE_CHAR(6) MAKE_SOCK(9) MAKE_FIFO(10) MAKE_BLOCK(11) MAKE_SYM(12): nothing the parent could trip on.
    write = fs_all & ~((1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12))
    file_rights = (1 << 0) | (1 << 1) | (1 << 2) | ((1 << 14) if abi >= 3 else 0) | ((1 << 15) if abi >= 5 else 0)
    for paths, rights in ((read_paths, read), (rw_paths, write)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            allowed = rights if os.path.isdir(path) else rights & file_rights
            rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)
            res = sc(ctypes.c_long(SYS_LANDLOCK[1]), ctypes.c_int(rfd), ctypes.c_int(1), rule, ctypes.c_uint32(0))
            os.close(fd)
            if res != 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule({path})")
    _no_new_privs()
    if sc(ctypes.c_long(SYS_LANDLOCK[2]), ctypes.c_int(rfd), ctypes.c_uint32(0)) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    os.close(rfd)
    return abi


def _drop_caps():
    """As uid 0: clear every capability (effective, permitted, inheritable) and the bounding set."""
    for cap in range(64):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the last capability is fine
    header = ctypes.create_string_buffer(struct.pack("=Ii", 0x20080522, 0), 8)
    data = ctypes.create_string_buffer(b"\0" * 24, 24)
    if _libc.syscall(ctypes.c_long(126), header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def seccomp_program(allowed, getter_only):
    """A BPF allow-list: ``allowed`` syscalls pass; ``getter_only`` ones pass when their third argument is 0.

    Anything else fails with EPERM (the student's code sees an OSError); another architecture is killed.
    """
    def ins(code, k, jt=0, jf=0):
        return struct.pack("=HBBI", code, jt, jf, k)

    LD, JEQ, RET = 0x20, 0x15, 0x06
    ALLOW, KILL, EPERM = 0x7FFF0000, 0x80000000, 0x00050000 | 1
    allowed, getter_only = sorted(set(allowed)), sorted(set(getter_only))
    n, m = len(allowed), len(getter_only)
    if n + m > 250:
        raise ValueError("allow-list too long for one jump table")
    prog = [ins(LD, 4), ins(JEQ, AUDIT_ARCH_X86_64, 1, 0), ins(RET, KILL), ins(LD, 0)]
    # Layout after LD nr: m getter jumps, n allow jumps, EPERM, ALLOW, the argument check.
    for i, nr in enumerate(getter_only):
        prog.append(ins(JEQ, nr, (m - 1 - i) + n + 2, 0))
    for i, nr in enumerate(allowed):
        prog.append(ins(JEQ, nr, (n - 1 - i) + 1, 0))
    prog += [ins(RET, EPERM), ins(RET, ALLOW)]
    prog += [ins(LD, 32), ins(JEQ, 0, 0, 3), ins(LD, 36), ins(JEQ, 0, 0, 1), ins(RET, ALLOW), ins(RET, EPERM)]
    return b"".join(prog), len(prog)


def _seccomp(allowed, getter_only):
    code, count = seccomp_program(allowed, getter_only)
    filt = ctypes.create_string_buffer(code, len(code))
    fprog = ctypes.create_string_buffer(struct.pack("=HxxxxxxQ", count, ctypes.addressof(filt)), 16)
    _no_new_privs()
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, fprog, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def _one_blas_thread():
    """numpy's BLAS at one thread (the environment asks for it; this enforces it before any student code)."""
    try:
        import threadpoolctl
    except ImportError:
        return
    threadpoolctl.threadpool_limits(1)


class _Blocker:
    """Refuses the blocked modules (the files are not there or not readable anyway)."""

    def __init__(self, blocked):
        self.blocked = tuple(blocked)

    def find_spec(self, name, path=None, target=None):
        for b in self.blocked:
            if name == b or name.startswith(b + "."):
                raise ImportError(f"the grader blocks {name!r} in this check")
        return None


def lock_in(config):
    """Apply the parent's configuration to this process; returns what was applied."""
    applied = {}
    _die_with_parent(config["parent_pid"])
    _rlimits(config.get("rlimits", {}))
    sys.path[:] = [p for p in sys.path if p] + [p for p in config["sys_path"] if p not in sys.path]
    sys.dont_write_bytecode = True
    import numpy  # noqa: F401 - loaded (and its BLAS started) before the filter forbids threads

    _one_blas_thread()  # reads /proc/self/maps, which Landlock closes next
    if config.get("landlock"):
        applied["landlock"] = _landlock(config["read_paths"], config["rw_paths"])
    if config.get("drop_caps") and os.geteuid() == 0:
        _drop_caps()
        applied["caps"] = "dropped"
    if config.get("seccomp"):
        _seccomp(config["seccomp"], config.get("seccomp_getters", ()))
        applied["seccomp"] = "on"
    sys.meta_path.insert(0, _Blocker(config.get("blocked", ())))
    return applied


# ------------------------------------------------------------------ tasks

STUDENT_FILES = ()


def _wire():
    """The wire module: the grader's own in the parent's process, the copy beside this file in a child."""
    try:
        from grader.sandbox import wire
    except ImportError:
        import wire
    return wire


def _resolve(path):
    """'layers.Conv.forward' -> the attribute of convnet.layers."""
    import importlib

    module, *attrs = path.split(".")
    obj = importlib.import_module("convnet." + module)
    for a in attrs:
        obj = getattr(obj, a)
    return obj


def _where(exc):
    """The last traceback frame in one of the student's files: ``{file, line, text}`` or None."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.basename(f.filename) in STUDENT_FILES and "convnet" in f.filename]
    if isinstance(exc, SyntaxError) and exc.filename and os.path.basename(exc.filename) in STUDENT_FILES:
        return {"file": os.path.basename(exc.filename), "line": exc.lineno or 0, "text": (exc.text or "").strip()}
    if not frames:
        return None
    f = frames[-1]
    return {"file": os.path.basename(f.filename), "line": f.lineno or 0, "text": (f.line or "").strip()}


class Runner:
    """Runs tasks; every output goes to the parent as an answer frame (task id, name, array)."""

    def __init__(self, send, inputs=None):
        self.send = send
        self.inputs = inputs or {}

    def arg(self, spec):
        return _wire().decode(spec, self.inputs)

    def answer(self, tid, name, value):
        import numpy as np

        if isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool):
            value = np.array(value, dtype=np.float64)
        elif type(value) is not np.ndarray:
            raise TypeError(f"{name}: expected a numpy.ndarray, got "
                            f"{type(value).__module__}.{type(value).__qualname__}")
        self.send("answer", {"task": tid, "name": name}, {"value": value})

    def run(self, t):
        try:
            getattr(self, "op_" + t["op"])(t)
        except BaseException as exc:  # noqa: BLE001 - report and go on with the next task
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.send("error", {"task": t["id"], "type": type(exc).__name__, "message": str(exc)[:2000],
                                "where": _where(exc)})

    # -- ops

    def op_import(self, t):
        import importlib

        import numpy as np

        importlib.import_module("convnet." + t["module"])
        self.answer(t["id"], "ok", np.ones(1))

    def op_call(self, t):
        args = self.arg(t["args"])
        kwargs = self.arg(t.get("kwargs", {}))
        result = _resolve(t["fn"])(*args, **kwargs)
        for name, path in t["outs"].items():
            value = result
            for p in path:
                value = value[p]
            self.answer(t["id"], name, value)
        for name, (i, key) in t.get("mutated", {}).items():
            self.answer(t["id"], name, args[i][key])

    def op_fwdbwd(self, t):
        args = self.arg(t["args"])
        fwd = _resolve(t["fn"] + ".forward")
        bwd = _resolve(t["fn"] + "." + t.get("bwd", "backward"))
        dout = self.arg({"$a": t["dout"]})
        # Repeats let the parent time a fast layer without the wire's fixed cost dominating.
        for _ in range(int(t.get("repeat", 1))):
            out, cache = fwd(*args)
            grads = bwd(dout, cache)
        if t["ngrads"] == 1:
            grads = (grads,)
        if not isinstance(grads, (tuple, list)) or len(grads) != t["ngrads"]:
            raise TypeError(f"backward returned {type(grads).__name__} of length "
                            f"{len(grads) if isinstance(grads, (tuple, list)) else 1}, expected {t['ngrads']} "
                            f"gradients")
        for k in range(t["ngrads"]):
            self.answer(t["id"], f"d{k}", grads[k])
        # Last: a malformed forward output costs the forward's checks, not the gradients already sent.
        self.answer(t["id"], "out", out)

    def _model(self, t):
        import numpy as np

        model = _resolve(t["cls"])(**self.arg(t["kwargs"]))
        for key, name in t.get("params", {}).items():
            model.params[key] = np.array(self.inputs[name], copy=True)
        return model

    def op_model_init(self, t):
        model = self._model(t)
        for key in t["keys"]:
            self.answer(t["id"], "p:" + key, model.params[key])

    def op_model_loss(self, t):
        model = self._model(t)
        X = self.arg(t["X"])
        if t.get("y") is None:
            self.answer(t["id"], "scores", model.loss(X))
            return
        loss, grads = model.loss(X, self.arg(t["y"]))
        self.answer(t["id"], "loss", loss)
        for key in t["keys"]:
            self.answer(t["id"], "g:" + key, grads[key])

    def op_overfit(self, t):
        """Plain SGD with this runner's loop on the student's loss; the parent scores the parameters."""
        model = self._model(t)
        X, y = self.arg(t["X"]), self.arg(t["y"])
        for _ in range(int(t["steps"])):
            _, grads = model.loss(X, y)
            for k in model.params:
                model.params[k] = model.params[k] - t["lr"] * grads[k]
        for key in t["keys"]:
            self.answer(t["id"], "p:" + key, model.params[key])

    def op_solver(self, t):
        import numpy as np

        model = self._model(t)
        solver = _resolve("solver.Solver")(model, self.arg(t["data"]), **self.arg(t["solver_kwargs"]))
        solver.train()
        self.answer(t["id"], "loss_history", np.asarray(solver.loss_history, dtype=np.float64))
        for key in t["keys"]:
            self.answer(t["id"], "p:" + key, model.params[key])


def _serve_layers(oracle_client, names):
    """Replace these layers of the student's module by the served reference (their bugs are graded elsewhere)."""
    if not names:
        return
    try:
        import convnet.layers as student
    except BaseException:  # noqa: BLE001 - the tasks report the import error themselves
        return
    for name in names:
        original = getattr(student, name, None)
        backwards = [m for m in ("backward", "backward_alt") if hasattr(original, m)] or ["backward"]
        setattr(student, name, oracle_client.layer_class(name, tuple(backwards)))


def main():
    lib = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [lib, os.path.join(os.path.dirname(lib), "site")]
    wire = _wire()
    kind, config, _ = wire.read_frame(0, max_payload=0)
    if kind != "config":
        os._exit(71)
    out_fd = int(config["out_fd"])
    lock_in(config)
    global STUDENT_FILES
    STUDENT_FILES = tuple(config.get("student_files", ()))
    if config.get("oracle"):
        import oracle_client

        oracle_client.configure(0, out_fd)
        _serve_layers(oracle_client, config.get("serve", ()))

    def send(kind, meta, arrays=None):
        wire.write_frame(out_fd, kind, meta, arrays)

    send("ready", {})
    while True:
        try:
            kind, meta, arrays = wire.read_frame(0)
        except EOFError:
            return
        if kind == "job":
            runner = Runner(send, arrays)
            for t in meta["tasks"]:
                runner.run(t)
            send("end", {})
        elif kind == "run":  # timing: one task on fresh inputs, then "done"
            runner = Runner(send, arrays)
            runner.run(meta["task"])
            send("done", {"run": meta.get("run")})
        else:
            return


if __name__ == "__main__":
    main()
