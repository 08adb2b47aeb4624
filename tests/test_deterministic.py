"""Reproducible mode (`Controller(deterministic=True)`, ``solve --deterministic``), on scripted backends.

The mechanism is asserted, not the engine's numerics (tests/test_reproducible_engine.py runs it on
the real engine): in deterministic mode no two requests are ever in flight at once, problems take
turns on an engine, each problem starts from an emptied prefix cache, and what is sampled (the
prompts and the seeds) is exactly what the batched mode samples. The scripted backend cannot
admit a request's samples in one step (`AdmitsAtOnce`, the in-process engine can), so its
``n`` samples go out as ``n`` requests, one after another; a backend that can gets the request
whole.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncGenerator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke

from reasoning import Budget, ConfigError, Controller, Problem, ScriptedBackend
from reasoning.backend import AdmitsAtOnce, Chunk, Request
from reasoning.compose import build
from reasoning.concurrency import run_in_order
from reasoning.errors import BackendError
from reasoning.verifiers.process import ScriptedScorer

PROBLEM = Problem("p", "What is 6 times 7?", answer="42")


def steps(request: Request, number: int) -> str:
    """A new step per request; the third step answers."""
    done = request.prefix.count("\n\n")
    if done >= 2:
        return f"s{number} so \\boxed{{42}}"
    return f"s{number} work\n\nmore"


SCORER = ScriptedScorer(lambda path: 1.0 / (1 + int(path[-1].split()[0][1:])))
TREES = [
    "beam-search(n=4, width=2, scorer=verifier)",
    "dvts(n=4, width=2, scorer=verifier)",
    "particle-filtering(particles=4, scorer=verifier)",
    "a-star(k=3, budget=12, frontier=2, scorer=verifier)",
]


def backend(seconds: float = 0.001) -> ScriptedBackend:
    return ScriptedBackend(steps, seconds_per_token=seconds)


async def _run(spec: str, deterministic: bool) -> tuple[ScriptedBackend, Any]:
    engine = backend()
    controller = Controller(engine, verifier=SCORER, seed=5, deterministic=deterministic)
    return engine, await controller.run(PROBLEM, build(spec))


# -- the primitive ----------------------------------------------------------------------------------


async def test_run_in_order_awaits_one_after_another() -> None:
    events: list[str] = []

    async def job(name: str) -> str:
        events.append(f"start {name}")
        await asyncio.sleep(0.001)
        events.append(f"end {name}")
        return name

    assert await run_in_order(job("a"), job("b"), job("c")) == ["a", "b", "c"]
    assert events == ["start a", "end a", "start b", "end b", "start c", "end c"]


async def test_run_in_order_raises_the_error_and_closes_what_never_started() -> None:
    started: list[int] = []

    async def job(i: int) -> int:
        started.append(i)
        if i == 1:
            raise BackendError("boom", backend="x")
        return i

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would be a warning
        with pytest.raises(BackendError, match="boom"):
            await run_in_order(job(0), job(1), job(2), job(3))
    assert started == [0, 1]


# -- requests of one problem ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", TREES)
async def test_tree_search_sends_one_request_at_a_time(spec: str) -> None:
    batched, free = await _run(spec, deterministic=False)
    serial, run = await _run(spec, deterministic=True)
    assert serial.peak_streaming == 1
    assert batched.peak_streaming > 1, "the batched mode should overlap requests (else this proves nothing)"
    assert run.deterministic and not free.deterministic
    # Only the scheduling changed: the same samples, with the same seeds, in the same order (a
    # request's n samples as n requests, seeded seed + i like an engine's own fan-out).
    assert [(r.prefix, r.sampling) for r in serial.requests] == [
        (r.prefix, replace(r.sampling, n=1, seed=r.sampling.seed + i))
        for r in batched.requests
        for i in range(r.sampling.n)
    ]
    assert [c.text for c in run.candidates] == [c.text for c in free.candidates]
    assert run.answer == free.answer == "42"


class AtOnce(ScriptedBackend):
    """A scripted backend that can admit a request's samples in one step (`AdmitsAtOnce`)."""

    def __init__(self) -> None:
        super().__init__(steps, seconds_per_token=0.001)
        self.at_once: list[Request] = []

    def stream_at_once(self, request: Request) -> AsyncGenerator[Chunk, None]:
        self.at_once.append(request)
        return self.stream(request)


async def test_a_backend_that_admits_samples_at_once_gets_the_request_whole() -> None:
    engine, batched = AtOnce(), backend()
    search = build("beam-search(n=4, width=2, scorer=verifier)")
    run = await Controller(engine, verifier=SCORER, seed=5, deterministic=True).run(PROBLEM, search)
    await Controller(batched, verifier=SCORER, seed=5).run(PROBLEM, search)
    assert isinstance(engine, AdmitsAtOnce)
    assert engine.peak_streaming == 1 and run.answer == "42"
    assert engine.at_once == [r for r in engine.requests if r.sampling.n > 1] != []
    sent = [[(r.prefix, r.sampling) for r in b.requests] for b in (engine, batched)]
    assert sent[0] == sent[1]


