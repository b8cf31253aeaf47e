"""Tests of grader.release: marker stripping, the leak scan, and the student release end to end."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from grader import release
from grader.release import manifest
from grader.release.leaks import LeakError, leak_lines
from grader.release.markers import MarkerError, solution_regions, splice_solutions, strip_solutions


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


LAYER = src('''
    import numpy as np


    class Linear:
        """A layer."""

        @staticmethod
        def forward(x, w, b):
            """Affine forward pass.

            Returns
            -------
            out : ndarray of shape (N, M)
            cache : tuple
            """
            n = x.shape[0]
            # BEGIN SOLUTION
            flat = x.reshape(n, -1)
            out = flat @ w + b
            # END SOLUTION
            cache = (x, w, b)
            return out, cache

        @staticmethod
        def backward(dout, cache):
            """Affine backward pass."""
            x, w, b = cache
            # BEGIN SOLUTION
            dx = (dout @ w.T).reshape(x.shape)
            if dx.ndim > 1:
                dw = x.reshape(x.shape[0], -1).T @ dout
            else:
                dw = None
            return dx, dw, dout.sum(axis=0)
            # END SOLUTION


    def helper(a):
        """Double a."""
        # BEGIN SOLUTION
        return 2 * a
        # END SOLUTION
''')


def run(text):
    namespace = {}
    exec(compile(text, "<stubbed>", "exec"), namespace)  # noqa: S102 - our own generated test source
    return namespace


class TestStripSolutions:
    def test_regions_become_named_raises(self):
        out = strip_solutions(LAYER, "layer.py")
        assert 'raise NotImplementedError("Linear.forward: implement me")' in out
        assert 'raise NotImplementedError("Linear.backward: implement me")' in out
        assert 'raise NotImplementedError("helper: implement me")' in out
        ns = run(out)
        for call, name in [
            (lambda: ns["Linear"].forward(np.zeros((2, 3)), None, None), "Linear.forward"),
            (lambda: ns["Linear"].backward(None, (1, 2, 3)), "Linear.backward"),
            (lambda: ns["helper"](3), "helper"),
        ]:
            with pytest.raises(NotImplementedError, match=rf"^{name}: implement me$"):
                call()

    def test_code_outside_regions_is_kept_verbatim(self):
        out = strip_solutions(LAYER, "layer.py")
        for kept in ["n = x.shape[0]", "cache = (x, w, b)", "return out, cache", "x, w, b = cache"]:
            assert kept in out
        for gone in ["flat @ w + b", "dout @ w.T", "return 2 * a", "dw = None", "BEGIN SOLUTION", "END SOLUTION"]:
            assert gone not in out

    def test_banner_names_method_summary_and_outputs(self):
        out = strip_solutions(LAYER, "layer.py").splitlines()
        at = out.index('        raise NotImplementedError("Linear.forward: implement me")')
        banner = []
        for line in reversed(out[:at]):
            if not line.startswith("        # "):
                break
            banner.insert(0, line)
        text = " ".join(line.strip("# ").strip() for line in banner)
        assert banner[0] == "        # TODO(Linear.forward): Affine forward pass."
        assert banner[-1] == "        # Replace the raise below with your code."
        # `out` is needed after the region and documented; `flat` is a temporary, not mentioned.
        assert "`out` (ndarray of shape (N, M))" in text
        assert "flat" not in text
        # The region of backward returns: the banner says so instead of listing names.
        assert "Return what the Returns section" in strip_solutions(LAYER, "layer.py")

    def test_banner_for_state_containers_and_split_methods(self):
        text = src('''
            class Net:
                """Two-layer net."""

                def __init__(self):
                    self.params = {}
                    # BEGIN SOLUTION
                    self.params["W1"] = 1.0
                    self.params["b1"] = 0.0
                    # END SOLUTION

                def loss(self, X):
                    """Scores and gradients."""
                    # BEGIN SOLUTION
                    hidden = X * 2
                    scores = hidden + 1
                    # END SOLUTION
                    if X is None:
                        return scores
                    grads = {}
                    # BEGIN SOLUTION
                    loss = scores - hidden
                    grads["W1"] = loss
                    # END SOLUTION
                    return loss, grads
        ''')
        out = strip_solutions(text, "net.py")
        banners = [line.strip() for line in out.splitlines() if line.strip().startswith("# ")]
        # __init__ has no docstring: the class's summary stands in.
        assert banners[0] == "# TODO(Net.__init__): Two-layer net."
        assert "# Set `self.params['W1']`, `self.params['b1']`." in banners
        # `hidden` is read only inside the second region, which the starter does not have.
        assert "# Compute `scores`; the code after this block uses it." in banners
        assert "# Compute `loss`; the code after this block uses it." in banners
        assert "# Fill in `grads`." in banners
        assert not [b for b in banners if "hidden" in b]

    def test_banner_lines_fit_and_keep_indentation(self):
        out = strip_solutions(LAYER, "layer.py")
        for line in out.splitlines():
            if "TODO(" in line or line.lstrip().startswith("# Compute"):
                assert len(line) <= 88
        assert "\n    # TODO(helper): Double a.\n" in out

    def test_no_markers_returns_text_unchanged(self):
        text = "def f(x):\n    return x  # a comment\n"
        assert strip_solutions(text, "f.py") is text

    def test_result_line_count_is_independent_of_region_length(self):
        short = src('''
            def f(x):
                """F."""
                # BEGIN SOLUTION
                y = x
                # END SOLUTION
                return y
        ''')
        long_ = short.replace("        y = x\n", "        y = x\n" * 50)
        assert strip_solutions(short, "a.py") == strip_solutions(long_, "a.py")

    def test_tabs_and_crlf(self):
        text = 'def f(x):\n\t"""F."""\n\t# BEGIN SOLUTION\n\treturn x\n\t# END SOLUTION\n'
        out = strip_solutions(text, "t.py")
        assert '\traise NotImplementedError("f: implement me")\n' in out
        crlf = text.replace("\n", "\r\n")
        assert strip_solutions(crlf, "t.py") == out.replace("\n", "\r\n")

    def test_splice_is_the_inverse(self):
        assert splice_solutions(LAYER, strip_solutions(LAYER, "layer.py"), "layer.py") == LAYER

    def test_regions_report_qualnames_and_lines(self):
        regions = solution_regions(LAYER, "layer.py")
        assert [r.qualname for r in regions] == ["Linear.forward", "Linear.backward", "helper"]
        lines = LAYER.splitlines()
        for r in regions:
            assert lines[r.begin - 1].strip() == "# BEGIN SOLUTION"
            assert lines[r.end - 1].strip() == "# END SOLUTION"

    def test_nested_function_qualname(self):
        text = src('''
            class A:
                def m(self):
                    def inner(z):
                        # BEGIN SOLUTION
                        return z
                        # END SOLUTION
                    return inner
        ''')
        assert 'raise NotImplementedError("A.m.inner: implement me")' in strip_solutions(text, "n.py")


BAD = {
    "unbalanced_begin": ('def f():\n    # BEGIN SOLUTION\n    return 1\n', 2, "without a matching"),
    "unbalanced_end": ('def f():\n    return 1\n    # END SOLUTION\n', 3, "without a matching"),
    "nested": ('def f():\n    # BEGIN SOLUTION\n    x = 1\n    # BEGIN SOLUTION\n    return x\n'
               '    # END SOLUTION\n    # END SOLUTION\n', 4, "nested"),
    "indent_mismatch": ('def f(a):\n    if a:\n        # BEGIN SOLUTION\n        return 1\n'
                        '    # END SOLUTION\n    return 0\n', 5, "indented by 4"),
    "inline_marker": ('def f():\n    x = 1  # BEGIN SOLUTION\n    return x\n', 2, "malformed"),
    "lowercase_marker": ('def f():\n    # begin solution\n    return 1\n    # END SOLUTION\n', 2, "malformed"),
    # The banner quotes the docstring's summary; a summary quoting a marker would leave one in the output.
    "marker_left_in_output": ('def f():\n    """Do not write # END SOLUTION here."""\n    # BEGIN SOLUTION\n'
                              '    return 1\n    # END SOLUTION\n', 3, "left in the output"),
    "outside_function": ('# BEGIN SOLUTION\nX = 1\n# END SOLUTION\n', 1, "outside any function"),
    "body_dedented": ('def f(a):\n    if a:\n        # BEGIN SOLUTION\n        x = 1\n    y = 2\n'
                      '        # END SOLUTION\n    return 0\n', 5, "indented less"),
    # A region that is the whole body of an `if` leaves valid code; one that splits a statement does not.
    "splits_statement": ('def f(a):\n    x = (1 +\n    # BEGIN SOLUTION\n    2)\n    # END SOLUTION\n    return x\n',
                         None, "does not compile"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_markers_raise_marker_error_naming_file_and_line(case):
    text, line, message = BAD[case]
    with pytest.raises(MarkerError, match=message) as info:
        strip_solutions(text, "pkg/bad.py")
    assert isinstance(info.value, ValueError)
    assert info.value.filename == "pkg/bad.py"
    assert str(info.value).startswith(f"pkg/bad.py:{info.value.line}: ")
    if line is not None:
        assert info.value.line == line


def test_ship_package_data():
    base = '[tool.setuptools.package-data]\n"convnet._fast" = ["*.pyx"]\n'
    assert release.ship_package_data(base) == (
        '[tool.setuptools.package-data]\n"grader.checks" = ["*.npz"]\n"convnet._fast" = ["*.pyx"]\n')
    done = release.ship_package_data(base)
    assert release.ship_package_data(done) == done
    assert release.ship_package_data("[project]\nname = 'x'\n").endswith(
        '\n\n[tool.setuptools.package-data]\n"grader.checks" = ["*.npz"]\n')


def test_marker_text_in_strings_is_not_a_marker():
    # A grader that searches for markers mentions them in strings; only comments are markers.
    text = 'def f(s):\n    return s.strip() == "# BEGIN SOLUTION"\n'
    assert strip_solutions(text, "g.py") is text
    both = text + 'def g():\n    """G."""\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n'
    out = strip_solutions(both, "g.py")
    assert 'return s.strip() == "# BEGIN SOLUTION"' in out
    assert 'raise NotImplementedError("g: implement me")' in out


def test_region_as_whole_if_body_compiles():
    text = 'def f(a):\n    if a:\n        # BEGIN SOLUTION\n        return 1\n        # END SOLUTION\n    return 0\n'
    out = strip_solutions(text, "ok.py")
    ast.parse(out)
    ns = run(out)
    assert ns["f"](0) == 0
    with pytest.raises(NotImplementedError, match="^f: implement me$"):
        ns["f"](1)


class TestLeakLines:
    def test_generic_short_and_shared_lines_are_not_scanned(self):
        text = src('''
            def f(x, mode):
                """F."""
                y = x.reshape(x.shape[0], -1)
                # BEGIN SOLUTION
                y = x.reshape(x.shape[0], -1)
                if mode == "train":
                    out = np.maximum(y, 0) * 2.5
                else:
                    out = y

                # a comment that says how
                for i in range(3):
                    pass
                return out
                # END SOLUTION
        ''')
        found = [line for _, line in leak_lines(text, "f.py")]
        # `y = ...` also appears outside the region; else:, blank, comment, `out = y`, return out, pass are generic.
        assert found == ['if mode == "train":', "out = np.maximum(y, 0) * 2.5"]

    def test_line_numbers_point_at_the_source(self):
        lines = LAYER.splitlines()
        for number, stripped in leak_lines(LAYER, "layer.py"):
            assert lines[number - 1].strip() == stripped


# ---------------------------------------------------------------------------
# The release end to end
# ---------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
# Visible test outcomes that are not a stub failing: these must not occur in a fresh release.
STUB_FAILURE = re.compile(r"^(?:NotImplementedError: |not implemented yet: )([\w.]+)")


def quiet(_message):
    pass


def marked_sources():
    """{relpath: text} of every repository .py file with solution regions."""
    found = {}
    for package in manifest.PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if solution_regions(text, str(path)):
                found[path.relative_to(REPO).as_posix()] = text
    return found


@pytest.fixture(scope="module")
def starter(tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "starter"
    info = release.make_release(out, source=REPO, log=quiet)
    return out, info


def release_files(root: Path):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_repository_has_solution_regions():
    sources = marked_sources()
    assert "convnet/layers.py" in sources
    assert sum(len(solution_regions(t, n)) for n, t in sources.items()) >= 17


class TestReleaseContents:
    def test_layout(self, starter):
        out, info = starter
        files = release_files(out)
        assert files == info["files"]
        for name in ["setup.py", "pyproject.toml", "README.md", "convnet/__init__.py", "convnet/layers.py"]:
            assert name in files
        # The fast path is shipped as Cython source, never as build products (less what EXCLUDED keeps back).
        from grader.release.manifest import EXCLUDED

        pyx = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "convnet" / "_fast").glob("*.pyx"))
        pyx = [p for p in pyx if p not in EXCLUDED]
        assert pyx and set(pyx) <= set(files)
        assert not set(EXCLUDED) & set(files)
        assert not [f for f in files if f.endswith((".so", ".c", ".pyc", ".o")) or "__pycache__" in f]
        assert not [f for f in files if f.startswith(("build/", "dist/")) or ".egg-info" in f]

    def test_hidden_checks_generators_and_grader_tests_left_out(self, starter):
        out, _ = starter
        files = release_files(out)
        for excluded in manifest.EXCLUDED:
            assert not [f for f in files if f == excluded or f.startswith(excluded + "/")], excluded
        assert not [f for f in files if f.startswith(("grader/release/", "grader/bundle/"))]
        assert "grader/checks/hidden.py" not in files
        assert not [f for f in files if f.startswith("tests/grader")]
        tests = {f for f in files if f.startswith("tests/")}
        expected = {name for name in manifest.VISIBLE_TESTS if (REPO / name).is_file()}
        assert tests == expected

    def test_unmarked_files_are_copied_verbatim_and_marked_ones_stubbed(self, starter):
        out, info = starter
        sources = marked_sources()
        for rel in info["files"]:
            if rel == "README.md" or not (REPO / rel).is_file():
                continue
            original = (REPO / rel).read_bytes()
            shipped = (out / rel).read_bytes()
            if rel in sources:
                assert shipped.decode() == strip_solutions(sources[rel], rel)
                assert shipped != original
            elif rel == "pyproject.toml":
                # The only change: pip must install the visible checks' expected outputs.
                assert shipped.decode() == release.student_pyproject(original.decode())
                assert "dask" not in shipped.decode()
                assert re.search(r'^"grader\.checks" = \[.*"\*\.npz".*\]$', shipped.decode(), re.M)
            else:
                assert shipped == original, rel
        assert set(info["stubs"]) == set(sources)

    def test_every_region_is_a_named_stub_listed_in_the_readme(self, starter):
        out, info = starter
        readme = (out / "README.md").read_text()
        for rel, text in marked_sources().items():
            shipped = (out / rel).read_text()
            names = [r.qualname for r in solution_regions(text, rel)]
            assert info["stubs"][rel] == names
            for name in names:
                assert shipped.count(f'raise NotImplementedError("{name}: implement me")') == names.count(name)
                assert f"`{name}`" in readme
            assert "BEGIN SOLUTION" not in shipped and "END SOLUTION" not in shipped

    def test_no_solution_text(self, starter):
        # Written independently of release.scan_for_leaks: every scanned solution line, searched in every file.
        out, _ = starter
        needles = {}
        for rel, text in marked_sources().items():
            for number, line in leak_lines(text, rel):
                needles.setdefault(line, f"{rel}:{number}")
        assert len(needles) > 50
        leaks = []
        for rel in release_files(out):
            shipped = {line.strip() for line in (out / rel).read_text(errors="replace").splitlines()}
            allowed = set()
            if rel.split("/")[0] in manifest.PACKAGES and (REPO / rel).is_file():
                # A library file may repeat a solution line it already has outside regions (the fast path).
                own = (REPO / rel).read_text()
                inside = {n for r in solution_regions(own, rel) for n in range(r.begin, r.end + 1)}
                allowed = {line.strip() for n, line in enumerate(own.splitlines(), 1) if n not in inside}
            leaks += [(rel, needles[line], line) for line in shipped & set(needles) if line not in allowed]
        assert leaks == []

    def test_stubbed_files_keep_none_of_their_own_region_lines(self, starter):
        # The tightest form: apart from blanks, comments and lines the file also has outside its regions.
        out, _ = starter
        for rel, text in marked_sources().items():
            regions = solution_regions(text, rel)
            inside = {n for r in regions for n in range(r.begin, r.end + 1)}
            outside = {line.strip() for n, line in enumerate(text.splitlines(), 1) if n not in inside}
            body = {line.strip() for r in regions for line in r.body}
            secret = {line for line in body if line and not line.startswith("#") and line not in outside}
            shipped = {line.strip() for line in (out / rel).read_text().splitlines()}
            assert shipped & secret <= {"else:", "pass", "return", "continue", "break"}, rel


