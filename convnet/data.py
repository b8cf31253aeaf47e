"""Small real image data sets that need no download.

* :func:`load_digits`: scikit-learn's packaged handwritten digits (1797 grey
  8x8 images, 10 classes), shipped inside scikit-learn, split into fixed,
  stratified train/validation/test sets.
* :func:`load_cifar10`: CIFAR-10 from a directory the user already has, in the
  binary version (``cifar-10-batches-bin``, read with plain numpy) or the Python
  version (``cifar-10-batches-py``, whose batches are pickles: they are read
  with a restricted unpickler that accepts only numpy arrays, lists, dicts,
  bytes and numbers). Nothing is ever downloaded.

Both return a dict ``X_train, y_train, X_val, y_val, X_test, y_test`` with
images of shape (N, C, H, W) in the requested float dtype and labels int64.
"""
from __future__ import annotations

import io
import os
import pickle

import numpy as np

from convnet import _checks

__all__ = ["load_digits", "load_cifar10"]

_SPLITS = ("train", "val", "test")


def _stratified_split(y, fractions, rng):
    """Indices of each split: every class is divided in the given proportions (largest-remainder rounding)."""
    parts = [[] for _ in fractions]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        counts = np.floor(np.asarray(fractions) * idx.size).astype(int)
        # Hand the remaining examples to the splits with the largest remainders, train last.
        order = np.argsort(-(np.asarray(fractions) * idx.size - counts), kind="stable")
        for k in order[: idx.size - counts.sum()]:
            counts[k] += 1
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for k in range(len(fractions)):
            parts[k].append(idx[bounds[k]:bounds[k + 1]])
    return [np.sort(np.concatenate(p)) for p in parts]


