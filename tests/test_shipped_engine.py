"""The shipped probes and value model on the real engine: they load for their model, are refused
for another model and on the problems they were fitted on, and the value model decodes nothing.

Tiny runs (a few tokens); no accuracy is asserted.
"""

from __future__ import annotations

import pytest

from reasoning import Controller, Problem
from reasoning.evals.datasets import load_dataset
from reasoning.probes.probe import ArtefactOverlap, ProbeMismatch, load_probe, shipped
from reasoning.strategies import BeamSearch, BestOfN, DifficultyRouter, EarlyExit

pytestmark = pytest.mark.engine

MODEL = "qwen2.5-coder-0.5b-instruct"
TEST = Problem("t", "Tom has 3 apples and buys 4 more. How many apples does he have?", answer="7")
KINDS = ("exit", "difficulty", "value")


@pytest.mark.parametrize("kind", KINDS)
def test_each_shipped_artefact_loads_for_its_model_only(kind: str) -> None:
    path = shipped(kind, MODEL)  # type: ignore[arg-type]
    assert path is not None, f"no {kind} artefact ships for {MODEL}"
    probe = load_probe("", MODEL, kind, calibrated=kind == "exit")  # type: ignore[arg-type]
    assert probe.card.fitted_on and all(f.dataset.startswith("gsm8k-train") for f in probe.card.fitted_on)
    assert not probe.card.underpowered and probe.card.quality
    with pytest.raises(ProbeMismatch, match="qwen2.5-coder-1.5b-instruct"):
        load_probe(str(path), "qwen2.5-coder-1.5b-instruct", kind)  # type: ignore[arg-type]


async def test_shipped_artefacts_are_refused_on_the_problems_they_were_fitted_on(engine) -> None:
    trained_on = load_dataset("gsm8k-train", limit=1)[0]
    strategies = [
        EarlyExit(max_tokens=16),
        DifficultyRouter(easy="single:max_tokens=8", hard="single:max_tokens=8"),
        BestOfN(n=2, score="value", max_tokens=16),
    ]
    for strategy in strategies:
        with pytest.raises(ArtefactOverlap, match="gsm8k-train-0"):
            await Controller(engine).run(trained_on, strategy)


async def test_the_value_model_scores_without_decoding(engine) -> None:
    run = await Controller(engine, seed=0).run(TEST, BestOfN(n=2, score="value", max_tokens=24))
    sampled = sum(c.output_tokens for c in run.candidates)
    assert run.error is None and all(0 <= c.scores["value"] <= 1 for c in run.candidates)
    assert run.usage["output_tokens"] == sampled + 2  # one metered token per read, nothing decoded
    search = await Controller(engine, seed=0).run(
        TEST, BeamSearch(n=2, width=2, scorer="value", step_tokens=16, max_steps=2)
    )
    scored = [c for c in search.candidates if "step_score" in c.scores]
    assert scored and all(0 <= c.scores["step_score"] <= 1 for c in scored)
    assert search.usage["calls"] >= len(scored)  # each read one call
