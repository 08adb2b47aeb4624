"""Framework overhead: `reasoning solve`'s code path vs the same requests sent straight to vLLM.

Self-consistency (n=8) on the first GSM8K test problems. Both arms use ONE engine, the same
rendered prompts, the same sampling parameters and the same per-request seeds, so they decode
identical tokens; the arms alternate (A B A B ...) after a warm-up round that fills the prefix
cache for both. Prints each round's wall time, tokens, and the ratio framework / raw
(goal <= 1.05).

    .venv/bin/python benchmarks/overhead.py --problems 20 --max-tokens 512 --repeats 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from reasoning import Controller
from reasoning.backends.vllm_local import VLLMBackend
from reasoning.evals.datasets import load_dataset
from reasoning.evals.run import solve
from reasoning.strategies import SelfConsistency
from reasoning.strategy import request_seed


async def framework(backend: VLLMBackend, problems: list, strategy: SelfConsistency) -> tuple[float, int]:
    start = time.perf_counter()
    runs = await solve(
        problems, Controller(backend, seed=0), strategy, output=None, concurrency=len(problems)
    )
    return time.perf_counter() - start, sum(int(r.usage["output_tokens"]) for r in runs)


async def raw(backend: VLLMBackend, problems: list, strategy: SelfConsistency) -> tuple[float, int]:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    from reasoning import default_prompt
    from reasoning.backend import Request

    engine = backend._engine
    prompts = [backend.render(Request(default_prompt(p))) for p in problems]

    async def one(i: int) -> int:
        params = SamplingParams(
            n=strategy.n,
            temperature=strategy.temperature,
            top_p=strategy.top_p,
            max_tokens=strategy.max_tokens,
            seed=request_seed(0, problems[i].id, 1),
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = None
        async for out in engine.generate(prompts[i], params, f"raw-{i}-{time.time_ns()}"):
            final = out
        return sum(len(o.token_ids) for o in final.outputs)

    start = time.perf_counter()
    tokens = await asyncio.gather(*(one(i) for i in range(len(problems))))
    return time.perf_counter() - start, sum(tokens)


async def main(args: argparse.Namespace, backend: VLLMBackend) -> None:
    problems = load_dataset("gsm8k", limit=args.problems)
    strategy = SelfConsistency(n=8, max_tokens=args.max_tokens)
    print(f"warm-up ({args.problems} problems, n=8, max_tokens={args.max_tokens}) ...", flush=True)
    await raw(backend, problems, strategy)
    ours, theirs = [], []
    for round_ in range(args.repeats):
        for name, arm, sink in (("framework", framework, ours), ("raw vLLM", raw, theirs)):
            seconds, tokens = await arm(backend, problems, strategy)
            sink.append(seconds)
            print(
                f"round {round_ + 1} {name:9s} {seconds:7.1f} s  {tokens} tokens  "
                f"{tokens / seconds:.0f} tok/s",
                flush=True,
            )
    ratio = statistics.mean(ours) / statistics.mean(theirs)
    print(
        f"framework {statistics.mean(ours):.1f} s  raw {statistics.mean(theirs):.1f} s  "
        f"ratio {ratio:.3f} (goal <= 1.05)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default=None)
    arguments = parser.parse_args()
    engine_backend = VLLMBackend.load(arguments.model)
    try:
        asyncio.run(main(arguments, engine_backend))
    finally:
        engine_backend.close()
