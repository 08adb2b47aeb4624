"""Verifiers (read and score candidates' answers) and graders (compare with gold answers)."""

if __name__ != "reasoning.verifiers":  # this folder, on sys.path in a checkout's root: no shadowing
    raise ImportError(f"import reasoning.verifiers, not {__name__} (a folder of the reasoning checkout)")

from reasoning.verifier import ExtractAnswer as AnswerExtractor
from reasoning.verifiers.grading import Grade, grade, grade_answer, grade_async

__all__ = ["AnswerExtractor", "Grade", "grade", "grade_answer", "grade_async"]
