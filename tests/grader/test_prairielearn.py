"""PrairieLearn: the results conversion, the question directory, and its entry point against a fake /grade tree."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grader import report, sandbox
from grader.bundle import prairielearn as plbundle
from grader.formats import convert, write_results
from grader.prairielearn import SIZE_LIMIT, to_prairielearn

REPO = Path(__file__).resolve().parents[2]
STUDENT_FILES = sandbox.graded_files()  # what students upload


def quiet(_message):
    pass


def assert_valid_pl(doc):
    """PrairieLearn's external-grader results, as its docs define them."""
    assert isinstance(doc, dict)
    assert len(json.dumps(doc).encode()) < 1_000_000
    gradable = doc.get("gradable", True)
    assert isinstance(gradable, bool)
    if gradable:
        assert isinstance(doc["score"], (int, float)) and not isinstance(doc["score"], bool)
        assert 0.0 <= doc["score"] <= 1.0
    else:
        errors = doc["format_errors"]
        assert isinstance(errors, str) or (isinstance(errors, list) and all(isinstance(e, str) for e in errors))
    assert isinstance(doc.get("message", ""), str) and isinstance(doc.get("output", ""), str)
    assert isinstance(doc.get("tests", []), list)
    for test in doc.get("tests", []):
        assert isinstance(test["name"], str) and test["name"]
        for key in ("description", "message", "output"):
            assert isinstance(test.get(key, ""), str)
        for key in ("points", "max_points"):
            assert isinstance(test[key], (int, float)) and not isinstance(test[key], bool)
            assert math.isfinite(test[key])
        assert 0 <= test["points"] <= test["max_points"] or test["max_points"] == 0


def gs_test(name, score, max_score, *, output="ok", visibility="visible", status=None, tags=("layers",), **extra):
    return {"name": name, "number": "1", "score": score, "max_score": max_score,
            "status": status or ("passed" if score >= max_score else "failed"), "output": output,
            "visibility": visibility, "tags": list(tags), "extra_data": extra}


def gs_results(tests, **top):
    doc = {"score": sum(t["score"] for t in tests), "execution_time": 1.0, "visibility": "visible",
           "stdout_visibility": "hidden", "output": "Score: x / y", "tests": tests}
    doc.update(top)
    return doc


# ---------------------------------------------------------------------------
# the conversion
# ---------------------------------------------------------------------------


