"""Pure selection rules over candidates (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["majority_vote"]


def majority_vote(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> int | None:
    """Index of a candidate carrying the most-voted answer, or None when no answer exists.

    Candidates without an answer do not vote. Ties go to the answer that appeared first, and
    the returned index is that answer's first occurrence (deterministic, documented choice).

    Example:
        >>> majority_vote(["3", None, "4", "4", "3"])
        2
    """
    if weights is None:
        weights = [1.0] * len(answers)
    tally: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, (answer, weight) in enumerate(zip(answers, weights, strict=True)):
        if answer is None:
            continue
        tally[answer] = tally.get(answer, 0.0) + weight
        first.setdefault(answer, i)
    if not tally:
        return None
    best = max(tally.values())
    return min(first[a] for a, votes in tally.items() if votes == best)
