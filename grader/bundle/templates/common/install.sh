#!/usr/bin/env bash
# Installs the convnet package (reference solution, Cython fast path, grader with its hidden checks)
# into a virtual environment of the grading machine, then makes it readable by root only.
# Gradescope's setup.sh and the PrairieLearn image's Dockerfile both run it.
# Usage: install.sh [PACKAGE]   (a source directory or a wheel; default: package/ beside this script)
set -euo pipefail

SOURCE="${1:-$(cd "$(dirname "$0")" && pwd)/package}"
VENV="${CONVNET_VENV:-/opt/convnet/venv}"
BASE_PYTHON="${CONVNET_BASE_PYTHON:-python3}"
# Extra pip arguments, e.g. "--no-build-isolation --no-deps --no-index" for an offline test.
PIP_ARGS="${CONVNET_PIP_ARGS:-}"

# An existing venv is reused (the test prepares one that sees an offline build toolchain).
if [ ! -x "$VENV/bin/python" ]; then
    "$BASE_PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
# shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
"$VENV/bin/python" -m pip install -q $PIP_ARGS "$SOURCE"

# Fail the image build now, not at the first submission, if the install is broken.
"$VENV/bin/python" - <<'PY'
import convnet, convnet.fast, grader.__main__
if not convnet.fast.HAVE_CYTHON:
    raise SystemExit("install.sh: the Cython kernels did not build")
print("install.sh: convnet", convnet.__version__, "installed with its compiled fast path")
PY

# Student code runs as uid 65534: the reference solution and the hidden checks are for root only
# (the grader copies what a child needs into the child's own directory). numpy stays readable.
SITE="$("$VENV/bin/python" -I -c 'import convnet, os; print(os.path.dirname(os.path.dirname(convnet.__file__)))')"
chmod -R go-rwx "$SITE/convnet" "$SITE/grader"
echo "install.sh: $SITE/convnet and $SITE/grader are readable by root only"