class TestConversion:
    def test_hand_checked_case(self):
        tests = [gs_test("A.forward", 1, 1, output="relative error 0.0e+00"),
                 gs_test("B.backward", 0, 2, output="max relative error 3.0e-01\nmore detail"),
                 gs_test("C secret", 3, 3, visibility="hidden", output="secret detail"),
                 gs_test("D timing", 0, 4, visibility="after_due_date", output="2x too slow")]
        doc = to_prairielearn(gs_results(tests, output="Score: 4 / 10\nwarning: x"))
        assert_valid_pl(doc)
        assert doc["gradable"] is True
        assert doc["score"] == pytest.approx(0.4)
        assert doc["message"] == "Score: 4 / 10"
        assert doc["output"] == "Score: 4 / 10\nwarning: x"
        names = [t["name"] for t in doc["tests"]]
        assert names == ["A.forward", "B.backward", "Hidden checks"]
        a, b, hidden = doc["tests"]
        assert (a["points"], a["max_points"], a["message"], a["description"]) == (1, 1, "passed", "layers")
        assert (b["points"], b["max_points"]) == (0, 2)
        assert b["message"] == "max relative error 3.0e-01"
        assert b["output"] == "max relative error 3.0e-01\nmore detail"
        assert (hidden["points"], hidden["max_points"]) == (3, 7)
        assert hidden["message"] == "1 of 2 hidden checks passed"
        # Nothing of a hidden check's name or output reaches the student.
        text = json.dumps(doc)
        assert "secret detail" not in text and "C secret" not in text and "too slow" not in text

    def test_show_hidden_lists_every_check(self):
        tests = [gs_test("A", 1, 1), gs_test("C", 0, 3, visibility="hidden", output="why")]
        doc = to_prairielearn(gs_results(tests), show_hidden=True)
        assert [t["name"] for t in doc["tests"]] == ["A", "C"]
        assert doc["tests"][1]["message"] == "why" and doc["score"] == pytest.approx(0.25)

    @pytest.mark.parametrize("diagnosis", ["the stride is ignored", ["the stride is ignored", "  ", 3]])
    def test_likely_causes_of_a_failing_check_are_in_its_message(self, diagnosis):
        tests = [gs_test("Conv.forward", 0, 2, output="relative error 1.0e+00", diagnosis=diagnosis),
                 gs_test("ReLU.forward", 1, 1, diagnosis="never shown for a passing check")]
        doc = to_prairielearn(gs_results(tests))
        assert doc["tests"][0]["message"] == "relative error 1.0e+00\nLikely cause: the stride is ignored"
        assert doc["tests"][1]["message"] == "passed"

    def test_status_decides_over_points_for_zero_point_checks(self):
        tests = [gs_test("env", 0, 0, status="failed", output="fast path broken"), gs_test("A", 2, 2)]
        doc = to_prairielearn(gs_results(tests))
        assert doc["tests"][0]["message"] == "fast path broken"
        assert doc["score"] == 1.0

    def test_grader_failure_is_not_gradable(self):
        doc = to_prairielearn(report.failure_json("RuntimeError: boom"))
        assert_valid_pl(doc)
        assert doc["gradable"] is False and doc["score"] == 0 and doc["tests"] == []
        assert "RuntimeError: boom" in doc["format_errors"][0] and "course staff" in doc["message"]

    @pytest.mark.parametrize("bad", [None, [], "text", {"score": 1}, {"tests": "x"}, {"tests": [1, 2]},
                                     {"tests": [], "output": 5}])
    def test_malformed_input_is_not_gradable(self, bad):
        doc = to_prairielearn(bad)
        assert_valid_pl(doc)
        assert doc["gradable"] is False

    @pytest.mark.parametrize("score, expected", [(99.0, 1.0), (-3.0, 0.0), (float("nan"), 0.5), ("7", 0.5),
                                                 (True, 0.5)])
    def test_score_is_a_fraction_in_0_1(self, score, expected):
        tests = [gs_test("A", 1, 1), gs_test("B", 0, 1)]
        doc = to_prairielearn(gs_results(tests, score=score))
        assert doc["score"] == pytest.approx(expected)

    def test_no_points_at_all_scores_zero(self):
        doc = to_prairielearn(gs_results([gs_test("env", 0, 0)]))
        assert doc["gradable"] is True and doc["score"] == 0.0

    def test_large_outputs_are_truncated_under_the_size_limit(self):
        tests = [gs_test(f"check {i}", 0, 1, output=f"line {i}\n" + "x" * 20_000) for i in range(100)]
        doc = to_prairielearn(gs_results(tests, output="y" * 50_000))
        assert_valid_pl(doc)
        assert len(json.dumps(doc).encode()) <= SIZE_LIMIT
        assert doc["tests"][7]["message"] == "line 7"  # the message survives the truncation
        assert doc["tests"][7]["output"].startswith("line 7")
        small = to_prairielearn(gs_results(tests[:2]))
        assert small["tests"][0]["output"] == tests[0]["output"]  # nothing truncated when it fits

    def test_formats(self, tmp_path):
        results = gs_results([gs_test("A", 1, 1)])
        assert convert(results, "gradescope") is results
        assert convert(results, "prairielearn") == to_prairielearn(results)
        with pytest.raises(ValueError, match="'moodle'"):
            convert(results, "moodle")
        write_results(results, tmp_path / "r.json", "prairielearn")
        assert json.loads((tmp_path / "r.json").read_text()) == to_prairielearn(results)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["score", "max_score", "status", "output", "visibility", "tags", "name", "extra_data",
                         "diagnosis", "tests", "x"]), children, max_size=6),
    max_leaves=30)
