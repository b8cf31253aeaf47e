"""convnet._checks: the one place that validates and computes output sizes."""
import numpy as np
import pytest

from convnet import _checks


@pytest.mark.parametrize("size, kernel, stride, pad, expected", [
    (32, 3, 1, 1, 32), (32, 3, 2, 1, 16), (7, 3, 2, 0, 3), (6, 4, 3, 0, 1), (5, 5, 1, 0, 1), (4, 7, 1, 3, 4),
])
def test_output_size_is_floor_like_pytorch(size, kernel, stride, pad, expected):
    assert _checks.output_size(size, kernel, stride, pad) == expected


def test_conv_geometry_non_square():
    g = _checks.conv_args(np.zeros((2, 3, 7, 9)), np.zeros((4, 3, 3, 5)), np.zeros(4), {"stride": 2, "pad": 1})
    assert g == (2, 3, 7, 9, 4, 3, 5, 2, 1, 4, 4)
    assert all(type(v) is int for v in g)


def test_conv_accepts_numpy_integers():
    g = _checks.conv_args(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2)), np.zeros(1),
                          {"stride": np.int64(2), "pad": np.int32(0)})
    assert (g.stride, g.pad, g.H_out) == (2, 0, 2)


def test_pool_geometry_and_default_pad():
    g = _checks.pool_args(np.zeros((1, 2, 33, 33)), {"pool_height": 3, "pool_width": 3, "stride": 2})
    assert (g.pad, g.H_out, g.W_out) == (0, 16, 16)


@pytest.mark.parametrize("value, exc, match", [
    (1.5, TypeError, r"s must be an integer, got 1.5 \(float\)"),
    (True, TypeError, r"got True \(bool\)"),
    ("2", TypeError, r"got '2' \(str\)"),
    (None, TypeError, r"got None"),
    (-1, ValueError, r"s must be >= 0, got -1"),
])
def test_check_int(value, exc, match):
    with pytest.raises(exc, match=match):
        _checks.check_int("s", value, 0)


