"""Grading final answers against gold answers (evaluation only; strategies never grade).

* ``number`` (GSM8K): exact numeric equality after normalisation (``$1,000`` = ``1000.0``).
* ``math`` (MATH-500, AIME): `math-verify`, gold first, with its timeouts off so grading works
  in any thread; a plain string match is tried first.
* ``reasoning_gym``: the task's own scorer, full marks only.
* ``text``: normalised string equality.
"""

from __future__ import annotations

from typing import Any

from reasoning import Problem, normalize_answer
from reasoning.errors import VerifierError

__all__ = ["grade"]


def grade(problem: Problem, answer: str | None) -> bool | None:
    """Whether `answer` matches the problem's gold answer (None when there is no gold).

    Example:
        >>> grade(Problem("p", "2+2?", answer="4"), "4.0")
        True
    """
    if problem.kind == "reasoning_gym":
        return _grade_gym(problem, answer)
    if problem.answer is None:
        return None
    if answer is None:
        return False
    gold, pred = normalize_answer(problem.answer), normalize_answer(answer)
    if gold == pred:
        return True
    if problem.kind == "number":
        return _same_number(gold, pred)
    if problem.kind == "math":
        return _math_verify(problem.answer, answer)
    return False


def _same_number(gold: str, pred: str) -> bool:
    try:
        return abs(float(gold) - float(pred)) <= 1e-6 * max(1.0, abs(float(gold)))
    except ValueError:
        return False


def _math_verify(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=None)
        pred_parsed = parse(f"${pred}$", parsing_timeout=None)
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception as exc:  # math-verify raises assorted sympy errors on odd input
        raise VerifierError(f"math-verify failed on {pred!r} vs {gold!r}: {exc}") from exc


def _grade_gym(problem: Problem, answer: str | None) -> bool:
    import reasoning_gym

    entry: dict[str, Any] = problem.metadata.get("entry", {})
    source = entry.get("metadata", {}).get("source_dataset")
    if not source:
        raise VerifierError(f"problem {problem.id!r} has no reasoning-gym entry to score with")
    try:
        score = reasoning_gym.get_score_answer_fn(source)(answer, entry)
        return float(score) >= 1.0
    except Exception as exc:  # a task's own scorer may raise anything on odd answers
        raise VerifierError(f"reasoning-gym scorer of {source} failed on {answer!r}: {exc}") from exc
