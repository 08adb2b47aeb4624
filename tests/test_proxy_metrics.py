"""``GET /metrics``: the proxy's Prometheus metrics, exact under concurrent load, cancels counted.

Runs are held at a gate (a backend that decodes nothing until it is opened), so what the metrics
must say at each moment is known exactly: 16 clients at once with 4 slots are 4 runs in flight
and 12 waiting, then, once the gate opens, 16 requests whose tokens add up to the replies' usage.
Nothing here asserts a duration (the waits are hang guards).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from reasoning import Chunk, Request, ScriptedBackend
from reasoning.serving.proxy import Limits, ProxySettings, create_app, stop_runs
from reasoning.serving.server import free_port

ANSWER = "The answer is \\boxed{4}."
MESSAGES = [{"role": "user", "content": "2+2?"}]
HANG = 60.0
"""Seconds a wait may take before the test fails as hung (never a measurement)."""


class Gate:
    """A scripted backend that holds every call before its first token until `open` is set."""

    def __init__(self, script: list[str], *, model: str = "m", name: str = "gate") -> None:
        self.inner = ScriptedBackend(script, model=model, name=name)
        self.model = model
        self.open = asyncio.Event()
        self.held = 0
        """Calls waiting at the gate now."""

    @property
    def name(self) -> str:
        return self.inner.name

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        self.held += 1
        try:
            await self.open.wait()
        finally:
            self.held -= 1
        async with contextlib.aclosing(self.inner.stream(request)) as chunks:
            async for chunk in chunks:
                yield chunk


@contextlib.asynccontextmanager
async def serving(backend: Any, tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[str, FastAPI]]:
    """The proxy over `backend` on uvicorn, a free loopback port; its base URL and app."""
    settings.setdefault("records", tmp_path / "proxy.jsonl")
    settings.setdefault("model", "m")
    app = create_app(backend, ProxySettings(**settings))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="error", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    with anyio.fail_after(30):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.config.port}", app
    finally:
        server.should_exit = True
        await task


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    """Every sample of ``GET /metrics``, by name and sorted labels."""
    response = await http.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels` (0 when it was never counted)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


async def until(http: httpx.AsyncClient, url: str, check: Callable[[Samples], bool]) -> Samples:
    """Scrape until `check` holds (a hang guard of HANG seconds); the samples that passed."""
    with anyio.fail_after(HANG):
        while not check(samples := await scrape(http, url)):
            await asyncio.sleep(0.02)
    return samples


async def whole(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await http.post(f"{url}/v1/chat/completions", json=body)
    return response.status_code, response.json()


async def streamed(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A streamed request's status and its usage chunk (``include_usage``)."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    usage: dict[str, Any] = {}
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line.removeprefix("data: ")).get("usage") or usage
    return response.status_code, {"usage": usage}


CLIENTS = 16
SLOTS = 4


async def test_counters_add_up_exactly_under_16_concurrent_clients(tmp_path: Path) -> None:
    gate = Gate([ANSWER, "\\boxed{4} again", "so \\boxed{4}"])
    strategies = ["single", "self-consistency(n=2)", "self-consistency(n=3)", "first-finish(n=2)"]
    bodies = [{"model": f"{strategies[i % 4]}@m", "messages": MESSAGES, "seed": i} for i in range(CLIENTS)]
    async with (
        serving(gate, tmp_path, limits=Limits(max_concurrent=SLOTS)) as (url, _),
        httpx.AsyncClient(timeout=HANG) as http,
    ):
        before = await scrape(http, url)
        assert value(before, "reasoning_proxy_runs_in_flight") == 0
        assert total(before, "reasoning_proxy_requests_total") == 0
        async with anyio.create_task_group() as group:
            replies: list[tuple[int, dict[str, Any]]] = []

            async def one(i: int) -> None:
                send = streamed if i % 2 else whole
                replies.append(await send(http, url, bodies[i]))

            for i in range(CLIENTS):
                group.start_soon(one, i)
            # every slot taken, the rest queued, nothing answered yet: exactly
            held = await until(
                http,
                url,
                lambda s: (
                    value(s, "reasoning_proxy_queue_depth") == CLIENTS - SLOTS
                    and value(s, "reasoning_proxy_runs_in_flight") == SLOTS
                ),
            )
            assert gate.held == SLOTS
            assert total(held, "reasoning_proxy_requests_total") == 0
            assert total(held, "reasoning_proxy_tokens_total") == 0
            gate.open.set()
            during = await scrape(http, url)  # while the queue drains
            assert value(during, "reasoning_proxy_runs_in_flight") <= SLOTS
        after = await scrape(http, url)
    assert [status for status, _ in replies] == [200] * CLIENTS, replies
    usages = [reply["usage"] for _, reply in replies]
    assert value(after, "reasoning_proxy_runs_in_flight") == 0
    assert value(after, "reasoning_proxy_queue_depth") == 0
    for spec in strategies:
        name = spec.split("(")[0]
        sent = sum(1 for b in bodies if b["model"].split("(")[0].removesuffix("@m") == name)
        assert value(after, "reasoning_proxy_requests_total", strategy=name, status="200") == sent, name
        assert value(after, "reasoning_proxy_request_seconds_count", strategy=name) == sent
        assert value(after, "reasoning_proxy_time_to_first_byte_seconds_count", strategy=name) == sent
    assert total(after, "reasoning_proxy_requests_total") == CLIENTS
    for kind, key in (("prompt", "prompt_tokens"), ("output", "completion_tokens")):
        counted = value(after, "reasoning_proxy_tokens_total", kind=kind, model="m")
        assert counted == sum(u[key] for u in usages) > 0, kind
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in usages)
    assert value(after, "reasoning_proxy_tokens_total", kind="cached", model="m") == cached
    assert total(after, "reasoning_proxy_cancels_total") == 0
    assert total(after, "reasoning_proxy_budget_stops_total") == 0


async def test_refusals_budget_stops_and_tokens_by_model_of_a_group(tmp_path: Path) -> None:
    backends = {
        "draft": ScriptedBackend(["First, add.\n\nThe answer is \\boxed{4}."], name="draft", model="small"),
        "target": ScriptedBackend(["8"], name="target", model="big"),
    }
    async with (
        serving(backends, tmp_path, model="pair") as (url, _),
        httpx.AsyncClient(timeout=HANG) as http,
    ):
        spec = await whole(http, url, {"model": "spec-reason@pair", "messages": MESSAGES})
        cut = await whole(
            http,
            url,
            {"model": "single@small", "messages": MESSAGES, "budget": {"output_tokens": 2}},
        )
        bad_json = await http.post(f"{url}/v1/chat/completions", content=b"{")
        no_group = await whole(http, url, {"model": "spec-reason@trio", "messages": MESSAGES})
        unknown = await whole(http, url, {"model": "single@trio", "messages": MESSAGES})
        no_calibration = await whole(http, url, {"model": "atts@pair", "messages": MESSAGES})
        bad = {"model": "arbitrage(router=judge, n=0)@pair", "messages": MESSAGES}
        bad_param = await whole(http, url, bad)
        samples = await scrape(http, url)
    assert spec[0] == 200 and cut[0] == 200 and cut[1]["reasoning"]["stop_reason"] == "budget:output_tokens"
    assert bad_json.status_code == 400 and no_group[0] == 400 and unknown[0] == 404
    assert value(samples, "reasoning_proxy_requests_total", strategy="spec-reason", status="200") == 1
    assert value(samples, "reasoning_proxy_requests_total", strategy="spec-reason", status="400") == 1
    assert value(samples, "reasoning_proxy_requests_total", strategy="single", status="200") == 1
    assert value(samples, "reasoning_proxy_requests_total", strategy="single", status="404") == 1
    assert value(samples, "reasoning_proxy_requests_total", strategy="unknown", status="400") == 1
    # a named strategy refused for its parameters is counted under its name, not as unknown
    assert no_calibration[0] == 400 and bad_param[0] == 400
    assert value(samples, "reasoning_proxy_requests_total", strategy="atts", status="400") == 1
    assert value(samples, "reasoning_proxy_requests_total", strategy="arbitrage", status="400") == 1
    error = no_calibration[1]["error"]
    assert error["code"] == "artefact_required" and error["param"] == "params", error
    assert "-p " not in error["message"] and '"params": {"calibration": ' in error["message"]
    assert value(samples, "reasoning_proxy_budget_stops_total", strategy="single", line="output_tokens") == 1
    by = spec[1]["reasoning"]["usage_by_backend"]
    cut_usage = cut[1]["usage"]
    small = by["draft"]["completion_tokens"] + cut_usage["completion_tokens"]
    assert value(samples, "reasoning_proxy_tokens_total", kind="output", model="small") == small
    assert (
        value(samples, "reasoning_proxy_tokens_total", kind="output", model="big")
        == (by["target"]["completion_tokens"])
    )
    prompt = by["draft"]["prompt_tokens"] + by["target"]["prompt_tokens"] + cut_usage["prompt_tokens"]
    assert total(samples, "reasoning_proxy_tokens_total", kind="prompt") == prompt


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_client_that_leaves_is_counted_as_a_cancel(tmp_path: Path, stream: bool) -> None:
    gate = Gate([ANSWER])  # never opened: the run waits until its client leaves
    body = {"model": "self-consistency(n=2)@m", "messages": MESSAGES, "stream": stream}
    async with (
        serving(gate, tmp_path) as (url, _),
        httpx.AsyncClient(timeout=HANG) as http,
        httpx.AsyncClient(timeout=HANG) as leaving,
    ):

        async def send() -> None:
            if stream:
                async with leaving.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                    async for _ in response.aiter_lines():
                        pass
            else:
                await leaving.post(f"{url}/v1/chat/completions", json=body)

        async with anyio.create_task_group() as group:
            group.start_soon(send)
            await until(http, url, lambda s: value(s, "reasoning_proxy_runs_in_flight") == 1)
            group.cancel_scope.cancel()  # the client gives up: its connection closes
        await leaving.aclose()
        samples = await until(
            http,
            url,
            lambda s: (
                value(
                    s,
                    "reasoning_proxy_cancels_total",
                    strategy="self-consistency",
                    reason="client_disconnect",
                )
                == 1
            ),
        )
        samples = await until(http, url, lambda s: value(s, "reasoning_proxy_runs_in_flight") == 0)
    assert gate.held == 0  # the run's engine request was closed
    assert value(samples, "reasoning_proxy_requests_total", strategy="self-consistency", status="499") == 1
    assert total(samples, "reasoning_proxy_requests_total") == 1
    assert total(samples, "reasoning_proxy_tokens_total") == 0  # no run finished
    assert not (tmp_path / "proxy.jsonl").exists() or not (tmp_path / "proxy.jsonl").read_text()


async def test_runs_a_stop_ends_are_counted_as_cancels_of_the_server(tmp_path: Path) -> None:
    gate = Gate([ANSWER])
    body = {"model": "single@m", "messages": MESSAGES}
    async with serving(gate, tmp_path) as (url, app), httpx.AsyncClient(timeout=HANG) as http:
        async with anyio.create_task_group() as group:
            replies: list[int] = []

            async def send() -> None:
                replies.append((await http.post(f"{url}/v1/chat/completions", json=body)).status_code)

            group.start_soon(send)
            await until(http, url, lambda s: value(s, "reasoning_proxy_runs_in_flight") == 1)
            assert stop_runs(app) == 1
        samples = await until(http, url, lambda s: value(s, "reasoning_proxy_runs_in_flight") == 0)
    assert replies == [503]
    assert value(samples, "reasoning_proxy_cancels_total", strategy="single", reason="server_stopping") == 1
    assert value(samples, "reasoning_proxy_requests_total", strategy="single", status="503") == 1


async def test_each_app_counts_on_a_registry_of_its_own(tmp_path: Path) -> None:
    async with (
        serving(ScriptedBackend([ANSWER]), tmp_path / "a") as (first, _),
        serving(ScriptedBackend([ANSWER]), tmp_path / "b") as (second, _),
        httpx.AsyncClient(timeout=HANG) as http,
    ):
        assert (await whole(http, first, {"model": "m", "messages": MESSAGES}))[0] == 200
        one, other = await scrape(http, first), await scrape(http, second)
    assert value(one, "reasoning_proxy_requests_total", strategy="single", status="200") == 1
    assert total(other, "reasoning_proxy_requests_total") == 0


async def test_metrics_asks_for_the_key_like_every_route(tmp_path: Path) -> None:
    async with (
        serving(ScriptedBackend([ANSWER]), tmp_path, api_key="k") as (url, _),
        httpx.AsyncClient(timeout=HANG) as http,
    ):
        refused = await http.get(f"{url}/metrics")
        allowed = await http.get(f"{url}/metrics", headers={"Authorization": "Bearer k"})
    assert refused.status_code == 401 and allowed.status_code == 200
    assert "reasoning_proxy_runs_in_flight 0.0" in allowed.text
