"""What goes into a student release, and what never does. Paths are relative to the repository root."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

__all__ = ["TOP_LEVEL_FILES", "PACKAGES", "EXCLUDED", "VISIBLE_TESTS", "repository_root", "is_build_artifact",
           "release_inputs"]

# Top-level files copied as they are.
TOP_LEVEL_FILES = ["setup.py", "pyproject.toml"]

# Package directories copied (recursively) with every .py file stubbed.
PACKAGES = ["convnet", "grader"]

# Files of the grader that never reach students: the hidden checks (secret-seed,
# timing and fast-path checks; the visible catalogue runs without them), the
# feedback's misconception catalogue (its variants are working solutions; the
# release's feedback uses the structural detectors only) and the generators
# themselves. A path names a file or a whole directory.
EXCLUDED = [
    # The fast spatial batch norm holds the batch-norm backward students write (convnet.sandwich falls back).
    "convnet/fast/batchnorm.py",
    "convnet/_fast/_batchnorm.pyx",
    "convnet/_fast/_batchnorm_v3.pyx",
    "convnet/_fast/_batchnorm_v4.pyx",
    # The fused ReLU + max pool: the starter's sandwiches use the student's ReLU.
    "convnet/fast/fused.py",
    "grader/checks/hidden.py",
    "grader/feedback/misconceptions.py",
    "grader/feedback/variants.py",
    "grader/release",
    "grader/bundle",
    "grader/_source",
]

# Tests students can run: they exercise the layers and the public fast path
# and fail only where a stub raises NotImplementedError. Tests of the grader,
# the release and the bundle are left out. A missing file is skipped.
VISIBLE_TESTS = [
    "tests/conftest.py",
    "tests/test_layers.py",
    "tests/test_losses.py",
    "tests/test_checks.py",
    "tests/test_specs.py",
    "tests/test_gradcheck.py",
    "tests/fast/conftest.py",
    "tests/fast/test_caches.py",
    "tests/fast/test_config.py",
    "tests/fast/test_conv.py",
    "tests/fast/test_conv_part.py",
    "tests/fast/test_fuzz.py",
    "tests/fast/test_im2col.py",
    "tests/fast/test_im2row.py",
    "tests/fast/test_parallel.py",
    "tests/fast/test_pool.py",
    "tests/fast/test_results.py",
    "tests/fast/test_winograd.py",
    "tests/fast/test_workspace.py",
    "tests/test_stride.py",
    "tests/test_sandwich.py",
    "tests/test_models.py",
    "tests/test_optim.py",
    "tests/test_solver.py",
    "tests/test_selfcheck.py",
    "tests/test_data.py",
    "tests/test_train.py",
]

# Never copied, wherever they appear: build products and caches (.c is Cython's output here).
SKIP_DIRS = {"__pycache__", "build", "dist", ".pytest_cache", ".hypothesis", ".git"}
SKIP_SUFFIXES = (".so", ".pyd", ".c", ".cpp", ".html", ".o", ".pyc", ".pyo", ".egg-info")

def repository_root() -> Path:
    """The source tree to release or bundle: the checkout this module is in, or, for an installed
    package, a temporary tree assembled from the installed packages and the build files the wheel
    carries in ``grader/_source`` (setup.py, pyproject.toml, README.md, tests/)."""
    here = Path(__file__).resolve().parents[2]
    if (here / "setup.py").is_file() and (here / "convnet").is_dir():
        return here
    packaged = Path(__file__).resolve().parents[1] / "_source"
    if not packaged.is_dir():
        raise FileNotFoundError("no source tree found (neither a checkout nor the installed build files); "
                                "pass --source")
    return _materialized(here, packaged)


@functools.lru_cache(maxsize=None)
def _materialized(site: Path, packaged: Path) -> Path:
    tree = Path(tempfile.mkdtemp(prefix="convnet-source-"))
    atexit.register(shutil.rmtree, tree, True)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "_source")
    for package in PACKAGES:
        shutil.copytree(site / package, tree / package, ignore=ignore)
    shutil.copytree(packaged, tree, dirs_exist_ok=True)
    return tree


def _excluded(rel: str) -> bool:
    return any(rel == item or rel.startswith(item.rstrip("/") + "/") for item in EXCLUDED)


def is_build_artifact(path: Path) -> bool:
    """True for caches, build outputs and compiled files: never shipped in a release or a bundle."""
    return any(part in SKIP_DIRS or part.endswith(".egg-info") for part in path.parts) or path.name.endswith(
        SKIP_SUFFIXES
    )


def release_inputs(source: Path) -> list:
    """Relative paths (posix) of every source file that reaches the release, in a stable order."""
    files = [name for name in TOP_LEVEL_FILES if (source / name).is_file()]
    for package in PACKAGES:
        root = source / package
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(source)
            if path.is_file() and not is_build_artifact(rel) and not _excluded(rel.as_posix()):
                files.append(rel.as_posix())
    for name in VISIBLE_TESTS:
        path = source / name
        if path.is_dir():
            files += sorted(p.relative_to(source).as_posix() for p in path.rglob("*")
                            if p.is_file() and not is_build_artifact(p.relative_to(source)))
        elif path.is_file():
            files.append(name)
    return files


