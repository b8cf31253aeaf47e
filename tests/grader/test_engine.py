"""The grader end to end: full marks for the reference on random seeds, layouts, missing files, failures."""
from __future__ import annotations

import json
import secrets
import time
import zipfile

import pytest

from grader import checks as catalogue
from grader import engine, report, sandbox
from grader.__main__ import main
from grader.checks import public

TEST_KEYS = {"name", "number", "score", "max_score", "status", "output", "visibility", "tags", "extra_data"}


def assert_schema(data):
    for key in ("score", "execution_time", "output", "visibility", "stdout_visibility", "tests"):
        assert key in data
    assert isinstance(data["score"], (int, float)) and isinstance(data["execution_time"], (int, float))
    for t in data["tests"]:
        assert set(t) == TEST_KEYS
        assert t["status"] in ("passed", "failed")
        assert t["visibility"] in ("visible", "hidden")
        assert 0 <= t["score"] <= t["max_score"] or t["max_score"] == 0
        assert isinstance(t["tags"], list) and isinstance(t["extra_data"], dict)
    assert abs(data["score"] - sum(t["score"] for t in data["tests"])) < 1e-9


@pytest.mark.parametrize("run", range(5))
def test_reference_scores_full_marks_end_to_end_on_random_seeds(run, tmp_path):
    seed = secrets.randbits(63)
    out = tmp_path / "results.json"
    t0 = time.perf_counter()
    assert main(["--json", str(out), "--quiet", "--seed", str(seed)]) == 0
    elapsed = time.perf_counter() - t0
    data = json.loads(out.read_text())
    assert_schema(data)
    total = sum(t["max_score"] for t in data["tests"])
    failed = [(t["name"], t["output"][:500]) for t in data["tests"] if t["status"] != "passed"]
    assert failed == [], f"seed {seed}"
    assert total > 100 and data["score"] == total
    assert data["extra_data"]["secret_seed"] == seed
    assert elapsed < 60, f"grading the reference took {elapsed:.1f} s"


