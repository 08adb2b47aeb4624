"""The strategy proxy under load: 32 concurrent OpenAI clients vs the same problems solved directly.

One in-process engine (the embedded 0.5B) serves both arms, side by side in one run:

* ``direct``: `reasoning.evals.run.solve` over the problems, all in flight (the dataset path);
* ``proxy``: the proxy app (uvicorn, loopback) over the same engine, one OpenAI client per
  problem, all at once, half of them streaming; the prompts are byte-identical to the direct arm's.

For each strategy it prints the wall time, tokens, errors, requests lost, latency percentiles,
time to the first streamed byte, and proxy / direct ratios. A scripted arm measures the proxy's
own cost per request (HTTP, JSON, record writing) with a backend that takes no time.

    .venv/bin/python benchmarks/proxy.py --clients 32 --max-tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
import uvicorn

from reasoning import Controller, ScriptedBackend, default_prompt
from reasoning.compose import build
from reasoning.evals.datasets import load_dataset
from reasoning.evals.run import read_results, solve
from reasoning.serving.proxy import Limits, ProxySettings, create_app
from reasoning.serving.server import free_port


async def serve(
    backend: Any, records: Path, limits: Limits
) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    model = str(getattr(backend, "model", "m"))
    app = create_app(backend, ProxySettings(model=model, records=records, limits=limits))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    return server, task, f"http://127.0.0.1:{port}/v1"


async def direct(backend: Any, problems: list, spec: str) -> dict[str, float]:
    start = time.perf_counter()
    runs = await solve(problems, Controller(backend, seed=0), build(spec), concurrency=len(problems))
    if any(r.error for r in runs):
        raise RuntimeError(next(r.error for r in runs if r.error))
    return {
        "wall": time.perf_counter() - start,
        "tokens": sum(int(r.usage["output_tokens"]) for r in runs),
        "errors": sum(r.error is not None for r in runs),
        "lost": 0,
    }


async def through_proxy(
    url: str, model: str, problems: list, spec: str, records: Path, clients: int = 1000
) -> dict[str, float]:
    latencies: list[float] = []
    first_bytes: list[float] = []
    errors = 0

    shared = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)

    async def one(i: int, problem: Any) -> str | None:
        nonlocal errors
        # Each of the first `clients` problems is its own client (connection pool); beyond, they share one.
        own = i < clients
        client = (
            openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=600) if own else shared
        )
        messages = [{"role": m.role, "content": m.content} for m in default_prompt(problem)]
        began = time.perf_counter()
        try:
            if i % 2:
                stream = await client.chat.completions.create(
                    model=f"{spec}@{model}", messages=messages, stream=True, seed=0
                )
                record = None
                async for chunk in stream:
                    if record is None:
                        first_bytes.append(time.perf_counter() - began)
                    record = chunk.id
            else:
                reply = await client.chat.completions.create(
                    model=f"{spec}@{model}", messages=messages, seed=0
                )
                record = reply.id
        except openai.APIError:
            errors += 1
            return None
        finally:
            if own:
                await client.close()
        latencies.append(time.perf_counter() - began)
        return record

    start = time.perf_counter()
    ids = await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))
    wall = time.perf_counter() - start
    await shared.close()
    runs = read_results(records)
    kept = [runs[i] for i in ids if i is not None and i in runs]
    latencies.sort()
    return {
        "wall": wall,
        "tokens": sum(int(r.usage["output_tokens"]) for r in kept),
        "errors": errors,
        "lost": len(problems) - len(kept),
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
        "first_byte": statistics.median(first_bytes) if first_bytes else float("nan"),
    }


async def scripted_overhead(requests: int) -> tuple[float, float]:
    """Seconds per request through the proxy and directly, with a backend that takes no time."""
    backend = ScriptedBackend(["The answer is \\boxed{4}."])
    problems = load_dataset("gsm8k", limit=requests)
    start = time.perf_counter()
    await solve(problems, Controller(backend, seed=0), build("single"), concurrency=16)
    plain = (time.perf_counter() - start) / requests
    with tempfile.TemporaryDirectory() as folder:
        server, task, url = await serve(backend, Path(folder) / "r.jsonl", Limits(max_concurrent=16))
        stats = await through_proxy(url, "scripted", problems, "single", Path(folder) / "r.jsonl", clients=0)
        server.should_exit = True
        await task
    assert stats["errors"] == 0 and stats["lost"] == 0
    return stats["wall"] / requests, plain


async def main(args: argparse.Namespace) -> None:
    from reasoning.backends.vllm_local import VLLMBackend
    from reasoning.config import EngineConfig

    per_request, plain = await scripted_overhead(200)
    print(
        f"scripted backend, 200 requests: proxy {per_request * 1000:.2f} ms/request, "
        f"direct {plain * 1000:.2f} ms/request (the proxy's own cost: {(per_request - plain) * 1000:.2f} ms)"
    )
    problems = load_dataset("gsm8k", limit=args.clients, offset=args.offset)
    backend = VLLMBackend.from_config(EngineConfig(kv_cache_gb=args.kv_cache_gb))
    model = str(backend.model)
    specs = [f"single(max_tokens={args.max_tokens})", f"self-consistency(n=4, max_tokens={args.max_tokens})"]
    try:
        with tempfile.TemporaryDirectory() as folder:
            records = Path(folder) / "records.jsonl"
            limits = Limits(max_concurrent=args.clients)
            server, task, url = await serve(backend, records, limits)
            await direct(backend, problems[:4], specs[0])  # warm-up: compile, fill the prefix cache
            try:
                for spec in specs:
                    a = await direct(backend, problems, spec)
                    b = await through_proxy(url, model, problems, spec, records)
                    rate_a, rate_b = a["tokens"] / a["wall"], b["tokens"] / b["wall"]
                    print(
                        f"{spec}: direct {a['wall']:.1f} s {a['tokens']:.0f} tok ({rate_a:.0f} tok/s); "
                        f"proxy {b['wall']:.1f} s {b['tokens']:.0f} tok ({rate_b:.0f} tok/s), "
                        f"errors {b['errors']:.0f}, lost {b['lost']:.0f}, latency p50 {b['p50']:.1f} s "
                        f"p95 {b['p95']:.1f} s, first byte (streamed, median) {b['first_byte']:.2f} s; "
                        f"proxy/direct tok/s {rate_b / rate_a:.2f}"
                    )
            finally:
                server.should_exit = True
                await task
    finally:
        backend.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--offset", type=int, default=1250)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--kv-cache-gb", type=float, default=2.0)
    asyncio.run(main(parser.parse_args()))
