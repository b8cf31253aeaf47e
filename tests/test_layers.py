"""The naive layers of convnet.layers: hand cases, the course's fixed vectors, finite differences,
the PyTorch oracle, and bad input."""
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from convnet import layers
from convnet.gradcheck import assert_within_rounding, compute_numeric_gradient, rel_error
from convnet.layers import AvgPool, BatchNorm, Conv, Dropout, Linear, MaxPool, ReLU, SpatialBatchNorm

DTYPES = [np.float32, np.float64]
# Relative error tolerated against float64 ground truth, per dtype.
TOL = {np.float32: 2e-6, np.float64: 1e-12}


def rng(seed=0):
    return np.random.default_rng(seed)


def pool_param(ph, pw, s, pad=0):
    return {"pool_height": ph, "pool_width": pw, "stride": s, "pad": pad}


def numeric_grads(fwd, arrays, dout, h=1e-6):
    """Centred differences of sum(fwd(*arrays) * dout) for each array (float64)."""
    return [compute_numeric_gradient(lambda _: fwd(*arrays), a, dout, h=h) for a in arrays]


# ------------------------------------------------------------------ hand-checkable cases


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_by_hand(dtype):
    x = np.array([[1, 2]], dtype=dtype)
    w = np.array([[1, 0, 1], [0, 1, 1]], dtype=dtype)
    b = np.array([0, 0, 1], dtype=dtype)
    out, cache = Linear.forward(x, w, b)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, [[1, 2, 4]])
    dx, dw, db = Linear.backward(np.ones((1, 3), dtype=dtype), cache)
    np.testing.assert_array_equal(dx, [[2, 2]])
    np.testing.assert_array_equal(dw, [[1, 1, 1], [2, 2, 2]])
    np.testing.assert_array_equal(db, [1, 1, 1])


