"""The gradebook of a graded class: ``python -m grader summary OUT/``.

Reads every ``*.json`` in a folder of results (Gradescope's results.json, as
``--batch`` writes them; PrairieLearn's format is read too) and writes:

``gradebook.csv``
    One row per submission: its name, total, maximum, percentage, status, then
    one column per check (the points it earned), in the grader's order.
``summary.md``
    The score distribution, each check's pass rate, the most frequent
    "Likely cause" lines of failing checks (their ``extra_data["diagnosis"]``,
    a string or a list of strings), and the files that were not graded.
``scores.png``
    A histogram of the totals (matplotlib, Agg backend; skipped with a
    message if matplotlib is not installed).

A file that is not valid JSON or not a results object, or a grader-failure
result (``tests: []``), is listed with the reason; it never stops the summary.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from grader.prairielearn import diagnosis_lines

__all__ = ["Record", "load_record", "load_results", "gradebook", "write_csv", "markdown", "write_png",
           "summarize", "main"]

GRADED, FAILED, UNREADABLE = "graded", "grader failure", "unreadable"
MAX_FILE_BYTES = 64 << 20
HISTOGRAM_BINS = 10


@dataclass
class Record:
    """One results file: its status and, when graded, every check's score."""

    name: str
    status: str
    score: float = 0.0
    max_score: float = 0.0
    checks: dict = field(default_factory=dict)  # name -> (score, max_score, passed)
    diagnoses: list = field(default_factory=list)  # (check name, likely-cause line) of failing checks
    problem: str = ""

    @property
    def percent(self) -> float:
        return 100.0 * self.score / self.max_score if self.max_score > 0 else 0.0