@pytest.mark.parametrize("value, kwargs, exc, match", [
    (float("nan"), {}, ValueError, r"must be finite"),
    (1.0, {"high": 1.0, "high_open": True}, ValueError, r"must lie in \[-inf, 1.0\), got 1.0"),
    (0.0, {"low": 0.0, "low_open": True}, ValueError, r"must lie in \(0.0, inf\]"),
    ("a", {}, TypeError, r"must be a real number"),
])
def test_check_real(value, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        _checks.check_real("v", value, **kwargs)


def test_check_params_fills_defaults_without_mutating():
    given = {"a": 1}
    out = _checks.check_params("p", given, required=("a",), optional={"b": 2})
    assert out == {"a": 1, "b": 2} and given == {"a": 1}


def test_mixed_dtype_names_every_array():
    with pytest.raises(ValueError, match="mixed dtypes: a is float32, b is float64"):
        _checks.check_same_dtype(a=np.zeros(1, np.float32), b=np.zeros(1))


@pytest.mark.parametrize("x, y, exc, match", [
    (np.zeros((3, 4)), np.array([0, 1]), ValueError, r"y has shape \(2,\) but x has shape \(3, 4\)"),
    (np.zeros((3, 4)), np.array([0, 1, 4]), ValueError, r"labels must lie in \[0, 4\)"),
    (np.zeros((3, 4)), np.array([0.0, 1, 2]), TypeError, r"integer labels, got dtype float64"),
    (np.zeros((3, 4)), [0, 1, 2], TypeError, r"y must be a numpy ndarray"),
    (np.zeros((0, 4)), np.zeros(0, dtype=int), ValueError, r"empty dimension"),
    (np.zeros(4), np.array([0]), ValueError, r"x must have rank 2"),
])
def test_loss_args(x, y, exc, match):
    with pytest.raises(exc, match=match):
        _checks.loss_args(x, y)


def test_check_cache_messages():
    with pytest.raises(TypeError, match=r"got a tuple of length 2"):
        _checks.check_cache((1, 2), 3, "Conv")
    with pytest.raises(TypeError, match=r"got dict"):
        _checks.check_cache({}, 3, "Conv")
    assert _checks.check_cache((1, 2, 3), 3, "Conv") == (1, 2, 3)


# ---------------------------------------------------------------- remembered geometries

_X = np.zeros((2, 3, 8, 8), np.float32)
_W = np.zeros((4, 3, 3, 3), np.float32)
_B = np.zeros(4, np.float32)
_CONV_OK = {"stride": 1, "pad": 1}
_POOL_OK = {"pool_height": 2, "pool_width": 2, "stride": 2}


class _FakeArray:
    """Has an ndarray's shape and dtype, is not one."""
    shape, dtype, ndim = _X.shape, _X.dtype, 4


@pytest.mark.parametrize("args, exc, match", [
    ((_X, _W, _B, {"stride": True, "pad": 1}), TypeError, r"conv_param\['stride'\] must be an integer"),
    ((_X, _W, _B, {"stride": 1.0, "pad": 1}), TypeError, r"conv_param\['stride'\] must be an integer"),
    ((_X, _W, _B, {"stride": 1, "pad": 1, "padd": 2}), ValueError, "unknown key"),
    ((_X, _W, _B, {"stride": 1}), ValueError, "missing key"),
    ((_X, _W, _B, {"stride": 0, "pad": 1}), ValueError, r"must be >= 1, got 0"),
    ((_FakeArray(), _W, _B, _CONV_OK), TypeError, "x must be a numpy ndarray"),
    ((_X, _W.astype(np.float64), _B, _CONV_OK), ValueError, "w is float64"),
    ((_X, _W, np.zeros(5, np.float32), _CONV_OK), ValueError, "b has shape"),
    ((_X[:, :2], _W, _B, _CONV_OK), ValueError, "x has 2 channels"),
])
def test_a_remembered_conv_geometry_never_admits_a_bad_call(args, exc, match):
    good = _checks.conv_args(_X, _W, _B, _CONV_OK)
    assert _checks.conv_args(_X, _W, _B, dict(_CONV_OK)) is good  # remembered: the same object back
    with pytest.raises(exc, match=match):
        _checks.conv_args(*args)


@pytest.mark.parametrize("x, params, exc, match", [
    (_X, {**_POOL_OK, "stride": True}, TypeError, r"pool_param\['stride'\] must be an integer"),
    (_X, {**_POOL_OK, "pad": 2}, ValueError, "at most half the window"),
    (_X, {**_POOL_OK, "strides": 2}, ValueError, "unknown key"),
    (_FakeArray(), _POOL_OK, TypeError, "x must be a numpy ndarray"),
    (_X.astype(np.int64), _POOL_OK, TypeError, "x has dtype int64"),
    (_X[0], _POOL_OK, ValueError, "must have rank 4"),
    (_X[:, :, :1], _POOL_OK, ValueError, "larger than the padded input"),
])
def test_a_remembered_pool_geometry_never_admits_a_bad_call(x, params, exc, match):
    good = _checks.pool_args(_X, _POOL_OK)
    assert _checks.pool_args(_X, dict(_POOL_OK)) is good
    with pytest.raises(exc, match=match):
        _checks.pool_args(x, params)


def test_remembered_geometries_match_fresh_ones_and_stay_bounded(monkeypatch):
    monkeypatch.setattr(_checks, "_GEOMETRIES", {})
    monkeypatch.setattr(_checks, "_GEOMETRIES_MAX", 5)
    rng = np.random.default_rng(0)
    for _ in range(40):
        N, C, H, W = (int(v) for v in rng.integers(1, 9, 4))
        k, s, p = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(0, 2))
        x = np.zeros((N, C, H + k, W + k))
        params = {"pool_height": k, "pool_width": k, "stride": s, "pad": min(p, k // 2)}
        first, again = _checks.pool_args(x, params), _checks.pool_args(x, params)
        assert first == again == _checks._pool_args(x, params, "pool")
        assert len(_checks._GEOMETRIES) <= 5
    # Float32 and float64 inputs of one shape are separate entries, numpy integers are validated every time.
    _checks.pool_args(np.zeros((1, 1, 4, 4), np.float32), _POOL_OK)
    _checks.pool_args(np.zeros((1, 1, 4, 4)), _POOL_OK)
    assert {k[-1] for k in _checks._GEOMETRIES if k[-2] == (1, 1, 4, 4)} == {np.dtype(np.float32), np.dtype(np.float64)}
    before = dict(_checks._GEOMETRIES)
    assert _checks.pool_args(np.zeros((1, 1, 4, 4)), {**_POOL_OK, "stride": np.int64(2)}).H_out == 2
    assert _checks._GEOMETRIES == before
