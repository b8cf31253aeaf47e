"""convnet.fast's settings (convnet/fast/_config.py) and the environment they are read from.

CI runs tests/fast twice: normally (compiled kernels, CONVNET_REQUIRE_CYTHON=1)
and with CONVNET_PUREPYTHON=1 (the numpy fallback).
"""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

import convnet.fast as fast
from convnet.fast._config import Settings
from convnet.fast._env import flag


def _run(code, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("CONVNET_") and k != "OMP_NUM_THREADS"}
    full.update(env)
    # From the tests' folder, not the source tree that `python -c` would put first on sys.path.
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- environment


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), (" Yes ", True), ("ON", True),
                                             ("0", False), ("", False), ("no", False), ("2", False)])
def test_env_flag_spellings(value, expected):
    assert flag("CONVNET_X", {"CONVNET_X": value}) is expected
    assert flag("CONVNET_X", {}) is False


def test_have_cython_matches_environment(have_cython):
    if flag("CONVNET_PUREPYTHON"):
        assert have_cython is False
    elif flag("CONVNET_REQUIRE_CYTHON"):
        assert have_cython is True
    assert isinstance(fast.HAVE_CYTHON, bool) and fast.HAVE_CYTHON is have_cython


def test_require_cython_turns_a_missing_extension_into_import_error():
    # Simulate a missing build: None entries in sys.modules make the imports fail (every CPU variant).
    code = ("import sys; sys.modules.update({f'convnet._fast._im2col{v}': None for v in ('', '_v3', '_v4')}); "
            "import convnet.fast")
    r = _run(code, CONVNET_REQUIRE_CYTHON="1")
    assert r.returncode != 0 and "ImportError" in r.stderr and "CONVNET_REQUIRE_CYTHON" in r.stderr
    r = _run(code + "; print(convnet.fast.HAVE_CYTHON)")
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
    r = _run("import convnet.fast as f; print(f.HAVE_CYTHON)", CONVNET_REQUIRE_CYTHON="1", CONVNET_PUREPYTHON="1")
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_column_budget_from_environment():
    r = _run("import convnet.fast as f; print(f.get_column_budget())", CONVNET_COLUMN_BUDGET="123456")
    assert r.returncode == 0 and r.stdout.strip() == "123456", r.stderr
    r = _run("import convnet.fast", CONVNET_COLUMN_BUDGET="lots")
    assert r.returncode != 0 and "CONVNET_COLUMN_BUDGET" in r.stderr


def test_omp_num_threads_is_the_default_thread_count():
    code = "import convnet.fast as f; a = f.get_num_threads(); f.set_num_threads(5); f.set_num_threads(None); " \
           "print(a, f.get_num_threads())"
    r = _run(code, OMP_NUM_THREADS="3")
    assert r.returncode == 0 and r.stdout.split() == ["3", "3"], r.stderr
    r = _run(code, OMP_NUM_THREADS="1,2")  # a nested-levels list: the first level counts
    assert r.returncode == 0 and r.stdout.split() == ["1", "1"], r.stderr


# ---------------------------------------------------------------- config()


def test_config_sets_and_restores_every_setting():
    before = fast.get_config()
    assert set(before) == {f.name for f in dataclasses.fields(Settings)}
    with fast.config(num_threads=1, column_budget=1234, conv_algorithm="im2col") as inside:
        assert (fast.get_num_threads(), fast.get_column_budget(), fast.get_conv_algorithm()) == (1, 1234, "im2col")
        assert inside == {**before, "num_threads": 1, "column_budget": 1234, "conv_algorithm": "im2col"}
        with fast.config(conv_algorithm="winograd4"):
            assert fast.get_conv_algorithm() == "winograd4" and fast.get_column_budget() == 1234
        assert fast.get_conv_algorithm() == "im2col"
        fast.set_column_budget(99)  # a setter inside the block is undone too
    assert fast.get_config() == before


def test_config_restores_after_an_exception():
    before = fast.get_config()
    with pytest.raises(RuntimeError, match="inside"):
        with fast.config(split_batch=False, per_image_gemm_max_k=0):
            assert fast.get_config()["split_batch"] is False
            raise RuntimeError("inside")
    assert fast.get_config() == before


def test_config_num_threads_zero_or_none_is_the_default():
    default = Settings().num_threads
    with fast.config(num_threads=3):
        with fast.config(num_threads=None):
            assert fast.get_num_threads() == default
        with fast.config(num_threads=np.int64(0)):
            assert fast.get_num_threads() == default


