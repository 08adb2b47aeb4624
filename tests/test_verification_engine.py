"""GenRM, capability-aware self-evaluation and Solve-Detect-Verify on the real engine: the calls each
makes, what it reads."""

import math

import pytest

from reasoning import Controller, Problem
from reasoning.strategies.genrm import GenRM
from reasoning.strategies.self_eval import SelfEval
from reasoning.strategies.solve_detect_verify import SolveDetectVerify

pytestmark = pytest.mark.engine

PROBLEM = Problem("p", "What is 6 * 7? Answer with just the number in \\boxed{}.", answer="42")


async def test_genrm_verifies_each_answered_solution_and_scores_it_by_its_verdicts(engine) -> None:
    strategy = GenRM(solutions=2, verifications=2, max_tokens=48, verify_max_tokens=96)
    run = await Controller(engine, seed=4).run(PROBLEM, strategy)
    solutions = [c for c in run.candidates if "solution" not in c.scores]
    checks = [c for c in run.candidates if "solution" in c.scores]
    answered = [i for i, c in enumerate(solutions) if c.answer is not None]
    assert len(solutions) == 2 and len(checks) == 2 * len(answered)
    assert run.usage["calls"] == 1 + len(checks)  # one request for the solutions, one per verification
    assert all(c.answer is None for c in checks)  # a verification never votes
    for i, solution in enumerate(solutions):
        verdicts = [c.scores["p_yes"] for c in checks if c.scores["solution"] == i and "p_yes" in c.scores]
        assert all(0.0 <= p <= 1.0 for p in verdicts)
        if verdicts:
            assert math.isclose(solution.scores["genrm"], sum(verdicts) / len(verdicts))


async def test_self_eval_prunes_in_the_engine_and_asks_one_token_per_evaluation(engine) -> None:
    strategy = SelfEval(max_samples=2, batch=2, prune_at=8, keep=1, max_tokens=48)
    run = await Controller(engine, seed=5).run(PROBLEM, strategy)
    assert len(run.candidates) == 2
    pruned = [c for c in run.candidates if c.scores.get("pruned") == 1.0]
    # At most one of two cut (keep=1), and only in the engine, past the prune point.
    assert len(pruned) <= 1 and all(c.finish_reason == "cancelled" and c.output_tokens >= 8 for c in pruned)
    evaluations = run.usage["calls"] - 2  # the rest are one-token self-evaluations
    assert run.usage["output_tokens"] == sum(c.output_tokens for c in run.candidates) + evaluations
    for c in run.candidates:
        for key in ("self_eval", "prune_eval"):
            if key in c.scores:
                assert 0.0 <= c.scores[key] <= 1.0


async def test_solve_detect_verify_probes_one_token_and_verifies_fast_then_slow(engine) -> None:
    strategy = SolveDetectVerify(max_tokens=48, fast=2, fast_tokens=16, slow_tokens=48)
    run = await Controller(engine, seed=6).run(PROBLEM, strategy)
    attempts = [c for c in run.candidates if "checks" in c.scores]
    probes = [c for c in run.candidates if "detect" in c.scores]
    fast = [c for c in run.candidates if "fast" in c.scores]
    slow = [c for c in run.candidates if "slow" in c.scores]
    rejected = sum(c.finish_reason == "rejected" for c in attempts)
    assert 1 <= len(attempts) <= 2 and len(attempts) == 1 + rejected  # a retry only after a rejection
    assert all(c.output_tokens == 1 for c in probes)  # Detect: one greedy token
    assert len(fast) % 2 == 0 and all(c.output_tokens <= 16 for c in fast)  # two per verification
    assert len(slow) <= len(fast) // 2 and all(c.output_tokens <= 48 for c in slow)
    # Every call is one candidate (the attempts' traces, probes, checks): the tokens add up.
    assert run.usage["calls"] == len(attempts) + len(probes) + len(fast) // 2 + len(slow)
    assert run.usage["output_tokens"] == sum(c.output_tokens for c in run.candidates)
    assert all(0.0 <= c.scores.get(k, 0.0) <= 1.0 for c in run.candidates for k in ("p_yes", "p_complete"))
    chosen = run.candidates[run.chosen] if run.chosen is not None else None
    assert chosen is not None and chosen in attempts and run.answer == chosen.answer
