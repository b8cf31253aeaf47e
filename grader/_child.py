"""The child side of the grader's wire protocol (runs untrusted student code).

This file is copied into each child's private working directory and run as
``python -I -S _runner.py JOBDIR``; it never imports :mod:`grader`. It first
locks itself in (Landlock, seccomp, capabilities: see :mod:`grader.sandbox`,
which writes ``JOBDIR/config.json``), then blocks array libraries, sets
``sys.path`` to the standard library, a private ``site`` directory holding
numpy and the assembled ``convnet`` package, and runs the tasks of
``JOBDIR/job.json`` on the arrays of ``JOBDIR/inputs.npz``.

Each task's outputs are written as ``JOBDIR/out/<task>__<name>.npy``
(``allow_pickle=False``). Nothing here is trusted: the parent re-checks every
file and decides every verdict itself; errors written to ``<task>.err`` only
end up in messages.
"""
import ctypes
import json
import os
import struct
import sys

JOBDIR = os.path.abspath(sys.argv[1])
with open(os.path.join(JOBDIR, "config.json")) as fh:
    CONFIG = json.load(fh)

# ------------------------------------------------------------------ lock-in

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def _no_new_privs():
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def _landlock(read_paths, rw_paths):
    """Restrict file access to ``read_paths`` (read/execute) and ``rw_paths`` (everything)."""
    sc = _libc.syscall
    abi = sc(ctypes.c_long(444), ctypes.c_void_p(None), ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        raise OSError(ctypes.get_errno(), "landlock unavailable")
    fs_all = (1 << 13) - 1
    if abi >= 2:
        fs_all |= 1 << 13  # REFER
    if abi >= 3:
        fs_all |= 1 << 14  # TRUNCATE
    if abi >= 5:
        fs_all |= 1 << 15  # IOCTL_DEV
    net_all = 3 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP, no rule: no TCP at all
    scoped = 3 if abi >= 6 else 0  # abstract unix sockets and signals stay inside the sandbox
    attr = struct.pack("QQQ", fs_all, net_all, scoped)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    buf = ctypes.create_string_buffer(attr, 24)
    rfd = sc(ctypes.c_long(444), buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if rfd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    read = (1 << 0) | (1 << 2) | (1 << 3)  # EXECUTE | READ_FILE | READ_DIR
    file_rights = (1 << 0) | (1 << 1) | (1 << 2) | ((1 << 14) if abi >= 3 else 0) | ((1 << 15) if abi >= 5 else 0)
    for paths, rights in ((read_paths, read), (rw_paths, fs_all)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            allowed = rights
            if not os.path.isdir(path):
                allowed &= file_rights
            rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)
            res = sc(ctypes.c_long(445), ctypes.c_int(rfd), ctypes.c_int(1), rule, ctypes.c_uint32(0))
            os.close(fd)
            if res != 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule({path})")
    _no_new_privs()
    if sc(ctypes.c_long(446), ctypes.c_int(rfd), ctypes.c_uint32(0)) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    os.close(rfd)
    return abi


def _seccomp():
    """Deny fork/vfork/exec, clone without CLONE_THREAD, clone3 (ENOSYS, so threads use clone) and sockets."""
    def stmt(code, k):
        return struct.pack("=HBBI", code, 0, 0, k)

    def jump(code, k, jt, jf):
        return struct.pack("=HBBI", code, jt, jf, k)

    LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
    ALLOW, KILL = 0x7FFF0000, 0x80000000
    EPERM = 0x00050000 | 1
    ENOSYS = 0x00050000 | 38
    # fork vfork execve execveat socket socketpair ptrace kill tkill tgkill pidfd_send_signal process_vm_readv/writev
    denied = [57, 58, 59, 322, 41, 53, 101, 62, 200, 234, 424, 310, 311]
    prog = [stmt(LD, 4), jump(JEQ, 0xC000003E, 1, 0), stmt(RET, KILL), stmt(LD, 0)]
    n = len(denied)
    # layout after the LD nr: n deny jumps, clone3 jump, clone jump, allow, [deny], [enosys], clone-check...
    for i, nr in enumerate(denied):
        # jump to the deny return, which sits after: remaining deny jumps, clone3 jump, clone jump, allow
        prog.append(jump(JEQ, nr, (n - 1 - i) + 3, 0))
    prog.append(jump(JEQ, 435, 3, 0))  # clone3 -> ENOSYS
    prog.append(jump(JEQ, 56, 3, 0))  # clone -> flag check
    prog.append(stmt(RET, ALLOW))
    prog.append(stmt(RET, EPERM))
    prog.append(stmt(RET, ENOSYS))
    prog.append(stmt(LD, 16))  # clone flags (low 32 bits of args[0])
    prog.append(jump(JSET, 0x00010000, 0, 1))  # CLONE_THREAD
    prog.append(stmt(RET, ALLOW))
    prog.append(stmt(RET, EPERM))
    code = b"".join(prog)
    filt = ctypes.create_string_buffer(code, len(code))
    fprog = ctypes.create_string_buffer(struct.pack("=HxxxxxxQ", len(prog), ctypes.addressof(filt)), 16)
    _no_new_privs()
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, fprog, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def _drop_caps():
    """As uid 0: clear every capability (effective, permitted, inheritable) and the bounding set."""
    for cap in range(64):
        _libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP; EINVAL past the last cap is fine
    header = ctypes.create_string_buffer(struct.pack("=Ii", 0x20080522, 0), 8)
    data = ctypes.create_string_buffer(b"\0" * 24, 24)
    if _libc.syscall(ctypes.c_long(126), header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _rlimits(limits):
    """Lower the resource limits first thing (the parent spawns without preexec_fn, which threads make unsafe)."""
    import resource

    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), tuple(value))


LAYERS = {}
_rlimits(CONFIG.get("rlimits", {}))
if CONFIG.get("landlock"):
    LAYERS["landlock"] = _landlock(CONFIG["read_paths"], [JOBDIR])
if CONFIG.get("drop_caps") and os.geteuid() == 0:
    _drop_caps()
    LAYERS["caps"] = "dropped"
if CONFIG.get("seccomp"):
    _seccomp()
    LAYERS["seccomp"] = "on"

# ------------------------------------------------------------------ imports

BLOCKED = tuple(CONFIG.get("blocked", ()))


class _Blocker:
    """Refuses the blocked modules (a convenience: the files are not there or not readable anyway)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        for b in BLOCKED:
            if name == b or name.startswith(b + "."):
                raise ImportError(f"the grader blocks {name!r} in this check")
        return None


sys.meta_path.insert(0, _Blocker())
sys.path[:] = [p for p in sys.path if p] + [os.path.join(JOBDIR, "site"), os.path.join(JOBDIR, "pkg")]
sys.dont_write_bytecode = True

import numpy as np  # noqa: E402

OUT = os.path.join(JOBDIR, "out")
INPUTS = {}


def _resolve(path):
    """'layers.Conv.forward' -> the attribute of convnet.layers."""
    import importlib

    mod, *attrs = path.split(".")
    obj = importlib.import_module("convnet." + mod)
    for a in attrs:
        obj = getattr(obj, a)
    return obj


def _arg(spec):
    """Decode an argument: {'$a': name} arrays (fresh copies), {'$dtype': ..}, {'$tuple': [..]}, dicts, literals."""
    if isinstance(spec, dict):
        if "$a" in spec:
            return np.array(INPUTS[spec["$a"]], copy=True)
        if "$dtype" in spec:
            return np.dtype(spec["$dtype"]).type
        if "$tuple" in spec:
            return tuple(_arg(s) for s in spec["$tuple"])
        return {k: _arg(v) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_arg(s) for s in spec]
    return spec


def _select(value, path):
    for p in path:
        value = value[p]
    return value


def _save(tid, name, value):
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        value = np.array(value, dtype=np.float64)
    elif type(value) is not np.ndarray:
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(value).__module__}.{type(value).__qualname__}")
    np.save(os.path.join(OUT, f"{tid}__{name}.npy"), value, allow_pickle=False)


def op_call(t):
    args = [_arg(a) for a in t["args"]]
    kwargs = {k: _arg(v) for k, v in t.get("kwargs", {}).items()}
    result = _resolve(t["fn"])(*args, **kwargs)
    for name, path in t.get("outs", {}).items():
        _save(t["id"], name, _select(result, path))
    for name, (i, key) in t.get("mutated", {}).items():
        _save(t["id"], name, args[i][key])


def op_fwdbwd(t):
    args = [_arg(a) for a in t["args"]]
    fwd = _resolve(t["fn"] + ".forward")
    bwd = _resolve(t["fn"] + "." + t.get("bwd", "backward"))
    dout = _arg({"$a": t["dout"]})
    # Repeats let the parent time a fast layer without the wire's fixed cost dominating.
    for _ in range(int(t.get("repeat", 1))):
        out, cache = fwd(*args)
        grads = bwd(dout, cache)
    _save(t["id"], "out", out)
    if t["ngrads"] == 1:
        grads = (grads,)
    for k in range(t["ngrads"]):
        _save(t["id"], f"d{k}", grads[k])


def op_fwdbatch(t):
    """Forward at base inputs perturbed one coordinate at a time: rows (arg, flat index, +h or -h)."""
    pert = INPUTS[t["pert"]]
    outs = []
    fwd = _resolve(t["fn"] + ".forward")
    for argi, idx, sign in pert.tolist():
        args = [_arg(a) for a in t["args"]]
        flat = args[int(argi)].reshape(-1)
        flat[int(idx)] += sign * t["h"]
        out = _select(fwd(*args), [0])
        if type(out) is not np.ndarray:
            raise TypeError(f"forward returned {type(out).__qualname__}, expected numpy.ndarray")
        outs.append(out)
    _save(t["id"], "outs", np.stack(outs))


def _model(t):
    kwargs = {k: _arg(v) for k, v in t.get("kwargs", {}).items()}
    model = _resolve(t["cls"])(**kwargs)
    for key in t.get("params", []):
        model.params[key] = np.array(INPUTS[t.get("prefix", "") + "p:" + key], copy=True)
    return model


def op_model_init(t):
    model = _model(t)
    for key in t["keys"]:
        _save(t["id"], "p:" + key, model.params[key])


def op_model_loss(t):
    model = _model(t)
    X = _arg({"$a": "X"}) if "X" not in t else _arg(t["X"])
    if t.get("y") is None:
        _save(t["id"], "scores", model.loss(X))
        return
    loss, grads = model.loss(X, _arg(t["y"]))
    _save(t["id"], "loss", float(loss) if isinstance(loss, (float, np.floating)) else loss)
    for key in t["keys"]:
        _save(t["id"], "g:" + key, grads[key])


def op_overfit(t):
    """Train with plain SGD (this runner's loop, the student's loss) and return the parameters."""
    model = _model(t)
    X, y = _arg(t["X"]), _arg(t["y"])
    lr = t["lr"]
    for _ in range(t["steps"]):
        _, grads = model.loss(X, y)
        for k in model.params:
            model.params[k] = model.params[k] - lr * grads[k]
    for key in t["keys"]:
        _save(t["id"], "p:" + key, model.params[key])


def op_solver(t):
    model = _model(t)
    data = {k: _arg(v) for k, v in t["data"].items()}
    kwargs = {k: _arg(v) for k, v in t.get("solver_kwargs", {}).items()}
    solver = _resolve("solver.Solver")(model, data, **kwargs)
    solver.train()
    _save(t["id"], "loss_history", np.asarray(solver.loss_history, dtype=np.float64))
    for key in t["keys"]:
        _save(t["id"], "p:" + key, model.params[key])


def op_import(t):
    import importlib

    importlib.import_module("convnet." + t["module"])
    _save(t["id"], "ok", np.ones(1))


OPS = {"import": op_import, "call": op_call, "fwdbwd": op_fwdbwd, "fwdbatch": op_fwdbatch, "model_init": op_model_init,
       "model_loss": op_model_loss, "overfit": op_overfit, "solver": op_solver}


def _run(t):
    try:
        OPS[t["op"]](t)
    except BaseException as exc:  # noqa: BLE001 - report and go on with the next task
        if isinstance(exc, KeyboardInterrupt):
            raise
        msg = f"{type(exc).__name__}: {exc}"[:2000]
        try:
            with open(os.path.join(OUT, f"{t['id']}.err"), "w") as fh:
                fh.write(msg)
        except OSError:
            pass


def _load_inputs(path):
    INPUTS.clear()
    with np.load(path, allow_pickle=False) as z:
        for k in z.files:
            INPUTS[k] = z[k]


def main():
    with open(os.path.join(JOBDIR, "job.json")) as fh:
        job = json.load(fh)
    if job.get("serve"):
        # Timing mode: one line per run on stdin ("<task index> <inputs file>"), "done" on fd 3.
        tasks = job["tasks"]
        ctl = os.fdopen(int(job["serve"]), "w", buffering=1)
        ctl.write("ready\n")
        for line in sys.stdin:
            idx, path = line.split()
            _load_inputs(os.path.join(JOBDIR, path))
            t = dict(tasks[int(idx)])
            t["id"] = os.path.splitext(path)[0]
            _run(t)
            ctl.write("done\n")
        return
    _load_inputs(os.path.join(JOBDIR, "inputs.npz"))
    for t in job["tasks"]:
        _run(t)


main()
