# %% [markdown]
# # Convolutional networks
#
# EECS 498 assignment 3 on numpy. You implement the naive layers in `convnet/layers.py`, the
# models in `convnet/models.py` and the update rules in `convnet/optim.py`; this notebook runs
# them in the assignment's order:
#
# 1. the convolution, forward and backward;
# 2. max and average pooling, with overlapping windows;
# 3. the fast layers (provided) and their speed-up over yours;
# 4. sandwich layers;
# 5. a three-layer convolutional network: initial loss, gradient check, overfitting a small set,
#    training on 8x8 digits, its first-layer filters;
# 6. a deep convolutional network with Kaiming initialisation;
# 7. batch normalisation;
# 8. how a stride makes windows overlap unevenly, and what that does to gradients.
#
# Each check runs the public inputs of the autograder's visible check of the same name and
# prints the relative error `max|yours - expected| / max(|yours| + |expected|)`, as the course
# does. `python -m grader --explain "Conv.forward"` prints the same check as code. A function
# you have not written yet prints one line, `Conv.forward: not implemented yet`, and the rest of
# the notebook still runs: run it top to bottom after every function you write.
#
# The figures are shown below their cells and written to `figures/`.

# %%
import time
import warnings

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from threadpoolctl import threadpool_limits

import convnet.fast
from convnet import stride
from convnet.data import load_digits
from convnet.fast import FastConv, FastMaxPool
from convnet.gradcheck import compute_numeric_gradient
from convnet.layers import AvgPool, BatchNorm, Conv, MaxPool, SpatialBatchNorm
from convnet.models import DeepConvNet, ThreeLayerConvNet, kaiming_initializer
from convnet.notebook_helpers import attempt, best_time, needs, public_check, report, show, training_figure
from convnet.sandwich import Conv_ReLU, Conv_ReLU_Pool
from convnet.solver import Solver

# Figures are drawn off-screen (matplotlib.figure.Figure, no pyplot) and shown as images by `show`.
matplotlib.use("Agg")

# One thread for BLAS and the fast kernels: these networks are tiny, and extra threads cost more than they bring.
_limits = threadpool_limits(1)
convnet.fast.set_num_threads(1)
# Without ipywidgets tqdm draws a text progress bar; its warning saying so is noise here.
warnings.filterwarnings("ignore", message="IProgress not found")
np.set_printoptions(precision=4, suppress=True, linewidth=100)
rng = np.random.default_rng(0)
print("compiled fast path:", convnet.fast.HAVE_CYTHON)

# %% [markdown]
# ## 1. Convolution
#
# ### Forward pass
#
# `Conv.forward(x, w, b, conv_param)` takes `x` of shape (N, C, H, W), filters `w` (F, C, HH, WW)
# and biases `b` (F,); `conv_param` has the `stride` and the zero padding `pad`. The output has
# shape (N, F, H', W') with `H' = 1 + (H + 2 * pad - HH) // stride` (and the same for W'). Loops
# are fine here: the fast layers come later. The relative error should be below 1e-7.

# %%
case = public_check("Conv.forward")
print(case.description)
x, w, b, conv_param = case.args
with attempt():
    out, _ = Conv.forward(x, w, b, conv_param)
    report("out", out, case.out)

# %% [markdown]
# ### Backward pass
#
# `Conv.backward(dout, cache)` returns `dx`, `dw` and `db`. The expected values are centred
# finite differences of the convolution, computed by the grader; the errors should be below 1e-7.

# %%
case = public_check("Conv.backward vs finite differences")
print(case.description)
x, w, b, conv_param = case.args
with attempt():
    out, cache = Conv.forward(x, w, b, conv_param)
    grads = Conv.backward(case.dout, cache)
    for name, got, want in zip(("dx", "dw", "db"), grads, case.grads):
        report(name, got, want)

# %% [markdown]
# ## 2. Pooling
#
# ### Max pooling
#
# `MaxPool.forward(x, pool_param)` takes the maximum over each `pool_height` x `pool_width`
# window, moved by `stride`. Backward sends each window's gradient to the input that was its
# maximum (the first one in row-major order when there are ties, as PyTorch does).

