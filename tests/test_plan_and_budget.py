"""Plan-and-Budget on the scripted backend: plan parsing, exact budget splits, the requests sent."""

from __future__ import annotations

import pytest

from reasoning import (
    STRATEGIES,
    Budget,
    ConfigError,
    Controller,
    Message,
    Problem,
    Request,
    Run,
    ScriptedBackend,
    default_prompt,
)
from reasoning.strategies import PlanAndBudget
from reasoning.strategies.plan_and_budget import PLAN_PROMPT, parse_plan, split_budget

PROBLEM = Problem("p", "Tom has 3 apples and buys 4 more. How many?", answer="7")
PROMPT = default_prompt(PROBLEM.without_gold())
PLAN = "Sub-questions:\n1. How many at first? (complexity: 3)\n2. How many bought? (complexity: 1)\n"
PLAN += "3. What is the total? (complexity: 2)\n"


def backend(
    plan: str = PLAN, steps: tuple[str, ...] = ("a1 a1", "b1", "c1 c1 c1"), final: str = "7}"
) -> ScriptedBackend:
    """Replies by request: the plan, the k-th step's answer, the final answer."""

    def reply(request: Request, _: int) -> str:
        if request.messages[0].content.startswith("Break the following"):
            return plan
        if request.prefix.endswith("\\boxed{"):
            return final
        return steps[request.prefix.count("Step ") - 1] if request.prefix else steps[0]

    return ScriptedBackend(reply)


async def solve(model: ScriptedBackend, limits: Budget | None = None, **params: object) -> Run:
    strategy = STRATEGIES.create("plan-and-budget", {k: str(v) for k, v in params.items()})
    return await Controller(model, budget=limits or Budget()).run(PROBLEM, strategy)


# the budget split


@pytest.mark.parametrize(
    ("schedule", "floor", "expected"),
    [
        ("uniform", 16, [33, 33, 33]),  # (100 - 48) // 3 each, the remainder left unused, as the code
        ("weighted", 16, [43, 24, 33]),  # 52 * 3/6, 1/6, 2/6 = 26, 8.67, 17.33; the 1 left to the heaviest
        ("weighted", 0, [51, 16, 33]),
        ("linear", 16, [52, 24, 24]),  # weights 3*3, 1*2, 2*1
        ("polynomial", 16, [59, 22, 19]),  # 3*9, 1*4, 2*1: 42.5, 6.3, 3.2
        ("polynomial", 0, [82, 12, 6]),
        ("cosine", 16, [58, 24, 18]),  # decays 1.1, 0.6, 0.1: 41.9, 7.6, 2.5, two left over
        ("exponential", 16, [45, 24, 31]),  # decays 1, 0.9, 0.81
    ],
)
def test_schedules_give_the_exact_integer_splits(schedule: str, floor: int, expected: list[int]) -> None:
    split = split_budget([3, 1, 2], 100, schedule, floor)  # type: ignore[arg-type]
    assert split == expected
    assert sum(split) <= 100 and min(split) >= floor


def test_weighted_follows_the_complexities_and_decays_favour_early_sub_questions() -> None:
    assert split_budget([1, 2, 3, 4], 100, "weighted") == [10, 20, 30, 40]
    assert split_budget([2, 2, 2, 2], 100, "weighted") == [25, 25, 25, 25]
    linear = split_budget([2, 2, 2, 2], 100, "linear")
    assert linear == [40, 30, 20, 10]
    assert split_budget([2, 2, 2, 2], 100, "polynomial", power=1.0) == linear
    assert split_budget([5], 100, "cosine", 16) == [100]
    with pytest.raises(ConfigError, match="cannot give 3 sub-questions 40 tokens"):
        split_budget([1, 1, 1], 100, "weighted", 40)


# the plan


def test_a_good_plan_is_parsed() -> None:
    assert parse_plan(PLAN) == [
        ("How many at first?", 3.0),
        ("How many bought?", 1.0),
        ("What is the total?", 2.0),
    ]