test_like = st.fixed_dictionaries({}, optional={
    "name": st.text(max_size=10) | st.integers(), "score": st.floats() | st.integers() | st.text(max_size=3),
    "max_score": st.floats() | st.integers(), "status": st.sampled_from(["passed", "failed", "odd"]),
    "output": st.text(max_size=30) | st.none(), "visibility": st.sampled_from(["visible", "hidden", "weird"]),
    "tags": st.lists(st.text(max_size=5)) | st.text(max_size=5), "extra_data": json_values})


@settings(max_examples=150, deadline=None)
@given(st.one_of(json_values, st.fixed_dictionaries({"tests": st.lists(test_like, max_size=5)},
                                                    optional={"score": json_values, "output": json_values})))
def test_any_input_converts_to_valid_results(doc):
    assert_valid_pl(to_prairielearn(doc))


def test_cli_writes_prairielearn_results(tmp_path):
    out = tmp_path / "pl.json"
    run = subprocess.run([sys.executable, "-m", "grader", "--visible-only", "--quiet", "--format", "prairielearn",
                          "--json", str(out), "--seed", "3"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert_valid_pl(doc)
    assert doc["gradable"] and doc["score"] == 1.0 and len(doc["tests"]) > 10
    assert all(t["points"] == t["max_points"] for t in doc["tests"])
    bad = subprocess.run([sys.executable, "-m", "grader", "--format", "moodle"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert bad.returncode == 2 and "moodle" in bad.stderr


# ---------------------------------------------------------------------------
# the question directory
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def question(tmp_path_factory):
    out = tmp_path_factory.mktemp("pl") / "convnet-question"
    plbundle.make_question(out, source=REPO, log=quiet)
    return out


class TestQuestion:
    def test_info_json(self, question):
        info = json.loads((question / "info.json").read_text())
        assert str(uuid.UUID(info["uuid"])) == info["uuid"]
        assert info["type"] == "v3" and info["gradingMethod"] == "External" and info["singleVariant"] is True
        assert isinstance(info["title"], str) and isinstance(info["topic"], str)
        options = info["externalGradingOptions"]
        assert options == {"enabled": True, "image": plbundle.DEFAULT_IMAGE,
                           "entrypoint": "/grade/tests/run_autograder", "timeout": 600}

    def test_question_html_uploads_the_student_files(self, question):
        html = (question / "question.html").read_text()
        upload = html.split("<pl-file-upload", 1)[1].split(">", 1)[0]
        names = upload.split('file-names="', 1)[1].split('"', 1)[0]
        assert [n.strip() for n in names.split(",")] == list(plbundle.UPLOAD_FILES)
        assert {"layers.py", "models.py", "optim.py"} <= set(plbundle.UPLOAD_FILES)
        assert "<pl-external-grader-results></pl-external-grader-results>" in html
        assert "<pl-submission-panel>" in html and "<pl-question-panel>" in html

    def test_scripts_are_executable_bash(self, question):
        for rel in ("tests/run_autograder", "image/install.sh"):
            path = question / rel
            assert path.stat().st_mode & 0o111, rel
            assert path.read_text().startswith("#!/usr/bin/env bash\n")
            run = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
            assert run.returncode == 0, run.stderr

    def test_every_placeholder_is_filled(self, question):
        for path in question.rglob("*"):
            if path.is_file() and "package" not in path.relative_to(question).parts:
                assert re.findall(r"@[A-Z_]+@", path.read_text()) == [], path
        readme = (question / "README.md").read_text()
        for needle in ("docker build", "install.sh", "timeout", "570", "PL_GRADE_ROOT", "python:3.12-slim"):
            assert needle in readme, needle
        assert "FROM python:3.12-slim" in (question / "image" / "Dockerfile").read_text()
        assert 'LIMIT="${PL_GRADER_LIMIT:-570}"' in (question / "tests" / "run_autograder").read_text()

    def test_image_package_is_the_full_source_without_bundle_templates(self, question):
        files = plbundle.question_package_files(REPO)
        assert "convnet/layers.py" in files and "grader/checks/hidden.py" in files
        assert "grader/prairielearn.py" in files and "setup.py" in files
        for rel in files:
            assert (question / "image" / "package" / rel).read_bytes() == (REPO / rel).read_bytes(), rel
        packaged = {p.relative_to(question / "image" / "package").as_posix()
                    for p in (question / "image" / "package").rglob("*") if p.is_file()}
        assert packaged == set(files) | {"README.md"}
        assert not [n for n in packaged if n.endswith((".so", ".c", ".pyc")) or "__pycache__" in n]
        assert not [n for n in packaged if n.startswith("grader/bundle/templates/")]
        # PrairieLearn takes any info.json below a question for a nested question.
        assert [p.relative_to(question).as_posix() for p in question.rglob("info.json")] == ["info.json"]

    def test_cli_refuses_a_non_empty_directory_and_force_keeps_the_uuid(self, tmp_path):
        out = tmp_path / "q"
        cmd = [sys.executable, "-m", "grader", "bundle", "--target", "prairielearn", str(out), "--source", str(REPO)]
        run = subprocess.run(cmd + ["--image", "me/convnet:2025", "--timeout", "300"], capture_output=True,
                             text=True, cwd=tmp_path, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "wrote the PrairieLearn question" in run.stdout
        info = json.loads((out / "info.json").read_text())
        assert info["externalGradingOptions"]["image"] == "me/convnet:2025"
        assert info["externalGradingOptions"]["timeout"] == 300
        assert 'PL_GRADER_LIMIT:-270}' in (out / "tests" / "run_autograder").read_text()
        (out / "clientFilesQuestion").mkdir()
        (out / "clientFilesQuestion" / "figure.png").write_bytes(b"png")
        (out / "image" / "stale.txt").write_text("old")
        again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert again.returncode == 1 and "not empty" in again.stderr
        assert plbundle.main([str(out), "--source", str(REPO), "--force", "-q"]) == 0
        assert json.loads((out / "info.json").read_text())["uuid"] == info["uuid"]
        assert (out / "clientFilesQuestion" / "figure.png").read_bytes() == b"png"  # not the question's: kept
        assert not (out / "image" / "stale.txt").exists()  # the question's: replaced
        assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]  # no staging directory left

    @pytest.mark.parametrize("args, message", [
        (["--timeout", "601"], "timeout must be"), (["--timeout", "10"], "timeout must be"),
        (["--image", "bad image"], "not a Docker image"), (["--uuid", "nope"], "not a UUID"),
    ])
    def test_bad_options_are_refused_by_name(self, tmp_path, capsys, args, message):
        assert plbundle.main([str(tmp_path / "q"), "--source", str(REPO), *args]) == 1
        err = capsys.readouterr().err
        assert message in err and args[1] in err
        assert not (tmp_path / "q").exists()

    def test_bundle_target_dispatch(self, tmp_path, capsys):
        from grader import bundle

        assert bundle.main(["--target", "prairielearn", str(tmp_path / "q"), "--source", str(REPO), "-q"]) == 0
        assert (tmp_path / "q" / "info.json").is_file()
        with pytest.raises(SystemExit):
            bundle.main(["--target", "moodle", str(tmp_path / "x")])


# ---------------------------------------------------------------------------
# tests/run_autograder against a fake /grade tree
# ---------------------------------------------------------------------------


def fake_grade(tmp_path: Path, question: Path, files: dict) -> Path:
    """``root/tests`` (the question's tests/) and ``root/student`` holding ``files`` {name: text}, as PrairieLearn mounts them."""
    root = tmp_path / "grade"
    shutil.copytree(question / "tests", root / "tests")
    (root / "student").mkdir()
    for name, text in files.items():
        (root / "student" / name).write_text(text)
    return root


def run_entry(root: Path, **env):
    environment = {**os.environ, "PL_GRADE_ROOT": str(root), "PL_GRADER_PYTHON": sys.executable, **env}
    run = subprocess.run([str(root / "tests" / "run_autograder")], capture_output=True, text=True,
                         env=environment, cwd=root, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = root / "results" / "results.json"
    assert results.is_file(), run.stdout[-2000:] + run.stderr[-3000:]
    doc = json.loads(results.read_text())
    assert_valid_pl(doc)
    return doc, run


def reference_files() -> dict:
    ref = sandbox.reference_dir()
    return {name: (ref / name).read_text() for name in STUDENT_FILES}


def test_entry_point_gives_the_reference_full_marks(question, tmp_path):
    root = fake_grade(tmp_path, question, reference_files())
    doc, run = run_entry(root)
    assert doc["gradable"] is True and doc["score"] == 1.0, [t for t in doc["tests"] if t["points"] < t["max_points"]]
    hidden = [t for t in doc["tests"] if t["name"] == "Hidden checks"]
    assert len(hidden) == 1 and hidden[0]["max_points"] > 0 and hidden[0]["points"] == hidden[0]["max_points"]
    assert len(doc["tests"]) > 20
    assert "Hidden checks" not in run.stdout and "secret inputs" not in run.stdout  # no score table in the log
    assert sorted(p.name for p in (root / "student").iterdir()) == sorted(STUDENT_FILES)  # left alone


def test_entry_point_scores_the_stubs_zero(question, tmp_path):
    nothing = sandbox.Submission({}, list(STUDENT_FILES), "none")
    files = {name: sandbox.source_for(name, nothing) for name in STUDENT_FILES}
    root = fake_grade(tmp_path, question, files)
    doc, _ = run_entry(root, PL_GRADER_ARGS="--visible-only")
    stubbed = [t for t in doc["tests"] if "implement me" in t["output"]]
    assert len(stubbed) >= 15 and all(t["points"] == 0 for t in stubbed)
    assert doc["gradable"] is True and doc["score"] < 0.2


@pytest.mark.parametrize("crash, grader_args", [
    ("raise RuntimeError('boom at import')\n", ""),
    ("import os\nos._exit(3)\n", "--visible-only"),
    ("def broken(:\n", "--visible-only"),
], ids=["raise-at-import", "exit-at-import", "syntax-error"])
def test_entry_point_survives_a_crashing_submission(question, tmp_path, crash, grader_args):
    files = reference_files()
    files["layers.py"] = crash
    root = fake_grade(tmp_path, question, files)
    doc, _ = run_entry(root, PL_GRADER_ARGS=grader_args)
    assert doc["gradable"] is True
    layer_tests = [t for t in doc["tests"] if "layers" in t["description"]]
    assert len(layer_tests) >= 10
    assert [t["name"] for t in layer_tests if t["points"] != 0] == []
    assert all("importing layers.py failed" in t["message"] for t in layer_tests)
    assert 0 < doc["score"] < 1


def test_entry_point_keeps_the_parents_result_against_a_forging_child(question, tmp_path):
    """The child writes a perfect result where the grader writes its own (directly and at exit): it never stays."""
    root = tmp_path / "grade"
    files = reference_files()
    forge = (Path(__file__).with_name("redteam") / "atexit_results" / "layers.py").read_text()
    files["layers.py"] += "\n\n" + forge.replace("@RESULTS@", str(root / "results" / "results.json"))
    root = fake_grade(tmp_path, question, files)
    (root / "results").mkdir()
    (root / "results" / "results.json").write_text('{"score": 1000, "output": "planted before grading"}')
    doc, _ = run_entry(root, PL_GRADER_ARGS="--visible-only")
    assert doc["gradable"] is True and doc["score"] == 1.0 and doc["output"] != "forged"
    assert "planted" not in json.dumps(doc)
    assert not (root / "student" / "results.json").exists()


def test_entry_point_writes_a_result_when_the_grader_cannot_start(question, tmp_path):
    root = fake_grade(tmp_path, question, {"layers.py": "x = 1\n"})
    (root / "results").mkdir()
    (root / "results" / "results.json").write_text('{"score": 1.0, "output": "planted"}')
    doc, run = run_entry(root, PL_GRADER_PYTHON=str(tmp_path / "no-such-python"))
    assert doc["gradable"] is False and doc["tests"] == []
    assert "not graded" in doc["message"] and "exit status 127" in doc["message"]
    assert "not graded" in run.stderr


def test_entry_point_writes_a_result_when_the_grader_times_out(question, tmp_path):
    root = fake_grade(tmp_path, question, {"layers.py": "x = 1\n"})
    hang = tmp_path / "hanging-python"
    hang.write_text(f'#!/bin/sh\nif [ "$2" = "-m" ]; then exec sleep 60; fi\nexec {sys.executable} "$@"\n')
    hang.chmod(0o755)
    doc, _ = run_entry(root, PL_GRADER_PYTHON=str(hang), PL_GRADER_LIMIT="1")
    assert doc["gradable"] is False and "time limit" in doc["message"]


@pytest.mark.parametrize("written", ["not json", '{"gradable": true, "score": 1.5, "tests": []}',
                                     '{"gradable": true, "score": 1, "tests": [{"name": "x", "points": "1"}]}',
                                     '{"gradable": "yes", "score": 1}'],
                         ids=["not-json", "score-above-1", "string-points", "gradable-not-bool"])
def test_entry_point_replaces_an_invalid_result(question, tmp_path, written):
    root = fake_grade(tmp_path, question, {"layers.py": "x = 1\n"})
    liar = tmp_path / "lying-python"
    # A stand-in grader that exits 0 but writes something invalid where results.json goes ($8: --json's value).
    liar.write_text(f"#!/bin/sh\nif [ \"$2\" = \"-m\" ]; then printf '%s' '{written}' > \"$8\"; exit 0; fi\n"
                    f'exec {sys.executable} "$@"\n')
    liar.chmod(0o755)
    doc, _ = run_entry(root, PL_GRADER_PYTHON=str(liar))
    assert doc["gradable"] is False and "exit status 0" in doc["message"]


@pytest.mark.slow
def test_install_sh_installs_the_package_that_the_entry_point_then_uses(question, tmp_path, offline_venv,
                                                                       install_env):
    """install.sh (what the image's Dockerfile runs) into an offline venv; then grade with that venv."""
    venv = tmp_path / "opt" / "venv"
    python = offline_venv(venv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PL_", "CONVNET_"))}
    env.update(install_env, CONVNET_VENV=str(venv),
               CONVNET_PIP_ARGS="--no-build-isolation --no-deps --no-index --no-cache-dir")
    install = subprocess.run(["bash", str(question / "image" / "install.sh")], capture_output=True, text=True,
                             env=env, cwd=tmp_path, timeout=900)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-4000:]
    assert "installed with its compiled fast path" in install.stdout
    probe = subprocess.run([str(python), "-I", "-c", "import convnet, numpy, grader.checks.hidden; "
                            "print(convnet.__file__); print(numpy.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    installed, numpy_file = (Path(line) for line in probe.stdout.split())
    installed = installed.parent
    assert installed.is_relative_to(venv)
    # The reference and the hidden checks are root's only; numpy stays readable for the child (uid 65534).
    for secret in (installed / "layers.py", installed.parent / "grader" / "checks" / "hidden.py",
                   installed, installed.parent / "grader"):
        assert secret.stat().st_mode & 0o077 == 0, secret
    assert numpy_file.stat().st_mode & stat.S_IROTH
    root = fake_grade(tmp_path, question, reference_files())
    doc, _ = run_entry(root, PL_GRADER_PYTHON=str(python))
    assert doc["gradable"] is True and doc["score"] == 1.0
    assert [t["name"] for t in doc["tests"]][-1] == "Hidden checks"

