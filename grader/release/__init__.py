"""The student starter: ``python -m grader release OUT/``.

:func:`make_release` copies the package (:mod:`grader.release.manifest` says
what goes in), replaces every solution region with a TODO banner and a stub
(:mod:`grader.release.markers`), writes the student README from its template,
the student notebook from its percent-format source
(:mod:`grader.release.notebook`) and the visible checks' expected outputs, and
scans the result, the notebook's cells included, for solution text
(:mod:`grader.release.leaks`) before moving it into place.
"""
from __future__ import annotations

import argparse
import re
import shutil
import string
import sys
import tempfile
from pathlib import Path

from grader.release import notebook
from grader.release.leaks import LeakError, leak_message, scan_for_leaks
from grader.release.manifest import release_inputs, repository_root
from grader.release.markers import MarkerError, solution_regions, strip_solutions
from grader.release.notebook import NotebookSourceError

__all__ = ["make_release", "main", "student_readme", "ship_package_data", "MarkerError", "LeakError",
           "NotebookSourceError"]

TEMPLATES = Path(__file__).with_name("templates")


def student_readme(stubs: dict) -> str:
    """The starter's README.md from its template: the stubs to implement and the files to upload."""
    listing = "\n".join(f"- `{rel}`: " + ", ".join(f"`{n}`" for n in dict.fromkeys(names))
                        for rel, names in stubs.items())
    upload = ", ".join(f"`{Path(rel).name}`" for rel in stubs if rel.startswith("convnet/"))
    template = string.Template((TEMPLATES / "README.md").read_text(encoding="utf-8"))
    return template.substitute(stubs=listing, upload=upload)


def _write_public_expected(checks_dir: Path) -> bool:
    """The visible checks' expected outputs on their public inputs, computed with the reference."""
    from grader.checks.public import build_public_expected

    build_public_expected(checks_dir)
    return True


PACKAGE_DATA_LINE = '"grader.checks" = ["*.npz"]'


def ship_package_data(pyproject: str) -> str:
    """Make ``pip install`` ship the visible checks' expected outputs (``grader/checks/*.npz``).

    A no-op when pyproject.toml already names package data for ``grader.checks``.
    """
    if re.search(r'^\s*"grader\.checks"\s*=', pyproject, re.M):
        return pyproject
    header = "[tool.setuptools.package-data]\n"
    if header in pyproject:
        return pyproject.replace(header, header + PACKAGE_DATA_LINE + "\n", 1)
    return pyproject.rstrip("\n") + "\n\n" + header + PACKAGE_DATA_LINE + "\n"


def student_pyproject(pyproject: str) -> str:
    """The starter's pyproject.toml: ships the visible checks' expected outputs, and leaves the course
    staff's extras (a cluster to grade a class on) out of what students install."""
    text = re.sub(r',?\s*"dask\[distributed\][^"]*"', "", ship_package_data(pyproject))
    return re.sub(r'^# Grading a class on a Dask cluster.*\n^cluster = \[\]\n', "", text, flags=re.M)


def _check_destination(source: Path, out: Path, force: bool) -> None:
    if not (source / "setup.py").is_file() or not (source / "convnet").is_dir():
        raise FileNotFoundError(f"{source} is not a convnet checkout (no setup.py or convnet/); pass --source")
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise ValueError(f"the release directory {out} must be outside the source tree {source}")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} is not empty; pass --force to overwrite the release files in it")


def _stage(source: Path, staging: Path) -> tuple[dict, list]:
    """Copy every release input into ``staging``, stubbing the solution regions; returns (stubs, marked)."""
    stubs, marked = {}, []
    for rel in release_inputs(source):
        src_path, dst_path = source / rel, staging / rel
        dst_path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".py"):
            text = src_path.read_text(encoding="utf-8")
            stripped = strip_solutions(text, rel)
            if stripped is not text:
                marked.append(src_path)
                stubs[rel] = [region.qualname for region in solution_regions(text, rel)]
            dst_path.write_text(stripped, encoding="utf-8")
            shutil.copymode(src_path, dst_path)
        else:
            shutil.copy2(src_path, dst_path)
    return stubs, marked


def make_release(out, *, source=None, force: bool = False, log=print) -> dict:
    """Write the student starter into ``out``.

    Parameters
    ----------
    out : path-like
        Destination directory; created if missing. It must be empty unless ``force``.
    source : path-like, optional
        The repository to release; default the checkout this module is in.
    force : bool
        Write into a non-empty ``out``: the paths a release writes are replaced,
        other files are kept (and scanned for leaks like the rest).
    log : callable
        Receives one-line progress messages.

    Returns
    -------
    dict
        ``{"files": [...], "stubs": {relpath: [qualname, ...]}, "public_expected": bool}``.

    Raises
    ------
    FileExistsError
        ``out`` is not empty and ``force`` is false.
    MarkerError
        A source file's markers are invalid.
    NotebookSourceError
        The notebook's percent-format source is invalid.
    LeakError
        The written release contains a line of a solution region.
    """
    source = Path(source) if source is not None else repository_root()
    out = Path(out)
    _check_destination(source, out, force)
    # Build next to OUT, scan, then move in: a failed release never leaves a leaking tree behind.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        stubs, marked = _stage(source, staging)
        (staging / "README.md").write_text(student_readme(stubs), encoding="utf-8")
        cells = notebook.write_notebook(notebook.SOURCE, staging / notebook.NOTEBOOK_NAME)
        log(f"release: wrote {notebook.NOTEBOOK_NAME} ({cells} cells)")
        public = _write_public_expected(staging / "grader" / "checks")
        log("release: wrote the visible checks' expected outputs")
        pyproject = staging / "pyproject.toml"
        if pyproject.is_file():
            pyproject.write_text(student_pyproject(pyproject.read_text(encoding="utf-8")), encoding="utf-8")
        hits, _ = scan_for_leaks(staging, source, marked)
        if hits:
            raise LeakError(leak_message(hits))
        written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        out.mkdir(parents=True, exist_ok=True)
        for top in sorted({rel.split("/", 1)[0] for rel in written}):
            target = out / top
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            shutil.move(str(staging / top), str(target))
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    # Files of OUT this run did not write (with --force) are scanned too.
    hits, shared = scan_for_leaks(out, source, marked)
    if hits:
        raise LeakError(leak_message(hits))
    for path, line, origin, text in shared:
        log(f"release: note: {path}:{line} shares a line with the solution at {origin} "
            f"(it is in {path}'s own source outside any region): {text}")
    for rel, names in stubs.items():
        log(f"release: {rel}: stubbed {len(names)} region(s): {', '.join(names)}")
    log(f"release: wrote {len(written)} files to {out}; no solution text found in it")
    return {"files": written, "stubs": stubs, "public_expected": public}


def main(argv=None) -> int:
    """``python -m grader release OUT/ [--force] [--source DIR]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m grader release",
        description="Write the student starter: the package with every solution region stubbed, "
        "the hidden checks left out, the visible tests included.",
    )
    parser.add_argument("out", type=Path, help="destination directory (must be empty unless --force)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty directory")
    parser.add_argument("--source", type=Path, default=None,
                        help="repository to release (default: the checkout grader is imported from)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    log = (lambda message: None) if args.quiet else print
    try:
        make_release(args.out, source=args.source, force=args.force, log=log)
    except (MarkerError, NotebookSourceError, LeakError, FileExistsError, FileNotFoundError, NotADirectoryError,
            ValueError) as exc:
        print(f"release: error: {exc}", file=sys.stderr)
        return 1
    return 0