@pytest.mark.parametrize("changes, exc, match", [
    ({"bogus": 1}, TypeError, r"unknown fast-path setting\(s\) \['bogus'\]"),
    ({"num_threads": -1}, ValueError, "config: num_threads must be >= 0"),
    ({"num_threads": 1.5}, TypeError, "config: num_threads must be an int"),
    ({"column_budget": 0}, ValueError, r"config: column_budget must be >= 1, got 0"),
    ({"column_budget": "64"}, TypeError, "config: column_budget must be an integer"),
    ({"conv_algorithm": "fft"}, ValueError, "config: conv_algorithm must be one of"),
    ({"conv_kernel_threads": 0}, ValueError, "config: conv_kernel_threads must be >= 1"),
    ({"parallel_min_work": -1}, ValueError, "config: parallel_min_work must be >= 0"),
    ({"split_batch": 1}, TypeError, "config: split_batch must be True or False, got int 1"),
    ({"split_min_work": True}, TypeError, "config: split_min_work must be an integer"),
    ({"blas_threads_min_work": -1}, ValueError, "config: blas_threads_min_work must be >= 0, got -1"),
    ({"blas_threads_min_work": 2.0**20}, TypeError, "config: blas_threads_min_work must be an integer"),
    ({"per_image_gemm_max_k": -3}, ValueError, "config: per_image_gemm_max_k must be >= 0, got -3"),
    ({"min_part_images": 0}, ValueError, "config: min_part_images must be >= 1, got 0"),
    ({"min_part_images": 2.0}, TypeError, "config: min_part_images must be an integer"),
    ({"workspace_limit": -1}, ValueError, "config: workspace_limit must be >= 0, got -1"),
    ({"gemm_in_kernels": "yes"}, TypeError, "config: gemm_in_kernels must be True or False, got str 'yes'"),
    ({"split_image_gemms": 1}, TypeError, "config: split_image_gemms must be True or False, got int 1"),
])
def test_config_rejects_bad_settings_and_changes_nothing(changes, exc, match):
    before = fast.get_config()
    with pytest.raises(exc, match=match):
        with fast.config(**{"column_budget": 777, "num_threads": 1, **changes}):  # no valid change applies either
            pass
    assert fast.get_config() == before


def test_settings_are_an_immutable_snapshot():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().num_threads = 3


# ---------------------------------------------------------------- the set_* / get_* wrappers


def test_set_column_budget_validates():
    with pytest.raises(ValueError):
        fast.set_column_budget(0)
    with pytest.raises(TypeError):
        fast.set_column_budget(1.5)
    old = fast.set_column_budget(12345)
    assert fast.get_column_budget() == 12345
    assert fast.set_column_budget(old) == 12345


def test_set_num_threads_round_trip_and_default():
    default = fast.get_num_threads()
    assert isinstance(default, int) and default >= 1
    try:
        assert fast.set_num_threads(1) == default
        assert fast.get_num_threads() == 1
        assert fast.set_num_threads(np.int64(3)) == 1
        assert fast.get_num_threads() == 3
        assert fast.set_num_threads(None) == 3
        assert fast.get_num_threads() == default
        fast.set_num_threads(2)
        assert fast.set_num_threads(0) == 2
        assert fast.get_num_threads() == default
    finally:
        fast.set_num_threads(None)


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (1.0, TypeError), ("2", TypeError), (True, TypeError)])
def test_set_num_threads_rejects_bad_values(bad, exc):
    before = fast.get_num_threads()
    with pytest.raises(exc, match="set_num_threads"):
        fast.set_num_threads(bad)
    assert fast.get_num_threads() == before


def test_conv_algorithm_switch_validates_and_round_trips(conv_algorithm):
    assert fast.get_conv_algorithm() == "auto"
    assert set(fast.CONV_ALGORITHMS) == {"auto", "im2col", "im2row", "direct", "pointwise", "winograd", "winograd2",
                                     "winograd4"}
    assert conv_algorithm("winograd") == "auto"
    assert conv_algorithm("im2col") == "winograd"
    assert fast.get_conv_algorithm() == "im2col"
    for bad in ("fft", "Winograd", None, 1):
        with pytest.raises(ValueError, match="conv algorithm must be one of"):
            fast.set_conv_algorithm(bad)
    assert fast.get_conv_algorithm() == "im2col"
