"""Build the Cython kernels under convnet/_fast/.

Each kernel module ``_name.pyx`` is built for the baseline of the platform, and
its variants ``_name_v3.pyx`` / ``_name_v4.pyx`` (which include it) for
x86-64-v3 (AVX2, FMA) and x86-64-v4 (AVX-512) with ``-march``, where the
compiler accepts that flag; ``convnet.fast._backend`` picks one at import from
the CPU's features. A variant the compiler cannot build is left out.

Environment switches
--------------------
CONVNET_BOUNDSCHECK=1  compile with bounds and wraparound checks on (debugging).
CONVNET_NO_OPENMP=1    build without OpenMP; prange then runs serially.
CONVNET_NO_VARIANTS=1  build the baseline kernels only.

The kernels are compiled with -O3 and without debug information (-g0); an -O
or -g flag in CFLAGS replaces that default (CFLAGS="-O1 -g" for a debugging build).
"""
import glob
import os
import platform
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
BUILD_VARIANTS = not flag("CONVNET_NO_VARIANTS")

# Module-name suffix of a kernel variant -> the gcc/clang flag it is built with.
VARIANT_FLAGS = {"_v3": "-march=x86-64-v3", "_v4": "-march=x86-64-v4"}

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
    """Add optimisation and OpenMP flags chosen for the compiler actually used; compile modules in parallel."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        compile_args, link_args = [], []
        if ctype in ("unix", "mingw32"):
            compile_args += _default_flags(os.environ.get("CFLAGS", ""))
        if USE_OPENMP and ctype in OPENMP_FLAGS and self._openmp_works(*OPENMP_FLAGS[ctype]):
            extra_c, extra_l = OPENMP_FLAGS[ctype]
            compile_args += extra_c
            link_args += extra_l
        elif USE_OPENMP:
            print("convnet: the compiler has no OpenMP; prange loops run serially", file=sys.stderr)
        kept = []
        for ext in self.extensions:
            base, variant = _split_variant(ext.name)
            extra = REASSOCIATE_FLAGS if ctype in ("unix", "mingw32") and base in REASSOCIATE else []
            if variant:
                march = VARIANT_FLAGS[variant]
                if not (BUILD_VARIANTS and ctype in ("unix", "mingw32") and self._flag_works(march)):
                    continue  # the baseline module serves this CPU
                extra = extra + [march]
            ext.extra_compile_args = list(ext.extra_compile_args) + compile_args + extra
            ext.extra_link_args = list(ext.extra_link_args) + link_args
            kept.append(ext)
        self.extensions = kept
        super().build_extensions()

    def _flag_works(self, flag):
        # A compiler or target without the -march level: build the baseline only.
        cache = self.__dict__.setdefault("_flag_cache", {})
        if flag not in cache:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                src = os.path.join(tmp, "march_probe.c")
                with open(src, "w") as fh:
                    fh.write("int main(void){return 0;}\n")
                try:
                    self.compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
                    cache[flag] = True
                except Exception:  # noqa: BLE001 - any failure means "not this variant"
                    cache[flag] = False
        return cache[flag]

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


def _default_flags(cflags):
    """-O3, and -g0 (Python's own flags ask for debug information: a quarter of the compile time), each unless
    the user's CFLAGS set an optimisation level or debug information themselves."""
    words = cflags.split()
    flags = [] if any(w.startswith("-O") for w in words) else ["-O3"]
    return flags + ([] if any(w.startswith("-g") for w in words) else ["-g0"])


def _split_variant(name):
    """('convnet._fast._im2col', '_v3') for 'convnet._fast._im2col_v3'; the suffix is '' for a baseline module."""
    for suffix in VARIANT_FLAGS:
        if name.endswith(suffix):
            return name[:-len(suffix)], suffix
    return name, ""


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
    x86_64 = platform.machine().lower() in ("x86_64", "amd64")
    for pyx in sorted(glob.glob(os.path.join(HERE, "convnet", "_fast", "*.pyx"))):
        rel = os.path.relpath(pyx, HERE)
        name = rel[:-4].replace(os.sep, ".")
        if _split_variant(name)[1] and not (BUILD_VARIANTS and x86_64):
            continue
        exts.append(
            Extension(
                name,
                [rel],
                include_dirs=[np.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    return cythonize(exts, compiler_directives=DIRECTIVES, quiet=True, nthreads=os.cpu_count() or 1)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt, "build_py": BuildPy})
