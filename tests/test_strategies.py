import pytest

from reasoning import STRATEGIES, Budget, ConfigError, Controller, Problem, ScriptedBackend
from reasoning.strategies import SelfConsistency, Single


async def test_self_consistency_votes_in_one_batched_call(problem: Problem) -> None:
    backend = ScriptedBackend(["\\boxed{4}", "\\boxed{5}", "it is \\boxed{4}", "no idea"])
    run = await Controller(backend).run(problem, SelfConsistency(n=4))
    assert run.answer == "4"
    assert run.chosen == 0
    assert len(backend.requests) == 1 and backend.requests[0].sampling.n == 4
    assert run.usage["calls"] == 1 and run.usage["samples"] == 4
    assert [c.answer for c in run.candidates] == ["4", "5", "4", None]
    assert run.strategy == "self-consistency" and run.params["n"] == 4


async def test_parallel_samples_count_once_on_the_critical_path(problem: Problem) -> None:
    backend = ScriptedBackend(["\\boxed{4}", "a b c d e f \\boxed{4}", "a b \\boxed{5}", "a \\boxed{4}"])
    run = await Controller(backend).run(problem, SelfConsistency(n=4))
    longest = max(c.output_tokens for c in run.candidates)
    assert longest == 7 and run.usage["output_tokens"] == 1 + 7 + 3 + 2
    assert run.usage["sequential_tokens"] == longest < run.usage["output_tokens"]


async def test_single_is_greedy_by_default(problem: Problem) -> None:
    backend = ScriptedBackend(["\\boxed{4}"])
    run = await Controller(backend).run(problem, Single())
    assert run.answer == "4"
    assert backend.requests[0].sampling.temperature == 0.0


async def test_budget_stop_returns_best_so_far(problem: Problem) -> None:
    backend = ScriptedBackend(["one two three four \\boxed{4}"])
    strategy = SelfConsistency(n=4, max_tokens=50)
    run = await Controller(backend, budget=Budget(output_tokens=3)).run(problem, strategy)
    # 3 tokens cannot be split over 4 samples: the strategy is stopped before spending.
    assert run.stop_reason == "budget:output_tokens"
    assert run.usage["output_tokens"] == 0 and backend.requests == []


async def test_budget_clamps_and_never_overspends(problem: Problem) -> None:
    backend = ScriptedBackend(["a b c d e f g h i j \\boxed{4}"])
    run = await Controller(backend, budget=Budget(output_tokens=20)).run(problem, SelfConsistency(n=4))
    assert run.usage["output_tokens"] <= 20
    assert all(c.finish_reason == "length" for c in run.candidates)


async def test_calls_budget_stops_second_call(problem: Problem) -> None:
    class TwoCalls(SelfConsistency):
        async def __call__(self, problem, ctx):  # type: ignore[no-untyped-def]
            await ctx.generate(ctx.request(ctx_sampling()))
            await ctx.generate(ctx.request(ctx_sampling()))
            raise AssertionError("unreachable")

    from reasoning import Sampling

    def ctx_sampling() -> Sampling:
        return Sampling(max_tokens=10)

    run = await Controller(ScriptedBackend(["\\boxed{7}"]), budget=Budget(calls=1)).run(problem, TwoCalls())
    assert run.stop_reason == "budget:calls"
    assert run.answer == "7"  # best so far: the first call's sample


async def test_seconds_budget_cancels_a_slow_stream(problem: Problem) -> None:
    backend = ScriptedBackend(["a " * 50 + "\\boxed{1}"], seconds_per_token=0.01)
    run = await Controller(backend, budget=Budget(seconds=0.1)).run(problem, Single())
    assert run.stop_reason == "budget:seconds"
    assert backend.cancelled == 1
    assert run.usage["output_tokens"] < 50
    # A stopped run has its critical path too: the one sample, cancelled with what it decoded.
    assert run.usage["sequential_tokens"] == run.usage["output_tokens"] > 0


