"""Shared helpers for the grader's tests: submissions built from the reference plus a red-team patch."""
from __future__ import annotations

from pathlib import Path

import pytest

from grader.sandbox.submission import STUDENT_FILES

REDTEAM = Path(__file__).with_name("redteam")


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
