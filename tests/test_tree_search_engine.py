"""Step-level tree search on the real engine with generative process scores (tiny budgets)."""

import pytest

from reasoning import Controller, Problem
from reasoning.strategies import AStar, BeamSearch, ParticleFiltering
from reasoning.strategies.step_tree import search_stats

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
    assert run.stop_reason in ("done", "no_answer") and len(run.candidates) >= 2
    assert stats["scorer_calls"] >= 2 and stats["output_tokens"] > 0
    scores = [c.scores["process"] for c in run.candidates if "process" in c.scores]
    assert scores and all(0.0 <= s <= 1.0 for s in scores)
    # (No cache-share check here: these prompts are shorter than the CPU prefix cache's 128-token
    # blocks, so nothing is cacheable; the share matters on real problem sizes.)
    assert 0.0 <= stats["cache_share"] <= 1.0


async def test_completions_tell_the_delimiter_from_the_end_of_text(backend) -> None:
    """Steps need it: a stop string means "more steps follow", the end of text means "done".

    Checked on whatever the model writes on this machine's numerics: the stop string is taken
    from the model's own greedy text, so it is sure to occur; the end of text comes from a request
    whose only stop string never occurs.
    """
    from reasoning import Message, Request, Sampling, collect

    ask = (Message("user", "Write two numbered lines about eggs."),)
    [free] = await collect(backend, Request(ask, Sampling(temperature=0.0, max_tokens=48)))
    words = free.text.split()
    assert len(words) >= 4, free.text
    delimiter = " " + words[3]  # occurs in the text, and not at its very start
    [step] = await collect(backend, Request(ask, Sampling(temperature=0.0, max_tokens=48, stop=(delimiter,))))
    assert (step.finish_reason, step.stop_string) == ("stop", delimiter)
    assert step.text == free.text[: free.text.index(delimiter)]
    short = Request(
        (Message("user", "Reply with the single word yes."),),
        Sampling(temperature=0.0, max_tokens=128, stop=("\x07 never written",)),
    )
    [done] = await collect(backend, short)
    assert (done.finish_reason, done.stop_string) == ("stop", None), done.text


async def test_value_probe_scores_steps_from_the_engines_hidden_states(engine, tmp_path) -> None:
    import numpy as np

    from reasoning import Request, Sampling
    from reasoning.engine.models import fingerprint
    from reasoning.probes.probe import Probe, ProbeCard
    from reasoning.problem import default_prompt

    model, layers, hidden = fingerprint(engine.model), [12, 24], 896
    rng = np.random.default_rng(0)
    card = ProbeCard(
        kind="exit",
        model={"name": model.name, "sha256": model.sha256},
        layers=layers,
        hidden_size=hidden,
        position="decision-point",
        hidden=[],
        training_data_sha256="0" * 64,
    )
    width = hidden * len(layers)
    arrays = {
        "mean": np.zeros(width),
        "scale": np.full(width, 30.0),
        "w0": rng.normal(size=(1, width)),
        "b0": np.zeros(1),
    }
    probe = Probe(card, arrays)
    path = str(probe.save(tmp_path / "value"))
    strategy = BeamSearch(n=2, width=2, step_tokens=24, max_steps=2, scorer="probe", probe=path)
    run = await Controller(engine, seed=3).run(PROBLEM, strategy)
    first = next(c for c in run.candidates if c.scores["step"] == 1 and "step_score" in c.scores)

    # The recorded score is the probe on the hidden states at the end of "<step>\n\n": equal
    # within the dtype's noise (in bfloat16 the KV the run reused was computed while decoding, a
    # fresh read prefills it, and the two roundings differ), and nearer to it than to the probe
    # one delimiter earlier or one word later, which is the mechanism on any CPU's numerics.
    async def score(assistant: str) -> float:
        request = Request(default_prompt(PROBLEM), Sampling(max_tokens=1), assistant)
        states = await engine.hidden_states(request, layers)
        return float(probe.predict(states.reshape(1, -1))[0])

    at, before, after = [await score(first.text + tail) for tail in ("\n\n", "", "\n\nSo")]
    recorded = first.scores["step_score"]
    noise = 1e-3 if engine.engine_info.get("dtype") == "float32" else 0.03
    assert recorded == pytest.approx(at, abs=noise)
    assert abs(recorded - at) <= min(abs(recorded - before), abs(recorded - after)), (at, before, after)
    assert run.usage["calls"] > 2  # step requests and probe reads