class TestReleaseCommand:
    def test_refuses_a_non_empty_directory(self, tmp_path):
        out = tmp_path / "out"
        out.mkdir()
        (out / "mine.txt").write_text("keep me")
        with pytest.raises(FileExistsError, match="not empty"):
            release.make_release(out, source=REPO, log=quiet)
        assert release.main([str(out), "--source", str(REPO), "-q"]) == 1
        assert release_files(out) == ["mine.txt"]

    def test_force_replaces_release_files_and_keeps_others(self, tmp_path):
        out = tmp_path / "out"
        release.make_release(out, source=REPO, log=quiet)
        (out / "convnet" / "stale.py").write_text("x = 1\n")
        (out / "notes.txt").write_text("mine")
        assert release.main([str(out), "--source", str(REPO), "--force", "-q"]) == 0
        assert not (out / "convnet" / "stale.py").exists()
        assert (out / "notes.txt").read_text() == "mine"
        # No staging directory is left next to OUT.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    def test_a_stale_solution_line_fails_the_release(self, tmp_path):
        out = tmp_path / "out"
        out.mkdir()
        line = leak_lines(marked_sources()["convnet/layers.py"], "convnet/layers.py")[0][1]
        (out / "old_answer.py").write_text(f"    {line}\n")
        with pytest.raises(LeakError, match=r"old_answer\.py:1 repeats convnet/layers\.py:\d+"):
            release.make_release(out, source=REPO, force=True, log=quiet)
        assert release.main([str(out), "--source", str(REPO), "--force", "-q"]) == 1

    def test_python_m_grader_release(self, tmp_path):
        out = tmp_path / "cli"
        run = subprocess.run([sys.executable, "-m", "grader", "release", str(out), "--source", str(REPO)],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "no solution text found" in run.stdout
        assert (out / "convnet" / "layers.py").read_text() == strip_solutions(
            (REPO / "convnet" / "layers.py").read_text(), "convnet/layers.py")
        again = subprocess.run([sys.executable, "-m", "grader", "release", str(out), "--source", str(REPO)],
                               capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert again.returncode == 1 and "not empty" in again.stderr

    def test_release_inside_the_source_tree_is_refused(self):
        with pytest.raises(ValueError, match="outside the source tree"):
            release.make_release(REPO / "out-release", source=REPO, log=quiet)
        assert not (REPO / "out-release").exists()

    def test_bad_markers_stop_the_release_naming_file_and_line(self, tmp_path):
        source = tmp_path / "src"
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.so", "*.c", "__pycache__"))
        bad = source / "convnet" / "layers.py"
        text = bad.read_text()
        at = text.index("# END SOLUTION")
        bad.write_text(text[:at] + "# END SOLUTIONS" + text[at + len("# END SOLUTION"):])
        line = text[:at].count("\n") + 1
        with pytest.raises(MarkerError, match=rf"^convnet/layers\.py:{line}: malformed"):
            release.make_release(tmp_path / "out", source=source, log=quiet)
        assert not (tmp_path / "out").exists() or release_files(tmp_path / "out") == []


def fresh_venv(where: Path) -> Path:
    """A venv that sees this interpreter's site-packages as a plain path, not its .pth files.

    numpy, Cython, setuptools, pip and pytest come from there (an offline stand-in for
    installing them from PyPI); the editable convnet install of this interpreter is a
    .pth hook, which is not processed for a path added this way, so convnet and grader
    are not importable until the release is installed.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "_borrowed_site_packages.pth").write_text("\n".join(borrowed_site_dirs()) + "\n")
    return python


def borrowed_site_dirs() -> list:
    """This interpreter's site-packages directories (where numpy, Cython, pip and pytest are)."""
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    dirs.update(p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages")))
    return sorted(d for d in dirs if Path(d).is_dir())


def clean_env(install_env) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return dict(env, **install_env)


@pytest.mark.slow
def test_release_installs_and_its_visible_tests_fail_only_on_stubs(starter, tmp_path, install_env):
    out, info = starter
    copy = tmp_path / "starter"
    shutil.copytree(out, copy)  # pip builds in the tree; keep the shared release pristine
    python = fresh_venv(tmp_path / "venv")
    env = clean_env(install_env)
    probe = "import convnet, convnet.fast; print(convnet.__file__); print(convnet.fast.HAVE_CYTHON)"
    if not any((Path(d) / "convnet").exists() for d in borrowed_site_dirs()):
        # An editable install is a .pth hook, not processed here: convnet is not importable before pip install.
        before = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                                env=env)
        assert before.returncode != 0 and "No module named 'convnet'" in before.stderr

    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index",
                    "--no-cache-dir", str(copy)], check=True, cwd=tmp_path, env=env, capture_output=True)
    after = subprocess.run([str(python), "-I", "-c", probe], check=True, capture_output=True, text=True,
                           cwd=tmp_path, env=env).stdout.split()
    assert Path(after[0]).is_relative_to(tmp_path / "venv"), after
    assert after[1] == "True"  # the fast path compiled from the shipped .pyx

    # A stub fails on its first example: skip Hypothesis's shrinking and its multi-bug ExceptionGroup.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "stub_profile.py").write_text(
        "from hypothesis import Phase, settings\n"
        "settings.register_profile('stubs', phases=[Phase.explicit, Phase.reuse, Phase.generate],\n"
        "                          report_multiple_bugs=False, database=None, deadline=None)\n"
        "settings.load_profile('stubs')\n"
    )
    junit = tmp_path / "junit.xml"
    run = subprocess.run(
        [str(python), "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "stub_profile", "-m", "not slow",
         "-c", str(copy / "pyproject.toml"), "--rootdir", str(copy), f"--junitxml={junit}", str(copy / "tests")],
        capture_output=True, text=True, cwd=tmp_path, env={**env, "PYTHONPATH": str(plugins)}, timeout=600,
    )
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert int(suite.get("errors")) == 0, run.stdout[-3000:]
    stubs = {name for names in info["stubs"].values() for name in names}
    failed, passed, others = set(), 0, []
    for case in suite.iter("testcase"):
        problems = case.findall("failure") + case.findall("error")
        if not problems and case.find("skipped") is None:
            passed += 1
        for problem in problems:
            m = STUB_FAILURE.match(problem.get("message") or "")
            if m and m.group(1) in stubs:
                failed.add(m.group(1))
            else:
                others.append((case.get("classname"), case.get("name"), (problem.get("message") or "")[:200]))
    assert others == []
    # The stubs are exercised (the visible tests do reach them) and the rest of the package works.
    assert {"Linear.forward", "Conv.forward", "MaxPool.forward"} <= failed
    assert passed > 0

    # The student's own grader (release mode: visible checks, expected values shipped in the release).
    visible = catalogue(visible_only=True)
    stubbed = stubbed_symbols(info)
    results = grade(copy / "convnet", tmp_path, python=python, env=env)
    assert_stubs_score_zero(results, visible, stubbed)
    assert {t["visibility"] for t in results["tests"]} == {"visible"}
    spliced = spliced_copy(out, info, tmp_path / "spliced")
    assert_full_marks(grade(spliced / "convnet", tmp_path, python=python, env=env))


