"""The OpenAI-compatible strategy proxy over the scripted backend: the openai client, raw SSE, curl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest
import uvicorn

from reasoning import Chunk, Request, ScriptedBackend
from reasoning.evals.run import read_results
from reasoning.serving.proxy import Limits, ProxySettings, create_app
from reasoning.serving.server import free_port
from reasoning.strategy import GENERATE_STREAM_INTERVAL

ANSWER = "The answer is \\boxed{4}."


@contextlib.asynccontextmanager
async def serving(backend: Any, tmp_path: Path, **settings: Any) -> AsyncIterator[str]:
    """Serve the proxy over `backend` on a free loopback port; yield its /v1 URL."""
    settings.setdefault("records", tmp_path / "proxy.jsonl")
    app = create_app(backend, ProxySettings(model="m", **settings))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    with anyio.fail_after(10):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        await task


def client(url: str, **kwargs: Any) -> openai.AsyncOpenAI:
    kwargs.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=url, api_key=kwargs.pop("api_key", "none"), **kwargs)


class Gated:
    """A one-sample backend that stops after `hold` tokens until `release` is set."""

    name = "gated"
    model = "gated"

    def __init__(self, tokens: list[str], hold: int) -> None:
        self.tokens = tokens
        self.hold = hold
        self.release = asyncio.Event()
        self.held = asyncio.Event()
        self.cancelled = 0
        self.calls = 0

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        self.calls += 1
        done = False
        try:
            for i, token in enumerate(self.tokens):
                if i == self.hold:
                    self.held.set()
                    await self.release.wait()
                last = i == len(self.tokens) - 1
                done = last
                yield Chunk(0, token, 1, prompt_tokens=5, finish_reason="stop" if last else None)
        finally:
            if not done:
                self.cancelled += 1


# -- choosing the strategy --------------------------------------------------------------------------


async def test_models_lists_the_model_and_each_strategy_at_it(tmp_path: Path) -> None:
    async with serving(ScriptedBackend([ANSWER]), tmp_path) as url:
        ids = [m.id async for m in client(url).models.list()]
    assert ids[0] == "m"
    assert {"self-consistency@m", "single@m", "first-finish@m", "budget-forcing@m"} <= set(ids)


async def test_strategy_by_model_name_and_the_record(tmp_path: Path) -> None:
    async with serving(ScriptedBackend([ANSWER, "\\boxed{5}", ANSWER]), tmp_path) as url:
        reply = await client(url).chat.completions.create(
            model="self-consistency(n=3)@m", messages=[{"role": "user", "content": "2+2?"}]
        )
    extra = reply.model_extra or {}
    assert extra["reasoning"]["strategy"] == "self-consistency(n=3)"
    assert extra["reasoning"]["candidates"] == 3
    assert extra["reasoning"]["answer"] == "4"
    assert reply.choices[0].message.content == ANSWER
    runs = read_results(tmp_path / "proxy.jsonl")
    run = runs[reply.id]
    assert extra["reasoning"]["record_id"] == reply.id
    assert run.strategy == "self-consistency" and run.params["n"] == 3 and len(run.candidates) == 3
    assert run.spec["proxy"]["messages"] == [{"role": "user", "content": "2+2?"}]
    assert reply.usage is not None
    assert (
        reply.usage.completion_tokens
        == run.usage["output_tokens"]
        == sum(c.output_tokens for c in run.candidates)
    )
    assert reply.usage.prompt_tokens == run.usage["prompt_tokens"]
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == run.usage["cached_tokens"]


async def test_extra_body_strategy_params_and_budget(tmp_path: Path) -> None:
    async with serving(ScriptedBackend([ANSWER]), tmp_path) as url:
        reply = await client(url).chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "2+2?"}],
            extra_body={
                "strategy": "self-consistency",
                "params": {"n": 3},
                "budget": {"output_tokens": 2000},
            },
        )
    reasoning = (reply.model_extra or {})["reasoning"]
    assert reasoning["candidates"] == 3
    assert reasoning["budget"]["output_tokens"] == 2000
    assert read_results(tmp_path / "proxy.jsonl")[reply.id].budget["output_tokens"] == 2000


async def test_headers_name_the_strategy_and_the_body_wins_over_them(tmp_path: Path) -> None:
    headers = {
        "X-Reasoning-Strategy": "self-consistency",
        "X-Reasoning-Params": json.dumps({"n": 2}),
        "X-Reasoning-Budget": json.dumps({"calls": 5}),
    }
    async with serving(ScriptedBackend([ANSWER]), tmp_path) as url:
        by_headers = await client(url, default_headers=headers).chat.completions.create(
            model="single@m", messages=[{"role": "user", "content": "2+2?"}]
        )
        by_body = await client(url, default_headers=headers).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "2+2?"}], extra_body={"strategy": "single"}
        )
        default = await client(url).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "2+2?"}]
        )
    first = (by_headers.model_extra or {})["reasoning"]
    assert first["strategy"] == "self-consistency(n=2)" and first["budget"]["calls"] == 5
    assert (by_body.model_extra or {})["reasoning"]["strategy"] == "single"
    assert (default.model_extra or {})["reasoning"]["strategy"] == "single"


async def test_openai_sampling_fields_reach_the_strategy_or_are_reported_ignored(tmp_path: Path) -> None:
    backend = ScriptedBackend([ANSWER])
    async with serving(backend, tmp_path) as url:
        reply = await client(url).chat.completions.create(
            model="self-consistency(n=2)@m",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
            max_tokens=7,
            temperature=0.3,
            seed=11,
            user="someone",
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            logit_bias={"42": 10},
            extra_body={"metadata": {"k": "v"}, "top_k": None},
        )
        planned = len(backend.requests)
        plan = await client(url).chat.completions.create(
            model="plan-and-budget@m", messages=[{"role": "user", "content": "2+2?"}], max_tokens=5
        )
    assert backend.requests[0].sampling.max_tokens == 7
    assert backend.requests[0].sampling.temperature == 0.3
    assert [m.role for m in backend.requests[0].messages] == ["system", "user"]
    run = read_results(tmp_path / "proxy.jsonl")[reply.id]
    reasoning = (reply.model_extra or {})["reasoning"]
    assert run.seed == 11 and reasoning["seed"] == 11
    # every field given is applied or listed (a null one is not given)
    assert reasoning["ignored"] == ["frequency_penalty", "logit_bias", "metadata", "presence_penalty", "user"]
    assert run.spec["proxy"]["ignored"] == reasoning["ignored"]
    # plan-and-budget has no max_tokens parameter: the cap holds for each of its calls all the same
    assert all(r.sampling.max_tokens <= 5 for r in backend.requests[planned:])
    assert (plan.model_extra or {})["reasoning"]["ignored"] == []


async def test_sampling_fields_reach_the_inner_strategy(tmp_path: Path) -> None:
    backend = ScriptedBackend(["\\boxed{4} is the answer"])
    async with serving(backend, tmp_path) as url:
        reply = await client(url).chat.completions.create(
            model="self-consistency(n=2, inner=single)@m",
            messages=[{"role": "user", "content": "2+2?"}],
            max_tokens=3,
            temperature=0.4,
            top_p=0.9,
        )
    reasoning = (reply.model_extra or {})["reasoning"]
    assert reasoning["strategy"] == (
        "self-consistency(n=2, temperature=0.4, inner=single(temperature=0.4, top_p=0.9, max_tokens=3), "
        "top_p=0.9, max_tokens=3)"
    )
    assert reasoning["ignored"] == []
    assert len(backend.requests) == 2
    assert all(r.sampling.max_tokens == 3 and r.sampling.temperature == 0.4 for r in backend.requests)
    assert reply.choices[0].message.content == "\\boxed{4} is the "
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 6


async def test_params_win_over_the_openai_field_which_is_then_reported_ignored(tmp_path: Path) -> None:
    backend = ScriptedBackend([ANSWER])
    async with serving(backend, tmp_path) as url:
        reply = await client(url).chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "2+2?"}],
            max_tokens=2,
            extra_body={"params": {"max_tokens": 64}},
        )
    assert backend.requests[0].sampling.max_tokens == 64
    assert (reply.model_extra or {})["reasoning"]["ignored"] == ["max_tokens"]
    assert reply.choices[0].message.content == ANSWER


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_ends_every_call_and_the_reply_never_holds_it(tmp_path: Path, stream: bool) -> None:
    backend = ScriptedBackend(["The answer is \\boxed{4}. The end."])
    body = {
        "model": "self-consistency(n=2, inner=single)@m",
        "messages": [{"role": "user", "content": "2+2?"}],
        "stop": ["The end", "END"],
        "stream": stream,
    }
    async with serving(backend, tmp_path) as url, httpx.AsyncClient() as http:
        response = await http.post(f"{url}/chat/completions", json=body)
        single = await http.post(f"{url}/chat/completions", json={**body, "model": "m", "stop": "is"})
    assert response.status_code == single.status_code == 200
    assert all(r.sampling.stop == ("The end", "END") for r in backend.requests[:2])
    assert backend.requests[2].sampling.stop == ("is",)
    # A streamed `single` reply is its call's tokens, sent on one by one; other calls come in chunks.
    coarse = GENERATE_STREAM_INTERVAL
    assert [r.stream_interval for r in backend.requests] == [coarse, coarse, 1 if stream else coarse]
    if stream:
        events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
        reasoning = next(e["reasoning"] for e in events if "reasoning" in e)
        words = "".join(
            e["choices"][0]["delta"].get("content") or ""
            for e in (json.loads(line[6:]) for line in single.text.splitlines() if line.startswith("data: {"))
            if e["choices"]
        )
    else:
        text = response.json()["choices"][0]["message"]["content"]
        reasoning = response.json()["reasoning"]
        words = single.json()["choices"][0]["message"]["content"]
    assert text == "The answer is \\boxed{4}. " and reasoning["ignored"] == [] and reasoning["answer"] == "4"
    assert words == "The answer "


async def test_same_seed_and_messages_replay_the_same_request_seeds(tmp_path: Path) -> None:
    backend = ScriptedBackend([ANSWER])
    async with serving(backend, tmp_path) as url:
        for _ in range(2):
            await client(url).chat.completions.create(
                model="self-consistency(n=2)@m", messages=[{"role": "user", "content": "2+2?"}], seed=3
            )
    first, second = backend.requests
    assert first.sampling.seed is not None and first.sampling.seed == second.sampling.seed


async def test_completions_endpoint(tmp_path: Path) -> None:
    async with serving(ScriptedBackend([ANSWER]), tmp_path, strategy="self-consistency(n=2)") as url:
        reply = await client(url).completions.create(model="m", prompt="2+2?")
        chunks = [
            c
            async for c in await client(url).completions.create(model="single@m", prompt="2+2?", stream=True)
        ]
    assert reply.object == "text_completion" and reply.choices[0].text == ANSWER
    assert (reply.model_extra or {})["reasoning"]["candidates"] == 2
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_instruction_is_appended_to_the_last_user_message(tmp_path: Path) -> None:
    backend = ScriptedBackend([ANSWER])
    async with serving(backend, tmp_path, instruction="Box it.") as url:
        await client(url).chat.completions.create(model="m", messages=[{"role": "user", "content": "2+2?"}])
    assert backend.requests[0].messages[-1].content == "2+2?\nBox it."


# -- streaming --------------------------------------------------------------------------------------


async def test_single_streams_tokens_as_the_engine_decodes_them(tmp_path: Path) -> None:
    backend = Gated(["The ", "answer ", "is ", "\\boxed{4}."], hold=2)
    async with serving(backend, tmp_path) as url:
        stream = await client(url).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "2+2?"}], stream=True
        )
        text = ""
        with anyio.fail_after(10):  # a buffered reply would never show the first two tokens
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                if text == "The answer ":
                    assert backend.held.is_set() and not backend.release.is_set()
                    backend.release.set()
                if chunk.choices and chunk.choices[0].finish_reason:
                    final = chunk
    assert text == "The answer is \\boxed{4}."
    assert backend.release.is_set()
    assert (final.model_extra or {})["reasoning"]["answer"] == "4"


async def test_first_finish_streams_the_winner(tmp_path: Path) -> None:
    backend = ScriptedBackend(
        ["slow \\boxed{1}", "fast \\boxed{2}", "slow \\boxed{3}"], seconds_per_token=[0.05, 0.001, 0.05]
    )
    async with serving(backend, tmp_path) as url:
        stream = await client(url).chat.completions.create(
            model="first-finish(n=3)@m", messages=[{"role": "user", "content": "?"}], stream=True
        )
        parts = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
    assert text == "fast \\boxed{2}"
    reasoning = next(c.model_extra for c in parts if c.model_extra and "reasoning" in c.model_extra)
    assert reasoning is not None and reasoning["reasoning"]["answer"] == "2"
    assert backend.cancelled == 1


async def test_other_strategies_stream_progress_comments_then_the_answer(tmp_path: Path) -> None:
    backend = ScriptedBackend([ANSWER], seconds_per_token=0.01)
    body = {
        "model": "self-consistency(n=3)@m",
        "messages": [{"role": "user", "content": "2+2?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with (
        serving(backend, tmp_path) as url,
        httpx.AsyncClient() as http,
        http.stream("POST", f"{url}/chat/completions", json=body) as response,
    ):
        lines = [line async for line in response.aiter_lines() if line]
    progress = [i for i, line in enumerate(lines) if line.startswith(": reasoning ")]
    content = [i for i, line in enumerate(lines) if '"content": "The answer' in line]
    assert progress and content and max(progress) < min(content)
    last = json.loads(lines[progress[-1]].removeprefix(": reasoning "))
    assert last == {"calls": 1, "samples": 3, "tokens": 12, "finished": 3}
    assert lines[-1] == "data: [DONE]"
    usage = json.loads(lines[-2].removeprefix("data: "))
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 12


async def test_a_client_going_away_cancels_its_run(tmp_path: Path) -> None:
    backend = Gated(["a ", "b ", "c"], hold=1)
    async with serving(backend, tmp_path) as url:
        stream = await client(url).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "?"}], stream=True
        )
        with anyio.fail_after(10):
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content == "a ":
                    break
            await stream.close()
            while not backend.cancelled:
                await asyncio.sleep(0.02)
    assert backend.cancelled == 1
    assert not (tmp_path / "proxy.jsonl").exists() or not read_results(tmp_path / "proxy.jsonl")


# -- never an empty success ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_run_without_a_reply_is_an_error_never_an_empty_success(tmp_path: Path, stream: bool) -> None:
    backend = ScriptedBackend(["I cannot tell."])  # no answer: a vote chooses no candidate
    body = {
        "model": "self-consistency(n=2)@m",
        "messages": [{"role": "user", "content": "2+2?"}],
        "stream": stream,
    }
    async with serving(backend, tmp_path) as url, httpx.AsyncClient() as http:
        response = await http.post(f"{url}/chat/completions", json=body)
    if stream:
        assert response.status_code == 200  # sent before the run ended
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        payload = json.loads(events[-2])
        chunks = [json.loads(e) for e in events[:-2]]
        assert all(not c["choices"] or not c["choices"][0]["delta"].get("content") for c in chunks)
    else:
        assert response.status_code == 422
        payload = response.json()
    error, reasoning = payload["error"], payload["reasoning"]
    assert error["code"] == "no_answer" and error["type"] == "no_reply_error"
    assert "the run ended without a reply: the strategy chose none of its 2 candidates" in error["message"]
    assert reasoning["record_id"] in error["message"]
    assert reasoning["candidates"] == 2 and reasoning["chosen"] is None and reasoning["answer"] is None
    run = read_results(tmp_path / "proxy.jsonl")[reasoning["record_id"]]
    assert run.chosen is None and run.stop_reason == reasoning["stop_reason"] != "done"
    assert payload["usage"]["completion_tokens"] == run.usage["output_tokens"] > 0


async def test_a_budget_that_stops_a_run_before_any_reply_is_named(tmp_path: Path) -> None:
    # the shape of the example: votes over first-finish races, a budget too small for them
    backend = ScriptedBackend([ANSWER])
    async with serving(backend, tmp_path) as url:
        with pytest.raises(openai.UnprocessableEntityError) as caught:  # a 4xx: not retried
            await client(url, max_retries=2).chat.completions.create(
                model="self-consistency(n=4, inner=first-finish(n=4))@m",
                messages=[{"role": "user", "content": "2+2?"}],
                extra_body={"budget": {"output_tokens": 10}},
            )
    payload = caught.value.response.json()
    assert caught.value.code == "budget_exhausted"
    assert "the request's budget stopped it (output_tokens budget 10" in payload["error"]["message"]
    assert "raise budget.output_tokens" in payload["error"]["message"]
    assert payload["reasoning"]["stop_reason"] == "budget:output_tokens"
    assert len(backend.requests) <= 16


async def test_a_budget_stop_with_text_is_a_length_finish(tmp_path: Path) -> None:
    backend = ScriptedBackend([ANSWER])
    async with serving(backend, tmp_path) as url:
        reply = await client(url).chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "2+2?"}],
            extra_body={"budget": {"output_tokens": 2}},
        )
    assert reply.choices[0].message.content == "The answer "
    assert reply.choices[0].finish_reason == "length"
    assert (reply.model_extra or {})["reasoning"]["stop_reason"].startswith("budget:")


# -- limits, errors, keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model": "gpt-4o"}, 404, "does not exist here"),
        ({"model": "sc(n=99)@m"}, 400, "at most 16"),
        ({"model": "best-of-n(max_tokens=99999)@m"}, 400, "max_tokens=99999 per sample"),
        ({"model": "m", "budget": {"output_tokens": 10**9}}, 400, "over this server's cap"),
        ({"model": "m", "budget": {"tokens": 5}}, 400, "unknown budget line 'tokens'"),
        ({"model": "m", "budget": {"calls": -1}}, 400, "positive number"),
        ({"model": "nope(n=2)@m"}, 400, "nope"),
        ({"model": "sc(n=@m"}, 400, "strategy spec"),
        ({"model": "m", "params": {"bogus": 1}}, 400, "has no parameter 'bogus'"),
        ({"model": "m", "n": 2}, 400, "n > 1 is not supported"),
        ({"model": "m", "tools": [{"type": "function"}]}, 400, "'tools' is not supported"),
        ({"model": "m", "messages": []}, 400, "messages"),
        ({"model": "m", "messages": [{"role": "system", "content": "x"}]}, 400, "no user message"),
        ({"model": "m", "temperature": -1}, 400, "temperature"),
        ({"model": "m", "temperature": 5}, 400, "temperature: Input should be less than or equal to 2"),
        ({"model": "m", "top_p": 1.5}, 400, "top_p"),
        ({"model": "m", "presence_penalty": 3}, 400, "presence_penalty"),
        ({"model": "m", "frequency_penalty": -2.5}, 400, "frequency_penalty"),
        ({"model": "m", "logit_bias": {"7": 101}}, 400, "must be in [-100, 100]"),
        ({"model": "m", "max_tokens": 0}, 400, "max_tokens"),
        ({"model": "m", "max_tokens": 99999}, 400, "max_tokens=99999 is over this server's cap"),
        ({"model": "m", "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4 stop strings"),
        ({"model": "m", "stop": ""}, 400, "a stop string must not be empty"),
        ({"model": "m", "top_logprobs": 3}, 400, "'top_logprobs' is not supported"),
        ({"model": "m", "seed": "x"}, 400, "seed"),
    ],
)
async def test_bad_requests_get_openai_format_errors(
    tmp_path: Path, body: dict[str, Any], status: int, fragment: str
) -> None:
    body = {"messages": [{"role": "user", "content": "2+2?"}], **body}
    backend = ScriptedBackend([ANSWER])
    async with serving(backend, tmp_path) as url, httpx.AsyncClient() as http:
        response = await http.post(f"{url}/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert fragment in error["message"] and set(error) == {"message", "type", "param", "code"}
    assert not backend.requests  # refused before any model call


async def test_the_openai_client_raises_its_own_error_types(tmp_path: Path) -> None:
    async with serving(ScriptedBackend([ANSWER]), tmp_path) as url:
        with pytest.raises(openai.NotFoundError):
            await client(url).chat.completions.create(model="x", messages=[{"role": "user", "content": "?"}])
        with pytest.raises(openai.BadRequestError) as caught:
            await client(url).chat.completions.create(
                model="sc(n=64)@m", messages=[{"role": "user", "content": "?"}]
            )
    assert caught.value.code == "over_limit"


async def test_invalid_json_body(tmp_path: Path) -> None:
    async with serving(ScriptedBackend([ANSWER]), tmp_path) as url, httpx.AsyncClient() as http:
        response = await http.post(f"{url}/chat/completions", content=b"{not json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


async def test_api_key(tmp_path: Path) -> None:
    async with serving(ScriptedBackend([ANSWER]), tmp_path, api_key="s3cret") as url:
        with pytest.raises(openai.AuthenticationError):
            await client(url, api_key="wrong").models.list()
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{url}/models")).status_code == 401
        reply = await client(url, api_key="s3cret").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "?"}]
        )
    assert reply.choices[0].message.content == ANSWER


async def test_budget_is_enforced_per_request(tmp_path: Path) -> None:
    backend = ScriptedBackend([ANSWER])
    async with serving(backend, tmp_path) as url:
        reply = await client(url).chat.completions.create(
            model="self-refine(rounds=3)@m",
            messages=[{"role": "user", "content": "?"}],
            extra_body={"budget": {"calls": 1}},
        )
    reasoning = (reply.model_extra or {})["reasoning"]
    assert reasoning["calls"] == 1 and reasoning["stop_reason"] == "budget:calls"
    assert len(backend.requests) == 1


async def test_requests_over_the_queue_are_refused_with_429(tmp_path: Path) -> None:
    backend = Gated(["a ", "b"], hold=1)
    limits = Limits(max_concurrent=1, max_queue=0)
    async with serving(backend, tmp_path, limits=limits) as url:
        first = asyncio.create_task(
            client(url).chat.completions.create(model="m", messages=[{"role": "user", "content": "?"}])
        )
        with anyio.fail_after(10):
            await backend.held.wait()
        with pytest.raises(openai.RateLimitError):
            await client(url).chat.completions.create(model="m", messages=[{"role": "user", "content": "?"}])
        backend.release.set()
        reply = await first
    assert reply.choices[0].message.content == "a b"
    assert backend.calls == 1


async def test_backend_failure_is_an_error_never_an_answer(tmp_path: Path) -> None:
    from reasoning.errors import BackendUnavailable

    class Down:
        name = "down"
        model = "down"

        async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
            raise BackendUnavailable("the engine is gone", backend="down")
            yield  # pragma: no cover

    async with serving(Down(), tmp_path) as url, httpx.AsyncClient() as http:
        response = await http.post(
            f"{url}/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "?"}]}
        )
        streamed = await http.post(
            f"{url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "?"}], "stream": True},
        )
    assert response.status_code == 503 and "the engine is gone" in response.json()["error"]["message"]
    events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[-2])["error"]["code"] == "backend_unavailable" and events[-1] == "[DONE]"
    assert "the engine is gone" not in "".join(events[:-2])  # no error text as content


# -- load -------------------------------------------------------------------------------------------


async def test_32_concurrent_clients_no_error_no_lost_request(tmp_path: Path) -> None:
    backend = ScriptedBackend([ANSWER, "\\boxed{5}"], seconds_per_token=0.002)
    limits = Limits(max_concurrent=8)

    async def one(url: str, number: int) -> str:
        c = client(url)
        if number % 2:
            stream = await c.chat.completions.create(
                model="self-consistency(n=4)@m",
                messages=[{"role": "user", "content": f"q{number}"}],
                stream=True,
            )
            ids = {chunk.id async for chunk in stream}
            assert len(ids) == 1
            return ids.pop()
        reply = await c.chat.completions.create(
            model="self-consistency(n=4)@m", messages=[{"role": "user", "content": f"q{number}"}]
        )
        assert (reply.model_extra or {})["reasoning"]["candidates"] == 4
        return reply.id

    async with serving(backend, tmp_path, limits=limits) as url:
        with anyio.fail_after(60):
            ids = await asyncio.gather(*(one(url, i) for i in range(32)))
    assert len(set(ids)) == 32
    runs = read_results(tmp_path / "proxy.jsonl")
    assert set(runs) == set(ids)
    assert all(run.error is None and len(run.candidates) == 4 for run in runs.values())
    assert len((tmp_path / "proxy.jsonl").read_text().splitlines()) == 32
    assert len(backend.requests) == 32


# -- the command ------------------------------------------------------------------------------------


def test_reasoning_proxy_command_with_curl(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is needed by this test (apt-get install curl)"
    port = free_port()
    records = tmp_path / "records.jsonl"
    command = [
        sys.executable, "-m", "reasoning.cli", "proxy", "--backend", "scripted",
        "--script", ANSWER, "--port", str(port), "--records", str(records),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.2)
        body = json.dumps(
            {"model": "self-consistency(n=2)@scripted", "messages": [{"role": "user", "content": "?"}]}
        )
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        plain = subprocess.run(
            [curl, "-sS", url, "-H", "Content-Type: application/json", "-d", body],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        reply = json.loads(plain.stdout)
        streamed = subprocess.run(
            [curl, "-sSN", url, "-H", "Content-Type: application/json", "-d", body[:-1] + ',"stream":true}'],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert reply["choices"][0]["message"]["content"] == ANSWER
    assert reply["reasoning"]["candidates"] == 2
    assert "serving scripted behind strategies at http://127.0.0.1:" in out
    assert ": reasoning " in streamed.stdout and streamed.stdout.rstrip().endswith("data: [DONE]")
    assert len(read_results(records)) == 2


# -- an upstream server -----------------------------------------------------------------------------


async def test_in_front_of_an_upstream_openai_server(tmp_path: Path) -> None:
    from reasoning.backends.openai_server import OpenAIBackend

    sent: list[dict[str, Any]] = []

    def piece(index: int, text: str, ids: list[int], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "text": text, "token_ids": ids, "finish_reason": finish}
        return {"id": "u", "object": "text_completion", "created": 0, "model": "up", "choices": [choice]}

    def upstream(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body)
        events = [piece(i, ANSWER, [1, 2, 3], "stop") for i in range(body["n"])]
        events.append(
            {
                "id": "u", "object": "text_completion", "created": 0, "model": "up", "choices": [],
                "usage": {"prompt_tokens": 6, "completion_tokens": 3 * body["n"], "total_tokens": 0,
                          "prompt_tokens_details": {"cached_tokens": 2}},
            }
        )  # fmt: skip
        data = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"
        return httpx.Response(200, content=data, headers={"content-type": "text/event-stream"})

    class Template:
        def apply_chat_template(
            self, messages: Any, tokenize: bool = False, add_generation_prompt: bool = True
        ) -> str:
            return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

        def encode(self, text: str, add_special_tokens: bool = False) -> list[str]:
            return text.split()

    http = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    backend = OpenAIBackend("http://127.0.0.1:9", "up", tokenizer=Template(), http_client=http, backoff=0.0)
    async with serving(backend, tmp_path) as url:
        reply = await client(url).chat.completions.create(
            model="self-consistency(n=3)@m", messages=[{"role": "user", "content": "2+2?"}], max_tokens=9
        )
    assert len(sent) == 1 and sent[0]["n"] == 3 and sent[0]["max_tokens"] == 9
    assert sent[0]["prompt"] == "<user>2+2?<assistant>"
    assert reply.choices[0].message.content == ANSWER
    assert reply.usage is not None and reply.usage.completion_tokens == 9
    assert (
        reply.usage.prompt_tokens_details is not None and reply.usage.prompt_tokens_details.cached_tokens == 2
    )


# -- the newcomer's report: request fields, one rule for a cut run, models, keys ------------------


def _events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("path", ["chat/completions", "completions"])
@pytest.mark.parametrize("seed", [-1, -5, 2**63, 2**64 + 1, True, 1.5])
async def test_a_seed_outside_openais_range_is_a_400_naming_seed(
    tmp_path: Path, path: str, seed: Any
) -> None:
    body: dict[str, Any] = {"model": "m", "seed": seed}
    body |= {"messages": [{"role": "user", "content": "?"}]} if path.startswith("chat") else {"prompt": "?"}
    async with serving(ScriptedBackend([ANSWER]), tmp_path) as url, httpx.AsyncClient() as http:
        response = await http.post(f"{url}/{path}", json=body)
        largest = await http.post(f"{url}/{path}", json={**body, "seed": 2**63 - 1})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "seed" and "seed" in response.json()["error"]["message"]
    assert largest.status_code == 200 and largest.json()["reasoning"]["seed"] == 2**63 - 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", True), ("temperature", True), ("stream", "yes"), ("top_p", True), ("n", True),
     ("max_completion_tokens", "5")],
)  # fmt: skip
async def test_fields_take_their_json_type_only(tmp_path: Path, field: str, value: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "?"}], field: value}
    async with serving(ScriptedBackend([ANSWER]), tmp_path) as url, httpx.AsyncClient() as http:
        response = await http.post(f"{url}/chat/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == field, response.text


async def test_best_of_is_refused_on_chat_as_on_completions(tmp_path: Path) -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "?"}]}
    async with serving(ScriptedBackend([ANSWER]), tmp_path) as url, httpx.AsyncClient() as http:
        refused = [
            await http.post(f"{url}/chat/completions", json={**chat, "best_of": 2}),
            await http.post(f"{url}/completions", json={"model": "m", "prompt": "?", "best_of": 2}),
        ]
        one = await http.post(f"{url}/chat/completions", json={**chat, "best_of": 1})
    for response in refused:
        assert response.status_code == 400 and response.json()["error"]["param"] == "best_of"
    assert one.status_code == 200 and one.json()["reasoning"]["ignored"] == []


@pytest.mark.parametrize("stream", [False, True])
async def test_a_run_that_chose_nothing_is_a_422_streamed_or_not(tmp_path: Path, stream: bool) -> None:
    # the budget's seconds stop `single` mid-trace: it chooses no candidate, in both modes
    words = " ".join(f"w{i}" for i in range(60))
    backend = ScriptedBackend([words], seconds_per_token=0.02)
    body = {"model": "m", "messages": [{"role": "user", "content": "?"}], "stream": stream,
            "budget": {"seconds": 0.3}}  # fmt: skip
    async with serving(backend, tmp_path) as url, httpx.AsyncClient() as http:
        response = await http.post(f"{url}/chat/completions", json=body)
    if stream:
        events = _events(response.text)
        assert events[-1] == "[DONE]"
        payload = json.loads(events[-2])
        chunks = [json.loads(e) for e in events[:-2]]
        partial = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert partial and words.startswith(partial) and partial != words  # what was sent stays
        assert all(c["choices"][0]["finish_reason"] is None for c in chunks if c["choices"])
    else:
        assert response.status_code == 422
        payload = response.json()
    assert payload["error"]["code"] == "budget_exhausted", payload
    assert payload["reasoning"]["chosen"] is None
    assert payload["reasoning"]["stop_reason"] == "budget:seconds"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_chosen_candidate_cut_by_the_budget_is_a_length_finish_streamed_or_not(
    tmp_path: Path, stream: bool
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "?"}], "stream": stream,
            "budget": {"output_tokens": 3}}  # fmt: skip
    async with serving(ScriptedBackend([ANSWER]), tmp_path) as url, httpx.AsyncClient() as http:
        response = await http.post(f"{url}/chat/completions", json=body)
    assert response.status_code == 200
    if stream:
        chunks = [json.loads(e) for e in _events(response.text)[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        finish, reasoning = chunks[-1]["choices"][0]["finish_reason"], chunks[-1]["reasoning"]
    else:
        choice = response.json()["choices"][0]
        text, finish, reasoning = (
            choice["message"]["content"],
            choice["finish_reason"],
            response.json()["reasoning"],
        )
    assert text == "The answer is " and finish == "length"
    assert reasoning["chosen"] == 0 and reasoning["stop_reason"] == "budget:output_tokens"


def test_a_default_strategy_over_the_caps_is_refused_at_start(tmp_path: Path) -> None:
    from reasoning.errors import ConfigError

    with pytest.raises(ConfigError, match=r"default strategy .* n=99 samples; .* at most 16"):
        create_app(ScriptedBackend([ANSWER]), ProxySettings(model="m", strategy="sc(n=99)", records=None))
    with pytest.raises(ConfigError, match="max_tokens=9999 per sample"):
        create_app(
            ScriptedBackend([ANSWER]),
            ProxySettings(
                model="m", strategy="single(max_tokens=9999)", limits=Limits(max_tokens=64), records=None
            ),
        )


async def test_the_bearer_scheme_is_case_insensitive(tmp_path: Path) -> None:
    async with (
        serving(ScriptedBackend([ANSWER]), tmp_path, api_key="s3cret") as url,
        httpx.AsyncClient() as http,
    ):
        codes = [
            (await http.get(f"{url}/models", headers={"Authorization": auth})).status_code
            for auth in (
                "bearer s3cret",
                "BEARER s3cret",
                "Bearer  s3cret",
                "Basic s3cret",
                "bearer wrong",
                "s3cret",
            )
        ]
    assert codes == [200, 200, 200, 401, 401, 401]


async def test_models_retrieve(tmp_path: Path) -> None:
    async with serving(ScriptedBackend([ANSWER]), tmp_path) as url:
        models = client(url).models
        assert (await models.retrieve("m")).id == "m"
        assert (await models.retrieve("self-consistency@m")).id == "self-consistency@m"
        with pytest.raises(openai.NotFoundError) as raised:
            await models.retrieve("gpt-4o")
    assert raised.value.code == "model_not_found"


async def test_an_explicit_spec_value_wins_over_the_openai_field(tmp_path: Path) -> None:
    backend = ScriptedBackend(["\\boxed{4}"])
    async with serving(backend, tmp_path) as url:
        kept = await client(url).chat.completions.create(
            model="self-consistency(n=2, temperature=0.5, inner=single(temperature=0.1))@m",
            messages=[{"role": "user", "content": "2+2?"}],
            temperature=0.2,
        )
        partly = await client(url).chat.completions.create(
            model="self-consistency(n=2, inner=single(top_p=0.5))@m",
            messages=[{"role": "user", "content": "2+2?"}],
            temperature=0.2,
            top_p=0.9,
        )
    reasoning = (kept.model_extra or {})["reasoning"]
    assert reasoning["strategy"].startswith(
        "self-consistency(n=2, temperature=0.5, inner=single(temperature=0.1"
    )
    assert reasoning["ignored"] == ["temperature"]  # nothing took it: said, not silent
    assert all(r.sampling.temperature == 0.1 for r in backend.requests[:2])
    reasoning = (partly.model_extra or {})["reasoning"]
    assert "inner=single(temperature=0.2, top_p=0.5" in reasoning["strategy"]
    assert reasoning["ignored"] == []
    assert all(r.sampling.temperature == 0.2 and r.sampling.top_p == 0.5 for r in backend.requests[2:])


async def test_params_win_at_the_top_and_the_openai_field_still_reaches_the_inner_strategy(
    tmp_path: Path,
) -> None:
    backend = ScriptedBackend(["\\boxed{4}"])
    async with serving(backend, tmp_path) as url:
        reply = await client(url).chat.completions.create(
            model="self-consistency(n=2, inner=single)@m",
            messages=[{"role": "user", "content": "2+2?"}],
            temperature=0.2,
            extra_body={"params": {"temperature": 0.9}},
        )
    reasoning = (reply.model_extra or {})["reasoning"]
    assert "temperature=0.9, inner=single(temperature=0.2" in reasoning["strategy"], reasoning["strategy"]
    assert reasoning["ignored"] == []
    assert all(r.sampling.temperature == 0.2 for r in backend.requests)


async def test_the_request_max_tokens_never_raises_a_spec_s_own(tmp_path: Path) -> None:
    backend = ScriptedBackend([ANSWER])
    async with serving(backend, tmp_path) as url:
        for asked, sent in ((50, 3), (2, 2)):
            await client(url).chat.completions.create(
                model="single(max_tokens=3)@m",
                messages=[{"role": "user", "content": "2+2?"}],
                max_tokens=asked,
            )
            assert backend.requests[-1].sampling.max_tokens == sent
