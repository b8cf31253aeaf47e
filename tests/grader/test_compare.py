"""The one comparison: rounding noise of a zero quantity passes, every real error fails, scaled to the data."""
from __future__ import annotations

import numpy as np
import pytest

from grader.compare import TOLERANCES, compare, rel_error, scale_of


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_noise_of_a_quantity_that_is_zero_in_exact_arithmetic_passes(dtype):
    eps = np.finfo(dtype).eps
    want = np.zeros(4)
    got = np.array([3, -2, 1, 0]) * eps * 20  # rounding noise of a sum of ~20 unit terms
    c = compare("db", got, want, scale=1.0, dtype=dtype)
    assert c.ok
    # EECS 498's relative error calls the same noise a total failure: the reason for the data scale.
    assert rel_error(got, want) == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_zeros_where_the_true_value_is_not_zero_fail(dtype):
    want = np.array([0.3, -1.2, 2.0])
    c = compare("dx", np.zeros(3), want, scale=scale_of(want), dtype=dtype)
    assert not c.ok and c.worst[0] == ((2,), 2.0, 0.0)


def test_relative_part_scales_with_the_answer():
    tol = TOLERANCES["float64"]
    want = np.full(3, 1e6)
    assert compare("x", want * (1 + 0.5 * tol.rtol), want, scale=1e6).ok
    assert not compare("x", want * (1 + 5 * tol.rtol), want, scale=1e6).ok


def test_allow_adds_a_measured_error():
    assert not compare("d", np.array([1.0 + 1e-6]), np.array([1.0]), scale=1.0).ok
    assert compare("d", np.array([1.0 + 1e-6]), np.array([1.0]), scale=1.0, allow=2e-6).ok


def test_nan_never_passes_and_shapes_must_match():
    assert not compare("x", np.array([np.nan]), np.array([0.0]), scale=1.0).ok
    with pytest.raises(ValueError, match="cannot compare shapes"):
        compare("x", np.zeros(2), np.zeros(3), scale=1.0)
