"""The networks of EECS 498 assignments 2 and 3, on numpy, and Kaiming initialisation.

Every model keeps its parameters in ``model.params`` under the course's keys
(``W1``, ``b1``, ..., ``gamma1``, ``beta1``) and has ``loss(X, y=None)``:
without ``y`` it runs in test mode and returns the class scores; with ``y``
it runs in training mode and returns ``(loss, grads)`` with one gradient per
parameter. L2 regularisation adds ``reg * sum(W**2)`` over the weights
(not biases, not batch-norm parameters), with no 0.5 factor.

Convolutions and pooling go through the fast path (:mod:`convnet.fast`) by
way of the sandwich layers (:mod:`convnet.sandwich`).

``model.save(path)`` writes an ``.npz`` file (parameters, batch-norm running
statistics and the constructor's arguments as a JSON string) and
``Model.load(path)`` / :func:`load_model` rebuild the model from it; neither
uses pickle.
"""
from __future__ import annotations

import json
import os
import uuid
import zipfile
from collections.abc import Sequence

import numpy as np

from convnet import _checks
from convnet.fast.inputs import carry_mark
from convnet.layers import Dropout, Linear
from convnet.losses import softmax_loss
from convnet.sandwich import (Conv_BatchNorm_ReLU, Conv_BatchNorm_ReLU_Pool, Conv_ReLU, Conv_ReLU_Pool,
                              Linear_ReLU)

__all__ = ["Model", "TwoLayerNet", "FullyConnectedNet", "ThreeLayerConvNet", "DeepConvNet",
           "kaiming_initializer", "load_model"]

_FORMAT = "convnet-model"
_FORMAT_VERSION = 1


# ---------------------------------------------------------------- validation helpers


def _check_seed(seed):
    if seed is None:
        return None
    return _checks.check_int("seed", seed, 0)


def _check_int_list(name: str, values, minimum: int, allow_empty: bool = False) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a list of integers, got {values!r} ({type(values).__name__})")
    out = [_checks.check_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(values)]
    if not out and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return out


def _check_input_dims(input_dims) -> tuple[int, int, int]:
    dims = _check_int_list("input_dims", input_dims, 1)
    if len(dims) != 3:
        raise ValueError(f"input_dims must be (C, H, W), got {tuple(input_dims)!r}")
    return tuple(dims)


def _check_weight_scale(weight_scale, allow_kaiming: bool):
    if allow_kaiming and isinstance(weight_scale, str):
        if weight_scale != "kaiming":
            raise ValueError(f"weight_scale must be a positive number or 'kaiming', got {weight_scale!r}")
        return weight_scale
    return _checks.check_real("weight_scale", weight_scale, low=0.0, low_open=True)


def kaiming_initializer(Din, Dout, K=None, relu=True, dtype=np.float32, rng=None):
    """Kaiming (He) initialisation: zero-mean Gaussian weights with ``std = sqrt(gain / fan_in)``.

    Parameters
    ----------
    Din : int >= 1
        Input dimension (features of a linear layer, channels of a convolution).
    Dout : int >= 1
        Output dimension (features of a linear layer, filters of a convolution).
    K : int >= 1 or None
        Kernel size of a convolution; None for a linear layer.
    relu : bool
        True for a layer followed by ReLU (gain 2), False otherwise (gain 1).
    dtype : float32 or float64
    rng : numpy.random.Generator or None
        Source of randomness; None uses a fresh ``np.random.default_rng()``.

    Returns
    -------
    weight : ndarray of shape (Din, Dout) if K is None, else (Dout, Din, K, K)
        ``fan_in = Din`` for a linear layer and ``Din * K * K`` for a convolution.
    """
    Din = _checks.check_int("Din", Din, 1)
    Dout = _checks.check_int("Dout", Dout, 1)
    if K is not None:
        K = _checks.check_int("K", K, 1)
    if not isinstance(relu, (bool, np.bool_)):
        raise TypeError(f"relu must be True or False, got {relu!r}")
    dtype = _checks.check_float_dtype(dtype)
    if rng is None:
        rng = np.random.default_rng()
    elif not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    weight = None
    # BEGIN SOLUTION
    gain = 2.0 if relu else 1.0
    if K is None:
        fan_in, shape = Din, (Din, Dout)
    else:
        fan_in, shape = Din * K * K, (Dout, Din, K, K)
    weight = rng.standard_normal(shape) * np.sqrt(gain / fan_in)
    # END SOLUTION
    return weight.astype(dtype, copy=False)


