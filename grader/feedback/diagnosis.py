"""The likely cause of a wrong answer: known wrong variants, and patterns in the difference."""
from __future__ import annotations

__all__ = ["diagnose"]


def diagnose(check, prep, expected, answers) -> list:
    return []
