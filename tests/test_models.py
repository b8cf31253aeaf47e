"""Models: gradients against finite differences, initial loss, regularisation, overfitting, save/load."""
import math

import numpy as np
import pytest

from convnet.gradcheck import compute_numeric_gradient, rel_error
from convnet.models import (DeepConvNet, FullyConnectedNet, Model, ThreeLayerConvNet, TwoLayerNet,
                            kaiming_initializer, load_model)
from convnet.solver import Solver


def _numeric_grads(model, X, y, h=1e-6):
    out = {}
    for k, v in model.params.items():
        out[k] = compute_numeric_gradient(lambda _: model.loss(X, y)[0], v, h=h)
    return out


def _assert_grads(model, X, y, tol=1e-6, zero_keys=()):
    # Non-zero biases: with zero biases a unit whose inputs are all dropped sits exactly on ReLU's kink.
    rng = np.random.default_rng(123)
    for k in model.params:
        if k.startswith("b") and not k.startswith("beta"):
            model.params[k] = 0.1 * rng.standard_normal(model.params[k].shape)
    loss, grads = model.loss(X, y)
    assert sorted(grads) == sorted(model.params)
    num = _numeric_grads(model, X, y)
    for k in model.params:
        assert grads[k].shape == model.params[k].shape and grads[k].dtype == model.params[k].dtype
        if k in zero_keys:
            # A bias in front of batch norm is cancelled by the mean: both gradients are ~0.
            assert np.max(np.abs(num[k])) < 1e-7 and np.max(np.abs(grads[k])) < 1e-10, k
        else:
            assert rel_error(num[k], grads[k]) < tol, (k, rel_error(num[k], grads[k]))
    return loss


def _data(shape, n=3, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)), rng.integers(classes, size=n)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("reg", [0.0, 0.7])
def test_two_layer_net_gradients(reg):
    X, y = _data((6,), n=4, classes=5)
    model = TwoLayerNet(input_dim=6, hidden_dim=7, num_classes=5, weight_scale=0.5, reg=reg,
                        dtype=np.float64, seed=0)
    _assert_grads(model, X, y)


@pytest.mark.parametrize("dropout,reg", [(0.0, 0.0), (0.0, 0.5), (0.3, 0.2)])
def test_fully_connected_net_gradients(dropout, reg):
    X, y = _data((5,), n=4, classes=4)
    model = FullyConnectedNet([6, 5], input_dim=5, num_classes=4, dropout=dropout, reg=reg,
                              weight_scale=0.5, dtype=np.float64, seed=3)
    _assert_grads(model, X, y)


@pytest.mark.parametrize("reg", [0.0, 0.5])
def test_three_layer_convnet_gradients(reg):
    X, y = _data((3, 6, 6), n=2)
    model = ThreeLayerConvNet(input_dims=(3, 6, 6), num_filters=3, filter_size=3, hidden_dim=5,
                              weight_scale=0.1, reg=reg, dtype=np.float64, seed=0)
    _assert_grads(model, X, y)


@pytest.mark.parametrize("batchnorm,reg,max_pools", [
    (False, 0.0, [0, 1]), (False, 0.3, [1]), (True, 0.0, [0]), (True, 0.3, [0, 1]),
])
def test_deep_convnet_gradients(batchnorm, reg, max_pools):
    X, y = _data((2, 4, 4), n=3)
    model = DeepConvNet(input_dims=(2, 4, 4), num_filters=[3, 2], max_pools=max_pools, batchnorm=batchnorm,
                        weight_scale="kaiming", reg=reg, dtype=np.float64, seed=1)
    zero = ("b1", "b2") if batchnorm else ()
    if batchnorm:
        # Non-trivial scale and shift so their gradients are exercised away from the initial point.
        rng = np.random.default_rng(5)
        for i in (1, 2):
            model.params[f"gamma{i}"] = rng.uniform(0.5, 1.5, model.params[f"gamma{i}"].shape)
            model.params[f"beta{i}"] = rng.standard_normal(model.params[f"beta{i}"].shape)
    _assert_grads(model, X, y, zero_keys=zero)