# %%
case = public_check("MaxPool.forward")
print(case.description)
x, pool_param = case.args
with attempt():
    out, _ = MaxPool.forward(x, pool_param)
    report("out", out, case.out)

case = public_check("MaxPool.backward vs finite differences")
print(case.description)
x, pool_param = case.args
with attempt():
    out, cache = MaxPool.forward(x, pool_param)
    report("dx", MaxPool.backward(case.dout, cache), case.grads[0])

# %% [markdown]
# ### Average pooling
#
# `AvgPool` has the same arguments and averages each window instead. Backward spreads each
# window's gradient evenly over its `pool_height * pool_width` inputs.

# %%
case = public_check("AvgPool.forward")
print(case.description)
x, pool_param = case.args
with attempt():
    out, _ = AvgPool.forward(x, pool_param)
    report("out", out, case.out)

case = public_check("AvgPool.backward vs finite differences")
print(case.description)
x, pool_param = case.args
with attempt():
    out, cache = AvgPool.forward(x, pool_param)
    report("dx", AvgPool.backward(case.dout, cache), case.grads[0])

# %% [markdown]
# ### Overlapping windows: a worked example
#
# When the stride is smaller than the window, windows overlap, and one input can be the maximum
# of several windows. Its gradient is then the *sum* of what each of those windows sends it:
# accumulate (`+=`) in backward, never assign.
#
# The 6x6 input below is pooled with 2x2 windows at stride 2 (9 windows, no overlap) and at
# stride 1 (25 overlapping windows), and the loss is the mean of the pooled outputs, so each
# window sends back 1 / (number of windows). The arrays are the gradients PyTorch's
# `max_pool2d` and `avg_pool2d` return for this example, as PyTorch prints them (4 decimals).
# Exactly, each entry is a count divided by the number of windows: for max pooling the number of
# windows whose maximum is that input, for average pooling the number of windows containing it,
# divided again by the 4 inputs of a window.

# %%
x6 = np.array([[1, 3, 4, 2, 5, 2],
               [4, 2, 5, 6, 8, 3],
               [5, 3, 7, 8, 9, 3],
               [8, 4, 3, 6, 0, 2],
               [7, 10, 3, 6, 3, 5],
               [4, 7, 2, 4, 7, 8]], dtype=np.float64).reshape(1, 1, 6, 6)

