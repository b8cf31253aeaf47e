"""The mutation suite: realistic single mistakes graded by the real grader, and honest rewrites that are correct.

Each mutant of ``mutants.py`` is the reference's student files with one
patch, written to a submission directory and graded in the sandbox on a seed
of its own. Asserted: every mutant loses points; every check it loses is a
check of a function it breaks (its ``targets``), a timing check of the same
layer or the end-to-end check; no passed check carries a diagnosis; and for
at least 80 % of the mutants a lost check's diagnosis names the intended
cause. The honest rewrites score full marks, timing included, with no
diagnosis.

To keep the run short a mutant is graded on the checks of its file (plus the
end-to-end check) without timing; the mutants of :data:`FULL` are graded on
the whole catalogue, timing included, which shows that a bug leaves every
other file's checks alone.
"""
from __future__ import annotations

import importlib.util
import sys
import zlib
from pathlib import Path

import pytest

from grader import engine, sandbox

_spec = importlib.util.spec_from_file_location("convnet_grader_mutants", Path(__file__).with_name("mutants.py"))
mutants = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = mutants  # dataclasses look their module up by name
_spec.loader.exec_module(mutants)

MUTANTS = {m.name: m for m in mutants.MUTANTS}
HONEST = {m.name: m for m in mutants.HONEST}
FULL = ("conv_backward_no_crop", "bn_unbiased_variance", "fcn_skips_dropout_backward", "adam_t_after_correction")
RATE = 0.8
FILES = ("layers.py", "models.py", "optim.py")


def _seed(name: str) -> int:
    return zlib.crc32(name.encode()) % 10_000


def _select(mutant, full: bool):
    if full:
        return lambda c: c.target != "environment"  # the grading machine's fast path, not the submission
    return lambda c: c.file == mutant.file or c.target == "end-to-end"


def allowed(mutant) -> set:
    """Targets a mutant may cost: its functions, their layers' timing checks, the end-to-end check."""
    return set(mutant.targets) | {f"{t.split('.')[0]} timing" for t in mutant.targets} | {"end-to-end"}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """``graded(name) -> Graded``, each submission built and graded once per module."""
    cache = {}
    root = tmp_path_factory.mktemp("mutants")
    ref = sandbox.reference_dir()

    def grade(name):
        if name not in cache:
            m = MUTANTS.get(name) or HONEST[name]
            d = root / name
            d.mkdir()
            for f in FILES:
                text = (ref / f).read_text()
                (d / f).write_text(mutants.apply(text, m) if f == m.file else text)
            honest = name in HONEST
            full = name in FULL
            select = _select(m, full)
            if not (honest or full):
                select = (lambda s: lambda c: s(c) and not c.timing)(select)
            cache[name] = engine.grade(sandbox.load_submission(d), jobs=2, secret_seed=_seed(name), select=select)
        return cache[name]

    return grade


def _found(mutant, g) -> bool:
    return any(mutant.diagnosis in cause for v in g.verdicts if not v.passed for cause in v.extra.get("diagnosis", ()))


def test_mutants_are_many_and_distinct():
    assert len(MUTANTS) >= 40 and len(HONEST) >= 3
    ref = sandbox.reference_dir()
    texts = {f: (ref / f).read_text() for f in FILES}
    patched = {}
    for m in [*MUTANTS.values(), *HONEST.values()]:
        assert m.file in FILES
        patched.setdefault(mutants.apply(texts[m.file], m), []).append(m.name)  # asserts each snippet is unique
    assert all(len(names) == 1 for names in patched.values()), [n for n in patched.values() if len(n) > 1]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MUTANTS))
def test_a_mutant_loses_points_only_on_its_own_checks(name, graded):
    m = MUTANTS[name]
    g = graded(name)
    lost = [v for v in g.verdicts if not v.passed]
    assert g.score < g.max_score and lost, f"{name} ({m.story}) scored full marks: a grading gap"
    stray = [(v.name, v.target) for v in lost if v.target not in allowed(m)]
    assert not stray, f"{name} costs checks of other functions: {stray}"
    carried = [v.name for v in g.verdicts if v.passed and v.extra.get("diagnosis")]
    assert not carried, f"passed checks carry a diagnosis: {carried}"


@pytest.mark.slow
def test_the_intended_cause_is_diagnosed_for_most_mutants(graded):
    missed = [n for n, m in MUTANTS.items() if not _found(m, graded(n))]
    rate = 1 - len(missed) / len(MUTANTS)
    print("\n| mutant | score | checks lost | diagnosis |\n|---|---|---|---|")
    for n, m in MUTANTS.items():
        g = graded(n)
        lost = sum(not v.passed for v in g.verdicts)
        print(f"| {n} | {g.score:g}/{g.max_score:g} | {lost} | {'no' if n in missed else 'yes'} |")
    print(f"intended diagnosis found for {len(MUTANTS) - len(missed)}/{len(MUTANTS)} mutants ({rate:.0%}); "
          f"missed: {missed}")
    assert rate >= RATE, f"only {rate:.0%} of the mutants get their intended diagnosis; missed: {missed}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(HONEST))
def test_an_honest_rewrite_scores_full_marks_without_a_diagnosis(name, graded):
    g = graded(name)
    lost = [(v.name, v.message) for v in g.verdicts if not v.passed]
    assert not lost and g.score == g.max_score, f"{name} ({HONEST[name].story}) lost {lost}"
    if HONEST[name].file == "layers.py":
        assert any("timing" in v.target for v in g.verdicts), "the layers' timing checks must be graded"
    assert not [v.name for v in g.verdicts if v.extra.get("diagnosis")]
