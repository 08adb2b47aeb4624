"""Problems and the prompt that turns one into chat messages."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from reasoning.backend import Message

__all__ = ["DEFAULT_INSTRUCTION", "AnswerKind", "Problem", "Prompt", "default_prompt", "question_sha"]

AnswerKind = Literal["number", "math", "text", "reasoning_gym"]

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
"""Appended to every question by `default_prompt` (the Qwen2.5-Math evaluation prompt)."""


@dataclass(frozen=True)
class Problem:
    """One question, with its gold answer when known.

    The gold (`answer`, and `metadata`, which holds a grader's inputs) is the grader's alone:
    the controller hands strategies, verifiers and the prompt `without_gold` instead.

    Example:
        >>> problem = Problem(id="p1", question="What is 2+2?", answer="4")
        >>> problem.kind, problem.without_gold().answer
        ('number', None)
    """

    id: str
    """Stable identifier (used to resume runs and derive seeds)."""
    question: str
    """The question text shown to the model."""
    answer: str | None = None
    """Gold answer, used only for grading; strategies and verifiers never see it."""
    kind: AnswerKind = "number"
    """How answers are compared: exact number, math-verify, text, or a reasoning-gym scorer."""
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """Dataset-specific extras for grading (reasoning-gym entries keep their scorer inputs, the
    gold among them, here); like `answer`, never shown to strategies and verifiers."""

    def without_gold(self) -> Problem:
        """This problem as strategies, verifiers and prompts see it: no answer, no metadata."""
        return replace(self, answer=None, metadata={})


Prompt = Callable[[Problem], tuple[Message, ...]]
"""Builds the chat messages of a problem."""


def default_prompt(problem: Problem) -> tuple[Message, ...]:
    """One user message: the question followed by `DEFAULT_INSTRUCTION`."""
    return (Message("user", f"{problem.question}\n{DEFAULT_INSTRUCTION}"),)


def question_sha(question: str) -> str:
    """First 16 hex digits of the sha256 of the whitespace-normalised question.

    Artefacts record the questions they were fitted on by it, so evaluation on the same question
    is found whatever id or file it comes under.

    Example:
        >>> question_sha(" What is  2+2? ") == question_sha("What is 2+2?")
        True
    """
    return hashlib.sha256(" ".join(question.split()).encode()).hexdigest()[:16]
