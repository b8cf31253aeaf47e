"""setup.py's choice of compiler flags (its functions, read from the file: running it would build)."""
import ast
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "setup.py"


def _function(name):
    tree = ast.parse(SETUP.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace = {}
    exec(compile(ast.Module([node], type_ignores=[]), str(SETUP), "exec"), namespace)
    return namespace[name]


@pytest.mark.parametrize("cflags, expected", [
    ("", ["-O3", "-g0"]),
    ("-fno-omit-frame-pointer", ["-O3", "-g0"]),
    ("-O1", ["-g0"]),
    ("-fsanitize=address -O1", ["-g0"]),
    ("-g", ["-O3"]),
    ("-O0 -ggdb3", []),
    ("-Os -g1", []),
])
def test_cflags_optimisation_and_debug_levels_replace_the_defaults(cflags, expected):
    assert _function("_default_flags")(cflags) == expected
