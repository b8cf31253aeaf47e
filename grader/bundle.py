"""The Gradescope autograder zip: ``python -m grader bundle OUT.zip``.

The zip holds, at its root (where Gradescope expects them):

``setup.sh``
    Run once as root when Gradescope builds the image: installs python3-venv,
    pip, the Python headers and a C compiler if missing, creates a virtual
    environment and installs ``package/`` (the full package: reference layers,
    the Cython fast path, the grader with its hidden checks; no torch), then
    makes the installed reference, the grader and the sources readable by
    root only.
``run_autograder``
    Run for each submission: grades ``$AUTOGRADER_ROOT/submission`` with
    ``python -m grader`` and makes sure ``results/results.json`` exists and is
    valid, writing a zero-score explanation if the grader itself failed. The
    grader's sandbox runs student code as uid 65534 when it runs as root.
``README_instructors.md``
    How to build, upload and test the bundle.
``package/``
    An sdist-like copy of this repository: setup.py, pyproject.toml,
    README.md, convnet/ and grader/ without build artifacts.

Every path in the scripts comes from an environment variable with the
Gradescope default, so a test can run them against a fake tree.
"""
from __future__ import annotations

import argparse
import stat
import sys
import time
import zipfile
from pathlib import Path

from grader.release import is_build_artifact, repository_root

__all__ = ["SETUP_SH", "RUN_AUTOGRADER", "README_INSTRUCTORS", "bundle_files", "make_bundle", "main"]

# What package/ holds: the same build inputs as the release, unstubbed, hidden checks included.
PACKAGE_FILES = ["setup.py", "pyproject.toml", "README.md"]
PACKAGE_DIRS = ["convnet", "grader"]
# The generators are instructor tools; the autograder image does not need them.
PACKAGE_EXCLUDED = ["grader/release.py", "grader/bundle.py"]

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
# Installs the convnet package with its full grader (hidden checks included) into a venv.
set -euo pipefail

ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="${AUTOGRADER_SOURCE:-$ROOT/source}"
VENV="${AUTOGRADER_VENV:-$ROOT/venv}"
BASE_PYTHON="${AUTOGRADER_BASE_PYTHON:-python3}"
# Extra pip arguments, e.g. "--no-build-isolation --no-deps --no-index" for an offline test.
PIP_ARGS="${AUTOGRADER_PIP_ARGS:-}"

missing=()
command -v "$BASE_PYTHON" >/dev/null 2>&1 || missing+=(python3)
if command -v "$BASE_PYTHON" >/dev/null 2>&1; then
    "$BASE_PYTHON" -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv python3-pip)
    # The Cython kernels compile against Python.h.
    "$BASE_PYTHON" -c "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
        || missing+=(python3-dev)
fi
command -v cc >/dev/null 2>&1 || missing+=(build-essential)

