"""Self-Refine on the scripted backend: the exact conversation, the stop rule and the answer."""

import pytest

from reasoning import (
    STRATEGIES,
    Budget,
    ConfigError,
    Controller,
    Message,
    Problem,
    Request,
    ScriptedBackend,
    default_prompt,
)
from reasoning.strategies import SelfRefine
from reasoning.strategies.self_refine import FEEDBACK_PROMPT, REFINE_PROMPT, verdict_of

PROBLEM = Problem("p", "2+2?", answer="4")
PROMPT = default_prompt(PROBLEM.without_gold())
REVIEW = FEEDBACK_PROMPT.replace("{verdict}", "VERDICT:")


def scripted(solutions: list[str], reviews: list[str]) -> ScriptedBackend:
    """Solutions and reviews, each in turn (a review answers the review request)."""
    said = {"solution": 0, "review": 0}

    def reply(request: Request, _: int) -> str:
        kind = "review" if request.messages[-1].content.startswith("Review your solution") else "solution"
        texts = reviews if kind == "review" else solutions
        said[kind] += 1
        return texts[said[kind] - 1]

    return ScriptedBackend(reply)


async def test_stops_at_the_first_correct_verdict_with_a_growing_conversation() -> None:
    backend = scripted(
        ["x \\boxed{5}", "y \\boxed{4}"], ["2+2 is not 5.\nVERDICT: INCORRECT", "VERDICT: CORRECT"]
    )
    run = await Controller(backend).run(PROBLEM, SelfRefine(rounds=3))

    review1 = (*PROMPT, Message("assistant", "x \\boxed{5}"), Message("user", REVIEW))
    refine1 = (
        *review1,
        Message("assistant", "2+2 is not 5.\nVERDICT: INCORRECT"),
        Message("user", REFINE_PROMPT),
    )
    review2 = (*refine1, Message("assistant", "y \\boxed{4}"), Message("user", REVIEW))
    assert [r.messages for r in backend.requests] == [PROMPT, review1, refine1, review2]
    assert [r.sampling.max_tokens for r in backend.requests] == [512, 256, 512, 256]
    assert [c.answer for c in run.candidates] == ["5", None, "4", None]
    assert [c.scores for c in run.candidates] == [
        {"round": 0.0, "verdict": 0.0},
        {"round": 1.0, "feedback": 1.0, "verdict": 0.0},
        {"round": 1.0, "verdict": 1.0},
        {"round": 2.0, "feedback": 1.0, "verdict": 1.0},
    ]
    assert run.answer == "4" and run.chosen == 2


async def test_without_a_correct_verdict_it_stops_after_rounds_with_the_last_solution() -> None:
    backend = scripted(["\\boxed{4}", "\\boxed{5}", "\\boxed{6}"], ["VERDICT: INCORRECT"] * 2)
    run = await Controller(backend).run(PROBLEM, SelfRefine(rounds=2, history=False))

    assert len(backend.requests) == 1 + 2 * 2
    review2 = (*PROMPT, Message("assistant", "\\boxed{5}"), Message("user", REVIEW))
    assert backend.requests[3].messages == review2  # without history: the problem and the latest solution
    assert backend.requests[4].messages == (
        *review2,
        Message("assistant", "VERDICT: INCORRECT"),
        Message("user", REFINE_PROMPT),
    )
    assert run.answer == "6" and run.chosen == 4  # the last solution, though the first was right
    assert run.candidates[-1].scores == {"round": 2.0}  # never reviewed


async def test_a_review_cut_before_its_verdict_counts_as_incorrect() -> None:
    backend = scripted(["\\boxed{4}", "again \\boxed{4}"], ["it is fine VERDICT: CORRECT"])
    run = await Controller(backend).run(PROBLEM, SelfRefine(rounds=1, feedback_tokens=3))
    assert backend.requests[1].sampling.max_tokens == 3
    assert run.candidates[1].text == "it is fine " and run.candidates[1].scores["verdict"] == 0.0
    assert len(backend.requests) == 3 and run.chosen == 2


async def test_a_custom_marker_is_asked_for_and_read() -> None:
    backend = scripted(["\\boxed{4}"], ["Looks right. CHECK: correct"])
    strategy = STRATEGIES.create("self_refine", {"verdict": "CHECK:", "rounds": 2})
    run = await Controller(backend).run(PROBLEM, strategy)
    assert backend.requests[1].messages[-1].content == FEEDBACK_PROMPT.replace("{verdict}", "CHECK:")
    assert len(backend.requests) == 2 and run.answer == "4"


@pytest.mark.parametrize(
    ("text", "correct"),
    [
        ("VERDICT: CORRECT", True),
        ("VERDICT: INCORRECT", False),
        ("**Verdict:** correct.", True),
        ("VERDICT: CORRECT? no, wait.\nVERDICT: INCORRECT", False),
        ("The solution is correct.", False),
        ("VERDICT:", False),
    ],
)
def test_the_verdict_is_the_word_after_the_last_marker(text: str, correct: bool) -> None:
    assert verdict_of(text) is correct


@pytest.mark.parametrize(
    "params",
    [
        {"rounds": 0},
        {"feedback_tokens": 0},
        {"verdict": " "},
        {"feedback_prompt": "Review it."},
        {"max_tokens": 0},
    ],
)
def test_bad_parameters_are_config_errors(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        STRATEGIES.create("self-refine", params)


async def test_a_budget_stop_answers_the_latest_solution_not_a_review() -> None:
    reviews = ["\\boxed{7} VERDICT: INCORRECT"] * 2
    backend = scripted(["\\boxed{5}", "\\boxed{6}", "\\boxed{4}"], reviews)
    run = await Controller(backend, budget=Budget(calls=4)).run(PROBLEM, SelfRefine(rounds=3))
    assert run.stop_reason == "budget:calls" and len(backend.requests) == 4
    assert run.answer == "6" and run.chosen == 2
