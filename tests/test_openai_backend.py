"""The OpenAI-compatible backend against scripted HTTP (httpx.MockTransport): parsing, retries, faults."""

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from reasoning import (
    BackendError,
    BackendUnavailable,
    Controller,
    Message,
    Problem,
    Request,
    Sampling,
    collect,
)
from reasoning.backends.openai_server import OpenAIBackend
from reasoning.strategies import SelfConsistency, Single

URL = "http://127.0.0.1:9"
ASK = Request((Message("user", "2+2?"),), Sampling(n=2, max_tokens=8, seed=7, logprobs=1))


class Template:
    """A tiny chat template, so the completions endpoint is used."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def encode(self, text, add_special_tokens=False):
        return text.split()


def sse(*events: dict) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def piece(index: int, text: str, ids: list[int], finish: str | None = None, **extra) -> dict:
    choice = {"index": index, "text": text, "token_ids": ids, "finish_reason": finish, **extra}
    return {"id": "c", "object": "text_completion", "created": 0, "model": "m", "choices": [choice]}


USAGE = {
    "id": "c",
    "object": "text_completion",
    "created": 0,
    "model": "m",
    "choices": [],
    "usage": {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 4},
    },
}
GOOD = sse(
    piece(0, "The", [1], prompt_token_ids=[9, 9, 9, 9, 9]),
    piece(1, "It", [2], prompt_token_ids=[9, 9, 9, 9, 9]),
    piece(0, " answer is 4", [3, 4, 5], finish="stop"),
    piece(1, " is", [6], finish="length"),
    USAGE,
)
MODELS = {"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "x"}]}


def backend(handler: Callable, **kwargs) -> OpenAIBackend:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    kwargs.setdefault("backoff", 0.0)
    return OpenAIBackend(URL, "m", tokenizer=Template(), http_client=client, **kwargs)


def ok(body: bytes = GOOD) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


async def test_streams_samples_with_exact_token_counts_and_cached_tokens() -> None:
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return ok()

    completions = await collect(backend(handler), ASK)
    assert [c.text for c in completions] == ["The answer is 4", "It is"]
    assert [c.output_tokens for c in completions] == [4, 2]
    assert [c.finish_reason for c in completions] == ["stop", "length"]
    assert completions[0].prompt_tokens == 5 and completions[0].cached_tokens == 4
    body = sent[0]
    assert body["prompt"] == "<user>2+2?<assistant>" and body["n"] == 2 and body["seed"] == 7
    assert body["return_token_ids"] is True and body["stream"] is True


async def test_prefix_is_continued_verbatim_on_the_completions_endpoint() -> None:
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return ok()

    await collect(backend(handler), Request(ASK.messages, Sampling(max_tokens=4, n=2), prefix="Step 1:"))
    assert sent[0]["prompt"].endswith("<assistant>Step 1:")


async def test_without_a_local_template_the_chat_endpoint_continues_the_prefix() -> None:
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, json.loads(request.content)))
        delta = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        choice = {"index": 0, "delta": {"content": " 4"}, "finish_reason": "stop", "token_ids": [1]}
        chunk = {**delta, "choices": [choice]}
        return ok(sse(chunk))

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    remote = OpenAIBackend(URL, "no/such/local/model", http_client=client)
    [done] = await collect(remote, Request(ASK.messages, Sampling(max_tokens=4), prefix="So"))
    path, body = sent[0]
    assert path.endswith("/chat/completions") and done.text == " 4" and done.output_tokens == 1
    assert body["messages"][-1] == {"role": "assistant", "content": "So"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_transient_statuses_are_retried_before_anything_streams(status: int) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, json={"error": {"message": "busy"}}) if len(calls) < 3 else ok()

    completions = await collect(backend(handler, max_retries=3), ASK)
    assert len(calls) == 3 and completions[0].text == "The answer is 4"


async def test_a_bad_request_is_not_retried_and_names_the_server_message() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"error": {"message": "max_tokens is too large"}})

    with pytest.raises(BackendError, match="HTTP 400: max_tokens is too large") as info:
        await collect(backend(handler), ASK)
    assert not info.value.retryable and len(calls) == 1


async def test_an_unreachable_server_is_one_clear_error_with_the_url() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("connection refused")

    message = r"cannot reach the server at http://127\.0\.0\.1:9 after 3 tries"
    with pytest.raises(BackendUnavailable, match=message):
        await collect(backend(handler, max_retries=2), ASK)
    assert len(calls) == 3
    with pytest.raises(BackendUnavailable, match="127.0.0.1:9"):
        await backend(handler, max_retries=0).check()


def broken_body(up: bool) -> Callable[[httpx.Request], httpx.Response]:
    async def body() -> AsyncIterator[bytes]:
        yield f"data: {json.dumps(piece(0, 'The', [1]))}\n\n".encode()
        raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            if up:
                return httpx.Response(200, json=MODELS)
            raise httpx.ConnectError("refused")
        return httpx.Response(200, content=body(), headers={"content-type": "text/event-stream"})

    return handler


async def test_a_stream_cut_midway_while_the_server_lives_is_retryable() -> None:
    with pytest.raises(BackendError, match="broke off") as info:
        await collect(backend(broken_body(up=True)), ASK)
    assert info.value.retryable and not isinstance(info.value, BackendUnavailable)


async def test_a_stream_cut_because_the_server_died_makes_it_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="cannot reach"):
        await collect(backend(broken_body(up=False), max_retries=1), ASK)


async def test_an_error_event_in_the_stream_is_raised_never_answered() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return ok(sse(piece(0, "The", [1]), {"error": {"message": "engine overloaded", "code": 500}}))

    problem = Problem("p", "2+2?", answer="4")
    with pytest.raises(BackendError, match="engine overloaded"):
        await Controller(backend(handler)).run(problem, Single())


async def test_runner_stops_on_an_unavailable_server_keeps_rows_and_resumes(tmp_path: Path) -> None:
    from reasoning.evals.run import read_results, solve

    state = {"up": True, "served": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if not state["up"]:
            raise httpx.ConnectError("refused")
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json=MODELS)
        state["served"] += 1
        if state["served"] == 2:
            state["up"] = False  # the server dies after answering two problems
        return ok(sse(piece(0, "\\boxed{4}", [1, 2], finish="stop")))

    problems = [Problem(f"p{i}", "2+2?", answer="4") for i in range(5)]
    out = tmp_path / "r.jsonl"
    controller = Controller(backend(handler, max_retries=1))
    with pytest.raises(BackendUnavailable):
        await solve(problems, controller, SelfConsistency(n=1), output=out, concurrency=1)
    rows = read_results(out)
    assert sorted(rows) == ["p0", "p1"] and all(r.error is None for r in rows.values())
    state["up"] = True
    runs = await solve(problems, controller, SelfConsistency(n=1), output=out, concurrency=1)
    assert [r.answer for r in runs] == ["4"] * 5 and all(r.correct for r in runs)
    assert len(out.read_text().splitlines()) == 5


def test_bad_settings_are_config_errors() -> None:
    from reasoning import ConfigError

    with pytest.raises(ConfigError, match="must start with http"):
        OpenAIBackend("localhost:8000")
    with pytest.raises(ConfigError, match="max_retries"):
        OpenAIBackend(URL, max_retries=-1)


async def test_a_timeout_is_retried_and_then_reported_with_the_url() -> None:
    calls = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ReadTimeout("no bytes for 300 s")
        return ok()

    completions = await collect(backend(flaky), ASK)
    assert len(calls) == 2 and completions[1].text == "It is"

    def silent(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no bytes for 300 s")

    with pytest.raises(BackendUnavailable, match=r"timed out waiting for http://127\.0\.0\.1:9"):
        await collect(backend(silent, max_retries=1), ASK)


async def test_stream_interval_is_sent_only_when_coarser_than_every_token() -> None:
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return ok()

    await collect(backend(handler), ASK)
    await collect(backend(handler), Request(ASK.messages, ASK.sampling, stream_interval=16))
    assert "stream_interval" not in sent[0]
    assert sent[1]["stream_interval"] == 16


async def test_a_run_of_whole_samples_asks_for_coarse_chunks_and_counts_them_exactly() -> None:
    # GOOD is what a server honouring stream_interval sends: a sample's tokens after the first
    # come in one piece (three tokens in " answer is 4").
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json=MODELS)
        sent.append(json.loads(request.content))
        return ok()

    run = await Controller(backend(handler), seed=0).run(
        Problem(id="p", question="2+2?"), SelfConsistency(n=2, max_tokens=8)
    )
    assert sent and all(body["stream_interval"] == 16 for body in sent)
    assert run.usage["output_tokens"] == 6