def test_regularisation_is_reg_times_sum_of_squared_weights():
    X, y = _data((2, 6, 6), n=4)
    kwargs = dict(input_dims=(2, 6, 6), num_filters=[3, 3], max_pools=[0], batchnorm=True,
                  weight_scale=0.1, dtype=np.float64, seed=4)
    plain = DeepConvNet(reg=0.0, **kwargs)
    regular = DeepConvNet(reg=0.25, **kwargs)
    l0, g0 = plain.loss(X, y)
    l1, g1 = regular.loss(X, y)
    weights = [k for k in plain.params if k.startswith("W")]
    assert weights == ["W1", "W2", "W3"]
    # No 0.5 factor, weights only (not biases, not gamma/beta).
    expected = 0.25 * sum(float(np.sum(plain.params[k] ** 2)) for k in weights)
    assert l1 - l0 == pytest.approx(expected, rel=1e-10)
    for k in plain.params:
        extra = 0.5 * plain.params[k] if k.startswith("W") else 0.0
        np.testing.assert_allclose(g1[k], g0[k] + extra, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------- sanity


@pytest.mark.parametrize("make", [
    lambda: TwoLayerNet(input_dim=12, hidden_dim=10, weight_scale=1e-3, seed=0),
    lambda: FullyConnectedNet([10, 10], input_dim=12, weight_scale=1e-3, seed=0),
    lambda: ThreeLayerConvNet(input_dims=(3, 8, 8), num_filters=4, filter_size=3, hidden_dim=10, seed=0),
    lambda: DeepConvNet(input_dims=(3, 8, 8), num_filters=[4, 4], max_pools=[0, 1], seed=0),
    lambda: DeepConvNet(input_dims=(3, 8, 8), num_filters=[4, 4], max_pools=[1], batchnorm=True, seed=0),
], ids=["two", "fc", "three", "deep", "deep-bn"])
def test_initial_loss_is_log_num_classes(make):
    model = make()
    shape = (12,) if isinstance(model, (TwoLayerNet, FullyConnectedNet)) else (3, 8, 8)
    rng = np.random.default_rng(7)
    X = rng.standard_normal((50, *shape)).astype(np.float32)
    y = rng.integers(10, size=50)
    loss, _ = model.loss(X, y)
    assert abs(loss - math.log(10)) < 0.02, loss
    scores = model.loss(X)
    assert scores.shape == (50, 10) and scores.dtype == np.float32


def test_scores_follow_model_dtype_and_cast_input():
    model = ThreeLayerConvNet(input_dims=(1, 8, 8), num_filters=2, filter_size=3, hidden_dim=4,
                              dtype=np.float64, seed=0)
    X = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    assert model.loss(X).dtype == np.float64
    np.testing.assert_allclose(model.loss(X), model.loss(X.astype(np.float64)))
    assert all(v.dtype == np.float64 for v in model.params.values())


def test_three_layer_convnet_parameter_shapes():
    model = ThreeLayerConvNet()
    shapes = {k: v.shape for k, v in model.params.items()}
    assert shapes == {"W1": (32, 3, 7, 7), "b1": (32,), "W2": (32 * 16 * 16, 100), "b2": (100,),
                      "W3": (100, 10), "b3": (10,)}
    assert model.conv_param == {"stride": 1, "pad": 3}
    assert abs(float(model.params["W1"].std()) - 1e-3) < 1e-4
    assert model.params["W1"].dtype == np.float32


def test_deep_convnet_parameter_shapes():
    model = DeepConvNet(input_dims=(3, 16, 16), num_filters=[4, 5, 6], max_pools=[0, 2], batchnorm=True)
    shapes = {k: v.shape for k, v in model.params.items()}
    assert shapes == {"W1": (4, 3, 3, 3), "b1": (4,), "gamma1": (4,), "beta1": (4,),
                      "W2": (5, 4, 3, 3), "b2": (5,), "gamma2": (5,), "beta2": (5,),
                      "W3": (6, 5, 3, 3), "b3": (6,), "gamma3": (6,), "beta3": (6,),
                      "W4": (6 * 4 * 4, 10), "b4": (10,)}
    np.testing.assert_array_equal(model.params["gamma2"], np.ones(5, np.float32))


def test_same_seed_same_weights():
    a = DeepConvNet(input_dims=(1, 8, 8), num_filters=[2], max_pools=[0], seed=11)
    b = DeepConvNet(input_dims=(1, 8, 8), num_filters=[2], max_pools=[0], seed=11)
    c = DeepConvNet(input_dims=(1, 8, 8), num_filters=[2], max_pools=[0], seed=12)
    np.testing.assert_array_equal(a.params["W1"], b.params["W1"])
    assert not np.array_equal(a.params["W1"], c.params["W1"])


def test_batchnorm_running_stats_used_in_test_mode():
    X, y = _data((2, 4, 4), n=8)
    model = DeepConvNet(input_dims=(2, 4, 4), num_filters=[3], max_pools=[], batchnorm=True,
                        dtype=np.float64, seed=0)
    model.loss(X, y)
    # One training step with momentum 0.9 from zeros: running_mean = 0.1 * batch mean of the conv output.
    from convnet.layers import Conv
    conv, _ = Conv.forward(X, model.params["W1"], model.params["b1"], {"stride": 1, "pad": 1})
    np.testing.assert_allclose(model.bn_params[0]["running_mean"], 0.1 * conv.mean(axis=(0, 2, 3)), rtol=1e-10)
    assert model.bn_params[0]["mode"] == "train"
    model.loss(X)
    assert model.bn_params[0]["mode"] == "test"


# ---------------------------------------------------------------- Kaiming


@pytest.mark.parametrize("K,relu", [(None, True), (None, False), (3, True), (5, False)])
def test_kaiming_initializer(K, relu):
    Din, Dout = 64, 128
    w = kaiming_initializer(Din, Dout, K=K, relu=relu, dtype=np.float64, rng=np.random.default_rng(0))
    fan_in = Din if K is None else Din * K * K
    assert w.shape == ((Din, Dout) if K is None else (Dout, Din, K, K))
    assert w.dtype == np.float64
    expected_std = math.sqrt((2.0 if relu else 1.0) / fan_in)
    assert abs(float(w.std()) / expected_std - 1) < 0.03
    assert abs(float(w.mean())) < 3 * expected_std / math.sqrt(w.size)


def test_kaiming_default_dtype_and_errors():
    assert kaiming_initializer(3, 4).dtype == np.float32
    with pytest.raises(ValueError, match="Din"):
        kaiming_initializer(0, 4)
    with pytest.raises(TypeError, match="K"):
        kaiming_initializer(3, 4, K=2.5)
    with pytest.raises(TypeError, match="dtype"):
        kaiming_initializer(3, 4, dtype=np.int32)
    with pytest.raises(TypeError, match="relu"):
        kaiming_initializer(3, 4, relu="yes")


def test_deep_convnet_kaiming_and_custom_initializer():
    model = DeepConvNet(input_dims=(16, 8, 8), num_filters=[64], max_pools=[], weight_scale="kaiming", seed=0)
    assert abs(float(model.params["W1"].std()) / math.sqrt(2 / (16 * 9)) - 1) < 0.05
    calls = []

    def init(Din, Dout, K=None, relu=True, dtype=np.float32, rng=None):
        calls.append((Din, Dout, K, relu))
        return np.full((Din, Dout) if K is None else (Dout, Din, K, K), 0.5, dtype=dtype)

    model = DeepConvNet(input_dims=(2, 4, 4), num_filters=[3], max_pools=[0], weight_initializer=init)
    assert calls == [(2, 3, 3, True), (3 * 2 * 2, 10, None, False)]
    assert np.all(model.params["W1"] == 0.5)
    with pytest.raises(ValueError, match="weight_initializer returned shape"):
        DeepConvNet(input_dims=(2, 4, 4), num_filters=[3], max_pools=[0],
                    weight_initializer=lambda *a, **k: np.zeros(3))


# ---------------------------------------------------------------- overfitting


def _small_digits(n=50):
    pytest.importorskip("sklearn")
    from convnet.data import load_digits
    data = load_digits(seed=0)
    return {"X_train": data["X_train"][:n], "y_train": data["y_train"][:n],
            "X_val": data["X_val"][:n], "y_val": data["y_val"][:n]}


def test_three_layer_convnet_overfits_50_samples():
    data = _small_digits()
    model = ThreeLayerConvNet(input_dims=(1, 8, 8), num_filters=8, filter_size=3, hidden_dim=50,
                              weight_scale=0.1, seed=0)
    solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": 5e-3}, batch_size=10,
                    num_epochs=15, verbose=False, seed=0)
    solver.train(return_best_params=False)
    assert solver.check_accuracy(data["X_train"], data["y_train"]) == 1.0


