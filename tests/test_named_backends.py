"""Several named backends in one run, each with its own budget line (scripted backends)."""

from dataclasses import dataclass

import pytest

from reasoning import Budget, ConfigError, Context, Controller, Problem, Result, Sampling, ScriptedBackend
from reasoning.strategies import SelfConsistency

PROBLEM = Problem("p", "2+2?", answer="4")


@dataclass(frozen=True)
class DraftThenTarget:
    """Draft three cheap samples, then one target sample; answer from the target."""

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        drafts = await ctx.generate(ctx.request(Sampling(n=3, max_tokens=20)), backend="draft")
        [final] = await ctx.generate(ctx.request(Sampling(max_tokens=20), prefix="Check:"), backend="target")
        candidates = await ctx.candidates([*drafts, final])
        return Result(candidates[-1].answer, tuple(candidates), len(candidates) - 1)


def pair() -> dict[str, ScriptedBackend]:
    return {
        "draft": ScriptedBackend(["guess \\boxed{5}"], name="vllm", model="small"),
        "target": ScriptedBackend(["so \\boxed{4}"], name="vllm", model="large"),
    }


async def test_strategy_uses_both_backends_and_the_record_says_which_did_what() -> None:
    backends = pair()
    run = await Controller(backends).run(PROBLEM, DraftThenTarget())
    assert run.answer == "4"
    assert [c.backend for c in run.candidates] == ["draft"] * 3 + ["target"]
    assert run.backends == {"draft": "small", "target": "large"} and run.model == "small"
    assert len(backends["draft"].requests) == 1 and len(backends["target"].requests) == 1
    assert run.usage_by_backend["draft"]["output_tokens"] == 6
    assert run.usage_by_backend["target"]["output_tokens"] == 2
    assert run.usage["output_tokens"] == 8 and run.usage["calls"] == 2


async def test_each_backend_has_its_own_budget_line() -> None:
    controller = Controller(pair(), budgets={"target": Budget(calls=1), "draft": Budget(output_tokens=4)})
    run = await controller.run(PROBLEM, DraftThenTarget())
    # The draft line clamps its three samples to 1 token each; the target is unaffected.
    assert run.usage_by_backend["draft"]["output_tokens"] == 3
    assert run.budgets["draft"]["output_tokens"] == 4 and run.budgets["target"]["calls"] == 1
    assert run.answer == "4"


async def test_a_named_line_running_out_stops_the_run_without_charging_the_others() -> None:
    controller = Controller(pair(), budgets={"target": Budget(output_tokens=1)}, budget=Budget(calls=5))
    strategy = SelfConsistency(n=2, max_tokens=8)

    @dataclass(frozen=True)
    class TwoTargetCalls:
        async def __call__(self, problem: Problem, ctx: Context) -> Result:
            await ctx.generate(ctx.request(Sampling(max_tokens=8)), backend="target")
            await ctx.generate(ctx.request(Sampling(max_tokens=8)), backend="target")
            return await strategy(problem, ctx)

    run = await controller.run(PROBLEM, TwoTargetCalls())
    assert run.stop_reason == "budget:target.output_tokens"
    assert run.usage["calls"] == 1 and run.usage_by_backend["target"]["calls"] == 1
    assert run.usage_by_backend["draft"]["calls"] == 0


async def test_default_backend_is_the_first_and_is_metered_by_name() -> None:
    run = await Controller(pair(), budgets={"draft": Budget(output_tokens=4)}).run(
        PROBLEM, SelfConsistency(n=2, max_tokens=8)
    )
    assert all(c.backend == "draft" for c in run.candidates)
    assert run.usage_by_backend["draft"]["output_tokens"] <= 4


async def test_unknown_backend_names_are_clear_errors() -> None:
    @dataclass(frozen=True)
    class AsksForOracle:
        async def __call__(self, problem: Problem, ctx: Context) -> Result:
            await ctx.generate(ctx.request(Sampling()), backend="oracle")
            return Result(None)

    with pytest.raises(ConfigError, match="no backend named 'oracle'.*draft, target"):
        await Controller(pair()).run(PROBLEM, AsksForOracle())
    with pytest.raises(ConfigError, match="unknown backends \\['oracle'\\]"):
        Controller(pair(), budgets={"oracle": Budget(calls=1)})
    with pytest.raises(ConfigError, match="at least one backend"):
        Controller({})


async def test_single_backend_records_stay_as_before() -> None:
    run = await Controller(ScriptedBackend(["\\boxed{4}"])).run(PROBLEM, SelfConsistency(n=2))
    assert run.backends == {} and run.usage_by_backend == {} and run.candidates[0].backend == ""
