"""Tests of grader.bundle: the Gradescope zip, and its run_autograder against a fake /autograder tree."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader import bundle, release
from grader.release import manifest
from grader.sandbox import graded_files

REPO = Path(__file__).resolve().parents[2]
STATUSES = {"passed", "failed"}
VISIBILITIES = {"visible", "hidden", "after_due_date", "after_published"}


def quiet(_message):
    pass


@pytest.fixture(scope="module")
def zip_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "autograder.zip"
    bundle.make_bundle(out, source=REPO, log=quiet)
    return out


@pytest.fixture(scope="module")
def starter(tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "starter"
    info = release.make_release(out, source=REPO, log=quiet)
    return out, info


def assert_valid_results(doc):
    """Gradescope's results.json schema, as far as Gradescope checks it, plus our own fields."""
    assert isinstance(doc, dict)
    assert isinstance(doc["score"], (int, float)) and not isinstance(doc["score"], bool)
    assert isinstance(doc.get("output", ""), str)
    assert doc.get("visibility", "visible") in VISIBILITIES
    assert doc.get("stdout_visibility", "visible") in VISIBILITIES
    assert isinstance(doc["tests"], list)
    for test in doc["tests"]:
        assert isinstance(test["name"], str) and test["name"]
        assert isinstance(test["score"], (int, float)) and isinstance(test["max_score"], (int, float))
        assert 0 <= test["score"] <= test["max_score"] or test["max_score"] == 0
        assert test.get("status", "passed") in STATUSES
        assert test.get("visibility", "visible") in VISIBILITIES
        assert isinstance(test.get("output", ""), str)
    if doc["tests"]:
        assert doc["score"] == pytest.approx(sum(t["score"] for t in doc["tests"]))


class TestZip:
    def test_layout_and_executable_scripts(self, zip_path):
        with zipfile.ZipFile(zip_path) as zf:
            infos = {info.filename: info for info in zf.infolist()}
            for script in ("setup.sh", "run_autograder"):
                assert (infos[script].external_attr >> 16) & 0o111, script
                assert zf.read(script).startswith(b"#!/usr/bin/env bash\n")
            assert b"Gradescope" in zf.read("README_instructors.md")
        assert {"setup.sh", "run_autograder", "README_instructors.md", "install.sh"} <= set(infos)

    def test_package_is_the_full_source_with_hidden_checks(self, zip_path):
        files = bundle.bundle_files(REPO)
        assert "convnet/layers.py" in files and "setup.py" in files and "pyproject.toml" in files
        hidden = [f for f in manifest.EXCLUDED if (REPO / f).is_file() and f.startswith("grader/checks/")]
        assert hidden, "the hidden checks module is expected under grader/checks/"
        with zipfile.ZipFile(zip_path) as zf:
            names = set(zf.namelist())
            for rel in files:
                assert zf.read(f"package/{rel}") == (REPO / rel).read_bytes(), rel
            for rel in hidden:
                assert f"package/{rel}" in names
            # The reference solution is in: the grader needs it.
            assert b"# BEGIN SOLUTION" in zf.read("package/convnet/layers.py")
            assert "package/README.md" in names  # pyproject's readme, needed by the build
        packaged = {n[len("package/"):] for n in names if n.startswith("package/")}
        pyx = {p.relative_to(REPO).as_posix() for p in (REPO / "convnet" / "_fast").glob("*.pyx")}
        assert pyx and pyx <= packaged
        assert not [n for n in packaged if n.endswith((".so", ".c", ".pyc")) or "__pycache__" in n]
        # The marker code the release uses is the one the grader uses for a missing graded file.
        assert {"grader/release/markers.py", "grader/release/banner.py"} <= packaged

    def test_setup_installs_without_torch(self, zip_path):
        with zipfile.ZipFile(zip_path) as zf:
            setup = zf.read("setup.sh").decode()
            pyproject = zf.read("package/pyproject.toml").decode()
        assert "torch" not in setup
        dependencies = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
        assert "torch" not in dependencies

    def test_python_m_grader_bundle(self, tmp_path):
        out = tmp_path / "ag.zip"
        run = subprocess.run([sys.executable, "-m", "grader", "bundle", str(out), "--source", str(REPO)],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert run.returncode == 0, run.stderr
        assert f"wrote {out}" in run.stdout
        with zipfile.ZipFile(out) as zf:
            assert zf.read("run_autograder") == (bundle.TEMPLATES / "gradescope" / "run_autograder").read_bytes()

    def test_scripts_parse_as_bash(self, zip_path, tmp_path):
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp_path)
        for script in ("setup.sh", "run_autograder", "install.sh"):
            run = subprocess.run(["bash", "-n", str(tmp_path / script)], capture_output=True, text=True)
            assert run.returncode == 0, run.stderr

    def test_refuses_to_overwrite_and_needs_a_zip_name(self, zip_path, tmp_path):
        before = zip_path.read_bytes()
        assert bundle.main([str(zip_path), "--source", str(REPO), "-q"]) == 1
        assert zip_path.read_bytes() == before
        with pytest.raises(ValueError, match=r"\.zip"):
            bundle.make_bundle(tmp_path / "bundle.tar", source=REPO, log=quiet)
        again = tmp_path / "again.zip"
        assert bundle.main([str(again), "--source", str(REPO), "-q"]) == 0
        assert bundle.main([str(again), "--source", str(REPO), "--force", "-q"]) == 0
        assert zipfile.ZipFile(again).testzip() is None
        assert sorted(p.name for p in tmp_path.iterdir()) == ["again.zip"]


