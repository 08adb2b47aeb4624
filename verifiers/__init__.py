"""Verifiers (read and score candidates' answers) and graders (compare with gold answers)."""

from reasoning.strategy import ExtractAnswer as AnswerExtractor
from reasoning.verifiers.grading import grade

__all__ = ["AnswerExtractor", "grade"]
