"""Grading on a Dask cluster: same results as --jobs for the same seed, a dying worker replaced, bad setups refused."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from grader import cluster, sandbox
from grader.__main__ import main

distributed = pytest.importorskip("distributed", reason="the cluster extra (dask[distributed]) is not installed")

SEED = 11
ARGS = ["--seed", str(SEED), "--visible-only", "--timeout", "5", "--quiet"]
REDTEAM = ("half_right", "nan_output", "exit_import")


def normalized(doc: dict) -> dict:
    """A results dict without what differs between two runs of the same grading: times, a failure's traceback."""
    doc = json.loads(json.dumps(doc))
    doc.pop("execution_time", None)
    for test in doc.get("tests", []):
        test.get("extra_data", {}).pop("seconds", None)
    if not doc.get("tests"):
        doc["output"] = doc.get("output", "").splitlines()[:2]
    return doc


def read_all(outdir: Path) -> dict:
    return {p.name: normalized(json.loads(p.read_text())) for p in sorted(outdir.glob("*.json"))}


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory):
    """The reference, three red-team submissions (one as a .zip), and a file that is not a submission."""
    root = tmp_path_factory.mktemp("class")
    ref = sandbox.reference_dir()
    for name in ("reference",) + REDTEAM:
        text = (ref / "layers.py").read_text()
        if name != "reference":
            text += "\n\n" + (Path(__file__).with_name("redteam") / name / "layers.py").read_text()
        files = {f: (ref / f).read_text() for f in sandbox.STUDENT_FILES}
        files["layers.py"] = text
        if name == "nan_output":
            with zipfile.ZipFile(root / f"{name}.zip", "w") as zf:
                for f, t in files.items():
                    zf.writestr(f"convnet/{f}", t)
        else:
            (root / name).mkdir()
            for f, t in files.items():
                (root / name / f).write_text(t)
    (root / "notes.txt").write_text("not a submission\n")
    return root


@pytest.fixture(scope="module")
def jobs_results(class_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs")
    assert main(["--batch", str(class_dir), str(out), "--jobs", "2", *ARGS]) == 1  # notes.txt cannot be graded
    results = read_all(out)
    assert sorted(results) == ["exit_import.json", "half_right.json", "nan_output.json", "notes.json",
                               "reference.json"]
    ref = results["reference.json"]
    assert ref["score"] == sum(t["max_score"] for t in ref["tests"]) > 0
    assert results["half_right.json"]["score"] < ref["score"] and results["notes.json"]["tests"] == []
    return results


def test_local_cluster_gives_the_same_results_as_jobs(class_dir, jobs_results, tmp_path, capsys):
    out = tmp_path / "dask"
    assert main(["--batch", str(class_dir), str(out), "--scheduler", "local:2", *ARGS]) == 1
    assert read_all(out) == jobs_results
    err = capsys.readouterr().err
    assert "notes.txt: grader failed" in err


@pytest.fixture(scope="module")
def local_cluster():
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as lc, distributed.Client(lc) as client:
        yield lc, client


def test_a_worker_that_dies_while_grading_is_replaced(class_dir, jobs_results, local_cluster, tmp_path):
    lc, client = local_cluster
    out = tmp_path / "dask"
    status = {}
    subs = sorted(p for p in class_dir.iterdir() if p.suffix != ".txt")
    grading = threading.Thread(target=lambda: status.setdefault("code", cluster.grade_batch(
        subs, out, scheduler=lc.scheduler_address, seed=SEED, visible_only=True, timeout=5.0, quiet=True)))
    pids = client.run(os.getpid)
    grading.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline and grading.is_alive():
        busy = [addr for addr, keys in client.processing().items() if keys and addr in pids]
        if busy:
            killed = busy[0]
            time.sleep(0.5)  # well inside the task: grading a submission takes seconds
            os.kill(pids[killed], signal.SIGKILL)
        time.sleep(0.05)
    grading.join(timeout=240)
    assert killed is not None, "no task was seen running on a worker"
    assert not grading.is_alive() and status["code"] == 0
    expected = {k: v for k, v in jobs_results.items() if k != "notes.json"}
    assert read_all(out) == expected
    client.wait_for_workers(2, timeout=60)
    assert pids[killed] not in client.run(os.getpid).values()  # the nanny started a new process


def test_workers_with_another_grader_are_refused(class_dir, local_cluster, tmp_path, monkeypatch, capsys):
    lc, _ = local_cluster
    # This process (the client) now sees other sources than the workers do.
    monkeypatch.setattr(cluster, "fingerprint", lambda: "edited")
    code = cluster.grade_batch([class_dir / "reference"], tmp_path / "out", scheduler=lc.scheduler_address,
                               quiet=True)
    assert code == 2
    assert "different convnet/grader" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address, message", [("local:0", "positive number of workers, got 'local:0'"),
                                              ("local:two", "got 'local:two'"),
                                              ("tcp://127.0.0.1:9", "could not use the Dask scheduler")])
