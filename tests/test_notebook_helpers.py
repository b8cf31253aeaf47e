"""convnet.notebook_helpers: one line per stub, dependent blocks, the public checks, the error lines, figures."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from convnet import notebook_helpers as nh
from convnet.notebook_helpers import attempt, needs, public_check, report, stub_name

_names = itertools.count()


def step_name() -> str:
    # The helpers remember steps for the whole session: every test uses fresh names.
    return f"test-step-{next(_names)}"


def stub(name="Conv.forward"):
    raise NotImplementedError(f"{name}: implement me")


class TestAttempt:
    def test_a_stub_prints_one_line_and_ends_the_block(self, capsys):
        reached = []
        with attempt():
            stub("MaxPool.backward")
            reached.append(True)
        assert capsys.readouterr().out == "MaxPool.backward: not implemented yet\n"
        assert reached == []

    def test_a_dependent_block_prints_the_missing_stub(self, capsys):
        first, second, third = step_name(), step_name(), step_name()
        with attempt(first):
            stub("ThreeLayerConvNet.loss")
        with attempt(second):
            needs(first)
            pytest.fail("the block must end at needs()")
        # A block depending on a skipped block names the same stub.
        with attempt(third):
            needs(second)
            pytest.fail("the block must end at needs()")
        assert capsys.readouterr().out.splitlines() == ["ThreeLayerConvNet.loss: not implemented yet"] * 3

    def test_a_completed_step_satisfies_needs_and_a_rerun_updates_it(self, capsys):
        name = step_name()
        with attempt(name):
            pass
        with attempt():
            needs(name)
            print("ran")
        with attempt(name):
            stub("Conv.backward")
        with attempt():
            needs(name)
            print("must not run")
        assert capsys.readouterr().out.splitlines() == ["ran", "Conv.backward: not implemented yet",
                                                        "Conv.backward: not implemented yet"]

    def test_a_step_never_run_says_so(self, capsys):
        with attempt():
            needs("a step nobody ran")
        assert capsys.readouterr().out == ("skipped: the step 'a step nobody ran' has not run yet "
                                           "(run the cells above first)\n")

    def test_other_errors_propagate_and_leave_the_step_undone(self, capsys):
        name = step_name()
        with pytest.raises(ValueError, match="a real bug"):
            with attempt(name):
                raise ValueError("a real bug")
        with attempt():
            needs(name)
        assert "has not run yet" in capsys.readouterr().out

    def test_a_students_own_not_implemented_error(self, capsys):
        with attempt():
            raise NotImplementedError("half done")
        with attempt():
            raise NotImplementedError
        assert capsys.readouterr().out.splitlines() == ["not implemented yet: half done",
                                                        "not implemented yet: NotImplementedError"]

    def test_stub_name_follows_causes_and_contexts(self):
        try:
            try:
                stub("BatchNorm.backward")
            except NotImplementedError as inner:
                raise NotImplementedError("wrapper") from inner
        except NotImplementedError as exc:
            assert stub_name(exc) == "BatchNorm.backward"
        try:
            try:
                stub("ReLU.forward")
            except NotImplementedError:
                raise KeyError("during handling")
        except KeyError as exc:
            assert stub_name(exc) == "ReLU.forward"
        assert stub_name(NotImplementedError("Conv.forward: implement me later")) is None
        assert stub_name(None) is None


class TestPublicCheck:
    def test_layer_forward_matches_the_check(self):
        from grader.explain import find_check

        case = public_check("Conv.forward")
        check = find_check("Conv.forward")
        prep = check.prepare(check.rng(0, public=True), "")
        np.testing.assert_array_equal(case.out, check.expected(prep)["fwd.out"])
        x, w, b, conv_param = case.args
        assert x.shape == (2, 3, 6, 6) and w.shape == (3, 3, 3, 3) and conv_param == {"stride": 1, "pad": 1}
        np.testing.assert_array_equal(x, prep.state["call"].arrays["x"])
        assert case.description.startswith("Conv.forward(x, w, b, conv_param) on stride 1, pad 1")

    def test_args_are_fresh_copies(self):
        case = public_check("BatchNorm.forward")
        x, gamma, beta, bn_param = case.args
        x[...] = 0
        bn_param["running_mean"] = "changed"
        again = case.args
        assert np.any(again[0] != 0) and "running_mean" not in again[3]

    def test_backward_gradients_in_order(self):
        case = public_check("Conv.backward vs finite differences")
        x, w, b, _ = case.args
        assert [g.shape for g in case.grads] == [x.shape, w.shape, b.shape]
        assert case.dout.shape == case.out.shape

    def test_model_check_kwargs_are_decoded(self):
        case = public_check("ThreeLayerConvNet initial loss is about log(C)")
        assert case.kwargs["input_dims"] == (3, 8, 8) and case.kwargs["dtype"] is np.float64
        assert case.state["X"].shape == (6, 3, 8, 8) and case.state["C"] == 5

    def test_a_release_reads_the_shipped_values(self, monkeypatch):
        import grader.checks
        import grader.checks.public

        shipped = {"fwd.out": np.full((2, 3, 6, 6), 7.0)}
        monkeypatch.setattr(grader.checks, "release_mode", lambda: True)
        monkeypatch.setattr(grader.checks.public, "load_public_expected", lambda check: shipped)
        assert public_check("Conv.forward").out is shipped["fwd.out"]

    def test_unknown_name(self):
        with pytest.raises(KeyError, match="is not a visible check's name"):
            public_check("Conv.sideways")


class TestReport:
    def test_prints_the_relative_error(self, capsys):
        got = np.array([1.0, -2.0, 3.0])
        want = got + np.array([0.0, 0.0, 3e-9])
        err = report("dx", got, want)
        assert err == pytest.approx(3e-9 / (6 + 3e-9))
        assert capsys.readouterr().out == "dx relative error: 5.0e-10\n"

    def test_a_wrong_shape_is_one_line(self, capsys):
        assert report("out", np.zeros((2, 3)), np.zeros((3, 2))) == np.inf
        assert capsys.readouterr().out == "out: shape (2, 3), expected (3, 2)\n"


def test_best_time_is_the_minimum_of_the_calls():
    calls = []
    assert 0 <= nh.best_time(lambda: calls.append(1), repeat=4) < 1
    assert len(calls) == 4


def test_show_writes_the_png_and_prints_its_path_outside_ipython(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="figures need matplotlib (pip install '.[test]')")
    solver = SimpleNamespace(loss_history=list(np.linspace(2.3, 0.1, 30)), train_acc_history=[0.1, 0.6, 0.9],
                             val_acc_history=[0.1, 0.5, 0.8])
    short = SimpleNamespace(loss_history=[2.3, 2.0], train_acc_history=[0.1, 0.2], val_acc_history=[0.1, 0.2])
    fig = nh.training_figure({"run": solver, "short": short}, "title")
    loss_ax, acc_ax = fig.axes
    # The long run: raw and smoothed loss; the short one: raw only. Train and val accuracy for both.
    assert len(loss_ax.lines) == 3 and len(acc_ax.lines) == 4
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["run", "short"]
    path = nh.show(fig, "curves", folder=str(tmp_path / "figs"))
    assert path == str(tmp_path / "figs" / "curves.png")
    assert (tmp_path / "figs" / "curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert capsys.readouterr().out == f"figure written to {path}\n"
