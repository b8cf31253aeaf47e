"""``python -m convnet train``: a short run end to end, argument errors, and the full run's accuracy (slow)."""
import re
import subprocess
import sys

import numpy as np
import pytest

from convnet import train
from convnet.models import ThreeLayerConvNet

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


def _accuracy(text, label):
    return float(re.search(rf"{label} accuracy:\s+([0-9.]+)", text).group(1))


def test_one_epoch_writes_model_and_plot(tmp_path, capsys):
    assert train.main(["--out", str(tmp_path), "--epochs", "1", "--quiet", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "trained 1 epochs" in out
    assert (tmp_path / "history.png").read_bytes()[:4] == b"\x89PNG"
    # The saved model is the best one and reproduces the printed test accuracy.
    model = ThreeLayerConvNet.load(tmp_path / "model.npz")
    from convnet.data import load_digits
    data = load_digits(seed=0)
    acc = float(np.mean(model.predict(data["X_test"]) == data["y_test"]))
    assert acc == pytest.approx(_accuracy(out, "test"), abs=1e-4)
    assert 0.0 <= _accuracy(out, "validation") <= 1.0


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--seed", "-1"], ["--time-limit", "0"], ["--threads", "-2"],
                                  ["--bogus"]])
def test_bad_arguments_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        train.main(argv)
    assert info.value.code == 2
    assert "usage: python -m convnet train" in capsys.readouterr().err


def test_time_limit_stops_training(tmp_path, capsys):
    assert train.main(["--out", str(tmp_path), "--epochs", "50", "--time-limit", "1e-6", "--quiet",
                       "--threads", "0"]) == 0
    assert "trained 0 epochs" in capsys.readouterr().out


def test_thread_limit_is_scoped():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from convnet import fast

    before = [i["num_threads"] for i in threadpoolctl.threadpool_info()]
    fast_before = fast.get_config()
    with train._thread_limit(1):
        assert all(i["num_threads"] == 1 for i in threadpoolctl.threadpool_info())
        assert fast.get_num_threads() == 1  # the fast path's pooling kernels and batch split too
    assert [i["num_threads"] for i in threadpoolctl.threadpool_info()] == before
    assert fast.get_config() == fast_before


@pytest.mark.slow
def test_digits_reach_97_percent(tmp_path):
    # The real command, in its own process, as a user runs it (outside the source tree, which -m would import).
    proc = subprocess.run([sys.executable, "-m", "convnet", "train", "--out", str(tmp_path), "--quiet"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _accuracy(proc.stdout, "test") >= 0.97, proc.stdout
    assert _accuracy(proc.stdout, "validation") >= 0.97, proc.stdout
    assert (tmp_path / "model.npz").exists() and (tmp_path / "history.png").exists()