def test_an_unusable_scheduler_is_refused(class_dir, tmp_path, monkeypatch, capsys, address, message):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 1.0)
    code = main(["--batch", str(class_dir), str(tmp_path / "out"), "--scheduler", address, "--quiet"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_scheduler_needs_an_output_folder(tmp_path, capsys):
    assert main([str(tmp_path), "--scheduler", "local:1"]) == 2
    assert "--scheduler needs --batch" in capsys.readouterr().err


def test_without_dask_the_option_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)
    assert cluster.grade_batch([tmp_path], tmp_path / "out", scheduler="local:1") == 2
    assert "pip install 'convnet[cluster]'" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# snapshots: what a worker rebuilds is graded exactly as the original
# ---------------------------------------------------------------------------


def test_a_directory_snapshot_rebuilds_what_the_grader_reads(tmp_path):
    ref = sandbox.reference_dir()
    sub = tmp_path / "student"
    (sub / "convnet").mkdir(parents=True)
    (sub / "layers.py").write_text("# the top-level copy loses to convnet/layers.py\n")
    (sub / "convnet" / "layers.py").write_text((ref / "layers.py").read_text())
    os.symlink("/etc/hostname", sub / "models.py")
    os.mkfifo(sub / "optim.py")
    (sub / "sandwich.py").write_bytes(b"\xff\xfe not utf-8")
    (sub / "solver.py").write_bytes(b"#" * (sandbox.submission.MAX_SOURCE_BYTES + 10))
    (sub / ".git").mkdir()
    (sub / ".git" / "models.py").write_text("ignored: a hidden directory\n")
    (sub / "README.md").write_text("not shipped\n")
    snap = cluster.snapshot(sub)
    assert snap["kind"] == "dir"
    names = [rel for rel, _ in snap["entries"]]
    assert "README.md" not in names and "convnet/layers.py" in names
    assert dict(snap["entries"])["models.py"] is None and dict(snap["entries"])["optim.py"] is None
    assert len(dict(snap["entries"])["solver.py"]) == sandbox.submission.MAX_SOURCE_BYTES + 1
    (tmp_path / "worker").mkdir()
    rebuilt = cluster.materialize(snap, tmp_path / "worker")
    assert rebuilt == tmp_path / "worker" / "student"
    original, copy = sandbox.load_submission(sub), sandbox.load_submission(rebuilt)
    assert copy.files == original.files and copy.missing == original.missing and copy.notes == original.notes
    assert original.files["layers.py"] == (ref / "layers.py").read_text()
    # Missing graded files are listed; sandwich.py and solver.py hold no stubs, so the reference's are used.
    assert {"models.py", "optim.py"} <= set(original.missing)
    assert not {"sandwich.py", "solver.py"} & set(original.files)
    assert len(original.notes) == 4


def test_a_zip_snapshot_is_its_bytes(tmp_path):
    path = tmp_path / "alice.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("convnet/layers.py", "x = 1\n")
    snap = cluster.snapshot(path)
    assert snap == {"name": "alice.zip", "kind": "zip", "data": path.read_bytes()}
    (tmp_path / "w").mkdir()
    assert cluster.materialize(snap, tmp_path / "w").read_bytes() == path.read_bytes()
    (tmp_path / "other.txt").write_text("x")
    assert cluster.snapshot(tmp_path / "other.txt") == {"name": "other.txt", "kind": "other"}


@pytest.mark.parametrize("rel", ["../layers.py", "/etc/layers.py", "a//layers.py", "./layers.py"])
def test_materialize_refuses_paths_outside_its_directory(tmp_path, rel):
    with pytest.raises(ValueError, match="not a plain relative path"):
        cluster.materialize({"name": "s", "kind": "dir", "entries": [(rel, b"x")]}, tmp_path)
