"""What a check is: its declaration, what it asks a child to run, and how its answers are judged.

A :class:`Check` is a keyword-only dataclass: ``name``, the student ``file``
and the ``target`` function it grades (a bug in a function costs the checks
whose target it is), ``points``, ``visibility``, and which files its child
gets (:attr:`Check.files`). Subclasses implement three methods, all run in
the trusted parent: :meth:`Check.prepare` (tasks and inputs for the child),
:meth:`Check.expected` (the reference's answers) and :meth:`Check.judge`
(the comparison). The child only computes.

Inputs: in the instructor's grader every check draws its inputs from the
run's secret seed; in a student release, where the reference is absent, the
visible checks draw them from a seed derived from their name (the public
inputs) and read the expected values that ship with the release.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from grader.compare import Comparison

__all__ = ["Check", "Prepared", "Judgement", "Answers", "seed_of"]


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode())


@dataclass
class Prepared:
    """A check's share of a child: tasks, input arrays, the answers it expects, and parent-side state.

    ``expect`` maps each task id to ``{answer name: (shape, dtype)}``; the parent refuses any
    answer larger than that and checks each against it.
    """

    tasks: list
    inputs: dict
    expect: dict
    state: dict = field(default_factory=dict)


@dataclass
class Judgement:
    """A check's verdict before scoring: the comparisons made, the problems found, notes for the student."""

    ok: bool
    summary: str
    comparisons: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def failing(self) -> list:
        return [c for c in self.comparisons if isinstance(c, Comparison) and not c.ok]


class Answers:
    """The validated answers and reported errors of one check's tasks (local names, prefix removed)."""

    def __init__(self, run, prep: Prepared, prefix: str):
        self.values, self.problems, self.errors, self.raw = {}, {}, {}, {}
        for tid, names in prep.expect.items():
            local = tid[len(prefix):]
            if tid in run.errors:
                self.errors[local] = run.errors[tid]
            for name in names:
                answer = run.answers.get((tid, name))
                key = f"{local}.{name}"
                if answer is not None and answer.problem is None:
                    self.values[key] = answer.value
                else:
                    if answer is not None and answer.value is not None:
                        self.raw[key] = answer.value
                    self.problems[key] = (answer.problem if answer is not None
                                          else run.explain(tid, name))

    def get(self, task: str, name: str):
        return self.values.get(f"{task}.{name}")

    def problem(self, task: str, name: str):
        return self.problems.get(f"{task}.{name}")

    def error(self, task: str):
        return self.errors.get(task)


@dataclass(kw_only=True)
class Check:
    """A graded check (abstract).

    Parameters
    ----------
    name : str
        Unique, shown to students.
    file : str
        The student file graded ("layers.py").
    target : str
        The function graded ("Conv.backward"); a bug in it costs exactly the checks with this target.
    points : float
    visibility : str
        "visible" (students can run it locally) or "hidden" (only the autograder has it).
    files : str
        What the child gets for the student files: "student" (the submission's), "served" (the
        submission's, with ``layers.py`` served by the grader's reference) or "reference" (trusted).
    fast : bool
        Whether ``convnet.fast`` and the compiled kernels are in the child.
    group : str
        Checks of one group share a child; default the target's class or module.
    timing : bool
        Timing-sensitive: runs alone after the others (:meth:`run_serial`).
    serve : tuple
        Layers the grader serves from the reference inside a "student" child (replacing the
        student's own), because the graded function calls them.
    tags : tuple
    """

    name: str
    file: str
    target: str
    points: float
    visibility: str = "visible"
    files: str = "student"
    fast: bool = False
    group: str = ""
    timing: bool = False
    serve: tuple = ()
    tags: tuple = ()

    def __post_init__(self):
        if self.visibility not in ("visible", "hidden"):
            raise ValueError(f"{self.name}: visibility must be 'visible' or 'hidden', got {self.visibility!r}")
        if self.files not in ("student", "served", "reference"):
            raise ValueError(f"{self.name}: files must be 'student', 'served' or 'reference', got {self.files!r}")
        if not self.group:
            self.group = self.target.split(".")[0]
        self.tags = tuple(self.tags) or (self.file.removesuffix(".py"),)

    def rng(self, secret_seed: int, public: bool) -> np.random.Generator:
        """The inputs' generator: the public one (seeded by the name) or the run's secret one."""
        if public:
            return np.random.default_rng(seed_of(self.name))
        return np.random.default_rng([secret_seed, seed_of(self.name)])

    def prepare(self, rng, prefix: str) -> Prepared:  # pragma: no cover - abstract
        raise NotImplementedError

    def expected(self, prep: Prepared) -> dict:
        """The reference's answers (arrays by name), computed in the parent; {} when none are needed."""
        return {}

    def judge(self, answers: Answers, prep: Prepared, expected: dict) -> Judgement:  # pragma: no cover
        raise NotImplementedError

    def describe(self, prep: Prepared) -> str:
        """The call this check made, in words (shapes and parameters), for the feedback."""
        return f"{self.target}"

    def snippet(self, prep: Prepared, expected: dict) -> list:
        """Lines of runnable code reproducing this check's public inputs, call and expected values."""
        return [f"# {self.describe(prep)}", "# (no runnable example for this check)"]
