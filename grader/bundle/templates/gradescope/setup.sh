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

# The package, its compiled kernels, and root-only permissions on the installed reference and grader.
CONVNET_VENV="$VENV" CONVNET_BASE_PYTHON="$BASE_PYTHON" CONVNET_PIP_ARGS="$PIP_ARGS" \
    bash "$SOURCE/install.sh" "$SOURCE/package"
chmod -R go-rwx "$SOURCE"
echo "setup.sh: $SOURCE is readable by root only"
