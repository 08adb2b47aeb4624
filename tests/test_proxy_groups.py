"""The proxy serving a model group: the strategies of several named backends through the OpenAI API.

A group is two scripted models, ``draft`` (model ``small``) and ``target`` (model ``big``), served
as ``pair``: spec-reason (and the other draft/target strategies) run on the group whether the
request names the group or one of its models, each other strategy on the model it names. The
reply's ``reasoning.usage_by_backend`` says what each backend spent; bad requests are 400s that
name what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest
import uvicorn
from conftest import invoke

from reasoning import ConfigError, ScriptedBackend
from reasoning.evals.run import read_results
from reasoning.serving.proxy import ProxySettings, create_app
from reasoning.serving.server import free_port

DRAFT_TEXT = "First, add the two numbers.\n\nThe answer is \\boxed{4}."
TARGET_TEXT = "8"  # a high judge score: spec-reason accepts the draft's steps
ANSWER = "The answer is \\boxed{4}."
REASONING = str(Path(sys.executable).with_name("reasoning"))


def pair() -> dict[str, ScriptedBackend]:
    return {
        "draft": ScriptedBackend([DRAFT_TEXT], name="draft", model="small"),
        "target": ScriptedBackend([TARGET_TEXT], name="target", model="big"),
    }


@contextlib.asynccontextmanager
async def serving(backend: Any, tmp_path: Path, model: str = "pair", **settings: Any) -> AsyncIterator[str]:
    """Serve the proxy over `backend` (one, or a group by name) on a free loopback port; its /v1 URL."""
    settings.setdefault("records", tmp_path / "proxy.jsonl")
    app = create_app(backend, ProxySettings(model=model, **settings))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="error", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    with anyio.fail_after(30):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.config.port}/v1"
    finally:
        server.should_exit = True
        await task


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)


MESSAGES = [{"role": "user", "content": "2+2?"}]


def check_usage_by_backend(reasoning: dict[str, Any], usage: Any) -> None:
    """Each backend's usage, with its model, adds up to the reply's usage."""
    by = reasoning["usage_by_backend"]
    assert set(by) == {"draft", "target"}
    assert by["draft"]["model"] == "small" and by["target"]["model"] == "big"
    assert by["draft"]["calls"] > 0 and by["target"]["calls"] > 0
    assert by["draft"]["completion_tokens"] > 0 and by["target"]["completion_tokens"] > 0
    for mine, theirs in (("prompt_tokens", "prompt_tokens"), ("completion_tokens", "completion_tokens")):
        assert sum(b[mine] for b in by.values()) == getattr(usage, theirs)
    assert sum(b["cached_tokens"] for b in by.values()) == usage.prompt_tokens_details.cached_tokens
    for each in by.values():
        assert each["total_tokens"] == each["prompt_tokens"] + each["completion_tokens"]


# -- a group strategy through the API ---------------------------------------------------------------


@pytest.mark.parametrize("model", ["spec-reason@pair", "spec-reason@big", "spec-reason@small"])
async def test_a_group_strategy_by_model_name_reports_usage_per_backend(tmp_path: Path, model: str) -> None:
    backends = pair()
    async with serving(backends, tmp_path) as url:
        reply = await client(url).chat.completions.create(model=model, messages=MESSAGES)
    reasoning = (reply.model_extra or {})["reasoning"]
    assert reasoning["strategy"].startswith("spec-reason")
    assert reply.choices[0].message.content
    assert backends["draft"].requests and backends["target"].requests  # both models were called
    assert reply.usage is not None
    check_usage_by_backend(reasoning, reply.usage)
    run = read_results(tmp_path / "proxy.jsonl")[reply.id]
    assert run.backends == {"draft": "small", "target": "big"}
    assert (
        run.usage_by_backend["draft"]["output_tokens"]
        == reasoning["usage_by_backend"]["draft"]["completion_tokens"]
    )


async def test_a_group_strategy_in_the_body_and_streamed(tmp_path: Path) -> None:
    async with serving(pair(), tmp_path) as url:
        whole = await client(url).chat.completions.create(
            model="pair", messages=MESSAGES, extra_body={"strategy": "spec-reason", "params": {"n": 2}}
        )
        chunks = [
            chunk
            async for chunk in await client(url).chat.completions.create(
                model="big",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"strategy": "spec-reason"},
            )
        ]
    reasoning = (whole.model_extra or {})["reasoning"]
    assert reasoning["strategy"] == "spec-reason(n=2)" and reasoning["candidates"] == 2
    check_usage_by_backend(reasoning, whole.usage)
    last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    usage = chunks[-1].usage
    assert usage is not None
    check_usage_by_backend((last.model_extra or {})["reasoning"], usage)


async def test_other_strategies_run_on_the_model_they_name(tmp_path: Path) -> None:
    backends = pair()
    async with serving(backends, tmp_path) as url:
        alone = await client(url).chat.completions.create(model="single@big", messages=MESSAGES)
        assert backends["target"].requests and not backends["draft"].requests
        grouped = await client(url).chat.completions.create(
            model="self-consistency(n=2)@pair", messages=MESSAGES
        )
    assert alone.choices[0].message.content == TARGET_TEXT
    assert (alone.model_extra or {})["reasoning"]["usage_by_backend"] == {}
    assert read_results(tmp_path / "proxy.jsonl")[alone.id].model == "big"
    by = (grouped.model_extra or {})["reasoning"]["usage_by_backend"]  # the group's default: draft
    assert by["draft"]["calls"] == 1 and by["target"]["calls"] == 0
    assert grouped.choices[0].message.content == DRAFT_TEXT


async def test_models_lists_the_group_its_models_and_the_strategies_at_each(tmp_path: Path) -> None:
    async with serving(pair(), tmp_path) as url:
        ids = [m.id async for m in client(url).models.list()]
    assert ids[:3] == ["pair", "small", "big"]
    assert {"spec-reason@pair", "spec-reason@big", "atts@pair", "single@small", "single@pair"} <= set(ids)


async def test_a_single_model_proxy_does_not_list_the_group_strategies(tmp_path: Path) -> None:
    async with serving(ScriptedBackend([ANSWER]), tmp_path, model="m") as url:
        ids = {m.id async for m in client(url).models.list()}
    assert "single@m" in ids and "spec-reason@m" not in ids and "arbitrage@m" not in ids


# -- bad requests -----------------------------------------------------------------------------------


async def refused(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{url}/chat/completions", json={"messages": MESSAGES, **body})
    return response.status_code, response.json()["error"]


GROUP_STRATEGIES = ["spec-reason", "spec-thinking", "atts(calibration=cal.json)", "arbitrage(router=judge)"]


@pytest.mark.parametrize("spec", GROUP_STRATEGIES)
async def test_a_group_strategy_on_a_single_model_proxy_is_a_400(tmp_path: Path, spec: str) -> None:
    async with serving(ScriptedBackend([ANSWER]), tmp_path, model="m") as url:
        by_name = await refused(url, {"model": f"{spec}@m"})
        in_body = await refused(url, {"model": "m", "strategy": spec})
        streamed = await refused(url, {"model": f"{spec}@m", "stream": True})
    for status, error in (by_name, in_body, streamed):
        assert status == 400 and error["code"] == "model_group_required", error
        assert error["type"] == "invalid_request_error" and error["param"] == "model"
        assert spec.split("(")[0] in error["message"] and "draft, target" in error["message"]
        assert "single model 'm'" in error["message"] and "--model draft=MODEL" in error["message"]


async def test_an_unknown_group_is_a_400_naming_the_groups_served(tmp_path: Path) -> None:
    async with serving(pair(), tmp_path) as url:
        status, error = await refused(url, {"model": "spec-reason@trio"})
        plain_status, plain = await refused(url, {"model": "single@trio"})
    assert status == 400 and error["code"] == "model_group_not_found" and error["param"] == "model"
    assert "'trio'" in error["message"] and "'pair' (draft: small, target: big)" in error["message"]
    assert plain_status == 404 and plain["code"] == "model_not_found"  # a model, not a group, was asked


async def test_an_unknown_group_on_a_single_model_proxy_is_a_400(tmp_path: Path) -> None:
    async with serving(ScriptedBackend([ANSWER]), tmp_path, model="m") as url:
        status, error = await refused(url, {"model": "spec-reason@pair"})
    assert status == 400 and error["code"] == "model_group_not_found"
    assert "'pair'" in error["message"] and "single model 'm'" in error["message"]


async def test_a_backend_the_group_lacks_is_a_400(tmp_path: Path) -> None:
    async with serving(pair(), tmp_path) as url:
        status, error = await refused(url, {"model": "spec-reason(draft=tiny)@pair"})
        judged = await refused(url, {"model": "best-of-n(n=2, score=judge, judge_backend=judge)@pair"})
    assert status == 400 and error["code"] == "backend_not_found" and error["param"] == "strategy"
    assert "tiny" in error["message"] and "draft: small, target: big" in error["message"]
    assert judged[0] == 400 and "judge" in judged[1]["message"]


def test_the_app_refuses_groups_it_cannot_serve(tmp_path: Path) -> None:
    records = tmp_path / "r.jsonl"
    with pytest.raises(ConfigError, match="at least two named backends"):
        create_app({"draft": ScriptedBackend([ANSWER])}, ProxySettings(model="pair", records=records))
    with pytest.raises(ConfigError, match="needs backends named draft, target"):
        create_app(
            ScriptedBackend([ANSWER]), ProxySettings(model="m", strategy="spec-reason", records=records)
        )
    with pytest.raises(ConfigError, match="model group is named 'big'"):
        create_app(pair(), ProxySettings(model="big", records=records))
    create_app(pair(), ProxySettings(model="pair", strategy="spec-reason", records=records))  # fine


# -- the command ------------------------------------------------------------------------------------


def test_the_command_serves_a_group_of_named_models(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [REASONING, "proxy", "--backend", "scripted", "--model", "draft=small", "--model", "target=big",
         "--group", "pair", "--script", DRAFT_TEXT, "--port", "0", "--records", str(tmp_path / "r.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("serving pair (draft: small, target: big) behind strategies at "), line
        url = line.split(" at ")[1].strip()
        ids = [m["id"] for m in httpx.get(f"{url}/models", timeout=30).json()["data"]]
        reply = httpx.post(
            f"{url}/chat/completions",
            json={"model": "spec-reason@big", "messages": MESSAGES},
            timeout=60,
        )
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert ids[:3] == ["pair", "small", "big"]
    assert reply.status_code == 200, reply.text
    by = reply.json()["reasoning"]["usage_by_backend"]
    assert {name: b["model"] for name, b in by.items()} == {"draft": "small", "target": "big"}
    assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--group", "pair"], "--group names a model group"),
        (["--strategy", "spec-reason"], "--strategy spec-reason needs backends named draft, target"),
        (["--model", "draft=small"], "at least two named backends"),
        (["--model", "draft=a", "--model", "target=b", "--group", "a@b"], "a name without '@'"),
    ],
)
def test_group_options_that_cannot_work_are_refused_before_anything_starts(
    args: list[str], fragment: str
) -> None:
    code, output = invoke("proxy", "--backend", "scripted", "--port", "0", *args)
    assert code != 0 and fragment in " ".join(output.split()), output
    assert "Traceback" not in output
