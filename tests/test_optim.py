"""Update rules on the course's fixed linspace vectors; expected values from the formulas written out here."""
import numpy as np
import pytest

from convnet import optim

N, D = 4, 5
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def lin(a, b, dtype=np.float64):
    return np.linspace(a, b, num=N * D, dtype=np.float64).reshape(N, D).astype(dtype)


def rel(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd(dtype):
    w, dw = lin(-0.4, 0.6, dtype), lin(-0.6, 0.4, dtype)
    next_w, config = optim.sgd(w, dw, {"learning_rate": 0.1})
    expected = lin(-0.4, 0.6) - 0.1 * lin(-0.6, 0.4)
    assert next_w.dtype == dtype
    assert rel(next_w, expected) < TOL[dtype]
    # Default learning rate is 1e-2 and w is left untouched.
    next_w, config = optim.sgd(w, dw)
    assert config["learning_rate"] == 1e-2
    assert rel(next_w, lin(-0.4, 0.6) - 1e-2 * lin(-0.6, 0.4)) < TOL[dtype]
    np.testing.assert_array_equal(w, lin(-0.4, 0.6, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_momentum(dtype):
    w, dw, v = lin(-0.4, 0.6, dtype), lin(-0.6, 0.4, dtype), lin(0.6, 0.9, dtype)
    next_w, config = optim.sgd_momentum(w, dw, {"learning_rate": 1e-3, "velocity": v})
    v_exp = 0.9 * lin(0.6, 0.9) - 1e-3 * lin(-0.6, 0.4)
    assert rel(config["velocity"], v_exp) < TOL[dtype]
    assert rel(next_w, lin(-0.4, 0.6) + v_exp) < TOL[dtype]
    assert next_w.dtype == dtype and config["velocity"].dtype == dtype
    assert config["momentum"] == 0.9


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmsprop(dtype):
    w, dw, cache = lin(-0.4, 0.6, dtype), lin(-0.6, 0.4, dtype), lin(0.7, 0.9, dtype)
    next_w, config = optim.rmsprop(w, dw, {"learning_rate": 1e-2, "cache": cache})
    c_exp = 0.99 * lin(0.7, 0.9) + 0.01 * lin(-0.6, 0.4) ** 2
    w_exp = lin(-0.4, 0.6) - 1e-2 * lin(-0.6, 0.4) / (np.sqrt(c_exp) + 1e-8)
    assert rel(config["cache"], c_exp) < TOL[dtype]
    assert rel(next_w, w_exp) < TOL[dtype]
    assert next_w.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam(dtype):
    w, dw = lin(-0.4, 0.6, dtype), lin(-0.6, 0.4, dtype)
    m, v = lin(0.6, 0.9, dtype), lin(0.7, 0.5, dtype)
    next_w, config = optim.adam(w, dw, {"learning_rate": 1e-2, "m": m, "v": v, "t": 5})
    g = lin(-0.6, 0.4)
    m_exp = 0.9 * lin(0.6, 0.9) + 0.1 * g
    v_exp = 0.999 * lin(0.7, 0.5) + 0.001 * g * g
    t = 6  # incremented before the bias correction
    w_exp = lin(-0.4, 0.6) - 1e-2 * (m_exp / (1 - 0.9 ** t)) / (np.sqrt(v_exp / (1 - 0.999 ** t)) + 1e-8)
    assert config["t"] == 6
    assert rel(config["m"], m_exp) < TOL[dtype]
    assert rel(config["v"], v_exp) < TOL[dtype]
    assert rel(next_w, w_exp) < TOL[dtype]
    assert next_w.dtype == dtype


def test_adam_first_step_moves_every_weight_by_learning_rate():
    # With zero moments and t=0 the bias-corrected step is lr * sign(dw) (up to epsilon).
    w, dw = lin(-0.4, 0.6), lin(-0.6, 0.4)
    next_w, config = optim.adam(w, dw, {"learning_rate": 0.05})
    assert config["t"] == 1
    np.testing.assert_allclose(next_w - w, -0.05 * np.sign(dw), rtol=1e-6)


def test_defaults_filled_and_state_created():
    w, dw = lin(-0.4, 0.6), lin(-0.6, 0.4)
    _, c = optim.rmsprop(w, dw)
    assert (c["learning_rate"], c["decay_rate"], c["epsilon"]) == (1e-2, 0.99, 1e-8)
    _, c = optim.adam(w, dw)
    assert (c["learning_rate"], c["beta1"], c["beta2"], c["epsilon"]) == (1e-3, 0.9, 0.999, 1e-8)
    _, c = optim.sgd_momentum(w, dw)
    np.testing.assert_allclose(c["velocity"], -1e-2 * dw)


def test_momentum_accumulates_over_steps():
    w, dw = lin(-0.4, 0.6), lin(-0.6, 0.4)
    config = {"learning_rate": 0.1, "momentum": 0.5}
    w1, config = optim.sgd_momentum(w, dw, config)
    w2, config = optim.sgd_momentum(w1, dw, config)
    # v1 = -0.1 g, v2 = 0.5 v1 - 0.1 g = -0.15 g.
    np.testing.assert_allclose(w2, w - 0.25 * dw, rtol=1e-12)


@pytest.mark.parametrize("rule", sorted(optim.UPDATE_RULES))
def test_bad_arguments(rule):
    f = optim.UPDATE_RULES[rule]
    w = lin(-0.4, 0.6)
    with pytest.raises(ValueError, match="dw has shape"):
        f(w, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="mixed|float32"):
        f(w, w.astype(np.float32))
    with pytest.raises(TypeError, match="config must be a dict"):
        f(w, w, [1, 2])
    with pytest.raises(TypeError, match="ndarray"):
        f(w.tolist(), w)
    with pytest.raises(ValueError, match="learning_rate"):
        f(w, w, {"learning_rate": -1.0})


def test_state_shape_mismatch_is_reported():
    w = lin(-0.4, 0.6)
    with pytest.raises(ValueError, match="velocity"):
        optim.sgd_momentum(w, w, {"velocity": np.zeros(3)})
    with pytest.raises(ValueError, match="beta1"):
        optim.adam(w, w, {"beta1": 1.0})
