"""A deterministic proxy (``reasoning proxy --deterministic``) on scripted backends.

The mechanism is asserted (the real engine's run: ``test_the_engine_repeats_a_sampled_reply``,
marker ``engine``): one request at a time, each from an emptied prefix cache, a request's
samples admitted at once where the engine can (else one by one), the seed fixed when the
request gives none, ``deterministic`` in the reply and the record; a backend that cannot be
made deterministic (an upstream server) refused before anything starts.
"""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import invoke
from test_proxy import client, serving
from test_proxy_cli import command

from reasoning import Chunk, Request, ScriptedBackend
from reasoning.concurrency import run_all
from reasoning.controller import _TURNS
from reasoning.errors import ConfigError
from reasoning.evals.run import read_results
from reasoning.record import without_clock
from reasoning.serving.proxy import DETERMINISTIC_SEED, ProxySettings, create_app

ANSWER = "The answer is \\boxed{4}."
ASK = [{"role": "user", "content": "2+2?"}]


def words(request: Request, number: int) -> str:
    """A reply that depends on the sample's seed alone, as an engine's would."""
    return f"w{request.sampling.seed} so \\boxed{{4}}"


class AtOnce(ScriptedBackend):
    """A scripted engine that admits a request's samples in one step (`AdmitsAtOnce`)."""

    def __init__(self) -> None:
        super().__init__(words, seconds_per_token=0.002)
        self.at_once: list[Request] = []

    def stream_at_once(self, request: Request) -> AsyncGenerator[Chunk, None]:
        self.at_once.append(request)
        return self.stream(request)


class NoCache:
    """A backend that cannot empty a prefix cache (an upstream server)."""

    name = "remote"
    model = "m"

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        yield Chunk(0, ANSWER, 1, 1, 0, finish_reason="stop")


async def test_the_same_request_without_a_seed_gets_the_same_reply(tmp_path: Path) -> None:
    backend = ScriptedBackend(words, seconds_per_token=0.001)
    async with serving(backend, tmp_path, deterministic=True) as url:
        replies = [
            await client(url).chat.completions.create(model="self-consistency(n=3)@m", messages=ASK)
            for _ in range(2)
        ]
    extras = [(r.model_extra or {})["reasoning"] for r in replies]
    assert [e["seed"] for e in extras] == [DETERMINISTIC_SEED] * 2
    assert all(e["deterministic"] for e in extras)
    assert replies[0].choices[0].message.content == replies[1].choices[0].message.content
    runs = read_results(tmp_path / "proxy.jsonl")
    first, second = (runs[r.id] for r in replies)
    assert first.deterministic and second.deterministic
    same = [without_clock(run) | {"problem_id": ""} for run in (first, second)]
    assert same[0] == same[1]  # the record repeats, timings aside
    assert backend.prefix_resets == 2
    assert [r.sampling.n for r in backend.requests] == [1] * 6  # no AdmitsAtOnce: one by one


async def test_without_deterministic_a_request_without_a_seed_draws_one(tmp_path: Path) -> None:
    async with serving(ScriptedBackend([ANSWER]), tmp_path) as url:
        reply = await client(url).chat.completions.create(model="m", messages=ASK)
    reasoning = (reply.model_extra or {})["reasoning"]
    assert reasoning["deterministic"] is False and isinstance(reasoning["seed"], int)


