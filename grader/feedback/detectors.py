"""Structural detectors: patterns in how a wrong answer differs from the expected one.

Each detector looks at one failing answer (or the exception the student's
code raised) and says what the pattern suggests, in the student's terms: a
constant ratio and what it equals (the window size, the batch size, the
number of output positions, 2, -1), a constant offset per channel, errors
only where windows overlap or only where they cover the padding, a
transposed array or swapped axes, errors only at the last index of an axis,
a shape that is the padded, flattened, empty or ceil-rounded one, a changed
dtype, an update that goes uphill, weights whose spread is off by a
recognisable factor. :func:`find` returns ``(cause, answer name)`` pairs.
"""
from __future__ import annotations

import math
from itertools import permutations

import numpy as np

__all__ = ["find", "DETECTORS", "table"]

AXES4 = ("N (batch)", "C (channels)", "H (rows)", "W (columns)")

# What each detector looks for and what it reports (the README's table reads this).
DETECTORS = [
    ("ratio", "answer = r * expected with r constant", "names r (-1, 2, 1/2, N, H'*W', window size, ...)"),
    ("offset", "answer - expected constant along all but the channel axis", "bias or beta added wrongly"),
    ("overlap", "errors only at inputs inside several windows", "assigned (=) instead of accumulated (+=)"),
    ("border", "errors only in windows that cover padding", "padding value or divisor"),
    ("transpose", "answer equals the expected with two axes swapped", "transposed / axes mixed up"),
    ("last index", "errors only at the last index of one axis", "a loop range off by one"),
    ("shape", "padded, flattened, empty (p:-p at pad 0), ceil-rounded, keepdims shapes", "the slicing or formula"),
    ("dtype", "float64 answer for float32 inputs", "an array created without dtype="),
    ("uphill", "update step points against the expected step", "sign error in the update"),
    ("spread", "weights' std off by a factor", "fan_in, gain or scale"),
    ("exception", "broadcast error with a stride that does not divide; float sizes", "ceil or / in the size"),
]


