"""The gold answer is out of a strategy's and a verifier's reach; only the runner grades."""

from collections.abc import Sequence
from dataclasses import dataclass

from reasoning import Context, Controller, Message, Problem, Result, ScriptedBackend, Verdict
from reasoning.evals.run import solve

GYM = Problem(
    id="g",
    question="2+2?",
    answer="4",
    kind="reasoning_gym",
    metadata={
        "entry": {"question": "2+2?", "answer": "4", "metadata": {"source_dataset": "basic_arithmetic"}}
    },
)


@dataclass(frozen=True)
class Cheat:
    """Answers with whatever gold it can find."""

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        entry = problem.metadata.get("entry") or ctx.problem.metadata.get("entry") or {}
        return Result(answer=problem.answer or ctx.problem.answer or entry.get("answer"))


class Spy:
    """A verifier that keeps the problems it is shown."""

    def __init__(self) -> None:
        self.seen: list[Problem] = []

    async def __call__(self, problem: Problem, texts: Sequence[str]) -> list[Verdict]:
        self.seen.append(problem)
        return [Verdict(answer="5", score=1.0) for _ in texts]


async def test_a_strategy_cannot_read_the_gold_answer(problem: Problem) -> None:
    for target in (problem, GYM):
        run = await Controller(ScriptedBackend(["\\boxed{5}"])).run(target, Cheat())
        assert run.answer is None
        assert run.gold == "4" and run.question == target.question  # the record keeps them


async def test_the_runner_still_grades_against_the_gold(problem: Problem) -> None:
    [cheat] = await solve([problem], Controller(ScriptedBackend(["\\boxed{5}"])), Cheat())
    assert cheat.answer is None and cheat.correct is False and cheat.gold == "4"


async def test_verifiers_and_prompts_see_the_problem_without_its_gold() -> None:
    from reasoning.strategies import SelfConsistency

    spy = Spy()
    prompted: list[Problem] = []

    def prompt(problem: Problem) -> tuple[Message, ...]:
        prompted.append(problem)
        return (Message("user", problem.question),)

    controller = Controller(ScriptedBackend(["\\boxed{5}"]), verifier=spy, prompt=prompt)
    run = await controller.run(GYM, SelfConsistency(n=2))
    assert run.answer == "5" and run.gold == "4"
    assert [p.answer for p in spy.seen + prompted] == [None] * len(spy.seen + prompted) != []
    assert all(p.metadata == {} for p in spy.seen + prompted)
    assert all((p.id, p.question, p.kind) == (GYM.id, GYM.question, GYM.kind) for p in spy.seen + prompted)
