"""Sequential strategies and compositions on the real engine, tiny budgets: the mechanisms hold.

Nothing here depends on what the model writes: each test checks what the strategy did with it
(pushes, cuts, probes, rounds, budgets) against the record, and the record against the meter.
"""

import asyncio

import pytest
from conftest import decoded_tokens

from reasoning import Controller, Problem, Run
from reasoning.compose import build

pytestmark = pytest.mark.engine

PROBLEM = Problem("p", "What is 6 * 7? Answer with just the number in \\boxed{}.", answer="42")
WORDS = Problem(
    "w", "Natalia sold clips to 48 friends in April and half as many in May. How many in all?", "72"
)


def charged_once(run: Run) -> None:
    """Every token the record's candidates claim was metered, and nothing twice."""
    assert run.error is None, run.error
    assert run.usage["sequential_tokens"] <= run.usage["output_tokens"]


async def test_budget_forcing_cuts_at_the_bound_and_pushes_past_an_end(engine) -> None:
    run = await Controller(engine, seed=1).run(WORDS, build("budget-forcing(max_tokens=24, answer_tokens=8)"))
    charged_once(run)
    [candidate] = run.candidates
    scores = candidate.scores
    assert scores["think_tokens"] <= 24 and run.usage["calls"] == scores["segments"] + 1
    if scores["forced"]:
        assert candidate.finish_reason == "forced" and scores["think_tokens"] == 24
    assert candidate.output_tokens == run.usage["output_tokens"]
    # A lower bound the model cannot reach by itself: every end is pushed with "Wait", up to max_waits.
    strategy = build("budget-forcing(min_think=60, max_waits=2, max_tokens=80, answer_tokens=8)")
    run = await Controller(engine, seed=1).run(PROBLEM, strategy)
    charged_once(run)
    [candidate] = run.candidates
    waits = int(candidate.scores["waits"])
    assert candidate.text.count("Wait") >= waits and waits <= 2
    assert waits >= 1 or candidate.scores["think_tokens"] >= 60 or candidate.scores["forced"]


async def test_dynasor_probes_every_chunk_and_cancels_the_trace_in_the_engine(engine) -> None:
    before = await decoded_tokens(engine)
    run = await Controller(engine, seed=2).run(WORDS, build("dynasor(chunk=16, window=2, max_tokens=160)"))
    await asyncio.sleep(1.0)
    charged_once(run)
    [candidate] = run.candidates
    probes, stop = candidate.scores["probes"], candidate.scores["exit_token"]
    assert probes >= 1
    if stop:  # stopped by agreeing probes: at a chunk boundary, after at least `window` probes
        assert stop % 16 == 0 and probes >= 2 and candidate.scores["agreement"] >= 2
    engine_side = await decoded_tokens(engine) - before
    assert engine_side - run.usage["output_tokens"] <= 3 * (probes + 1), (engine_side, run.usage)


async def test_self_consistency_over_budget_forced_traces(engine) -> None:
    strategy = build("self-consistency(n=3, inner=budget-forcing(max_tokens=32, answer_tokens=8))")
    run = await Controller(engine, seed=3).run(PROBLEM, strategy)
    charged_once(run)
    assert sorted(c.scores["path"] for c in run.candidates) == [0.0, 1.0, 2.0]
    assert all(c.scores["think_tokens"] <= 32 for c in run.candidates)
    # The three traces ran side by side: the critical path is well under their sum.
    assert run.usage["sequential_tokens"] < run.usage["output_tokens"]
    assert run.params["inner"] == "budget-forcing(answer_tokens=8, max_tokens=32)"


async def test_pdr_rounds_share_one_prompt_and_a_bounded_workspace(engine) -> None:
    strategy = build("pdr(rounds=2, drafts=3, workspace_tokens=24, max_tokens=32)")
    run = await Controller(engine, seed=4).run(PROBLEM, strategy)
    charged_once(run)
    drafts = [c for c in run.candidates if "draft" in c.scores]
    assert sorted((int(c.scores["round"]), int(c.scores["draft"])) for c in drafts) == [
        (1, 0), (1, 1), (1, 2), (2, 0)
    ]  # fmt: skip
    assert all(c.scores["workspace_tokens_used"] <= 24 for c in drafts)
    # Round 1 = one request with n=3, the summary, round 2 = one request: three calls one after another.
    assert run.usage["calls"] == 3 and run.usage["samples"] == 5
    assert run.usage["sequential_tokens"] < run.usage["output_tokens"]


async def test_self_refine_and_plan_and_budget_keep_to_their_budgets(engine) -> None:
    run = await Controller(engine, seed=5).run(
        PROBLEM, build("self-refine(rounds=1, max_tokens=32, feedback_tokens=24)")
    )
    charged_once(run)
    assert run.usage["calls"] in (2, 3)  # solve, review, and a rewrite unless the review says CORRECT
    strategy = build("plan-and-budget(budget=64, min_tokens=8, plan_tokens=48)")
    run = await Controller(engine, seed=5).run(WORDS, strategy)
    charged_once(run)
    [candidate] = [c for c in run.candidates if "subquestions" in c.scores]
    parts = int(candidate.scores["subquestions"])
    budgets = [candidate.scores[f"budget_{i}"] for i in range(1, parts + 1)]
    used = [candidate.scores[f"used_{i}"] for i in range(1, parts + 1)]
    assert sum(budgets) <= 64 and all(b >= 8 for b in budgets)
    assert all(u <= b for u, b in zip(used, budgets, strict=True))


async def test_pdr_over_first_finish_races_cancels_the_losers_in_the_engine(engine) -> None:
    before = await decoded_tokens(engine)
    strategy = build("pdr(rounds=2, drafts=2, distill=top-k, k=1, inner=first-finish(n=2, max_tokens=32))")
    run = await Controller(engine, seed=6).run(PROBLEM, strategy)
    await asyncio.sleep(1.0)
    charged_once(run)
    # Three races (two drafts, then one): each is one request with n=2 whose loser is cancelled.
    assert run.usage["calls"] == 3 and run.usage["samples"] == 6
    assert run.usage["cancelled_samples"] <= 3
    engine_side = await decoded_tokens(engine) - before
    assert engine_side - run.usage["output_tokens"] <= 3 * 6, (engine_side, run.usage)


async def test_sequential_refinement_over_dynasor_traces(engine) -> None:
    strategy = build("sr(rounds=2, workspace_tokens=48, inner=dynasor(chunk=16, window=2, max_tokens=64))")
    run = await Controller(engine, seed=7).run(PROBLEM, strategy)
    charged_once(run)
    traces = [c for c in run.candidates if "probes" in c.scores]
    assert len(traces) == 2 and all(c.scores["probes"] >= 1 for c in traces)
    assert sorted(int(c.scores["round"]) for c in traces) == [1, 2]
