"""The visible checks' expected outputs on their public inputs, shipped with a student release.

A release has the reference stubbed, so it cannot compute them: the release
generator evaluates every visible check's public inputs with the reference
and writes ``public_expected.npz`` (plain arrays, no pickle) beside this
file. In a release the visible checks read it. The instructor's grader never
does: there every check runs on fresh inputs from the secret seed, so
reproducing these outputs earns nothing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["PUBLIC_EXPECTED", "build_public_expected", "load_public_expected", "shipped_shapes"]

PUBLIC_EXPECTED = Path(__file__).with_name("public_expected.npz")
PREFIX = "c."


def build_public_expected(path) -> Path:
    """Evaluate every visible check's public inputs with the trusted reference; write an .npz (no pickle)."""
    from grader.checks import visible_checks

    path = Path(path)
    if path.is_dir() or path.suffix != ".npz":
        path = path / PUBLIC_EXPECTED.name
    store = {}
    for check in visible_checks():
        prep = check.prepare(check.rng(0, public=True), PREFIX)
        for key, value in check.expected(prep).items():
            store[f"{check.name}/{key}"] = np.asarray(value)
        if hasattr(check, "param_shapes"):
            for key, shape in check.param_shapes().items():
                store[f"{check.name}/shape:{key}"] = np.asarray(shape, dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **store)
    tmp.replace(path)
    return path


def _entries(name: str) -> dict:
    if not PUBLIC_EXPECTED.is_file():
        raise FileNotFoundError(f"{PUBLIC_EXPECTED} is missing: the release should ship it")
    out = {}
    with np.load(PUBLIC_EXPECTED, allow_pickle=False) as z:
        for key in z.files:
            check, _, sub = key.partition("/")
            if check == name:
                out[sub] = z[key]
    return out


def load_public_expected(check) -> dict:
    """The shipped expected values of a visible check (keys as :meth:`Check.expected` returns them)."""
    return {k: v for k, v in _entries(check.name).items() if not k.startswith("shape:")}


def shipped_shapes(name: str) -> dict:
    """``{parameter: shape}`` shipped for a visible model check."""
    return {k[6:]: tuple(int(d) for d in v) for k, v in _entries(name).items() if k.startswith("shape:")}
