"""Solution markers: find the regions, stub them, splice them back.

Solution code sits between whole comment lines ``# BEGIN SOLUTION`` and
``# END SOLUTION`` inside a function (any indentation, END at BEGIN's
indentation, no nesting). :func:`strip_solutions` replaces each region with
a TODO banner (:mod:`grader.release.banner`) and ``raise NotImplementedError``;
:func:`splice_solutions` puts the regions back. The release and the grader's
sandbox (a graded file a submission lacks) use this one implementation.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass

from grader.release.banner import banner, class_docs_of

__all__ = ["BEGIN", "END", "MarkerError", "Region", "solution_regions", "strip_solutions", "splice_solutions",
           "stub_line"]

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



@dataclass(frozen=True)
class Region:
    """One solution region of a source file (1-based line numbers of the markers)."""

    begin: int
    end: int
    indent: str
    qualname: str
    body: tuple  # the source lines strictly between the markers, without newlines



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




def stub_line(region: Region) -> str:
    """The statement that replaces a region in the starter."""
    return f'{region.indent}raise NotImplementedError("{region.qualname}: implement me")'


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
    class_docs = class_docs_of(tree)
    skip = [(region.begin, region.end) for region in regions]
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"

    out, cursor = [], 0
    for region in regions:
        out.extend(lines[cursor:region.begin - 1])
        fn = by_name[region.qualname]
        owner_doc = class_docs.get(region.qualname.rpartition(".")[0], "")
        for comment in banner(region, fn, owner_doc, skip):
            out.append(region.indent + comment + newline)
        out.append(stub_line(region) + newline)
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
            stub = stub_line(region)
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


