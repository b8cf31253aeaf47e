"""Mutants: realistic single mistakes in the reference's student files, and honest rewrites that are correct.

Each :class:`Mutant` is a small textual patch of the reference's ``layers.py``,
``models.py`` or ``optim.py``: ``edits`` are ``(old, new)`` pairs whose
``old`` occurs exactly once in the file (one mistake may need the same edit
in forward and backward, as a student who misunderstands a reshape makes it
in both). ``targets`` are the check targets the mistake may cost: the first
is the function it breaks; the others are reached legitimately, through the
forward's cache (batch norm's statistics), or a forward that raises and
leaves backward no cache. A layer another layer calls (batch norm inside
spatial batch norm) is served from the reference while the caller is graded,
so its bugs never reach the caller's checks.
The suite also lets any mutant cost its layers' timing checks (timing is
scored only on right answers) and the end-to-end check. ``diagnosis`` is a
substring the grader's likely cause must contain; ``story`` says what the
student did.

:data:`HONEST` lists correct rewrites (other loops, other groupings): they must
score full marks, timing included, with no diagnosis.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Mutant", "MUTANTS", "HONEST", "apply"]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    edits: tuple
    targets: tuple
    diagnosis: str
    story: str = ""


def apply(text: str, mutant: Mutant) -> str:
    """``text`` with every edit of ``mutant`` applied; each old snippet must occur exactly once."""
    for old, new in mutant.edits:
        count = text.count(old)
        assert count == 1, f"{mutant.name}: the snippet occurs {count} times in {mutant.file}: {old!r}"
        text = text.replace(old, new)
    return text


M = Mutant
BN_FWD = ("BatchNorm.forward", "BatchNorm.backward", "BatchNorm.backward_alt")

MUTANTS = [
    # ---------------------------------------------------------------- Linear, ReLU
    M("linear_forward_no_bias", "layers.py",
      (("out = x.reshape(x.shape[0], -1) @ w + b", "out = x.reshape(x.shape[0], -1) @ w"),),
      ("Linear.forward",), "bias",
      "forgets to add b"),
    M("linear_backward_dx_flat", "layers.py",
      (("dx = (dout @ w.T).reshape(x.shape)", "dx = dout @ w.T"),),
      ("Linear.backward",), "reshape",
      "returns dx flattened to (N, D) instead of x's shape"),
    M("linear_backward_dw_transposed", "layers.py",
      (("dw = x.reshape(N, D).T @ dout", "dw = dout.T @ x.reshape(N, D)"),),
      ("Linear.backward",), "transpose",
      "multiplies in the wrong order: dw is (M, D)"),
    M("linear_backward_db_mean", "layers.py",
      (("db = dout.sum(axis=0)\n        # END SOLUTION\n        return dx, dw, db\n\n\nclass ReLU",
        "db = dout.mean(axis=0)\n        # END SOLUTION\n        return dx, dw, db\n\n\nclass ReLU"),),
      ("Linear.backward",), "1/N",
      "averages db over the batch"),
    M("relu_backward_relu_of_dout", "layers.py",
      (("dx = dout * (x > 0)", "dx = np.maximum(dout, 0)"),),
      ("ReLU.backward",), "sign of x",
      "applies ReLU to dout instead of masking it with x > 0"),
    M("relu_backward_ge", "layers.py",
      (("dx = dout * (x > 0)", "dx = dout * (x >= 0)"),),
      ("ReLU.backward",), "x == 0",
      "lets the gradient through where x is exactly 0"),
    # ---------------------------------------------------------------- Conv
    M("conv_forward_no_bias", "layers.py",
      (("out[n, f, i, j] = np.sum(window * w[f]) + b[f]", "out[n, f, i, j] = np.sum(window * w[f])"),),
      ("Conv.forward",), "bias",
      "forgets the bias"),
    M("conv_forward_flipped_kernel", "layers.py",
      (("out[n, f, i, j] = np.sum(window * w[f]) + b[f]",
        "out[n, f, i, j] = np.sum(window * w[f, :, ::-1, ::-1]) + b[f]"),),
      ("Conv.forward",), "rotates by 180 degrees",
      "computes a true convolution (kernel rotated 180 degrees) instead of PyTorch's cross-correlation"),
    M("conv_forward_ceil", "layers.py",
      (("out = np.empty((g.N, g.F, g.H_out, g.W_out), dtype=x.dtype)\n        for n in range(g.N):\n"
        "            for f in range(g.F):\n                for i in range(g.H_out):\n"
        "                    for j in range(g.W_out):\n                        window = xp[n, :,",
        "H_out = 1 + int(np.ceil((g.H + 2 * p - g.HH) / s))\n"
        "        W_out = 1 + int(np.ceil((g.W + 2 * p - g.WW) / s))\n"
        "        out = np.empty((g.N, g.F, H_out, W_out), dtype=x.dtype)\n        for n in range(g.N):\n"
        "            for f in range(g.F):\n                for i in range(H_out):\n"
        "                    for j in range(W_out):\n                        window = xp[n, :,"),),
      ("Conv.forward",), "floor",
      "rounds the output size up"),
    M("conv_backward_crop_p_minus_p", "layers.py",
      (("dx = dxp[:, :, p:p + g.H, p:p + g.W].copy()\n        # END SOLUTION\n        return dx, dw, db",
        "dx = dxp[:, :, p:-p, p:-p].copy()\n        # END SOLUTION\n        return dx, dw, db"),),
      ("Conv.backward",), "p:-p",
      "crops the padding with p:-p, which is empty when pad is 0"),
    M("conv_backward_no_crop", "layers.py",
      (("dx = dxp[:, :, p:p + g.H, p:p + g.W].copy()\n        # END SOLUTION\n        return dx, dw, db",
        "dx = dxp\n        # END SOLUTION\n        return dx, dw, db"),),
      ("Conv.backward",), "padded input",
      "returns the gradient of the padded input"),
    M("conv_backward_flipped_kernel", "layers.py",
      (("dxp[n, :, hs:hs + g.HH, ws:ws + g.WW] += d * w[f]",
        "dxp[n, :, hs:hs + g.HH, ws:ws + g.WW] += d * w[f, :, ::-1, ::-1]"),),
      ("Conv.backward",), "rotat",
      "sprays dout with the rotated filter (mixing the two views of the backward pass)"),
    M("conv_backward_no_stride", "layers.py",
      (("hs, ws = i * s, j * s", "hs, ws = i, j"),),
      ("Conv.backward",), "stride",
      "forgets the stride when locating each output's window in backward"),
    M("conv_backward_db_mean", "layers.py",
      (("db = dout.sum(axis=(0, 2, 3))", "db = dout.mean(axis=(0, 2, 3))"),),
      ("Conv.backward",), "db",
      "averages db instead of summing it"),
    M("conv_backward_dw_one_image", "layers.py",
      (("dw[f] += d * xp[n, :, hs:hs + g.HH, ws:ws + g.WW]", "dw[f] = d * xp[n, :, hs:hs + g.HH, ws:ws + g.WW]"),),
      ("Conv.backward",), "accumulat",
      "assigns dw[f] instead of adding to it"),
    M("conv_forward_ij_swapped", "layers.py",
      (("window = xp[n, :, i * s:i * s + g.HH, j * s:j * s + g.WW]",
        "window = xp[n, :, j * s:j * s + g.HH, i * s:i * s + g.WW]"),),
      # pad 0 gives a non-square output whose last windows run off the input: forward raises, and the backward
      # check, which needs the forward's cache, cannot run either.
      ("Conv.forward", "Conv.backward", "Conv.backward_alt"), "swapped",
      "mixes up the row and column loop variables"),
    M("conv_backward_alt_no_rot180", "layers.py",
      (("correlate.full_correlate2d(d, correlate.rot180(w).transpose(1, 0, 2, 3))",
        "correlate.full_correlate2d(d, w.transpose(1, 0, 2, 3))"),),
      ("Conv.backward_alt",), "rotat",
      "correlates the zero-inserted gradient with the filters as stored, not rotated by 180 degrees"),
    M("conv_backward_db_keepdims", "layers.py",
      (("db = dout.sum(axis=(0, 2, 3))", "db = dout.sum(axis=(0, 2, 3), keepdims=True)"),),
      ("Conv.backward",), "keepdims",
      "returns db with shape (1, F, 1, 1)"),
    # ---------------------------------------------------------------- MaxPool
    M("maxpool_forward_float64", "layers.py",
      (("xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)\n"
        "        out = np.empty((g.N, g.C, g.H_out, g.W_out), dtype=x.dtype)",
        "xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)\n"
        "        out = np.zeros((g.N, g.C, g.H_out, g.W_out))"),),
      ("MaxPool.forward",), "float64",
      "allocates the output without dtype=, so float32 inputs give a float64 output"),
    M("maxpool_backward_all_ties", "layers.py",
      (("a, bb = np.unravel_index(np.argmax(window), window.shape)\n"
        "                        dxp[n, c, i * s + a, j * s + bb] += dout[n, c, i, j]",
        "dxp[n, c, i * s:i * s + g.pool_height, j * s:j * s + g.pool_width] += "
        "(window == window.max()) * dout[n, c, i, j]"),),
      ("MaxPool.backward",), "tied",
      "sends the gradient to every element equal to the maximum"),
    M("maxpool_backward_assign", "layers.py",
      (("dxp[n, c, i * s + a, j * s + bb] += dout[n, c, i, j]",
        "dxp[n, c, i * s + a, j * s + bb] = dout[n, c, i, j]"),),
      ("MaxPool.backward",), "overlap",
      "assigns instead of accumulating where windows overlap"),
    M("maxpool_forward_ceil", "layers.py",
      (("out = np.empty((g.N, g.C, g.H_out, g.W_out), dtype=x.dtype)\n        for n in range(g.N):\n"
        "            for c in range(g.C):\n                for i in range(g.H_out):\n"
        "                    for j in range(g.W_out):\n"
        "                        out[n, c, i, j] = xp[n, c, i * s:i * s + g.pool_height, "
        "j * s:j * s + g.pool_width].max()",
        "H_out = 1 + -(-(g.H + 2 * p - g.pool_height) // s)\n"
        "        W_out = 1 + -(-(g.W + 2 * p - g.pool_width) // s)\n"
        "        out = np.empty((g.N, g.C, H_out, W_out), dtype=x.dtype)\n        for n in range(g.N):\n"
        "            for c in range(g.C):\n                for i in range(H_out):\n"
        "                    for j in range(W_out):\n"
        "                        out[n, c, i, j] = xp[n, c, i * s:i * s + g.pool_height, "
        "j * s:j * s + g.pool_width].max()"),),
      ("MaxPool.forward",), "ceil",
      "rounds the output size up (PyTorch's ceil_mode)"),
    M("maxpool_zero_padding", "layers.py",
      (("xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)\n"
        "        out = np.empty((g.N, g.C, g.H_out, g.W_out), dtype=x.dtype)",
        "xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))\n"
        "        out = np.empty((g.N, g.C, g.H_out, g.W_out), dtype=x.dtype)"),
       ("xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)\n        dxp = np.zeros_like(xp)",
        "xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))\n        dxp = np.zeros_like(xp)")),
      ("MaxPool.forward", "MaxPool.backward"), "-inf",
      "pads with zeros, so a window of negative values at the border returns 0"),
    # ---------------------------------------------------------------- AvgPool
    M("avgpool_divisor_without_padding", "layers.py",
      (("out[n, c, i, j] = xp[n, c, i * s:i * s + g.pool_height, j * s:j * s + g.pool_width].mean()",
        "inside = np.pad(np.ones((g.H, g.W)), p)[i * s:i * s + g.pool_height, j * s:j * s + g.pool_width]\n"
        "                        out[n, c, i, j] = xp[n, c, i * s:i * s + g.pool_height, "
        "j * s:j * s + g.pool_width].sum() / inside.sum()"),),
      ("AvgPool.forward",), "padding",
      "divides by the number of real (unpadded) elements (count_include_pad=False)"),
    M("avgpool_backward_no_divide", "layers.py",
      (("scale = x.dtype.type(1.0 / (ph * pw))", "scale = x.dtype.type(1.0)"),),
      ("AvgPool.backward",), "pool_height * pool_width",
      "forgets to divide by the window size"),
    M("avgpool_backward_assign", "layers.py",
      (("dxp[n, c, i * s:i * s + ph, j * s:j * s + pw] += dout[n, c, i, j] * scale",
        "dxp[n, c, i * s:i * s + ph, j * s:j * s + pw] = dout[n, c, i, j] * scale"),),
      ("AvgPool.backward",), "overlap",
      "assigns instead of accumulating where windows overlap"),
    # ---------------------------------------------------------------- BatchNorm
    M("bn_unbiased_variance", "layers.py",
      (("var = x.var(axis=0)", "var = x.var(axis=0, ddof=1)"),),
      BN_FWD, "N - 1",
      "uses the unbiased variance (divides by N - 1)"),
    M("bn_momentum_swapped", "layers.py",
      (("running_mean = momentum * running_mean + (1 - momentum) * mean\n"
        "            running_var = momentum * running_var + (1 - momentum) * var",
        "running_mean = (1 - momentum) * running_mean + momentum * mean\n"
        "            running_var = (1 - momentum) * running_var + momentum * var"),),
      ("BatchNorm.forward",), "momentum",
      "weights the batch statistics by momentum instead of 1 - momentum"),
    M("bn_test_uses_batch_statistics", "layers.py",
      (("            mean, var = running_mean, running_var\n",
        "            mean, var = x.mean(axis=0), x.var(axis=0)\n"),),
      BN_FWD, "test mode",
      "normalises with the batch's statistics in test mode too"),
    M("bn_eps_outside_sqrt", "layers.py",
      (("out = gamma * (x - mean) / np.sqrt(var + eps) + beta",
        "out = gamma * (x - mean) / (np.sqrt(var) + eps) + beta"),),
      ("BatchNorm.forward", "BatchNorm.backward", "BatchNorm.backward_alt"), "eps",
      "adds eps outside the square root"),
    M("bn_backward_no_mean_path", "layers.py",
      (("dx = dxc - dxc.sum(axis=0) / N", "dx = dxc"),),
      ("BatchNorm.backward",), "mean",
      "forgets the gradient that flows through the batch mean"),
    M("bn_backward_dgamma_uses_x", "layers.py",
      (("dgamma = (dout * xhat).sum(axis=0)\n        dxhat = dout * gamma",
        "dgamma = (dout * x).sum(axis=0)\n        dxhat = dout * gamma"),),
      ("BatchNorm.backward",), "normalised",
      "uses x instead of the normalised x-hat in dgamma"),
    M("bn_backward_alt_no_variance_term", "layers.py",
      (("dx = gamma / (N * std) * (N * dout - dbeta - xhat * dgamma)", "dx = gamma / (N * std) * (N * dout - dbeta)"),),
      ("BatchNorm.backward_alt",), "variance",
      "drops the term that comes from the variance in the closed form"),
    # ---------------------------------------------------------------- SpatialBatchNorm
    M("spatial_bn_reshape_without_transpose", "layers.py",
      (("flat = x.transpose(0, 2, 3, 1).reshape(-1, C)", "flat = x.reshape(-1, C)"),
       ("out = out_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2)", "out = out_flat.reshape(N, C, H, W)"),
       ("dflat = dout.transpose(0, 2, 3, 1).reshape(-1, C)", "dflat = dout.reshape(-1, C)"),
       ("dx = np.ascontiguousarray(dx_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2))",
        "dx = dx_flat.reshape(N, C, H, W)")),
      ("SpatialBatchNorm.forward", "SpatialBatchNorm.backward"), "transpose",
      "reshapes (N, C, H, W) to (-1, C) without moving the channels last"),
    # ---------------------------------------------------------------- Dropout
    M("dropout_p_is_keep", "layers.py",
      (("mask = ((uniform(x.shape) >= drop) / (1.0 - drop)).astype(x.dtype)",
        "mask = ((uniform(x.shape) < drop) / drop).astype(x.dtype)"),),
      ("Dropout.forward",), "keep",
      "reads p as the probability of keeping a unit (CS231n's convention)"),
    M("dropout_not_inverted", "layers.py",
      (("mask = ((uniform(x.shape) >= drop) / (1.0 - drop)).astype(x.dtype)",
        "mask = (uniform(x.shape) >= drop).astype(x.dtype)"),),
      ("Dropout.forward",), "1 / (1 - p)",
      "forgets the inverted-dropout scaling"),
    # ---------------------------------------------------------------- models
    M("twolayer_l2_half", "models.py",
      (('_, grads["W1"], grads["b1"] = Linear_ReLU.backward(dh, cache1)\n        loss = self._add_reg(loss, grads)',
        '_, grads["W1"], grads["b1"] = Linear_ReLU.backward(dh, cache1)\n'
        '        for k in ("W1", "W2"):\n'
        '            loss += 0.5 * self.reg * np.sum(self.params[k] ** 2)\n'
        '            grads[k] = grads[k] + self.reg * self.params[k]'),),
      ("TwoLayerNet.loss",), "0.5",
      "regularises with 0.5 * reg * sum(W**2), CS231n's convention"),
    M("twolayer_reg_on_biases", "models.py",
      (('_, grads["W1"], grads["b1"] = Linear_ReLU.backward(dh, cache1)\n        loss = self._add_reg(loss, grads)',
        '_, grads["W1"], grads["b1"] = Linear_ReLU.backward(dh, cache1)\n'
        '        for k in ("W1", "b1", "W2", "b2"):\n'
        '            loss += self.reg * np.sum(self.params[k] ** 2)\n'
        '            grads[k] = grads[k] + 2 * self.reg * self.params[k]'),),
      ("TwoLayerNet.loss",), "bias",
      "regularises the biases too"),
    M("twolayer_reg_missing_from_grads", "models.py",
      (('_, grads["W1"], grads["b1"] = Linear_ReLU.backward(dh, cache1)\n        loss = self._add_reg(loss, grads)',
        '_, grads["W1"], grads["b1"] = Linear_ReLU.backward(dh, cache1)\n'
        '        for k in ("W1", "W2"):\n'
        '            loss += self.reg * np.sum(self.params[k] ** 2)'),),
      ("TwoLayerNet.loss",), "gradient",
      "adds the L2 term to the loss but not to the gradients"),
    M("twolayer_reg_missing_from_loss", "models.py",
      (('_, grads["W1"], grads["b1"] = Linear_ReLU.backward(dh, cache1)\n        loss = self._add_reg(loss, grads)',
        '_, grads["W1"], grads["b1"] = Linear_ReLU.backward(dh, cache1)\n'
        '        for k in ("W1", "W2"):\n'
        '            grads[k] = grads[k] + 2 * self.reg * self.params[k]'),),
      ("TwoLayerNet.loss",), "loss",
      "adds the L2 term to the gradients but not to the loss"),
    M("twolayer_softmax_sum", "models.py",
      (("loss, dscores = softmax_loss(scores, y)\n        dh, grads",
        "loss, dscores = softmax_loss(scores, y)\n"
        "        loss, dscores = loss * X.shape[0], dscores * X.shape[0]\n        dh, grads"),),
      ("TwoLayerNet.loss",), "average",
      "sums the softmax loss over the batch instead of averaging it"),
    M("fcn_skips_dropout_backward", "models.py",
      (("            if drop_cache is not None:\n                dout = Dropout.backward(dout, drop_cache)\n", ""),),
      ("FullyConnectedNet.loss",), "Dropout.backward",
      "applies dropout in the forward pass but not in the backward pass"),
    M("threelayer_init_no_scale", "models.py",
      (("self.params[key] = (weight_scale * rng.standard_normal(shape)).astype(self.dtype)",
        "self.params[key] = rng.standard_normal(shape).astype(self.dtype)"),),
      ("ThreeLayerConvNet.__init__", "ThreeLayerConvNet.loss"), "weight_scale",
      "forgets to scale the initial weights"),
    M("deepconvnet_init_swapped_channels", "models.py",
      (('self.params[f"W{i}"] = draw(prev, F, 3, True)', 'self.params[f"W{i}"] = draw(F, prev, 3, True)'),),
      ("DeepConvNet.__init__",), "another order",
      "passes the filter counts to the initialiser in the wrong order"),
    M("deepconvnet_gamma_zero", "models.py",
      (('self.params[f"gamma{i}"] = np.ones(F, dtype=self.dtype)',
        'self.params[f"gamma{i}"] = np.zeros(F, dtype=self.dtype)'),),
      ("DeepConvNet.__init__",), "gamma",
      "starts batch norm's scale at zero"),
    M("kaiming_forgets_kk", "models.py",
      (("fan_in, shape = Din * K * K, (Dout, Din, K, K)", "fan_in, shape = Din, (Dout, Din, K, K)"),),
      ("kaiming_initializer",), "K * K",
      "uses fan_in = Din for a convolution"),
    M("kaiming_gain_outside_sqrt", "models.py",
      (("weight = rng.standard_normal(shape) * np.sqrt(gain / fan_in)",
        "weight = rng.standard_normal(shape) * gain / np.sqrt(fan_in)"),),
      ("kaiming_initializer",), "gain",
      "puts the gain outside the square root"),
    # ---------------------------------------------------------------- optimizers
    M("momentum_sign", "optim.py",
      (('v = config["momentum"] * v - config["learning_rate"] * dw',
        'v = config["momentum"] * v + config["learning_rate"] * dw'),),
      ("sgd_momentum",), "sign",
      "adds the gradient to the velocity"),
    M("momentum_old_velocity", "optim.py",
      (('v = config["momentum"] * v - config["learning_rate"] * dw\n    next_w = w + v',
        'next_w = w + v\n    v = config["momentum"] * v - config["learning_rate"] * dw'),),
      ("sgd_momentum",), "velocity",
      "steps with the old velocity, then updates it"),
    M("rmsprop_eps_inside_sqrt", "optim.py",
      (('dw / (np.sqrt(cache) + config["epsilon"])', 'dw / np.sqrt(cache + config["epsilon"])'),),
      ("rmsprop",), "epsilon",
      "adds epsilon inside the square root"),
    M("rmsprop_decay_swapped", "optim.py",
      (("cache = rho * cache + (1 - rho) * dw * dw", "cache = (1 - rho) * cache + rho * dw * dw"),),
      ("rmsprop",), "decay_rate",
      "weights the new squared gradient by decay_rate"),
    M("adam_t_after_correction", "optim.py",
      (("    t = t + 1\n    m = beta1 * m + (1 - beta1) * dw\n    v = beta2 * v + (1 - beta2) * dw * dw\n"
        "    m_hat = m / (1 - beta1 ** t)\n    v_hat = v / (1 - beta2 ** t)\n",
        "    m = beta1 * m + (1 - beta1) * dw\n    v = beta2 * v + (1 - beta2) * dw * dw\n"
        "    m_hat = m / (1 - beta1 ** t)\n    v_hat = v / (1 - beta2 ** t)\n    t = t + 1\n"),),
      ("adam",), "t",
      "increments t after the bias correction (the first step divides by zero)"),
    M("adam_no_bias_correction", "optim.py",
      (("m_hat = m / (1 - beta1 ** t)\n    v_hat = v / (1 - beta2 ** t)", "m_hat = m\n    v_hat = v"),),
      ("adam",), "bias correction",
      "forgets the bias correction"),
    M("adam_sign", "optim.py",
      (('next_w = w - config["learning_rate"] * m_hat', 'next_w = w + config["learning_rate"] * m_hat'),),
      ("adam",), "sign",
      "steps along the gradient instead of against it"),
]

HONEST = [
    M("honest_conv_forward_channel_loop", "layers.py",
      (("window = xp[n, :, i * s:i * s + g.HH, j * s:j * s + g.WW]\n"
        "                        out[n, f, i, j] = np.sum(window * w[f]) + b[f]",
        "total = b[f]\n"
        "                        for c in range(g.C):\n"
        "                            total = total + np.sum(xp[n, c, i * s:i * s + g.HH, "
        "j * s:j * s + g.WW] * w[f, c])\n"
        "                        out[n, f, i, j] = total"),),
      (), "", "a channel loop inside the window loop"),
    M("honest_maxpool_backward_mask", "layers.py",
      (("window = xp[n, c, i * s:i * s + g.pool_height, j * s:j * s + g.pool_width]\n"
        "                        a, bb = np.unravel_index(np.argmax(window), window.shape)\n"
        "                        dxp[n, c, i * s + a, j * s + bb] += dout[n, c, i, j]",
        "window = xp[n, c, i * s:i * s + g.pool_height, j * s:j * s + g.pool_width]\n"
        "                        mask = np.zeros(window.size, dtype=bool)\n"
        "                        mask[np.flatnonzero(window == window.max())[0]] = True\n"
        "                        dxp[n, c, i * s:i * s + g.pool_height, j * s:j * s + g.pool_width] += "
        "mask.reshape(window.shape) * dout[n, c, i, j]"),),
      (), "", "a mask holding only the first maximum"),
    M("honest_bn_backward_staged", "layers.py",
      (("            dstd = -(dxhat * xc).sum(axis=0) / std ** 2\n"
        "            dvar = dstd / (2 * std)\n"
        "            dxc = dxhat / std + 2 * xc * dvar / N\n"
        "            dx = dxc - dxc.sum(axis=0) / N\n",
        "            dvar = np.sum(dxhat * xc, axis=0) * -0.5 * (var + eps) ** -1.5\n"
        "            dmean = np.sum(-dxhat / std, axis=0) + dvar * np.mean(-2.0 * xc, axis=0)\n"
        "            dx = dxhat / std + dvar * 2.0 * xc / N + dmean / N\n"),),
      (), "", "the course's staged graph: dvar and dmean, then dx"),
    M("honest_avgpool_backward_offsets", "layers.py",
      (("        for n in range(g.N):\n            for c in range(g.C):\n                for i in range(g.H_out):\n"
        "                    for j in range(g.W_out):\n"
        "                        dxp[n, c, i * s:i * s + ph, j * s:j * s + pw] += dout[n, c, i, j] * scale\n",
        "        for a in range(ph):\n            for bb in range(pw):\n"
        "                dxp[:, :, a:a + s * g.H_out:s, bb:bb + s * g.W_out:s] += dout * scale\n"),),
      (), "", "loops over window offsets instead of output positions"),
    M("honest_conv_backward_tensordot", "layers.py",
      (("        for n in range(g.N):\n            for f in range(g.F):\n                for i in range(g.H_out):\n"
        "                    for j in range(g.W_out):\n"
        "                        # Each output spreads its gradient over the window it read (the \"spray\" view of conv backward).\n"
        "                        hs, ws = i * s, j * s\n                        d = dout[n, f, i, j]\n"
        "                        dw[f] += d * xp[n, :, hs:hs + g.HH, ws:ws + g.WW]\n"
        "                        dxp[n, :, hs:hs + g.HH, ws:ws + g.WW] += d * w[f]\n",
        "        for i in range(g.H_out):\n            for j in range(g.W_out):\n"
        "                hs, ws = i * s, j * s\n"
        "                d = dout[:, :, i, j]\n"
        "                dw += np.tensordot(d, xp[:, :, hs:hs + g.HH, ws:ws + g.WW], axes=([0], [0]))\n"
        "                dxp[:, :, hs:hs + g.HH, ws:ws + g.WW] += np.tensordot(d, w, axes=([1], [0]))\n"),),
      (), "", "loops over output positions only, batch and filters by tensordot"),
    M("honest_adam_inplace_config", "optim.py",
      (("    t = t + 1\n    m = beta1 * m + (1 - beta1) * dw\n    v = beta2 * v + (1 - beta2) * dw * dw\n"
        "    m_hat = m / (1 - beta1 ** t)\n    v_hat = v / (1 - beta2 ** t)\n"
        '    next_w = w - config["learning_rate"] * m_hat / (np.sqrt(v_hat) + config["epsilon"])\n',
        "    t += 1\n    m = m * beta1 + dw * (1 - beta1)\n    v = v * beta2 + (dw ** 2) * (1 - beta2)\n"
        '    step = config["learning_rate"] * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)\n'
        '    next_w = w - step * m / (np.sqrt(v) + config["epsilon"] * np.sqrt(1 - beta2 ** t))\n'),),
      (), "", "the paper's folded bias correction (same numbers, other rounding)"),
    M("honest_kaiming_normal", "models.py",
      (("weight = rng.standard_normal(shape) * np.sqrt(gain / fan_in)",
        "weight = rng.normal(0.0, (gain / fan_in) ** 0.5, size=shape)"),),
      (), "", "rng.normal with the standard deviation as an argument"),
]
