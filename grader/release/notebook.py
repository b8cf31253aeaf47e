"""The student notebook: a percent-format script converted to a Jupyter notebook (nbformat 4.5 JSON).

The notebook's one source is ``templates/ConvolutionalNetworks.py``, a plain
Python script reviewed and run as code; :func:`make_release` writes it into
the starter as ``ConvolutionalNetworks.ipynb``. The format is the subset of
the "percent" format (as Jupytext and editors read it) that this module
accepts:

* ``# %%`` starts a code cell, ``# %% [markdown]`` a markdown cell; other
  text after ``# %%`` is a title and is dropped;
* every line of a markdown cell is a comment: ``# text`` becomes ``text``
  and ``#`` an empty line;
* blank lines at the start and end of a cell are dropped;
* only blank lines may come before the first cell.

A bad source raises :class:`NotebookSourceError` naming the file and line.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SOURCE", "NOTEBOOK_NAME", "NotebookSourceError", "Cell", "parse_percent", "to_notebook",
           "convert", "write_notebook", "notebook_lines"]

SOURCE = Path(__file__).with_name("templates") / "ConvolutionalNetworks.py"
NOTEBOOK_NAME = "ConvolutionalNetworks.ipynb"

_MARKER = re.compile(r"^# %%(?P<rest>.*)$")
_KIND = re.compile(r"\[(\w+)\]")
_METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


class NotebookSourceError(ValueError):
    """A notebook source that is not valid percent format; ``filename`` and ``line`` say where."""

    def __init__(self, filename: str, line: int, message: str):
        super().__init__(f"{filename}:{line}: {message}")
        self.filename, self.line = filename, line


@dataclass
class Cell:
    """One cell: ``kind`` ("code" or "markdown"), its text, and the source line of its marker."""

    kind: str
    text: str
    line: int


def _trim(lines: list) -> list:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _uncomment(line: str, filename: str, number: int) -> str:
    if not line.strip():
        return ""
    if line == "#":
        return ""
    if line.startswith("# "):
        return line[2:]
    raise NotebookSourceError(filename, number, f"a markdown cell's lines must start with '# ' (or be '#'), got "
                                                f"{line!r}")


def parse_percent(text: str, filename: str = "<notebook>") -> list:
    """The cells of a percent-format script, in order.

    Raises
    ------
    NotebookSourceError
        Text before the first cell, an unknown cell kind, a markdown line that is not a comment,
        a code cell that does not parse as Python, or no cells at all.
    """
    cells, kind, start, body = [], None, 0, []

    def close():
        lines = body
        if kind == "markdown":
            lines = [_uncomment(line, filename, start + 1 + i) for i, line in enumerate(body)]
        lines = _trim(lines)
        source = "\n".join(lines)
        if kind == "code":
            try:
                ast.parse(source, filename=filename)
            except SyntaxError as exc:
                lead = next(i for i, line in enumerate(body) if line.strip())
                raise NotebookSourceError(filename, start + lead + (exc.lineno or 1),
                                          f"the code cell of line {start} does not parse: {exc.msg}") from None
        if lines:
            cells.append(Cell(kind, source, start))

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        m = _MARKER.match(line)
        if m is None:
            if kind is None:
                if line.strip():
                    raise NotebookSourceError(filename, number, "text before the first cell marker ('# %%')")
                continue
            body.append(line)
            continue
        if kind is not None:
            close()
        rest = m.group("rest")
        if rest and not rest.startswith(" "):
            raise NotebookSourceError(filename, number, f"a cell marker is '# %%' followed by a space, got {line!r}")
        found = _KIND.search(rest)
        kind = found.group(1) if found else "code"
        if kind not in ("code", "markdown"):
            raise NotebookSourceError(filename, number, f"unknown cell kind [{kind}]; use '# %%' or "
                                                        f"'# %% [markdown]'")
        start, body = number, []
    if kind is None:
        raise NotebookSourceError(filename, 1, "no cells: a cell starts with '# %%'")
    close()
    return cells


def _source_lines(text: str) -> list:
    # nbformat stores a cell's source as its lines, each but the last ending in a newline.
    return text.splitlines(keepends=True)


def to_notebook(cells: list) -> dict:
    """An nbformat 4.5 notebook (a JSON-ready dict) with the cells, unexecuted."""
    out = []
    for i, cell in enumerate(cells, start=1):
        entry = {"cell_type": cell.kind, "id": f"cell-{i:03d}", "metadata": {}, "source": _source_lines(cell.text)}
        if cell.kind == "code":
            entry = {**entry, "execution_count": None, "outputs": []}
        out.append(entry)
    return {"cells": out, "metadata": _METADATA, "nbformat": 4, "nbformat_minor": 5}


def convert(text: str, filename: str = "<notebook>") -> str:
    """The notebook JSON (as Jupyter writes it: one-space indent, UTF-8, final newline) of a percent script."""
    return json.dumps(to_notebook(parse_percent(text, filename)), indent=1, ensure_ascii=False) + "\n"


def write_notebook(source, dest) -> int:
    """Convert the percent script ``source`` into the notebook file ``dest``; returns the number of cells."""
    source, dest = Path(source), Path(dest)
    text = source.read_text(encoding="utf-8")
    notebook = convert(text, source.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(notebook, encoding="utf-8")
    return len(json.loads(notebook)["cells"])


def notebook_lines(text: str) -> list:
    """Every line of a notebook's cell sources and text outputs, cell by cell (what a reader sees).

    Raises
    ------
    ValueError
        ``text`` is not a notebook's JSON.
    """
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a notebook: {exc}") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError("not a notebook: no list of cells")
    lines = []

    def add(value):
        if isinstance(value, list):
            value = "".join(v for v in value if isinstance(v, str))
        if isinstance(value, str):
            lines.extend(value.splitlines())

    for cell in nb["cells"]:
        if not isinstance(cell, dict):
            continue
        add(cell.get("source"))
        for output in cell.get("outputs") or ():
            if isinstance(output, dict):
                add(output.get("text"))
                data = output.get("data")
                if isinstance(data, dict):
                    add(data.get("text/plain"))
    return lines
