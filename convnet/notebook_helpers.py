"""Helpers for the student notebook ``ConvolutionalNetworks.ipynb``.

* :func:`attempt` runs a block of a cell; a function that still raises the
  starter's ``NotImplementedError`` prints one line
  (``Conv.forward: not implemented yet``) instead of a traceback, and the
  notebook goes on. :func:`needs` makes a block depend on an earlier one.
* :func:`public_check` gives a visible check's public inputs and expected
  values, the ones ``python -m grader --explain NAME`` prints.
* :func:`report` prints an error the way the course does
  (``dx relative error: 1.2e-10``).
* :func:`show` writes a matplotlib figure to ``figures/NAME.png`` and
  displays it as the cell's image output; :func:`training_figure` draws loss
  and accuracy curves of one or more solvers.

Any other exception (a bug, not a stub) propagates with its traceback.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import time
from dataclasses import dataclass

import numpy as np

from convnet.gradcheck import rel_error

__all__ = ["attempt", "needs", "stub_name", "public_check", "PublicCase", "report", "best_time", "show",
           "training_figure"]

_STUB = re.compile(r"^([\w.]+): implement me$")
# Steps (names given to attempt) that completed, and the stub that stopped each one that did not.
_done: set = set()
_missing: dict = {}


class _Skipped(Exception):
    """A block that depends on a step that did not complete; its message is the line to print."""


def stub_name(exc) -> str | None:
    """The starter stub behind ``exc`` ("Conv.forward"), following causes and contexts; None if none."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, NotImplementedError):
            m = _STUB.match(str(exc))
            if m:
                return m.group(1)
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def attempt(step: str | None = None):
    """Run a block; a stub that is not implemented yet prints one line and ends the block.

    Parameters
    ----------
    step : str, optional
        Name the block so a later block can require it with :func:`needs`.

    Examples
    --------
    >>> with attempt("forward"):             # doctest: +SKIP
    ...     out, cache = Conv.forward(x, w, b, conv_param)
    Conv.forward: not implemented yet
    """
    if step is not None:
        _done.discard(step)
        _missing.pop(step, None)
    try:
        yield
    except _Skipped as exc:
        print(exc)
        if step is not None:
            _missing[step] = str(exc)
    except NotImplementedError as exc:
        name = stub_name(exc)
        line = f"{name}: not implemented yet" if name else f"not implemented yet: {str(exc) or type(exc).__name__}"
        print(line)
        if step is not None:
            _missing[step] = line
    else:
        if step is not None:
            _done.add(step)


def needs(*steps: str) -> None:
    """Inside an :func:`attempt` block: end it with one line unless every named step has completed.

    The line is the one the failed step printed (``ThreeLayerConvNet.loss: not implemented yet``).
    """
    for step in steps:
        if step in _done:
            continue
        if step in _missing:
            raise _Skipped(_missing[step])
        raise _Skipped(f"skipped: the step {step!r} has not run yet (run the cells above first)")


@dataclass
class PublicCase:
    """A visible check on its public inputs.

    Attributes
    ----------
    check : grader.checks.base.Check
    description : str
        The call, with shapes and parameters.
    state : dict
        The check's inputs: ``call`` (a :class:`convnet.specs.Call`) and ``dout`` for layers; ``X``,
        ``y``, ``params``, ``C`` for a model's loss.
    expected : dict
        The expected values by the check's keys (``"fwd.out"``, ``"fb.d0"``, ...): computed by the
        reference in the course repository, read from the values shipped with a starter.
    """

    check: object
    description: str
    state: dict
    expected: dict

    @property
    def args(self) -> list:
        """A fresh copy of the layer call's arguments, in forward's order (arrays, then dicts)."""
        return self.state["call"].copy().args()

    @property
    def dout(self) -> np.ndarray:
        return self.state["dout"]

    @property
    def out(self) -> np.ndarray:
        """The expected forward output."""
        return self.expected["fwd.out"] if "fwd.out" in self.expected else self.expected["fb.out"]

    @property
    def grads(self) -> list:
        """The expected gradients in backward's order (dx, dw, db, ...): finite differences for the visible checks."""
        return [self.expected[f"fb.d{k}"] for k in range(len(self.state["call"].arrays))]

    @property
    def kwargs(self) -> dict:
        """A model check's constructor arguments."""
        from grader.sandbox import wire

        return wire.decode(self.check.kwargs, {})


def public_check(name: str) -> PublicCase:
    """The visible check ``name`` (as ``python -m grader --explain`` names it) on its public inputs."""
    from grader.checks import release_mode
    from grader.checks.public import load_public_expected
    from grader.explain import find_check

    check = find_check(name)
    prep = check.prepare(check.rng(0, public=True), "")
    expected = load_public_expected(check) if release_mode() else check.expected(prep)
    return PublicCase(check, check.describe(prep), prep.state, expected)


def report(label: str, got, want) -> float:
    """Print ``LABEL relative error: 1.2e-10`` (max |got - want| / max(|got| + |want|)); return the error."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        print(f"{label}: shape {got.shape}, expected {want.shape}")
        return math.inf
    err = rel_error(got, want)
    print(f"{label} relative error: {err:.1e}")
    return err


def best_time(fn, repeat: int = 5) -> float:
    """The shortest of ``repeat`` timed calls of ``fn()``, in seconds."""
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def show(fig, name: str, folder: str = "figures") -> str:
    """Write ``fig`` to ``folder/NAME.png`` and display it as the cell's image output; returns the path.

    Outside IPython the path is printed instead.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.png")
    fig.savefig(path, format="png", dpi=90, bbox_inches="tight")
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(Image(filename=path))
    else:
        print(f"figure written to {path}")
    return path


def training_figure(runs: dict, title: str = ""):
    """Loss per iteration and accuracy per epoch of solvers ``{label: solver}``, each run in its own colour.

    Returns
    -------
    matplotlib.figure.Figure
        Drawn without pyplot (no window, the global backend untouched).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for i, (label, solver) in enumerate(runs.items()):
        colour = f"C{i}"
        loss = np.asarray(solver.loss_history, dtype=float)
        loss_ax.plot(np.arange(1, loss.size + 1), loss, color=colour, alpha=0.35, linewidth=0.8)
        if loss.size >= 10:
            # A 10-iteration moving average shows the trend through the minibatch noise.
            smooth = np.convolve(loss, np.ones(10) / 10, mode="valid")
            loss_ax.plot(np.arange(10, loss.size + 1), smooth, color=colour, label=label)
        else:
            loss_ax.lines[-1].set_label(label)
        epochs = np.arange(len(solver.val_acc_history))
        acc_ax.plot(epochs, solver.train_acc_history, "--o", color=colour, markersize=3, label=f"{label}: train")
        acc_ax.plot(epochs, solver.val_acc_history, "-o", color=colour, markersize=3, label=f"{label}: val")
    loss_ax.set_xlabel("iteration")
    loss_ax.set_ylabel("training loss")
    loss_ax.legend()
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1.02)
    acc_ax.legend(loc="lower right", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
