"""The same seed on the same engine and machine gives the same record (timings aside), per family.

One strategy of each family (parallel, sequential, speculative, tree search) runs twice on the
session's in-process engine in deterministic mode (`Controller(deterministic=True)`). Everything
in the two records but the clock (``seconds``, ``busy_seconds``, ``started_at``) must be equal:
every candidate's text, tokens, scores and finish reason, the answer, usage and stop reason.
The second run has another problem (self-consistency, n=2) solved just before it on the same
controller (queued first, concurrently), whose prefix cache and batches must not leak in.

Without deterministic mode this does not hold: bfloat16 decoding on a CPU is not bit-identical
across batch compositions, and batches depend on arrival timing: a tree search's concurrent
expansions (beam search's records differed between two runs in CI), and even one request's
``n`` samples, which vLLM fans out into requests that reach its scheduler one by one
(benchmarks/deterministic.py measures both modes).
"""

from __future__ import annotations

from typing import Any

import pytest

from reasoning import Controller, Problem
from reasoning.compose import build
from reasoning.concurrency import run_all
from reasoning.record import without_clock

pytestmark = pytest.mark.engine

PROBLEM = Problem(
    id="repro", question="Tom has 3 apples and buys 4 more. How many apples does he have?", answer="7"
)
OTHER = Problem(id="other", question="A box holds 5 pens. How many pens are in 3 boxes?", answer="15")
QUICK = build("self-consistency(n=2, max_tokens=8)")


@pytest.mark.parametrize(
    "spec",
    [
        "self-consistency(n=3, max_tokens=16, temperature=0.8)",  # parallel
        "budget-forcing(max_tokens=16, extend=1, temperature=0.8)",  # sequential
        "spec-reason(token_budget=24, step_tokens=8, answer_tokens=8)",  # speculative (draft, target)
        "beam-search(n=4, width=2, step_tokens=8, max_steps=2)",  # tree search, judged by the engine
    ],
)
async def test_same_seed_same_record(engine: Any, spec: str) -> None:
    strategy = build(spec)
    backends = {"draft": engine, "target": engine} if spec.startswith("spec-") else engine
    controller = Controller(backends, seed=11, deterministic=True)
    first = await controller.run(PROBLEM, strategy)
    # Another problem starts first and takes its turn; PROBLEM waits, then starts cold.
    other, second = await run_all(controller.run(OTHER, QUICK), controller.run(PROBLEM, strategy))
    assert first.candidates and other.candidates and first.deterministic, spec
    if spec.startswith("beam"):
        judged = [c for c in first.candidates if "step_score" in c.scores]
        assert len(first.candidates) > 4 and judged, "a search of more than one step, scored by the judge"
    assert without_clock(first) == without_clock(second)
