"""The grader's catalogue: what is compared, with which tolerance, for how many points, seen by whom.

:mod:`~grader.checks.base` defines a check; :mod:`~grader.checks.layer`,
:mod:`~grader.checks.model`, :mod:`~grader.checks.optim`,
:mod:`~grader.checks.timing` and :mod:`~grader.checks.environment` the
kinds; :mod:`~grader.checks.visible` and :mod:`~grader.checks.hidden` list
them (the student release leaves the hidden catalogue out);
:mod:`~grader.checks.public` builds and reads the visible checks' expected
outputs that ship with a release.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["all_checks", "release_mode", "visible_checks"]


def release_mode() -> bool:
    """True in a student release: the hidden catalogue (and the reference solution) is absent."""
    # The file's presence decides, so a broken hidden module fails loudly instead of hiding its checks.
    return not (Path(__file__).with_name("hidden.py")).is_file()


def visible_checks() -> list:
    from grader.checks import visible

    return visible.checks()


def all_checks(visible_only: bool = False) -> list:
    """Every check of this installation (the visible ones only in a release or when asked)."""
    checks = visible_checks()
    if not visible_only and not release_mode():
        from grader.checks import hidden

        checks += hidden.checks()
    names = [c.name for c in checks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"check names must be unique: {duplicates}")
    return checks