# ---------------------------------------------------------------------------
# Grading the release with the installed (full) grader
# ---------------------------------------------------------------------------


def grade(submission: Path, workdir: Path, *extra, python=sys.executable, env=None) -> dict:
    """Run ``python -m grader SUBMISSION --json`` (the grader's CLI) and return results.json."""
    results = workdir / f"results-{submission.parent.name}-{submission.name}.json"
    run = subprocess.run([str(python), "-m", "grader", str(submission), "--json", str(results), "--quiet", *extra],
                         capture_output=True, text=True, timeout=600, cwd=workdir, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return json.loads(results.read_text())


def stubbed_symbols(info) -> set:
    """{(file name, symbol)} for every stubbed qualname and its enclosing classes: ("layers.py", "Linear")."""
    found = set()
    for rel, names in info["stubs"].items():
        for qualname in names:
            parts = qualname.split(".")
            found.update((rel.rsplit("/", 1)[-1], ".".join(parts[:i])) for i in range(1, len(parts) + 1))
    return found


def check_hits_a_stub(check, stubbed) -> bool:
    return (check.file, check.target) in stubbed


def catalogue(visible_only=False):
    checks = pytest.importorskip("grader.checks", reason="the grader's catalogue (issue 5)")
    return {c.name: c for c in checks.all_checks(visible_only=visible_only)}


def assert_stubs_score_zero(results, checks, stubbed):
    tests = {t["name"]: t for t in results["tests"]}
    assert sorted(tests) == sorted(checks)  # grading completed: every check has a verdict
    assert results["score"] == pytest.approx(sum(t["score"] for t in tests.values()))
    hit = [name for name, check in checks.items() if check_hits_a_stub(check, stubbed)]
    assert len(hit) >= 20
    for name in hit:
        assert tests[name]["score"] == 0, tests[name]
        if "timing" not in checks[name].tags:
            assert "implement me" in tests[name]["output"], tests[name]
    assert results["score"] < sum(t["max_score"] for t in tests.values())


def spliced_copy(starter_dir: Path, info, where: Path) -> Path:
    """The release with the reference's solution regions put back into its stubbed files."""
    shutil.copytree(starter_dir, where)
    for rel in info["stubs"]:
        reference = (REPO / rel).read_text()
        spliced = splice_solutions(reference, (where / rel).read_text(), rel)
        assert spliced == reference  # so grading it grades exactly the reference solution
        (where / rel).write_text(spliced)
    return where


def assert_full_marks(results):
    assert results["tests"]
    total = sum(t["max_score"] for t in results["tests"])
    assert total > 0
    assert [t["name"] for t in results["tests"] if t["score"] != t["max_score"]] == []
    assert results["score"] == pytest.approx(total)


def test_grading_the_fresh_release_scores_zero_on_every_stub_check(starter, tmp_path):
    out, info = starter
    checks = catalogue()
    results = grade(out / "convnet", tmp_path)
    assert_stubs_score_zero(results, checks, stubbed_symbols(info))


def test_splicing_the_solutions_back_scores_full_marks(starter, tmp_path):
    out, info = starter
    catalogue()
    spliced = spliced_copy(out, info, tmp_path / "spliced")
    assert_full_marks(grade(spliced / "convnet", tmp_path))
