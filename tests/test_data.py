"""Data sets: the packaged digits (splits, scaling, determinism) and CIFAR-10 from synthetic local files."""
import pickle
import sys

import numpy as np
import pytest

from convnet.data import load_cifar10, load_digits


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def sk_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    return datasets.load_digits()


def test_digits_shapes_and_splits(sk_digits):
    data = load_digits(seed=0, val_fraction=0.15, test_fraction=0.15)
    sizes = {s: data[f"X_{s}"].shape[0] for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    for s in ("train", "val", "test"):
        X, y = data[f"X_{s}"], data[f"y_{s}"]
        assert X.shape == (sizes[s], 1, 8, 8) and X.dtype == np.float32
        assert y.shape == (sizes[s],) and y.dtype == np.int64
    # Stratified: each class's share of val and test is 15 % of that class (rounded).
    total = np.bincount(sk_digits.target, minlength=10)
    for s in ("val", "test"):
        counts = np.bincount(data[f"y_{s}"], minlength=10)
        assert np.all(np.abs(counts - 0.15 * total) <= 1)
    np.testing.assert_array_equal(
        np.bincount(data["y_train"], minlength=10) + np.bincount(data["y_val"], minlength=10)
        + np.bincount(data["y_test"], minlength=10), total)


def test_digits_scaling_and_mean(sk_digits):
    raw = load_digits(seed=0, subtract_mean=False, dtype=np.float64)
    assert raw["X_train"].min() >= 0 and raw["X_train"].max() == 1.0
    np.testing.assert_array_equal(raw["mean_image"], np.zeros((1, 8, 8)))
    centred = load_digits(seed=0, dtype=np.float64)
    mean = raw["X_train"].mean(axis=0)
    np.testing.assert_allclose(centred["mean_image"], mean)
    for s in ("train", "val", "test"):
        np.testing.assert_allclose(centred[f"X_{s}"], raw[f"X_{s}"] - mean, atol=1e-12)
    np.testing.assert_allclose(centred["X_train"].mean(axis=0), 0, atol=1e-12)
    # The splits are made of the scikit-learn images divided by 16, each used once.
    images = {img.tobytes(): 0 for img in sk_digits.images / 16.0}
    rows = np.concatenate([raw[f"X_{s}"] for s in ("train", "val", "test")]).reshape(-1, 8, 8)
    all_raw = {img.tobytes() for img in rows}
    assert all_raw == set(images)


def test_digits_deterministic_by_seed():
    a, b, c = load_digits(seed=1), load_digits(seed=1), load_digits(seed=2)
    np.testing.assert_array_equal(a["X_test"], b["X_test"])
    np.testing.assert_array_equal(a["y_val"], b["y_val"])
    assert not np.array_equal(a["X_test"], c["X_test"])


def test_digits_argument_errors():
    with pytest.raises(ValueError, match="at most 0.5"):
        load_digits(val_fraction=0.3, test_fraction=0.3)
    with pytest.raises(ValueError, match="val_fraction"):
        load_digits(val_fraction=0.0)
    with pytest.raises(TypeError, match="dtype"):
        load_digits(dtype=np.int32)
    with pytest.raises(ValueError, match="seed"):
        load_digits(seed=-1)


def test_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"pip install convnet\[train\]"):
        load_digits()


# ---------------------------------------------------------------- CIFAR-10 (synthetic files)

PER_BATCH = 4


def _batches(seed=0):
    """Six small batches (5 train, 1 test) of known uint8 images and labels."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        out[name] = (rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8),
                     rng.integers(0, 10, size=PER_BATCH))
    return out


def _write_binary(directory, batches):
    directory.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in batches.items():
        records = np.concatenate([labels.astype(np.uint8)[:, None], data], axis=1)
        records.tofile(directory / f"{name}.bin")


def _write_python(directory, batches):
    directory.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in batches.items():
        with open(directory / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": [int(v) for v in labels], b"data": data,
                         b"filenames": [b"x.png"] * len(labels)}, f, protocol=2)


def _expected(batches, num_val):
    X = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32) / 255.0
    y = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    X_test = batches["test_batch"][0].reshape(-1, 3, 32, 32) / 255.0
    return X[:-num_val], y[:-num_val], X[-num_val:], y[-num_val:], X_test, batches["test_batch"][1]


@pytest.mark.parametrize("writer,subdir", [(_write_binary, "cifar-10-batches-bin"),
                                           (_write_python, "cifar-10-batches-py")])
def test_cifar10_reads_both_versions(tmp_path, writer, subdir):
    batches = _batches()
    writer(tmp_path / subdir, batches)
    X_tr, y_tr, X_va, y_va, X_te, y_te = _expected(batches, num_val=3)
    # The parent directory works too: the loader looks in the standard subdirectory.
    data = load_cifar10(tmp_path, num_val=3, dtype=np.float64)
    mean = X_tr.mean(axis=0)
    np.testing.assert_allclose(data["mean_image"], mean)
    np.testing.assert_allclose(data["X_train"], X_tr - mean, atol=1e-12)
    np.testing.assert_allclose(data["X_val"], X_va - mean, atol=1e-12)
    np.testing.assert_allclose(data["X_test"], X_te - mean, atol=1e-12)
    np.testing.assert_array_equal(data["y_train"], y_tr)
    np.testing.assert_array_equal(data["y_val"], y_va)
    np.testing.assert_array_equal(data["y_test"], y_te)
    assert data["y_train"].dtype == np.int64 and data["X_train"].shape == (17, 3, 32, 32)
    raw = load_cifar10(tmp_path / subdir, num_val=3, num_train=5, subtract_mean=False)
    assert raw["X_train"].dtype == np.float32 and raw["X_train"].shape == (5, 3, 32, 32)
    np.testing.assert_allclose(raw["X_train"], X_tr[:5], rtol=1e-6)


def test_cifar10_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_cifar10(tmp_path / "nowhere")
    _write_binary(tmp_path, {k: v for k, v in _batches().items() if k != "test_batch"})
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(tmp_path)


def test_cifar10_truncated_binary_file(tmp_path):
    _write_binary(tmp_path, _batches())
    with open(tmp_path / "data_batch_3.bin", "ab") as f:
        f.write(b"\x00" * 10)
    with pytest.raises(ValueError, match="data_batch_3.bin has 12302 bytes"):
        load_cifar10(tmp_path)


def test_cifar10_bad_labels_and_num_val(tmp_path):
    batches = _batches()
    _write_binary(tmp_path, batches)
    with pytest.raises(ValueError, match="leaves no training images"):
        load_cifar10(tmp_path, num_val=20)
    data, labels = batches["test_batch"]
    batches["test_batch"] = (data, np.array([0, 1, 2, 200]))
    _write_binary(tmp_path, batches)
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        load_cifar10(tmp_path)


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar10_python_batches_refuse_code(tmp_path):
    batches = _batches()
    _write_python(tmp_path, batches)
    with open(tmp_path / "data_batch_2", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f)
    with pytest.raises(ValueError, match=r"not a CIFAR-10 python batch: refusing to load (posix|os)\.system"):
        load_cifar10(tmp_path)
    with open(tmp_path / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"uint8 data of shape \(N, 3072\)"):
        load_cifar10(tmp_path)
