"""The seccomp allow-list: its program, and that it refuses exactly what the child must not do."""
from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from grader.sandbox import isolation
from grader.sandbox.child import seccomp_program


def test_allow_list_leaves_out_every_channel_and_process_call():
    allowed = set(isolation.SECCOMP_ALLOW)
    forbidden = {"clone", "clone3", "fork", "vfork", "execve", "socket", "socketpair", "connect", "sendto",
                 "io_uring_setup", "io_uring_enter", "shmget", "msgget", "semget", "mq_open", "unshare", "setns",
                 "ptrace", "process_vm_readv", "kill", "tkill", "tgkill", "pidfd_send_signal", "prctl", "setrlimit",
                 "seccomp", "bpf", "perf_event_open", "userfaultfd", "memfd_create", "mknod", "mknodat",
                 "symlink", "symlinkat", "link", "linkat", "mount", "pipe", "pipe2"}
    assert not allowed & forbidden
    assert len(set(isolation.SECCOMP_ALLOW.values())) == len(isolation.SECCOMP_ALLOW)


def test_program_layout():
    code, count = seccomp_program([0, 1, 2], [302])
    assert len(code) == 8 * count
    first = struct.unpack("=HBBI", code[:8])
    assert first == (0x20, 0, 0, 4)  # load the architecture first


@pytest.mark.skipif(not isolation.layers_available()["seccomp"], reason="seccomp filters are x86_64 Linux only here")
def test_the_filter_refuses_in_a_real_process():
    """Install the filter in a throwaway process and try what a child must not do."""
    code = f"""
import ctypes, os, socket, sys, threading
sys.path.insert(0, {os.path.dirname(isolation.__file__)!r})
from child import _seccomp
from isolation import seccomp_numbers
import numpy
_seccomp(*seccomp_numbers())
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
res = []
for attempt in (lambda: socket.socket(), lambda: threading.Thread(target=print).start(), lambda: os.fork()):
    try:
        attempt(); res.append("ok")
    except OSError as e:
        res.append(str(e.errno))
    except RuntimeError:
        res.append("refused")
res.append(str(libc.syscall(425, 8, ctypes.create_string_buffer(120))))
res.append(str(libc.prlimit(0, 7, None, ctypes.create_string_buffer(16))))
print(" ".join(res))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    assert run.returncode == 0, run.stderr
    sock, thread, fork, uring, getlimit = run.stdout.split()
    assert (sock, thread, fork, uring) == ("1", "refused", "1", "-1")  # EPERM everywhere
    assert getlimit == "0"  # reading a limit still works