async def test_seeds_are_derived_per_request_and_reproducible(problem: Problem) -> None:
    seeds = []
    for _ in range(2):
        backend = ScriptedBackend(["\\boxed{4}"])
        await Controller(backend, seed=3).run(problem, SelfConsistency(n=2))
        seeds.append(backend.requests[0].sampling.seed)
    assert seeds[0] is not None and seeds[0] == seeds[1]
    backend = ScriptedBackend(["\\boxed{4}"])
    await Controller(backend, seed=4).run(problem, SelfConsistency(n=2))
    assert backend.requests[0].sampling.seed != seeds[0]


def test_registry_validates_parameters() -> None:
    assert isinstance(STRATEGIES.create("sc", {"n": "3"}), SelfConsistency)
    with pytest.raises(ConfigError, match="valid parameters: n, temperature"):
        STRATEGIES.create("self-consistency", {"k": "3"})
    with pytest.raises(ConfigError, match="bad parameter 'n'"):
        STRATEGIES.create("self-consistency", {"n": "x"})
    with pytest.raises(ConfigError, match="n must be >= 1"):
        STRATEGIES.create("self-consistency", {"n": "0"})
    with pytest.raises(ConfigError, match="choose one of: a-star, adaptive-sc, .*, best-of-n, .*, single"):
        STRATEGIES.create("best-of-everything")


def test_record_is_complete_and_serialisable(problem: Problem) -> None:
    from datetime import datetime

    from reasoning.record import FORMAT_VERSION, Run, library_versions

    budget = Budget(output_tokens=100)
    run = Controller(ScriptedBackend(["\\boxed{4}"]), seed=1, budget=budget).run_sync(
        problem, SelfConsistency(n=2)
    )
    data = run.model_dump()
    candidate = {"text": "\\boxed{4}", "answer": "4", "output_tokens": 1, "finish_reason": "stop"}
    # What every field of the record holds for this run: a field added to Run without a line
    # here fails the test, so the record's completeness is checked field by field.
    expected = {
        "format_version": lambda v: v == FORMAT_VERSION,
        "problem_id": lambda v: v == "p1",
        "question": lambda v: v == problem.question,
        "gold": lambda v: v == "4",
        "answer": lambda v: v == "4",
        "correct": lambda v: v is None,  # graded by the evaluation layer, not the controller
        "oracle_correct": lambda v: v is None,
        "chosen": lambda v: v == 0,
        "candidates": lambda v: len(v) == 2 and all(c.items() >= candidate.items() for c in v),
        "calls": lambda v: v == [],  # every sample is a candidate
        "strategy": lambda v: v == "self-consistency",
        "params": lambda v: v == {"n": 2, "temperature": 0.7, "top_p": 0.95, "max_tokens": 512},
        "model": lambda v: v == "scripted",
        "backend": lambda v: v == "scripted",
        "backends": lambda v: v == {},
        "engine": lambda v: v == {},
        "engines": lambda v: v == {},
        "seed": lambda v: v == 1,
        "deterministic": lambda v: v is False,
        "budget": lambda v: v["output_tokens"] == 100 and set(v) >= {"calls", "prompt_tokens", "seconds"},
        "usage": lambda v: (v["calls"], v["samples"], v["output_tokens"]) == (1, 2, 2) and v["seconds"] >= 0,
        "budgets": lambda v: v == {},
        "usage_by_backend": lambda v: v == {},
        "stop_reason": lambda v: v == "done",
        "error": lambda v: v is None,
        "grading": lambda v: v == [],
        "started_at": lambda v: datetime.fromisoformat(v).tzinfo is not None,
        "versions": lambda v: v == library_versions() and "python" in v,
        "spec": lambda v: v == {},  # the run spec: stored by the evaluation layer (reasoning solve)
    }
    assert set(expected) == set(Run.model_fields), "a field of Run is not checked here"
    wrong = {key: data[key] for key, holds in expected.items() if not holds(data[key])}
    assert not wrong
    assert type(run).model_validate_json(run.model_dump_json()) == run


async def test_a_strategy_that_returns_no_result_is_an_error_naming_it(problem: Problem) -> None:
    class Forgetful:
        async def __call__(self, problem: Problem, ctx: object) -> None:
            return None

    with pytest.raises(ConfigError, match="strategy 'Forgetful' returned NoneType, not a Result"):
        await Controller(ScriptedBackend(["\\boxed{4}"])).run(problem, Forgetful())  # type: ignore[arg-type]
