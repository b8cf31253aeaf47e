"""Files on the parent's side: a child's job directory, its output files, and removing what it left.

The parent writes a job directory completely before the child starts and
never opens a name in it afterwards: the child's stdout and stderr are
unnamed files (``O_TMPFILE``) in a directory only the parent can enter, read
through the parent's own descriptors, and the job directory is removed by
:func:`remove_tree`, which never follows a link, never opens anything but a
directory, and never recurses.
"""
from __future__ import annotations

import errno
import itertools
import os
import shutil
import stat
from pathlib import Path

__all__ = ["output_file", "read_output", "remove_tree", "write_tree"]

OUTPUT_LIMIT = 10_000


def output_file(directory: Path) -> int:
    """An unnamed read-write file in ``directory`` (a descriptor; nothing in any directory names it)."""
    return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)


def read_output(fd: int, limit: int = OUTPUT_LIMIT) -> str:
    """The first ``limit`` bytes a child wrote to ``fd``, decoded, with a note of how much was cut."""
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, limit, 0)
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    if size > limit:
        text += f"\n[... {size - limit} more bytes truncated]"
    return text


_SERIAL = itertools.count()
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def remove_tree(path) -> None:
    """Remove a directory the parent made, whatever a (dead) child left in it.

    Every subdirectory is first moved up to be a direct child of ``path`` (a
    rename within the tree), so the tree is emptied one directory at a time
    with two descriptors open: depth costs nothing and nothing recurses.
    Entries are unlinked by name relative to a directory descriptor, so a
    symlink or FIFO is removed, never followed or opened. A missing path is fine.
    """
    try:
        top = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        return
    try:
        queue, emptied = [], []
        _empty_into(top, top, queue)
        while queue:
            name = queue.pop()
            fd = _open_dir(top, name)
            if fd is None:
                continue
            try:
                _empty_into(fd, top, queue)
            finally:
                os.close(fd)
            emptied.append(name)
        for name in emptied:
            _rmdir(top, name)
    finally:
        os.close(top)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def _empty_into(fd, top, queue):
    """Unlink every non-directory of ``fd``; move each subdirectory to ``top`` and queue its new name."""
    with os.scandir(fd) as entries:
        listing = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in listing:
        if not is_dir:
            _unlink(fd, name)
        elif fd == top:
            queue.append(name)
        else:
            moved = f".rm-{next(_SERIAL)}"
            os.rename(name, moved, src_dir_fd=fd, dst_dir_fd=top)
            queue.append(moved)


def _open_dir(dir_fd, name):
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except PermissionError:
        # Only when the grader is not root: the child (same uid) made it unreadable.
        os.chmod(name, 0o700, dir_fd=dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _unlink(dir_fd, name):
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _rmdir(dir_fd, name):
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOTEMPTY:
            raise


def write_tree(root: Path, files: dict, owner=None) -> None:
    """Write ``{relative path: bytes or source Path}`` under ``root`` (which the child has not seen yet)."""
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
        os.chmod(target, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
