"""The misconception catalogue: known mistakes, each computed on a failing check's own inputs.

A :class:`Misconception` names the computations it applies to (a layer of the
table, ``"model"``, an update rule, ``"kaiming"``, ``"init"``), the cause a
student reads, what gives it away (the README's table), and how to compute
it: switches of the matching function of :mod:`grader.feedback.variants`
(``fwd`` for the forward pass and what it leaves in the cache, ``bwd`` for
the backward pass), or a ``predict`` function of its own. A prediction is a
dict of answers under logical names; it is the likely cause when it changes
a failing answer and the student's answers equal it on every judged answer
it changes (:meth:`grader.feedback.diagnosis.Case.explains`). A predicate
(``predict`` returning a bool) decides on statistics instead (dropout,
initialisation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from grader.feedback import variants as V

__all__ = ["Misconception", "CATALOGUE", "find"]


@dataclass(frozen=True)
class Misconception:
    applies: tuple
    cause: str
    tell: str
    fwd: dict = field(default_factory=dict)
    bwd: dict = field(default_factory=dict)
    predict: Callable | None = None


# ---------------------------------------------------------------- evaluators: a layer's answers under switches


def _conv(case, fwd, bwd):
    a, p = case.arrays, case.params["conv_param"]
    s, pad = p["stride"], p["pad"]
    res = {"out": V.conv_forward(a["x"], a["w"], a["b"], s, pad, **fwd)}
    if case.dout is not None:
        res["dx"], res["dw"], res["db"] = V.conv_backward(a["x"], a["w"], case.dout, s, pad, **bwd)
    return res


def _pool(kind):
    def evaluate(case, fwd, bwd):
        x, p = case.arrays["x"], case.params["pool_param"]
        geo = (p["pool_height"], p["pool_width"], p["stride"], p.get("pad", 0), kind)
        res = {"out": V.pool_forward(x, *geo, **fwd)}
        if case.dout is not None:
            res["dx"] = V.pool_backward(x, case.dout, *geo, **bwd)
        return res
    return evaluate


def _batchnorm(case, fwd, bwd):
    a, bn = case.arrays, case.params["bn_param"]
    out, rm, rv, mean, var = V.bn_forward(a["x"], a["gamma"], a["beta"], bn, **fwd)
    res = {"out": out, "running_mean": rm, "running_var": rv}
    if case.dout is not None:
        res["dx"], res["dgamma"], res["dbeta"] = V.bn_backward(a["x"], a["gamma"], case.dout, mean, var,
                                                               bn.get("eps", 1e-5), bn["mode"], **bwd)
    return res


def _spatial(case, fwd, bwd):
    a, bn = case.arrays, case.params["bn_param"]
    fwd = dict(fwd)
    transpose = fwd.pop("transpose", True)
    out, rm, rv, dx, dgamma, dbeta = V.spatial_bn(a["x"], a["gamma"], a["beta"], bn, case.dout, transpose=transpose,
                                                  fwd=fwd, bwd=bwd)
    return {"out": out, "running_mean": rm, "running_var": rv, "dx": dx, "dgamma": dgamma, "dbeta": dbeta}


def _linear(case, fwd, bwd):
    a = case.arrays
    out, dx, dw, db = V.linear(a["x"], a["w"], a["b"], case.dout, **fwd, **bwd)
    return {"out": out, "dx": dx, "dw": dw, "db": db}


def _relu(case, fwd, bwd):
    res = {"out": np.maximum(np.asarray(case.arrays["x"], dtype=np.float64), 0)}
    if case.dout is not None:
        res["dx"] = V.relu_backward(case.arrays["x"], case.dout, **bwd)
    return res


def _optim(case, fwd, bwd):
    next_w, state = V.update(case.check.rule, case.prep.state["w"], case.prep.state["dw"], case.config, **fwd)
    return {"next_w": next_w, **state}


EVALUATE = {"Conv": _conv, "MaxPool": _pool("max"), "AvgPool": _pool("avg"), "BatchNorm": _batchnorm,
            "SpatialBatchNorm": _spatial, "Linear": _linear, "ReLU": _relu}


# ---------------------------------------------------------------- models: variants of the expected loss and gradients


def _model_parts(case):
    kw, st = case.check.kwargs, case.prep.state
    reg = float(kw.get("reg", 0.0))
    weights = {k: v for k, v in st["params"].items() if k.startswith("W")}
    others = {k: v for k, v in st["params"].items() if not k.startswith("W")}
    return reg, weights, others


def _reg_variant(loss_w=1.0, grad_w=1.0, biases=False, data_factor=None, grads_only=False):
    """The expected answers with the L2 term weighted differently (or the data term scaled by N).

    ``grads_only`` scales the data term of the gradients but not of the loss.
    """
    def predict(case):
        reg, weights, others = _model_parts(case)
        if reg == 0 and data_factor is None:
            return None
        R = reg * sum(float(np.sum(w * w)) for w in weights.values())
        pred = {"loss": np.asarray(float(case.want("loss")) + (loss_w - 1) * R)}
        for k, w in weights.items():
            pred[f"g:{k}"] = case.want(f"g:{k}") + (grad_w - 1) * 2 * reg * w
        if biases:
            pred["loss"] = pred["loss"] + reg * sum(float(np.sum(v * v)) for v in others.values())
            pred.update({f"g:{k}": case.want(f"g:{k}") + 2 * reg * v for k, v in others.items()})
        if data_factor is not None:
            n = data_factor(case)
            if not grads_only:
                pred["loss"] = np.asarray(n * (float(case.want("loss")) - R) + R)
            for k in case.prep.state["params"]:
                g = case.want(f"g:{k}")
                w = weights.get(k)
                pred[f"g:{k}"] = n * g if w is None else n * (g - 2 * reg * w) + 2 * reg * w
        return pred
    return predict


def _fcn_dropout(dropout_backward):
    def predict(case):
        kw, st = case.check.kwargs, case.prep.state
        if case.check.cls != "FullyConnectedNet" or not kw.get("dropout"):
            return None
        reg, weights, _ = _model_parts(case)
        p = 0.0 if dropout_backward == "off" else float(kw["dropout"])
        loss, grads = V.fcn_loss(st["params"], st["X"], st["y"], layers=len(weights), p=p, seed=kw.get("seed"),
                                 dropout_backward=dropout_backward is True)
        loss += reg * sum(float(np.sum(w * w)) for w in weights.values())
        pred = {"loss": np.asarray(loss), **{f"g:{k}": g + 2 * reg * weights.get(k, 0) for k, g in grads.items()}}
        return pred
    return predict


# ---------------------------------------------------------------- statistics: initialisation and dropout


def _kaiming(std_of):
    """A predicate: the weights' std matches ``std_of(gain, Din, Dout, K)`` and not the right one."""
    def predict(case):
        c = case.check
        w = case.answers.values.get("w.w")
        if w is None:
            return False
        gain = 2.0 if c.relu else 1.0
        K = c.K or 1
        want = math.sqrt(gain / (c.Din * K * K))
        alt = std_of(gain, c.Din, c.Dout, K)
        if alt is None or abs(alt - want) <= 0.06 * want:
            return False
        margin = max(0.03, 12 / math.sqrt(w.size)) * alt
        return abs(float(w.std()) - alt) <= margin
    return predict


