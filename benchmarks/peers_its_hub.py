"""Worker of `benchmarks/peers.py`: one arm of its-hub 1.2.0 against an OpenAI-compatible server.

Not a benchmark by itself, and not importable from the project's venv: `peers.py` runs it with
the interpreter of ``.bench/peers-venv``, where its-hub is installed. It reads one JSON job on
standard input and prints one JSON result on standard output:

    job:    {"base_url": ".../v1", "model", "method": "self-consistency" | "best-of-n", "n",
             "max_tokens", "temperature", "concurrency",
             "problems": [{"id", "messages": [{"role", "content"}, ...]}, ...]}
    result: {"version", "seconds", "prompt_tokens", "completion_tokens", "requests",
             "problems": [{"id", "text", "texts", "error"}, ...]}

Used as its README shows: `OpenAICompatibleLanguageModel` (one chat-completions request per
sample, n=1 each), `SelfConsistency(projection)` or `BestOfN(LLMJudge(lm))`, `ainfer(...,
budget=n)`, all problems gathered at once through one shared `LMOrchestrator`. Three things
differ from its defaults, none changing what is sent: the LM subclass below also sums the
``usage`` fields of every response (its-hub's own accumulator misses the judge's requests) and
lifts aiohttp's 300 s total timeout per request (see `CountingLM`); the vote key is the last
``\\boxed{}`` of a sample (a sample without one is its own key, so unanswered samples do not vote
as a bloc; its-hub's default key is the whole text, which never repeats for reasoning).
`seconds` is the wall time of the gathered solve alone (interpreter start and imports excluded,
as `peers.py` times only `solve` on its own side).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
import its_hub  # type: ignore[import-untyped]
from its_hub import (
    BestOfN,
    LLMJudge,
    LMOrchestrator,
    OpenAICompatibleLanguageModel,
    SelfConsistency,
)
from its_hub.api import ChatMessage, GenerationUsage  # type: ignore[import-untyped]


class CountingLM(OpenAICompatibleLanguageModel):  # type: ignore[misc]
    """its-hub's OpenAI-compatible LM that also sums the server's usage of every request.

    Its HTTP session waits as long as the server takes: its-hub's default session has aiohttp's
    300 s total timeout per request, and a non-streamed request queued behind a busy CPU engine
    exceeds it (then its-hub retries it, adding load); the project's client has no total limit.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.total = GenerationUsage()

    def _get_session(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        session: aiohttp.ClientSession | None = self._sessions.get(loop)
        if session is None or session.closed:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
            connector = aiohttp.TCPConnector(ssl=self.ssl_context)
            session = aiohttp.ClientSession(connector=connector, timeout=timeout)
            self._sessions[loop] = session
        return session

    async def agenerate_single(self, messages: list[Any], **kwargs: Any) -> dict[str, Any]:
        own = GenerationUsage()
        caller = kwargs.pop("usage_accumulator", None)
        reply: dict[str, Any] = await super().agenerate_single(messages, usage_accumulator=own, **kwargs)
        self.total.merge(own)
        if caller is not None:
            caller.merge(own)
        return reply


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, braces balanced; None when there is none."""
    start = text.rfind("\\boxed")
    open_at = text.find("{", start) if start >= 0 else -1
    if open_at < 0:
        return None
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_at + 1 : i].strip()
    return None


def vote_key(content: str) -> str:
    """Self-consistency's projection: the boxed answer, else the text itself (a vote of one)."""
    boxed = last_boxed(content or "")
    return f"boxed:{boxed}" if boxed is not None else f"text:{content}"


def text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


async def run(job: dict[str, Any]) -> dict[str, Any]:
    lm = CountingLM(
        endpoint=job["base_url"],
        api_key="EMPTY",
        model_name=job["model"],
        max_completion_tokens=job["max_tokens"],
        temperature=job["temperature"],
    )
    orchestrator = LMOrchestrator(max_concurrency=job["concurrency"])
    algorithm: Any
    if job["method"] == "self-consistency":
        algorithm = SelfConsistency(vote_key, orchestrator=orchestrator)
    elif job["method"] == "best-of-n":
        algorithm = BestOfN(LLMJudge(lm), orchestrator=orchestrator)
    else:
        raise SystemExit(f"unknown method {job['method']!r}")

    async def one(problem: dict[str, Any]) -> dict[str, Any]:
        messages = [ChatMessage(role=m["role"], content=m["content"]) for m in problem["messages"]]
        try:
            result = await algorithm.ainfer(lm, messages, budget=job["n"], return_response_only=False)
        except Exception as exc:  # one problem's failure is reported, the others go on
            return {"id": problem["id"], "text": None, "texts": [], "error": f"{type(exc).__name__}: {exc}"}
        return {
            "id": problem["id"],
            "text": text_of(result.the_one),
            "texts": [text_of(r) for r in result.responses],
            "error": None,
        }

    start = time.perf_counter()
    solved = await asyncio.gather(*(one(p) for p in job["problems"]))
    seconds = time.perf_counter() - start
    await lm.close()
    return {
        "version": its_hub.__version__,
        "seconds": seconds,
        "prompt_tokens": lm.total.prompt_tokens,
        "completion_tokens": lm.total.completion_tokens,
        "requests": lm.total.num_calls,
        "problems": solved,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.load(sys.stdin)))))
