import pytest

from reasoning import Problem, extract_answer, majority_vote, normalize_answer
from reasoning.verifiers import grade


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the total is \\boxed{18}.", "18"),
        ("\\boxed{\\frac{1}{2}} and later \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
        ("nested \\boxed{\\sqrt{\\frac{1}{2}}}", "\\sqrt{\\frac{1}{2}}"),
        ("work\n#### 42", "42"),
        ("The answer is 7.", "7"),
        ("first 3 then 5 apples", "5"),
        ("no digits here", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("$1,000.00", "1000"),
        ("18", "18"),
        ("\\$18", "18"),
        ("3.50", "3.5"),
        ("x = 5", "5"),
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ],
)
def test_normalize_answer(raw: str, key: str) -> None:
    assert normalize_answer(raw) == key


def test_majority_vote_ties_and_missing() -> None:
    assert majority_vote([None, None]) is None
    assert majority_vote(["3", "4", "4", "3"]) == 0
    assert majority_vote(["3", "4", "4"]) == 1
    assert majority_vote(["3", "4"], weights=[0.1, 0.9]) == 1


def test_grade_numeric_and_math() -> None:
    assert grade(Problem("a", "q", answer="18"), "18.0") is True
    assert grade(Problem("a", "q", answer="18"), "17") is False
    assert grade(Problem("a", "q", answer="18"), None) is False
    assert grade(Problem("a", "q"), "18") is None
    assert grade(Problem("b", "q", answer="\\frac{1}{2}", kind="math"), "0.5") is True
    assert grade(Problem("b", "q", answer="(3, \\frac{\\pi}{2})", kind="math"), "(3,\\frac{\\pi}{2})") is True
    assert grade(Problem("b", "q", answer="\\frac{1}{2}", kind="math"), "\\frac{1}{3}") is False


def test_an_empty_last_box_is_skipped_and_an_unclosed_one_is_no_answer() -> None:
    from reasoning.answers import extract_boxed

    # A prompt's "put it in \boxed{}" echoed after the answer does not hide it.
    assert extract_answer("The answer is \\boxed{7}. Then \\boxed{}.") == "7"
    assert extract_boxed("\\boxed{} and \\boxed{ }") is None
    assert extract_boxed("\\boxed{1} then \\boxed{2") is None  # cut while writing a new one