def _init_unscaled(case):
    c, vals = case.check, case.answers.values
    scale = c.kwargs.get("weight_scale", 1e-3)
    stds = [float(v.std()) for k, v in vals.items() if k.startswith("init.p:W") and v.size > 1]
    return bool(stds) and abs(scale - 1) > 0.1 and all(abs(s - 1) < 0.2 for s in stds)


def _init_bias_random(case):
    vals = case.answers.values
    biases = [v for k, v in vals.items() if k.startswith(("init.p:b", "init.p:beta"))]
    return bool(biases) and any(np.any(v != 0) for v in biases)


def _init_gamma(case):
    gammas = [v for k, v in case.answers.values.items() if k.startswith("init.p:gamma")]
    return bool(gammas) and any(np.any(v != 1) for v in gammas)


def _dropout(test):
    def predict(case):
        v = case.answers.values
        out, dx, te = v.get("tr.out"), v.get("tr.d0"), v.get("te.out")
        x, p, dout = case.arrays["x"], float(case.params["dropout_param"]["p"]), case.dout
        if out is None:
            return False
        kept = out != 0
        frac = 1 - float(kept.mean())
        spread = 6 * math.sqrt(p * (1 - p) / x.size)
        ratio = float(np.median(out[kept] / x[kept])) if kept.any() else 0.0
        return test(p=p, frac=frac, spread=spread, ratio=ratio, x=x, out=out, kept=kept, dx=dx, test=te, dout=dout)
    return predict


