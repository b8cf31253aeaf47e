"""The TODO banner that replaces a solution region: what to compute, from the code around it."""
from __future__ import annotations

import ast
import re
import textwrap

__all__ = ["banner", "class_docs_of"]

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


def banner(region, fn: ast.AST, owner_doc: str, skip, width: int = 88) -> list:
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


def class_docs_of(tree: ast.AST) -> dict:
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


