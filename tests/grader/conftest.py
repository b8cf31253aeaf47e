"""Shared helpers for the grader's tests: submissions built from the reference plus a red-team patch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from grader.sandbox.submission import STUDENT_FILES

REDTEAM = Path(__file__).with_name("redteam")


@pytest.fixture(scope="session")
def install_env():
    """What the install tests add to an install script's environment: baseline kernels only (the CPU variants
    are tested in tests/fast) at -O1, a third of -O3's compile time (setup.py keeps an -O flag of CFLAGS).
    The install flow is under test there, not the kernels."""
    return {"CONVNET_NO_VARIANTS": "1", "CFLAGS": "-O1"}


def reference_dir() -> Path:
    import convnet

    return Path(convnet.__file__).resolve().parent


@pytest.fixture
def make_submission(tmp_path):
    """``make_submission(patch=None, files=STUDENT_FILES, layout="flat")`` -> a submission directory.

    ``patch`` names a red-team directory; its layers.py is appended to the
    reference's (so only the layers it redefines are wrong). Placeholders
    @RESULTS@, @REFDIR@, @SITE@ are filled in.
    """
    def make(patch=None, files=STUDENT_FILES, layout="flat", results=None, subst=None):
        ref = reference_dir()
        out = tmp_path / f"sub-{patch or 'ref'}"
        dest = out / "convnet" if layout == "package" else out
        dest.mkdir(parents=True)
        for name in files:
            text = (ref / name).read_text()
            if patch and name == "layers.py":
                import numpy

                extra = (REDTEAM / patch / "layers.py").read_text()
                extra = (extra.replace("@RESULTS@", str(results or tmp_path / "results.json"))
                         .replace("@REFDIR@", str(ref))
                         .replace("@SITE@", str(Path(numpy.__file__).resolve().parent.parent)))
                for key, value in (subst or {}).items():
                    extra = extra.replace(key, value)
                text += "\n\n# ---- red team ----\n" + extra
            (dest / name).write_text(text)
        return out
    return make


@pytest.fixture
def offline_venv():
    """``offline_venv(where)`` -> the python of a venv that sees this interpreter's site-packages (a PyPI stand-in).

    The venv borrows this interpreter's site-packages (numpy, Cython, pip) as plain paths. An
    editable install of convnet is a .pth hook there, not processed for a path added this way,
    so only what an install script puts in the venv provides convnet and grader.
    """
    def make(where: Path) -> Path:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
        python = where / "bin" / "python"
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        dirs = {p for p in sys.path
                if p.rstrip("/").endswith(("site-packages", "dist-packages")) and Path(p).is_dir()}
        Path(purelib, "_borrowed_site_packages.pth").write_text("\n".join(sorted(dirs)) + "\n")
        return python
    return make
