"""A PrairieLearn question directory: ``python -m grader bundle --target prairielearn OUT/``.

``OUT/`` is a question directory to copy under a course's ``questions/``:

``info.json``
    The question's metadata with ``externalGradingOptions`` (image, entry
    point ``/grade/tests/run_autograder``, timeout). The uuid is fresh, or the
    one already in ``OUT/info.json`` when rebuilding with ``--force``.
``question.html``
    A ``pl-file-upload`` for the student files and ``pl-external-grader-results``.
``tests/run_autograder``
    The entry point: grades ``/grade/student`` with ``python -m grader
    --format prairielearn`` and always leaves a valid ``/grade/results/results.json``.
``image/``
    The grading image's build context: ``Dockerfile``, ``install.sh`` and
    ``package/`` (the full package: reference, fast path, hidden checks).
``README.md``
    For instructors: the image, how the package is installed, the timeouts,
    and how to test the question against a fake ``/grade`` tree.

Every file comes from ``grader/bundle/templates/prairielearn/``, with ``@NAME@``
placeholders filled in.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import stat
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

from grader.release.manifest import repository_root

__all__ = ["TEMPLATES", "UPLOAD_FILES", "question_package_files", "make_question", "main"]

TEMPLATES = Path(__file__).with_name("templates") / "prairielearn"
DEFAULT_IMAGE = "convnet-grader:latest"
VENV = "/opt/convnet/venv"
# PrairieLearn's own limits: a job runs at most 600 s; the entry point stops the grader this much earlier.
MAX_TIMEOUT = 600
MIN_TIMEOUT = 60
MARGIN = 30
# The grader fails the sandwich and solver checks when their files are missing, so all five are required.
# The files with stubs (what every document asks students to upload); the rest is provided code.
UPLOAD_FILES = ("layers.py", "models.py", "optim.py")
# Bundle templates hold an info.json, which PrairieLearn would take for a question nested in this one.
IMAGE_EXCLUDED_PREFIXES = ("grader/bundle/templates/",)
IMAGE_EXCLUDED = ("grader/bundle/prairielearn.py",)
# What the question writes: these paths are replaced by --force, anything else in OUT/ is kept.
OWNED = ("info.json", "question.html", "README.md", "tests/run_autograder", "image")
EXECUTABLE = ("tests/run_autograder", "image/install.sh")


def question_package_files(source) -> list:
    """Relative posix paths of the repository files copied into ``image/package/``."""
    from grader.bundle import bundle_files

    return [rel for rel in bundle_files(Path(source))
            if not rel.startswith(IMAGE_EXCLUDED_PREFIXES) and rel not in IMAGE_EXCLUDED]


def _render(text: str, values: dict, name: str) -> str:
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        raise ValueError(f"template {name} has unfilled placeholders {', '.join(left)}")
    return text


def _existing_uuid(out: Path):
    try:
        value = json.loads((out / "info.json").read_text())["uuid"]
        return str(uuidlib.UUID(str(value)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_options(image: str, timeout, uuid):
    if not isinstance(image, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", image):
        raise ValueError(f"image {image!r} is not a Docker image name (e.g. myuser/convnet-grader:2025)")
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
        raise ValueError(f"timeout must be a whole number of seconds in [{MIN_TIMEOUT}, {MAX_TIMEOUT}] "
                         f"(PrairieLearn's limit is {MAX_TIMEOUT}), got {timeout!r}")
    if uuid is not None:
        try:
            uuidlib.UUID(str(uuid))
        except ValueError:
            raise ValueError(f"uuid {uuid!r} is not a UUID") from None


def make_question(out, *, source=None, image: str = DEFAULT_IMAGE, timeout: int = MAX_TIMEOUT, uuid=None,
                  force: bool = False, log=print) -> list:
    """Write the PrairieLearn question directory.

    Parameters
    ----------
    out : path-like
        The question directory; created if missing, must be empty unless ``force``.
    source : path-like, optional
        The repository; default the checkout this module is in.
    image : str
        The grading image named in info.json (build it from ``OUT/image/``).
    timeout : int
        info.json's grading timeout in seconds, at most 600; the entry point stops
        the grader 30 s earlier so that it can always write a result.
    uuid : str, optional
        The question's uuid; default the one in an existing ``OUT/info.json``, else a fresh one.
    force : bool
        Write into a non-empty ``out``: the paths the question owns are replaced, other files kept.
    log : callable
        Receives one-line progress messages.

    Returns
    -------
    list of str
        The relative paths written.

    Raises
    ------
    FileExistsError
        ``out`` is not empty and ``force`` is false.
    FileNotFoundError
        ``source`` is not a convnet checkout.
    ValueError
        A bad image name, timeout or uuid.
    """
    source = Path(source) if source is not None else repository_root()
    out = Path(out)
    _check_options(image, timeout, uuid)
    if not (source / "setup.py").is_file() or not (source / "convnet").is_dir() or not (source / "grader").is_dir():
        raise FileNotFoundError(f"{source} is not a convnet checkout (needs setup.py, convnet/, grader/); pass --source")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} is not empty; pass --force to replace the question's files in it")
    qid = str(uuid) if uuid is not None else (_existing_uuid(out) if out.is_dir() else None) or str(uuidlib.uuid4())
    values = {"IMAGE": image, "TIMEOUT": timeout, "LIMIT": timeout - MARGIN, "VENV": VENV, "UUID": qid,
              "BUILT": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "UPLOAD_FILES": ", ".join(UPLOAD_FILES), "UPLOAD_WORDS": " ".join(UPLOAD_FILES),
              "UPLOAD_LIST": ", ".join(f"<code>{name}</code>" for name in UPLOAD_FILES)}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        written = _write_question(staging, source, values)
        out.mkdir(exist_ok=True)
        for rel in OWNED:
            old = out / rel
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            elif old.exists() or old.is_symlink():
                old.unlink()
        for rel in OWNED:
            if (staging / rel).exists():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (staging / rel).replace(out / rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"bundle: wrote the PrairieLearn question {out} ({len(written)} files, image {image}, timeout {timeout} s)")
    return written


def _write_question(root: Path, source: Path, values: dict) -> list:
    written = []

    def put(rel: str, data: bytes, executable: bool = False):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if executable else 0o644)
        written.append(rel)

    info = json.loads((TEMPLATES / "info.json").read_text())
    info["uuid"] = values["UUID"]
    info["externalGradingOptions"].update(image=values["IMAGE"], timeout=values["TIMEOUT"])
    put("info.json", (json.dumps(info, indent=4) + "\n").encode())
    for template, rel in (("question.html", "question.html"), ("README.md", "README.md"),
                          ("run_autograder", "tests/run_autograder"), ("install.sh", "image/install.sh"),
                          ("Dockerfile", "image/Dockerfile")):
        path = TEMPLATES / template if template != "install.sh" else TEMPLATES.parent / "common" / template
        text = _render(path.read_text(), values, template)
        put(rel, text.encode(), executable=rel in EXECUTABLE)
    files = question_package_files(source)
    if "README.md" not in files:
        # pyproject.toml names README.md as the long description; the build needs it.
        put("image/package/README.md", b"# convnet\n\nEECS 498 assignment 3 on numpy, with its autograder.\n")
    for rel in files:
        path = source / rel
        put(f"image/package/{rel}", path.read_bytes(), executable=bool(path.stat().st_mode & stat.S_IXUSR))
    nested = [p for p in (root / "image").rglob("info.json")]
    if nested:
        raise ValueError(f"image/ would hold {nested[0].relative_to(root)}, which PrairieLearn takes for a "
                         "nested question")
    return written


def main(argv=None) -> int:
    """``python -m grader bundle --target prairielearn OUT/ [--image NAME] [--timeout S] [--force]``."""
    parser = argparse.ArgumentParser(
        prog="python -m grader bundle --target prairielearn",
        description="Write a PrairieLearn question directory: info.json, question.html, tests/run_autograder, "
                    "the grading image's build context (image/) and a README for instructors.",
    )
    parser.add_argument("out", type=Path, help="the question directory to write (must be empty unless --force)")
    parser.add_argument("--image", default=DEFAULT_IMAGE,
                        help=f"grading image named in info.json (default {DEFAULT_IMAGE}; push it to Docker Hub)")
    parser.add_argument("--timeout", type=int, default=MAX_TIMEOUT,
                        help=f"grading timeout in seconds, {MIN_TIMEOUT}-{MAX_TIMEOUT} (default {MAX_TIMEOUT})")
    parser.add_argument("--uuid", default=None, help="the question's uuid (default: kept from OUT/info.json, or new)")
    parser.add_argument("--force", action="store_true", help="replace the question's files in a non-empty OUT")
    parser.add_argument("--source", type=Path, default=None,
                        help="repository to bundle (default: the checkout grader is imported from)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        make_question(args.out, source=args.source, image=args.image, timeout=args.timeout, uuid=args.uuid,
                      force=args.force, log=(lambda message: None) if args.quiet else print)
    except (FileExistsError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"bundle: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