async def test_requests_are_solved_one_at_a_time_each_from_an_empty_cache(tmp_path: Path) -> None:
    backend = ScriptedBackend(words, seconds_per_token=0.005)
    async with (
        serving(backend, tmp_path, deterministic=True) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        bodies = [{"model": "m", "messages": ASK, "seed": i, "stream": i % 2 == 0} for i in range(6)]
        responses = await run_all(*(http.post("/chat/completions", json=b) for b in bodies))
    assert [r.status_code for r in responses] == [200] * 6
    assert backend.peak_streaming == 1
    assert backend.prefix_resets == 6


async def test_an_engine_that_admits_samples_at_once_gets_the_request_watched_and_capped(
    tmp_path: Path,
) -> None:
    engine = AtOnce()
    async with (
        serving(engine, tmp_path, deterministic=True) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        body = {"model": "self-consistency(n=3)@m", "messages": ASK, "max_tokens": 5, "stream": True}
        response = await http.post("/chat/completions", json=body)
    assert response.status_code == 200
    [request] = engine.at_once
    assert request.sampling.n == 3 and request.sampling.max_tokens == 5  # the client's cap applied
    progress = [
        json.loads(line[len(": reasoning ") :])
        for line in response.text.splitlines()
        if line.startswith(": reasoning")
    ]
    assert progress and progress[-1]["samples"] == 3  # the watch saw the call


def test_a_backend_that_cannot_empty_its_cache_is_refused_when_the_app_is_made() -> None:
    with pytest.raises(ConfigError, match=r"deterministic.*'remote' \(NoCache\)"):
        create_app(NoCache(), ProxySettings(model="m", records=None, deterministic=True))
    with pytest.raises(ConfigError, match="'remote'"):
        create_app(
            {"draft": ScriptedBackend([ANSWER]), "target": NoCache()},
            ProxySettings(model="g", records=None, deterministic=True),
        )
    create_app(NoCache(), ProxySettings(model="m", records=None))  # fine without deterministic


async def test_a_run_leaves_no_turn_behind(tmp_path: Path) -> None:
    backend = ScriptedBackend([ANSWER])
    before = len(_TURNS)
    async with serving(backend, tmp_path, deterministic=True) as url:
        for _ in range(3):
            await client(url).chat.completions.create(model="m", messages=ASK)
    gc.collect()
    assert len(_TURNS) == before  # each request's wrapper took a turn of its own, forgotten with it


# -- the command ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"], "upstream server (http://127.0.0.1:9/v1)"),
        (["--base-url", "a=http://127.0.0.1:9/v1", "--base-url", "b=http://127.0.0.1:8/v1", "--model", "a=x",
          "--model", "b=y"], "upstream server (http://127.0.0.1:9/v1, http://127.0.0.1:8/v1)"),
        (["--backend", "scripted", "--max-concurrent", "4"], "--max-concurrent 4: --deterministic"),
    ],
    ids=["server", "group-of-servers", "concurrent"],
)  # fmt: skip
def test_the_command_refuses_what_cannot_be_deterministic_before_anything_starts(
    args: list[str], fragment: str
) -> None:
    code, output = invoke("proxy", "--deterministic", "--port", "0", *args)
    text = " ".join(output.split())
    assert code != 0 and fragment in text and "Traceback" not in text, text


def test_the_command_serves_deterministic_replies(tmp_path: Path) -> None:
    with command(tmp_path, "--deterministic", "--max-concurrent", "1") as (process, url):
        body: dict[str, Any] = {"model": "self-consistency(n=2)@scripted", "messages": ASK}
        replies = [httpx.post(f"{url}/chat/completions", json=body, timeout=30).json() for _ in range(2)]
        process.terminate()
        _, banner = process.communicate(timeout=30)
    flat = " ".join(banner.split())  # the console wraps it
    assert "; deterministic: one request at a time, each from an empty prefix cache" in flat, banner
    assert [r["reasoning"]["seed"] for r in replies] == [0, 0]
    assert all(r["reasoning"]["deterministic"] for r in replies)
    assert replies[0]["choices"] == replies[1]["choices"]


# -- the real engine (collected only in the CPU suite) ------------------------------------------------


@pytest.mark.engine
async def test_the_engine_repeats_a_sampled_reply(engine: Any, tmp_path: Path) -> None:
    async with serving(engine, tmp_path, deterministic=True) as url:
        body = {"model": "self-consistency(n=3, max_tokens=48)@m", "messages": ASK}
        replies = [await client(url).chat.completions.create(**body) for _ in range(2)]
    runs = read_results(tmp_path / "proxy.jsonl")
    same = [without_clock(runs[r.id]) | {"problem_id": ""} for r in replies]
    assert same[0] == same[1]