def _close(a, b, rtol=1e-3) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)


def _same(a, b) -> bool:
    return a is not None and b is not None and a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-4, atol=1e-6))


# ---------------------------------------------------------------- the catalogue

M = Misconception
BN = ("BatchNorm", "SpatialBatchNorm")

CATALOGUE = [
    # Linear, ReLU
    M(("Linear",), "Linear.forward leaves out the bias: add b to every row of x.reshape(N, D) @ w.",
      "out minus expected is -b in every row", fwd=dict(bias=False)),
    M(("Linear",), "Linear.backward returns dx flattened to (N, D): reshape it to x's shape (N, d1, ..., dk).",
      "dx has shape (N, D) and the right values", bwd=dict(flat_dx=True)),
    M(("Linear",), "Linear.backward returns dw transposed: dw has w's shape (D, M), the flattened x transposed "
                   "times dout.", "dw equals the expected transposed", bwd=dict(dw_transposed=True)),
    M(("Linear",), "Linear.backward averages db over the batch (1/N too small): db is the sum of dout over the N "
                   "rows.", "db is the expected divided by N", bwd=dict(db_mean=True)),
    M(("ReLU",), "ReLU.backward applies ReLU to dout: the gradient passes where the input x > 0 and is zero "
                 "elsewhere; the sign of x decides, not the sign of dout.", "dx = max(dout, 0)",
      bwd=dict(relu_of_dout=True)),
    M(("ReLU",), "ReLU.backward lets the gradient through where x == 0: it flows only where x > 0 (strictly), as "
                 "PyTorch's.", "dx differs only where x is exactly 0", bwd=dict(at_zero=True)),
    M(("ReLU",), "ReLU.backward passes dout through unchanged: zero it where the input x <= 0.", "dx = dout",
      bwd=dict(unmasked=True)),
    # Conv
    M(("Conv",), "Conv.forward leaves out the bias: add b[f] to every output of filter f.",
      "out minus expected is -b[f] in every channel f", fwd=dict(bias=False)),
    M(("Conv",), "Conv.forward flips (rotates by 180 degrees) the filter: the layer is a cross-correlation, like "
                 "PyTorch's conv2d: multiply each window by w[f] as stored.", "out equals the rotated-filter "
                                                                            "convolution", fwd=dict(flip=True)),
    M(("Conv",), "dx is the gradient sprayed with the filter rotated by 180 degrees: when each output sprays its "
                 "gradient back over the window it read (backward), use w[f] as stored; when the zero-inserted "
                 "gradient is fully correlated with the filters (backward_alt), rotate them (rot180).",
      "dx equals the rotated-filter spray", bwd=dict(flip=True)),
    M(("Conv",), "Conv.backward ignores the stride: output (i, j) read the window starting at row i*stride, "
                 "column j*stride, and its gradient goes back to that window.",
      "dx and dw equal those of windows taken at stride 1", bwd=dict(ignore_stride=True)),
    M(("Conv",), "Conv.backward averages db: db[f] is the sum of dout[:, f] over the batch and every output "
                 "position.", "db is 1/(N*H'*W') of the expected", bwd=dict(db_mean=True)),
    M(("Conv",), "Conv.backward overwrites dw[f] instead of accumulating: every window of every image adds its "
                 "term to dw[f] (+=).", "dw holds only the last window's term", bwd=dict(dw_assign=True)),
    M(("Conv",), "Conv.backward crops the padding with p:-p, which is empty when pad is 0: crop rows p to p+H and "
                 "columns p to p+W.", "dx has a 0-length axis at pad 0", bwd=dict(crop="p:-p")),
    M(("Conv",), "Conv.backward returns the gradient of the padded input: crop pad rows and columns from each "
                 "side so dx has x's shape.", "dx has the padded shape (H+2p, W+2p)", bwd=dict(crop="none")),
    # MaxPool
    M(("MaxPool",), "MaxPool pads with zeros: padding must never win the max (PyTorch pads with -inf), so a "
                    "window of negative values at the border returns its largest real value.",
      "errors only in border windows; equals zero padding", fwd=dict(pad_value=0.0), bwd=dict(pad_value=0.0)),
    M(("MaxPool",), "MaxPool.backward sends the gradient to every tied maximum of a window: only the first maximum "
                    "in row-major order gets it (np.argmax's choice, PyTorch's rule).",
      "dx equals the all-ties gradient on tied inputs", bwd=dict(ties="all")),
    M(("MaxPool",), "MaxPool.backward assigns instead of adding: where overlapping windows pick the same input, "
                    "their gradients add up (+=).", "errors only where windows overlap", bwd=dict(assign=True)),
    # AvgPool
    M(("AvgPool",), "AvgPool divides by the number of real (unpadded) elements: the padding counts in the divisor, "
                    "every window divides by pool_height * pool_width.", "errors only in windows that cover padding",
      fwd=dict(exclude_pad=True)),
    M(("AvgPool",), "AvgPool.backward divides by the number of real (unpadded) elements: every window sends "
                    "dout / (pool_height * pool_width) to each of its positions, padding included.",
      "errors only next to the padding", bwd=dict(exclude_pad=True)),
    M(("AvgPool",), "AvgPool.backward forgets to divide by the window size: each window sends dout / (pool_height "
                    "* pool_width) to each of its inputs.", "dx is pool_height*pool_width times the expected",
      bwd=dict(divide=False)),
    M(("AvgPool",), "AvgPool.backward assigns instead of adding: where windows overlap their gradients add up "
                    "(+=).", "errors only where windows overlap", bwd=dict(assign=True)),
    # BatchNorm and SpatialBatchNorm
    M(BN, "Batch norm uses the unbiased variance (divides by N - 1): normalise with the biased batch variance "
          "(divide by N, np.var's default); backward sees it through the cache.",
      "out matches normalising with var * N/(N-1)", fwd=dict(ddof=1)),
    M(BN, "Batch norm's running averages weight the batch statistics by momentum: running = momentum * running "
          "+ (1 - momentum) * batch statistic.", "running stats match momentum and 1 - momentum swapped",
      fwd=dict(momentum_swapped=True)),
    M(BN, "Batch norm in test mode normalises with the batch's own statistics: test mode must use running_mean and "
          "running_var.", "test-mode out equals train-mode normalisation", fwd=dict(test_batch=True)),
    M(BN, "Batch norm adds eps outside the square root: divide by sqrt(var + eps).",
      "out differs by about eps relative to the data", fwd=dict(eps_outside=True)),
    M(BN, "Batch norm's backward leaves out the path through the batch mean: every x[i] also moves the mean, so dx "
          "loses the batch average of the upstream term (subtract it).", "dx - expected is constant per column",
      bwd=dict(mean_path=False)),
    M(BN, "Batch norm's backward computes dgamma with x instead of the normalised x_hat: dgamma = sum(dout * "
          "x_hat) with x_hat = (x - mean) / sqrt(var + eps).", "dgamma equals sum(dout * x)", bwd=dict(dgamma_x=True)),
    M(BN, "Batch norm's backward drops the variance term: dx = gamma / (N * std) * (N * dout - sum(dout) - x_hat * "
          "sum(dout * x_hat)) has three terms.", "dx misses the x_hat * dgamma term", bwd=dict(variance_term=False)),
    M(("SpatialBatchNorm",), "SpatialBatchNorm reshapes (N, C, H, W) to (-1, C) without moving the channels last: "
                             "transpose to (N, H, W, C) before the reshape, and back after.",
      "out equals the reshape without transpose", fwd=dict(transpose=False)),
    # Dropout (statistics of the student's own mask)
    M(("Dropout",), "p is read as the probability of keeping a unit (CS231n's convention): here p is the probability "
                    "of dropping one, keep with probability 1 - p and scale kept units by 1 / (1 - p).",
      "dropped fraction is 1 - p",
      predict=_dropout(lambda p, frac, spread, **_: abs(frac - (1 - p)) <= spread and abs(frac - p) > spread)),
    M(("Dropout",), "Dropout is not inverted: in training scale the kept units by 1 / (1 - p) so test mode can "
                    "return x unchanged.", "kept units equal x",
      predict=_dropout(lambda p, ratio, **_: p > 0 and _close(ratio, 1.0))),
    M(("Dropout",), "Dropout multiplies the kept units by (1 - p): inverted dropout divides them by (1 - p).",
      "kept units equal x * (1 - p)", predict=_dropout(lambda p, ratio, **_: p > 0 and _close(ratio, 1 - p))),
    M(("Dropout",), "Dropout changes x in test mode: test mode returns x unchanged (the scaling happens in "
                    "training).", "test output differs from x",
      predict=_dropout(lambda x, test, **_: test is not None and not _same(test, x))),
    M(("Dropout",), "Dropout.backward does not use the forward's mask: dx is dout times the same mask (zeros where "
                    "dropped, 1 / (1 - p) where kept).", "dx equals dout",
      predict=_dropout(lambda dx, dout, p, **_: p > 0 and _same(dx, dout))),
    M(("Dropout",), "Dropout.backward forgets the 1 / (1 - p) scale of the kept units: dx is dout times the same "
                    "mask as forward.", "dx equals dout * kept",
      predict=_dropout(lambda dx, dout, kept, p, **_: p > 0 and _same(dx, dout * kept))),
    # models
    M(("model",), "The L2 term has a 0.5 factor: this assignment uses reg * sum(W**2), whose gradient is 2 * reg * "
                  "W, without 0.5 (CS231n's convention differs).", "loss and gradients match the 0.5 factor",
      predict=_reg_variant(0.5, 0.5)),
    M(("model",), "The biases (or batch-norm parameters) are regularised: L2 applies to the weights W only.",
      "gradients of b differ by 2 * reg * b", predict=_reg_variant(biases=True)),
    M(("model",), "The L2 term is in the loss but not in the gradients: add 2 * reg * W to each weight's gradient.",
      "weight gradients miss 2 * reg * W", predict=_reg_variant(grad_w=0.0)),
    M(("model",), "The L2 term is in the gradients but not in the loss: add reg * sum(W**2) over every weight "
                  "matrix to the loss.", "loss misses reg * sum(W**2)", predict=_reg_variant(loss_w=0.0)),
    M(("model",), "No L2 regularisation: add reg * sum(W**2) to the loss and 2 * reg * W to each weight's gradient.",
      "loss and gradients miss the L2 term", predict=_reg_variant(0.0, 0.0)),
    M(("model",), "The softmax loss is summed over the batch: average it (the loss and its gradient are divided by "
                  "N).", "data loss and gradients are N times too large",
      predict=_reg_variant(data_factor=lambda case: case.prep.state["X"].shape[0])),
    M(("model",), "The gradient of the softmax loss is not divided by N: the loss is the batch mean, so dscores "
                  "carries 1/N too.", "loss right, data gradients N times too large",
      predict=_reg_variant(data_factor=lambda case: case.prep.state["X"].shape[0], grads_only=True)),
    M(("model",), "The backward pass skips Dropout.backward: the gradient must go back through the same dropout "
                  "mask as the forward pass.", "gradients match skipping the dropout masks",
      predict=_fcn_dropout(False)),
    M(("model",), "Dropout is not applied in training mode: with dropout > 0 each hidden ReLU output goes through "
                  "Dropout.forward (and its backward).", "loss matches the network without dropout",
      predict=_fcn_dropout("off")),
    M(("init",), "The initial weights are not scaled: draw them with standard deviation weight_scale "
                 "(weight_scale * a standard normal).", "weights' std is about 1",
      predict=_init_unscaled),
    M(("init",), "A bias (or beta) starts nonzero: only the weights are random; biases and betas start at zero, "
                 "gammas at one.", "a bias is nonzero",
      predict=_init_bias_random),
    M(("init",), "A batch-norm gamma does not start at one: gammas start at one and betas at zero, so batch norm "
                 "starts as a plain normalisation.", "a gamma differs from 1", predict=_init_gamma),
    M(("kaiming",), "fan_in of a convolution leaves out K * K: it is Din * K * K (every input channel's K x K "
                    "window).",
      "std is K times too large", predict=_kaiming(lambda g, Din, Dout, K: math.sqrt(g / Din) if K > 1 else None)),
    M(("kaiming",), "fan_in uses Dout: Kaiming initialisation divides by the number of inputs (Din, times K * K for "
                    "a convolution).", "std matches sqrt(gain / (Dout*K*K))",
      predict=_kaiming(lambda g, Din, Dout, K: math.sqrt(g / (Dout * K * K)))),
    M(("kaiming",), "The gain is outside the square root: std = sqrt(gain / fan_in).",
      "std is sqrt(gain) times too large", predict=_kaiming(lambda g, Din, Dout, K: g / math.sqrt(Din * K * K))),
    M(("kaiming",), "The gain does not follow relu: 2 for a layer followed by ReLU, 1 without (std = sqrt(gain / "
                    "fan_in)).", "std matches the other gain",
      predict=_kaiming(lambda g, Din, Dout, K: math.sqrt((3.0 - g) / (Din * K * K)))),
    M(("kaiming",), "The weights' standard deviation is gain / fan_in: the variance is gain / fan_in, so the std is "
                    "its square root.", "std equals the variance",
      predict=_kaiming(lambda g, Din, Dout, K: g / (Din * K * K))),
    # optimizers
    M(("sgd", "sgd_momentum", "rmsprop", "adam"), "The update has the wrong sign: it moves along the gradient, "
                                                  "uphill; each step must go against it (minus learning_rate "
                                                  "times the gradient term).",
      "step equals minus the expected", fwd=dict(sign=-1.0)),
    M(("sgd_momentum",), "The step uses the old velocity: update v = momentum * v - learning_rate * dw first, then "
                         "step with the new v.", "step equals the incoming velocity", fwd=dict(old_velocity=True)),
    M(("rmsprop", "adam"), "epsilon is inside the square root: divide by (sqrt(cache) + epsilon).",
      "step matches sqrt(cache + eps)", fwd=dict(eps_inside=True)),
    M(("rmsprop",), "decay_rate weights the wrong term: cache = decay_rate * cache + (1 - decay_rate) * dw**2.",
      "cache matches the swapped weights", fwd=dict(decay_swapped=True)),
    M(("rmsprop",), "The square root of the cache is missing: divide by sqrt(cache) + epsilon.",
      "step matches dividing by the cache", fwd=dict(no_sqrt=True)),
    M(("adam",), "t is incremented after the bias correction: increment t first, so the first step divides by "
                 "1 - beta**1 (with t = 0 it divides by zero).", "step matches correcting with the old t",
      fwd=dict(t_after=True)),
    M(("adam",), "Adam's bias correction is missing: divide m by (1 - beta1**t) and v by (1 - beta2**t).",
      "step matches the uncorrected moments", fwd=dict(bias_correction=False)),
]


