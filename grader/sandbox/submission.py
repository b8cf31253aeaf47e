"""A submission: the student's files, read once from a directory or a zip, never imported here.

Only :data:`STUDENT_FILES` are taken. The ones that hold solution stubs in
the starter (:func:`graded_files`) are what a student must upload; a missing
one is replaced by its stubbed version, so its checks fail and nothing else
does. The others (provided code the student may have edited) are taken from
the reference when a submission lacks them.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

__all__ = ["STUDENT_FILES", "Submission", "load_submission", "reference_dir", "reference_submission",
           "graded_files", "source_for"]

# The files a submission may replace, in the package's import order.
STUDENT_FILES = ("layers.py", "sandwich.py", "models.py", "optim.py", "solver.py")
MAX_SOURCE_BYTES = 2 << 20


@dataclass
class Submission:
    """Student files by name (text); ``missing`` lists the graded files it lacks."""

    files: dict
    missing: list
    origin: str
    notes: list = field(default_factory=list)


def reference_dir() -> Path:
    """The installed package's directory (the trusted reference, or the stubs in a student release)."""
    import convnet

    return Path(convnet.__file__).resolve().parent


@lru_cache(maxsize=None)
def _regions(name: str) -> bool:
    """Whether ``name`` holds solution regions (the reference) or their stubs (a student release)."""
    text = (reference_dir() / name).read_text()
    try:
        from grader.release.markers import solution_regions
    except ImportError:  # a student release ships no generator, and its files hold stubs, not regions
        return ': implement me")' in text
    return bool(solution_regions(text, name)) or ': implement me")' in text


def graded_files() -> tuple:
    """The student files that hold solution regions (what students implement and upload)."""
    return tuple(n for n in STUDENT_FILES if (reference_dir() / n).is_file() and _regions(n))


def source_for(name: str, submission: Submission) -> str:
    """The text a child gets for ``name``: the student's, else the reference's provided code, else its stubs."""
    if name in submission.files:
        return submission.files[name]
    text = (reference_dir() / name).read_text()
    if name not in graded_files():
        return text
    from grader.release.markers import strip_solutions

    return strip_solutions(text, name)


def _pick(candidates, name: str):
    """Among archive/dir paths ending in ``name``, prefer ``convnet/name``, then the shortest."""
    hits = [p for p in candidates if p.split("/")[-1] == name and "__MACOSX" not in p.split("/")]
    if not hits:
        return None
    hits.sort(key=lambda p: (not p.endswith("convnet/" + name), p.count("/"), p))
    return hits[0]


def _read_dir(path: Path, notes: list) -> dict:
    found = {}
    for root, dirs, files in os.walk(path, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for f in files:
            if f in STUDENT_FILES:
                full = Path(root, f)
                found[full.relative_to(path).as_posix()] = full
    texts = {}
    for name in STUDENT_FILES:
        key = _pick(found, name)
        if key is None:
            continue
        full = found[key]
        if full.is_symlink() or not full.is_file():
            notes.append(f"{key}: not a regular file, ignored")
            continue
        with open(full, "rb") as fh:
            texts[name] = fh.read(MAX_SOURCE_BYTES + 1)
    return texts


def _read_zip(path: Path, notes: list) -> dict:
    texts = {}
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
    return texts


def load_submission(path) -> Submission:
    """Read a submission directory or .zip: ``layers.py`` or ``convnet/layers.py`` (any depth), etc."""
    path = Path(path)
    notes = []
    if path.is_dir():
        texts = _read_dir(path, notes)
    elif zipfile.is_zipfile(path):
        texts = _read_zip(path, notes)
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
    missing = [n for n in graded_files() if n not in files]
    return Submission(files, missing, str(path), notes)


def reference_submission() -> Submission:
    """The bundled reference as a submission (what ``python -m grader`` grades by default)."""
    ref = reference_dir()
    files = {n: (ref / n).read_text() for n in STUDENT_FILES if (ref / n).is_file()}
    return Submission(files, [n for n in graded_files() if n not in files], str(ref))
