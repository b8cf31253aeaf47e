"""``python -m convnet check`` prints one verdict per layer and fails when a layer is wrong."""
import numpy as np

from convnet import __main__ as cli
from convnet import layers, selfcheck


def test_check_passes_on_the_reference(capsys):
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    for name in ("Linear", "ReLU", "Conv", "MaxPool", "AvgPool", "BatchNorm", "SpatialBatchNorm", "Dropout"):
        assert any(line.startswith(name) and line.rstrip().endswith("PASS") for line in out.splitlines()), name
    assert "11/11 layers pass" in out


def test_check_fails_on_a_wrong_backward(monkeypatch, capsys):
    def wrong(dout, cache):
        dx, dw, db = orig(dout, cache)
        return dx, dw * 1.01, db

    orig = layers.Conv.backward
    monkeypatch.setattr(layers.Conv, "backward", staticmethod(wrong))
    assert selfcheck.main([]) == 1
    out = capsys.readouterr().out
    assert "failed: Conv" in out
    conv_row = next(line for line in out.splitlines() if line.startswith("Conv"))
    assert conv_row.rstrip().endswith("FAIL")
    assert float(conv_row.split()[2]) > 1e-3


def test_check_fails_on_a_wrong_forward(monkeypatch):
    orig = layers.AvgPool.forward
    monkeypatch.setattr(layers.AvgPool, "forward",
                        staticmethod(lambda x, p: (lambda o, c: (o * np.float64(1.001), c))(*orig(x, p))))
    rows = {r["layer"]: r for r in selfcheck.run_checks()}
    assert not rows["AvgPool"]["ok"] and rows["AvgPool"]["forward"] > 1e-4


def test_cli_usage_and_unknown_command(capsys):
    assert cli.main([]) == 2
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
