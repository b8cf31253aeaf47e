"""Grade a class of submissions with ``--jobs N`` and on a local Dask cluster of N workers; compare times and grades.

Usage::

    python benchmarks/bench_cluster.py [--submissions 40] [--workers 2] [--seed 1] [--json out.json]
                                       [--visible-only] [--keep DIR]

The class is copies of the reference plus one submission per red-team case
listed in ``REDTEAM`` (the reference's layers.py with one layer redefined, as in
tests/grader/redteam/). Both runs are ``python -m grader --batch`` in a child
process with the same secret seed, timed from start to exit (the cluster run
includes starting the LocalCluster). Grades are compared check by check (score
and status; outputs differ where they print measured times).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import convnet

REPO = Path(__file__).resolve().parents[1]
REDTEAM_DIR = REPO / "tests" / "grader" / "redteam"
REDTEAM = ("half_right", "nan_output", "exit_import", "monkeypatch", "lying_eq", "fast_delegate")
STUDENT_FILES = ("layers.py", "sandwich.py", "models.py", "optim.py", "solver.py")


def make_class(root: Path, n: int) -> list:
    """``n`` submission directories under ``root``: the red-team cases, then copies of the reference."""
    ref = Path(convnet.__file__).resolve().parent
    site = str(Path(np.__file__).resolve().parent.parent)
    names = [f"redteam_{case}" for case in REDTEAM[:n]] + [f"ref_{i:03d}" for i in range(max(0, n - len(REDTEAM)))]
    for name in names:
        (root / name).mkdir(parents=True)
        for f in STUDENT_FILES:
            text = (ref / f).read_text()
            if name.startswith("redteam_") and f == "layers.py":
                extra = (REDTEAM_DIR / name[len("redteam_"):] / "layers.py").read_text()
                extra = (extra.replace("@RESULTS@", str(root / "forged.json")).replace("@REFDIR@", str(ref))
                         .replace("@SITE@", site))
                text += "\n\n# ---- red team ----\n" + extra
            (root / name / f).write_text(text)
    return names


def run(args: list) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "grader", *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"python -m grader {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def grades(outdir: Path) -> dict:
    out = {}
    for path in sorted(outdir.glob("*.json")):
        doc = json.loads(path.read_text())
        out[path.stem] = [(t["name"], t["score"], t["status"]) for t in doc["tests"]]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--submissions", type=int, default=40)
    p.add_argument("--workers", type=int, default=2, help="--jobs N and local:N (default 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--visible-only", action="store_true")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--keep", metavar="DIR", help="copy both folders of results here (DIR/jobs, DIR/dask)")
    args = p.parse_args(argv)
    extra = ["--seed", str(args.seed), "--quiet"] + (["--visible-only"] if args.visible_only else [])
    load = os.getloadavg()[0]
    print(f"{platform.node()}: {os.cpu_count()} CPUs, load average {load:.1f}; {args.submissions} submissions "
          f"({min(len(REDTEAM), args.submissions)} red-team), {args.workers} at a time")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        tmp = Path(tmp)
        make_class(tmp / "class", args.submissions)
        times = {
            f"--jobs {args.workers}": run(["--batch", str(tmp / "class"), str(tmp / "jobs"),
                                           "--jobs", str(args.workers), *extra]),
            f"--scheduler local:{args.workers}": run(["--batch", str(tmp / "class"), str(tmp / "dask"),
                                                      "--scheduler", f"local:{args.workers}", *extra]),
        }
        same = grades(tmp / "jobs") == grades(tmp / "dask")
        scores = sorted(sum(s for _, s, _ in g) for g in grades(tmp / "jobs").values())
        if args.keep:
            for name in ("jobs", "dask"):
                shutil.copytree(tmp / name, Path(args.keep) / name, dirs_exist_ok=True)
    print(f"{'mode':28} {'wall s':>8} {'s / submission':>15}")
    for mode, t in times.items():
        print(f"{mode:28} {t:8.1f} {t / args.submissions:15.2f}")
    print(f"grades identical check by check: {same}; totals from {scores[0]:g} to {scores[-1]:g}")
    if args.json:
        Path(args.json).write_text(json.dumps({"times": times, "identical": same, "submissions": args.submissions,
                                               "workers": args.workers, "load": load}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
