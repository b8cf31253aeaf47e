#!/usr/bin/env bash
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
