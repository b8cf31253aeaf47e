"""Build the Cython kernels under convnet/_fast/.

Environment switches
--------------------
CONVNET_BOUNDSCHECK=1  compile with bounds and wraparound checks on (debugging).
CONVNET_NO_OPENMP=1    build without OpenMP; prange then runs serially.
"""
import glob
import os
import runpy
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
# The package's own parser of CONVNET_* switches, loaded by path: convnet is not importable while it builds.
flag = runpy.run_path(os.path.join(HERE, "convnet", "fast", "_env.py"))["flag"]

DEBUG_CHECKS = flag("CONVNET_BOUNDSCHECK")
USE_OPENMP = not flag("CONVNET_NO_OPENMP")

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG_CHECKS,
    "wraparound": DEBUG_CHECKS,
    "initializedcheck": DEBUG_CHECKS,
    "cdivision": True,
    "nonecheck": False,
}

# Kernels made of sums (reductions) that gcc and clang vectorise only when allowed to reorder them.
REASSOCIATE = {"convnet._fast._batchnorm"}
REASSOCIATE_FLAGS = ["-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]

OPENMP_FLAGS = {
    "unix": (["-fopenmp"], ["-fopenmp"]),
    "mingw32": (["-fopenmp"], ["-fopenmp"]),
    "msvc": (["/openmp"], []),
}


class BuildExt(build_ext):
    """Add optimisation and OpenMP flags chosen for the compiler actually used."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        compile_args, link_args = [], []
        if ctype in ("unix", "mingw32"):
            compile_args += ["-O3"]
        if USE_OPENMP and ctype in OPENMP_FLAGS and self._openmp_works(*OPENMP_FLAGS[ctype]):
            extra_c, extra_l = OPENMP_FLAGS[ctype]
            compile_args += extra_c
            link_args += extra_l
        elif USE_OPENMP:
            print("convnet: the compiler has no OpenMP; prange loops run serially", file=sys.stderr)
        for ext in self.extensions:
            extra = REASSOCIATE_FLAGS if ctype in ("unix", "mingw32") and ext.name in REASSOCIATE else []
            ext.extra_compile_args = list(ext.extra_compile_args) + compile_args + extra
            ext.extra_link_args = list(ext.extra_link_args) + link_args
        super().build_extensions()

    def _openmp_works(self, cflags, lflags):
        # Apple clang has no -fopenmp: probe once instead of failing the whole build.
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "omp_probe.c")
            with open(src, "w") as fh:
                fh.write("#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
            try:
                objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                self.compiler.link_executable(objs, "omp_probe", output_dir=tmp, extra_postargs=lflags)
            except Exception:  # noqa: BLE001 - any probe failure means "no OpenMP", not a broken build
                return False
        return True


class BuildPy(build_py):
    """Also carry the build files and tests in the wheel (grader/_source), so an installed grader can
    write a student release or a Gradescope bundle as a checkout does."""

    def run(self):
        super().run()
        import shutil

        here = os.path.dirname(os.path.abspath(__file__))
        dest = os.path.join(self.build_lib, "grader", "_source")
        os.makedirs(dest, exist_ok=True)
        for name in ("setup.py", "pyproject.toml", "README.md"):
            if os.path.isfile(os.path.join(here, name)):
                shutil.copy2(os.path.join(here, name), dest)
        if os.path.isdir(os.path.join(here, "tests")):
            shutil.copytree(os.path.join(here, "tests"), os.path.join(dest, "tests"), dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache"))


def extensions():
    exts = []
    for pyx in sorted(glob.glob(os.path.join(HERE, "convnet", "_fast", "*.pyx"))):
        rel = os.path.relpath(pyx, HERE)
        name = rel[:-4].replace(os.sep, ".")
        exts.append(
            Extension(
                name,
                [rel],
                include_dirs=[np.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    return cythonize(exts, compiler_directives=DIRECTIVES, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt, "build_py": BuildPy})
