"""The leak scan: no line of a solution region may reach a release."""
from __future__ import annotations

import re
from pathlib import Path

from grader.release.manifest import PACKAGES
from grader.release.markers import solution_regions
from grader.release.notebook import notebook_lines

__all__ = ["LeakError", "leak_lines", "public_lines", "scan_for_leaks", "leak_message"]


class LeakError(RuntimeError):
    """A release file contains a line of a solution region."""



# Lines too generic to identify a solution: control keywords, bare returns of
# one name, brackets. A line is scanned only if it also carries at least this
# many word characters after removing whitespace.
_GENERIC = re.compile(
    r"^(else:|try:|finally:|pass|continue|break|return|return \w+|[)\]}]+,?|\w+ = \w+|#.*"
    r"|for \w+(, \w+)* in range\([\w.]+\):|[\w, ]+ = \w+\.shape(\[-?\d\])?)$"
)
MIN_SCAN_CHARS = 12


def leak_lines(text: str, filename: str) -> list:
    """The lines of ``text``'s solution regions a release must not contain.

    A region line is scanned (stripped of surrounding whitespace) unless

    * it is blank, a comment, or matches a generic pattern (``else:``,
      ``return out``, ``pass``, a lone bracket, ``a = b``, a loop header
      ``for i in range(n):``, ``N = x.shape[0]``), or
    * it has fewer than ``MIN_SCAN_CHARS`` non-space characters, or
    * the same stripped line also appears outside every solution region of the
      same file (then it is not solution text, the starter legitimately has it).

    Returns
    -------
    list of (int, str)
        ``(line number, stripped line)`` pairs, in file order.
    """
    regions = solution_regions(text, filename)
    if not regions:
        return []
    lines = text.splitlines()
    inside = set()
    for region in regions:
        inside.update(range(region.begin, region.end + 1))
    outside = {lines[i - 1].strip() for i in range(1, len(lines) + 1) if i not in inside}
    found = []
    for region in regions:
        for offset, line in enumerate(region.body):
            stripped = line.strip()
            if (not stripped or _GENERIC.match(stripped) or len("".join(stripped.split())) < MIN_SCAN_CHARS
                    or stripped in outside):
                continue
            found.append((region.begin + 1 + offset, stripped))
    return found


def public_lines(text: str, filename: str) -> set:
    """Stripped lines of ``text`` outside its solution regions (what a release of that file legitimately shows)."""
    lines = text.splitlines()
    inside = set()
    for region in solution_regions(text, filename):
        inside.update(range(region.begin, region.end + 1))
    return {line.strip() for number, line in enumerate(lines, start=1) if number not in inside}


def scan_for_leaks(root: Path, source_root: Path, sources) -> tuple:
    """Search every file under ``root`` for the solution lines of ``sources``.

    A release file containing a solution line (see :func:`leak_lines`) is a
    leak, unless it is a file of a package (``convnet/``, ``grader/``) whose
    own source (``source_root / relpath``) has the same stripped line outside
    its solution regions: then the library ships it deliberately
    (``db = dout.sum(axis=(0, 2, 3))`` in the fast path, say) and it is
    reported as shared, not as a leak. Tests (a test must not spell out an
    answer) and generated files (the README, the notebook, expected outputs)
    excuse nothing. A notebook (``.ipynb``) is scanned as the lines of its cells
    (sources and text outputs), numbered from the first cell's first line.

    Returns
    -------
    leaks, shared : list of (release relpath, line number, "source relpath:line", line)
    """
    needles = {}
    for src in sources:
        rel = src.relative_to(source_root).as_posix()
        for number, stripped in leak_lines(src.read_text(encoding="utf-8"), rel):
            needles.setdefault(stripped, f"{rel}:{number}")
    leaks, shared = [], []
    if not needles:
        return leaks, shared
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        try:
            content = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            content = path.read_bytes().decode("latin-1")
        lines = content.splitlines()
        if path.suffix == ".ipynb":
            # A notebook's code sits in JSON strings, where no line matches: scan its cells' lines instead.
            try:
                lines = notebook_lines(content)
            except ValueError:
                pass
        public = None
        for number, line in enumerate(lines, start=1):
            stripped = line.strip()
            if stripped not in needles:
                continue
            if public is None:
                own = source_root / rel
                public = set()
                in_package = rel.split("/", 1)[0] in PACKAGES
                if in_package and rel.endswith(".py") and own.is_file():
                    public = public_lines(own.read_text(encoding="utf-8"), rel)
            (shared if stripped in public else leaks).append((rel, number, needles[stripped], stripped))
    return leaks, shared



def leak_message(hits) -> str:
    shown = "\n".join(f"  {path}:{line} repeats {origin}: {text}" for path, line, origin, text in hits[:20])
    more = f"\n  ... and {len(hits) - 20} more" if len(hits) > 20 else ""
    return f"the release contains solution text ({len(hits)} line(s)):\n{shown}{more}"
