"""The results formats the grader writes: Gradescope's results.json (native) and PrairieLearn's."""
from __future__ import annotations

from grader import report

__all__ = ["FORMATS", "convert", "write_results"]

FORMATS = ("gradescope", "prairielearn")


def convert(results: dict, output_format: str = "gradescope") -> dict:
    """``results`` (Gradescope's format) in ``output_format``; ValueError naming an unknown format."""
    if output_format == "gradescope":
        return results
    if output_format == "prairielearn":
        from grader.prairielearn import to_prairielearn

        return to_prairielearn(results)
    raise ValueError(f"unknown results format {output_format!r}; expected one of {', '.join(FORMATS)}")


def write_results(results: dict, path, output_format: str = "gradescope"):
    """Write ``results`` (Gradescope's format) to ``path`` atomically, converted to ``output_format``."""
    return report.write_json(convert(results, output_format), path)