# ---------------------------------------------------------------- base class


class Model:
    """Base class: input checks, L2 regularisation, and saving/loading without pickle.

    Subclasses set ``self.params``, ``self.reg``, ``self.dtype``,
    ``self.input_shape`` (the shape of one example) and ``self._config`` (the
    constructor's arguments, JSON-serialisable), and may keep extra arrays
    (batch-norm running statistics) through :meth:`_state` / :meth:`_set_state`.
    """

    params: dict
    reg: float
    dtype: np.dtype
    input_shape: tuple
    _config: dict

    # -- helpers for loss()

    def _check_X(self, X) -> np.ndarray:
        """X is a float ndarray of shape (N, *input_shape); returned in the model's dtype.

        A converted X keeps the mark of :func:`convnet.fast.network_input`, so the
        first convolution still skips the input's gradient.
        """
        _checks.check_array("X", X)
        if X.shape[1:] != tuple(self.input_shape) or X.shape[0] == 0:
            raise ValueError(f"X has shape {X.shape} but {type(self).__name__} expects "
                             f"(N, {', '.join(map(str, self.input_shape))}) with N >= 1")
        return carry_mark(X, X.astype(self.dtype, copy=False))

    def _weight_keys(self):
        return [k for k in self.params if k.startswith("W")]

    def _add_reg(self, loss: float, grads: dict) -> float:
        """Add ``reg * sum(W**2)`` to the loss and ``2 * reg * W`` to each weight's gradient."""
        if self.reg == 0:
            return loss
        for k in self._weight_keys():
            W = self.params[k]
            loss += self.reg * float(np.sum(W * W))
            grads[k] = grads[k] + (2 * self.reg) * W
        return loss

    def loss(self, X, y=None):  # pragma: no cover - every model overrides it
        raise NotImplementedError

    def predict(self, X, batch_size=100):
        """Predicted labels (int64, shape (N,)) in test mode, ``batch_size`` examples at a time."""
        batch_size = _checks.check_int("batch_size", batch_size, 1)
        _checks.check_array("X", X)
        preds = [np.argmax(self.loss(X[i:i + batch_size]), axis=1) for i in range(0, X.shape[0], batch_size)]
        return np.concatenate(preds).astype(np.int64) if preds else np.zeros(0, np.int64)

    # -- persistence

    def _state(self) -> dict:
        """Arrays besides params that a checkpoint must keep (batch-norm running statistics)."""
        return {}

    def _set_state(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, but the file has {sorted(state)}")

    def save(self, path, extra=None):
        """Write the model to ``path`` as an ``.npz`` file (no pickle; the name is used as given).

        Parameters
        ----------
        path : str or os.PathLike
        extra : dict of str to array-like, optional
            More arrays to store (e.g. a solver's history); read back by :func:`load_checkpoint`.
        """
        meta = {"format": _FORMAT, "version": _FORMAT_VERSION, "class": type(self).__name__,
                "dtype": str(self.dtype), "config": self._config}
        arrays = {"__meta__": np.array(json.dumps(meta))}
        arrays.update({f"param:{k}": np.asarray(v) for k, v in self.params.items()})
        arrays.update({f"state:{k}": np.asarray(v) for k, v in self._state().items()})
        for k, v in (extra or {}).items():
            a = np.asarray(v)
            if a.dtype == object:
                raise TypeError(f"extra[{k!r}] is not a plain array (dtype object); it cannot be saved without pickle")
            arrays[f"extra:{k}"] = a
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        # Write beside the target and rename, so a crash never leaves half a checkpoint.
        tmp = os.path.join(directory, f".tmp-{os.getpid()}-{uuid.uuid4().hex}.npz")
        try:
            with open(tmp, "xb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path):
        """Rebuild a model saved by :meth:`save`; checks its class, keys, shapes and dtype.

        Called on :class:`Model` itself it returns whichever model class the file holds.
        """
        model, _ = load_checkpoint(path, expected=None if cls is Model else cls)
        return model


def load_checkpoint(path, expected=None):
    """Read a file written by :meth:`Model.save`.

    Parameters
    ----------
    path : str or os.PathLike
    expected : Model subclass, optional
        Refuse a file holding another class.

    Returns
    -------
    model : Model
    extra : dict of str to ndarray
        The ``extra`` arrays given to :meth:`Model.save`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not a convnet checkpoint, or its parameters do not match the model it describes.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path!r} is not a readable convnet checkpoint (.npz without pickle): {exc}") from None
    if "__meta__" not in arrays:
        raise ValueError(f"{path!r} is not a convnet checkpoint: it has no '__meta__' entry")
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
        ok = isinstance(meta, dict) and meta.get("format") == _FORMAT
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise ValueError(f"{path!r} is not a convnet checkpoint: unreadable '__meta__'")
    if meta.get("version") != _FORMAT_VERSION:
        raise ValueError(f"{path!r} has checkpoint format version {meta.get('version')!r}; "
                         f"this convnet reads version {_FORMAT_VERSION}")
    name = meta.get("class")
    classes = {c.__name__: c for c in (TwoLayerNet, FullyConnectedNet, ThreeLayerConvNet, DeepConvNet)}
    if name not in classes:
        raise ValueError(f"{path!r} holds an unknown model class {name!r}; known: {sorted(classes)}")
    klass = classes[name]
    if expected is not None and klass is not expected:
        raise ValueError(f"{path!r} holds a {name}, not a {expected.__name__}")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{path!r}: '__meta__' has no constructor arguments")
    try:
        model = klass(**config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path!r}: cannot rebuild {name} from its stored arguments: {exc}") from None
    groups = {"param": {}, "state": {}, "extra": {}}
    for key, value in arrays.items():
        kind, _, sub = key.partition(":")
        if kind not in groups or not sub:
            raise ValueError(f"{path!r} has an unexpected entry {key!r}")
        groups[kind][sub] = value
    _match(path, "parameter", groups["param"], model.params)
    _match(path, "state array", groups["state"], model._state())
    model.params = {k: groups["param"][k].copy() for k in model.params}
    model._set_state({k: v.copy() for k, v in groups["state"].items()})
    return model, groups["extra"]


def _match(path, what, found: dict, wanted: dict) -> None:
    """Loaded arrays have exactly the wanted keys, shapes and dtypes."""
    missing = sorted(set(wanted) - set(found))
    unexpected = sorted(set(found) - set(wanted))
    if missing or unexpected:
        raise ValueError(f"{path!r}: {what} keys do not match the model: missing {missing}, unexpected {unexpected}")
    for k, want in wanted.items():
        got = found[k]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise ValueError(f"{path!r}: {what} {k!r} has shape {got.shape} and dtype {got.dtype}; "
                             f"the model expects shape {want.shape} and dtype {want.dtype}")


def load_model(path):
    """Rebuild whichever model :meth:`Model.save` wrote to ``path``."""
    return Model.load(path)


# ---------------------------------------------------------------- fully connected networks


class TwoLayerNet(Model):
    """Linear - ReLU - Linear - softmax.

    Parameters
    ----------
    input_dim : int >= 1
        D, the number of features of one (flattened) example.
    hidden_dim : int >= 1
    num_classes : int >= 1
    weight_scale : float > 0
        Standard deviation of the Gaussian initial weights; biases start at zero.
    reg : float >= 0
        L2 strength: the loss adds ``reg * sum(W**2)`` per weight matrix.
    dtype : float32 or float64
    seed : int >= 0 or None
        Seeds the initialisation (``np.random.default_rng(seed)``).

    Attributes
    ----------
    params : dict
        ``W1`` (D, hidden_dim), ``b1`` (hidden_dim,), ``W2`` (hidden_dim, num_classes), ``b2`` (num_classes,).
    """

    def __init__(self, input_dim=3 * 32 * 32, hidden_dim=100, num_classes=10, weight_scale=1e-3, reg=0.0,
                 dtype=np.float32, seed=None):
        input_dim = _checks.check_int("input_dim", input_dim, 1)
        hidden_dim = _checks.check_int("hidden_dim", hidden_dim, 1)
        num_classes = _checks.check_int("num_classes", num_classes, 1)
        weight_scale = _check_weight_scale(weight_scale, allow_kaiming=False)
        self.reg = _checks.check_real("reg", reg, low=0.0)
        self.dtype = _checks.check_float_dtype(dtype)
        seed = _check_seed(seed)
        self.input_shape = (input_dim,)
        self._config = dict(input_dim=input_dim, hidden_dim=hidden_dim, num_classes=num_classes,
                            weight_scale=weight_scale, reg=self.reg, dtype=str(self.dtype), seed=seed)
        rng = np.random.default_rng(seed)
        self.params = {}
        # BEGIN SOLUTION
        self.params["W1"] = (weight_scale * rng.standard_normal((input_dim, hidden_dim))).astype(self.dtype)
        self.params["b1"] = np.zeros(hidden_dim, dtype=self.dtype)
        self.params["W2"] = (weight_scale * rng.standard_normal((hidden_dim, num_classes))).astype(self.dtype)
        self.params["b2"] = np.zeros(num_classes, dtype=self.dtype)
        # END SOLUTION

    def _check_X(self, X):
        # Accept (N, D) or any (N, d1, ..., dk) that flattens to D features.
        _checks.check_array("X", X)
        D = self.input_shape[0]
        if X.ndim < 2 or X.shape[0] == 0 or int(np.prod(X.shape[1:])) != D:
            raise ValueError(f"X has shape {X.shape} but {type(self).__name__} expects N >= 1 examples "
                             f"of D={D} features, (N, {D}) or (N, d1, ..., dk) with d1*...*dk = {D}")
        return X.astype(self.dtype, copy=False)

    def loss(self, X, y=None):
        """Scores for ``X`` (N, D); with labels ``y`` (N,), the loss and gradients.

        Returns
        -------
        scores : ndarray of shape (N, num_classes), if y is None
        (loss, grads) : float and dict of the params' shapes, otherwise
        """
        X = self._check_X(X)
        scores = None
        # BEGIN SOLUTION
        h, cache1 = Linear_ReLU.forward(X, self.params["W1"], self.params["b1"])
        scores, cache2 = Linear.forward(h, self.params["W2"], self.params["b2"])
        # END SOLUTION
        if y is None:
            return scores
        loss, grads = 0.0, {}
        # BEGIN SOLUTION
        loss, dscores = softmax_loss(scores, y)
        dh, grads["W2"], grads["b2"] = Linear.backward(dscores, cache2)
        _, grads["W1"], grads["b1"] = Linear_ReLU.backward(dh, cache1)
        loss = self._add_reg(loss, grads)
        # END SOLUTION
        return loss, grads


class FullyConnectedNet(Model):
    """``{Linear - ReLU - [Dropout]} x (L - 1) - Linear - softmax`` with L = len(hidden_dims) + 1.

    Parameters
    ----------
    hidden_dims : list of int >= 1
        Width of each hidden layer (may be empty: a linear classifier).
    input_dim : int >= 1
    num_classes : int >= 1
    dropout : float in [0, 1)
        Probability of dropping a hidden unit (EECS 498's meaning); 0 disables dropout.
    reg : float >= 0
    weight_scale : float > 0
    dtype : float32 or float64
    seed : int >= 0 or None
        Seeds the initialisation; when given it also fixes the dropout mask
        (``dropout_param['seed']``), as in the course, so gradient checks are
        deterministic.

    Attributes
    ----------
    params : dict
        ``W{i}``, ``b{i}`` for i = 1..L.
    """

    def __init__(self, hidden_dims, input_dim=3 * 32 * 32, num_classes=10, dropout=0.0, reg=0.0,
                 weight_scale=1e-2, dtype=np.float32, seed=None):
        hidden_dims = _check_int_list("hidden_dims", hidden_dims, 1, allow_empty=True)
        input_dim = _checks.check_int("input_dim", input_dim, 1)
        num_classes = _checks.check_int("num_classes", num_classes, 1)
        dropout = _checks.check_real("dropout", dropout, low=0.0, high=1.0, high_open=True)
        self.reg = _checks.check_real("reg", reg, low=0.0)
        weight_scale = _check_weight_scale(weight_scale, allow_kaiming=False)
        self.dtype = _checks.check_float_dtype(dtype)
        seed = _check_seed(seed)
        self.input_shape = (input_dim,)
        self.num_layers = len(hidden_dims) + 1
        self.use_dropout = dropout != 0
        self.dropout_param = {"mode": "train", "p": dropout}
        if seed is not None:
            self.dropout_param["seed"] = seed
        self._config = dict(hidden_dims=hidden_dims, input_dim=input_dim, num_classes=num_classes,
                            dropout=dropout, reg=self.reg, weight_scale=weight_scale, dtype=str(self.dtype),
                            seed=seed)
        rng = np.random.default_rng(seed)
        self.params = {}
        # BEGIN SOLUTION
        dims = [input_dim, *hidden_dims, num_classes]
        for i in range(self.num_layers):
            W = weight_scale * rng.standard_normal((dims[i], dims[i + 1]))
            self.params[f"W{i + 1}"] = W.astype(self.dtype)
            self.params[f"b{i + 1}"] = np.zeros(dims[i + 1], dtype=self.dtype)
        # END SOLUTION

    _check_X = TwoLayerNet._check_X

    def loss(self, X, y=None):
        """Scores for ``X`` (N, D); with labels ``y`` (N,), the loss and gradients (dropout on)."""
        X = self._check_X(X)
        self.dropout_param["mode"] = "test" if y is None else "train"
        scores = None
        # BEGIN SOLUTION
        L = self.num_layers
        caches = []
        out = X
        for i in range(1, L):
            out, cache = Linear_ReLU.forward(out, self.params[f"W{i}"], self.params[f"b{i}"])
            drop_cache = None
            if self.use_dropout:
                out, drop_cache = Dropout.forward(out, self.dropout_param)
            caches.append((cache, drop_cache))
        scores, last_cache = Linear.forward(out, self.params[f"W{L}"], self.params[f"b{L}"])
        # END SOLUTION
        if y is None:
            return scores
        loss, grads = 0.0, {}
        # BEGIN SOLUTION
        loss, dout = softmax_loss(scores, y)
        dout, grads[f"W{L}"], grads[f"b{L}"] = Linear.backward(dout, last_cache)
        for i in range(L - 1, 0, -1):
            cache, drop_cache = caches[i - 1]
            if drop_cache is not None:
                dout = Dropout.backward(dout, drop_cache)
            dout, grads[f"W{i}"], grads[f"b{i}"] = Linear_ReLU.backward(dout, cache)
        loss = self._add_reg(loss, grads)
        # END SOLUTION
        return loss, grads


# ---------------------------------------------------------------- convolutional networks


def _pool_size(size: int) -> int:
    return _checks.output_size(size, 2, 2, 0)


class ThreeLayerConvNet(Model):
    """conv - ReLU - 2x2 max pool - linear - ReLU - linear - softmax.

    The convolution has ``num_filters`` filters of ``filter_size x filter_size``,
    stride 1 and zero padding ``(filter_size - 1) // 2`` (which keeps H and W
    for odd filter sizes); the pool has stride 2.

    Parameters
    ----------
    input_dims : tuple (C, H, W) of int >= 1
    num_filters : int >= 1
    filter_size : int >= 1
    hidden_dim : int >= 1
    num_classes : int >= 1
    weight_scale : float > 0
        Standard deviation of the Gaussian initial weights; biases start at zero.
    reg : float >= 0
    dtype : float32 or float64
    seed : int >= 0 or None

    Attributes
    ----------
    params : dict
        ``W1`` (F, C, K, K), ``b1`` (F,), ``W2`` (F * H_p * W_p, hidden_dim), ``b2`` (hidden_dim,),
        ``W3`` (hidden_dim, num_classes), ``b3`` (num_classes,), where H_p x W_p is the pooled size.
    """

    def __init__(self, input_dims=(3, 32, 32), num_filters=32, filter_size=7, hidden_dim=100, num_classes=10,
                 weight_scale=1e-3, reg=0.0, dtype=np.float32, seed=None):
        C, H, W = _check_input_dims(input_dims)
        num_filters = _checks.check_int("num_filters", num_filters, 1)
        filter_size = _checks.check_int("filter_size", filter_size, 1)
        hidden_dim = _checks.check_int("hidden_dim", hidden_dim, 1)
        num_classes = _checks.check_int("num_classes", num_classes, 1)
        weight_scale = _check_weight_scale(weight_scale, allow_kaiming=False)
        self.reg = _checks.check_real("reg", reg, low=0.0)
        self.dtype = _checks.check_float_dtype(dtype)
        seed = _check_seed(seed)
        pad = (filter_size - 1) // 2
        H_conv, W_conv = (_checks.output_size(n, filter_size, 1, pad) for n in (H, W))
        if H_conv < 2 or W_conv < 2:
            raise ValueError(f"filter_size {filter_size} on a {H}x{W} input leaves a {H_conv}x{W_conv} map, "
                             f"too small for the 2x2 pool")
        self.conv_param = {"stride": 1, "pad": pad}
        self.pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
        self.input_shape = (C, H, W)
        self._config = dict(input_dims=[C, H, W], num_filters=num_filters, filter_size=filter_size,
                            hidden_dim=hidden_dim, num_classes=num_classes, weight_scale=weight_scale,
                            reg=self.reg, dtype=str(self.dtype), seed=seed)
        rng = np.random.default_rng(seed)
        self.params = {}
        # BEGIN SOLUTION
        flat = num_filters * _pool_size(H_conv) * _pool_size(W_conv)
        shapes = {"W1": (num_filters, C, filter_size, filter_size), "W2": (flat, hidden_dim),
                  "W3": (hidden_dim, num_classes)}
        for i, (key, shape) in enumerate(shapes.items(), start=1):
            self.params[key] = (weight_scale * rng.standard_normal(shape)).astype(self.dtype)
            self.params[f"b{i}"] = np.zeros(shape[0] if i == 1 else shape[1], dtype=self.dtype)
        # END SOLUTION

    def loss(self, X, y=None):
        """Scores for ``X`` (N, C, H, W); with labels ``y`` (N,), the loss and gradients.

        Returns
        -------
        scores : ndarray of shape (N, num_classes), if y is None
        (loss, grads) : float and dict of the params' shapes, otherwise
        """
        X = self._check_X(X)
        p = self.params
        scores = None
        # BEGIN SOLUTION
        out1, cache1 = Conv_ReLU_Pool.forward(X, p["W1"], p["b1"], self.conv_param, self.pool_param)
        out2, cache2 = Linear_ReLU.forward(out1, p["W2"], p["b2"])
        scores, cache3 = Linear.forward(out2, p["W3"], p["b3"])
        # END SOLUTION
        if y is None:
            return scores
        loss, grads = 0.0, {}
        # BEGIN SOLUTION
        loss, dscores = softmax_loss(scores, y)
        d2, grads["W3"], grads["b3"] = Linear.backward(dscores, cache3)
        d1, grads["W2"], grads["b2"] = Linear_ReLU.backward(d2, cache2)
        _, grads["W1"], grads["b1"] = Conv_ReLU_Pool.backward(d1, cache1)
        loss = self._add_reg(loss, grads)
        # END SOLUTION
        return loss, grads


class DeepConvNet(Model):
    """``{conv - [spatial batch norm] - ReLU - [2x2 max pool]} x L - linear - softmax``.

    Every convolution is 3x3 with stride 1 and padding 1 (it keeps H and W);
    the layers listed in ``max_pools`` are followed by a 2x2 max pool of stride 2.

    Parameters
    ----------
    input_dims : tuple (C, H, W) of int >= 1
    num_filters : list of int >= 1
        Filters of each of the L convolutional layers.
    max_pools : list of int
        Indices (0-based, distinct, in [0, L)) of the layers followed by a max pool.
    batchnorm : bool
        Put spatial batch norm after every convolution (params ``gamma{i}``, ``beta{i}``).
    num_classes : int >= 1
    weight_scale : float > 0 or 'kaiming'
        Standard deviation of the Gaussian initial weights, or ``'kaiming'`` for
        :func:`kaiming_initializer` (gain 2 for the convolutions, 1 for the final linear layer).
    reg : float >= 0
    weight_initializer : callable, optional
        Draws every weight instead of ``weight_scale``; called like
        :func:`kaiming_initializer`: ``weight_initializer(Din, Dout, K=K, relu=relu, dtype=dtype, rng=rng)``
        and must return an array of the shape that function documents. It is not saved by :meth:`save`.
    dtype : float32 or float64
    seed : int >= 0 or None

    Attributes
    ----------
    params : dict
        ``W{i}`` (F_i, F_{i-1}, 3, 3), ``b{i}`` (F_i,) [``gamma{i}``, ``beta{i}`` (F_i,)] for i = 1..L,
        then ``W{L+1}`` (F_L * H' * W', num_classes), ``b{L+1}`` (num_classes,).
    bn_params : list of dict
        One bn_param per layer when ``batchnorm`` (holding the running statistics), else empty.
    """

    def __init__(self, input_dims=(3, 32, 32), num_filters=(8, 8, 8, 8, 8), max_pools=(0, 1, 2, 3, 4),
                 batchnorm=False, num_classes=10, weight_scale=1e-3, reg=0.0, weight_initializer=None,
                 dtype=np.float32, seed=None):
        C, H, W = _check_input_dims(input_dims)
        num_filters = _check_int_list("num_filters", num_filters, 1)
        L = len(num_filters)
        max_pools = _check_int_list("max_pools", max_pools, 0, allow_empty=True)
        bad = [i for i in max_pools if i >= L]
        if bad:
            raise ValueError(f"max_pools {max_pools} has indices {bad} beyond the {L} convolutional layers "
                             f"(valid: 0..{L - 1})")
        if len(set(max_pools)) != len(max_pools):
            raise ValueError(f"max_pools {max_pools} lists a layer more than once")
        if not isinstance(batchnorm, (bool, np.bool_)):
            raise TypeError(f"batchnorm must be True or False, got {batchnorm!r}")
        num_classes = _checks.check_int("num_classes", num_classes, 1)
        if weight_initializer is not None and not callable(weight_initializer):
            raise TypeError(f"weight_initializer must be callable or None, got {type(weight_initializer).__name__}")
        weight_scale = _check_weight_scale(weight_scale, allow_kaiming=True)
        self.reg = _checks.check_real("reg", reg, low=0.0)
        self.dtype = _checks.check_float_dtype(dtype)
        seed = _check_seed(seed)
        h, w = H, W
        for i in range(L):
            if i in max_pools:
                if h < 2 or w < 2:
                    raise ValueError(f"max pool after layer {i} gets a {h}x{w} map, too small for a 2x2 pool "
                                     f"(input {H}x{W}, max_pools {max_pools})")
                h, w = _pool_size(h), _pool_size(w)
        self.num_layers = L + 1
        self.max_pools = sorted(max_pools)
        self.batchnorm = bool(batchnorm)
        self.conv_param = {"stride": 1, "pad": 1}
        self.pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
        # Running statistics start at zeros (as BatchNorm.forward would create them) so a checkpoint
        # of a fresh model and of a trained one hold the same arrays.
        self.bn_params = [{"mode": "train", "running_mean": np.zeros(F, dtype=self.dtype),
                           "running_var": np.zeros(F, dtype=self.dtype)}
                          for F in num_filters] if self.batchnorm else []
        self.input_shape = (C, H, W)
        self._config = dict(input_dims=[C, H, W], num_filters=num_filters, max_pools=self.max_pools,
                            batchnorm=self.batchnorm, num_classes=num_classes, weight_scale=weight_scale,
                            reg=self.reg, dtype=str(self.dtype), seed=seed)
        rng = np.random.default_rng(seed)
        self._flat_dim = num_filters[-1] * h * w

        def draw(Din, Dout, K, relu):
            # One place for the three initialisation choices; the result's shape is checked.
            want = (Din, Dout) if K is None else (Dout, Din, K, K)
            if weight_initializer is not None:
                Wt = np.asarray(weight_initializer(Din, Dout, K=K, relu=relu, dtype=self.dtype, rng=rng))
                if Wt.shape != want:
                    raise ValueError(f"weight_initializer returned shape {Wt.shape}; expected {want}")
                return Wt.astype(self.dtype, copy=False)
            if weight_scale == "kaiming":
                return kaiming_initializer(Din, Dout, K=K, relu=relu, dtype=self.dtype, rng=rng)
            return (weight_scale * rng.standard_normal(want)).astype(self.dtype)

        self.params = {}
        # BEGIN SOLUTION
        prev = C
        for i, F in enumerate(num_filters, start=1):
            self.params[f"W{i}"] = draw(prev, F, 3, True)
            self.params[f"b{i}"] = np.zeros(F, dtype=self.dtype)
            if self.batchnorm:
                self.params[f"gamma{i}"] = np.ones(F, dtype=self.dtype)
                self.params[f"beta{i}"] = np.zeros(F, dtype=self.dtype)
            prev = F
        self.params[f"W{L + 1}"] = draw(self._flat_dim, num_classes, None, False)
        self.params[f"b{L + 1}"] = np.zeros(num_classes, dtype=self.dtype)
        # END SOLUTION

    def _state(self):
        state = {}
        for i, bn in enumerate(self.bn_params, start=1):
            for key in ("running_mean", "running_var"):
                if bn.get(key) is not None:
                    state[f"bn{i}_{key}"] = bn[key]
        return state

    def _set_state(self, state):
        for key, value in state.items():
            layer, _, stat = key.partition("_")
            i = int(layer[2:]) - 1
            self.bn_params[i][stat] = value

    def loss(self, X, y=None):
        """Scores for ``X`` (N, C, H, W); with labels ``y`` (N,), the loss and gradients.

        Batch norm runs in test mode (running statistics) without ``y`` and in
        training mode (batch statistics, running statistics updated) with ``y``.
        """
        X = self._check_X(X)
        mode = "test" if y is None else "train"
        for bn_param in self.bn_params:
            bn_param["mode"] = mode
        p = self.params
        L = self.num_layers - 1
        scores = None
        # BEGIN SOLUTION
        caches = []
        out = X
        for i in range(1, L + 1):
            pool = (i - 1) in self.max_pools
            if self.batchnorm:
                layer = Conv_BatchNorm_ReLU_Pool if pool else Conv_BatchNorm_ReLU
                args = [p[f"W{i}"], p[f"b{i}"], p[f"gamma{i}"], p[f"beta{i}"], self.conv_param,
                        self.bn_params[i - 1]]
            else:
                layer = Conv_ReLU_Pool if pool else Conv_ReLU
                args = [p[f"W{i}"], p[f"b{i}"], self.conv_param]
            if pool:
                args.append(self.pool_param)
            out, cache = layer.forward(out, *args)
            caches.append((layer, cache))
        scores, last_cache = Linear.forward(out, p[f"W{L + 1}"], p[f"b{L + 1}"])
        # END SOLUTION
        if y is None:
            return scores
        loss, grads = 0.0, {}
        # BEGIN SOLUTION
        loss, dout = softmax_loss(scores, y)
        dout, grads[f"W{L + 1}"], grads[f"b{L + 1}"] = Linear.backward(dout, last_cache)
        for i in range(L, 0, -1):
            layer, cache = caches[i - 1]
            if self.batchnorm:
                dout, grads[f"W{i}"], grads[f"b{i}"], grads[f"gamma{i}"], grads[f"beta{i}"] = \
                    layer.backward(dout, cache)
            else:
                dout, grads[f"W{i}"], grads[f"b{i}"] = layer.backward(dout, cache)
        loss = self._add_reg(loss, grads)
        # END SOLUTION
        return loss, grads
