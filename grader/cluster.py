"""Grading a class on a Dask cluster: ``python -m grader --batch SUBMISSIONS/ OUT/ --scheduler ADDRESS``.

One task per submission. The client (this process) draws the secret seed once
and reads each submission into a snapshot (the bytes of a .zip, or the files of
a directory that the grader would look at); a worker rebuilds it in a temporary
directory and grades it with :func:`grader.__main__.grade_one`, the same sandbox
as ``--jobs``; the client writes ``OUT/<name>.json``. Workers need not share a
file system with the client, but they must have the same convnet and grader
installed: every task checks a fingerprint of both against the client's.

A task that raises is retried ``retries`` times (Dask's ``retries``); a task
whose worker dies is rescheduled by the scheduler (up to its
``distributed.scheduler.allowed-failures``, 3 by default). A submission whose
task still fails gets the grader's failure result, as with ``--jobs``.

``ADDRESS`` is a scheduler address (``tcp://host:8786``) or ``local:N``, a
LocalCluster of N single-threaded worker processes on this machine. Needs the
``cluster`` extra (``pip install 'convnet[cluster]'``).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["snapshot", "materialize", "fingerprint", "grade_batch", "connect"]

# A zip submission larger than this is not shipped to a worker (the grader reads 2 MB per file at most).
MAX_ZIP_BYTES = 64 << 20
# Seconds to reach a scheduler, and then to wait for its first worker.
CONNECT_TIMEOUT = 30.0
WORKER_WAIT = 60.0


def _student_files():
    from grader.sandbox.submission import MAX_SOURCE_BYTES, STUDENT_FILES

    return STUDENT_FILES, MAX_SOURCE_BYTES


def _read_regular(path: Path, limit: int):
    """The first ``limit`` bytes of a regular file, or None for a symlink or anything else (never followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if path.is_symlink():
            return None
        raise exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, size = [], 0
        while size < limit:
            chunk = os.read(fd, min(1 << 20, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def snapshot(path) -> dict:
    """What a worker needs to grade ``path`` exactly as this machine would.

    Returns
    -------
    dict
        ``{"name", "kind": "zip", "data": bytes}`` for a .zip; ``{"name", "kind": "dir",
        "entries": [(relative path, bytes or None), ...]}`` for a directory, with every
        file named like a student file (None: a symlink or special file, which the
        grader notes and ignores); ``{"name", "kind": "other"}`` for anything else.
    """
    path = Path(path)
    names, max_bytes = _student_files()
    if path.is_dir():
        entries = []
        for root, _dirs, files in os.walk(path, followlinks=False):
            for name in sorted(files):
                if name in names:
                    full = Path(root, name)
                    entries.append((full.relative_to(path).as_posix(), _read_regular(full, max_bytes + 1)))
        return {"name": path.name, "kind": "dir", "entries": sorted(entries, key=lambda e: e[0])}
    if path.is_file() and zipfile.is_zipfile(path) and path.stat().st_size <= MAX_ZIP_BYTES:
        return {"name": path.name, "kind": "zip", "data": path.read_bytes()}
    return {"name": path.name, "kind": "other"}


def _safe_name(name: str) -> str:
    name = str(name).replace("/", "_").replace("\\", "_")
    return name if name not in ("", ".", "..") else "submission"


def materialize(snap: dict, where) -> Path:
    """Rebuild a :func:`snapshot` under the directory ``where``; returns the submission's path."""
    where = Path(where)
    target = where / _safe_name(snap.get("name", ""))
    if snap["kind"] == "zip":
        target.write_bytes(snap["data"])
        return target
    if snap["kind"] != "dir":
        raise ValueError(f"a snapshot of kind {snap['kind']!r} cannot be rebuilt")
    target.mkdir()
    for rel, data in snap["entries"]:
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"snapshot entry {rel!r} is not a plain relative path")
        dest = target.joinpath(*parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            # The grader notes "not a regular file, ignored" for a symlink, as for the original.
            os.symlink("not-a-regular-file", dest)
        else:
            dest.write_bytes(data)
    return target


@functools.lru_cache(maxsize=None)
def fingerprint() -> str:
    """A hash of the installed convnet and grader sources, numpy's and Python's versions."""
    import numpy

    import convnet
    import grader

    digest = hashlib.sha256(f"{sys.version_info[:2]} numpy {numpy.__version__}\n".encode())
    for package in (convnet, grader):
        base = Path(package.__file__).resolve().parent
        for path in sorted(base.rglob("*")):
            if path.suffix in (".py", ".pyx", ".pxd", ".npz") and "__pycache__" not in path.parts:
                digest.update(f"{package.__name__}/{path.relative_to(base).as_posix()}\n".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def _worker_fingerprint() -> str:
    """:func:`fingerprint` as a worker computes it (shipped by name, so the worker runs its own code)."""
    return fingerprint()


def _grade_task(snap: dict, seed: int, expected: str, visible_only: bool, timeout: float) -> dict:
    """Run on a worker: grade one snapshot; returns ``{"results": Gradescope dict, "error": str or None}``."""
    mine = fingerprint()
    if mine != expected:
        raise RuntimeError(f"this worker's convnet/grader (fingerprint {mine[:12]}) differ from the client's "
                           f"({expected[:12]}); install the same version everywhere")
    from grader.__main__ import grade_one

    with tempfile.TemporaryDirectory(prefix="convnet-cluster-") as tmp:
        (Path(tmp) / "sub").mkdir()
        path = materialize(snap, Path(tmp) / "sub")
        json_path = Path(tmp) / "results.json"
        try:
            results, _ = grade_one(path, json_path, visible_only=visible_only, jobs=1, timeout=timeout, seed=seed,
                                   quiet=True)
            return {"results": results, "error": None}
        except Exception as exc:  # noqa: BLE001 - grade_one wrote the failure result before raising
            return {"results": json.loads(json_path.read_text()), "error": f"{type(exc).__name__}: {exc}"}


@contextlib.contextmanager
def connect(scheduler: str):
    """A ``distributed.Client`` on ``scheduler`` (an address, or ``local:N`` for a LocalCluster of N workers)."""
    from distributed import Client, LocalCluster

    match = re.fullmatch(r"local(?::(\S+))?", scheduler.strip())
    if match:
        raw = match.group(1) or str(os.cpu_count() or 1)
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"--scheduler local:N needs a positive number of workers, got {scheduler!r}")
        # One thread per worker process: each runs one submission at a time, like one --jobs slot.
        with LocalCluster(n_workers=int(raw), threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client
    else:
        with Client(scheduler, timeout=CONNECT_TIMEOUT) as client:
            client.wait_for_workers(1, timeout=WORKER_WAIT)
            yield client


def _progress(total: int, quiet: bool):
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc="grading on the cluster", file=sys.stderr, leave=False)


def grade_batch(subs, outdir, *, scheduler: str, seed=None, visible_only: bool = False, timeout: float = 30.0,
                output_format: str = "gradescope", quiet: bool = False, retries: int = 2) -> int:
    """Grade ``subs`` on a Dask cluster into ``outdir/<name>.json``; returns the exit code.

    Parameters
    ----------
    subs : list of path-like
        Submissions (directories or .zip files).
    outdir : path-like
        Where each ``<stem>.json`` is written (created if missing).
    scheduler : str
        A scheduler address, or ``local:N``.
    seed : int, optional
        The secret seed shared by every task; default a fresh random one drawn here.
    visible_only, timeout : as for ``python -m grader``.
    output_format : {"gradescope", "prairielearn"}
        The format of the files written.
    quiet : bool
        No progress bar and no per-submission lines.
    retries : int
        Dask retries of a task that raises.

    Returns
    -------
    int
        0 when every submission was graded, 1 when the grader failed on some
        (their failure results are written), 2 when the cluster was unusable.
    """
    try:
        import distributed  # noqa: F401 - only whether it is installed
    except ImportError:
        print("--scheduler needs dask.distributed: pip install 'convnet[cluster]'", file=sys.stderr)
        return 2
    stack = contextlib.ExitStack()
    try:
        client = stack.enter_context(connect(scheduler))
    except (OSError, TimeoutError, ValueError) as exc:
        print(f"could not use the Dask scheduler {scheduler!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    with stack:
        return _grade_on(client, [Path(s) for s in subs], Path(outdir),
                         seed=secrets.randbits(63) if seed is None else int(seed), visible_only=visible_only,
                         timeout=timeout, output_format=output_format, quiet=quiet, retries=retries)


def _grade_on(client, subs, outdir, *, seed, visible_only, timeout, output_format, quiet, retries) -> int:
    import distributed

    from grader import report
    from grader.__main__ import grade_one
    from grader.formats import write_results

    mine = fingerprint()
    theirs = client.run(_worker_fingerprint)
    wrong = sorted(addr for addr, fp in theirs.items() if fp != mine)
    if wrong:
        print(f"workers {', '.join(wrong)} have a different convnet/grader from this client's; "
              "install the same version on every worker", file=sys.stderr)
        return 2
    outdir.mkdir(parents=True, exist_ok=True)
    status = 0
    bar = None

    def report_one(path, score, error):
        nonlocal status
        # Lines go above the progress bar, not through it.
        say = bar.write if bar is not None else print
        if error:
            status = 1
            say(f"{path}: grader failed: {error}", file=sys.stderr)
        elif not quiet:
            say(f"{path}: {score:g}", file=sys.stdout)

    futures = {}
    for i, path in enumerate(subs):
        try:
            snap = snapshot(path)
        except OSError:
            snap = {"kind": "other"}
        if snap["kind"] == "other":
            # Not a directory or a zip, or unreadable: grade_one fails on it at once, with its usual result.
            try:
                results, _ = grade_one(path, outdir / f"{path.stem}.json", visible_only=visible_only, jobs=1,
                                       timeout=timeout, seed=seed, quiet=True, output_format=output_format)
                report_one(path, results["score"], None)
            except Exception as exc:  # noqa: BLE001 - the failure result is written
                report_one(path, None, f"{type(exc).__name__}: {exc}")
            continue
        future = client.submit(_grade_task, snap, seed, mine, visible_only, timeout, retries=retries, pure=False,
                               key=f"convnet-grade-{i}-{secrets.token_hex(4)}")
        futures[future] = path
    bar = _progress(len(futures), quiet)
    for future in distributed.as_completed(futures):
        path = futures[future]
        try:
            out = future.result()
            results, error = out["results"], out["error"]
        except Exception as exc:  # noqa: BLE001 - the task failed after its retries (or its workers died)
            error = f"{type(exc).__name__}: {exc}"
            results = report.failure_json(f"grading on the cluster failed: {error}")
        write_results(results, outdir / f"{path.stem}.json", output_format)
        report_one(path, results.get("score", 0.0), error)
        if bar is not None:
            bar.set_postfix_str(path.name[:30])
            bar.update(1)
    if bar is not None:
        bar.close()
    return status
