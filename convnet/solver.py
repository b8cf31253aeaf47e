"""``Solver``: minibatch training of a classification model, as in EECS 498.

A model is anything with ``params`` (dict of name to ndarray) and
``loss(X, y=None)`` returning the scores without ``y`` and ``(loss, grads)``
with ``y`` (every model of :mod:`convnet.models`). ::

    solver = Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-3},
                    lr_decay=0.95, batch_size=100, num_epochs=10)
    solver.train()
    solver.check_accuracy(data["X_test"], data["y_test"])
    solver.plot_history("history.png")

An epoch is ``max(N_train // batch_size, 1)`` minibatches drawn without
replacement from a fresh random permutation (drawn from ``seed``). After every epoch the learning rate of every parameter is
multiplied by ``lr_decay`` and the training (on a subsample) and validation
accuracies are recorded; the parameters with the best validation accuracy are
kept and restored at the end.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from convnet import _checks, optim
from convnet.fast.inputs import network_input

__all__ = ["Solver"]

_DEFAULTS = {
    "update_rule": "sgd",
    "optim_config": None,
    "lr_decay": 1.0,
    "batch_size": 100,
    "num_epochs": 10,
    "num_train_samples": 1000,
    "num_val_samples": None,
    "checkpoint_name": None,
    "print_every": 10,
    "print_acc_every": 1,
    "verbose": True,
    "seed": None,
}


def _check_labels(name, y, n, num):
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu":
        raise TypeError(f"data[{name!r}] must be an integer ndarray, got "
                        f"{type(y).__name__ if not isinstance(y, np.ndarray) else y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"data[{name!r}] has shape {y.shape} but there are {n} examples in data[{num!r}]")


class Solver:
    """Train a model with minibatch gradient descent.

    Parameters
    ----------
    model : object
        Has ``params`` (dict of ndarray) and ``loss(X, y=None)``.
    data : dict
        ``'X_train'`` (N_train, ...), ``'y_train'`` (N_train,) int, ``'X_val'`` (N_val, ...),
        ``'y_val'`` (N_val,) int. Other keys (e.g. ``'X_test'``) are ignored.
    update_rule : str or callable, default 'sgd'
        A name from :data:`convnet.optim.UPDATE_RULES` ('sgd', 'sgd_momentum', 'rmsprop', 'adam')
        or a function ``(w, dw, config) -> (next_w, config)``.
    optim_config : dict, optional
        Hyper-parameters for the update rule (copied once per parameter), e.g. ``{'learning_rate': 1e-3}``.
    lr_decay : float in (0, 1], default 1.0
        Factor applied to every ``learning_rate`` after each epoch.
    batch_size : int >= 1, default 100
    num_epochs : int >= 1, default 10
    num_train_samples : int >= 1 or None, default 1000
        Training examples used to measure the training accuracy (None: all).
    num_val_samples : int >= 1 or None, default None
        Validation examples used to measure the validation accuracy (None: all).
    checkpoint_name : str, optional
        If given, ``f"{checkpoint_name}_epoch_{epoch}.npz"`` is written after each epoch
        (no pickle: :meth:`convnet.models.Model.save` with the solver's history as extras).
    print_every : int >= 1, default 10
        Print the loss every this many iterations (when verbose).
    print_acc_every : int >= 1, default 1
        Print the accuracies every this many epochs (when verbose).
    verbose : bool, default True
        Print progress and show a tqdm progress bar.
    seed : int >= 0, optional
        Seeds the minibatch order and the accuracy subsamples.

    Attributes
    ----------
    loss_history : list of float
        The loss of every iteration.
    train_acc_history, val_acc_history : list of float
        Accuracies measured at the start and after every epoch.
    best_val_acc : float
    best_params : dict
        Copies of the parameters with the best validation accuracy.
    epoch : int
        Completed epochs.
    """

    def __init__(self, model, data, **kwargs):
        unknown = sorted(set(kwargs) - set(_DEFAULTS))
        if unknown:
            raise ValueError(f"unrecognised argument(s) {unknown}; Solver accepts {sorted(_DEFAULTS)}")
        opts = {**_DEFAULTS, **kwargs}
        if not isinstance(getattr(model, "params", None), dict) or not callable(getattr(model, "loss", None)):
            raise TypeError("model must have a dict `params` and a method `loss(X, y=None)`")
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict, got {type(data).__name__}")
        missing = [k for k in ("X_train", "y_train", "X_val", "y_val") if k not in data]
        if missing:
            raise ValueError(f"data is missing key(s) {missing}; it has {sorted(data)}")
        for split in ("train", "val"):
            X = _checks.check_array(f"data['X_{split}']", data[f"X_{split}"])
            if X.ndim < 2 or X.shape[0] == 0:
                raise ValueError(f"data['X_{split}'] must hold at least one example, got shape {X.shape}")
            _check_labels(f"y_{split}", data[f"y_{split}"], X.shape[0], f"X_{split}")
        self.model = model
        self.X_train, self.y_train = data["X_train"], data["y_train"]
        self.X_val, self.y_val = data["X_val"], data["y_val"]

        rule = opts["update_rule"]
        if isinstance(rule, str):
            if rule not in optim.UPDATE_RULES:
                raise ValueError(f"unknown update_rule {rule!r}; choose from {sorted(optim.UPDATE_RULES)} "
                                 f"or pass a function")
            self.update_rule = optim.UPDATE_RULES[rule]
        elif callable(rule):
            self.update_rule = rule
        else:
            raise TypeError(f"update_rule must be a name or a function, got {type(rule).__name__}")
        config = opts["optim_config"]
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise TypeError(f"optim_config must be a dict, got {type(config).__name__}")
        self.optim_config = dict(config)
        self.lr_decay = _checks.check_real("lr_decay", opts["lr_decay"], low=0.0, high=1.0, low_open=True)
        self.batch_size = _checks.check_int("batch_size", opts["batch_size"], 1)
        self.num_epochs = _checks.check_int("num_epochs", opts["num_epochs"], 1)
        for key in ("num_train_samples", "num_val_samples"):
            if opts[key] is not None:
                opts[key] = _checks.check_int(key, opts[key], 1)
        self.num_train_samples = opts["num_train_samples"]
        self.num_val_samples = opts["num_val_samples"]
        name = opts["checkpoint_name"]
        if name is not None and not isinstance(name, (str, os.PathLike)):
            raise TypeError(f"checkpoint_name must be a path string or None, got {type(name).__name__}")
        self.checkpoint_name = None if name is None else os.fspath(name)
        self.print_every = _checks.check_int("print_every", opts["print_every"], 1)
        self.print_acc_every = _checks.check_int("print_acc_every", opts["print_acc_every"], 1)
        if not isinstance(opts["verbose"], (bool, np.bool_)):
            raise TypeError(f"verbose must be True or False, got {opts['verbose']!r}")
        self.verbose = bool(opts["verbose"])
        self.seed = None if opts["seed"] is None else _checks.check_int("seed", opts["seed"], 0)
        self._reset()

    def _reset(self):
        """Clear the history and give every parameter its own copy of optim_config."""
        self.rng = np.random.default_rng(self.seed)
        self.epoch = 0
        self.best_val_acc = 0.0
        self.best_params = {}
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        self.optim_configs = {k: dict(self.optim_config) for k in self.model.params}
        self._order = np.zeros(0, dtype=np.int64)
        self._cursor = 0
        self._bar = None

    def _next_batch(self):
        """The next full minibatch of a random permutation, reshuffled when too few examples remain."""
        N = self.X_train.shape[0]
        if self._cursor + min(self.batch_size, N) > self._order.size:
            self._order = self.rng.permutation(N)
            self._cursor = 0
        idx = self._order[self._cursor:self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return self.X_train[idx], self.y_train[idx]

    def _step(self):
        """One gradient update on one minibatch."""
        X_batch, y_batch = self._next_batch()
        # Nothing reads the minibatch's gradient: the first FastConv skips it.
        with network_input(X_batch):
            loss, grads = self.model.loss(X_batch, y_batch)
        loss = float(loss)
        if not np.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} at iteration {len(self.loss_history)}; "
                                     f"lower the learning rate (optim_config={self.optim_config})")
        self.loss_history.append(loss)
        for p, w in self.model.params.items():
            next_w, self.optim_configs[p] = self.update_rule(w, grads[p], self.optim_configs[p])
            self.model.params[p] = next_w

    def _save_checkpoint(self):
        if self.checkpoint_name is None:
            return None
        path = f"{self.checkpoint_name}_epoch_{self.epoch}.npz"
        info = {"epoch": self.epoch, "lr_decay": self.lr_decay, "batch_size": self.batch_size,
                "num_train_samples": self.num_train_samples, "num_val_samples": self.num_val_samples,
                "update_rule": getattr(self.update_rule, "__name__", repr(self.update_rule)),
                "optim_config": {k: v for k, v in self.optim_config.items()
                                 if isinstance(v, (int, float, str, bool)) or v is None}}
        extra = {"solver": np.array(json.dumps(info)),
                 "loss_history": np.asarray(self.loss_history, dtype=np.float64),
                 "train_acc_history": np.asarray(self.train_acc_history, dtype=np.float64),
                 "val_acc_history": np.asarray(self.val_acc_history, dtype=np.float64)}
        if callable(getattr(self.model, "save", None)):
            self.model.save(path, extra=extra)
        else:
            # A model of one's own: store its params beside the history, still without pickle.
            arrays = {f"param:{k}": np.asarray(v) for k, v in self.model.params.items()}
            arrays.update({f"extra:{k}": v for k, v in extra.items()})
            with open(path, "wb") as f:
                np.savez(f, **arrays)
        if self.verbose:
            self._write(f'Saving checkpoint to "{path}"')
        return path

    def check_accuracy(self, X, y, num_samples=None, batch_size=100):
        """Fraction of examples the model classifies correctly (in test mode).

        Parameters
        ----------
        X : ndarray of shape (N, ...)
        y : ndarray of int, shape (N,)
        num_samples : int >= 1, optional
            Evaluate a random subsample of this many examples (drawn from the solver's rng).
        batch_size : int >= 1
            Examples per forward pass.

        Returns
        -------
        acc : float in [0, 1]
        """
        _checks.check_array("X", X)
        if X.ndim < 2 or X.shape[0] == 0:
            raise ValueError(f"X must hold at least one example, got shape {X.shape}")
        _check_labels("y", y, X.shape[0], "X")
        batch_size = _checks.check_int("batch_size", batch_size, 1)
        N = X.shape[0]
        if num_samples is not None:
            num_samples = _checks.check_int("num_samples", num_samples, 1)
            if N > num_samples:
                idx = self.rng.choice(N, num_samples, replace=False)
                X, y = X[idx], y[idx]
                N = num_samples
        correct = 0
        for start in range(0, N, batch_size):
            scores = self.model.loss(X[start:start + batch_size])
            correct += int(np.sum(np.argmax(scores, axis=1) == y[start:start + batch_size]))
        return correct / N

    def _write(self, msg):
        if self._bar is not None:
            self._bar.write(msg)
        else:
            print(msg, file=sys.stdout)

    def _record_accuracies(self, t, num_iterations):
        train_acc = self.check_accuracy(self.X_train, self.y_train, num_samples=self.num_train_samples)
        val_acc = self.check_accuracy(self.X_val, self.y_val, num_samples=self.num_val_samples)
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        self._save_checkpoint()
        if self.verbose and (self.epoch % self.print_acc_every == 0 or t == num_iterations - 1):
            self._write(f"(Epoch {self.epoch} / {self.num_epochs}) train acc: {train_acc:.6f}; val_acc: {val_acc:.6f}")
        if val_acc > self.best_val_acc or not self.best_params:
            self.best_val_acc = max(val_acc, self.best_val_acc)
            self.best_params = {k: v.copy() for k, v in self.model.params.items()}

    def train(self, time_limit=None, return_best_params=True):
        """Run the optimisation.

        Parameters
        ----------
        time_limit : float > 0, optional
            Stop (after finishing the current iteration) when the next iteration would
            end past this many seconds since the start, estimated from the previous one.
        return_best_params : bool, default True
            At the end, set ``model.params`` to the parameters with the best validation accuracy.

        Returns
        -------
        self
        """
        if time_limit is not None:
            time_limit = _checks.check_real("time_limit", time_limit, low=0.0, low_open=True)
        num_train = self.X_train.shape[0]
        iterations_per_epoch = max(num_train // self.batch_size, 1)
        num_iterations = self.num_epochs * iterations_per_epoch
        self._bar = None
        if self.verbose:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=num_iterations, desc="train", unit="it", leave=True)
        start = prev = time.perf_counter()
        try:
            for t in range(num_iterations):
                self._step()
                now = time.perf_counter()
                if self._bar is not None:
                    self._bar.update(1)
                    self._bar.set_postfix(loss=f"{self.loss_history[-1]:.4f}", epoch=self.epoch)
                if self.verbose and t % self.print_every == 0:
                    self._write(f"(Iteration {t + 1} / {num_iterations}) loss: {self.loss_history[-1]:f}")
                epoch_end = (t + 1) % iterations_per_epoch == 0
                if epoch_end:
                    self.epoch += 1
                    for config in self.optim_configs.values():
                        if "learning_rate" in config:
                            config["learning_rate"] *= self.lr_decay
                # Accuracies at the first iteration, at every epoch's end and at the last iteration.
                if t == 0 or epoch_end or t == num_iterations - 1:
                    self._record_accuracies(t, num_iterations)
                if time_limit is not None and t < num_iterations - 1:
                    now = time.perf_counter()
                    if now + (now - prev) - start > time_limit:
                        if self.verbose:
                            self._write(f"End of training; next iteration would exceed the "
                                        f"{time_limit:g} s time limit.")
                        if not epoch_end and t != 0:
                            self._record_accuracies(t, num_iterations)
                        break
                prev = now
        finally:
            if self._bar is not None:
                self._bar.close()
            self._bar = None
        if return_best_params and self.best_params:
            self.model.params = {k: v.copy() for k, v in self.best_params.items()}
        return self

    def plot_history(self, path, title=None):
        """Write a PNG with the loss per iteration and the accuracies per epoch.

        Requires matplotlib (``pip install convnet[train]``); it is imported here and
        drawn on an Agg canvas without pyplot, so no window opens and the global backend is untouched.

        Parameters
        ----------
        path : str or os.PathLike
            Output file (PNG).
        title : str, optional

        Returns
        -------
        path : str
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError(f"plot_history needs matplotlib ({exc}); install it with "
                              f"`pip install convnet[train]` or `pip install matplotlib`") from None
        path = os.fspath(path)
        # A bare Figure on the Agg canvas: no pyplot, so the caller's backend is left alone.
        fig = Figure(figsize=(7, 7))
        FigureCanvasAgg(fig)
        ax1, ax2 = fig.subplots(2, 1)
        ax1.plot(np.arange(1, len(self.loss_history) + 1), self.loss_history, ".", markersize=3)
        ax1.set_xlabel("iteration")
        ax1.set_ylabel("training loss")
        epochs = np.arange(len(self.train_acc_history))
        ax2.plot(epochs, self.train_acc_history, "-o", label="train")
        ax2.plot(epochs, self.val_acc_history, "-o", label="val")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("accuracy")
        ax2.legend(loc="lower right")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
        return path