async def test_a_judge_scorer_is_asked_one_request_at_a_time() -> None:
    engine = backend()
    run = await Controller(engine, seed=1, deterministic=True).run(PROBLEM, build("beam(n=4, width=2)"))
    judged = [r for r in engine.requests if r.sampling.logprobs == 20 and r.sampling.max_tokens == 1]
    assert len(judged) == len([c for c in run.candidates if "step_score" in c.scores]) > 4
    assert engine.peak_streaming == 1


async def test_compositions_run_their_inner_strategies_in_turn() -> None:
    engine = backend()
    spec = "self-consistency(n=3, inner=best-of-n(n=2))"
    run = await Controller(engine, seed=2, deterministic=True).run(PROBLEM, build(spec))
    assert engine.peak_streaming == 1
    samples = [r for r in engine.requests if r.sampling.temperature > 0]  # not the judge's
    assert [r.sampling.n for r in samples] == [1] * 6 and len(run.candidates) == 6
    assert run.usage["calls"] == 3 + 6  # three sampling calls of two samples, six judge calls


# -- problems on one engine -------------------------------------------------------------------------


async def test_problems_take_turns_each_from_an_empty_prefix_cache() -> None:
    engine = backend(seconds=0.002)
    controller = Controller(engine, verifier=SCORER, deterministic=True)
    problems = [Problem(f"p{i}", PROBLEM.question) for i in range(4)]
    runs = await asyncio.wait_for(_gather(controller.run(p, build("single")) for p in problems), 60)
    assert engine.peak_streaming == 1
    assert engine.prefix_resets == 4
    # Each problem's first request found the cache empty, though every problem has the same prompt.
    firsts = [run.candidates[0] for run in runs]
    assert [c.cached_tokens for c in firsts] == [0, 0, 0, 0]


async def test_samples_sent_in_turn_count_the_cached_prompt_of_the_request_once() -> None:
    # The request's prompt is counted once; so are its cached tokens: the first single-sample
    # request's (the later ones hit the cache the first one filled, but are not counted again).
    batched, in_turn = backend(), backend()
    spec = build("self-consistency(n=3)")
    plain = await Controller(batched, seed=3).run(PROBLEM, spec)
    turned = await Controller(in_turn, seed=3, deterministic=True).run(PROBLEM, spec)
    assert [r.sampling.n for r in in_turn.requests] == [1, 1, 1]
    assert turned.usage["prompt_tokens"] == plain.usage["prompt_tokens"] > 0
    assert turned.usage["cached_tokens"] == plain.usage["cached_tokens"] == 0


async def test_waiting_for_a_turn_is_not_charged_to_the_budget() -> None:
    engine = backend(seconds=0.01)  # about 0.1 s per problem
    controller = Controller(engine, budget=Budget(seconds=0.5), deterministic=True)
    problems = [Problem(f"p{i}", PROBLEM.question) for i in range(8)]  # about 0.8 s in all
    runs = await _gather(controller.run(p, build("single(max_tokens=10)")) for p in problems)
    assert [r.stop_reason for r in runs] == ["done"] * 8


async def _gather(runs: Any) -> list[Any]:
    from reasoning.concurrency import run_all

    return await run_all(*runs)


# -- what cannot be made reproducible ----------------------------------------------------------------


class NoCache:
    """A backend that cannot empty a prefix cache (a remote server)."""

    name = "remote"

    async def stream(self, request: Request) -> Any:
        yield Chunk(0, "4", 1, 1, 0, finish_reason="stop")


def test_a_backend_that_cannot_empty_its_cache_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"deterministic.*'remote' \(NoCache\).*backend vllm"):
        Controller(NoCache(), deterministic=True)
    with pytest.raises(ConfigError, match="'remote'"):
        Controller({"draft": backend(), "target": NoCache()}, deterministic=True)
    Controller(NoCache())  # fine without deterministic


def test_the_cli_records_deterministic_and_refuses_it_with_a_server(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    code, text = invoke(
        "solve", "--question", "2+2?", "--backend", "scripted", "--script", "\\boxed{4}",
        "--strategy", "self-consistency", "-p", "n=2", "--deterministic", "--output", str(out),
    )  # fmt: skip
    assert code == 0, text
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["deterministic"] is True and row["spec"]["deterministic"] is True
    server = "http://127.0.0.1:9/v1"
    code, text = invoke("solve", "--question", "2+2?", "--base-url", server, "--deterministic")
    assert code != 0
    assert "--deterministic" in text and "not a server" in text and "Traceback" not in text