def test_deep_convnet_with_batchnorm_overfits_50_samples():
    data = _small_digits()
    model = DeepConvNet(input_dims=(1, 8, 8), num_filters=[8, 8], max_pools=[0, 1], batchnorm=True,
                        weight_scale="kaiming", seed=0)
    solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-2}, batch_size=10,
                    num_epochs=20, verbose=False, seed=0)
    solver.train(return_best_params=False)
    assert solver.train_acc_history[-1] == 1.0


# ---------------------------------------------------------------- save / load


@pytest.mark.parametrize("make", [
    lambda: TwoLayerNet(input_dim=12, hidden_dim=5, num_classes=3, dtype=np.float64, seed=0),
    lambda: FullyConnectedNet([4], input_dim=12, num_classes=3, dropout=0.2, seed=0),
    lambda: ThreeLayerConvNet(input_dims=(3, 2, 2), num_filters=2, filter_size=1, hidden_dim=4, seed=0),
    lambda: DeepConvNet(input_dims=(3, 2, 2), num_filters=[2, 3], max_pools=[1], batchnorm=True,
                        weight_scale="kaiming", dtype=np.float64, seed=0),
], ids=["two", "fc", "three", "deep-bn"])
def test_save_load_round_trip(tmp_path, make):
    model = make()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 3, 2, 2))
    y = rng.integers(3 if not isinstance(model, (ThreeLayerConvNet, DeepConvNet)) else 10, size=6)
    # Train a little so the saved parameters and batch-norm statistics differ from a fresh model's.
    solver = Solver(model, {"X_train": X, "y_train": y, "X_val": X, "y_val": y}, update_rule="adam",
                    optim_config={"learning_rate": 0.1}, batch_size=3, num_epochs=2, verbose=False, seed=0)
    solver.train(return_best_params=False)
    path = tmp_path / "model.npz"
    model.save(path)
    assert path.exists() and not list(tmp_path.glob(".tmp-*"))
    loaded = type(model).load(path)
    assert type(loaded) is type(model)
    assert loaded.dtype == model.dtype
    assert sorted(loaded.params) == sorted(model.params)
    for k in model.params:
        np.testing.assert_array_equal(loaded.params[k], model.params[k])
        assert loaded.params[k].dtype == model.dtype
    np.testing.assert_array_equal(loaded.loss(X), model.loss(X))
    # The generic loader picks the class from the file.
    assert type(load_model(path)) is type(model)
    assert type(Model.load(path)) is type(model)


