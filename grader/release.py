"""The student starter: ``python -m grader release OUT/``.

Solution code sits between whole comment lines ``# BEGIN SOLUTION`` and
``# END SOLUTION`` (any indentation, END at BEGIN's indentation, no nesting).
:func:`strip_solutions` replaces each region with a TODO banner written from
the enclosing function's docstring and ``raise NotImplementedError``.
:func:`make_release` copies the package, stubs every region, leaves out the
hidden checks and this generator, and then scans the result for solution text.
"""
from __future__ import annotations

import argparse
import ast
import io
import re
import shutil
import sys
import tempfile
import textwrap
import tokenize
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MarkerError",
    "LeakError",
    "Region",
    "solution_regions",
    "strip_solutions",
    "splice_solutions",
    "leak_lines",
    "public_lines",
    "scan_for_leaks",
    "ship_package_data",
    "release_inputs",
    "make_release",
    "main",
]

# ---------------------------------------------------------------------------
# What goes into a release. Paths are relative to the repository root.
# ---------------------------------------------------------------------------

# Top-level files copied as they are.
TOP_LEVEL_FILES = ["setup.py", "pyproject.toml"]

# Package directories copied (recursively) with every .py file stubbed.
PACKAGES = ["convnet", "grader"]

# Files of the grader that never reach students: the hidden checks (secret-seed,
# timing and fast-path checks; the visible catalogue runs without them) and the
# generators themselves. A path names a file or a whole directory.
EXCLUDED = [
    "grader/checks/hidden.py",
    "grader/release.py",
    "grader/bundle.py",
]

# Tests students can run: they exercise the layers and the public fast path
# and fail only where a stub raises NotImplementedError. Tests of the grader,
# the release and the bundle are left out. A missing file is skipped.
VISIBLE_TESTS = [
    "tests/conftest.py",
    "tests/test_layers.py",
    "tests/test_losses.py",
    "tests/test_checks.py",
    "tests/test_gradcheck.py",
    "tests/fast/conftest.py",
    "tests/fast/test_caches.py",
    "tests/fast/test_config.py",
    "tests/fast/test_conv.py",
    "tests/fast/test_fuzz.py",
    "tests/fast/test_im2col.py",
    "tests/fast/test_parallel.py",
    "tests/fast/test_pool.py",
    "tests/fast/test_winograd.py",
    "tests/test_stride.py",
    "tests/test_sandwich.py",
    "tests/test_models.py",
    "tests/test_optim.py",
    "tests/test_solver.py",
    "tests/test_selfcheck.py",
    "tests/test_data.py",
    "tests/test_train.py",
]

# Never copied, wherever they appear: build products and caches (.c is Cython's output here).
SKIP_DIRS = {"__pycache__", "build", "dist", ".pytest_cache", ".hypothesis", ".git"}
SKIP_SUFFIXES = (".so", ".pyd", ".c", ".cpp", ".html", ".o", ".pyc", ".pyo", ".egg-info")

BEGIN = "BEGIN SOLUTION"
END = "END SOLUTION"
# A marker is a comment alone on its line; any other comment mentioning the words is malformed.
_MARKER = re.compile(r"^(?P<indent>[ \t]*)#[ \t]*(?P<kind>BEGIN|END) SOLUTION[ \t]*$")
_ANY_MARKER = re.compile(r"#[ \t]*(BEGIN|END)[ \t_-]*SOLUTION", re.IGNORECASE)


class MarkerError(ValueError):
    """A solution marker is unbalanced, nested, misplaced, malformed, or the stubbed file does not compile."""

    def __init__(self, filename: str, line: int, message: str):
        self.filename = filename
        self.line = line
        super().__init__(f"{filename}:{line}: {message}")


class LeakError(RuntimeError):
    """A release file contains a line of a solution region."""


@dataclass(frozen=True)
class Region:
    """One solution region of a source file (1-based line numbers of the markers)."""

    begin: int
    end: int
    indent: str
    qualname: str
    body: tuple  # the source lines strictly between the markers, without newlines


# ---------------------------------------------------------------------------
# Parsing the markers
# ---------------------------------------------------------------------------