def test_visible_only_reference_and_schema(tmp_path):
    out = tmp_path / "r.json"
    assert main(["--json", str(out), "--visible-only", "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert_schema(data)
    assert {t["visibility"] for t in data["tests"]} == {"visible"}
    assert len(data["tests"]) == len(catalogue.visible_checks())
    assert data["score"] == sum(t["max_score"] for t in data["tests"])
    assert [t["number"] for t in data["tests"]] == [str(i) for i in range(1, len(data["tests"]) + 1)]


@pytest.mark.parametrize("layout", ["flat", "package", "zip"])
def test_layouts_and_missing_files(layout, make_submission, tmp_path):
    """layers.py or convnet/layers.py, directory or .zip; a missing models.py costs its checks only."""
    files = ("layers.py", "optim.py")
    path = make_submission(None, files=files, layout="package" if layout == "package" else "flat")
    if layout == "zip":
        zpath = tmp_path / "sub.zip"
        with zipfile.ZipFile(zpath, "w") as z:
            for f in files:
                z.write(path / f, f"mysub/convnet/{f}")
        path = zpath
    sub = sandbox.load_submission(path)
    assert sorted(sub.files) == sorted(files)
    assert sub.missing == ["models.py"]  # sandwich.py and solver.py hold no stubs: the reference's are used
    graded = engine.grade(sub, visible_only=True, jobs=2, timeout=20, secret_seed=7)
    for v in graded.verdicts:
        check = next(c for c in catalogue.visible_checks() if c.name == v.name)
        if check.file in files:
            assert v.score == v.max_score, (v.name, v.message)
        else:
            assert v.score == 0 and "models.py is missing" in v.message


def test_the_documented_upload_set_scores_full_marks(make_submission):
    """layers.py, models.py and optim.py (the files with stubs) are all a student uploads."""
    assert sandbox.graded_files() == ("layers.py", "models.py", "optim.py")
    path = make_submission(None, files=sandbox.graded_files())
    graded = engine.grade(sandbox.load_submission(path), jobs=2, timeout=30, secret_seed=11,
                          select=lambda c: not c.timing)
    assert [(v.name, v.message) for v in graded.verdicts if not v.passed] == []
    assert graded.score == graded.max_score


def test_missing_layers_gets_stubs_and_other_files_still_graded(make_submission):
    path = make_submission(None, files=("optim.py", "models.py"))
    graded = engine.grade(sandbox.load_submission(path), jobs=2, timeout=20, secret_seed=3,
                          select=lambda c: c.file in ("layers.py", "optim.py", "models.py") and not c.timing)
    for v in graded.verdicts:
        check = next(c for c in catalogue.all_checks() if c.name == v.name)
        if check.file == "layers.py":
            assert v.score == 0 and "layers.py is missing" in v.message
        else:  # models are graded on the served reference layers, so they do not need the student's
            assert v.passed, (v.name, v.message)


def test_source_of_a_missing_graded_file_is_its_stubs():
    sub = sandbox.Submission({}, ["layers.py"], "none")
    text = sandbox.source_for("layers.py", sub)
    assert 'raise NotImplementedError("Conv.forward: implement me")' in text
    compile(text, "layers.py", "exec")
    assert sandbox.source_for("sandwich.py", sub) == (sandbox.reference_dir() / "sandwich.py").read_text()


def test_results_json_written_when_the_grader_crashes(tmp_path, monkeypatch):
    def crash(*a, **k):
        raise RuntimeError("internal failure for the test")

    monkeypatch.setattr(engine, "grade", crash)
    out = tmp_path / "results.json"
    assert main(["--json", str(out), "--quiet"]) == 1
    data = json.loads(out.read_text())
    assert data["score"] == 0 and data["tests"] == [] and "internal failure for the test" in data["output"]
    assert "visibility" in data and "execution_time" in data


def test_check_error_in_parent_is_reported_not_raised(monkeypatch):
    check = catalogue.visible_checks()[0]

    def broken(*a, **k):
        raise ValueError("broken expected")

    monkeypatch.setattr(type(check), "expected", broken)
    graded = engine.grade(sandbox.reference_submission(), visible_only=True, timeout=20,
                          select=lambda c: c.name == check.name)
    (v,) = graded.verdicts
    assert v.score == 0 and "internal grader error" in v.message


def test_release_mode_reads_public_expected(tmp_path, monkeypatch):
    """Without the hidden catalogue the visible checks run on public inputs with shipped expected values."""
    path = public.build_public_expected(tmp_path / "public_expected.npz")
    monkeypatch.setattr(public, "PUBLIC_EXPECTED", path)
    monkeypatch.setattr(catalogue, "release_mode", lambda: True)
    calls = []
    for cls in {type(c) for c in catalogue.visible_checks()}:
        original = cls.expected
        monkeypatch.setattr(cls, "expected", lambda self, prep, o=original: calls.append(self.name) or o(self, prep))
    graded = engine.grade(sandbox.reference_submission(), jobs=2, timeout=20)
    assert graded.release and graded.visible_only
    assert len(graded.verdicts) == len(catalogue.visible_checks())
    assert calls == []  # the reference is never asked
    assert [(v.name, v.message) for v in graded.verdicts if not v.passed] == []


def test_instructor_mode_draws_visible_inputs_from_the_secret_seed():
    check = next(c for c in catalogue.visible_checks() if c.name == "Conv.forward")
    a = check.prepare(check.rng(1, public=False), "c.").inputs["c.x"]
    b = check.prepare(check.rng(2, public=False), "c.").inputs["c.x"]
    p = check.prepare(check.rng(1, public=True), "c.").inputs["c.x"]
    assert a.shape == b.shape == p.shape
    assert not (a == b).all() and not (a == p).all()


@pytest.mark.parametrize("layers", [
    {"landlock": False, "seccomp": True, "drop_caps": True, "uid_drop": False},
    {"landlock": False, "seccomp": False, "drop_caps": False, "uid_drop": False},
])
def test_fallback_layers_still_grade(layers):
    """Without Landlock (or without any kernel layer) the children still run and the reference passes."""
    graded = engine.grade(sandbox.reference_submission(), visible_only=True, jobs=2, timeout=20, layers=layers,
                          select=lambda c: c.group in ("Conv", "models", "optim"))
    assert graded.verdicts and all(v.passed for v in graded.verdicts)
    data = report.results_json(graded, 1.0)
    assert "Landlock is unavailable" in data["output"]


def test_a_layer_bug_costs_only_layer_checks(make_submission, tmp_path):
    """Linear.forward returning twice the answer: its checks fail; models (on served layers) do not."""
    path = make_submission(None, files=sandbox.graded_files())
    layers = path / "layers.py"
    layers.write_text(layers.read_text().replace("out = x.reshape(x.shape[0], -1) @ w + b",
                                                 "out = 2 * (x.reshape(x.shape[0], -1) @ w + b)"))
    graded = engine.grade(sandbox.load_submission(path), jobs=2, timeout=30, secret_seed=5,
                          select=lambda c: not c.timing)
    lost = {v.name: v.target for v in graded.verdicts if not v.passed}
    assert lost and set(lost.values()) <= {"Linear.forward", "end-to-end"}, lost
    assert any(t == "Linear.forward" for t in lost.values())