if [ "${#missing[@]}" -gt 0 ]; then
    if [ -n "${AUTOGRADER_SKIP_APT:-}" ] || [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "setup.sh: missing ${missing[*]} and cannot install them with apt-get here" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# An existing venv is reused (the test prepares one that sees an offline build toolchain).
if [ ! -x "$VENV/bin/python" ]; then
    "$BASE_PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
# shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
"$VENV/bin/python" -m pip install -q $PIP_ARGS "$SOURCE/package"

# Fail the image build now, not at the first submission, if the install is broken.
"$VENV/bin/python" - <<'PY'
import convnet, convnet.fast, grader.__main__
if not convnet.fast.HAVE_CYTHON:
    raise SystemExit("setup.sh: the Cython kernels did not build")
print("setup.sh: convnet", convnet.__version__, "installed with its compiled fast path")
PY

# Student code runs as uid 65534: the reference solution and the hidden checks are for root only
# (the grader copies what a child needs into the child's own directory). numpy stays readable.
SITE="$("$VENV/bin/python" -I -c 'import convnet, os; print(os.path.dirname(os.path.dirname(convnet.__file__)))')"
chmod -R go-rwx "$SITE/convnet" "$SITE/grader" "$SOURCE"
echo "setup.sh: $SITE/convnet, $SITE/grader and $SOURCE are readable by root only"
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this, as root, for every submission. The grader runs student code only in
# sandboxed children (an unprivileged uid when root); this script never imports it.
set -uo pipefail

ROOT="${AUTOGRADER_ROOT:-/autograder}"
VENV="${AUTOGRADER_VENV:-$ROOT/venv}"
PYTHON="${AUTOGRADER_PYTHON:-$VENV/bin/python}"
SUBMISSION="${AUTOGRADER_SUBMISSION:-$ROOT/submission}"
RESULTS_DIR="${AUTOGRADER_RESULTS:-$ROOT/results}"
RESULTS="$RESULTS_DIR/results.json"
# Whole-run limit in seconds (Gradescope's own default limit is 10 minutes).
LIMIT="${AUTOGRADER_TIMEOUT:-1500}"
# Extra arguments for python -m grader, e.g. "--visible-only".
GRADER_ARGS="${AUTOGRADER_GRADER_ARGS:-}"

mkdir -p "$RESULTS_DIR"
rm -f "$RESULTS"
# A neutral working directory: nothing of the submission is importable by the trusted parent.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

status=0
# shellcheck disable=SC2086  # GRADER_ARGS is a list of words on purpose
timeout --kill-after=30 "$LIMIT" "$PYTHON" -I -m grader "$SUBMISSION" --json "$RESULTS" $GRADER_ARGS || status=$?

# The grader writes results.json even when it fails; this covers a grader that could not start at all.
FALLBACK_PYTHON=""
for candidate in "$PYTHON" python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -I -c "import json, tempfile" >/dev/null 2>&1; then
        FALLBACK_PYTHON="$candidate"
        break
    fi
done
if [ -z "$FALLBACK_PYTHON" ]; then
    printf '{"score": 0, "output": "The autograder could not start Python (exit status %s). Please tell the course staff.", "tests": [], "visibility": "visible", "stdout_visibility": "visible"}\n' "$status" > "$RESULTS"
    exit 0
fi
"$FALLBACK_PYTHON" -I - "$RESULTS" "$status" <<'PY'
import json, os, sys, tempfile

path, status = sys.argv[1], int(sys.argv[2])


def valid(doc):
    if not isinstance(doc, dict):
        return False
    tests = doc.get("tests", [])
    if "score" not in doc and not tests:
        return False
    number = (int, float)
    if "score" in doc and (isinstance(doc["score"], bool) or not isinstance(doc["score"], number)):
        return False
    return isinstance(tests, list) and all(
        isinstance(t, dict) and isinstance(t.get("score", 0), number) and isinstance(t.get("max_score", 0), number)
        for t in tests
    )


try:
    with open(path, encoding="utf-8") as fh:
        ok = valid(json.load(fh))
except (OSError, ValueError):
    ok = False
if not ok:
    reason = "was killed after the time limit" if status in (124, 137) else f"failed (exit status {status})"
    doc = {
        "score": 0,
        "output": f"The autograder {reason} before writing a valid result. "
                  "Your submission was not graded; please tell the course staff.",
        "tests": [],
        "visibility": "visible",
        "stdout_visibility": "visible",
    }
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
    os.replace(tmp, path)
    print(f"run_autograder: {doc['output']}", file=sys.stderr)
PY
exit 0
"""

README_INSTRUCTORS = """# convnet autograder bundle (Gradescope)

Built by `python -m grader bundle OUT.zip` from the course repository on {built}.

## Contents

| file | role |
|---|---|
| `setup.sh` | run once by Gradescope when it builds the image: installs python3-venv, pip, the Python headers and a C compiler if missing, then the package in `/autograder/venv` (no torch), readable by root only |
| `run_autograder` | run for each submission: `python -m grader /autograder/submission --json /autograder/results/results.json`; writes a zero-score explanation if the grader could not run |
| `package/` | the full package: reference layers, Cython fast path, grader with the hidden checks |

## Upload

1. Gradescope assignment, *Configure Autograder*: base image Ubuntu 22.04 or later
   (Python >= 3.10), upload this zip, *Update Autograder*; wait for the build to succeed
   (`setup.sh` prints `convnet ... installed with its compiled fast path`).
2. Students upload the files of their starter that hold stubs (e.g. `layers.py`),
   by themselves or under `convnet/`; a `.zip` of them works too.
3. *Test Autograder* with the reference: upload `package/convnet/layers.py` (and the
   other stubbed files) from this zip; it must score full marks.

## Isolation

The grader is the trusted parent: it runs each student check group in a fresh
`python -I` child with resource limits, a wall-clock limit, a temporary directory
and, because Gradescope runs as root, uid 65534. Only arrays cross between them.
`setup.sh` leaves the installed reference, the grader (hidden checks included) and
`/autograder/source` readable by root only, so a child cannot read them even
where the kernel lacks Landlock.

## Test locally

Every path is an environment variable, defaults in brackets:
`AUTOGRADER_ROOT` [/autograder], `AUTOGRADER_SOURCE` [$ROOT/source],
`AUTOGRADER_VENV` [$ROOT/venv], `AUTOGRADER_PYTHON` [$VENV/bin/python],
`AUTOGRADER_SUBMISSION` [$ROOT/submission], `AUTOGRADER_RESULTS` [$ROOT/results],
`AUTOGRADER_TIMEOUT` [1500 s], `AUTOGRADER_GRADER_ARGS` (extra grader arguments),
`AUTOGRADER_PIP_ARGS` (extra pip arguments for setup.sh), `AUTOGRADER_SKIP_APT`.

```bash
mkdir -p /tmp/ag/source /tmp/ag/submission
unzip -q autograder.zip -d /tmp/ag/source
cp my_layers.py /tmp/ag/submission/layers.py
AUTOGRADER_ROOT=/tmp/ag bash /tmp/ag/source/setup.sh
AUTOGRADER_ROOT=/tmp/ag bash /tmp/ag/source/run_autograder
python -m json.tool /tmp/ag/results/results.json
```
"""


def bundle_files(source: Path) -> list:
    """Relative posix paths of the repository files copied into ``package/``."""
    files = [name for name in PACKAGE_FILES if (source / name).is_file()]
    for directory in PACKAGE_DIRS:
        for path in sorted((source / directory).rglob("*")):
            rel = path.relative_to(source)
            if path.is_file() and not is_build_artifact(rel) and rel.as_posix() not in PACKAGE_EXCLUDED:
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
        The repository; default the checkout this module is in.
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
    names = ["setup.sh", "run_autograder", "README_instructors.md"]
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        _add(zf, "setup.sh", SETUP_SH.encode(), executable=True)
        _add(zf, "run_autograder", RUN_AUTOGRADER.encode(), executable=True)
        built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        _add(zf, "README_instructors.md", README_INSTRUCTORS.format(built=built).encode())
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
    """``python -m grader bundle OUT.zip [--force] [--source DIR]``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("--target", choices=("gradescope", "prairielearn"), default="gradescope")
    known, argv = target.parse_known_args(argv)
    if known.target == "prairielearn":
        from grader import plbundle

        return plbundle.main(argv)
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
                        help="gradescope: this zip (default); prairielearn: a question directory (grader.plbundle)")
    args = parser.parse_args(argv)
    try:
        make_bundle(args.out, source=args.source, force=args.force,
                    log=(lambda message: None) if args.quiet else print)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"bundle: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