def _marker_comments(text: str, filename: str) -> list:
    """``(line number, line)`` of every comment token that mentions a solution marker.

    Only comments count: a string that mentions the marker text (a docstring, a
    grader that looks for markers) is not a marker.
    """
    found = []
    lines = text.splitlines()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT and _ANY_MARKER.search(tok.string):
                found.append((tok.start[0], lines[tok.start[0] - 1]))
    except (tokenize.TokenError, SyntaxError) as exc:
        line = getattr(exc, "lineno", None) or (exc.args[1][0] if len(exc.args) > 1 else 1)
        raise MarkerError(filename, int(line), f"cannot tokenize: {exc.args[0]}") from None
    return found


def _functions(tree: ast.AST):
    """Yield ``(qualname, node)`` for every function, methods named ``Class.method``."""

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield name, child
                yield from walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def _parse(text: str, filename: str) -> ast.Module:
    try:
        return ast.parse(text, filename=filename)
    except SyntaxError as exc:
        raise MarkerError(filename, exc.lineno or 1, f"source does not parse: {exc.msg}") from None


def solution_regions(text: str, filename: str) -> list:
    """Find the solution regions of one source file.

    Parameters
    ----------
    text : str
        Python source.
    filename : str
        Used in error messages.

    Returns
    -------
    regions : list of Region
        In file order.

    Raises
    ------
    MarkerError
        On a BEGIN without END or END without BEGIN, a BEGIN inside a region,
        an END at another indentation than its BEGIN, a marker that is not a
        comment alone on its line, or a region outside any function.
    """
    if not _ANY_MARKER.search(text):
        return []
    lines = text.splitlines()
    markers = _marker_comments(text, filename)
    if not markers:
        return []
    tree = _parse(text, filename)
    functions = list(_functions(tree))

    regions = []
    open_line, open_indent = None, None
    for number, line in markers:
        m = _MARKER.match(line)
        if m is None:
            raise MarkerError(filename, number, f"malformed solution marker {line.strip()!r}: "
                              f"a marker is a comment line '# {BEGIN}' or '# {END}' alone on its line")
        kind, indent = m.group("kind"), m.group("indent")
        if kind == "BEGIN":
            if open_line is not None:
                raise MarkerError(filename, number, f"'# {BEGIN}' nested inside the region opened at line {open_line}")
            open_line, open_indent = number, indent
            continue
        if open_line is None:
            raise MarkerError(filename, number, f"'# {END}' without a matching '# {BEGIN}'")
        if indent != open_indent:
            raise MarkerError(filename, number, f"'# {END}' indented by {len(indent)} characters but its "
                              f"'# {BEGIN}' at line {open_line} by {len(open_indent)}")
        body = tuple(lines[open_line:number - 1])
        for offset, body_line in enumerate(body):
            if body_line.strip() and not body_line.startswith(open_indent):
                raise MarkerError(filename, open_line + 1 + offset,
                                  f"line is indented less than its region's '# {BEGIN}' at line {open_line}")
        enclosing = [(name, fn) for name, fn in functions if fn.lineno <= open_line <= fn.end_lineno]
        if not enclosing:
            raise MarkerError(filename, open_line, "solution region outside any function: "
                              "stubbing it would make the module fail at import")
        # The innermost function starts last.
        qualname, fn = max(enclosing, key=lambda item: item[1].lineno)
        regions.append(Region(open_line, number, open_indent, qualname, body))
        open_line, open_indent = None, None
    if open_line is not None:
        raise MarkerError(filename, open_line, f"'# {BEGIN}' without a matching '# {END}'")
    return regions


# ---------------------------------------------------------------------------
# The banner
# ---------------------------------------------------------------------------


def _region_tree(body_lines, indent: str):
    """The region's body parsed on its own (dedented), or None if it does not parse alone."""
    code = "\n".join(line[len(indent):] if line.startswith(indent) else line.lstrip() for line in body_lines)
    try:
        return ast.parse(code)
    except SyntaxError:
        return None


