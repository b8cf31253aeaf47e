"""``python -m grader --explain``: every visible check's public inputs and call run as printed and agree."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from grader.checks import visible_checks
from grader.explain import explain, find_check, literal


@pytest.mark.parametrize("name", [c.name for c in visible_checks()])
def test_every_visible_check_explains_itself_as_code_that_runs_and_agrees(name, tmp_path):
    code = explain(name)
    assert code.startswith(f"# {name}: ")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    for value in re.findall(r"error:? ([-+0-9.e]+)", run.stdout):
        assert float(value) < 1e-6, run.stdout  # the reference reproduces the expected values


def test_names_can_be_abbreviated_and_unknown_names_list_the_checks():
    assert find_check("optim.ada").name == "optim.adam"
    with pytest.raises(KeyError, match="is not a visible check"):
        find_check("no such check")
    with pytest.raises(KeyError, match="matches several"):
        find_check("Conv")


def test_literal_reproduces_values_exactly():
    import numpy as np

    a = np.random.default_rng(0).standard_normal((2, 3))
    scope = {"np": np}
    exec(literal("a", a), scope)
    assert (scope["a"] == a).all() and scope["a"].dtype == a.dtype


def test_the_cli_prints_it_and_refuses_unknown_names():
    run = subprocess.run([sys.executable, "-m", "grader", "--explain", "ReLU.forward"], capture_output=True, text=True)
    assert run.returncode == 0 and "from convnet.layers import ReLU" in run.stdout
    run = subprocess.run([sys.executable, "-m", "grader", "--explain", "nope"], capture_output=True, text=True)
    assert run.returncode == 2 and "visible checks are" in run.stderr


def test_help_lists_the_subcommands():
    run = subprocess.run([sys.executable, "-m", "grader", "--help"], capture_output=True, text=True)
    assert run.returncode == 0
    for sub in ("release", "bundle"):
        assert re.search(rf"^\s+{sub}\s", run.stdout, re.M), run.stdout