# ---------------------------------------------------------------------------
# run_autograder against a fake /autograder tree
# ---------------------------------------------------------------------------


def fake_autograder(tmp_path: Path, zip_path: Path, files: dict) -> Path:
    """``root/source`` (the unzipped bundle) and ``root/submission`` holding ``files`` {name: text}."""
    root = tmp_path / "autograder"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "source")
    for script in ("setup.sh", "run_autograder", "install.sh"):
        path = root / "source" / script
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    (root / "submission").mkdir()
    for name, text in files.items():
        (root / "submission" / name).write_text(text)
    return root


def run_autograder(root: Path, **env):
    environment = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable, **env}
    run = subprocess.run([str(root / "source" / "run_autograder")], capture_output=True, text=True,
                         env=environment, cwd=root, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = root / "results" / "results.json"
    assert results.is_file(), run.stdout[-2000:] + run.stderr[-3000:]
    doc = json.loads(results.read_text())
    assert_valid_results(doc)
    return doc, run


def student_files(directory: Path) -> dict:
    return {p.name: p.read_text() for p in sorted(directory.glob("*.py"))
            if p.name in ("layers.py", "sandwich.py", "models.py", "optim.py", "solver.py")}


def test_run_autograder_gives_the_documented_upload_set_full_marks(zip_path, tmp_path):
    """Exactly the files every document tells students to upload: the ones with stubs."""
    upload = {name: text for name, text in student_files(REPO / "convnet").items() if name in graded_files()}
    assert sorted(upload) == ["layers.py", "models.py", "optim.py"]
    for doc in (REPO / "README.md", bundle.TEMPLATES / "gradescope" / "README_instructors.md",
                release.TEMPLATES / "README.md"):
        assert "`layers.py`, `models.py`" in doc.read_text() or "$upload" in doc.read_text(), doc
    root = fake_autograder(tmp_path, zip_path, upload)
    doc, _ = run_autograder(root)
    total = sum(t["max_score"] for t in doc["tests"])
    assert total > 0 and len(doc["tests"]) > 20
    assert doc["score"] == pytest.approx(total), [t["name"] for t in doc["tests"] if t["score"] < t["max_score"]]
    assert not list((root / "submission").glob("*.json"))  # the submission directory is left alone


def test_run_autograder_scores_the_empty_release_zero_on_its_stubs(zip_path, starter, tmp_path):
    out, info = starter
    root = fake_autograder(tmp_path, zip_path, student_files(out / "convnet"))
    doc, _ = run_autograder(root)
    stubbed = [t for t in doc["tests"] if "implement me" in t["output"]]
    assert len(stubbed) >= 20
    assert all(t["score"] == 0 for t in stubbed)
    layer_tests = [t for t in doc["tests"] if "layers" in t.get("tags", [])]
    assert layer_tests and all(t["score"] == 0 for t in layer_tests)
    assert doc["score"] < sum(t["max_score"] for t in doc["tests"])


# The first case runs every check; the others only the visible ones, to keep within the time budget
# (the grader's own red-team tests cover each crash in depth; here the point is run_autograder's result).
@pytest.mark.parametrize("crash, grader_args", [
    ("raise RuntimeError('boom at import')\n", ""),
    ("import os\nos._exit(3)\n", "--visible-only"),
    ("def broken(:\n", "--visible-only"),
], ids=["raise-at-import", "exit-at-import", "syntax-error"])
def test_run_autograder_survives_a_crashing_submission(zip_path, tmp_path, crash, grader_args):
    files = student_files(REPO / "convnet")
    files["layers.py"] = crash
    root = fake_autograder(tmp_path, zip_path, files)
    doc, _ = run_autograder(root, AUTOGRADER_GRADER_ARGS=grader_args)
    if grader_args:
        assert {t["visibility"] for t in doc["tests"]} == {"visible"}
    layer_tests = [t for t in doc["tests"] if "layers" in t.get("tags", [])]
    assert len(layer_tests) >= 10
    assert [t["name"] for t in layer_tests if t["score"] != 0] == []
    assert doc["score"] < sum(t["max_score"] for t in doc["tests"])


def test_run_autograder_writes_a_result_when_the_grader_cannot_start(zip_path, tmp_path):
    root = fake_autograder(tmp_path, zip_path, {"layers.py": "x = 1\n"})
    doc, run = run_autograder(root, AUTOGRADER_PYTHON=str(tmp_path / "no-such-python"))
    assert doc["score"] == 0 and doc["tests"] == []
    assert "not graded" in doc["output"] and "exit status 127" in doc["output"]
    assert "not graded" in run.stderr


def test_run_autograder_writes_a_result_when_the_grader_times_out(zip_path, tmp_path):
    root = fake_autograder(tmp_path, zip_path, {"layers.py": "x = 1\n"})
    # A stand-in grader that hangs; run_autograder's limit kills it.
    hang = tmp_path / "hanging-python"
    hang.write_text(f'#!/bin/sh\nif [ "$2" = "-m" ]; then exec sleep 60; fi\nexec {sys.executable} "$@"\n')
    hang.chmod(0o755)
    doc, _ = run_autograder(root, AUTOGRADER_PYTHON=str(hang), AUTOGRADER_TIMEOUT="1")
    assert doc["score"] == 0 and "time limit" in doc["output"]


def test_run_autograder_replaces_an_invalid_result(zip_path, tmp_path):
    root = fake_autograder(tmp_path, zip_path, {"layers.py": "x = 1\n"})
    # A stand-in grader that exits 0 but writes garbage where results.json goes.
    liar = tmp_path / "lying-python"
    liar.write_text(f'#!/bin/sh\nif [ "$2" = "-m" ]; then echo "not json" > "$5"; exit 0; fi\n'
                    f'exec {sys.executable} "$@"\n')
    liar.chmod(0o755)
    doc, _ = run_autograder(root, AUTOGRADER_PYTHON=str(liar))
    assert doc["score"] == 0 and "exit status 0" in doc["output"]


@pytest.mark.slow
def test_setup_sh_installs_the_bundle_that_run_autograder_then_uses(zip_path, tmp_path, offline_venv,
                                                                   install_env):
    root = fake_autograder(tmp_path, zip_path, student_files(REPO / "convnet"))
    python = offline_venv(root / "venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AUTOGRADER_"))}
    env.update(install_env, AUTOGRADER_ROOT=str(root), AUTOGRADER_SKIP_APT="1",
               AUTOGRADER_PIP_ARGS="--no-build-isolation --no-deps --no-index --no-cache-dir")
    setup = subprocess.run(["bash", str(root / "source" / "setup.sh")], capture_output=True, text=True, env=env,
                           cwd=root, timeout=900)
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-4000:]
    assert "installed with its compiled fast path" in setup.stdout
    probe = subprocess.run([str(python), "-I", "-c", "import convnet, grader.checks.hidden; print(convnet.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    installed = Path(probe.stdout.strip()).parent
    assert installed.is_relative_to(root / "venv")
    # The reference and the hidden checks are root's only; the sandboxed child (uid 65534) cannot read them.
    for secret in (installed / "layers.py", installed.parent / "grader" / "checks" / "hidden.py",
                   root / "source" / "package" / "convnet" / "layers.py"):
        assert secret.stat().st_mode & 0o077 == 0, secret
    for directory in (installed, installed.parent / "grader", root / "source"):
        assert directory.stat().st_mode & 0o077 == 0, directory

    # The installed grader writes a starter and a bundle as a checkout does (from the build files it carries).
    made = subprocess.run([str(python), "-I", "-m", "grader", "release", str(tmp_path / "from-installed")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert made.returncode == 0, made.stderr[-3000:]
    assert "no solution text found" in made.stdout
    assert 'raise NotImplementedError("Conv.forward: implement me")' in \
        (tmp_path / "from-installed" / "convnet" / "layers.py").read_text()
    assert (tmp_path / "from-installed" / "tests" / "test_layers.py").is_file()
    made = subprocess.run([str(python), "-I", "-m", "grader", "bundle", str(tmp_path / "again.zip")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert made.returncode == 0, made.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / "again.zip") as zf:
        assert b"# BEGIN SOLUTION" in zf.read("package/convnet/layers.py")

    # run_autograder with every default but the root: the venv setup.sh made, the hidden checks included.
    run = subprocess.run([str(root / "source" / "run_autograder")], capture_output=True, text=True, env=env,
                         cwd=root, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads((root / "results" / "results.json").read_text())
    assert_valid_results(doc)
    assert {t["visibility"] for t in doc["tests"]} >= {"visible", "hidden"}
    total = sum(t["max_score"] for t in doc["tests"])
    assert total > 0 and doc["score"] == pytest.approx(total)
