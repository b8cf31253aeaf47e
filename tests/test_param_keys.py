"""Parameter dicts: an unknown key is an error listing the valid ones; a pad too large for memory is refused."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convnet import _checks, fast, layers

CONV = {"stride": 1, "pad": 1}
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2, "pad": 0}
BN = {"mode": "train", "eps": 1e-5, "momentum": 0.9}
DROP = {"p": 0.5, "mode": "train", "seed": 0}

VALID = {"conv_param": ["stride", "pad"], "pool_param": ["pool_height", "pool_width", "stride", "pad"],
         "bn_param": ["mode", "eps", "momentum", "running_mean", "running_var"], "dropout_param": ["p", "mode", "seed"]}


def _calls(name, param):
    """(label, zero-argument callable) for every layer, naive and fast, that takes the param dict ``name``."""
    x4 = np.ones((2, 3, 4, 4))
    if name == "conv_param":
        w, b = np.ones((2, 3, 3, 3)), np.zeros(2)
        return [("Conv", lambda: layers.Conv.forward(x4, w, b, param)),
                ("FastConv", lambda: fast.FastConv.forward(x4, w, b, param))]
    if name == "pool_param":
        return [(cls.__name__, lambda cls=cls: cls.forward(x4, param))
                for cls in (layers.MaxPool, layers.AvgPool, fast.FastMaxPool, fast.FastAvgPool)]
    if name == "bn_param":
        g, bt = np.ones(3), np.zeros(3)
        return [("BatchNorm", lambda: layers.BatchNorm.forward(np.ones((4, 3)), g, bt, param)),
                ("SpatialBatchNorm", lambda: layers.SpatialBatchNorm.forward(x4, g, bt, param))]
    return [("Dropout", lambda: layers.Dropout.forward(x4, param))]


@pytest.mark.parametrize("name, good, typo", [
    ("conv_param", CONV, "padd"), ("pool_param", POOL, "pool_size"),
    ("bn_param", BN, "momentun"), ("dropout_param", DROP, "prob"),
])
def test_unknown_key_is_refused_with_the_valid_keys(name, good, typo):
    param = dict(good, **{typo: 2})
    for label, call in _calls(name, param):
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert f"{name} has unknown key(s) ['{typo}']" in msg, (label, msg)
        assert f"the valid keys are {VALID[name]}" in msg, (label, msg)


@pytest.mark.parametrize("name, good", [("conv_param", CONV), ("pool_param", POOL), ("bn_param", BN),
                                        ("dropout_param", DROP)])
def test_every_valid_key_is_accepted(name, good):
    for _, call in _calls(name, dict(good)):
        call()


def test_running_statistics_keys_are_valid():
    bn = dict(BN, running_mean=np.zeros(3), running_var=np.ones(3))
    out, _ = layers.BatchNorm.forward(np.arange(12.0).reshape(4, 3), np.ones(3), np.zeros(3), bn)
    assert out.shape == (4, 3)


KEY = st.text(min_size=1, max_size=12) | st.integers() | st.none()


@settings(max_examples=60, deadline=None)
@given(extra=st.dictionaries(KEY, st.integers(0, 3), min_size=1, max_size=3))
def test_fuzz_extra_keys(extra):
    # Any key outside the valid set is named in the error; keys inside it only change values.
    for name, good in (("conv_param", CONV), ("pool_param", POOL), ("bn_param", BN), ("dropout_param", DROP)):
        unknown = [k for k in extra if k not in VALID[name]]
        param = dict(good)
        param.update({k: v for k, v in extra.items() if k not in VALID[name]})
        for label, call in _calls(name, param):
            if not unknown:
                call()
                continue
            with pytest.raises(ValueError, match="unknown key") as info:
                call()
            assert str(sorted(unknown, key=str)) in str(info.value), (label, info.value)


@pytest.mark.parametrize("cls", [layers.Conv, fast.FastConv])
def test_conv_pad_too_large_for_memory_names_pad_and_bytes(cls):
    x, w, b = np.ones((1, 1, 5, 5)), np.ones((2, 1, 3, 3)), np.zeros(2)
    # Output (1, 2, 200003, 200003) float64: 640019200144 bytes, beyond any machine's RAM here.
    with pytest.raises(ValueError, match=r"conv_param\['pad'\] = 100000 makes the output of shape "
                                         r"\(1, 2, 200003, 200003\) need 640019200144 bytes"):
        cls.forward(x, w, b, {"stride": 1, "pad": 100000})


@pytest.mark.parametrize("cls", [layers.MaxPool, layers.AvgPool, fast.FastMaxPool, fast.FastAvgPool])
def test_pool_too_large_for_memory_names_pad_and_bytes(cls, monkeypatch):
    monkeypatch.setattr(_checks, "MEMORY_BOUND", 1000)
    x = np.ones((1, 1, 8, 8))
    # Padded input (1, 1, 14, 14) float64 is 1568 bytes > 1000; the output (1, 1, 8, 8) would be 512.
    with pytest.raises(ValueError, match=r"pool_param\['pad'\] = 3 makes the padded input of shape "
                                         r"\(1, 1, 14, 14\) need 1568 bytes"):
        cls.forward(x, {"pool_height": 7, "pool_width": 7, "stride": 1, "pad": 3})


def test_memory_bound_is_the_limit(monkeypatch):
    x, w, b = np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32), np.zeros(1, np.float32)
    # Padded input (1, 1, 6, 6) float32 = 144 bytes, output (1, 1, 4, 4) = 64 bytes.
    monkeypatch.setattr(_checks, "MEMORY_BOUND", 144)
    assert fast.FastConv.forward(x, w, b, {"stride": 1, "pad": 1})[0].shape == (1, 1, 4, 4)
    monkeypatch.setattr(_checks, "MEMORY_BOUND", 143)
    with pytest.raises(ValueError, match="need 144 bytes"):
        fast.FastConv.forward(x, w, b, {"stride": 1, "pad": 1})


def test_physical_memory_is_positive():
    assert _checks.physical_memory() > 2**20
