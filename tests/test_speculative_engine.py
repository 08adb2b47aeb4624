"""Draft/target strategies on real engines: the draft in process, the target over HTTP.

Both are the embedded 0.5B (CI starts no second model): what is checked is the mechanism (calls
routed to the right model, each model's tokens and calls accounted on its own, the decisions
recorded consistently with those calls), never what the model writes. The 0.5B -> 1.5B pair runs
in ``benchmarks/speculative.py`` and the leaderboard.
"""

import math

import numpy as np
import pytest

from reasoning import Controller, Message, Problem, Request, Sampling
from reasoning.engine.models import fingerprint
from reasoning.probes.atts_calibration import ChunkSettings, collect_calibration
from reasoning.probes.probe import Probe, ProbeCard
from reasoning.strategies import ATTS, Arbitrage, SpecReason, SpecThinking, TrimR

pytestmark = pytest.mark.engine

PROBLEMS = [
    Problem("a", "Tom has 3 apples and buys 4 more. How many apples does he have?", answer="7"),
    Problem("b", "What is 15 * 4 - 12?", answer="48"),
]


def pair(engine, remote) -> Controller:
    return Controller({"draft": engine, "target": remote}, seed=3)


async def test_prompt_logprobs_agree_in_process_and_over_http(engine, remote) -> None:
    request = Request(
        (Message("user", "What is 2 + 2?"),), Sampling(max_tokens=1), "2 + 2 = 4, so the answer is 4."
    )
    local, served = await engine.prompt_logprobs(request), await remote.prompt_logprobs(request)
    assert len(local) == len(served) == engine.prompt_tokens(request) - 1
    assert [t.token for t in local] == [t.token for t in served]
    assert "".join(t.token for t in local[-5:]).endswith("answer is 4.")
    assert all(t.logprob <= 0.0 and math.isfinite(t.logprob) for t in local)
    assert np.mean([abs(a.logprob - b.logprob) for a, b in zip(local, served, strict=True)]) < 0.1


async def test_spec_reason_routes_judgements_and_rewrites_to_the_target(engine, remote) -> None:
    strategy = SpecReason(token_budget=40, step_tokens=16, answer_tokens=8)
    run = await pair(engine, remote).run(PROBLEMS[0], strategy)
    assert run.stop_reason in ("done", "no_answer"), run.error  # ran its course (an answer or not)
    [c] = run.candidates
    s = c.scores
    assert s["draft_steps"] >= 1 and 0 <= s["draft_steps_accepted"] <= s["draft_steps"]
    assert s["target_steps"] == s["draft_steps"] - s["draft_steps_accepted"]  # first_n_target = 0
    # One judgement per draft step, one call per rewritten step, maybe the forced answer: all on the target.
    assert s["target_calls"] == s["draft_steps"] + s["target_steps"] + s["forced_answer"]
    by = run.usage_by_backend
    assert (by["draft"]["calls"], by["target"]["calls"]) == (s["draft_calls"], s["target_calls"])
    assert (by["draft"]["output_tokens"], by["target"]["output_tokens"]) == (
        s["draft_tokens"],
        s["target_tokens"],
    )
    assert run.usage["output_tokens"] == c.output_tokens == s["draft_tokens"] + s["target_tokens"]


async def test_spec_thinking_accounts_each_model_separately(engine, remote) -> None:
    strategy = SpecThinking(max_tokens=48, segment_tokens=16, peek_tokens=6, verify_tokens=8, answer_tokens=8)
    run = await pair(engine, remote).run(PROBLEMS[1], strategy)
    assert run.stop_reason in ("done", "no_answer"), run.error  # ran its course (an answer or not)
    [c] = run.candidates
    by, s = run.usage_by_backend, c.scores
    assert s["segments"] >= 1 and by["draft"]["calls"] == s["draft_calls"] >= 1
    assert (by["draft"]["output_tokens"], by["target"]["output_tokens"]) == (
        s["draft_tokens"],
        s["target_tokens"],
    )
    assert s["kept_tokens"] <= 48 + 8  # the trace's cap, plus the forced answer


