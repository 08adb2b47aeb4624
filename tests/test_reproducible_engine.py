"""The same seed on the same engine and machine gives the same record (timings aside), per family.

One strategy of each family (parallel, sequential, speculative) runs twice on the
session's in-process engine, one after the other and each from an empty prefix cache (so the
batches the engine forms, and the cached-token counts, are the same both times). Everything in
the two records but the clock (``seconds``, ``busy_seconds``, ``started_at``) must be equal:
every candidate's text, tokens, scores and finish reason, the answer, usage and stop reason.
(Across different batch compositions, e.g. other problems in flight, bfloat16 decoding on a
CPU is not bit-reproducible; that is not claimed. A tree search sends its expansions
concurrently, so its batches depend on arrival timing: beam search differed between two runs in
CI, and the tree family is left out until its requests can be batched deterministically.)
"""

from __future__ import annotations

from typing import Any

import pytest

from reasoning import Controller, Problem
from reasoning.compose import build

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
