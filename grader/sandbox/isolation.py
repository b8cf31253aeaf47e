"""What isolation this machine gives a child, and the settings the child applies to itself.

=====================  ==================================================================  ===========================
layer                  what it guarantees                                                  what it does not
=====================  ==================================================================  ===========================
pipes only             the parent talks to a child through two pipes it made before the    a child can write anything
                       child started (frames of JSON and raw arrays, size-bounded, with    to its pipe: every frame is
                       deadlines) and gives it two unnamed files for stdout and stderr;    checked, nothing trusted
                       it never opens, reads or follows a name in the job directory
``-I -S``              no site-packages, no ``.pth`` files: the reference ``convnet``
                       and ``grader`` are not importable
Landlock               reads only the standard library, numpy, the system's shared         needs Linux >= 5.13; without
                       libraries and the job's package; writes only its work directory     it the reference is only
                       (no links, FIFOs or sockets even there); no TCP; (ABI >= 6) no       unimportable (the bundle's
                       signals or abstract sockets outside the sandbox                     setup.sh makes it root-only)
seccomp allow-list     the syscalls numpy and the runner need; no thread or process        x86_64 only
                       creation, no socket of any kind, no io_uring, no System V IPC, no
                       namespaces, no ptrace, no signals, no prctl, no raising limits
uid 65534              when the grader is root and the interpreter is reachable by         needs a system-wide Python
                       ``nobody``; otherwise uid 0 with every capability dropped
rlimits                CPU seconds, address space, file size, open files, no core
wall clock             the parent kills the child's process group at the deadline; the
                       child dies with the parent (parent-death signal)
blocked imports        torch, scipy, jax, ...; ``convnet.fast`` in checks of naive layers
=====================  ==================================================================  ===========================
"""
from __future__ import annotations

import ctypes
import os
import stat
import sys
import sysconfig
from pathlib import Path

import numpy as np

__all__ = ["NOBODY", "layers_available", "read_paths", "SECCOMP_ALLOW", "SECCOMP_GETTERS", "seccomp_numbers"]

NOBODY = 65534

# The syscalls a child may make after its lock-in (x86_64 numbers). Files: Landlock confines them.
# Not here, so refused with EPERM: clone/clone3/fork/vfork/execve, socket/socketpair and every
# socket call, io_uring_*, shmget/msgget/semget and friends, mq_open, unshare/setns, ptrace,
# process_vm_*, kill/tkill/tgkill/pidfd_*, prctl, setrlimit, seccomp, bpf, perf_event_open,
# userfaultfd, memfd_create, mknod, symlink, link, mount and the rest.
SECCOMP_ALLOW = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6, "poll": 7, "lseek": 8,
    "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12, "rt_sigaction": 13, "rt_sigprocmask": 14,
    "rt_sigreturn": 15, "ioctl": 16, "pread64": 17, "pwrite64": 18, "readv": 19, "writev": 20, "access": 21,
    "select": 23, "sched_yield": 24, "mremap": 25, "msync": 26, "mincore": 27, "madvise": 28, "dup": 32,
    "dup2": 33, "nanosleep": 35, "getpid": 39, "exit": 60, "uname": 63, "fcntl": 72, "fsync": 74,
    "fdatasync": 75, "ftruncate": 77, "getdents": 78, "getcwd": 79, "chdir": 80, "rename": 82, "mkdir": 83,
    "rmdir": 84, "unlink": 87, "readlink": 89, "chmod": 90, "fchmod": 91, "umask": 95, "gettimeofday": 96,
    "getrlimit": 97, "getrusage": 98, "sysinfo": 99, "times": 100, "getuid": 102, "getgid": 104,
    "geteuid": 107, "getegid": 108, "getppid": 110, "getpgrp": 111, "getgroups": 115, "getpgid": 121,
    "getsid": 124, "sigaltstack": 131, "statfs": 137, "fstatfs": 138, "arch_prctl": 158, "gettid": 186,
    "time": 201, "futex": 202, "sched_getaffinity": 204, "getdents64": 217, "set_tid_address": 218,
    "restart_syscall": 219, "fadvise64": 221, "clock_gettime": 228, "clock_getres": 229,
    "clock_nanosleep": 230, "exit_group": 231, "openat": 257, "mkdirat": 258, "newfstatat": 262,
    "unlinkat": 263, "renameat": 264, "readlinkat": 267, "faccessat": 269, "pselect6": 270, "ppoll": 271,
    "set_robust_list": 273, "get_robust_list": 274, "utimensat": 280, "dup3": 292, "preadv": 295,
    "pwritev": 296, "getcpu": 309, "renameat2": 316, "getrandom": 318, "membarrier": 324, "preadv2": 327,
    "pwritev2": 328, "statx": 332, "rseq": 334, "close_range": 436, "faccessat2": 439,
}
# Allowed only to read a value: prlimit64 with no new limit (its third argument is NULL).
SECCOMP_GETTERS = {"prlimit64": 302}


def seccomp_numbers() -> tuple[list, list]:
    return sorted(SECCOMP_ALLOW.values()), sorted(SECCOMP_GETTERS.values())


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
    for parent in reversed(p.parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
    return bool(os.stat(p).st_mode & stat.S_IROTH)


def numpy_paths() -> list:
    base = Path(np.__file__).resolve().parent
    paths = [base]
    libs = base.parent / "numpy.libs"
    if libs.is_dir():
        paths.append(libs.resolve())
    return paths


def threadpoolctl_path():
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover - a dependency
        return None
    return Path(threadpoolctl.__file__).resolve()


def _interpreter_paths() -> list:
    """The standard library's entries (not its site-packages) and the interpreter's own libraries."""
    out = []
    stdlib = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"])
    for entry in stdlib.iterdir():
        if entry.name not in ("site-packages", "dist-packages"):
            out.append(entry)
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    if libdir.is_dir():
        out += list(libdir.glob("libpython*"))
    out.append(Path(sys.executable).resolve())
    return out


SYSTEM_READ = ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
               "/usr/lib/aarch64-linux-gnu", "/etc/ld.so.cache", "/etc/localtime", "/dev/null", "/dev/zero",
               "/dev/urandom", "/proc/cpuinfo", "/proc/meminfo", "/sys/devices/system/cpu", "/usr/share/zoneinfo"]


def read_paths() -> list:
    """Everything a child may read besides its own job directory."""
    tp = threadpoolctl_path()
    paths = [str(p) for p in _interpreter_paths() + numpy_paths() + ([tp] if tp else [])]
    return paths + [p for p in SYSTEM_READ if os.path.exists(p)]


def layers_available() -> dict:
    """Which isolation layers this machine gives the children (reported in results.json)."""
    root = os.geteuid() == 0
    python_ok = _reachable_by_others(Path(sys.executable)) and all(_reachable_by_others(p) for p in numpy_paths())
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
