"""The Gradescope autograder zip: ``python -m grader bundle OUT.zip``.

The zip holds, at its root (where Gradescope expects them), the template
files of ``templates/gradescope/``:

``setup.sh``
    Run once as root when Gradescope builds the image: installs the system
    packages a build needs if missing, a virtual environment, and
    ``package/`` (the full package: reference, fast path, grader with its
    hidden checks, the marker code the release uses); then makes the
    installed reference, the grader and the sources readable by root only.
``run_autograder``
    Run for each submission: grades ``$AUTOGRADER_ROOT/submission`` and
    makes sure ``results/results.json`` exists and is valid.
``README_instructors.md``
    How to build, upload and test the bundle.
``package/``
    An sdist-like copy of the repository without build artifacts.

Every path in the scripts comes from an environment variable with the
Gradescope default, so a test can run them against a fake tree.
"""
from __future__ import annotations

import argparse
import stat
import string
import sys
import time
import zipfile
from pathlib import Path

from grader.release.manifest import is_build_artifact, repository_root

__all__ = ["TEMPLATES", "bundle_files", "make_bundle", "main"]

TEMPLATES = Path(__file__).with_name("templates")
# What package/ holds: the build inputs of the repository, unstubbed, hidden checks included.
PACKAGE_FILES = ["setup.py", "pyproject.toml", "README.md"]
PACKAGE_DIRS = ["convnet", "grader", "tests"]


def bundle_files(source: Path) -> list:
    """Relative posix paths of the repository files copied into ``package/``."""
    files = [name for name in PACKAGE_FILES if (source / name).is_file()]
    for directory in PACKAGE_DIRS:
        for path in sorted((source / directory).rglob("*")):
            rel = path.relative_to(source)
            if path.is_file() and not is_build_artifact(rel):
                files.append(rel.as_posix())
    return files


def _add(zf: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=time.localtime(time.time())[:6])
    mode = 0o755 if executable else 0o644
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def make_bundle(out, *, source=None, force: bool = False, log=print) -> list:
    """Write the Gradescope autograder zip.

    Parameters
    ----------
    out : path-like
        The zip to write; its directory is created if missing.
    source : path-like, optional
        The repository; default the checkout (or installed copy) this module belongs to.
    force : bool
        Overwrite an existing ``out``.
    log : callable
        Receives one-line progress messages.

    Returns
    -------
    list of str
        The names written into the zip.

    Raises
    ------
    FileExistsError
        ``out`` exists and ``force`` is false.
    FileNotFoundError
        ``source`` is not a convnet checkout.
    """
    source = Path(source) if source is not None else repository_root()
    out = Path(out)
    if not (source / "setup.py").is_file() or not (source / "convnet").is_dir() or not (source / "grader").is_dir():
        raise FileNotFoundError(f"{source} is not a convnet checkout (needs setup.py, convnet/, grader/); pass --source")
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    if out.suffix != ".zip":
        raise ValueError(f"the bundle must be a .zip file, got {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    files = bundle_files(source)
    gradescope = TEMPLATES / "gradescope"
    names = []
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        for template in sorted([*gradescope.iterdir(), TEMPLATES / "common" / "install.sh"]):
            data = template.read_bytes()
            if template.suffix == ".md":
                data = string.Template(data.decode()).safe_substitute(built=built).encode()
            _add(zf, template.name, data, executable=bool(template.stat().st_mode & stat.S_IXUSR))
            names.append(template.name)
        if "README.md" not in files:
            # pyproject.toml names README.md as the long description; the build needs it.
            _add(zf, "package/README.md", b"# convnet\n\nEECS 498 assignment 3 on numpy, with its autograder.\n")
            names.append("package/README.md")
        for rel in files:
            path = source / rel
            _add(zf, f"package/{rel}", path.read_bytes(), executable=bool(path.stat().st_mode & stat.S_IXUSR))
            names.append(f"package/{rel}")
    tmp.replace(out)
    log(f"bundle: wrote {out} ({len(names)} files, {out.stat().st_size // 1024} KiB)")
    return names


def main(argv=None) -> int:
    """``python -m grader bundle OUT.zip [--force] [--source DIR]``; returns the exit code.

    ``--target prairielearn`` writes a PrairieLearn question directory instead
    (:mod:`grader.bundle.prairielearn`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("--target", choices=("gradescope", "prairielearn"), default="gradescope")
    known, argv = target.parse_known_args(argv)
    if known.target == "prairielearn":
        from grader.bundle import prairielearn

        return prairielearn.main(argv)
    parser = argparse.ArgumentParser(
        prog="python -m grader bundle",
        description="Write the Gradescope autograder zip (setup.sh, run_autograder, the package with hidden checks).",
    )
    parser.add_argument("out", type=Path, help="the zip to write, e.g. autograder.zip")
    parser.add_argument("--force", action="store_true", help="overwrite an existing zip")
    parser.add_argument("--source", type=Path, default=None,
                        help="repository to bundle (default: the checkout grader is imported from)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    parser.add_argument("--target", choices=("gradescope", "prairielearn"), default="gradescope",
                        help="gradescope: this zip (default); prairielearn: a question directory")
    args = parser.parse_args(argv)
    try:
        make_bundle(args.out, source=args.source, force=args.force,
                    log=(lambda message: None) if args.quiet else print)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"bundle: error: {exc}", file=sys.stderr)
        return 1
    return 0