async def test_atts_calibrates_then_takes_over_chunks_by_their_p_values(engine, remote, tmp_path) -> None:
    chunk = ChunkSettings(draft_tokens=12)
    calibration, runs = await collect_calibration(pair(engine, remote), PROBLEMS, chunk, samples=2)
    assert all(r.usage_by_backend["target"]["calls"] == r.usage_by_backend["draft"]["calls"] for r in runs)
    path = tmp_path / "atts.json"
    calibration.save(path)
    strategy = ATTS(calibration=str(path), alpha=0.5, n=2, turns=2, draft_tokens=12, target_tokens=12)
    run = await pair(engine, remote).run(PROBLEMS[0], strategy)
    assert run.stop_reason in ("done", "no_answer"), run.error  # ran its course (an answer or not)
    chunks = sum(c.scores["chunks"] for c in run.candidates)
    rejected = sum(c.scores["rejected"] for c in run.candidates)
    assert chunks >= 2 and 0 <= rejected <= chunks
    # The target scores every chunk (one prefill) and continues each rejected one: nothing else.
    assert run.usage_by_backend["target"]["calls"] == chunks + rejected
    assert run.usage_by_backend["draft"]["output_tokens"] == sum(
        c.scores["draft_tokens"] for c in run.candidates
    )


async def test_arbitrage_escalates_where_the_router_says(engine, remote, tmp_path) -> None:
    model = fingerprint("qwen2.5-coder-0.5b-instruct")
    layers, width = [12], 896
    card = ProbeCard(
        kind="advantage",
        model={"name": model.name, "sha256": model.sha256},
        layers=layers,
        hidden_size=width,
        position="step-end",
        hidden=[],
        training_data_sha256="0" * 64,
        router={
            "escalate_rate": 1.0,
            "threshold": 0.5,
            "calibration_escalation_rate": 1.0,
            "spearman": 0.0,
            "auroc": 0.5,
            "steps": 1,
        },
    )
    arrays = {
        "mean": np.zeros(width),
        "scale": np.ones(width),
        "w0": np.zeros((1, width)),
        "b0": np.array([5.0]),
    }
    probe = str(Probe(card, arrays).save(tmp_path / "always"))  # P(target better) ~ 1 on every step
    strategy = Arbitrage(probe=probe, max_steps=2, step_tokens=12, max_tokens=24)
    run = await pair(engine, remote).run(PROBLEMS[1], strategy)
    assert run.stop_reason in ("done", "no_answer"), run.error  # ran its course (an answer or not)
    [c] = run.candidates
    assert c.scores["steps"] >= 1 and c.scores["escalated"] == c.scores["steps"]
    # Every draft step was read by the router (hidden states on the draft) and regenerated by the target.
    assert run.usage_by_backend["target"]["calls"] == c.scores["steps"]
    assert run.usage_by_backend["draft"]["calls"] == 2 * c.scores["steps"]  # step + router read


async def test_trimr_checks_thoughts_on_the_verifier_while_the_solver_decodes(engine, remote) -> None:
    # Every blank line a thought (the 0.5B rarely writes TrimR's cues); the solver is the target.
    strategy = TrimR(segment="paragraph", max_tokens=64, answer_tokens=8, temperature=0.0)
    run = await pair(engine, remote).run(PROBLEMS[0], strategy)
    assert run.stop_reason in ("done", "no_answer"), run.error  # ran its course (an answer or not)
    main, by, s = run.candidates[0], run.usage_by_backend, run.candidates[0].scores
    checks = [c for c in run.candidates if "check" in c.scores]
    assert len(checks) == s["checks"] == by["draft"]["calls"] and all(c.backend == "draft" for c in checks)
    assert by["draft"]["output_tokens"] == s["verifier_tokens"] <= s["checks"]  # one token a check
    # One solver trace, plus the forced answer after a cut: nothing else on the target.
    assert by["target"]["calls"] == 1 + s["forced_answer"]
    assert by["target"]["output_tokens"] == s["solver_tokens"] == main.output_tokens
    assert (s["cut_thought"] >= 0) == (main.finish_reason in ("overthinking", "underthinking"))