def _subject(case):
    if case.kind in ("forward", "backward", "state", "dropout"):
        return case.layer
    if case.kind == "loss":
        return "model"
    if case.kind == "optim":
        return case.check.rule
    return case.kind


def find(case) -> list:
    """``(cause, names it explains)`` for every catalogued mistake the answers match, in catalogue order.

    A predicate's names are None: it speaks for the whole check.
    """
    subject = _subject(case)
    causes = []
    for m in CATALOGUE:
        if subject not in m.applies:
            continue
        try:
            if m.predict is not None:
                pred = m.predict(case)
            elif subject in EVALUATE:
                pred = EVALUATE[subject](case, m.fwd, m.bwd)
            else:
                pred = _optim(case, m.fwd, m.bwd)
        except Exception:  # noqa: BLE001 - a variant that cannot run on these inputs is no evidence
            continue
        if pred is True:
            causes.append((m.cause, None))
        elif isinstance(pred, dict):
            names = case.explains(pred)
            if names:
                causes.append((m.cause, names))
    return causes


_SUBJECTS = {"model": "models' loss", "init": "models' initial parameters", "kaiming": "kaiming_initializer"}


def table() -> str:
    """The catalogue as a Markdown table (README's): where it applies, the mistake, what gives it away."""
    rows = ["| applies to | mistake | what gives it away |", "|---|---|---|"]
    for m in CATALOGUE:
        mistake = m.cause.split(": ", 1)[0]
        where = ", ".join(_SUBJECTS.get(a, a) for a in m.applies)
        rows.append(f"| {where} | {mistake} | {m.tell} |")
    return "\n".join(rows)
