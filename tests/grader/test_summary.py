"""The gradebook: gradebook.csv, summary.md and scores.png from a folder of results, bad files included."""
from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grader import report, summary
from grader.prairielearn import to_prairielearn


def gs_test(name, score, max_score, diagnosis=None, status=None):
    extra = {"seconds": 0.1}
    if diagnosis is not None:
        extra["diagnosis"] = diagnosis
    return {"name": name, "number": "1", "score": score, "max_score": max_score,
            "status": status or ("passed" if score >= max_score else "failed"), "output": "msg",
            "visibility": "visible", "tags": [], "extra_data": extra}


def gs_doc(tests):
    return {"score": sum(t["score"] for t in tests), "execution_time": 1.0, "output": "Score",
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


# Three graded submissions with hand-checked numbers: totals 3, 4 and 6 of 6.
GRADED = {
    "alice": gs_doc([gs_test("c1", 1, 1), gs_test("c2", 2, 2), gs_test("c3", 0, 3, diagnosis="x")]),
    "bob": gs_doc([gs_test("c1", 1, 1), gs_test("c2", 0, 2, diagnosis=["x", " y "]), gs_test("c3", 3, 3)]),
    "carol": gs_doc([gs_test("c1", 1, 1, diagnosis="passing checks' diagnoses are not counted"),
                     gs_test("c2", 2, 2), gs_test("c3", 3, 3)]),
}


@pytest.fixture
def results_dir(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    for name, doc in GRADED.items():
        (d / f"{name}.json").write_text(json.dumps(doc))
    (d / "dave.json").write_text(json.dumps(report.failure_json("RuntimeError: the sandbox broke\ntraceback")))
    (d / "erin.json").write_text('{"score": 3, "tests": [')
    (d / "frank.json").write_text("[1, 2]")
    (d / "grace.json").write_text(json.dumps({"score": 1, "tests": [{"name": "c1", "score": "1", "max_score": 1}]}))
    (d / "=cmd.json").write_text(json.dumps(GRADED["carol"]))
    (d / "notes.txt").write_text("not a results file")
    return d


def test_gradebook_csv(results_dir, tmp_path):
    out = summary.summarize(results_dir, tmp_path / "out", log=lambda m: None)
    with open(out["csv"], newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["submission", "total", "max", "percent", "status", "c1", "c2", "c3", "problem"]
    by_name = {r[0]: r for r in rows[1:]}
    assert sorted(by_name) == ["'=cmd", "alice", "bob", "carol", "dave", "erin", "frank", "grace"]
    assert by_name["alice"] == ["alice", "3", "6", "50", "graded", "1", "2", "0", ""]
    assert by_name["bob"] == ["bob", "4", "6", "66.67", "graded", "1", "0", "3", ""]
    assert by_name["carol"][1:5] == ["6", "6", "100", "graded"]
    assert by_name["'=cmd"][1:5] == ["6", "6", "100", "graded"]  # a spreadsheet never runs it as a formula
    assert by_name["dave"] == ["dave", "", "", "", "grader failure", "", "", "", "RuntimeError: the sandbox broke"]
    assert by_name["erin"][4] == "unreadable" and by_name["erin"][-1].startswith("not valid JSON")
    assert by_name["frank"][-1] == "the top level is a JSON list, not an object"
    assert by_name["grace"][-1] == "tests[0] ('c1') has no numeric score and maximum"


def test_summary_markdown(results_dir, tmp_path):
    out = summary.summarize(results_dir, tmp_path / "out", log=lambda m: None)
    text = out["markdown"].read_text()
    assert "8 results files in" in text and "4 graded, 1 grader failures, 3 unreadable" in text
    # Totals 3, 4, 6, 6 of 6.
    assert f"| mean | {statistics.fmean([3, 4, 6, 6]):.2f} | {statistics.fmean([50, 200 / 3, 100, 100]):.1f} % |" \
        in text
    assert "| median | 5.00 | 83.3 % |" in text
    assert "| minimum | 3.00 | 50.0 % |" in text and "| maximum | 6.00 | 100.0 % |" in text
    assert "| submissions with full marks (6 points) | 2 of 4 | |" in text
    assert "| 50-60 | 1 |" in text and "| 60-70 | 1 |" in text and "| 90-100 (incl.) | 2 |" in text
    checks = text.split("## Checks", 1)[1].split("##", 1)[0]
    rows = [line for line in checks.splitlines() if line.startswith("| c") and not line.startswith("| check")]
    # Hardest first: c2 and c3 pass 3 of 4, c1 4 of 4.
    assert rows == ["| c2 | 2 | 3/4 | 75.0 % | 1.50 |", "| c3 | 3 | 3/4 | 75.0 % | 2.25 |",
                    "| c1 | 1 | 4/4 | 100.0 % | 1.00 |"]
    causes = text.split("## Likely causes of failures", 1)[1].split("##", 1)[0]
    rows = [line for line in causes.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert rows == ["| 2 | 2 | x | c3, c2 |", "| 1 | 1 | y | c2 |"]  # ties: in the order first seen
    assert "passing checks" not in text
    not_graded = text.split("## Not graded", 1)[1]
    assert "- `dave.json`: grader failure: RuntimeError: the sandbox broke" in not_graded
    for name in ("erin", "frank", "grace"):
        assert f"- `{name}.json`: unreadable: " in not_graded


def test_scores_png(results_dir, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib draws scores.png")
    import matplotlib.image

    out = summary.summarize(results_dir, tmp_path / "out", log=lambda m: None)
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(out["png"])
    assert pixels.shape[:2] == (400, 700)
    bar = (abs(pixels[..., 0] - 0x4C / 255) < 0.02) & (abs(pixels[..., 1] - 0x72 / 255) < 0.02) & \
          (abs(pixels[..., 2] - 0xB0 / 255) < 0.02)
    assert bar.sum() > 1000  # the histogram's bars are drawn


def test_no_graded_result_still_writes_all_three(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "x.json").write_text(json.dumps(report.failure_json("boom")))
    out = summary.summarize(d, log=lambda m: None)
    assert out["csv"].parent == d and out["markdown"].is_file()
    text = out["markdown"].read_text()
    assert "No graded submissions." in text and "No checks were graded." in text
    assert "- `x.json`: grader failure: boom" in text


def test_without_matplotlib_the_png_is_skipped(results_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    messages = []
    out = summary.summarize(results_dir, tmp_path / "out", log=messages.append)
    assert out["png"] is None and not (tmp_path / "out" / "scores.png").exists()
    assert "matplotlib is not installed" in messages[0]


def test_prairielearn_results_are_read_in_points(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    doc = to_prairielearn(GRADED["bob"])
    (d / "bob.json").write_text(json.dumps(doc))
    (d / "failed.json").write_text(json.dumps(to_prairielearn(report.failure_json("boom"))))
    records = {r.name: r for r in summary.load_results(d)}
    assert records["bob"].status == summary.GRADED
    assert (records["bob"].score, records["bob"].max_score) == (4, 6)
    assert records["failed"].status == summary.FAILED


def test_duplicate_check_names_get_their_own_columns(tmp_path):
    record = summary.load_record(_write(tmp_path, gs_doc([gs_test("c", 1, 1), gs_test("c", 0, 2)])))
    assert record.checks == {"c": (1, 1, True), "c (2)": (0, 2, False)}


def _write(tmp_path, doc):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(doc))
    return path


def test_cli(results_dir, tmp_path):
    run = subprocess.run([sys.executable, "-m", "grader", "summary", str(results_dir)], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "8 results (4 graded, 1 grader failures, 3 unreadable)" in run.stdout
    assert (results_dir / "gradebook.csv").is_file() and (results_dir / "summary.md").is_file()
    missing = subprocess.run([sys.executable, "-m", "grader", "summary", str(tmp_path / "nope")],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert missing.returncode == 1 and "is not a directory" in missing.stderr
    bad = subprocess.run([sys.executable, "-m", "grader", "summary", str(results_dir), "--top", "0"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "--top must be at least 1, got 0" in bad.stderr


def test_real_results_of_the_grader(tmp_path):
    """The grader's own results.json (reference and a stubbed layers.py, visible checks) summarised."""
    from grader import sandbox
    from grader.__main__ import main

    subs = tmp_path / "subs"
    ref = sandbox.reference_dir()
    nothing = sandbox.Submission({}, ["layers.py"], "none")
    for name in ("reference", "stubbed"):
        (subs / name).mkdir(parents=True)
        for f in sandbox.graded_files():
            (subs / name / f).write_text(sandbox.source_for(f, nothing) if name == "stubbed" and f == "layers.py"
                                         else (ref / f).read_text())
    out = tmp_path / "out"
    assert main(["--batch", str(subs), str(out), "--visible-only", "--seed", "5", "--quiet"]) == 0
    result = summary.summarize(out, log=lambda m: None)
    records = {r.name: r for r in result["records"]}
    ref_doc = json.loads((out / "reference.json").read_text())
    assert records["reference"].score == records["reference"].max_score == ref_doc["score"] > 0
    assert records["stubbed"].score < records["reference"].score
    header = next(csv.reader(open(result["csv"])))
    assert header[5:-1] == [t["name"] for t in ref_doc["tests"]]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["score", "max_score", "status", "name", "tests", "output", "extra_data", "diagnosis",
                         "points", "max_points", "gradable"]), children, max_size=6),
    max_leaves=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(json_values | st.binary(max_size=30), min_size=1, max_size=4))
def test_any_folder_of_files_is_summarised(tmp_path, docs):
    d = tmp_path / "fuzz"
    if d.exists():
        for p in d.iterdir():
            p.unlink()
    d.mkdir(exist_ok=True)
    for i, doc in enumerate(docs):
        data = doc if isinstance(doc, bytes) else json.dumps(doc, allow_nan=True).encode()
        (d / f"s{i}.json").write_bytes(data)
    records = summary.load_results(d)
    assert [r.name for r in records] == [f"s{i}" for i in range(len(docs))]
    for r in records:
        assert r.status in (summary.GRADED, summary.FAILED, summary.UNREADABLE)
        assert (r.status == summary.UNREADABLE) == bool(r.problem) or r.status == summary.FAILED
    header, rows = summary.gradebook(records)
    assert len(rows) == len(docs) and all(len(row) == len(header) for row in rows)
    summary.markdown(records)
