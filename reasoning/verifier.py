"""The Verifier seam: what reads a candidate's answer and scores it, and what scores steps.

A `Verifier` turns candidate texts into `Verdict`s (an answer and a score) and never sees the
gold answer; `ExtractAnswer` is the fallback every run has. A `ProcessScorer` scores partial
solutions step by step (a PRM, the model as judge, a value probe); the implementations live in
`reasoning.verifiers`, grading against gold in `reasoning.verifiers.grading`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from reasoning.answers import extract_answer, normalize_answer
from reasoning.problem import Problem

if TYPE_CHECKING:
    from reasoning.strategy import Context

__all__ = ["ExtractAnswer", "ProcessScorer", "Verdict", "Verifier"]


@dataclass(frozen=True)
class Verdict:
    """What a verifier says about one candidate text."""

    answer: str | None
    """Normalised final answer, None when the text has none (it then never wins a vote)."""
    score: float = 0.0
    """Quality score, higher is better."""


class Verifier(Protocol):
    """Reads candidates' answers and scores them; never sees the gold answer."""

    async def __call__(self, problem: Problem, texts: Sequence[str]) -> list[Verdict]:
        """Return one verdict per text, in order."""
        ...


class ExtractAnswer:
    """The fallback verifier: extract and normalise the final answer, score 1 if present."""

    async def __call__(self, problem: Problem, texts: Sequence[str]) -> list[Verdict]:
        """Extract each text's answer."""
        out = []
        for text in texts:
            answer = extract_answer(text)
            key = normalize_answer(answer) if answer else None
            out.append(Verdict(answer=key, score=1.0 if key else 0.0))
        return out


@runtime_checkable
class ProcessScorer(Protocol):
    """Scores partial solutions step by step (a PRM, the model as judge, a value probe)."""

    async def score(self, ctx: Context, paths: Sequence[Sequence[str]]) -> list[float]:
        """Score in [0, 1] of each path's newest step, given the problem and its earlier steps.

        All paths are scored in one concurrent batch; one score per path, in order.
        """
        ...
