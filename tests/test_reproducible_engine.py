"""The same seed on the same engine and machine gives the same record (timings aside), per family.

One strategy of each family (parallel, sequential, speculative, tree search) runs twice on the
session's in-process engine. Everything in the two records but the clock (``seconds``,
``busy_seconds``, ``started_at``) must be equal: every candidate's text, tokens, scores and
finish reason, the answer, usage and stop reason.

Parallel, sequential and speculative strategies send their requests one at a time or all in one
request (``n`` samples), so each run starting from an empty prefix cache is enough. A tree search
sends its expansions concurrently, and the batches the engine forms then depend on arrival timing
(bfloat16 decoding on a CPU is not bit-identical across batch compositions: beam search's records
differed between two runs in CI). It runs in deterministic mode (`Controller(deterministic=True)`):
requests one at a time, each problem from an emptied prefix cache. Its second run has another
problem solved just before it on the same controller, whose cache and batches must not leak in.
"""

from __future__ import annotations

from typing import Any

import pytest

from reasoning import Controller, Problem
from reasoning.compose import build
from reasoning.concurrency import run_all

pytestmark = pytest.mark.engine

PROBLEM = Problem(
    id="repro", question="Tom has 3 apples and buys 4 more. How many apples does he have?", answer="7"
)
CLOCK = {"seconds", "busy_seconds", "started_at"}


def _without_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_clock(v) for k, v in value.items() if k not in CLOCK}
    if isinstance(value, list):
        return [_without_clock(v) for v in value]
    return value


@pytest.mark.parametrize(
    "spec",
    [
        "self-consistency(n=3, max_tokens=24, temperature=0.8)",  # parallel
        "budget-forcing(max_tokens=24, extend=1, temperature=0.8)",  # sequential
        "spec-reason(token_budget=32, step_tokens=12, answer_tokens=8)",  # speculative (draft, target)
    ],
)
async def test_same_seed_same_record(engine: Any, spec: str) -> None:
    strategy = build(spec)
    named = spec.startswith("spec-")
    records = []
    for _ in range(2):
        await engine.reset_prefix_cache()
        controller = Controller({"draft": engine, "target": engine} if named else engine, seed=11)
        run = await controller.run(PROBLEM, strategy)
        records.append(_without_clock(run.model_dump(mode="json")))
    first, second = records
    assert first["candidates"], spec
    assert first == second


OTHER = Problem(id="other", question="A box holds 5 pens. How many pens are in 3 boxes?", answer="15")


async def test_tree_search_same_seed_same_record_in_deterministic_mode(engine: Any) -> None:
    strategy = build("beam-search(n=4, width=2, step_tokens=8, max_steps=2)")  # judge scorer: the engine
    controller = Controller(engine, seed=11, deterministic=True)
    first = await controller.run(PROBLEM, strategy)
    # The other problem starts first and takes its turn; PROBLEM waits, then starts cold.
    other, second = await run_all(controller.run(OTHER, strategy), controller.run(PROBLEM, strategy))
    assert other.candidates and first.deterministic
    judged = [c for c in first.candidates if "step_score" in c.scores]
    assert len(first.candidates) > 4 and judged, "a search of more than one step, scored by the judge"
    assert _without_clock(first.model_dump(mode="json")) == _without_clock(second.model_dump(mode="json"))