def test_a_messy_plan_is_parsed() -> None:
    messy = (
        "Sure! Here is the plan.\n"
        "**1.** Find the speed. (Complexity 4/5)\n"
        "   Hint: distance over time\n"
        "2) Convert to km/h [difficulty=7]\n"
        "- Step 3: Compare them\n"
        "  complexity: 1.5\n"
        "4. (complexity: 2)\n"  # no question: dropped
        "5. Done\n"
    )
    assert parse_plan(messy) == [
        ("Find the speed.", 4.0),
        ("Convert to km/h", 5.0),  # clamped to 1-5
        ("Compare them", 1.5),  # a score on its own line belongs to the sub-question above
        ("Done", 3.0),  # none given: the middle of the scale
    ]
    assert len(parse_plan("\n".join(f"{i}. q{i}" for i in range(1, 9)), limit=5)) == 5


@pytest.mark.parametrize("plan", ["", "I cannot split this.", "Hint: add them"])
def test_an_empty_plan_parses_to_nothing(plan: str) -> None:
    assert parse_plan(plan) == []


# the requests


async def test_each_sub_question_gets_its_budget_and_continues_the_text() -> None:
    model = backend()
    run = await solve(model, budget=100, min_tokens=16, max_subquestions=3)
    plan, *steps, final = model.requests
    assert plan.messages == (Message("user", PLAN_PROMPT.format(question=PROBLEM.question)),)
    assert (plan.prefix, plan.sampling.max_tokens, plan.sampling.temperature, plan.sampling.top_p) == (
        "",
        128,
        0.1,
        0.9,
    )
    assert [s.sampling.max_tokens for s in steps] == [59, 22, 19]  # polynomial, complexities 3, 1, 2
    assert all(s.messages == PROMPT and s.sampling.stop == ("\nStep ",) for s in steps)
    one = "Step 1 (at most 59 tokens): How many at first?\nAnswer: "
    two = f"{one}a1 a1\n\nStep 2 (at most 22 tokens): How many bought?\nAnswer: "
    three = f"{two}b1\n\nStep 3 (at most 19 tokens): What is the total?\nAnswer: "
    assert [s.prefix for s in steps] == [one, two, three]
    texts = ["a1 a1", "b1", "c1 c1 c1"]
    for request, after, text in zip([*steps, final], [*steps[1:], final], texts, strict=False):
        assert after.prefix.startswith(request.prefix + text)  # byte-identical growth
    assert final.prefix == steps[-1].prefix + "c1 c1 c1\n\nFinal Answer: \\boxed{"
    assert (final.messages, final.sampling.temperature, final.sampling.max_tokens) == (PROMPT, 0.0, 24)
    [candidate] = run.candidates
    assert candidate.text == final.prefix + "7}" and run.answer == "7"
    assert candidate.output_tokens == len(PLAN.split()) + 2 + 1 + 3 + 1
    assert candidate.finish_reason == "stop"
    assert candidate.scores == {
        "subquestions": 3.0,
        "plan_parsed": 1.0,
        "plan_tokens": float(len(PLAN.split())),
        "complexity_1": 3.0,
        "budget_1": 59.0,
        "complexity_2": 1.0,
        "budget_2": 22.0,
        "complexity_3": 2.0,
        "budget_3": 19.0,
        "used_1": 2.0,
        "used_2": 1.0,
        "used_3": 3.0,
        "capped": 0.0,
        "forced_answer": 1.0,
    }


async def test_a_sub_answer_is_cut_at_its_budget_and_a_stray_next_step_at_its_header() -> None:
    long = " ".join(["w"] * 40)
    model = backend(steps=(long, "b1\nStep 3: I go on", "c1"))
    run = await solve(model, budget=80, schedule="uniform", min_tokens=16, max_subquestions=3)
    steps = model.requests[1:4]
    assert [s.sampling.max_tokens for s in steps] == [26, 26, 26]
    assert steps[1].prefix.endswith(
        ": How many at first?\nAnswer: "
        + " ".join(["w"] * 26)
        + " \n\nStep 2 (at most 26 tokens): How many bought?\nAnswer: "
    )
    assert steps[2].prefix.endswith(
        "How many bought?\nAnswer: b1\n\nStep 3 (at most 26 tokens): What is the total?\nAnswer: "
    )
    scores = run.candidates[0].scores
    assert (scores["used_1"], scores["used_2"], scores["capped"]) == (26.0, 1.0, 1.0)


