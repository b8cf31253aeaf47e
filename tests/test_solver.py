"""Solver: history, learning-rate decay, best parameters, time limit, checkpoints, arguments, plots."""
import json
import sys

import numpy as np
import pytest

from convnet.models import TwoLayerNet, load_checkpoint
from convnet.solver import Solver


def _data(n_train=60, n_val=30, D=8, classes=3, seed=0):
    # Linearly separable-ish blobs so accuracy moves during training.
    rng = np.random.default_rng(seed)
    centers = 2.0 * rng.standard_normal((classes, D))
    def split(n):
        y = rng.integers(classes, size=n)
        return (centers[y] + rng.standard_normal((n, D))).astype(np.float32), y
    X_train, y_train = split(n_train)
    X_val, y_val = split(n_val)
    return {"X_train": X_train, "y_train": y_train, "X_val": X_val, "y_val": y_val}


def _model(seed=0, **kw):
    return TwoLayerNet(input_dim=8, hidden_dim=10, num_classes=3, weight_scale=0.1, seed=seed, **kw)


def test_history_lengths_and_learning():
    data = _data()
    solver = Solver(_model(), data, update_rule="sgd_momentum", optim_config={"learning_rate": 0.05},
                    batch_size=20, num_epochs=4, verbose=False, seed=0)
    solver.train()
    assert len(solver.loss_history) == 4 * (60 // 20)
    # Accuracy at the start and after each epoch.
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == 5
    assert solver.epoch == 4
    assert solver.loss_history[-1] < solver.loss_history[0]
    assert solver.best_val_acc == max(solver.val_acc_history)


def test_minibatches_are_full_and_drawn_without_replacement():
    data = _data(n_train=50)
    model = _model()
    seen = []
    original = model.loss

    def spy(X, y=None):
        if y is not None:
            seen.append(X.copy())
        return original(X, y)

    model.loss = spy
    solver = Solver(model, data, batch_size=20, num_epochs=3, verbose=False, seed=0)
    solver.train()
    assert len(solver.loss_history) == 3 * 2
    assert len(solver.val_acc_history) == 4
    assert [len(b) for b in seen] == [20] * 6
    # Within an epoch no example repeats.
    for epoch in range(3):
        rows = np.concatenate(seen[2 * epoch:2 * epoch + 2])
        assert len(np.unique(rows, axis=0)) == 40


def test_lr_decay_applied_every_epoch():
    solver = Solver(_model(), _data(), update_rule="adam", optim_config={"learning_rate": 1e-2}, lr_decay=0.5,
                    batch_size=30, num_epochs=3, verbose=False)
    solver.train()
    for config in solver.optim_configs.values():
        assert config["learning_rate"] == pytest.approx(1e-2 * 0.5 ** 3)
        assert config["t"] == 6
    # The solver's own optim_config is not mutated by the per-parameter copies.
    assert solver.optim_config == {"learning_rate": 1e-2}


def test_return_best_params():
    data = _data()
    solver = Solver(_model(), data, optim_config={"learning_rate": 0.5}, batch_size=10, num_epochs=5,
                    verbose=False, seed=1)
    solver.train(return_best_params=True)
    for k, v in solver.best_params.items():
        np.testing.assert_array_equal(solver.model.params[k], v)
    assert solver.check_accuracy(data["X_val"], data["y_val"]) == solver.best_val_acc


def test_return_best_params_false_keeps_last_iterate():
    data = _data()
    model = _model()
    solver = Solver(model, data, optim_config={"learning_rate": 0.5}, batch_size=10, num_epochs=5,
                    verbose=False, seed=1)
    steps = []
    original = model.loss

    def spy(X, y=None):
        if y is not None:
            steps.append({k: v.copy() for k, v in model.params.items()})
        return original(X, y)

    model.loss = spy
    solver.train(return_best_params=False)
    # The final params are one update past the last minibatch's params, not a stored best.
    assert len(steps) == len(solver.loss_history)
    assert not np.array_equal(model.params["W1"], steps[-1]["W1"])


def test_time_limit_stops_early():
    solver = Solver(_model(), _data(), batch_size=10, num_epochs=50, verbose=False, seed=0)
    solver.train(time_limit=1e-9)
    assert len(solver.loss_history) == 1
    assert len(solver.val_acc_history) == 1
    with pytest.raises(ValueError, match="time_limit"):
        solver.train(time_limit=0)


def test_same_seed_same_run():
    runs = []
    for _ in range(2):
        solver = Solver(_model(seed=3), _data(), update_rule="rmsprop", optim_config={"learning_rate": 1e-2},
                        batch_size=16, num_epochs=2, verbose=False, seed=5)
        solver.train()
        runs.append(solver.loss_history)
    assert runs[0] == runs[1]


def test_checkpoints(tmp_path):
    data = _data()
    name = tmp_path / "ckpt"
    solver = Solver(_model(), data, update_rule="adam", optim_config={"learning_rate": 1e-2}, batch_size=20,
                    num_epochs=2, checkpoint_name=str(name), verbose=False, seed=0)
    solver.train(return_best_params=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["ckpt_epoch_0.npz", "ckpt_epoch_1.npz", "ckpt_epoch_2.npz"]
    model, extra = load_checkpoint(tmp_path / "ckpt_epoch_2.npz")
    for k, v in solver.model.params.items():
        np.testing.assert_array_equal(model.params[k], v)
    np.testing.assert_allclose(extra["loss_history"], solver.loss_history)
    np.testing.assert_allclose(extra["val_acc_history"], solver.val_acc_history)
    info = json.loads(str(extra["solver"]))
    assert info["epoch"] == 2 and info["update_rule"] == "adam" and info["batch_size"] == 20
    # The file is a plain npz: readable without pickle.
    with np.load(tmp_path / "ckpt_epoch_1.npz", allow_pickle=False) as f:
        assert "param:W1" in f.files


def test_checkpoint_of_a_model_without_save(tmp_path):
    class Bare:
        def __init__(self):
            self.inner = _model()
            self.params = self.inner.params

        def loss(self, X, y=None):
            self.inner.params = self.params
            return self.inner.loss(X, y)

    solver = Solver(Bare(), _data(), batch_size=30, num_epochs=1, checkpoint_name=str(tmp_path / "bare"),
                    verbose=False)
    solver.train()
    with np.load(tmp_path / "bare_epoch_1.npz", allow_pickle=False) as f:
        assert {"param:W1", "extra:loss_history"} <= set(f.files)


def test_custom_update_rule():
    calls = []

    def halve(w, dw, config):
        calls.append(config.get("tag"))
        return w * 0.5, config

    model = _model()
    w0 = model.params["W1"].copy()
    solver = Solver(model, _data(), update_rule=halve, optim_config={"tag": 7}, batch_size=60, num_epochs=1,
                    verbose=False)
    solver.train(return_best_params=False)
    np.testing.assert_allclose(model.params["W1"], 0.5 * w0)
    assert calls == [7] * 4


def test_check_accuracy_subsample_and_batches():
    data = _data()
    solver = Solver(_model(), data, verbose=False, seed=0)
    scores = solver.model.loss(data["X_val"])
    expected = float(np.mean(np.argmax(scores, axis=1) == data["y_val"]))
    assert solver.check_accuracy(data["X_val"], data["y_val"], batch_size=7) == pytest.approx(expected)
    acc = solver.check_accuracy(data["X_val"], data["y_val"], num_samples=10)
    assert acc * 10 == pytest.approx(round(acc * 10))
    with pytest.raises(ValueError, match="y"):
        solver.check_accuracy(data["X_val"], data["y_val"][:5])


def test_verbose_prints_progress(capsys):
    solver = Solver(_model(), _data(), batch_size=20, num_epochs=2, print_every=1, verbose=True, seed=0)
    solver.train()
    out = capsys.readouterr()
    text = out.out + out.err
    assert "(Iteration 1 / 6) loss:" in text
    assert "(Epoch 2 / 2) train acc:" in text


def test_nan_loss_is_reported():
    data = _data()
    data["X_train"] = data["X_train"] * np.float32(1e30)
    solver = Solver(_model(), data, optim_config={"learning_rate": 1e10}, batch_size=20, num_epochs=3,
                    verbose=False)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="lower the learning rate"):
        solver.train()


@pytest.mark.parametrize("kwargs,exc,pattern", [
    ({"learning_rate": 1e-3}, ValueError, r"unrecognised argument\(s\) \['learning_rate'\]"),
    ({"update_rule": "adagrad"}, ValueError, "unknown update_rule 'adagrad'"),
    ({"update_rule": 3}, TypeError, "update_rule"),
    ({"optim_config": [1]}, TypeError, "optim_config"),
    ({"lr_decay": 0.0}, ValueError, "lr_decay"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"num_epochs": 2.5}, TypeError, "num_epochs"),
    ({"num_train_samples": 0}, ValueError, "num_train_samples"),
    ({"print_every": 0}, ValueError, "print_every"),
    ({"verbose": "yes"}, TypeError, "verbose"),
    ({"checkpoint_name": 5}, TypeError, "checkpoint_name"),
])
def test_bad_kwargs(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        Solver(_model(), _data(), **kwargs)


def test_bad_data():
    data = _data()
    with pytest.raises(ValueError, match=r"missing key\(s\) \['y_val'\]"):
        Solver(_model(), {k: v for k, v in data.items() if k != "y_val"})
    with pytest.raises(ValueError, match="y_train"):
        Solver(_model(), {**data, "y_train": data["y_train"][:3]})
    with pytest.raises(TypeError, match="integer"):
        Solver(_model(), {**data, "y_val": data["y_val"].astype(np.float32)})
    with pytest.raises(TypeError, match="model"):
        Solver(object(), data)


def test_plot_history_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    solver = Solver(_model(), _data(), batch_size=20, num_epochs=2, verbose=False)
    solver.train()
    path = solver.plot_history(tmp_path / "h.png", title="test")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_history_without_matplotlib(tmp_path, monkeypatch):
    solver = Solver(_model(), _data(), verbose=False)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install convnet\[train\]"):
        solver.plot_history(tmp_path / "h.png")