def _number(value):
    """A finite float, or None (bools and strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _first_line(text, default: str = "") -> str:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    # Skip the grader's generic first line of a failure result when a reason follows it.
    if len(lines) > 1 and lines[0].startswith("The autograder"):
        lines = lines[1:]
    return (lines[0] if lines else default)[:300]


def _parse(name: str, doc) -> Record:
    if not isinstance(doc, dict):
        return Record(name, UNREADABLE, problem=f"the top level is a JSON {type(doc).__name__}, not an object")
    tests = doc.get("tests")
    if not isinstance(tests, list):
        return Record(name, UNREADABLE, problem="it has no list of tests")
    if not tests:
        score = _number(doc.get("score")) or 0.0
        return Record(name, FAILED, score=score, problem=_first_line(doc.get("output"), "no tests and no message"))
    record = Record(name, GRADED)
    for i, test in enumerate(tests):
        if not isinstance(test, dict):
            return Record(name, UNREADABLE, problem=f"tests[{i}] is not an object")
        check = test.get("name")
        # Gradescope: score/max_score; PrairieLearn: points/max_points.
        score = _number(test.get("score", test.get("points")))
        top = _number(test.get("max_score", test.get("max_points")))
        if not isinstance(check, str) or not check.strip():
            return Record(name, UNREADABLE, problem=f"tests[{i}] has no name")
        if score is None or top is None:
            return Record(name, UNREADABLE, problem=f"tests[{i}] ({check!r}) has no numeric score and maximum")
        key, n = check, 2
        while key in record.checks:
            key, n = f"{check} ({n})", n + 1
        status = test.get("status")
        passed = status == "passed" if status in ("passed", "failed") else score >= top
        record.checks[key] = (score, top, passed)
        if not passed:
            record.diagnoses += [(key, " ".join(line.split())) for line in diagnosis_lines(test)]
    record.max_score = sum(top for _, top, _ in record.checks.values())
    total = _number(doc.get("score"))
    if total is None or "gradable" in doc:  # PrairieLearn's score is a fraction; use the points
        total = sum(score for score, _, _ in record.checks.values())
    record.score = total
    return record


def load_record(path) -> Record:
    """Read one results file into a :class:`Record`; a bad file gives status ``unreadable``, never an exception."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return Record(path.stem, UNREADABLE, problem=f"cannot be read ({exc.strerror or exc})")
    if len(data) > MAX_FILE_BYTES:
        return Record(path.stem, UNREADABLE, problem=f"larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return Record(path.stem, UNREADABLE, problem=f"not valid JSON ({str(exc)[:200]})")
    return _parse(path.stem, doc)


def load_results(results_dir) -> list:
    """Every ``*.json`` in ``results_dir`` (not recursive), sorted by name, as records."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise NotADirectoryError(f"{results_dir} is not a directory of results")
    return [load_record(p) for p in sorted(results_dir.glob("*.json"))]


def check_names(records) -> list:
    """Check names in the grader's order: that of the most complete result, then any others as first seen."""
    graded = sorted((r for r in records if r.status == GRADED), key=lambda r: -len(r.checks))
    names = {}
    for r in graded:
        for name in r.checks:
            names.setdefault(name, None)
    return list(names)


def _cell(value):
    """A CSV cell; text a spreadsheet would run as a formula is quoted with a leading apostrophe."""
    if isinstance(value, float):
        return f"{value:g}"
    value = str(value)
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def gradebook(records) -> tuple:
    """``(header, rows)``: one row per record; check cells hold the points earned (empty when not graded)."""
    names = check_names(records)
    header = ["submission", "total", "max", "percent", "status"] + names + ["problem"]
    rows = []
    for r in records:
        graded = r.status == GRADED
        row = [r.name, r.score if graded else "", r.max_score if graded else "",
               round(r.percent, 2) if graded else "", r.status]
        row += [r.checks[n][0] if n in r.checks else "" for n in names]
        rows.append(row + [r.problem])
    return header, rows


def write_csv(records, path) -> Path:
    header, rows = gradebook(records)
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([_cell(h) for h in header])
        for row in rows:
            writer.writerow([_cell(v) for v in row])
    return path


def _md(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _pct(x: float) -> str:
    return f"{x:.1f} %"


def markdown(records, *, source: str = "", top: int = 10) -> str:
    """The text of summary.md."""
    graded = [r for r in records if r.status == GRADED]
    failed = [r for r in records if r.status == FAILED]
    unreadable = [r for r in records if r.status == UNREADABLE]
    lines = ["# Gradebook summary", ""]
    where = f" in `{source}`" if source else ""
    lines.append(f"{len(records)} results files{where}: {len(graded)} graded, {len(failed)} grader failures, "
                 f"{len(unreadable)} unreadable.")
    lines.append("")
    lines += ["## Score distribution", ""]
    if graded:
        maxima = Counter(r.max_score for r in graded)
        full = maxima.most_common(1)[0][0]
        if len(maxima) > 1:
            lines += [f"The graded results have different maxima ({', '.join(f'{m:g}' for m in sorted(maxima))}); "
                      "percentages are of each result's own maximum.", ""]
        scores = [r.score for r in graded]
        pcts = [r.percent for r in graded]
        q = statistics.quantiles(pcts, n=4, method="inclusive") if len(pcts) > 1 else [pcts[0]] * 3
        lines += ["| statistic | points | percent |", "|---|---:|---:|"]
        stats = [("mean", statistics.fmean(scores), statistics.fmean(pcts)),
                 ("median", statistics.median(scores), statistics.median(pcts)),
                 ("standard deviation", statistics.pstdev(scores), statistics.pstdev(pcts)),
                 ("minimum", min(scores), min(pcts)), ("maximum", max(scores), max(pcts))]
        for label, points, pct in stats:
            lines.append(f"| {label} | {points:.2f} | {_pct(pct)} |")
        lines.append(f"| quartiles (25/50/75 %) | | {' / '.join(f'{x:.1f}' for x in q)} |")
        lines.append(f"| submissions with full marks ({full:g} points) | "
                     f"{sum(r.score >= r.max_score for r in graded)} of {len(graded)} | |")
        lines += ["", "| score (% of maximum) | submissions | |", "|---|---:|---|"]
        counts = _histogram(pcts)
        width = max(counts) or 1
        for i, n in enumerate(counts):
            lo, hi = 100 * i // HISTOGRAM_BINS, 100 * (i + 1) // HISTOGRAM_BINS
            label = f"{lo}-{hi}" + (" (incl.)" if i == HISTOGRAM_BINS - 1 else "")
            lines.append(f"| {label} | {n} | {'#' * round(20 * n / width)} |")
    else:
        lines.append("No graded submissions.")
    lines += ["", "## Checks", ""]
    names = check_names(records)
    if names:
        lines += ["Hardest first. A check counts as passed when the grader says so (a 0-point check passes or "
                  "fails too).", "",
                  "| check | points | passed | pass rate | mean points |", "|---|---:|---:|---:|---:|"]
        table = []
        for order, name in enumerate(names):
            seen = [r.checks[name] for r in graded if name in r.checks]
            passed = sum(p for _, _, p in seen)
            rate = passed / len(seen) if seen else 0.0
            top_points = Counter(t for _, t, _ in seen).most_common(1)[0][0]
            table.append((rate, order, f"| {_md(name)} | {top_points:g} | {passed}/{len(seen)} | "
                                       f"{_pct(100 * rate)} | {statistics.fmean(s for s, _, _ in seen):.2f} |"))
        lines += [row for _, _, row in sorted(table)]
    else:
        lines.append("No checks were graded.")
    lines += ["", "## Likely causes of failures", ""]
    by_line = defaultdict(lambda: {"subs": set(), "count": 0, "checks": Counter()})
    for r in graded:
        for check, line in r.diagnoses:
            entry = by_line[line]
            entry["subs"].add(r.name)
            entry["count"] += 1
            entry["checks"][check] += 1
    if by_line:
        ranked = sorted(by_line.items(), key=lambda kv: (-len(kv[1]["subs"]), -kv[1]["count"], kv[0]))
        lines += [f"The {min(top, len(ranked))} most frequent of {len(ranked)} distinct \"Likely cause\" lines of "
                  "failing checks.", "",
                  "| submissions | failing checks | likely cause | in checks |", "|---:|---:|---|---|"]
        for line, entry in ranked[:top]:
            checks = ", ".join(_md(c) for c, _ in entry["checks"].most_common(3))
            more = len(entry["checks"]) - 3
            checks += f" and {more} more" if more > 0 else ""
            lines.append(f"| {len(entry['subs'])} | {entry['count']} | {_md(line)} | {checks} |")
    else:
        lines.append("No failing check carries a diagnosis (extra_data[\"diagnosis\"]).")
    lines += ["", "## Not graded", ""]
    if failed or unreadable:
        lines += [f"- `{_md(r.name)}.json`: {r.status}: {_md(r.problem)}" for r in failed + unreadable]
    else:
        lines.append("Every results file was graded.")
    return "\n".join(lines) + "\n"


def _histogram(pcts) -> list:
    counts = [0] * HISTOGRAM_BINS
    for p in pcts:
        counts[min(HISTOGRAM_BINS - 1, max(0, int(p * HISTOGRAM_BINS // 100)))] += 1
    return counts


def write_png(records, path):
    """The histogram of the graded totals as a PNG; returns the path, or None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    graded = [r for r in records if r.status == GRADED]
    maxima = {r.max_score for r in graded}
    # Points when every result has the same maximum (the usual case), else percentages.
    in_points = len(maxima) == 1
    values = [r.score if in_points else r.percent for r in graded]
    top = maxima.pop() if in_points else 100.0
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if values:
        bins = [top * i / 20 for i in range(21)]
        ax.hist(values, bins=bins, color="#4C72B0", edgecolor="white")
        mean, median = statistics.fmean(values), statistics.median(values)
        ax.axvline(mean, color="#C44E52", linestyle="--", label=f"mean {mean:.1f}", zorder=3)
        ax.axvline(median, color="#55A868", linestyle=":", linewidth=2, label=f"median {median:.1f}", zorder=3)
        ax.legend(loc="upper left")
        # A little room past the maximum, so that a line at full marks stays visible.
        ax.set_xlim(0, top * 1.03)
        ax.yaxis.get_major_locator().set_params(integer=True)
    else:
        ax.text(0.5, 0.5, "no graded submissions", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"score (points of {top:g})" if in_points else "score (% of each maximum)")
    ax.set_ylabel("submissions")
    not_graded = len(records) - len(graded)
    ax.set_title(f"{len(graded)} graded submissions" + (f" ({not_graded} not graded)" if not_graded else ""))
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


def summarize(results_dir, out_dir=None, *, top: int = 10, log=print) -> dict:
    """Write gradebook.csv, summary.md and scores.png for ``results_dir`` into ``out_dir`` (default the same).

    Returns
    -------
    dict
        ``records`` (list of :class:`Record`) and the paths written (``csv``, ``markdown``,
        ``png``, the last None without matplotlib).
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir
    records = load_results(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": write_csv(records, out_dir / "gradebook.csv")}
    paths["markdown"] = out_dir / "summary.md"
    paths["markdown"].write_text(markdown(records, source=str(results_dir), top=top), encoding="utf-8")
    paths["png"] = write_png(records, out_dir / "scores.png")
    counts = Counter(r.status for r in records)
    log(f"summary: {len(records)} results ({counts[GRADED]} graded, {counts[FAILED]} grader failures, "
        f"{counts[UNREADABLE]} unreadable) -> {paths['csv']}, {paths['markdown']}"
        + (f", {paths['png']}" if paths["png"] else " (no scores.png: matplotlib is not installed)"))
    return {"records": records, **paths}


def main(argv=None) -> int:
    """``python -m grader summary RESULTS/ [--out DIR] [--top N]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m grader summary",
                                     description="Gradebook (CSV), summary (Markdown) and histogram (PNG) of a "
                                                 "folder of results.json files.")
    parser.add_argument("results", type=Path, help="folder of <submission>.json results (e.g. --batch's OUTDIR)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the results folder)")
    parser.add_argument("--top", type=int, default=10, help="how many likely causes to list (default 10)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.top < 1:
        parser.error(f"--top must be at least 1, got {args.top}")
    try:
        summarize(args.results, args.out, top=args.top, log=(lambda m: None) if args.quiet else print)
    except (NotADirectoryError, OSError) as exc:
        print(f"summary: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
