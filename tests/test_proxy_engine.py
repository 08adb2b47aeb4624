"""`reasoning proxy` on the real engine: the openai client and curl, streaming and not (marked ``engine``).

One proxy process (the embedded 0.5B, tiny budgets) serves every test of the module. The tests
assert mechanisms (live token deltas, usage equal to the record's, samples and caps), never what
the model writes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from reasoning.backends.server import free_port
from reasoning.evals.run import read_results

pytestmark = pytest.mark.engine

REASONING = str(Path(sys.executable).with_name("reasoning"))
MODEL = "qwen2.5-coder-0.5b-instruct"
QUESTION = [{"role": "user", "content": "What is 2+3? Answer with the number."}]
COUNT = [{"role": "user", "content": "Write the numbers from 1 to 30, separated by commas."}]  # a long reply


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    records = tmp_path_factory.mktemp("proxy") / "records.jsonl"
    port = free_port()
    command = [
        REASONING, "proxy", "--port", str(port), "--records", str(records), "--kv-cache-gb", "0.5",
        "--max-model-len", "1024", "--max-tokens", "64", "--max-n", "4",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once the server listens
        assert line.strip() == f"serving {MODEL} behind strategies at http://127.0.0.1:{port}/v1", line + (
            process.stderr.read() if process.poll() is not None and process.stderr else ""
        )
        yield f"http://127.0.0.1:{port}/v1", records
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "proxy stopped" in stderr


def test_self_consistency_by_model_name_counts_every_call(proxy: tuple[str, Path]) -> None:
    url, records = proxy
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    reply = client.chat.completions.create(
        model=f"self-consistency(n=3)@{MODEL}", messages=QUESTION, max_tokens=12, temperature=0.7, seed=1
    )
    reasoning = (reply.model_extra or {})["reasoning"]
    run = read_results(records)[reply.id]
    assert reasoning["candidates"] == len(run.candidates) == 3
    assert all(0 < c.output_tokens <= 12 for c in run.candidates)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == sum(c.output_tokens for c in run.candidates)
    assert reply.usage.prompt_tokens == run.usage["prompt_tokens"] > 0
    assert run.model == MODEL and run.engine  # the engine's settings are in the record
    if run.chosen is not None:
        assert reply.choices[0].message.content == run.candidates[run.chosen].text


def test_single_streams_token_by_token(proxy: tuple[str, Path]) -> None:
    url, records = proxy
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL, messages=COUNT, max_tokens=16, stream=True, stream_options={"include_usage": True}
    )
    deltas, record_id, usage = [], None, None
    for chunk in stream:
        record_id = chunk.id
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    run = read_results(records)[str(record_id)]
    assert run.candidates[0].output_tokens >= 4
    assert len(deltas) >= 4  # as the engine decodes, not one burst
    assert "".join(deltas) == run.candidates[0].text
    assert usage is not None and usage.completion_tokens == run.usage["output_tokens"]


def test_curl_streams_a_race_and_budgets_hold(proxy: tuple[str, Path]) -> None:
    url, records = proxy
    curl = shutil.which("curl")
    assert curl, "curl is needed by this test"
    body = {
        "model": MODEL,
        "messages": QUESTION,
        "stream": True,
        "strategy": "first-finish",
        "params": {"n": 3, "max_tokens": 24},
        "budget": {"output_tokens": 60},
    }
    result = subprocess.run(
        [
            curl,
            "-sSN",
            f"{url}/chat/completions",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(body),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    events = [line.removeprefix("data: ") for line in result.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    run = read_results(records)[chunks[0]["id"]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert run.usage["output_tokens"] <= 60
    finished = [c for c in run.candidates if c.finish_reason != "cancelled"]
    assert finished and text == run.candidates[run.chosen or 0].text


def test_concurrent_requests_and_an_over_cap_request(proxy: tuple[str, Path]) -> None:
    url, records = proxy

    async def go() -> list[str]:
        client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
        replies = await asyncio.gather(
            *(
                client.chat.completions.create(model=f"single@{MODEL}", messages=QUESTION, max_tokens=8)
                for _ in range(4)
            )
        )
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model=f"sc(n=8)@{MODEL}", messages=QUESTION)
        return [r.id for r in replies]

    ids = asyncio.run(go())
    runs = read_results(records)
    assert len(set(ids)) == 4 and set(ids) <= set(runs)
    assert all(runs[i].error is None and runs[i].usage["calls"] == 1 for i in ids)