def test_load_refuses_wrong_class_and_missing_file(tmp_path):
    path = tmp_path / "two.npz"
    TwoLayerNet(input_dim=4, hidden_dim=3, seed=0).save(path)
    with pytest.raises(ValueError, match="holds a TwoLayerNet, not a ThreeLayerConvNet"):
        ThreeLayerConvNet.load(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        TwoLayerNet.load(tmp_path / "missing.npz")


def test_load_refuses_corrupted_files(tmp_path):
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="not a readable convnet checkpoint"):
        load_model(bad)
    plain = tmp_path / "plain.npz"
    np.savez(plain, W1=np.zeros(3))
    with pytest.raises(ValueError, match="no '__meta__'"):
        load_model(plain)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __meta__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a readable convnet checkpoint"):
        load_model(pickled)


def _rewrite(src, dst, change):
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    np.savez(dst, **arrays)


def test_load_refuses_mismatched_parameters(tmp_path):
    src = tmp_path / "m.npz"
    ThreeLayerConvNet(input_dims=(1, 4, 4), num_filters=2, filter_size=3, hidden_dim=3, seed=0).save(src)

    def wrong_shape(a):
        a["param:W2"] = np.zeros((5, 3), np.float32)

    def wrong_dtype(a):
        a["param:W3"] = a["param:W3"].astype(np.float64)

    def missing(a):
        del a["param:b1"]

    def unexpected(a):
        a["param:W9"] = np.zeros(2, np.float32)

    def bad_meta(a):
        a["__meta__"] = np.array("{not json")

    for change, pattern in [(wrong_shape, r"'W2' has shape \(5, 3\)"), (wrong_dtype, "'W3'.*float64"),
                            (missing, r"missing \['b1'\]"), (unexpected, r"unexpected \['W9'\]"),
                            (bad_meta, "unreadable '__meta__'")]:
        dst = tmp_path / f"{change.__name__}.npz"
        _rewrite(src, dst, change)
        with pytest.raises(ValueError, match=pattern):
            ThreeLayerConvNet.load(dst)