def load_digits(seed=0, val_fraction=0.15, test_fraction=0.15, dtype=np.float32, subtract_mean=True):
    """scikit-learn's 8x8 handwritten digits as (N, 1, 8, 8) images with fixed stratified splits.

    Pixel values (0..16) are divided by 16; with ``subtract_mean`` the mean
    training image is then subtracted from every split (the statistics come
    from the training split only).

    Parameters
    ----------
    seed : int >= 0
        Seeds the split; the same seed always gives the same split.
    val_fraction, test_fraction : float in (0, 1)
        Share of each class that goes to validation and to test; they must
        leave at least half of the data for training.
    dtype : float32 or float64
    subtract_mean : bool

    Returns
    -------
    data : dict
        ``X_train`` (N_train, 1, 8, 8), ``y_train`` (N_train,) int64, and the same for
        ``val`` and ``test``; ``mean_image`` (1, 8, 8), the training mean that was
        subtracted (zeros when ``subtract_mean`` is False).

    Raises
    ------
    ImportError
        scikit-learn is not installed (``pip install convnet[train]``).
    """
    seed = _checks.check_int("seed", seed, 0)
    val_fraction = _checks.check_real("val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
    test_fraction = _checks.check_real("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    if val_fraction + test_fraction > 0.5:
        raise ValueError(f"val_fraction + test_fraction must be at most 0.5, got "
                         f"{val_fraction} + {test_fraction} = {val_fraction + test_fraction}")
    dtype = _checks.check_float_dtype(dtype)
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:
        raise ImportError(f"load_digits needs scikit-learn, which ships the digits data ({exc}); "
                          f"install it with `pip install convnet[train]`") from None
    bunch = _sk_load_digits()
    X = (np.asarray(bunch.images, dtype=np.float64) / 16.0).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    train_idx, val_idx, test_idx = _stratified_split(
        y, (1.0 - val_fraction - test_fraction, val_fraction, test_fraction), rng)
    return _finish({"train": (X[train_idx], y[train_idx]), "val": (X[val_idx], y[val_idx]),
                    "test": (X[test_idx], y[test_idx])}, dtype, subtract_mean)


def _finish(splits, dtype, subtract_mean):
    """Cast, subtract the training mean image (optional) and lay out the result dict."""
    X_train = splits["train"][0]
    mean = X_train.mean(axis=0, dtype=np.float64) if subtract_mean else np.zeros(X_train.shape[1:])
    mean = mean.astype(dtype)
    out = {}
    for name in _SPLITS:
        X, y = splits[name]
        # Work in the target dtype: CIFAR-10 in float64 would need 1.2 GB.
        X = np.ascontiguousarray(X, dtype=dtype)
        X -= mean
        out[f"X_{name}"] = X
        out[f"y_{name}"] = np.asarray(y, dtype=np.int64)
    out["mean_image"] = mean
    return out


# ---------------------------------------------------------------- CIFAR-10

_CIFAR_RECORD = 1 + 3 * 32 * 32
_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR-10 python batches hold: builtins containers and numpy arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays")


def _read_python_batch(path):
    with open(path, "rb") as f:
        raw = f.read()
    try:
        d = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure means "not a CIFAR batch"
        raise ValueError(f"{path} is not a CIFAR-10 python batch: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a CIFAR-10 python batch: it holds a {type(d).__name__}, not a dict")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path} is not a CIFAR-10 python batch: no 'data' and 'labels' entries")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8 or labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: expected uint8 data of shape (N, 3072) and N labels, got data "
                         f"{data.dtype} {data.shape} and labels {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_binary_batch(path):
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise ValueError(f"{path} has {raw.size} bytes, not a whole number of {_CIFAR_RECORD}-byte "
                         f"CIFAR-10 records")
    records = raw.reshape(-1, _CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _find_cifar_dir(root):
    """The directory holding the batches and its format ('bin' or 'py')."""
    candidates = [root, os.path.join(root, "cifar-10-batches-bin"), os.path.join(root, "cifar-10-batches-py")]
    for d in candidates:
        if all(os.path.isfile(os.path.join(d, f"{b}.bin")) for b in (*_TRAIN_BATCHES, "test_batch")):
            return d, "bin"
        if all(os.path.isfile(os.path.join(d, b)) for b in (*_TRAIN_BATCHES, "test_batch")):
            return d, "py"
    raise FileNotFoundError(
        f"no CIFAR-10 batches under {root!r}: expected data_batch_1..5 and test_batch "
        f"(python version, cifar-10-batches-py) or data_batch_1..5.bin and test_batch.bin "
        f"(binary version, cifar-10-batches-bin) in it or in one of those subdirectories. "
        f"convnet never downloads; get the data from https://www.cs.toronto.edu/~kriz/cifar.html")


def load_cifar10(root, num_val=1000, num_train=None, dtype=np.float32, subtract_mean=True):
    """CIFAR-10 from a local directory, as (N, 3, 32, 32) images scaled to [0, 1].

    Reads the binary version (``data_batch_{1..5}.bin``, ``test_batch.bin``: fixed-size
    records, plain numpy) or the Python version (``data_batch_{1..5}``, ``test_batch``).
    The Python batches are pickles; they are read with a restricted unpickler
    that refuses anything but numpy arrays and builtin containers, so a doctored
    file raises ``ValueError`` instead of running code. Prefer the binary version.

    Parameters
    ----------
    root : str or os.PathLike
        The batches' directory, or its parent holding ``cifar-10-batches-bin`` or ``-py``.
    num_val : int >= 1
        The last ``num_val`` of the 50000 training images become the validation set.
    num_train : int >= 1, optional
        Keep only the first ``num_train`` remaining training images.
    dtype : float32 or float64
    subtract_mean : bool
        Subtract the mean training image from every split.

    Returns
    -------
    data : dict
        ``X_train``, ``y_train``, ``X_val``, ``y_val``, ``X_test``, ``y_test``, ``mean_image`` (3, 32, 32).

    Raises
    ------
    FileNotFoundError
        The batches are not there.
    ValueError
        A file is not a CIFAR-10 batch, or ``num_val`` leaves no training images.
    """
    root = os.fspath(root)
    dtype = _checks.check_float_dtype(dtype)
    num_val = _checks.check_int("num_val", num_val, 1)
    if num_train is not None:
        num_train = _checks.check_int("num_train", num_train, 1)
    directory, kind = _find_cifar_dir(root)
    read = _read_binary_batch if kind == "bin" else _read_python_batch
    suffix = ".bin" if kind == "bin" else ""
    train = [read(os.path.join(directory, b + suffix)) for b in _TRAIN_BATCHES]
    X_all = np.concatenate([x for x, _ in train])
    y_all = np.concatenate([y for _, y in train])
    X_test, y_test = read(os.path.join(directory, "test_batch" + suffix))
    for name, y in (("training", y_all), ("test", y_test)):
        if y.size and (y.min() < 0 or y.max() > 9):
            raise ValueError(f"{directory}: {name} labels must lie in 0..9, got {y.min()}..{y.max()}")
    if num_val >= X_all.shape[0]:
        raise ValueError(f"num_val={num_val} leaves no training images (the batches hold {X_all.shape[0]})")
    X_train, y_train = X_all[:-num_val], y_all[:-num_val]
    X_val, y_val = X_all[-num_val:], y_all[-num_val:]
    if num_train is not None:
        X_train, y_train = X_train[:num_train], y_train[:num_train]
    scale = dtype.type(1.0 / 255.0)
    return _finish({"train": (X_train.astype(dtype) * scale, y_train), "val": (X_val.astype(dtype) * scale, y_val),
                    "test": (X_test.astype(dtype) * scale, y_test)}, dtype, subtract_mean)
