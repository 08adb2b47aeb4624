"""The strategy proxy on the real engine: the openai client and curl, streaming and not (marked ``engine``).

The proxy app serves the session's in-process engine (uvicorn on loopback, in the test's event
loop); the ``reasoning proxy`` command runs in front of the session's vLLM server as its upstream.
Both engines are the ones the other engine tests use, so no engine starts here. The tests assert
mechanisms (live token deltas, usage equal to the record's, samples and caps), never what the
model writes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest
import uvicorn

from reasoning.evals.run import read_results
from reasoning.serving.proxy import Limits, ProxySettings, create_app
from reasoning.serving.server import free_port

pytestmark = pytest.mark.engine

REASONING = str(Path(sys.executable).with_name("reasoning"))
QUESTION = [{"role": "user", "content": "What is 2+3? Answer with the number."}]
COUNT = [{"role": "user", "content": "Write the numbers from 1 to 30, separated by commas."}]  # a long reply


@pytest.fixture
async def proxy(engine: Any, tmp_path: Path) -> AsyncIterator[tuple[str, str, Path]]:
    records = tmp_path / "records.jsonl"
    model = str(engine.model)
    # The default strategy within the caps (a server whose default is over them refuses to start).
    limits = Limits(max_tokens=64, max_n=4)
    settings = ProxySettings(model=model, records=records, strategy="single(max_tokens=64)", limits=limits)
    port = free_port()
    config = uvicorn.Config(create_app(engine, settings), port=port, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    with anyio.fail_after(30):
        while not server.started:
            await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1", model, records
    finally:
        server.should_exit = True
        await task


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)


async def test_self_consistency_by_model_name_counts_every_call(proxy: tuple[str, str, Path]) -> None:
    url, model, records = proxy
    try:
        reply = await client(url).chat.completions.create(
            model=f"self-consistency(n=3)@{model}", messages=QUESTION, max_tokens=12, temperature=0.7, seed=1
        )
        content: str | None = reply.choices[0].message.content
        reasoning = (reply.model_extra or {})["reasoning"]
        assert reply.usage is not None
        usage = reply.usage.model_dump()
    except openai.UnprocessableEntityError as exc:  # no sample answered in 12 tokens: said, not empty
        payload = exc.response.json()
        content, reasoning, usage = None, payload["reasoning"], payload["usage"]
        assert payload["error"]["code"] in ("no_answer", "budget_exhausted")
    run = read_results(records)[reasoning["record_id"]]
    assert reasoning["candidates"] == len(run.candidates) == 3
    assert all(0 < c.output_tokens <= 12 for c in run.candidates)
    assert usage["completion_tokens"] == sum(c.output_tokens for c in run.candidates)
    assert usage["prompt_tokens"] == run.usage["prompt_tokens"] > 0
    assert run.model == model and run.engine  # the engine's settings are in the record
    assert (content is None) == (run.chosen is None)
    if run.chosen is not None:
        assert content == run.candidates[run.chosen].text


async def test_single_streams_token_by_token_and_requests_run_together(proxy: tuple[str, str, Path]) -> None:
    url, model, records = proxy

    async def streamed() -> tuple[list[str], str, Any]:
        stream = await client(url).chat.completions.create(
            model=model, messages=COUNT, max_tokens=16, stream=True, stream_options={"include_usage": True}
        )
        deltas, record_id, usage = [], "", None
        async for chunk in stream:
            record_id = chunk.id
            if chunk.choices and chunk.choices[0].delta.content:
                deltas.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        return deltas, record_id, usage

    async def plain() -> str:
        reply = await client(url).chat.completions.create(
            model=f"single@{model}", messages=QUESTION, max_tokens=8
        )
        return reply.id

    (deltas, record_id, usage), *others = await asyncio.gather(streamed(), plain(), plain(), plain())
    runs = read_results(records)
    run = runs[record_id]
    assert run.candidates[0].output_tokens >= 4
    assert len(deltas) >= 4  # as the engine decodes, not one burst
    assert "".join(deltas) == run.candidates[0].text
    assert usage is not None and usage.completion_tokens == run.usage["output_tokens"]
    assert len(set(others)) == 3 and all(
        runs[i].error is None and runs[i].usage["calls"] == 1 for i in others
    )
    with pytest.raises(openai.BadRequestError):
        await client(url).chat.completions.create(model=f"sc(n=8)@{model}", messages=QUESTION)


def test_the_command_in_front_of_a_vllm_server_with_curl(server: Any, tmp_path: Path) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is needed by this test"
    port, records = free_port(), tmp_path / "records.jsonl"
    command = [
        REASONING, "proxy", "--backend", "openai", "--base-url", server.url, "--port", str(port),
        "--records", str(records), "--max-n", "4",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once the proxy listens
        assert line.strip() == f"serving {server.model} behind strategies at http://127.0.0.1:{port}/v1", line
        body = {
            "model": server.model,
            "messages": QUESTION,
            "stream": True,
            "strategy": "first-finish",
            "params": {"n": 3, "max_tokens": 24},
            "budget": {"output_tokens": 60},
        }
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        header = ["-H", "Content-Type: application/json"]
        result = subprocess.run(
            [curl, "-sSN", url, *header, "-d", json.dumps(body)], capture_output=True, text=True, check=True
        )
        sc = json.dumps({**body, "stream": False, "strategy": "self-consistency"})
        plain = subprocess.run(
            [curl, "-sS", url, *header, "-d", sc], capture_output=True, text=True, check=True
        )
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0 and "proxy stopped" in stderr, stderr
    events = [line.removeprefix("data: ") for line in result.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    runs = read_results(records)
    run = runs[chunks[0]["id"]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert run.usage["output_tokens"] <= 60 and run.backend == "openai"
    assert run.chosen is not None and text == run.candidates[run.chosen].text
    reply = json.loads(plain.stdout)
    assert reply["reasoning"]["candidates"] == 3 and reply["usage"]["completion_tokens"] <= 60
