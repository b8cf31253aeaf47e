"""The one comparison every check uses: an answer against the expected array, scaled to the data.

An answer passes when ``max|got - want| <= rtol * max|want| + atol * scale +
allow``. ``rtol`` and ``atol`` depend on the dtype of the computation;
``scale`` is the size of the data that produced the expected value (its
inputs, the upstream gradient, the output itself), so a quantity that is
zero in exact arithmetic (the conv bias's gradient behind batch norm) is
compared as zero: its rounding noise is measured against the data, never
against itself. ``allow`` adds a measured error of the expected value (the
finite-difference error of a numeric gradient).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Tolerance", "TOLERANCES", "Comparison", "compare", "scale_of", "rel_error"]


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


# float64 answers agree with the reference to ~1e-14; the bound leaves room for any summation order.
TOLERANCES = {
    "float64": Tolerance(rtol=1e-7, atol=1e-11),
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
}


def rel_error(x, y) -> float:
    """EECS 498's global relative error ``max|x - y| / max(|x| + |y|)`` (for display, never a verdict)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size == 0:
        return 0.0
    denom = float(np.max(np.abs(x) + np.abs(y)))
    return float(np.max(np.abs(x - y)) / denom) if denom > 0 else 0.0


def scale_of(*arrays) -> float:
    """The size of the data behind a computation: the largest magnitude among ``arrays`` (at least 1e-300)."""
    best = 0.0
    for a in arrays:
        a = np.asarray(a)
        if a.size and a.dtype.kind in "fiub":
            best = max(best, float(np.max(np.abs(a.astype(np.float64)))))
    return max(best, 1e-300)


@dataclass
class Comparison:
    """The outcome of comparing one answer; ``worst`` lists (index, expected, got) of the largest errors."""

    name: str
    ok: bool
    error: float
    allowed: float
    relative: float
    worst: list = field(default_factory=list)
    got: object = field(default=None, repr=False)
    want: object = field(default=None, repr=False)

    def line(self) -> str:
        verdict = "ok" if self.ok else "differs"
        return (f"{self.name}: {verdict}, max error {self.error:.2e} (allowed {self.allowed:.2e}; "
                f"relative error {self.relative:.2e})")


def compare(name: str, got, want, *, scale: float, dtype="float64", allow: float = 0.0,
            tolerance: Tolerance | None = None, worst: int = 3) -> Comparison:
    """Compare ``got`` with ``want`` (same shape) in float64; see the module docstring for the bound."""
    tol = tolerance or TOLERANCES[np.dtype(dtype).name]
    g = np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    if g.shape != w.shape:
        raise ValueError(f"{name}: cannot compare shapes {g.shape} and {w.shape}")
    if g.size == 0:
        return Comparison(name, True, 0.0, 0.0, 0.0, got=g, want=w)
    diff = np.abs(g - w)
    error = float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf")
    allowed = tol.rtol * float(np.max(np.abs(w))) + tol.atol * float(scale) + float(allow)
    ok = bool(error <= allowed)
    top = []
    if not ok:
        flat = np.nan_to_num(diff, nan=np.inf).reshape(-1)
        for i in np.argsort(-flat, kind="stable")[:worst]:
            if flat[i] <= allowed:
                break
            index = tuple(int(k) for k in np.unravel_index(int(i), g.shape))
            top.append((index, float(w.reshape(-1)[i]), float(g.reshape(-1)[i])))
    return Comparison(name, ok, error, allowed, rel_error(g, w), top, got=np.asarray(got), want=np.asarray(want))
