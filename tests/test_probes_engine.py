"""The probe pipeline and online early exit on the real engine (tiny traces, a hand-set probe)."""

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import decoded_tokens

from reasoning import Controller, Problem, Request, Sampling
from reasoning.backends.openai_server import OpenAIBackend
from reasoning.engine.models import fingerprint
from reasoning.evals.probing import collect_traces, compute_features
from reasoning.probes.conformal import GUARANTEE
from reasoning.probes.cues import CueSet
from reasoning.probes.exit import EXIT_PHRASE
from reasoning.probes.probe import Probe, ProbeCard
from reasoning.problem import default_prompt
from reasoning.strategies import DifficultyRouter, EarlyExit, LTPrune, LTSelect

pytestmark = pytest.mark.engine

MODEL = fingerprint("qwen2.5-coder-0.5b-instruct")
LAYERS = [6, 24]
EVERY = CueSet((), step_boundary=False, every=12)
PROBLEMS = [
    Problem("a", "Tom has 3 apples and buys 4 more. How many apples does he have?", answer="7"),
    Problem("b", "What is 15 * 4 - 12?", answer="48"),
]


def always_exit(tmp_path: Path) -> str:
    """A probe that is sure everywhere (p ~ 1) with a rule that then exits: set {safe}."""
    width = 896 * len(LAYERS)
    card = ProbeCard(
        kind="exit",
        model={"name": MODEL.name, "sha256": MODEL.sha256},
        layers=LAYERS,
        hidden_size=896,
        position="decision-point",
        cues=EVERY.to_dict(),
        exit_phrase=EXIT_PHRASE,
        hidden=[],
        training_data_sha256="0" * 64,
        calibration={
            "alpha": 0.5,
            "q_pos": 0.5,
            "q_neg": 0.5,
            "n_pos": 1,
            "n_neg": 1,
            "strict": True,
            "guarantee": GUARANTEE,
            "exit_threshold": 0.5,
            "calibration_exit_rate_unsafe": 0.0,
            "calibration_exit_rate_safe": 1.0,
        },
    )
    arrays = {
        "mean": np.zeros(width),
        "scale": np.ones(width),
        "w0": np.zeros((1, width)),
        "b0": np.array([10.0]),
    }
    return str(Probe(card, arrays).save(tmp_path / "always"))


async def test_collect_and_features_agree_with_direct_reads(engine) -> None:
    traces = await collect_traces(engine, PROBLEMS, cues=EVERY, max_tokens=40, exit_tokens=12)
    for trace in traces:
        assert [e["position"] for e in trace["events"]] == [12, 24, 36][: len(trace["events"])]
        assert all(e["label"] in (0, 1) and 1 <= e["tokens"] <= 12 for e in trace["events"])
    data = await compute_features(engine, traces, LAYERS)
    assert data.features.shape == (sum(len(t["events"]) for t in traces), 2 * 896)
    assert data.meta["model"]["sha256"] == MODEL.sha256 and data.meta["layers"] == LAYERS
    # The batched full-text read equals reading the point's own prefix (bf16 engine).
    trace, event = traces[0], traces[0]["events"][1]
    request = Request(default_prompt(PROBLEMS[0]), Sampling(), "".join(trace["tokens"][: event["position"]]))
    direct = (await engine.hidden_states(request, LAYERS)).reshape(-1)
    row = data.features[1].astype(np.float32)
    assert np.linalg.norm(row - direct) <= 0.05 * np.linalg.norm(direct)


async def test_early_exit_online_stops_the_trace_in_the_engine(backend, tmp_path) -> None:
    before = await decoded_tokens(backend)
    strategy = EarlyExit(probe=always_exit(tmp_path), max_tokens=200, exit_tokens=16)
    run = await Controller(backend, seed=4).run(PROBLEMS[1], strategy)
    await asyncio.sleep(1.0)
    [candidate] = run.candidates
    assert candidate.finish_reason == "exit" and candidate.scores["exit_token"] == 12
    assert EXIT_PHRASE in candidate.text and candidate.scores["exit_tokens"] <= 16
    # Tokens decoded while the probe read hidden states are charged; far fewer than 200 in all.
    assert run.usage["output_tokens"] < 100
    engine_side = await decoded_tokens(backend) - before
    if isinstance(backend, OpenAIBackend):
        # Over HTTP the server keeps decoding into the socket while the probe reads hidden states,
        # and until it sees the connection close: tokens never delivered, so never charged, and
        # how many depends on the machine's speed (14 on one CI machine). The mechanism: the
        # server aborted the request long before its 200 tokens.
        assert engine_side < 100, (engine_side, run.usage)
    else:  # in process, the engine aborts at once and every decoded token is charged
        assert engine_side - run.usage["output_tokens"] <= 6, (engine_side, run.usage)