def _root(node):
    """The Name at the bottom of an attribute/subscript chain (``grads`` of ``grads['W1']``), or None."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node if isinstance(node, ast.Name) else None


def _stores(tree) -> tuple:
    """What a region writes: (local names, containers filled in, attributes of self set, whether it returns)."""
    names, filled, attributes, returns = [], [], [], False
    if tree is None:
        return names, filled, attributes, returns
    for node in ast.walk(tree):
        if isinstance(node, ast.Return):
            returns = True
        if not isinstance(getattr(node, "ctx", None), ast.Store):
            continue
        if isinstance(node, ast.Name):
            names.append(node.id)
        elif isinstance(node, (ast.Attribute, ast.Subscript)):
            root = _root(node)
            if root is None:
                continue
            if root.id == "self":
                attributes.append(ast.unparse(node))
            else:
                filled.append(root.id)
    return list(dict.fromkeys(names)), list(dict.fromkeys(filled)), list(dict.fromkeys(attributes)), returns


def _loaded_after(fn: ast.AST, line: int, skip) -> set:
    """Names the function reads after ``line``, outside the line ranges in ``skip`` (the other regions)."""
    return {
        node.id
        for node in ast.walk(fn)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.lineno > line
        and not any(lo <= node.lineno <= hi for lo, hi in skip)
    }


def _returns_doc(doc: str) -> dict:
    """``{name: description}`` from a numpydoc Returns section."""
    out = {}
    m = re.search(r"^\s*Returns\s*\n\s*-{3,}\s*\n(?P<body>.*?)(?:\n\s*\n\s*\w[\w ]*\n\s*-{3,}|\Z)", doc, re.S | re.M)
    if not m:
        return out
    for line in m.group("body").splitlines():
        item = re.match(r"^\s*(\w+)\s*:\s*(.+?)\s*$", line)
        if item:
            out[item.group(1)] = item.group(2)
    return out


def _banner(region: Region, fn: ast.AST, owner_doc: str, skip, width: int = 88) -> list:
    """The TODO comment lines (without indentation) describing what the region must do.

    ``owner_doc`` is the enclosing class's docstring (used when ``__init__`` has
    none); ``skip`` holds the line ranges of every region of the file, whose
    code is gone from the starter and so does not count as "the code after".
    """
    doc = ast.get_docstring(fn) or owner_doc or ""
    summary = " ".join(doc.split("\n\n", 1)[0].split()) if doc else ""
    names, filled, attributes, returns = _stores(_region_tree(region.body, region.indent))
    described = _returns_doc(doc)
    used_after = _loaded_after(fn, region.end, skip)
    # The Returns section's order first (dx, dw, db), then the order of assignment.
    order = list(described) + names
    needed = sorted((name for name in names if name in used_after), key=order.index)
    filled = [name for name in filled if name in used_after and name not in needed]

    text = [f"TODO({region.qualname}): {summary or 'implement this block.'}"]
    if needed:
        parts = [f"`{name}` ({described[name]})" if name in described else f"`{name}`" for name in needed]
        text.append("Compute " + ", ".join(parts) + "; the code after this block uses "
                    + ("it." if len(needed) == 1 else "them."))
    if filled:
        text.append("Fill in " + ", ".join(f"`{name}`" for name in filled) + ".")
    if attributes:
        shown = attributes[:6] + (["..."] if len(attributes) > 6 else [])
        text.append("Set " + ", ".join(f"`{a}`" if a != "..." else a for a in shown) + ".")
    if returns:
        text.append("Return what the Returns section of the docstring describes.")
    text.append("Replace the raise below with your code.")

    avail = max(width - len(region.indent) - 2, 40)
    banner = []
    for paragraph in text:
        banner += textwrap.wrap(paragraph, avail, break_on_hyphens=False) or [""]
    return ["# " + line for line in banner]


def _class_docs(tree: ast.AST) -> dict:
    """``{class qualname: docstring}`` for every class."""
    docs = {}

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                docs[prefix + child.name] = ast.get_docstring(child) or ""
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(tree, "")
    return docs


def strip_solutions(text: str, filename: str) -> str:
    """Replace every solution region with a TODO banner and ``raise NotImplementedError``.

    Parameters
    ----------
    text : str
        Python source with ``# BEGIN SOLUTION`` / ``# END SOLUTION`` regions.
    filename : str
        Used in error messages and to compile the result.

    Returns
    -------
    str
        The stubbed source; ``text`` unchanged if it has no markers. Each region
        becomes comment lines at the region's indentation naming the enclosing
        ``Class.method``, its docstring summary and the names the code after the
        region needs, then ``raise NotImplementedError("Class.method: implement me")``.

    Raises
    ------
    MarkerError
        Unbalanced, nested, mis-indented or malformed markers, a region outside
        a function, markers left in the output, or an output that does not compile.
    """
    regions = solution_regions(text, filename)
    if not regions:
        return text
    tree = _parse(text, filename)
    by_name = dict(_functions(tree))
    class_docs = _class_docs(tree)
    skip = [(region.begin, region.end) for region in regions]
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"

    out, cursor = [], 0
    for region in regions:
        out.extend(lines[cursor:region.begin - 1])
        fn = by_name[region.qualname]
        owner_doc = class_docs.get(region.qualname.rpartition(".")[0], "")
        for comment in _banner(region, fn, owner_doc, skip):
            out.append(region.indent + comment + newline)
        out.append(f'{region.indent}raise NotImplementedError("{region.qualname}: implement me"){newline}')
        cursor = region.end
    out.extend(lines[cursor:])
    result = "".join(out)

    try:
        compile(result, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise MarkerError(filename, exc.lineno or 1,
                          f"the stubbed file does not compile ({exc.msg}); a region must be a whole block "
                          f"that a single raise statement can replace") from None
    for number, line in _marker_comments(result, filename):
        raise MarkerError(filename, number, f"solution marker left in the output: {line.strip()!r}")
    return result


def splice_solutions(reference: str, stubbed: str, filename: str) -> str:
    """Put the reference's solution regions back into a stubbed file (the inverse of :func:`strip_solutions`).

    The i-th ``raise NotImplementedError("<qualname>: implement me")`` line, with
    the banner just above it, is replaced by the i-th region, markers included,
    so ``splice_solutions(ref, strip_solutions(ref, f), f) == ref``.
    Used by the tests to check a release graded with the solutions spliced back
    in scores full marks, and by instructors to turn a starter into a solution.
    """
    regions = solution_regions(reference, filename)
    lines = stubbed.splitlines(keepends=True)
    out = []
    index = 0
    for line in lines:
        if index < len(regions):
            region = regions[index]
            stub = f'{region.indent}raise NotImplementedError("{region.qualname}: implement me")'
            if line.rstrip("\r\n") == stub:
                # Drop the banner: the comment lines back to and including its "# TODO(<qualname>)" head.
                head = f"{region.indent}# TODO({region.qualname})"
                for back in range(len(out) - 1, -1, -1):
                    if not out[back].startswith(region.indent + "#"):
                        break
                    if out[back].startswith(head):
                        del out[back:]
                        break
                out.append(f"{region.indent}# {BEGIN}\n")
                out.extend(body + "\n" for body in region.body)
                out.append(f"{region.indent}# {END}\n")
                index += 1
                continue
        out.append(line)
    if index != len(regions):
        raise MarkerError(filename, 1, f"found {index} of {len(regions)} stubs to splice")
    return "".join(out)


# ---------------------------------------------------------------------------
# Leak scan
# ---------------------------------------------------------------------------

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
    answer) and generated files (the README, expected outputs) excuse nothing.

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
        public = None
        for number, line in enumerate(content.splitlines(), start=1):
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


# ---------------------------------------------------------------------------
# The release
# ---------------------------------------------------------------------------


def repository_root() -> Path:
    """The source tree this module belongs to (a checkout: it has setup.py and convnet/)."""
    return Path(__file__).resolve().parent.parent


def _excluded(rel: str) -> bool:
    return any(rel == item or rel.startswith(item.rstrip("/") + "/") for item in EXCLUDED)


def is_build_artifact(path: Path) -> bool:
    """True for caches, build outputs and compiled files: never shipped in a release or a bundle."""
    return any(part in SKIP_DIRS or part.endswith(".egg-info") for part in path.parts) or path.name.endswith(
        SKIP_SUFFIXES
    )


def release_inputs(source: Path) -> list:
    """Relative paths (posix) of every source file that reaches the release, in a stable order."""
    files = [name for name in TOP_LEVEL_FILES if (source / name).is_file()]
    for package in PACKAGES:
        root = source / package
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(source)
            if path.is_file() and not is_build_artifact(rel) and not _excluded(rel.as_posix()):
                files.append(rel.as_posix())
    for name in VISIBLE_TESTS:
        path = source / name
        if path.is_dir():
            files += sorted(p.relative_to(source).as_posix() for p in path.rglob("*")
                            if p.is_file() and not is_build_artifact(p.relative_to(source)))
        elif path.is_file():
            files.append(name)
    return files


def _student_readme(stubs: dict) -> str:
    """The README.md of the starter: how to install, what to implement, how to check."""
    lines = [
        "# convnet: student starter (EECS 498 assignment 3 on numpy)",
        "",
        "This package is generated from the course repository by `python -m grader release`.",
        "Everything else is complete and works as in the reference: the fast Cython layers",
        "(`convnet.fast`), argument validation, gradient checking and the visible part of the",
        "autograder. The functions listed below raise `NotImplementedError` until you write them.",
        "",
        "## Install",
        "",
        "```bash",
        "python -m venv .venv && . .venv/bin/activate",
        "pip install -e '.[test]'      # compiles the Cython kernels (needs a C compiler)",
        "```",
        "",
        "## What to implement",
        "",
        "Each stub is marked by a `# TODO(Class.method)` comment saying what to compute; the",
        "docstring above it gives the shapes. Argument checking and the cache layout are",
        "already written: keep them, fill in the computation.",
        "",
    ]
    for rel, names in stubs.items():
        lines.append(f"- `{rel}`: " + ", ".join(f"`{name}`" for name in dict.fromkeys(names)))
    lines += [
        "",
        "## Check your work",
        "",
        "```bash",
        "python -m convnet check      # your backward passes against finite differences",
        "python -m pytest tests -q    # the visible tests; a stub fails with NotImplementedError",
        "python -m grader convnet/    # the visible autograder checks, scored, in a sandbox",
        "```",
        "",
        "`python -m grader` grades the files it finds under the directory you give it",
        "(`layers.py`, `sandwich.py`, `models.py`, `optim.py`, `solver.py`); add",
        "`--json results.json` for the Gradescope-format result. The autograder runs more",
        "checks than these (secret inputs, more shapes, timing against the reference):",
        "passing the visible checks is necessary, not sufficient.",
        "",
        "## Submit",
        "",
        "Upload the files listed under *What to implement* to Gradescope, as they are",
        "(`layers.py`, ...) or inside a `convnet/` folder or a `.zip`.",
        "",
    ]
    return "\n".join(lines)


def _write_public_expected(checks_dir: Path) -> bool:
    """Ask the grader's catalogue for the visible checks' expected outputs (computed with the reference)."""
    try:
        import importlib

        checks = importlib.import_module("grader.checks")
    except ImportError:
        return False
    build = getattr(checks, "build_public_expected", None)
    if build is None:
        return False
    build(checks_dir)
    return True


PACKAGE_DATA_LINE = '"grader.checks" = ["*.npz"]'


def ship_package_data(pyproject: str) -> str:
    """Make ``pip install`` ship the visible checks' expected outputs (``grader/checks/*.npz``).

    A no-op when pyproject.toml already names package data for ``grader.checks``.
    """
    if re.search(r'^\s*"grader\.checks"\s*=', pyproject, re.M):
        return pyproject
    header = "[tool.setuptools.package-data]\n"
    if header in pyproject:
        return pyproject.replace(header, header + PACKAGE_DATA_LINE + "\n", 1)
    return pyproject.rstrip("\n") + "\n\n" + header + PACKAGE_DATA_LINE + "\n"


def make_release(out, *, source=None, force: bool = False, log=print) -> dict:
    """Write the student starter into ``out``.

    Parameters
    ----------
    out : path-like
        Destination directory; created if missing. It must be empty unless ``force``.
    source : path-like, optional
        The repository to release; default the checkout this module is in.
    force : bool
        Write into a non-empty ``out``: the paths a release writes are replaced,
        other files are kept (and scanned for leaks like the rest).
    log : callable
        Receives one-line progress messages.

    Returns
    -------
    dict
        ``{"files": [...], "stubs": {relpath: [qualname, ...]}, "public_expected": bool}``.

    Raises
    ------
    FileExistsError
        ``out`` is not empty and ``force`` is false.
    MarkerError
        A source file's markers are invalid.
    LeakError
        The written release contains a line of a solution region.
    """
    source = Path(source) if source is not None else repository_root()
    out = Path(out)
    if not (source / "setup.py").is_file() or not (source / "convnet").is_dir():
        raise FileNotFoundError(f"{source} is not a convnet checkout (no setup.py or convnet/); pass --source")
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise ValueError(f"the release directory {out} must be outside the source tree {source}")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} is not empty; pass --force to overwrite the release files in it")

    inputs = release_inputs(source)
    stubs = {}
    marked = []
    # Build next to OUT, scan, then move in: a failed release never leaves a leaking tree behind.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        for rel in inputs:
            src_path, dst_path = source / rel, staging / rel
            dst_path.parent.mkdir(parents=True, exist_ok=True)
            if rel.endswith(".py"):
                text = src_path.read_text(encoding="utf-8")
                stripped = strip_solutions(text, rel)
                if stripped is not text:
                    marked.append(src_path)
                    stubs[rel] = [region.qualname for region in solution_regions(text, rel)]
                dst_path.write_text(stripped, encoding="utf-8")
                shutil.copymode(src_path, dst_path)
            else:
                shutil.copy2(src_path, dst_path)
        (staging / "README.md").write_text(_student_readme(stubs), encoding="utf-8")
        public = _write_public_expected(staging / "grader" / "checks")
        if public:
            log("release: wrote the visible checks' expected outputs")
            pyproject = staging / "pyproject.toml"
            if pyproject.is_file():
                pyproject.write_text(ship_package_data(pyproject.read_text(encoding="utf-8")), encoding="utf-8")
        hits, shared = scan_for_leaks(staging, source, marked)
        if hits:
            raise LeakError(_leak_message(hits))
        written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        out.mkdir(parents=True, exist_ok=True)
        for top in sorted({rel.split("/", 1)[0] for rel in written}):
            target = out / top
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            shutil.move(str(staging / top), str(target))
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    # Files of OUT this run did not write (with --force) are scanned too.
    hits, shared = scan_for_leaks(out, source, marked)
    if hits:
        raise LeakError(_leak_message(hits))
    for path, line, origin, text in shared:
        log(f"release: note: {path}:{line} shares a line with the solution at {origin} "
            f"(it is in {path}'s own source outside any region): {text}")
    for rel, names in stubs.items():
        log(f"release: {rel}: stubbed {len(names)} region(s): {', '.join(names)}")
    log(f"release: wrote {len(written)} files to {out}; no solution text found in it")
    return {"files": written, "stubs": stubs, "public_expected": public}


def _leak_message(hits) -> str:
    shown = "\n".join(f"  {path}:{line} repeats {origin}: {text}" for path, line, origin, text in hits[:20])
    more = f"\n  ... and {len(hits) - 20} more" if len(hits) > 20 else ""
    return f"the release contains solution text ({len(hits)} line(s)):\n{shown}{more}"


def main(argv=None) -> int:
    """``python -m grader release OUT/ [--force] [--source DIR]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m grader release",
        description="Write the student starter: the package with every solution region stubbed, "
        "the hidden checks left out, the visible tests included.",
    )
    parser.add_argument("out", type=Path, help="destination directory (must be empty unless --force)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty directory")
    parser.add_argument("--source", type=Path, default=None,
                        help="repository to release (default: the checkout grader is imported from)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    log = (lambda message: None) if args.quiet else print
    try:
        make_release(args.out, source=args.source, force=args.force, log=log)
    except (MarkerError, LeakError, FileExistsError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"release: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