def test_linear_keeps_input_shape_in_dx():
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    w = np.ones((12, 5))
    out, cache = Linear.forward(x, w, np.zeros(5))
    np.testing.assert_array_equal(out[:, 0], [x[0].sum(), x[1].sum()])
    dx, _, _ = Linear.backward(np.ones((2, 5)), cache)
    assert dx.shape == (2, 3, 4)
    np.testing.assert_array_equal(dx, np.full((2, 3, 4), 5.0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_by_hand(dtype):
    x = np.array([[-1.0, 0.0, 2.0]], dtype=dtype)
    out, cache = ReLU.forward(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, [[0, 0, 2]])
    # The gradient at exactly 0 is 0, as in PyTorch.
    np.testing.assert_array_equal(ReLU.backward(np.array([[5.0, 5.0, 5.0]], dtype=dtype), cache), [[0, 0, 5]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_by_hand(dtype):
    x = np.arange(9, dtype=dtype).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 2, 2), dtype=dtype)
    b = np.array([1], dtype=dtype)
    out, cache = Conv.forward(x, w, b, {"stride": 1, "pad": 0})
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, [[[[9, 13], [21, 25]]]])
    dx, dw, db = Conv.backward(np.ones((1, 1, 2, 2), dtype=dtype), cache)
    # Each input position receives one unit per window covering it.
    np.testing.assert_array_equal(dx, [[[[1, 2, 1], [2, 4, 2], [1, 2, 1]]]])
    np.testing.assert_array_equal(dw, [[[[8, 12], [20, 24]]]])
    np.testing.assert_array_equal(db, [4])


def test_conv_padding_and_stride_by_hand():
    x = np.ones((1, 1, 2, 2))
    w = np.ones((2, 1, 3, 3))
    w[1] *= 2
    out, _ = Conv.forward(x, w, np.array([0.5, 0.0]), {"stride": 2, "pad": 1})
    # H' = 1 + (2 + 2 - 3) // 2 = 1: one window that holds the four ones.
    np.testing.assert_array_equal(out, [[[[4.5]], [[8.0]]]])


def test_conv_non_square_kernel_by_hand():
    x = np.arange(12, dtype=np.float64).reshape(1, 1, 3, 4)
    w = np.array([[[[1.0, -1.0]]]])  # 1x2: horizontal difference
    out, _ = Conv.forward(x, w, np.zeros(1), {"stride": 1, "pad": 0})
    assert out.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(out, -np.ones((1, 1, 3, 3)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_by_hand(dtype):
    x = np.arange(16, dtype=dtype).reshape(1, 1, 4, 4)
    out, cache = MaxPool.forward(x, pool_param(2, 2, 2))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, [[[[5, 7], [13, 15]]]])
    dx = MaxPool.backward(np.array([[[[1, 2], [3, 4]]]], dtype=dtype), cache)
    expected = np.zeros((4, 4))
    expected[1, 1], expected[1, 3], expected[3, 1], expected[3, 3] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx[0, 0], expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pool_by_hand(dtype):
    x = np.arange(16, dtype=dtype).reshape(1, 1, 4, 4)
    out, cache = AvgPool.forward(x, pool_param(2, 2, 2))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, [[[[2.5, 4.5], [10.5, 12.5]]]])
    dx = AvgPool.backward(np.ones((1, 1, 2, 2), dtype=dtype), cache)
    np.testing.assert_array_equal(dx, np.full((1, 1, 4, 4), 0.25))


def test_pool_padding_is_minus_inf_for_max_and_counted_for_avg():
    x = -np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    out, _ = MaxPool.forward(x, pool_param(2, 2, 2, pad=1))
    # Every window holds one real element; zero padding would have won the max.
    np.testing.assert_array_equal(out, x)
    out, cache = AvgPool.forward(x, pool_param(2, 2, 2, pad=1))
    np.testing.assert_array_equal(out, x / 4)
    np.testing.assert_array_equal(AvgPool.backward(np.ones((1, 1, 2, 2)), cache), np.full((1, 1, 2, 2), 0.25))


def test_max_pool_ties_go_to_first_maximum_in_row_major_order():
    x = np.array([[[[1.0, 3.0], [3.0, 3.0]]]])
    _, cache = MaxPool.forward(x, pool_param(2, 2, 1))
    np.testing.assert_array_equal(MaxPool.backward(np.ones((1, 1, 1, 1)), cache), [[[[0, 1], [0, 0]]]])


def test_pool_non_square_window_and_stride_that_does_not_divide():
    x = np.arange(35, dtype=np.float64).reshape(1, 1, 5, 7)
    out, _ = MaxPool.forward(x, pool_param(2, 3, 2))
    # H' = 1 + (5 - 2) // 2 = 2, W' = 1 + (7 - 3) // 2 = 3; the max is each window's bottom-right.
    np.testing.assert_array_equal(out[0, 0], [[9, 11, 13], [23, 25, 27]])
    out, _ = AvgPool.forward(x, pool_param(2, 3, 2))
    np.testing.assert_allclose(out[0, 0], [[4.5, 6.5, 8.5], [18.5, 20.5, 22.5]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling_by_hand_with_overlapping_windows(dtype, pool_by_hand):
    case = pool_by_hand
    layer = {"max": MaxPool, "avg": AvgPool}[case.kind]
    out, cache = layer.forward(case.x.astype(dtype)[None, None], pool_param(2, 2, case.stride))
    np.testing.assert_allclose(out[0, 0], case.out, rtol=1e-6)
    dx = layer.backward(np.full(out.shape, 1.0 / out.size, dtype=dtype), cache)
    np.testing.assert_allclose(dx[0, 0], case.grad, rtol=1e-6, atol=1e-7)
    assert abs(dx[0, 0][dx[0, 0] > 0].min() - case.printed) < 5e-5


def test_batchnorm_by_hand_and_running_statistics():
    x = np.array([[1.0, 10.0], [3.0, 10.0]])
    bn_param = {"mode": "train", "eps": 0.0 + 1e-12}
    out, _ = BatchNorm.forward(x, np.array([2.0, 1.0]), np.array([1.0, 0.5]), bn_param)
    # Column 0: mean 2, biased variance 1, so x_hat = [-1, 1]; column 1 is constant: x_hat = 0.
    np.testing.assert_allclose(out, [[-1.0, 0.5], [3.0, 0.5]], atol=1e-9)
    np.testing.assert_allclose(bn_param["running_mean"], [0.2, 1.0])
    np.testing.assert_allclose(bn_param["running_var"], [0.1, 0.0])
    BatchNorm.forward(x, np.ones(2), np.zeros(2), bn_param)
    np.testing.assert_allclose(bn_param["running_mean"], [0.9 * 0.2 + 0.2, 0.9 * 1.0 + 1.0])
    # Test mode normalises with the running statistics, not the batch's.
    bn_param["mode"] = "test"
    out, _ = BatchNorm.forward(np.array([[0.38]]).repeat(2, 1), np.ones(2), np.zeros(2), bn_param)
    np.testing.assert_allclose(out[0, 0], 0.0, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_train_output_is_normalised(dtype):
    x = (rng(1).standard_normal((200, 3)) * [1, 5, 9] + [3, -4, 8]).astype(dtype)
    out, _ = BatchNorm.forward(x, np.ones(3, dtype), np.zeros(3, dtype), {"mode": "train"})
    assert out.dtype == dtype
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1, atol=1e-4)


def test_batchnorm_running_statistics_converge_to_the_data():
    r = rng(2)
    bn_param = {"mode": "train", "momentum": 0.9}
    for _ in range(200):
        BatchNorm.forward(r.standard_normal((50, 2)) * [2, 0.5] + [1, -1], np.ones(2), np.zeros(2), bn_param)
    np.testing.assert_allclose(bn_param["running_mean"], [1, -1], atol=0.15)
    np.testing.assert_allclose(bn_param["running_var"], [4, 0.25], rtol=0.15)


def test_spatial_batchnorm_normalises_each_channel():
    x = rng(3).standard_normal((4, 3, 5, 5)) * np.array([1, 2, 3])[:, None, None] + 7
    out, _ = SpatialBatchNorm.forward(x, np.ones(3), np.zeros(3), {"mode": "train"})
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_statistics_and_modes(dtype):
    x = np.ones((500, 400), dtype=dtype)
    out, cache = Dropout.forward(x, {"p": 0.3, "mode": "train", "seed": 7})
    assert out.dtype == dtype
    dropped = np.mean(out == 0)
    assert abs(dropped - 0.3) < 0.01
    # Inverted dropout: kept units are scaled so the expectation is unchanged.
    np.testing.assert_allclose(out[out != 0], 1 / 0.7, rtol=1e-6)
    assert abs(out.mean() - 1) < 0.01
    dx = Dropout.backward(np.full_like(x, 2), cache)
    np.testing.assert_array_equal(dx == 0, out == 0)
    out2, _ = Dropout.forward(x, {"p": 0.3, "mode": "train", "seed": 7})
    np.testing.assert_array_equal(out, out2)
    out3, cache3 = Dropout.forward(x, {"p": 0.3, "mode": "test"})
    np.testing.assert_array_equal(out3, x)
    np.testing.assert_array_equal(Dropout.backward(x * 3, cache3), x * 3)
    np.testing.assert_array_equal(Dropout.forward(x, {"p": 0.0, "mode": "train"})[0], x)


def test_dropout_without_seed_follows_numpy_global_state():
    x = np.ones((10, 10))
    np.random.seed(11)
    a, _ = Dropout.forward(x, {"p": 0.5, "mode": "train"})
    np.random.seed(11)
    b, _ = Dropout.forward(x, {"p": 0.5, "mode": "train"})
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ EECS 498's fixed vectors


def test_eecs_conv_forward_vector():
    x = np.linspace(-0.1, 0.5, num=2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    w = np.linspace(-0.2, 0.3, num=3 * 3 * 4 * 4).reshape(3, 3, 4, 4)
    b = np.linspace(-0.1, 0.2, num=3)
    out, _ = Conv.forward(x, w, b, {"stride": 2, "pad": 1})
    correct = np.array([[[[-0.08759809, -0.10987781], [-0.18387192, -0.2109216]],
                         [[0.21027089, 0.21661097], [0.22847626, 0.23004637]],
                         [[0.50813986, 0.54309974], [0.64082444, 0.67101435]]],
                        [[[-0.98053589, -1.03143541], [-1.19128892, -1.24695841]],
                         [[0.69108355, 0.66880383], [0.59480972, 0.56776003]],
                         [[2.36270298, 2.36904306], [2.38090835, 2.38247847]]]])
    assert rel_error(out, correct) < 1e-7


def test_eecs_max_pool_forward_vector():
    x = np.linspace(-0.3, 0.4, num=2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    out, _ = MaxPool.forward(x, pool_param(2, 2, 2))
    correct = np.array([[[[-0.26315789, -0.24842105], [-0.20421053, -0.18947368]],
                         [[-0.14526316, -0.13052632], [-0.08631579, -0.07157895]],
                         [[-0.02736842, -0.01263158], [0.03157895, 0.04631579]]],
                        [[[0.09052632, 0.10526316], [0.14947368, 0.16421053]],
                         [[0.20842105, 0.22315789], [0.26736842, 0.28210526]],
                         [[0.32631579, 0.34105263], [0.38526316, 0.4]]]])
    assert rel_error(out, correct) < 1e-7


def test_eecs_linear_forward_vector():
    x = np.linspace(-0.1, 0.5, num=2 * 120).reshape(2, 4, 5, 6)
    w = np.linspace(-0.2, 0.3, num=120 * 3).reshape(120, 3)
    b = np.linspace(-0.3, 0.1, num=3)
    out, _ = Linear.forward(x, w, b)
    correct = np.array([[1.49834967, 1.70660132, 1.91485297], [3.25553199, 3.5141327, 3.77273342]])
    assert rel_error(out, correct) < 1e-7


def test_eecs_relu_forward_vector():
    x = np.linspace(-0.5, 0.5, num=12).reshape(3, 4)
    out, _ = ReLU.forward(x)
    correct = np.array([[0, 0, 0, 0], [0, 0, 0.04545455, 0.13636364], [0.22727273, 0.31818182, 0.40909091, 0.5]])
    assert rel_error(out, correct) < 5e-8


# ------------------------------------------------------------------ finite differences (float64)

CONV_CASES = [
    ((2, 3, 5, 5), (4, 3, 3, 3), 1, 1),
    ((2, 2, 7, 6), (3, 2, 3, 2), 2, 1),  # non-square kernel, stride that does not divide
    ((1, 3, 4, 4), (2, 3, 1, 1), 1, 0),  # 1x1
    ((1, 2, 3, 3), (2, 2, 5, 5), 1, 1),  # kernel equal to the padded input
    ((2, 1, 8, 8), (2, 1, 4, 4), 3, 2),
]


@pytest.mark.parametrize("backward", [Conv.backward, Conv.backward_alt])
@pytest.mark.parametrize("xs, ws, stride, pad", CONV_CASES)
def test_conv_backward_matches_finite_differences(xs, ws, stride, pad, backward):
    r = rng(4)
    x, w, b = r.standard_normal(xs), r.standard_normal(ws), r.standard_normal(ws[0])
    cp = {"stride": stride, "pad": pad}
    out, cache = Conv.forward(x, w, b, cp)
    dout = r.standard_normal(out.shape)
    analytic = backward(dout, cache)
    numeric = numeric_grads(lambda x, w, b: Conv.forward(x, w, b, cp)[0], [x, w, b], dout)
    for a, n in zip(analytic, numeric):
        assert rel_error(a, n) < 1e-8


POOL_CASES = [(2, 2, 2, 0), (3, 3, 2, 1), (2, 3, 1, 0), (3, 2, 1, 1), (1, 1, 2, 0), (4, 4, 3, 2)]


@pytest.mark.parametrize("layer", [MaxPool, AvgPool])
@pytest.mark.parametrize("ph, pw, stride, pad", POOL_CASES)
def test_pool_backward_matches_finite_differences(layer, ph, pw, stride, pad):
    r = rng(5)
    # Distinct values spaced well above the step keep the max differentiable.
    x = r.permutation(2 * 2 * 7 * 6).reshape(2, 2, 7, 6) * 0.01
    pp = pool_param(ph, pw, stride, pad)
    out, cache = layer.forward(x, pp)
    dout = r.standard_normal(out.shape)
    (numeric,) = numeric_grads(lambda x: layer.forward(x, pp)[0], [x], dout)
    assert rel_error(layer.backward(dout, cache), numeric) < 1e-8


@pytest.mark.parametrize("backward", [BatchNorm.backward, BatchNorm.backward_alt])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_batchnorm_backward_matches_finite_differences(backward, mode):
    r = rng(6)
    x, gamma, beta = r.standard_normal((5, 4)) * 3 + 2, r.standard_normal(4), r.standard_normal(4)
    running = {"running_mean": r.standard_normal(4), "running_var": r.random(4) + 0.5}

    def fwd(x, g, b):
        return BatchNorm.forward(x, g, b, {"mode": mode, **{k: v.copy() for k, v in running.items()}})

    out, cache = fwd(x, gamma, beta)
    dout = r.standard_normal(out.shape)
    numeric = numeric_grads(lambda x, g, b: fwd(x, g, b)[0], [x, gamma, beta], dout)
    for a, n in zip(backward(dout, cache), numeric):
        assert rel_error(a, n) < 1e-8


def test_batchnorm_backward_alt_equals_backward():
    r = rng(7)
    x = r.standard_normal((64, 10)) * 4 + 1
    out, cache = BatchNorm.forward(x, r.standard_normal(10), r.standard_normal(10), {"mode": "train"})
    dout = r.standard_normal(out.shape)
    for a, b in zip(BatchNorm.backward(dout, cache), BatchNorm.backward_alt(dout, cache)):
        assert rel_error(a, b) < 1e-12


def test_spatial_batchnorm_backward_matches_finite_differences():
    r = rng(8)
    x, gamma, beta = r.standard_normal((2, 3, 4, 5)) * 2 - 1, r.standard_normal(3), r.standard_normal(3)

    def fwd(x, g, b):
        return SpatialBatchNorm.forward(x, g, b, {"mode": "train"})

    out, cache = fwd(x, gamma, beta)
    dout = r.standard_normal(out.shape)
    numeric = numeric_grads(lambda x, g, b: fwd(x, g, b)[0], [x, gamma, beta], dout)
    for a, n in zip(SpatialBatchNorm.backward(dout, cache), numeric):
        assert rel_error(a, n) < 1e-8


@pytest.mark.parametrize("layer, make", [
    ("Linear", lambda r: ([r.standard_normal((3, 2, 2)), r.standard_normal((4, 5)), r.standard_normal(5)], ())),
    ("ReLU", lambda r: ([r.standard_normal((4, 6))], ())),
    ("Dropout", lambda r: ([r.standard_normal((4, 6))], ({"p": 0.4, "mode": "train", "seed": 1},))),
])
def test_simple_layers_backward_matches_finite_differences(layer, make):
    r = rng(9)
    arrays, extra = make(r)
    cls = getattr(layers, layer)
    out, cache = cls.forward(*arrays, *extra)
    dout = r.standard_normal(out.shape)
    analytic = cls.backward(dout, cache)
    analytic = analytic if isinstance(analytic, tuple) else (analytic,)
    numeric = numeric_grads(lambda *a: cls.forward(*a, *extra)[0], arrays, dout)
    for a, n in zip(analytic, numeric):
        assert rel_error(a, n) < 1e-8


# ------------------------------------------------------------------ PyTorch oracle

try:
    import torch
    F = torch.nn.functional
except ImportError:  # the oracle tests skip; every other test of this file still runs
    torch = F = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is the oracle; pip install torch==2.13.0")


def _t(a):
    return torch.tensor(a, requires_grad=True)


def _compare(ours, theirs, dtype):
    assert ours.dtype == dtype
    assert ours.shape == tuple(theirs.shape)
    assert rel_error(ours, theirs.detach().numpy()) < TOL[dtype] * 10


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, stride, pad", CONV_CASES + [((3, 4, 9, 7), (5, 4, 3, 5), 2, 2)])
def test_conv_against_torch(xs, ws, stride, pad, dtype):
    r = rng(10)
    x, w, b = (r.standard_normal(s).astype(dtype) for s in (xs, ws, (ws[0],)))
    out, cache = Conv.forward(x, w, b, {"stride": stride, "pad": pad})
    tx, tw, tb = _t(x), _t(w), _t(b)
    tout = F.conv2d(tx, tw, tb, stride=stride, padding=pad)
    _compare(out, tout, dtype)
    dout = r.standard_normal(out.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    for ours, theirs in zip(Conv.backward(dout, cache), (tx.grad, tw.grad, tb.grad)):
        _compare(ours, theirs, dtype)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ph, pw, stride, pad", POOL_CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_against_torch(ph, pw, stride, pad, ties, dtype):
    r = rng(11)
    x = (r.integers(0, 3, (2, 3, 7, 6)) if ties else r.standard_normal((2, 3, 7, 6))).astype(dtype)
    out, cache = MaxPool.forward(x, pool_param(ph, pw, stride, pad))
    tx = _t(x)
    tout = F.max_pool2d(tx, (ph, pw), stride=stride, padding=pad)
    _compare(out, tout, dtype)
    dout = r.standard_normal(out.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    _compare(MaxPool.backward(dout, cache), tx.grad, dtype)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ph, pw, stride, pad", POOL_CASES)
def test_avg_pool_against_torch(ph, pw, stride, pad, dtype):
    r = rng(12)
    x = r.standard_normal((2, 3, 7, 6)).astype(dtype)
    out, cache = AvgPool.forward(x, pool_param(ph, pw, stride, pad))
    tx = _t(x)
    tout = F.avg_pool2d(tx, (ph, pw), stride=stride, padding=pad, count_include_pad=True)
    _compare(out, tout, dtype)
    dout = r.standard_normal(out.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    _compare(AvgPool.backward(dout, cache), tx.grad, dtype)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spatial", [False, True])
def test_batchnorm_against_torch(spatial, dtype):
    r = rng(13)
    shape = (6, 3, 4, 5) if spatial else (16, 3)
    x = (r.standard_normal(shape) * 2 + 1).astype(dtype)
    gamma, beta = r.standard_normal(3).astype(dtype), r.standard_normal(3).astype(dtype)
    rm0, rv0 = r.standard_normal(3).astype(dtype), (r.random(3) + 0.5).astype(dtype)
    layer = SpatialBatchNorm if spatial else BatchNorm
    bn_param = {"mode": "train", "momentum": 0.9, "eps": 1e-5, "running_mean": rm0.copy(), "running_var": rv0.copy()}
    out, cache = layer.forward(x, gamma, beta, bn_param)
    tx, tg, tb = _t(x), _t(gamma), _t(beta)
    trm, trv = torch.tensor(rm0), torch.tensor(rv0)
    # PyTorch's momentum weighs the new batch: ours 0.9 is theirs 0.1.
    tout = F.batch_norm(tx, trm, trv, tg, tb, training=True, momentum=0.1, eps=1e-5)
    _compare(out, tout, dtype)
    _compare(bn_param["running_mean"], trm, dtype)
    # PyTorch keeps the unbiased variance; EECS 498 keeps the biased one.
    n = x.size // 3
    biased = (trv.numpy() - 0.9 * rv0) * (n - 1) / n + 0.9 * rv0
    assert rel_error(bn_param["running_var"], biased) < TOL[dtype] * 10
    dout = r.standard_normal(out.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    for ours, theirs in zip(layer.backward(dout, cache), (tx.grad, tg.grad, tb.grad)):
        _compare(ours, theirs, dtype)
    # Test mode against PyTorch's evaluation mode with the same running statistics.
    bn_param["mode"] = "test"
    out, cache = layer.forward(x, gamma, beta, bn_param)
    tx = _t(x)
    tout = F.batch_norm(tx, torch.tensor(bn_param["running_mean"]), torch.tensor(bn_param["running_var"]),
                        torch.tensor(gamma), torch.tensor(beta), training=False, eps=1e-5)
    _compare(out, tout, dtype)
    tout.backward(torch.tensor(dout))
    _compare(layer.backward(dout, cache)[0], tx.grad, dtype)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_and_relu_against_torch(dtype):
    r = rng(14)
    x, w, b = (r.standard_normal(s).astype(dtype) for s in ((4, 2, 3), (6, 5), (5,)))
    out, cache = Linear.forward(x, w, b)
    tx, tw, tb = _t(x), _t(w), _t(b)
    tout = F.linear(tx.reshape(4, 6), tw.T, tb)
    _compare(out, tout, dtype)
    dout = r.standard_normal(out.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    for ours, theirs in zip(Linear.backward(dout, cache), (tx.grad, tw.grad, tb.grad)):
        _compare(ours, theirs, dtype)
    out, cache = ReLU.forward(x)
    tx = _t(x)
    tout = F.relu(tx)
    _compare(out, tout, dtype)
    tout.backward(torch.tensor(x))
    _compare(ReLU.backward(x, cache), tx.grad, dtype)


# ------------------------------------------------------------------ bad input

X4 = np.zeros((2, 3, 5, 5))
W4 = np.zeros((4, 3, 3, 3))
B4 = np.zeros(4)
CP = {"stride": 1, "pad": 1}


@pytest.mark.parametrize("args, exc, match", [
    ((X4[0], W4, B4, CP), ValueError, r"x must have rank 4, got shape \(3, 5, 5\)"),
    ((X4, W4[:, :2], B4, CP), ValueError, r"x has 3 channels .* but w expects 2"),
    ((X4, W4, np.zeros(3), CP), ValueError, r"b has shape \(3,\) but w has 4 filters"),
    ((X4.astype(np.float32), W4, B4, CP), ValueError, r"mixed dtypes: x is float32, w is float64"),
    ((X4.astype(np.int64), W4, B4, CP), TypeError, r"x has dtype int64"),
    ((X4.astype(object), W4, B4, CP), TypeError, r"x has dtype object"),
    ((X4.tolist(), W4, B4, CP), TypeError, r"x must be a numpy ndarray, got list"),
    ((X4, W4, B4, {"stride": 0, "pad": 1}), ValueError, r"conv_param\['stride'\] must be >= 1, got 0"),
    ((X4, W4, B4, {"stride": 1, "pad": -1}), ValueError, r"conv_param\['pad'\] must be >= 0, got -1"),
    ((X4, W4, B4, {"stride": 1.0, "pad": 1}), TypeError, r"conv_param\['stride'\] must be an integer, got 1.0"),
    ((X4, W4, B4, {"stride": True, "pad": 1}), TypeError, r"must be an integer, got True"),
    ((X4, W4, B4, {"pad": 1}), ValueError, r"conv_param is missing key\(s\) \['stride'\]"),
    ((X4, W4, B4, [1, 1]), TypeError, r"conv_param must be a dict, got list"),
    ((X4, np.zeros((4, 3, 8, 3)), B4, CP), ValueError, r"kernel 8x3 is larger than the padded input 7x7"),
    ((np.zeros((0, 3, 5, 5)), W4, B4, CP), ValueError, r"x has an empty dimension N=0"),
])
def test_conv_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        Conv.forward(*args)


@pytest.mark.parametrize("layer", [MaxPool, AvgPool])
@pytest.mark.parametrize("x, pp, exc, match", [
    (X4, {"pool_height": 2, "pool_width": 2}, ValueError, r"missing key\(s\) \['stride'\]"),
    (X4, pool_param(0, 2, 1), ValueError, r"pool_height'\] must be >= 1, got 0"),
    (X4, pool_param(2, 2, -1), ValueError, r"stride'\] must be >= 1, got -1"),
    (X4, pool_param(2, 2, 1, pad=-1), ValueError, r"pad'\] must be >= 0, got -1"),
    (X4, pool_param(2, 2, 1, pad=2), ValueError, r"pad 2 must be at most half the window 2x2"),
    (X4, pool_param(6, 2, 1), ValueError, r"window 6x2 is larger than the padded input 5x5"),
    (X4, pool_param(2, 2.5, 1), TypeError, r"pool_width'\] must be an integer, got 2.5"),
    (X4[0], pool_param(2, 2, 1), ValueError, r"x must have rank 4"),
    (X4.astype(np.int32), pool_param(2, 2, 1), TypeError, r"x has dtype int32"),
    (np.zeros((2, 3, 0, 5)), pool_param(1, 1, 1), ValueError, r"empty dimension H=0"),
])
def test_pool_bad_input(layer, x, pp, exc, match):
    with pytest.raises(exc, match=match):
        layer.forward(x, pp)


def test_backward_bad_dout_and_cache():
    out, cache = Conv.forward(X4, W4, B4, CP)
    with pytest.raises(ValueError, match=r"Conv: dout has shape \(2, 4, 5, 4\) but the forward output had shape"):
        Conv.backward(np.zeros((2, 4, 5, 4)), cache)
    with pytest.raises(ValueError, match=r"Conv: dout is float32 but the forward pass ran in float64"):
        Conv.backward(out.astype(np.float32), cache)
    with pytest.raises(TypeError, match=r"Conv.backward expects the cache returned by Conv.forward"):
        Conv.backward(out, cache[:3])
    _, pcache = MaxPool.forward(X4, pool_param(2, 2, 1))
    with pytest.raises(TypeError, match=r"MaxPool.backward expects the cache"):
        MaxPool.backward(out, cache)

    class FastCache:
        layer = "FastConv"

    with pytest.raises(TypeError, match=r"made by FastConv.forward; pass it to FastConv.backward"):
        Conv.backward(out, FastCache())


@pytest.mark.parametrize("call, exc, match", [
    (lambda: Linear.forward(np.zeros((2, 3)), np.zeros((4, 2)), np.zeros(2)), ValueError,
     r"flattens to D=3 features but w has shape \(4, 2\)"),
    (lambda: Linear.forward(np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(3)), ValueError, r"b has shape \(3,\)"),
    (lambda: Linear.forward(np.zeros(3), np.zeros((3, 2)), np.zeros(2)), ValueError, r"rank >= 2"),
    (lambda: ReLU.forward(np.zeros(3, dtype=np.int8)), TypeError, r"x has dtype int8"),
    (lambda: BatchNorm.forward(np.zeros((4, 3)), np.ones(3), np.zeros(3), {"mode": "eval"}), ValueError,
     r"bn_param\['mode'\] must be 'train' or 'test', got 'eval'"),
    (lambda: BatchNorm.forward(np.zeros((4, 3)), np.ones(2), np.zeros(3), {"mode": "train"}), ValueError,
     r"gamma has shape \(2,\) but x .* has 3 features"),
    (lambda: BatchNorm.forward(np.zeros((4, 3)), np.ones(3), np.zeros(3), {"mode": "train", "eps": 0}),
     ValueError, r"bn_param\['eps'\] must lie in \(0"),
    (lambda: BatchNorm.forward(np.zeros((4, 3)), np.ones(3), np.zeros(3), {}), ValueError, r"missing key"),
    (lambda: BatchNorm.forward(np.zeros((4, 3)), np.ones(3), np.zeros(3),
                               {"mode": "test", "running_mean": np.zeros(2)}), ValueError,
     r"running_mean'\] has shape \(2,\); expected \(3,\)"),
    (lambda: SpatialBatchNorm.forward(np.zeros((4, 3)), np.ones(3), np.zeros(3), {"mode": "train"}),
     ValueError, r"x must have rank 4"),
    (lambda: Dropout.forward(np.zeros(3), {"p": 1.0, "mode": "train"}), ValueError,
     r"dropout_param\['p'\] must lie in \[0.0, 1.0\), got 1.0"),
    (lambda: Dropout.forward(np.zeros(3), {"p": 0.5, "mode": "x"}), ValueError, r"'train' or 'test', got 'x'"),
    (lambda: Dropout.forward(np.zeros(3), {"p": 0.5, "mode": "train", "seed": -1}), ValueError, r"seed"),
])
def test_other_layers_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------ fuzzing: clear errors, never a crash

param_values = st.one_of(st.integers(-2, 6), st.floats(-1, 4), st.just(float("nan")), st.none(), st.text(max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(xs=st.lists(st.integers(0, 5), min_size=3, max_size=5), ws=st.lists(st.integers(0, 5), min_size=3, max_size=5),
       bs=st.integers(0, 4), stride=param_values, pad=param_values,
       dtypes=st.tuples(*[st.sampled_from([np.float32, np.float64, np.int32])] * 3))
def test_conv_fuzz_clear_errors(xs, ws, bs, stride, pad, dtypes):
    x = np.ones(xs, dtype=dtypes[0])
    w = np.ones(ws, dtype=dtypes[1])
    b = np.ones(bs, dtype=dtypes[2])
    try:
        out, cache = Conv.forward(x, w, b, {"stride": stride, "pad": pad})
    except (ValueError, TypeError) as e:
        assert str(e)
        return
    N, C, H, W = x.shape
    F_, _, HH, WW = w.shape
    assert out.shape == (N, F_, 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride)
    dx, dw, db = Conv.backward(np.ones_like(out), cache)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape


@settings(max_examples=150, deadline=None)
@given(xs=st.lists(st.integers(0, 6), min_size=3, max_size=5), ph=param_values, pw=param_values,
       stride=param_values, pad=param_values, layer=st.sampled_from([MaxPool, AvgPool]))
def test_pool_fuzz_clear_errors(xs, ph, pw, stride, pad, layer):
    x = np.ones(xs)
    try:
        out, cache = layer.forward(x, pool_param(ph, pw, stride, pad))
    except (ValueError, TypeError) as e:
        assert str(e)
        return
    assert out.shape == (xs[0], xs[1], 1 + (xs[2] + 2 * pad - ph) // stride, 1 + (xs[3] + 2 * pad - pw) // stride)
    assert layer.backward(np.ones_like(out), cache).shape == x.shape


# ------------------------------------------------------------------ Conv.backward_alt (the zero-inserted gradient)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_backward_alt_by_hand_with_a_stride_that_does_not_divide(dtype):
    # 2x2 windows at stride 2 over 5x5: H' = 1 + (5 - 2) // 2 = 2; row 4 and column 4 are read by no window.
    x = np.arange(25, dtype=dtype).reshape(1, 1, 5, 5)
    _, cache = Conv.forward(x, np.ones((1, 1, 2, 2), dtype=dtype), np.zeros(1, dtype=dtype), {"stride": 2, "pad": 0})
    dx, dw, db = Conv.backward_alt(np.ones((1, 1, 2, 2), dtype=dtype), cache)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    expected = np.zeros((5, 5))
    expected[:4, :4] = 1
    np.testing.assert_array_equal(dx[0, 0], expected)
    # dw[a, b] = x[a, b] + x[a, b+2] + x[a+2, b] + x[a+2, b+2], e.g. 0 + 2 + 10 + 12 = 24.
    np.testing.assert_array_equal(dw, [[[[24, 28], [44, 48]]]])
    np.testing.assert_array_equal(db, [4])


@st.composite
def conv_layer_cases(draw):
    """Shapes, stride 1-4 (dividing or not), pad 0-3, non-square kernels that fit, dtype, seed."""
    N, C, F = (draw(st.integers(1, 3)) for _ in range(3))
    pad, stride = draw(st.integers(0, 3)), draw(st.integers(1, 4))
    H, W = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    HH, WW = draw(st.integers(1, min(5, H + 2 * pad))), draw(st.integers(1, min(5, W + 2 * pad)))
    return ((N, C, H, W), (F, C, HH, WW), stride, pad, draw(st.sampled_from(DTYPES)),
            draw(st.integers(0, 2**32 - 1)))


def _conv_backward_inputs(case):
    xs, ws, stride, pad, dtype, seed = case
    r = rng(seed)
    x, w, b = (r.standard_normal(s).astype(dtype) for s in (xs, ws, (ws[0],)))
    cp = {"stride": stride, "pad": pad}
    out, cache = Conv.forward(x, w, b, cp)
    dout = r.standard_normal(out.shape).astype(dtype)
    # Each gradient entry sums at most this many products; the same sums over absolute values bound its rounding.
    terms = max(ws[0] * ws[2] * ws[3], out.shape[0] * out.shape[2] * out.shape[3])
    _, abs_cache = Conv.forward(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), b.astype(np.float64), cp)
    magnitudes = Conv.backward(np.abs(dout).astype(np.float64), abs_cache)
    return x, w, b, cp, dout, cache, terms, magnitudes


CONV_EXAMPLES = [
    ((2, 3, 7, 7), (4, 3, 3, 3), 2, 1, np.float32, 0),  # stride 2 divides 7 + 2 - 3
    ((1, 2, 8, 7), (3, 2, 3, 2), 3, 0, np.float64, 1),  # stride 3 divides neither axis
    ((2, 1, 2, 3), (2, 1, 5, 5), 4, 3, np.float32, 2),  # kernel larger than the input, padding 3
    ((3, 2, 5, 5), (2, 2, 1, 1), 4, 0, np.float64, 3),  # 1x1 kernel, stride above the kernel
]


def _with_examples(test):
    for case in CONV_EXAMPLES:
        test = example(case=case)(test)
    return test


@settings(max_examples=100, deadline=None)
@given(case=conv_layer_cases())
@_with_examples
def test_conv_backward_alt_equals_backward(case):
    dtype = case[4]
    x, w, b, cp, dout, cache, terms, magnitudes = _conv_backward_inputs(case)
    for alt, ref, mag in zip(Conv.backward_alt(dout, cache), Conv.backward(dout, cache), magnitudes):
        assert alt.dtype == dtype
        assert_within_rounding(alt, ref, mag, terms)


@needs_torch
@settings(max_examples=100, deadline=None)
@given(case=conv_layer_cases())
@_with_examples
def test_conv_backward_alt_against_torch(case):
    dtype = case[4]
    x, w, b, cp, dout, cache, terms, magnitudes = _conv_backward_inputs(case)
    tx, tw, tb = _t(x), _t(w), _t(b)
    F.conv2d(tx, tw, tb, stride=cp["stride"], padding=cp["pad"]).backward(torch.from_numpy(dout))
    for alt, theirs, mag in zip(Conv.backward_alt(dout, cache), (tx.grad, tw.grad, tb.grad), magnitudes):
        assert alt.dtype == dtype
        assert_within_rounding(alt, theirs.numpy(), mag, terms)


class _ForeignCache:
    layer = "FastConv"


# (dout, cache) made from the forward output and cache, the error and its message; built inside the test,
# so that collecting this file never runs a layer.
BAD_BACKWARD_INPUTS = [
    (lambda out, cache: (np.zeros((2, 4, 5, 4)), cache), ValueError,
     r"Conv: dout has shape \(2, 4, 5, 4\) but the forward output"),
    (lambda out, cache: (out.astype(np.float32), cache), ValueError,
     r"Conv: dout is float32 but the forward pass ran in float64"),
    (lambda out, cache: (out.astype(np.int64), cache), TypeError, r"dout has dtype int64"),
    (lambda out, cache: (out.tolist(), cache), TypeError, r"dout must be a numpy ndarray, got list"),
    (lambda out, cache: (out, cache[:3]), TypeError, r"Conv.backward expects the cache returned by Conv.forward"),
    (lambda out, cache: (out, list(cache)), TypeError, r"Conv.backward expects the cache .* got list"),
    (lambda out, cache: (out, _ForeignCache()), TypeError, r"made by FastConv.forward; pass it to FastConv.backward"),
    (lambda out, cache: (out, cache[:3] + ({"stride": 0, "pad": 1},)), ValueError,
     r"conv_param\['stride'\] must be >= 1, got 0"),
]


@pytest.mark.parametrize("make, exc, match", BAD_BACKWARD_INPUTS)
def test_conv_backward_alt_bad_input_gets_backwards_errors(make, exc, match):
    dout, cache = make(*Conv.forward(X4, W4, B4, CP))
    errors = []
    for backward in (Conv.backward, Conv.backward_alt):
        with pytest.raises(exc, match=match) as info:
            backward(dout, cache)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