def out_size(n: int, k: int, s: int, p: int, ceil: bool = False) -> int:
    """Window positions along one axis, rounded down (the layers' rule) or up (the mistake)."""
    span = n + 2 * p - k
    return 1 + (-(-span // s) if ceil else span // s)


def table() -> str:
    """The detectors as a Markdown table (README's)."""
    rows = ["| detector | pattern in the wrong answer | what it suggests |", "|---|---|---|"]
    rows += [f"| {name} | {pattern} | {suggests} |" for name, pattern, suggests in DETECTORS]
    return "\n".join(rows)


def _pool_geometry(case):
    """``(kh, kw, stride, pad)`` of a windowed layer's call, or None."""
    if case.layer == "Conv":
        w, p = case.arrays["w"], case.params["conv_param"]
        return w.shape[2], w.shape[3], p["stride"], p["pad"]
    if case.layer in ("MaxPool", "AvgPool"):
        p = case.params["pool_param"]
        return p["pool_height"], p["pool_width"], p["stride"], p.get("pad", 0)
    return None


def _window_of(case) -> str:
    return "HH * WW" if case.layer == "Conv" else "pool_height * pool_width"


def _factors(case) -> list:
    """``(value, label, hint when too large, hint when too small)`` for this case's recognisable factors."""
    out = [(2.0, "2", "a factor 2 is extra (a 0.5 in the formula cancels it)",
            "a factor 2 is missing (the derivative of x**2 is 2x)")]
    if case.kind in ("forward", "backward", "state") and case.arrays:
        x = case.arrays[next(iter(case.arrays))]
        N = x.shape[0]
        out.append((float(N), "N (the batch size)", "it is summed where the batch mean is needed, or a 1/N is missing",
                    "it is averaged over the batch where it should be summed"))
        geo = _pool_geometry(case)
        if geo:
            kh, kw, s, p = geo
            Ho, Wo = out_size(x.shape[2], kh, s, p), out_size(x.shape[3], kw, s, p)
            k = _window_of(case)
            out.append((float(kh * kw), f"{k} (the window size)", f"a division by {k} is missing",
                        f"it is divided by {k} once too often"))
            out.append((float(Ho * Wo), "H_out * W_out", "it sums where it should average over output positions",
                        "it is averaged over the output positions where it should be summed"))
            out.append((float(N * Ho * Wo), "N * H_out * W_out", "it is summed where a mean is needed",
                        "it is averaged over the batch and output positions where it should be summed"))
    if case.kind == "loss":
        N = case.prep.state["X"].shape[0]
        out.append((float(N), "N (the batch size)", "the loss is summed over the batch instead of averaged",
                    "it is divided by N once too often"))
    return out


def _rel(case) -> float:
    """How closely two float arrays of the case's dtype can agree after different rounding."""
    return 1e-4 if case.dtype == "float32" else 1e-6


def _ratio(case, name, got, want):
    g, w = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
    big = np.abs(w) > 1e-3 * np.max(np.abs(w))
    if not big.any():
        return []
    r, rel = float(np.median(g[big] / w[big])), _rel(case)
    if not np.isfinite(r) or abs(r - 1) < rel or abs(r) < 1e-12:
        return []
    if np.max(np.abs(g - r * w)) > 10 * rel * max(float(np.max(np.abs(g))), 1e-300) + 1e-12:
        return []
    if abs(r + 1) < rel:
        return [f"{name} has the opposite sign everywhere: a minus sign is missing or extra."]
    for value, label, big_hint, small_hint in _factors(case):
        if abs(r - value) < rel * value:
            return [f"{name} is exactly {label} times the expected values: {big_hint}."]
        if abs(r - 1 / value) < rel / value:
            return [f"{name} is exactly 1/({label}) of the expected values: {small_hint}."]
    return [f"{name} is exactly {r:.6g} times the expected values everywhere: a constant factor is off."]


def _offset(case, name, got, want):
    if name != "out" or got.ndim < 2:
        return []
    d = got.astype(np.float64) - want
    axes = tuple(i for i in range(d.ndim) if i != 1)
    per = d.mean(axis=axes, keepdims=True)
    if np.max(np.abs(d - per)) > _rel(case) * max(float(np.max(np.abs(d))), 1e-300) or not np.any(per):
        return []
    where = "filter" if case.layer == "Conv" else "channel" if got.ndim == 4 else "output column"
    b = case.arrays.get("b", case.arrays.get("beta"))
    rtol = 10 * _rel(case)
    if b is not None and np.allclose(per.ravel(), -b, rtol=rtol, atol=rtol * case.scale):
        return [f"out differs by exactly -b for each {where}: the bias is not added."]
    if b is not None and np.allclose(per.ravel(), b, rtol=rtol, atol=rtol * case.scale):
        return [f"out differs by exactly +b for each {where}: the bias is added twice."]
    return [f"out differs from the expected by a constant for each {where}: check the term added per {where} "
            f"(the bias or beta)."]


def _error_mask(case, name, got, want):
    scale = max(float(np.max(np.abs(want))), case.scale, 1e-300)
    return np.abs(got.astype(np.float64) - want) > 0.1 * _rel(case) * scale + case.allow(name)


def _overlap(case, name, got, want):
    geo = _pool_geometry(case)
    if geo is None or name != "dx" or got.ndim != 4:
        return []
    from convnet.stride import overlap_count

    kh, kw, s, p = geo
    try:
        count = overlap_count(got.shape[2:], (kh, kw), s, p)
    except (ValueError, TypeError):
        return []
    bad = _error_mask(case, name, got, want).any(axis=(0, 1))
    if bad.any() and np.all(count[bad] > 1) and np.any(count == 1):
        return ["dx is wrong only at inputs that lie in several windows: where windows overlap, each window's "
                "gradient must be added (+=), not assigned."]
    return []


def _border_masks(case):
    """``(out mask, input mask)``: output windows that cover padding, and the inputs those windows read."""
    kh, kw, s, p = _pool_geometry(case)
    H, W = case.arrays["x"].shape[2:]
    Ho, Wo = out_size(H, kh, s, p), out_size(W, kw, s, p)
    rows = np.array([i * s < p or i * s + kh > H + p for i in range(Ho)])
    cols = np.array([j * s < p or j * s + kw > W + p for j in range(Wo)])
    out_mask = rows[:, None] | cols[None, :]
    in_mask = np.zeros((H + 2 * p, W + 2 * p), bool)
    for i, j in zip(*np.nonzero(out_mask)):
        in_mask[i * s:i * s + kh, j * s:j * s + kw] = True
    return out_mask, in_mask[p:p + H, p:p + W]


def _border(case, name, got, want):
    geo = _pool_geometry(case)
    if geo is None or geo[3] == 0 or name not in ("out", "dx") or got.ndim != 4:
        return []
    out_mask, in_mask = _border_masks(case)
    mask = out_mask if name == "out" else in_mask
    if mask.shape != got.shape[2:] or mask.all():
        return []
    bad = _error_mask(case, name, got, want).any(axis=(0, 1))
    if not (bad.any() and np.all(mask[bad])):
        return []
    hint = {"Conv": "zero-pad pad rows and columns on every side, and crop them off dx",
            "MaxPool": "the padding must never be the maximum (-inf)",
            "AvgPool": "the padding counts in every window's divisor, pool_height * pool_width"}[case.layer]
    return [f"{name} is wrong only where windows cover the padding: {hint}."]


def _transposed(case, name, got, want):
    tol = dict(rtol=10 * _rel(case), atol=10 * _rel(case) * case.scale)
    if got.ndim == 2 and got.shape[0] == got.shape[1] and np.allclose(got, want.T, **tol):
        return [f"{name} is transposed."]
    if got.ndim == 4:
        for a, b in ((2, 3), (0, 1), (1, 2), (1, 3)):
            if got.shape[a] == got.shape[b] and np.allclose(got, np.swapaxes(want, a, b), **tol):
                return [f"{name} has the axes {AXES4[a]} and {AXES4[b]} swapped."]
    return []


def _last_index(case, name, got, want):
    bad = _error_mask(case, name, got, want)
    if got.ndim < 2 or not bad.any():
        return []
    for axis in range(got.ndim):
        n = got.shape[axis]
        if n < 2:
            continue
        hit = np.moveaxis(bad, axis, 0).reshape(n, -1).any(axis=1)
        if hit[-1] and not hit[:-1].any():
            label = AXES4[axis] if got.ndim == 4 else f"axis {axis}"
            return [f"{name} is wrong only at the last index of {label}: a loop's range stops one short, or the "
                    f"output size is off by one."]
    return []


def _values(case, name, got, want):
    if not np.any(got) and np.any(want):
        return [f"{name} is all zeros: it is never filled in, or never added to the array that is returned."]
    for detect in (_ratio, _offset, _overlap, _border, _transposed, _last_index):
        causes = detect(case, name, got, want)
        if causes:
            return causes
    return []


def _sizes(case, ceil=False, plus_one=True, with_pad=True):
    kh, kw, s, p = _pool_geometry(case)
    H, W = case.arrays["x"].shape[2:]
    p = p if with_pad else 0
    return tuple(out_size(n, k, s, p, ceil) - (0 if plus_one else 1) for n, k in ((H, kh), (W, kw)))


def _shape(case, name, got, want):
    gs, ws = tuple(got.shape), tuple(want.shape)
    geo = _pool_geometry(case) if case.kind in ("forward", "backward") else None
    if 0 in gs and geo is not None and geo[3] == 0:
        return [f"{name} has shape {gs}, with an empty axis: slicing p:-p selects nothing when pad is 0; slice "
                f"p:p+H and p:p+W instead."]
    if 0 in gs:
        return [f"{name} has shape {gs}, with an empty axis: a slice selects nothing."]
    if geo is not None and len(gs) == 4 == len(ws) and gs[:2] == ws[:2]:
        p = geo[3]
        if name == "dx" and p and gs[2:] == (ws[2] + 2 * p, ws[3] + 2 * p):
            return [f"dx has the padded shape {gs}: crop pad = {p} rows and columns from each side to get x's "
                    f"shape {ws}."]
        rule = "H_out = 1 + (H + 2*pad - HH) // stride"
        mistakes = ((dict(ceil=True), f"is rounded up (ceil): {rule} rounds down (floor), like PyTorch"),
                    (dict(plus_one=False), f"misses the + 1: {rule}"),
                    (dict(with_pad=False), f"leaves out the padding: {rule}"))
        for switches, why in mistakes if name == "out" else ():
            if gs[2:] == _sizes(case, **switches) != ws[2:]:
                return [f"out has shape {gs}, expected {ws}: the output size {why}."]
    if got.size == want.size:
        if len(ws) > 2 and gs == (ws[0], int(np.prod(ws[1:]))):
            return [f"{name} is flattened to {gs}: reshape it to {ws}, the shape of the input it belongs to."]
        if len(ws) == 2 and len(gs) > 2 and gs[0] == ws[0]:
            return [f"{name} has shape {gs}: flatten each example to get {ws}."]
        if sorted(gs) == sorted(ws) and len(gs) <= 4:
            for perm in permutations(range(len(ws))):
                if tuple(ws[i] for i in perm) == gs and np.allclose(got, np.transpose(want, perm), rtol=1e-5,
                                                                      atol=1e-9):
                    what = "transposed" if len(ws) == 2 else f"with its axes in the order {perm}"
                    return [f"{name} has shape {gs}, expected {ws}: it is {what}."]
        squeezed = tuple(d for d in gs if d != 1)
        if squeezed == tuple(d for d in ws if d != 1):
            return [f"{name} has shape {gs}, expected {ws}: a length-1 axis is kept or missing (keepdims, or "
                    f"a reshape)."]
        return [f"{name} has shape {gs}, expected {ws}, with the same number of elements: a reshape is wrong."]
    return []


def _drawn_shape(name, gs, ws):
    """A random initialisation of the wrong shape: compare dimensions only (its values are random)."""
    label = name.removeprefix("p:")
    if sorted(gs) == sorted(ws):
        layout = "(filters, channels, K, K)" if len(ws) == 4 else "(inputs, outputs)"
        return [f"{label} has shape {gs}, expected {ws}: the right dimensions in another order; a weight is "
                f"{layout}."]
    return [f"{label} has shape {gs}, expected {ws}."]


def _dtype(case, name, got, want):
    if want.dtype == np.float32 and got.dtype == np.float64:
        return [f"{name} is float64 for float32 inputs: an array made without dtype= (np.zeros(shape) is float64) "
                f"or a float64 constant upcasts it; create arrays with x.dtype."]
    return [f"{name} is {got.dtype}; the expected dtype is {want.dtype}."]


def _errors(case):
    causes = []
    geo = _pool_geometry(case) if case.kind in ("forward", "backward") else None
    for e in case.answers.errors.values():
        msg = f"{e.get('type', '')}: {e.get('message', '')}"
        if "cannot be interpreted as an integer" in msg or "slice indices must be integers" in msg:
            causes.append("An output size or index is a float: compute sizes with // (floor division), not /.")
        elif geo is not None and ("broadcast" in msg or "out of bounds" in msg):
            kh, kw, s, p = geo
            H, W = case.arrays["x"].shape[2:]
            if (H + 2 * p - kh) % s or (W + 2 * p - kw) % s:
                causes.append("With this stride the last window would run past the padded input: the output size "
                              "must round down, H_out = 1 + (H + 2*pad - HH) // stride.")
    return causes


def _uphill(case):
    got, want = case.got("next_w"), case.want("next_w")
    if got is None or want is None or np.shape(got) != np.shape(want):
        return []
    w = case.prep.state["w"]
    if float(np.sum((got - w) * (want - w))) < 0:
        return ["The update goes uphill: its step points against the expected step (a sign error in the step or "
                "in the state it uses)."]
    return []


def _spread(case):
    c = case.check
    w = case.answers.values.get("w.w")
    if w is None:
        return []
    K = c.K or 1
    want = math.sqrt((2.0 if c.relu else 1.0) / (c.Din * K * K))
    r = float(w.std()) / want
    for value, label in ((K, "K"), (1 / K, "1/K"), (math.sqrt(2), "sqrt(2)"), (1 / math.sqrt(2), "1/sqrt(2)")):
        if value != 1 and abs(r - value) < 0.05 * value:
            return [f"The weights' standard deviation is about {label} times sqrt(gain / fan_in): check fan_in "
                    f"(Din * K * K for a convolution) and the gain (2 with ReLU, 1 without)."]
    return []


def _initial_loss(case):
    """With tiny weights the loss is about log(C): name the factor when it is off by N, or 0."""
    loss, want = case.got("loss"), case.want("loss")
    if loss is None or want is None or np.size(loss) != 1:
        return []
    loss, want = float(np.asarray(loss)), float(np.asarray(want))
    N = case.prep.state["X"].shape[0]
    if abs(loss - N * want) < 0.05 * N * want:
        return [f"The initial loss is about N * log(C) = {N * want:.3g}: the softmax loss is summed over the batch "
                f"instead of averaged."]
    if abs(loss) < 1e-12:
        return ["The loss is 0: it is never computed or never returned."]
    if loss > 2 * want:
        return [f"The initial loss is {loss:.3g}, far above log(C) = {want:.3g}: the initial weights are too large "
                f"(draw them with standard deviation weight_scale)."]
    return []


def _guarded(detect, *args) -> list:
    """A detector's causes; one that cannot read these answers (odd shapes, NaN) says nothing."""
    try:
        return list(detect(*args))
    except Exception:  # noqa: BLE001 - a diagnosis is a bonus and never fails the feedback
        return []


def _one(case, name) -> list:
    got, want = case.got(name), case.want(name)
    if got is None or want is None:
        return []
    got, want, label = np.asarray(got), np.asarray(want), name
    if case.kind == "optim" and name == "next_w" and got.shape == want.shape:
        w = case.prep.state["w"]
        got, want, label = got - w, want - w, "the step (next_w - w)"
    if got.shape != want.shape:
        return _shape(case, label, got, want)
    if got.dtype != want.dtype and got.dtype.kind == want.dtype.kind == "f":
        return _dtype(case, label, got, want)
    return _values(case, label, got, want)


def _drawn(case, name) -> list:
    got, shape = case.got(name), case.shape(name)
    if got is None or shape is None or np.shape(got) == shape:
        return []
    return _drawn_shape(name, tuple(np.shape(got)), shape)


def find(case) -> list:
    """``(cause, answer name or None)`` for every pattern found, exceptions first."""
    found = [(c, None) for c in _guarded(_errors, case)]
    if case.kind == "optim":
        found += [(c, "next_w") for c in _guarded(_uphill, case)]
    if case.kind == "kaiming":
        found += [(c, None) for c in _guarded(_spread, case)]
    if case.kind == "loss" and case.check.initial:
        return found + [(c, "loss") for c in _guarded(_initial_loss, case)]
    one = _drawn if case.kind in ("init", "kaiming") else _one
    for name in case.failing():
        found += [(c, name) for c in _guarded(one, case, name)]
    return found
