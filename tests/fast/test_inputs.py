"""fast.network_input: the first convolution of a step skips the input's gradient, nothing else changes."""
import contextlib
import threading

import numpy as np
import pytest

from convnet import _checks, fast, models
from convnet.fast import conv, inputs
from convnet.solver import Solver


@pytest.mark.parametrize("algorithm", ["im2col", "im2row", "direct", "winograd2", "winograd4"])
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_marked_input_gets_no_dx_and_the_same_dw_db(algorithm, split, dtype, conv_inputs):
    x, w, b, cp = conv_inputs((6, 16, 9, 9, 16, 3, 3, 1, 1), dtype, seed=2)
    with fast.config(conv_algorithm=algorithm, split_batch=split, split_min_work=0, num_threads=2):
        out, cache = fast.FastConv.forward(x, w, b, cp)
        dout = np.random.default_rng(0).standard_normal(out.shape).astype(dtype)
        dx, dw, db = fast.FastConv.backward(dout, cache)
        with fast.network_input(x):
            out_m, cache_m = fast.FastConv.forward(x, w, b, cp)
        dx_m, dw_m, db_m = fast.FastConv.backward(dout, cache_m)
    assert dx is not None and dx_m is None
    np.testing.assert_array_equal(out_m, out)
    np.testing.assert_array_equal(dw_m, dw)
    np.testing.assert_array_equal(db_m, db)


@pytest.mark.parametrize("algorithm", ["direct", "winograd2", "winograd4"])
def test_a_marked_input_builds_no_operand_for_dx(algorithm, conv_inputs, monkeypatch):
    # These algorithms' backward operands (flipped or transformed filters) serve dx alone.
    x, w, b, cp = conv_inputs((2, 16, 8, 8, 16, 3, 3, 1, 1), np.float64, seed=3)
    algo = conv.choose(_checks.conv_args(x, w, b, cp), algorithm)
    if algorithm == "direct" and not fast.HAVE_CYTHON:
        pytest.skip("the direct convolution needs the compiled kernels")
    assert algo.name.startswith(algorithm) and algo.operand_only_for_dx

    def refuse(*args):
        raise AssertionError(f"{algo.name} built its dx operand for a marked input")

    with fast.config(conv_algorithm=algorithm):
        out, cache = fast.FastConv.forward(x, w, b, cp)
        dx, dw, db = fast.FastConv.backward(np.ones_like(out), cache)
        with fast.network_input(x):
            out_m, cache_m = fast.FastConv.forward(x, w, b, cp)
        monkeypatch.setattr(algo, "backward_operand", refuse)
        dx_m, dw_m, db_m = fast.FastConv.backward(np.ones_like(out), cache_m)
        cache.operand = None  # Winograd's backward would take the kept forward operand instead
        with pytest.raises(AssertionError, match="marked"):
            fast.FastConv.backward(np.ones_like(out), cache)
    assert dx_m is None
    np.testing.assert_array_equal(dw_m, dw)
    np.testing.assert_array_equal(db_m, db)


def test_only_that_array_and_only_inside_the_block(conv_inputs):
    x, w, b, cp = conv_inputs((2, 3, 5, 5, 4, 3, 3, 1, 1), np.float64, seed=1)
    with fast.network_input(x):
        _, other = fast.FastConv.forward(x.copy(), w, b, cp)  # an equal array, not the same object
        _, view = fast.FastConv.forward(x[:], w, b, cp)  # a view is another object too
        assert inputs.is_network_input(x)
    _, after = fast.FastConv.forward(x, w, b, cp)
    assert not inputs.is_network_input(x)
    for cache in (other, view, after):
        assert fast.FastConv.backward(np.ones((2, 4, 5, 5)), cache)[0] is not None


def test_marks_nest_and_are_per_thread():
    a, b = np.zeros(1), np.zeros(1)
    seen = []
    with fast.network_input(a):
        with fast.network_input(b):
            assert inputs.is_network_input(b) and not inputs.is_network_input(a)
        assert inputs.is_network_input(a)
        t = threading.Thread(target=lambda: seen.append(inputs.is_network_input(a)))
        t.start()
        t.join()
    assert seen == [False]


def test_model_carries_the_mark_through_a_dtype_conversion():
    m = models.ThreeLayerConvNet(input_dims=(3, 8, 8), num_filters=4, filter_size=3, hidden_dim=5,
                                 dtype=np.float32, seed=0)
    X = np.random.default_rng(0).standard_normal((3, 3, 8, 8))  # float64: _check_X converts it
    y = np.array([0, 1, 2])
    loss, grads = m.loss(X, y)
    with fast.network_input(X):
        converted = m._check_X(X)
        assert converted.dtype == np.float32 and inputs.is_network_input(converted)
        loss_m, grads_m = m.loss(X, y)
    assert loss_m == loss
    for k in grads:
        np.testing.assert_array_equal(grads_m[k], grads[k])


@pytest.mark.parametrize("model", ["three", "deep"])
def test_solver_marks_each_minibatch_and_trains_the_same(model, monkeypatch):
    import convnet.solver as solver_mod

    rng = np.random.default_rng(0)
    data = {"X_train": rng.standard_normal((20, 3, 8, 8)), "y_train": rng.integers(0, 10, 20),
            "X_val": rng.standard_normal((5, 3, 8, 8)), "y_val": rng.integers(0, 10, 5)}

    def make():
        if model == "three":
            return models.ThreeLayerConvNet(input_dims=(3, 8, 8), num_filters=4, filter_size=3, hidden_dim=6,
                                            dtype=np.float64, seed=0)
        return models.DeepConvNet(input_dims=(3, 8, 8), num_filters=(4, 4), max_pools=(0, 1), batchnorm=True,
                                  weight_scale="kaiming", dtype=np.float64, seed=0)

    calls = []
    original = fast.FastConv.backward

    def spy(dout, cache):
        grads = original(dout, cache)
        calls.append(grads[0] is None)
        return grads

    monkeypatch.setattr(fast.FastConv, "backward", staticmethod(spy))
    runs = []
    for mark in (True, False):
        if not mark:  # the same steps with the mark switched off
            monkeypatch.setattr(solver_mod, "network_input", contextlib.nullcontext)
        m = make()
        calls.clear()
        Solver(m, data, num_epochs=1, batch_size=10, print_every=100, verbose=False, seed=3,
               optim_config={"learning_rate": 1e-3}).train()
        runs.append(({k: v.copy() for k, v in m.params.items()}, list(calls)))
    (marked, marked_calls), (plain, plain_calls) = runs
    convs_per_step = 1 if model == "three" else 2
    # The first conv of every step skipped dx; the others (and every conv without the mark) did not.
    assert marked_calls and marked_calls.count(True) == len(marked_calls) // convs_per_step
    assert len(plain_calls) == len(marked_calls) and not any(plain_calls)
    for k in marked:
        np.testing.assert_array_equal(marked[k], plain[k])
