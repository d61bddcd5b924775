"""What report.md says about human reviews (`evalrun view`): how many cells a human scored, how
many of those the human scored differently, and where the judge's human grades came from."""

from __future__ import annotations

from collections.abc import Sequence

from evalrun.results.tally import VariantTally

__all__ = ["human_review_lines"]


def human_review_lines(tallies: Sequence[VariantTally]) -> list[str]:
    """Markdown list items (none when no cell was reviewed and no human grade was read)."""
    reviewed = sum(t.reviewed for t in tallies)
    lines = []
    if reviewed:
        overridden = sum(t.overridden for t in tallies)
        lines.append(
            f"- human review: {reviewed:,} cells scored by a reviewer's verdict or grade instead of the scorer "
            f"({overridden:,} of them differ from the automatic score, which results.csv keeps as correct_auto; "
            "score_source says which one counts); accuracy and comparisons use the human scores"
        )
    column = sum(t.agreement_sources["column"] for t in tallies)
    review = sum(t.agreement_sources["review"] for t in tallies)
    if review:
        lines.append(
            f"- the grader's agreement with humans rests on {column + review:,} human grades: {review:,} from "
            f"reviews in the viewer and {column:,} from the dataset's human-grade column"
        )
    return lines
