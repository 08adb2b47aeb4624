"""Parallel strategies on the real engine: early stops cancel work in the engine at once."""

import asyncio

import pytest
from conftest import decoded_tokens

from reasoning import Controller, Problem
from reasoning.strategies import AdaptiveSelfConsistency, DeepConf, FirstFinish, ShortMAtK

pytestmark = pytest.mark.engine

PROBLEM = Problem("p", "What is 6 * 7? Answer with just the number in \\boxed{}.", answer="42")


async def test_first_finish_cancels_the_other_samples_in_the_engine(backend) -> None:
    before = await decoded_tokens(backend)
    run = await Controller(backend, seed=1).run(PROBLEM, FirstFinish(n=4, max_tokens=64))
    await asyncio.sleep(1.0)
    engine_side = await decoded_tokens(backend) - before
    finished = [c for c in run.candidates if c.finish_reason != "cancelled"]
    assert len(finished) >= 1 and run.candidates[run.chosen].finish_reason != "cancelled"
    assert run.usage["cancelled_samples"] == len(run.candidates) - len(finished)
    # What the engine decoded is what the run was charged, up to a step or two per cancelled sample.
    assert engine_side - run.usage["output_tokens"] <= 3 * 4, (engine_side, run.usage)


async def test_short_m_at_k_and_adaptive_sc_on_the_engine(engine) -> None:
    run = await Controller(engine, seed=2).run(PROBLEM, ShortMAtK(k=4, m=2, max_tokens=64))
    assert sum(c.finish_reason != "cancelled" for c in run.candidates) >= 2
    run = await Controller(engine, seed=2).run(
        PROBLEM, AdaptiveSelfConsistency(max_samples=8, batch=4, max_tokens=64)
    )
    assert len(run.candidates) in (4, 8) and run.usage["calls"] == len(run.candidates) // 4


async def test_deepconf_online_reads_logprobs_and_stops(engine) -> None:
    strategy = DeepConf(mode="online", budget=8, warmup=4, batch=4, window=8, max_tokens=64)
    run = await Controller(engine, seed=3).run(PROBLEM, strategy)
    assert 4 <= len(run.candidates) <= 8
    assert all("confidence" in c.scores and c.scores["confidence"] > 0 for c in run.candidates)