# PyTorch's gradients of mean(max_pool2d(x6, 2, stride)) and mean(avg_pool2d(x6, 2, stride)).
pytorch_dx = {
    ("max", 2): [[0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
                 [0.1111, 0.0000, 0.0000, 0.1111, 0.1111, 0.0000],
                 [0.0000, 0.0000, 0.0000, 0.1111, 0.1111, 0.0000],
                 [0.1111, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
                 [0.0000, 0.1111, 0.0000, 0.1111, 0.0000, 0.0000],
                 [0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.1111]],
    ("max", 1): [[0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
                 [0.0400, 0.0000, 0.0400, 0.0400, 0.0800, 0.0000],
                 [0.0400, 0.0000, 0.0800, 0.0800, 0.1600, 0.0000],
                 [0.0400, 0.0000, 0.0000, 0.0800, 0.0000, 0.0000],
                 [0.0000, 0.1600, 0.0000, 0.0400, 0.0000, 0.0400],
                 [0.0000, 0.0000, 0.0000, 0.0000, 0.0400, 0.0400]],
    ("avg", 2): [[0.0278] * 6] * 6,
    ("avg", 1): [[0.0100, 0.0200, 0.0200, 0.0200, 0.0200, 0.0100],
                 [0.0200, 0.0400, 0.0400, 0.0400, 0.0400, 0.0200],
                 [0.0200, 0.0400, 0.0400, 0.0400, 0.0400, 0.0200],
                 [0.0200, 0.0400, 0.0400, 0.0400, 0.0400, 0.0200],
                 [0.0200, 0.0400, 0.0400, 0.0400, 0.0400, 0.0200],
                 [0.0100, 0.0200, 0.0200, 0.0200, 0.0200, 0.0100]],
}
# The same gradients exactly: the windows counted at each input, over the number of windows (and 4 for avg).
window_counts = {
    ("max", 2): [[0, 0, 0, 0, 0, 0],
                 [1, 0, 0, 1, 1, 0],
                 [0, 0, 0, 1, 1, 0],
                 [1, 0, 0, 0, 0, 0],
                 [0, 1, 0, 1, 0, 0],
                 [0, 0, 0, 0, 0, 1]],
    ("max", 1): [[0, 0, 0, 0, 0, 0],
                 [1, 0, 1, 1, 2, 0],
                 [1, 0, 2, 2, 4, 0],
                 [1, 0, 0, 2, 0, 0],
                 [0, 4, 0, 1, 0, 1],
                 [0, 0, 0, 0, 1, 1]],
    ("avg", 2): [[1] * 6] * 6,
    ("avg", 1): [[1, 2, 2, 2, 2, 1],
                 [2, 4, 4, 4, 4, 2],
                 [2, 4, 4, 4, 4, 2],
                 [2, 4, 4, 4, 4, 2],
                 [2, 4, 4, 4, 4, 2],
                 [1, 2, 2, 2, 2, 1]],
}


def pooled_mean_gradient(layer, step):
    """dx of mean(layer(x6)) for 2x2 windows moved by `step`: each window sends 1 / (number of windows)."""
    out, cache = layer.forward(x6, {"pool_height": 2, "pool_width": 2, "stride": step})
    return layer.backward(np.full(out.shape, 1.0 / out.size), cache)[0, 0]


for kind, layer in (("max", MaxPool), ("avg", AvgPool)):
    with attempt():
        for step in (2, 1):
            dx6 = pooled_mean_gradient(layer, step)
            windows = (1 + (6 - 2) // step) ** 2
            exact = np.array(window_counts[kind, step]) / (windows * (4 if kind == "avg" else 1))
            shown = np.abs(dx6 - np.array(pytorch_dx[kind, step])).max()
            print(f"{layer.__name__}, stride {step}: {windows} windows; largest difference from PyTorch's printout "
                  f"{shown:.1e} (it shows 4 decimals)")
            report("  dx (exact counts)", dx6, exact)
            if (kind, step) == ("max", 1):
                print("  windows whose maximum each input is (dx * 25):")
                print((dx6 * windows).round().astype(int))

# %% [markdown]
# ## 3. Fast layers
#
# The naive loops are slow. `convnet.fast` (provided, in Cython) computes the convolution as one
# matrix product per chunk of the batch (im2col, or Winograd's algorithm for 3x3 layers) and
# pooling with compiled loops. Both take and return exactly what your layers do; the fast
# layers' results should match yours to about 1e-12, and the speed-up is in the hundreds.

# %%
x = rng.standard_normal((10, 3, 16, 16))
w = rng.standard_normal((16, 3, 3, 3))
b = rng.standard_normal(16)
dout = rng.standard_normal((10, 16, 16, 16))
conv_param = {"stride": 1, "pad": 1}

fast_out, fast_cache = FastConv.forward(x, w, b, conv_param)
fast_grads = FastConv.backward(dout, fast_cache)
fast_forward = best_time(lambda: FastConv.forward(x, w, b, conv_param))
fast_backward = best_time(lambda: FastConv.backward(dout, fast_cache))
print(f"FastConv: forward {fast_forward * 1e3:.2f} ms, backward {fast_backward * 1e3:.2f} ms")
with attempt():
    start = time.perf_counter()
    naive_out, naive_cache = Conv.forward(x, w, b, conv_param)
    naive_forward = time.perf_counter() - start
    print(f"Conv.forward: {naive_forward * 1e3:.0f} ms, speed-up {naive_forward / fast_forward:.0f}x")
    report("out (naive vs fast)", naive_out, fast_out)
    start = time.perf_counter()
    naive_grads = Conv.backward(dout, naive_cache)
    naive_backward = time.perf_counter() - start
    print(f"Conv.backward: {naive_backward * 1e3:.0f} ms, speed-up {naive_backward / fast_backward:.0f}x")
    for name, got, want in zip(("dx", "dw", "db"), naive_grads, fast_grads):
        report(f"{name} (naive vs fast)", got, want)

# %%
x = rng.standard_normal((10, 16, 16, 16))
pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
dout = rng.standard_normal((10, 16, 8, 8))

fast_out, fast_cache = FastMaxPool.forward(x, pool_param)
fast_dx = FastMaxPool.backward(dout, fast_cache)
fast_forward = best_time(lambda: FastMaxPool.forward(x, pool_param))
fast_backward = best_time(lambda: FastMaxPool.backward(dout, fast_cache))
print(f"FastMaxPool: forward {fast_forward * 1e3:.3f} ms, backward {fast_backward * 1e3:.3f} ms")
with attempt():
    start = time.perf_counter()
    naive_out, naive_cache = MaxPool.forward(x, pool_param)
    naive_forward = time.perf_counter() - start
    print(f"MaxPool.forward: {naive_forward * 1e3:.1f} ms, speed-up {naive_forward / fast_forward:.0f}x")
    report("out (naive vs fast)", naive_out, fast_out)
    start = time.perf_counter()
    naive_dx = MaxPool.backward(dout, naive_cache)
    naive_backward = time.perf_counter() - start
    print(f"MaxPool.backward: {naive_backward * 1e3:.1f} ms, speed-up {naive_backward / fast_backward:.0f}x")
    report("dx (naive vs fast)", naive_dx, fast_dx)

# %% [markdown]
# ## 4. Sandwich layers
#
# `convnet.sandwich` chains layers that often follow each other into one layer:
# `Conv_ReLU_Pool` is a fast convolution, your `ReLU` and a fast 2x2 max pool. Backward runs
# the stages' backward passes in reverse. They use your `ReLU`, so they work once it does; the
# gradients are checked here against centred differences, and the errors should be below 1e-7.

# %%
def numeric_grads(forward, arrays, dout):
    """Centred differences of sum(forward(*arrays) * dout) with respect to each array."""
    return [compute_numeric_gradient(lambda _: forward(*arrays), a, dout, h=1e-6) for a in arrays]


x = rng.standard_normal((2, 3, 8, 8))
w = rng.standard_normal((3, 3, 3, 3))
b = rng.standard_normal(3)
conv_param = {"stride": 1, "pad": 1}
pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}

with attempt():
    out, cache = Conv_ReLU_Pool.forward(x, w, b, conv_param, pool_param)
    dout = rng.standard_normal(out.shape)
    grads = Conv_ReLU_Pool.backward(dout, cache)
    numeric = numeric_grads(lambda *a: Conv_ReLU_Pool.forward(*a, conv_param, pool_param)[0], [x, w, b], dout)
    print("Conv_ReLU_Pool")
    for name, got, want in zip(("dx", "dw", "db"), grads, numeric):
        report(f"  {name}", got, want)

with attempt():
    out, cache = Conv_ReLU.forward(x, w, b, conv_param)
    dout = rng.standard_normal(out.shape)
    grads = Conv_ReLU.backward(dout, cache)
    numeric = numeric_grads(lambda *a: Conv_ReLU.forward(*a, conv_param)[0], [x, w, b], dout)
    print("Conv_ReLU")
    for name, got, want in zip(("dx", "dw", "db"), grads, numeric):
        report(f"  {name}", got, want)

# %% [markdown]
# ## 5. A three-layer convolutional network
#
# `ThreeLayerConvNet` is conv - ReLU - 2x2 max pool - linear - ReLU - linear - softmax, built
# from the sandwich layers.
#
# ### Initial loss
#
# With tiny weights every class gets about the same score, so the softmax loss is about log(C)
# for C classes. Regularisation adds `reg * sum(W**2)` over the weights, so the loss grows with
# `reg`.

# %%
case = public_check("ThreeLayerConvNet initial loss is about log(C)")
print(case.description)
with attempt():
    model = ThreeLayerConvNet(**case.kwargs)
    model.params.update({k: v.copy() for k, v in case.state["params"].items()})
    loss, _ = model.loss(case.state["X"], case.state["y"])
    print(f"initial loss {loss:.4f}, expected about log({case.state['C']}) = {np.log(case.state['C']):.4f}")
    model.reg = 0.5
    loss_reg, _ = model.loss(case.state["X"], case.state["y"])
    penalty = 0.5 * sum(np.sum(model.params[k] ** 2) for k in ("W1", "W2", "W3"))
    print(f"with reg 0.5: {loss_reg:.6f}, larger by {loss_reg - loss:.3e}; 0.5 * sum(W**2) = {penalty:.3e}")

# %% [markdown]
# ### Gradient check
#
# The loss's gradient with respect to every parameter, against centred differences of the loss,
# on a small network in float64. Errors around 1e-6 or below are right.

# %%
X = rng.standard_normal((2, 3, 8, 8))
y = rng.integers(0, 10, 2)
with attempt():
    model = ThreeLayerConvNet(input_dims=(3, 8, 8), num_filters=3, filter_size=3, hidden_dim=7, num_classes=10,
                              weight_scale=5e-2, dtype=np.float64, seed=0)
    loss, grads = model.loss(X, y)
    for name in sorted(grads):
        numeric = compute_numeric_gradient(lambda _: model.loss(X, y)[0], model.params[name], h=1e-6)
        report(name, grads[name], numeric)

# %% [markdown]
# ### Overfit a small set
#
# A network that works can memorise 100 training images: the training accuracy reaches 1.0
# while the validation accuracy stays far lower. The data are scikit-learn's 8x8 images of
# handwritten digits (1797 of them, packaged with scikit-learn, no download), split into
# training, validation and test sets, the mean image subtracted.

# %%
data = load_digits(seed=0)
for key, value in data.items():
    print(key, value.shape)
small = {"X_train": data["X_train"][:100], "y_train": data["y_train"][:100],
         "X_val": data["X_val"], "y_val": data["y_val"]}
with attempt("overfit"):
    model = ThreeLayerConvNet(input_dims=(1, 8, 8), num_filters=32, filter_size=3, hidden_dim=100, num_classes=10,
                              weight_scale=1e-1, seed=0)
    overfit = Solver(model, small, update_rule="adam", optim_config={"learning_rate": 5e-3}, batch_size=25,
                     num_epochs=15, num_train_samples=None, verbose=False, seed=0)
    overfit.train()
    print(f"training accuracy {overfit.train_acc_history[-1]:.2f}, validation accuracy "
          f"{overfit.val_acc_history[-1]:.2f}")

# %%
with attempt():
    needs("overfit")
    show(training_figure({"100 images": overfit}, "ThreeLayerConvNet overfitting 100 digits"), "overfit")

# %% [markdown]
# ### Train the network
#
# The whole training set now: Adam, 10 epochs, the learning rate decayed by 0.9 after each
# epoch. The progress bar shows the loss; about 98 % test accuracy is expected.

# %%
with attempt("train"):
    model = ThreeLayerConvNet(input_dims=(1, 8, 8), num_filters=32, filter_size=3, hidden_dim=100, num_classes=10,
                              weight_scale=1e-1, reg=1e-3, seed=0)
    solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": 2e-3}, lr_decay=0.9,
                    batch_size=32, num_epochs=10, num_train_samples=None, print_every=10**6, seed=0)
    solver.train()
    print(f"validation accuracy {solver.check_accuracy(data['X_val'], data['y_val']):.4f}")
    print(f"test accuracy       {solver.check_accuracy(data['X_test'], data['y_test']):.4f}")

# %%
with attempt():
    needs("train")
    show(training_figure({"ThreeLayerConvNet": solver}, "Training on the 8x8 digits"), "train")

# %% [markdown]
# ### The learned filters
#
# Each of the 32 first-layer filters is a 3x3 grid of weights, shown with its own grey scale
# (black: its smallest weight, white: its largest). Several are light-dark edges in one
# direction: detectors of the strokes' borders.

# %%
def filter_grid(W, columns=8, gap=1):
    """Filters (F, 1, K, K) tiled into one image, each scaled to [0, 1], with gaps of NaN between them."""
    F, _, K, _ = W.shape
    rows = -(-F // columns)
    grid = np.full((rows * (K + gap) - gap, columns * (K + gap) - gap), np.nan)
    for i in range(F):
        f = W[i, 0]
        r, c = divmod(i, columns)
        grid[r * (K + gap):r * (K + gap) + K, c * (K + gap):c * (K + gap) + K] = \
            (f - f.min()) / (f.max() - f.min() + 1e-12)
    return grid


with attempt():
    needs("train")
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    ax.imshow(filter_grid(solver.model.params["W1"]), cmap="gray", interpolation="nearest")
    ax.set_axis_off()
    ax.set_title("first-layer filters (32 of 3x3)")
    show(fig, "filters")

# %% [markdown]
# ## 6. A deep convolutional network
#
# `DeepConvNet` stacks L blocks {conv 3x3 - [batch norm] - ReLU - [2x2 max pool]} and a final
# linear layer. First the same checks as before: the initial loss and the gradients.

# %%
X = rng.standard_normal((2, 3, 8, 8))
y = rng.integers(0, 10, 2)
with attempt():
    model = DeepConvNet(input_dims=(3, 8, 8), num_filters=[4, 4, 4], max_pools=[0, 2], num_classes=10,
                        weight_scale=1e-3, dtype=np.float64, seed=0)
    loss, _ = model.loss(X, y)
    print(f"initial loss {loss:.4f}, expected about log(10) = {np.log(10):.4f}")
    model = DeepConvNet(input_dims=(3, 8, 8), num_filters=[4, 4, 4], max_pools=[0, 2], num_classes=10,
                        weight_scale=5e-2, reg=0.1, dtype=np.float64, seed=0)
    loss, grads = model.loss(X, y)
    for name in sorted(grads):
        numeric = compute_numeric_gradient(lambda _: model.loss(X, y)[0], model.params[name], h=1e-6)
        report(name, grads[name], numeric)

# %% [markdown]
# ### Kaiming initialisation
#
# With a fixed small `weight_scale` every layer shrinks its input, and after a few layers the
# signal (and the gradient) has almost vanished. Kaiming initialisation draws each layer's
# weights with standard deviation sqrt(gain / fan_in), gain 2 before a ReLU (1 otherwise) and
# fan_in = Din * K * K, which keeps the activations' scale through the layers.

# %%
case = public_check("kaiming_initializer for a linear layer")
print(case.description)
with attempt():
    c = case.check
    for K in (c.K, 3):
        W = kaiming_initializer(c.Din, c.Dout, K=K, relu=c.relu, dtype=np.float32, rng=np.random.default_rng(0))
        fan_in = c.Din * (K or 1) ** 2
        print(f"K={K}: shape {W.shape}, std {W.std():.5f}, expected sqrt(2 / {fan_in}) = {np.sqrt(2 / fan_in):.5f}")

# %% [markdown]
# Six convolutional layers trained for 3 epochs, once with weights of standard deviation 1e-2
# and once with Kaiming's: the first barely moves from log(10), the second learns.

# %%
deep = dict(input_dims=(1, 8, 8), num_filters=[8, 8, 16, 16, 32, 32], max_pools=[1, 3, 5], num_classes=10, seed=0)
train_deep = dict(update_rule="adam", optim_config={"learning_rate": 5e-3}, batch_size=50, num_epochs=3,
                  num_train_samples=None, verbose=False, seed=0)
with attempt("kaiming"):
    deep_runs = {}
    for label, scale in (("weight_scale 1e-2", 1e-2), ("Kaiming", "kaiming")):
        deep_runs[label] = Solver(DeepConvNet(**deep, weight_scale=scale), data, **train_deep).train()
        print(f"{label}: final loss {deep_runs[label].loss_history[-1]:.3f}, "
              f"validation accuracy {deep_runs[label].val_acc_history[-1]:.2f}")
    show(training_figure(deep_runs, "DeepConvNet (6 conv layers): initialisation"), "kaiming")

# %% [markdown]
# ## 7. Batch normalisation
#
# ### Forward pass
#
# In training mode `BatchNorm.forward` normalises each feature with the batch's mean and
# variance, then scales by `gamma` and shifts by `beta`: after it, feature j has mean `beta[j]`
# and standard deviation `|gamma[j]|` (up to `eps`). It also updates the running averages used
# in test mode.

# %%
case = public_check("BatchNorm.forward")
print(case.description)
x, gamma, beta, bn_param = case.args
with attempt():
    out, _ = BatchNorm.forward(x, gamma, beta, bn_param)
    report("out", out, case.out)
    print("before: means", x.mean(axis=0), " stds", x.std(axis=0))
    print("after:  means", out.mean(axis=0), " stds", out.std(axis=0))
    print("beta           ", beta, " |gamma|", np.abs(gamma))

# %% [markdown]
# ### Backward pass
#
# `backward` follows the computational graph step by step; `backward_alt` uses the simplified
# formula for dx, which is faster. Both are checked against finite differences.

# %%
for method in ("backward", "backward_alt"):
    case = public_check(f"BatchNorm.{method} vs finite differences")
    print(case.description)
    x, gamma, beta, bn_param = case.args
    with attempt():
        out, cache = BatchNorm.forward(x, gamma, beta, bn_param)
        grads = getattr(BatchNorm, method)(case.dout, cache)
        for name, got, want in zip(("dx", "dgamma", "dbeta"), grads, case.grads):
            report(name, got, want)

# %%
x = 5 * rng.standard_normal((500, 300)) + 12
gamma, beta = rng.standard_normal(300), rng.standard_normal(300)
dout = rng.standard_normal((500, 300))
with attempt():
    out, cache = BatchNorm.forward(x, gamma, beta, {"mode": "train"})
    slow = best_time(lambda: BatchNorm.backward(dout, cache), repeat=20)
    fast = best_time(lambda: BatchNorm.backward_alt(dout, cache), repeat=20)
    for name, graph, alt in zip(("dx", "dgamma", "dbeta"), BatchNorm.backward(dout, cache),
                                BatchNorm.backward_alt(dout, cache)):
        report(f"{name} (backward vs backward_alt)", graph, alt)
    print(f"backward {slow * 1e3:.2f} ms, backward_alt {fast * 1e3:.2f} ms: speed-up {slow / fast:.1f}x")

# %% [markdown]
# ### Spatial batch norm
#
# For images, `SpatialBatchNorm` normalises each channel over the batch and the spatial
# positions (N, H, W): reshape so that `BatchNorm` does the work.

# %%
case = public_check("SpatialBatchNorm.forward")
print(case.description)
x, gamma, beta, bn_param = case.args
with attempt():
    out, _ = SpatialBatchNorm.forward(x, gamma, beta, bn_param)
    report("out", out, case.out)

case = public_check("SpatialBatchNorm.backward vs finite differences")
print(case.description)
x, gamma, beta, bn_param = case.args
with attempt():
    out, cache = SpatialBatchNorm.forward(x, gamma, beta, bn_param)
    grads = SpatialBatchNorm.backward(case.dout, cache)
    for name, got, want in zip(("dx", "dgamma", "dbeta"), grads, case.grads):
        report(name, got, want)

# %% [markdown]
# ### A deep network with batch norm
#
# The gradient check of a small `DeepConvNet` with batch norm after every convolution. The
# convolutions' biases get no gradient: batch norm subtracts the batch mean, so a constant added
# before it changes nothing, and their relative error would compare two rounding errors; their
# largest gradients are printed instead, both about 0.

# %%
X = rng.standard_normal((4, 3, 8, 8))
y = rng.integers(0, 10, 4)
with attempt():
    model = DeepConvNet(input_dims=(3, 8, 8), num_filters=[4, 4], max_pools=[0], batchnorm=True, num_classes=10,
                        weight_scale=5e-2, reg=0.1, dtype=np.float64, seed=0)
    loss, grads = model.loss(X, y)
    for name in sorted(grads):
        numeric = compute_numeric_gradient(lambda _: model.loss(X, y)[0], model.params[name], h=1e-6)
        if name in ("b1", "b2"):
            # Batch norm subtracts the batch mean, so a bias just before it changes nothing: both are ~0.
            print(f"{name}: largest |gradient| {np.abs(grads[name]).max():.1e}, numeric {np.abs(numeric).max():.1e}")
        else:
            report(name, grads[name], numeric)

# %% [markdown]
# The six-layer network of section 6 trained with batch norm, compared with its Kaiming run
# without it: with batch norm the loss falls faster.

# %%
with attempt():
    needs("kaiming")
    bn_runs = {"without batch norm": deep_runs["Kaiming"],
               "with batch norm": Solver(DeepConvNet(**deep, weight_scale="kaiming", batchnorm=True), data,
                                         **train_deep).train()}
    for label, run in bn_runs.items():
        print(f"{label}: final loss {run.loss_history[-1]:.3f}, validation accuracy {run.val_acc_history[-1]:.2f}")
    show(training_figure(bn_runs, "DeepConvNet (6 conv layers, Kaiming): batch norm"), "batchnorm")

# %% [markdown]
# ## 8. Gradient scale under stride
#
# A k x k window moved by a stride s covers some inputs more often than others. The forward pass
# does not notice, but backward adds one contribution per window, so with a flat filter the
# input gradient is larger where more windows overlap. `convnet.stride.overlap_count` gives the
# number of windows covering each input (the "multiplication count"). Away from the borders it
# repeats an s x s cell: for 3x3 windows at stride 2 the cell is [[4, 2], [2, 1]] - a window's
# corner is in 4 windows, an edge in 2, the centre in 1. (The 2x2, stride 1 map is the average
# pooling count of the 6x6 example.)
#
# The second row fixes it by rescaling each filter tap by 1 / (windows sharing its input),
# `stride.filter_rescale(k, s)`: the gradient of every covered interior input is then the same.
# Both rows are computed by the provided fast convolution's backward pass with an all-ones
# upstream gradient.

# %%
cases = [(6, 2, 1), (9, 3, 2), (11, 5, 3)]  # (input size, kernel, stride)


def flat_filter_gradient(n, k, s, taps):
    """dx of the fast convolution with filter `taps` (k, k) and an all-ones upstream gradient, n x n input."""
    x = np.zeros((1, 1, n, n))
    out, cache = FastConv.forward(x, taps.reshape(1, 1, k, k), np.zeros(1), {"stride": s, "pad": 0})
    return FastConv.backward(np.ones_like(out), cache)[0][0, 0]


fig = Figure(figsize=(10, 6.6))
axes = fig.subplots(2, len(cases))
for col, (n, k, s) in enumerate(cases):
    count = stride.overlap_count(n, k, s)
    rescaled = flat_filter_gradient(n, k, s, stride.filter_rescale(k, s))
    assert np.array_equal(flat_filter_gradient(n, k, s, np.ones((k, k))), count)
    for row, (grid, title, fmt) in enumerate(((count, f"{k}x{k}, stride {s}: windows per input", "{:.0f}"),
                                               (rescaled, "taps rescaled: input gradient", "{:.2g}"))):
        ax = axes[row, col]
        ax.imshow(grid, cmap="viridis", vmin=0)
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                    color="white" if v < 0.6 * grid.max() else "black")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    # One repeated cell, inside the border (its top-left corner at a window's corner).
    corner = ((k - 1) // s + 1) * s
    axes[0, col].add_patch(Rectangle((corner - 0.5, corner - 0.5), s, s, fill=False, edgecolor="red", linewidth=2))
fig.tight_layout()
show(fig, "stride_overlap")
for n, k, s in cases:
    print(f"{k}x{k}, stride {s}: repeated cell {stride.repeated_cell(k, s).tolist()}, correction factor "
          f"{stride.correction_factor(k, s):.4f}, tap factors\n{stride.filter_rescale(k, s)}")

# %% [markdown]
# Your `Conv.backward` shows the same map: with an all-ones filter and upstream gradient its dx is
# the overlap count in every channel.

# %%
with attempt():
    x = np.zeros((1, 2, 9, 9))
    out, cache = Conv.forward(x, np.ones((1, 2, 3, 3)), np.zeros(1), {"stride": 2, "pad": 0})
    dx = Conv.backward(np.ones_like(out), cache)[0]
    report("dx vs overlap_count", dx, np.broadcast_to(stride.overlap_count(9, 3, 2), dx.shape))

# %% [markdown]
# ## Next
#
# * `python -m convnet check`: every layer against finite differences, one row per layer;
# * `python -m grader convnet/`: the visible autograder checks, scored, with feedback;
# * upload the files with stubs (`layers.py`, `models.py`, `optim.py`) to Gradescope, where
#   hidden checks run too.
