"""A child process seen from the parent: two pipes, two unnamed output files, deadlines, bounds.

:class:`ChildProcess` starts ``python -I -S child.py`` in its own session,
sends the lock-in configuration as the first frame, and then exchanges
frames with it. Every read has a deadline and every frame a size bound
decided by the caller from what it expects; a child that overruns either is
killed. Every live child is in a registry that kills it when the grader
exits, and the child also dies with the thread that started it (its
parent-death signal), so killing the grader leaves nothing behind.
"""
from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys
import threading
import time

from grader.sandbox import wire
from grader.sandbox.files import output_file, read_output

__all__ = ["ChildProcess", "Timeout", "Closed", "kill_all"]


class Timeout(Exception):
    """The child did not send (or take) a frame before the deadline."""


class Closed(Exception):
    """The child closed its pipe (it exited)."""


_LIVE = set()
_LIVE_LOCK = threading.Lock()
_HANDLERS = {}


def kill_all() -> None:
    """Kill every child still running (the grader is exiting)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for child in live:
        child.kill()


def _on_signal(signum, frame):
    kill_all()
    previous = _HANDLERS.get(signum)
    if callable(previous):
        previous(signum, frame)
    else:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def install_cleanup() -> None:
    """Kill the children on exit and on SIGTERM/SIGINT/SIGHUP (from the main thread; idempotent)."""
    if _HANDLERS or threading.current_thread() is not threading.main_thread():
        return
    atexit.register(kill_all)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        _HANDLERS[signum] = signal.getsignal(signum)
        signal.signal(signum, _on_signal)


class ChildProcess:
    """One sandboxed child and its wire.

    Parameters
    ----------
    script : path
        The child's ``child.py`` (in a directory the parent wrote before the start).
    config : dict
        The lock-in configuration (see :func:`grader.sandbox.child.lock_in`); ``parent_pid`` and
        ``out_fd`` are filled in here.
    cwd : path
        The child's working directory.
    outputs_dir : path
        A directory only the parent can enter, for the unnamed stdout/stderr files.
    user : int or None
        Run as this uid/gid (the parent must be root).
    """

    def __init__(self, script, config: dict, *, cwd, outputs_dir, user=None, env=None):
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        self._out = output_file(outputs_dir)
        self._err = output_file(outputs_dir)
        config = dict(config, parent_pid=os.getpid(), out_fd=resp_w)
        kw = dict(cwd=cwd, env=env or {}, start_new_session=True, close_fds=True, pass_fds=(resp_w,),
                  stdin=req_r, stdout=self._out, stderr=self._err)
        if user is not None:
            kw.update(user=user, group=user, extra_groups=[])
        try:
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", str(script)], **kw)
        finally:
            os.close(req_r)
            os.close(resp_w)
        self._w, self._r = req_w, resp_r
        os.set_blocking(self._w, False)
        os.set_blocking(self._r, False)
        self._buf = bytearray()
        self.killed = False
        self._closed = None
        with _LIVE_LOCK:
            _LIVE.add(self)
        self.send("config", config, deadline=time.monotonic() + 10)

    # -- frames

    def send(self, kind, meta=None, arrays=None, *, deadline):
        """Write one frame before ``deadline`` (the pipe may fill: the child must keep reading)."""
        data = b"".join(bytes(b) for b in wire.encode(kind, meta, arrays))
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("the child did not read its input in time")
            _, ready, _ = select.select([], [self._w], [], left)
            if not ready:
                continue
            try:
                n = os.write(self._w, view)
            except BlockingIOError:
                continue
            except (BrokenPipeError, OSError):
                raise Closed("the child closed its input") from None
            view = view[n:]

    def _read(self, n, deadline):
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("the child did not answer in time")
            ready, _, _ = select.select([self._r], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self._r, max(n - len(self._buf), 1 << 16))
            except BlockingIOError:
                continue
            if not chunk:
                raise Closed("the child closed its output")
            self._buf += chunk
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def recv(self, deadline, payload_limit):
        """One frame: ``(kind, meta, arrays)``.

        ``payload_limit(kind, meta, listing)`` returns the largest payload the parent accepts for
        this frame; a larger one raises :class:`wire.WireError` before a byte of it is read.
        """
        n_json, n_payload = wire.parse_header(self._read(wire.HEADER.size, deadline))
        kind, meta, listing = wire.parse_body(self._read(n_json, deadline))
        limit = payload_limit(kind, meta, listing)
        if n_payload > limit:
            raise wire.WireError(f"the child sent a {kind!r} frame of {n_payload} bytes (at most {limit} expected)")
        arrays = wire.split_payload(listing, self._read(n_payload, deadline))
        return kind, meta, arrays

    # -- process control

    def signal_group(self, signum):
        try:
            os.killpg(self.proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def cpu_seconds(self) -> float:
        """User + system CPU time of every thread of the child so far (from /proc)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def kill(self):
        """Kill the child's whole process group and reap it; idempotent."""
        if not self.killed:
            self.killed = True
            self.signal_group(signal.SIGKILL)
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def close(self) -> tuple[str, str]:
        """Kill, reap, and return the first kilobytes of stdout and stderr; idempotent."""
        self.kill()
        if self._closed is None:
            for fd in (self._w, self._r):
                os.close(fd)
            self._closed = (read_output(self._out), read_output(self._err))
            os.close(self._out)
            os.close(self._err)
        return self._closed

    @property
    def returncode(self):
        return self.proc.poll()
