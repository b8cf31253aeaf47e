"""A check's result as the report shows it."""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Verdict"]


@dataclass
class Verdict:
    """One check's score and what the student reads about it.

    ``message`` is one line (the table); ``output`` the full feedback (results.json); ``extra`` plain
    JSON values (``diagnosis`` among them when a likely cause was found).
    """

    name: str
    max_score: float
    score: float
    message: str
    output: str = ""
    visibility: str = "visible"
    tags: tuple = ()
    extra: dict = field(default_factory=dict)
    seconds: float = 0.0
    target: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.extra.get("passed", self.score >= self.max_score))
