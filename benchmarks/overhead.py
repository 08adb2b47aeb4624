"""Saturation across problems: `reasoning solve`'s code path vs the raw engine, problems/hour.

A dataset run must keep the engine as busy as a hand-written loop of raw vLLM calls would.
Both arms use ONE engine, the same rendered prompts, the same sampling parameters and the same
per-request seeds, so they decode identical tokens; all problems are in flight at once in both;
the arms alternate (A B A B ...) after a warm-up round that fills the prefix cache for both.

* ``self-consistency`` (n=8): the framework's `solve` (controller, budget meter, streaming,
  grading, ordered JSONL writer) vs one ``generate`` per problem with final outputs only.
* ``first-finish`` (n=8, an early-stopping strategy): the framework's `FirstFinish` (streams the
  race, cancels the losers in the engine) vs a raw loop that streams the same request and aborts
  it in the engine when the first sample finishes.

Prints each round's wall time, tokens and problems/hour, then framework / raw problems/hour
(goal >= 0.9).

    .venv/bin/python benchmarks/overhead.py --problems 20 --max-tokens 256 --repeats 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from reasoning import Controller
from reasoning.backends.vllm_local import VLLMBackend
from reasoning.evals.datasets import load_dataset
from reasoning.evals.run import solve
from reasoning.strategies import FirstFinish, SelfConsistency
from reasoning.strategy import request_seed


async def framework(backend: VLLMBackend, problems: list, strategy: Any) -> tuple[float, int]:
    start = time.perf_counter()
    runs = await solve(
        problems, Controller(backend, seed=0), strategy, output=None, concurrency=len(problems)
    )
    if any(r.error for r in runs):
        raise RuntimeError(next(r.error for r in runs if r.error))
    return time.perf_counter() - start, sum(int(r.usage["output_tokens"]) for r in runs)


async def raw(backend: VLLMBackend, problems: list, strategy: Any) -> tuple[float, int]:
    """The same requests straight to the engine; first-finish aborts at the first finisher."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    from reasoning import default_prompt
    from reasoning.backend import Request

    engine = backend._engine
    prompts = [backend.render(Request(default_prompt(p))) for p in problems]
    race = isinstance(strategy, FirstFinish)

    async def one(i: int) -> int:
        params = SamplingParams(
            n=strategy.n,
            temperature=strategy.temperature,
            top_p=strategy.top_p,
            max_tokens=strategy.max_tokens,
            seed=request_seed(0, problems[i].id, 1),
            output_kind=RequestOutputKind.DELTA if race else RequestOutputKind.FINAL_ONLY,
        )
        request_id = f"raw-{i}-{time.time_ns()}"
        tokens = 0
        async for out in engine.generate(prompts[i], params, request_id):
            tokens += sum(len(o.token_ids) for o in out.outputs) if race else 0
            if race and any(o.finish_reason for o in out.outputs):
                await engine.abort(request_id)
                return tokens
            if not race and out.finished:
                return sum(len(o.token_ids) for o in out.outputs)
        return tokens

    start = time.perf_counter()
    tokens = await asyncio.gather(*(one(i) for i in range(len(problems))))
    return time.perf_counter() - start, sum(tokens)


async def main(args: argparse.Namespace, backend: VLLMBackend) -> None:
    problems = load_dataset("gsm8k", limit=args.problems)
    strategies = {
        "self-consistency": SelfConsistency(n=8, max_tokens=args.max_tokens),
        "first-finish": FirstFinish(n=8, max_tokens=args.max_tokens),
    }
    for name in args.strategies.split(","):
        strategy = strategies[name]
        print(
            f"{name}: warm-up ({args.problems} problems, n=8, max_tokens={args.max_tokens}) ...", flush=True
        )
        await raw(backend, problems, strategy)
        rates: dict[str, list[float]] = {"framework": [], "raw vLLM": []}
        for round_ in range(args.repeats):
            for arm_name, arm in (("framework", framework), ("raw vLLM", raw)):
                seconds, tokens = await arm(backend, problems, strategy)
                per_hour = len(problems) / seconds * 3600
                rates[arm_name].append(per_hour)
                print(
                    f"  round {round_ + 1} {arm_name:9s} {seconds:7.1f} s  {tokens:6d} tokens  "
                    f"{tokens / seconds:5.0f} tok/s  {per_hour:6.0f} problems/hour",
                    flush=True,
                )
        ours, theirs = statistics.mean(rates["framework"]), statistics.mean(rates["raw vLLM"])
        print(
            f"{name}: framework {ours:.0f} problems/hour, raw {theirs:.0f}: "
            f"ratio {ours / theirs:.3f} (goal >= 0.9)",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--strategies", default="self-consistency,first-finish")
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="auto")
    arguments = parser.parse_args()
    engine_backend = VLLMBackend.load(arguments.model, dtype=arguments.dtype)
    try:
        print(f"engine: {engine_backend.engine_info['dtype']} ({engine_backend.engine_info['dtype_reason']})")
        asyncio.run(main(arguments, engine_backend))
    finally:
        engine_backend.close()