def test_cli_pipeline_then_solve_with_the_probe(tmp_path, server) -> None:
    """probe collect (with features) -> train -> calibrate -> solve --strategy early-exit.

    Both engine commands run against the session's server (`--base-url`, started with hidden
    states): the pipeline is the CLI's, and no engine starts twice for it.
    """
    data = tmp_path / "tiny.jsonl"
    rows = [
        {"id": f"q{i}", "question": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)} for i in range(1, 7)
    ]
    rows += [{"id": f"h{i}", "question": f"What is {i}23457 * 98{i}71?", "answer": "1"} for i in range(1, 7)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cli = [sys.executable, "-m", "reasoning.cli"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def run(*args: str, timeout: int = 600) -> str:
        done = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=timeout, env=env)
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        return done.stdout

    stem = tmp_path / "tiny"
    out = run("probe", "collect", "--dataset", str(data), "--limit", "12", "--out", str(stem),
              "--max-tokens", "48", "--every", "12", "--cue-words", "", "--no-step-boundary",
              "--layers", "12,24", "--base-url", f"{server.url}/v1")  # fmt: skip
    assert "decision points per trace" in out and (tmp_path / "tiny.safetensors").exists()
    from reasoning.probes.data import DecisionPoints

    full = DecisionPoints.load(stem)
    assert full.labels.min() == 0 and full.labels.max() == 1, full.labels
    order = np.arange(full.traces)
    full.subset(order[order % 2 == 0]).save(tmp_path / "train")
    full.subset(order[order % 2 == 1]).save(tmp_path / "calib")
    out = run(
        "probe", "train", "--data", str(tmp_path / "train"), "--out", str(tmp_path / "p"), "--hidden", "",
        "--force",  # a dozen problems: far below the minimum counts, on purpose (the mechanism only)
    )  # fmt: skip
    assert "auroc_val" in out
    out = run(
        "probe",
        "calibrate",
        "--probe",
        str(tmp_path / "p"),
        "--data",
        str(tmp_path / "calib"),
        "--alpha",
        "0.3",
        "--force",
    )
    assert "guarantee: per decision point" in out
    card = json.loads((tmp_path / "p.json").read_text())
    assert card["calibration"]["alpha"] == 0.3 and card["model"]["sha256"] == MODEL.sha256
    # A question the probe was not fitted on ("What is 2 + 3?" is in tiny.jsonl: refused as overlap).
    out = run("solve", "--question", "What is 7 + 2?", "--gold", "9", "--strategy", "early-exit",
              "-p", f"probe={tmp_path / 'p.json'}", "-p", "max_tokens=64",
              "--base-url", f"{server.url}/v1")  # fmt: skip
    assert "answer:" in out


async def test_latent_trajectory_select_and_prune_on_the_engine(engine) -> None:
    run = await Controller(engine, seed=5).run(
        PROBLEMS[0], LTSelect(n=3, segment=8, layers=(12, 24), max_tokens=48)
    )
    assert len(run.candidates) == 3
    assert all("lt_segments" in c.scores for c in run.candidates)
    assert any(math.isfinite(c.scores.get("lt_cumulative", math.nan)) for c in run.candidates)
    run = await Controller(engine, seed=6).run(
        PROBLEMS[1], LTPrune(n=3, keep=1, horizon=24, segment=8, layers=(12, 24), max_tokens=96)
    )
    # Every trace stops at the 24-token horizon; the one kept decodes on, the others end there.
    pruned = [c for c in run.candidates if c.scores.get("pruned") == 1.0]
    past = [c for c in run.candidates if c.output_tokens > 24]
    assert all(c.finish_reason == "cancelled" and c.answer is None and c.output_tokens == 24 for c in pruned)
    assert len(past) <= 1 and (not pruned or len(past) == 1)
    assert run.usage["cancelled_samples"] == 0  # nothing raced the decision


async def test_difficulty_router_reads_the_prompt_state_on_the_engine(engine, tmp_path) -> None:
    width = 896
    card = ProbeCard(
        kind="difficulty",
        model={"name": MODEL.name, "sha256": MODEL.sha256},
        layers=[12],
        hidden_size=width,
        position="prompt",
        hidden=[],
        training_data_sha256="0" * 64,
    )
    arrays = {
        "mean": np.zeros(width),
        "scale": np.ones(width),
        "w0": np.zeros((1, width)),
        "b0": np.array([1.0]),
    }
    path = Probe(card, arrays).save(tmp_path / "difficulty")
    router = DifficultyRouter(probe=str(path), easy="single:max_tokens=32", hard="self-consistency:n=2")
    run = await Controller(engine, seed=7).run(PROBLEMS[0], router)
    [candidate] = run.candidates  # p = sigmoid(1) = 0.73 >= 0.5: the easy route, one sample
    assert candidate.scores["route"] == 1.0 and abs(candidate.scores["p_easy"] - 0.731) < 0.01
    assert run.usage["calls"] == 2  # the prompt-state read and the one sample
