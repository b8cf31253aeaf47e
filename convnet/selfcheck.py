"""``python -m convnet check``: every layer's forward and backward against independent computations.

Each layer of the table (:data:`convnet.specs.LAYERS`) runs on its ``check``
geometry in float64: the forward pass is compared with the table's
vectorised formulation written from the definition, each backward pass with
centred finite differences of the layer's own forward. A function that still
raises ``NotImplementedError`` (a stub of the student starter) gets a TODO
row and the check goes on with the rest. The exit code is 1 unless every row
passes, so the command works in scripts and CI.
"""
from __future__ import annotations

import argparse
import time
import traceback

import numpy as np

from convnet import losses
from convnet.gradcheck import compute_numeric_gradient, rel_error
from convnet.specs import LAYERS

# Tolerances for float64: forward agrees to rounding, finite differences to ~1e-8.
FORWARD_TOL = 1e-10
BACKWARD_TOL = 1e-7


class _Todo(Exception):
    """A stub that is not implemented yet."""


def _run(fn, *args):
    try:
        return fn(*args)
    except NotImplementedError as exc:
        raise _Todo(str(exc) or getattr(fn, "__qualname__", "a stub")) from None


def _forward_out(layer, call):
    return layer.forward(*call.copy().args())[0]


def _layer_rows(spec, rng) -> list[dict]:
    layer = spec.naive_class
    base = spec.call(rng, "check")
    rows = []
    t0 = time.perf_counter()
    row = {"layer": f"{spec.name}.forward", "forward": None, "backward": None, "status": "PASS", "note": ""}
    try:
        out = _run(_forward_out, layer, base)
        if spec.independent is not None and not spec.stochastic:
            row["forward"] = rel_error(out, spec.independent(base.copy()))
            if not row["forward"] < FORWARD_TOL:
                row["status"] = "FAIL"
    except _Todo as exc:
        row.update(status="TODO", note=str(exc))
        out = None
    except Exception as exc:  # noqa: BLE001 - a student's error is a row, not a crash
        row.update(status="FAIL", note=_short(exc))
        out = None
    row["seconds"] = time.perf_counter() - t0
    rows.append(row)
    for method in spec.backwards:
        t0 = time.perf_counter()
        row = {"layer": f"{spec.name}.{method}", "forward": None, "backward": None, "status": "PASS", "note": ""}
        if out is None:
            row.update(status="SKIP", note=f"needs {spec.name}.forward")
        else:
            try:
                row["backward"] = _backward_error(spec, layer, method, base, out, rng)
                if not row["backward"] < BACKWARD_TOL:
                    row["status"] = "FAIL"
            except _Todo as exc:
                row.update(status="TODO", note=str(exc))
            except Exception as exc:  # noqa: BLE001
                row.update(status="FAIL", note=_short(exc))
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    return rows


def _backward_error(spec, layer, method, base, out, rng):
    dout = rng.standard_normal(out.shape)
    _, cache = layer.forward(*base.copy().args())
    analytic = _run(getattr(layer, method), dout, cache)
    analytic = analytic if isinstance(analytic, tuple) else (analytic,)
    errors = []
    for k, name in enumerate(spec.arrays):
        point = base.copy()

        def f(_, point=point):
            return layer.forward(*point.copy().args())[0]

        numeric = compute_numeric_gradient(f, point.arrays[name], dout, h=1e-6)
        errors.append(rel_error(analytic[k], numeric))
    return max(errors)


def _short(exc) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {exc} ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})"[:160]


def _loss_rows(rng) -> list[dict]:
    rows = []
    for name, fn in (("softmax_loss", losses.softmax_loss), ("svm_loss", losses.svm_loss)):
        scores, y = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
        t0 = time.perf_counter()
        _, dx = fn(scores, y)
        num = compute_numeric_gradient(lambda s: np.array(fn(s, y)[0]), scores, h=1e-6)
        err = rel_error(dx, num)
        rows.append({"layer": name, "forward": None, "backward": err, "note": "",
                     "status": "PASS" if err < BACKWARD_TOL else "FAIL", "seconds": time.perf_counter() - t0})
    return rows


def run_checks(seed: int = 0) -> list[dict]:
    """Run every layer check in float64; returns one dict per function (forward, each backward, losses)."""
    rng = np.random.default_rng(seed)
    rows = []
    for spec in LAYERS.values():
        rows += _layer_rows(spec, rng)
    return rows + _loss_rows(rng)


def format_table(rows: list[dict]) -> str:
    def fmt(v):
        return "-" if v is None else f"{v:.2e}"

    lines = [f"{'function':28s} {'forward err':>12s} {'backward err':>13s} {'time':>8s}  result", "-" * 72]
    for row in rows:
        line = (f"{row['layer']:28s} {fmt(row['forward']):>12s} {fmt(row['backward']):>13s} "
                f"{row['seconds'] * 1e3:6.0f}ms  {row['status']}")
        if row["status"] == "TODO":
            line += "  not implemented yet"
        elif row["note"]:
            line += "  " + row["note"]
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convnet check", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    args = parser.parse_args(argv)
    rows = run_checks(args.seed)
    print(format_table(rows))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("PASS", "FAIL", "TODO", "SKIP")}
    print(f"\n{counts['PASS']}/{len(rows)} pass, {counts['FAIL']} fail, {counts['TODO']} not implemented yet"
          f" (forward tolerance {FORWARD_TOL:g}, backward tolerance {BACKWARD_TOL:g}, float64)")
    bad = [r["layer"] for r in rows if r["status"] == "FAIL"]
    if bad:
        print("failed: " + ", ".join(bad))
    return 0 if counts["PASS"] == len(rows) else 1
