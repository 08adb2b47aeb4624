"""Step-level tree search on the real engine with generative process scores (tiny budgets)."""

import pytest

from reasoning import Controller, Problem
from reasoning.strategies import AStar, BeamSearch, ParticleFiltering
from reasoning.verifiers.process import search_stats

pytestmark = pytest.mark.engine

PROBLEM = Problem("p", "A box holds 6 eggs. How many eggs are in 4 boxes?", answer="24")


@pytest.mark.parametrize(
    "strategy",
    [
        BeamSearch(n=2, width=2, step_tokens=24, max_steps=2),
        ParticleFiltering(particles=2, step_tokens=24, max_steps=2),
        AStar(k=2, budget=4, step_tokens=24, max_steps=2),
    ],
    ids=["beam", "particle-filtering", "a-star"],
)
async def test_tree_search_runs_on_the_engine_with_generative_scores(engine, strategy) -> None:
    run = await Controller(engine, seed=8).run(PROBLEM, strategy)
    stats = search_stats(run.candidates)
    assert run.stop_reason == "done" and len(run.candidates) >= 2
    assert stats["scorer_calls"] >= 2 and stats["output_tokens"] > 0
    scores = [c.scores["process"] for c in run.candidates if "process" in c.scores]
    assert scores and all(0.0 <= s <= 1.0 for s in scores)
    # (No cache-share check here: these prompts are shorter than the CPU prefix cache's 128-token
    # blocks, so nothing is cacheable; the share matters on real problem sizes.)
    assert 0.0 <= stats["cache_share"] <= 1.0
