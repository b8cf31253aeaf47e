"""``python -m grader`` (also ``convnet-grade``): grade submissions, print a table, write results.json.

Usage::

    python -m grader                         # grade the bundled reference
    python -m grader sub/ --json results.json
    python -m grader sub.zip --visible-only  # what students run locally
    python -m grader a/ b.zip c/ --jobs 2 --json-dir OUT/   # one OUT/<name>.json each
    python -m grader --batch SUBMISSIONS/ OUT/ --jobs 2     # every entry of SUBMISSIONS/
    python -m grader --explain "Conv.forward"                # a visible check's inputs and call, as code
    python -m grader sub/ --format prairielearn --json results.json   # PrairieLearn's results format
    python -m grader --batch SUBMISSIONS/ OUT/ --scheduler local:4   # on a Dask cluster (grader.cluster)
    python -m grader release OUT/            # the student starter
    python -m grader bundle OUT.zip          # the Gradescope autograder
    python -m grader bundle --target prairielearn OUT/   # a PrairieLearn question
    python -m grader summary OUT/            # gradebook.csv, summary.md, scores.png of a folder of results

The exit code is 0 whenever grading completed, whatever the score; 2 for bad
usage; 1 when the grader itself failed (a minimal results.json is still written).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Each subcommand lives in its own module exposing main(argv) -> int; imported lazily.
SUBCOMMANDS = {
    "release": ("grader.release", "write the student starter (python -m grader release OUT/)"),
    "bundle": ("grader.bundle", "write the Gradescope autograder zip, or a PrairieLearn question "
                                "(python -m grader bundle OUT.zip | --target prairielearn OUT/)"),
    "summary": ("grader.summary", "gradebook.csv, summary.md and scores.png of a folder of results"),
}


def _parser():
    epilog = "subcommands:\n" + "\n".join(f"  {name:9s} {help_}" for name, (_, help_) in SUBCOMMANDS.items())
    p = argparse.ArgumentParser(prog="python -m grader", description="Grade convnet submissions in a sandbox.",
                                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("submissions", nargs="*", help="directory or .zip (default: the bundled reference)")
    p.add_argument("--json", metavar="PATH", help="write Gradescope's results.json here (one submission)")
    p.add_argument("--json-dir", metavar="DIR", help="with several submissions: DIR/<name>.json each")
    p.add_argument("--batch", nargs=2, metavar=("DIR", "OUTDIR"), help="grade every entry of DIR into OUTDIR")
    p.add_argument("--visible-only", action="store_true", help="run only the visible checks")
    p.add_argument("--explain", metavar="CHECK", help="print a visible check's public inputs and call as code")
    p.add_argument("--jobs", type=int, default=2, help="children (or submissions) run at once (default 2)")
    p.add_argument("--timeout", type=float, default=30.0, help="wall-clock seconds per child (default 30)")
    p.add_argument("--seed", type=int, default=None, help="secret seed (default: a fresh random one)")
    p.add_argument("--brief", action="store_true", help="the score table only, without each failure's feedback")
    p.add_argument("--quiet", action="store_true", help="no table and no progress bar")
    p.add_argument("--format", choices=("gradescope", "prairielearn"), default="gradescope",
                   help="results format written by --json/--json-dir (default gradescope)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="with --batch/--json-dir: grade on this Dask scheduler, or local:N (a LocalCluster of N workers)")
    return p


def _progress_bar(label: str, quiet: bool):
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = {"b": None}
    lock = threading.Lock()

    def update(done, total, name):
        with lock:
            if bar["b"] is None:
                bar["b"] = tqdm(total=total, desc=label, file=sys.stderr, leave=False)
            bar["b"].set_postfix_str(str(name)[:30])
            bar["b"].update(done - bar["b"].n)

    def close():
        if bar["b"] is not None:
            bar["b"].close()

    return update, close


def grade_one(path, json_path=None, *, visible_only=False, jobs=2, timeout=30.0, seed=None, quiet=False,
              details=True, output_format="gradescope"):
    """Grade one submission (None: the reference); returns (results dict, table text). Always writes json_path.

    The returned dict is Gradescope's format; json_path is written in ``output_format``.
    """
    from grader import report
    from grader.formats import write_results

    t0 = time.perf_counter()
    try:
        from grader import engine, sandbox

        sub = sandbox.reference_submission() if path is None else sandbox.load_submission(path)
        progress, close = _progress_bar(Path(str(path or "reference")).name, quiet)
        try:
            graded = engine.grade(sub, visible_only=visible_only, jobs=jobs, timeout=timeout, progress=progress,
                                  secret_seed=seed)
        finally:
            close()
        results = report.results_json(graded, time.perf_counter() - t0)
        text = report.table(graded, details=details)
    except BaseException as exc:
        results = report.failure_json(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                                      time.perf_counter() - t0)
        if json_path:
            write_results(results, json_path, output_format)
        raise
    if json_path:
        write_results(results, json_path, output_format)
    return results, text


def _explain(name: str) -> int:
    from grader.explain import explain

    try:
        print(explain(name), end="")
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
        return int(module.main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    if args.explain:
        return _explain(args.explain)
    subs = [Path(s) for s in args.submissions]
    if args.batch:
        src, outdir = Path(args.batch[0]), Path(args.batch[1])
        subs += sorted(p for p in src.iterdir() if not p.name.startswith("."))
        args.json_dir = str(outdir)
    if len(subs) > 1 and not args.json_dir:
        print("several submissions need --json-dir DIR (or --batch DIR OUTDIR)", file=sys.stderr)
        return 2
    if len(subs) > 1 and args.json:
        print("--json is for one submission; use --json-dir with several", file=sys.stderr)
        return 2
    if args.scheduler:
        if not subs or not args.json_dir:
            print("--scheduler needs --batch DIR OUTDIR (or submissions and --json-dir DIR)", file=sys.stderr)
            return 2
        from grader import cluster

        return cluster.grade_batch(subs, Path(args.json_dir), scheduler=args.scheduler, seed=args.seed,
                                   visible_only=args.visible_only, timeout=args.timeout,
                                   output_format=args.format, quiet=args.quiet)
    status = 0
    if len(subs) <= 1:
        path = subs[0] if subs else None
        try:
            results, text = grade_one(path, args.json, visible_only=args.visible_only, jobs=args.jobs,
                                      timeout=args.timeout, seed=args.seed, quiet=args.quiet, details=not args.brief,
                                      output_format=args.format)
        except Exception as exc:  # noqa: BLE001 - results.json was written by grade_one
            print(f"grader failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        if not args.quiet:
            print(text)
            print(f"execution time {results['execution_time']:.1f} s")
        return 0
    outdir = Path(args.json_dir)

    def one(path):
        try:
            res, _ = grade_one(path, outdir / f"{path.stem}.json", visible_only=args.visible_only, jobs=1,
                               timeout=args.timeout, seed=args.seed, quiet=True, output_format=args.format)
            return path, res["score"], None
        except Exception as exc:  # noqa: BLE001
            return path, None, f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for path, score, err in pool.map(one, subs):
            if err:
                status = 1
                print(f"{path}: grader failed: {err}", file=sys.stderr)
            elif not args.quiet:
                print(f"{path}: {score:g}")
    return status


if __name__ == "__main__":
    sys.exit(main())
