"""convnet.losses: hand cases, finite differences and the PyTorch oracle."""
import numpy as np
import pytest

from convnet.gradcheck import compute_numeric_gradient, rel_error
from convnet.losses import softmax_loss, svm_loss


def test_softmax_by_hand():
    loss, dx = softmax_loss(np.zeros((2, 4)), np.array([0, 3]))
    assert loss == pytest.approx(np.log(4))
    np.testing.assert_allclose(dx, (np.full((2, 4), 0.25) - np.eye(4)[[0, 3]]) / 2)


def test_softmax_is_stable_for_large_scores():
    loss, dx = softmax_loss(np.array([[1000.0, 0.0]]), np.array([1]))
    assert loss == pytest.approx(1000.0)
    assert np.all(np.isfinite(dx))


def test_svm_by_hand():
    x = np.array([[3.0, 1.0, 2.5]])
    loss, dx = svm_loss(x, np.array([0]))
    # margins: class 1 max(0, 1-3+1)=0, class 2 max(0, 2.5-3+1)=0.5
    assert loss == pytest.approx(0.5)
    np.testing.assert_array_equal(dx, [[-1.0, 0.0, 1.0]])


@pytest.mark.parametrize("fn", [softmax_loss, svm_loss])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_gradient_and_dtype(fn, dtype):
    r = np.random.default_rng(0)
    x, y = r.standard_normal((6, 5)), r.integers(0, 5, 6)
    _, dx = fn(x, y)
    num = compute_numeric_gradient(lambda s: np.array(fn(s, y)[0]), x, h=1e-6)
    assert rel_error(dx, num) < 1e-8
    assert fn(x.astype(dtype), y)[1].dtype == dtype


torch = pytest.importorskip("torch", reason="PyTorch is the oracle for these tests; pip install torch==2.13.0")


def test_losses_against_torch():
    r = np.random.default_rng(1)
    x, y = r.standard_normal((8, 6)), r.integers(0, 6, 8)
    tx = torch.tensor(x, requires_grad=True)
    t = torch.nn.functional.cross_entropy(tx, torch.tensor(y))
    t.backward()
    loss, dx = softmax_loss(x, y)
    assert loss == pytest.approx(t.item(), rel=1e-12)
    assert rel_error(dx, tx.grad.numpy()) < 1e-12
    tx = torch.tensor(x, requires_grad=True)
    # PyTorch divides each sample's hinge sum by the number of classes; EECS 498 does not.
    t = torch.nn.functional.multi_margin_loss(tx, torch.tensor(y), margin=1.0) * x.shape[1]
    t.backward()
    loss, dx = svm_loss(x, y)
    assert loss == pytest.approx(t.item(), rel=1e-12)
    assert rel_error(dx, tx.grad.numpy()) < 1e-12