# ---------------------------------------------------------------- argument validation


@pytest.mark.parametrize("make,exc,pattern", [
    (lambda: ThreeLayerConvNet(input_dims=(3, 32)), ValueError, "input_dims"),
    (lambda: ThreeLayerConvNet(num_filters=0), ValueError, "num_filters"),
    (lambda: ThreeLayerConvNet(filter_size=2.0), TypeError, "filter_size"),
    (lambda: ThreeLayerConvNet(weight_scale=-1.0), ValueError, "weight_scale"),
    (lambda: ThreeLayerConvNet(weight_scale="kaiming"), TypeError, "weight_scale"),
    (lambda: ThreeLayerConvNet(reg=-0.1), ValueError, "reg"),
    (lambda: ThreeLayerConvNet(dtype=np.int64), TypeError, "dtype"),
    (lambda: ThreeLayerConvNet(dtype="float16"), TypeError, "dtype"),
    (lambda: ThreeLayerConvNet(input_dims=(1, 2, 2), filter_size=6), ValueError, "too small"),
    (lambda: ThreeLayerConvNet(seed=-1), ValueError, "seed"),
    (lambda: DeepConvNet(num_filters=[]), ValueError, "num_filters must not be empty"),
    (lambda: DeepConvNet(num_filters=[4, 4], max_pools=[2]), ValueError, r"max_pools.*\[2\]"),
    (lambda: DeepConvNet(num_filters=[4, 4], max_pools=[1, 1]), ValueError, "more than once"),
    (lambda: DeepConvNet(input_dims=(1, 2, 2), num_filters=[1, 1], max_pools=[0, 1]), ValueError, "too small"),
    (lambda: DeepConvNet(batchnorm=1), TypeError, "batchnorm"),
    (lambda: DeepConvNet(weight_scale="xavier"), ValueError, "kaiming"),
    (lambda: DeepConvNet(weight_initializer=3), TypeError, "weight_initializer"),
    (lambda: FullyConnectedNet([10], dropout=1.0), ValueError, "dropout"),
    (lambda: FullyConnectedNet("10"), TypeError, "hidden_dims"),
    (lambda: TwoLayerNet(hidden_dim=-3), ValueError, "hidden_dim"),
])
def test_constructor_validation(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_loss_input_validation():
    model = ThreeLayerConvNet(input_dims=(1, 8, 8), num_filters=2, filter_size=3, hidden_dim=4, seed=0)
    with pytest.raises(ValueError, match=r"expects \(N, 1, 8, 8\)"):
        model.loss(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        model.loss(np.zeros((2, 1, 8, 8), np.int64))
    with pytest.raises(ValueError, match="labels must lie"):
        model.loss(np.zeros((2, 1, 8, 8), np.float32), np.array([0, 10]))
    with pytest.raises(ValueError, match="y has shape"):
        model.loss(np.zeros((2, 1, 8, 8), np.float32), np.array([0, 1, 2]))


# ---------------------------------------------------------------- PyTorch oracle


def test_three_layer_convnet_matches_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle; pip install torch==2.13.0")
    F = torch.nn.functional
    X, y = _data((3, 8, 8), n=4)
    model = ThreeLayerConvNet(input_dims=(3, 8, 8), num_filters=5, filter_size=5, hidden_dim=7,
                              weight_scale=0.1, reg=0.05, dtype=np.float64, seed=0)
    loss, grads = model.loss(X, y)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    h = F.max_pool2d(F.relu(F.conv2d(torch.tensor(X), t["W1"], t["b1"], padding=2)), 2)
    h = F.relu(h.reshape(4, -1) @ t["W2"] + t["b2"])
    scores = h @ t["W3"] + t["b3"]
    t_loss = F.cross_entropy(scores, torch.tensor(y)) + 0.05 * sum((t[k] ** 2).sum() for k in ("W1", "W2", "W3"))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    for k in model.params:
        assert rel_error(grads[k], t[k].grad.numpy()) < 1e-10, k
    np.testing.assert_allclose(model.loss(X), scores.detach().numpy(), rtol=1e-12, atol=1e-14)
