"""convnet.gradcheck against functions whose gradients are known in closed form."""
import numpy as np
import pytest

from convnet.gradcheck import assert_within_rounding, compute_numeric_gradient, grad_check_sparse, rel_error


def test_numeric_gradient_of_a_cubic_and_x_is_restored():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    before = x.copy()
    grad = compute_numeric_gradient(lambda v: np.sum(v ** 3), x)
    np.testing.assert_allclose(grad, 3 * before ** 2, rtol=1e-6)
    np.testing.assert_array_equal(x, before)


def test_numeric_gradient_with_upstream_gradient():
    x = np.array([1.0, 2.0, 3.0])
    dLdf = np.array([1.0, -1.0, 2.0])
    # f(x) = x**2 elementwise, so the gradient of sum(dLdf * f) is 2 x dLdf.
    grad = compute_numeric_gradient(lambda v: v ** 2, x, dLdf)
    np.testing.assert_allclose(grad, 2 * x * dLdf, rtol=1e-6)


def test_numeric_gradient_bad_input():
    with pytest.raises(TypeError, match="floating ndarray"):
        compute_numeric_gradient(lambda v: v, np.arange(3))
    with pytest.raises(ValueError, match=r"dLdf has shape \(2,\) but f\(x\) has shape \(3,\)"):
        compute_numeric_gradient(lambda v: v, np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="h must be a positive number"):
        compute_numeric_gradient(lambda v: v, np.ones(3), h=0)


def test_rel_error_is_the_global_form():
    assert rel_error(np.array([1.0, 3.0]), np.array([1.0, 1.0])) == pytest.approx(2 / 4)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match=r"cannot compare shapes \(2,\) and \(3,\)"):
        rel_error(np.zeros(2), np.zeros(3))


def test_grad_check_sparse_accepts_right_and_flags_wrong_gradients(capsys):
    x = np.random.default_rng(0).standard_normal((4, 5))
    f = lambda v: float(np.sum(np.sin(v)))  # noqa: E731
    good = grad_check_sparse(f, x, np.cos(x), num_checks=8, seed=1)
    assert max(good) < 1e-6
    assert "relative error" in capsys.readouterr().out
    bad = grad_check_sparse(f, x, np.cos(x) + 0.5, num_checks=8, seed=1, verbose=False)
    assert min(bad) > 1e-3


def test_assert_within_rounding_scales_to_each_entry():
    r = np.random.default_rng(2)
    a, b = r.standard_normal((6, 50)), r.standard_normal(50)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    exact = a32.astype(np.float64) @ b32.astype(np.float64)
    magnitude = np.abs(a32).astype(np.float64) @ np.abs(b32).astype(np.float64)
    assert_within_rounding(a32 @ b32, exact, magnitude, 50)
    # float32's eps is 2**-23: 50 terms of magnitude 1 allow 50 * 2**-23, about 6e-6, and no more.
    ones = np.ones(1, dtype=np.float32)
    assert_within_rounding(ones + np.float32(5e-6), ones.astype(np.float64), ones.astype(np.float64), 50)
    with pytest.raises(AssertionError, match=r"entry \(0,\): error 1(\.0\d)?e-05 above the rounding bound 5\.96e-06"):
        assert_within_rounding(ones + np.float32(1e-5), ones.astype(np.float64), ones.astype(np.float64), 50)
    # An entry that cancels to zero keeps the bound of its terms, one that is small by itself does not.
    assert_within_rounding(np.array([1e-12]), np.zeros(1), np.array([1e5]), 10)
    with pytest.raises(AssertionError, match=r"entry \(1,\)"):
        assert_within_rounding(np.array([1e-12, 1e-12]), np.zeros(2), np.array([1e5, 1e-9]), 10)
    with pytest.raises(ValueError, match=r"shapes differ: ours \(2,\), reference \(3,\), magnitude \(2,\)"):
        assert_within_rounding(np.zeros(2), np.zeros(3), np.zeros(2), 1)