async def test_an_unparsed_plan_falls_back_to_the_question_with_the_whole_budget() -> None:
    model = backend(plan="Let me think about it.", steps=("so 3 + 4 = 7",))
    run = await solve(model, budget=90)
    _, step, _ = model.requests
    assert step.prefix == f"Step 1 (at most 90 tokens): {PROBLEM.question}\nAnswer: "
    assert step.sampling.max_tokens == 90
    scores = run.candidates[0].scores
    assert (scores["plan_parsed"], scores["subquestions"], scores["budget_1"]) == (0.0, 1.0, 90.0)
    assert run.answer == "7"


async def test_prompted_mode_states_the_budgets_in_one_capped_call() -> None:
    model = backend(steps=("3 + 4 = 7 so \\boxed{7}",))
    run = await solve(model, mode="prompted", budget=100, max_subquestions=3)
    _, answer = model.requests
    [user] = answer.messages
    assert user.content.startswith(PROMPT[0].content + "\n\nYou may think following these sub-questions")
    assert user.content.endswith(
        "\n1. How many at first? Please only think a little, and directly solve it using up to 59 tokens."
        "\n2. How many bought? Please only think a little, and directly solve it using up to 22 tokens."
        "\n3. What is the total? Please only think a little, and directly solve it using up to 19 tokens."
    )
    assert (answer.prefix, answer.sampling.max_tokens) == ("", 100)
    assert run.answer == "7" and run.candidates[0].scores["forced_answer"] == 0.0
    assert "used_1" not in run.candidates[0].scores


async def test_prompted_mode_asks_for_the_answer_when_the_text_has_none() -> None:
    model = backend(steps=("3 + 4 is seven",), final="7}")
    run = await solve(model, mode="prompted", budget=100)
    final = model.requests[-1]
    assert final.messages == model.requests[1].messages
    assert final.prefix == "3 + 4 is seven\n\nFinal Answer: \\boxed{"
    assert run.answer == "7" and run.candidates[0].scores["forced_answer"] == 1.0


async def test_a_budget_stop_answers_nothing() -> None:
    run = await solve(backend(), Budget(calls=2))
    assert run.stop_reason == "budget:calls"
    assert run.answer is None and run.candidates == []


@pytest.mark.parametrize(
    "params",
    [
        {"schedule": "step"},
        {"mode": "both"},
        {"budget": "79"},  # under 5 sub-questions x 16 tokens
        {"plan_tokens": "0"},
        {"answer_tokens": "-1"},
        {"power": "0"},
        {"base": "1.5"},
        {"temperature": "-1"},
    ],
)
def test_bad_parameters_are_config_errors(params: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        STRATEGIES.create("plan-and-budget", params)


def test_names_and_defaults() -> None:
    assert STRATEGIES.get("pab") is STRATEGIES.get("plan_and_budget") is PlanAndBudget
    s = PlanAndBudget()
    assert (s.budget, s.schedule, s.mode, s.min_tokens, s.max_subquestions) == (
        256,
        "polynomial",
        "stepwise",
        16,
        5,
    )


def test_a_copied_placeholder_is_no_sub_question() -> None:
    # Seen on the 0.5B: it copied a "<sub-question>" template line into its plan.
    plan = "1. <sub-question> (complexity: 3)\n2. How much in total? (complexity: 2)"
    assert parse_plan(plan) == [("How much in total?", 2.0)]


async def test_the_answer_is_timed_and_its_plan_and_steps_are_the_record_s_calls() -> None:
    run = await solve(backend())
    [candidate] = run.candidates
    assert len(run.calls) == run.usage["calls"] == 5  # the plan, three steps, the final answer
    starts = [c.started for c in run.calls]
    assert starts == sorted(starts) and 0 < candidate.started <= starts[0]
