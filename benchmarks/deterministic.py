"""What deterministic mode buys and costs: records that repeat, at the price of batching.

A tree search sends its expansions (and its judge's requests) concurrently, and vLLM fans a
request's n samples out into requests that reach its scheduler one by one, so the batches the
engine forms depend on arrival timing, and bfloat16 decoding on a CPU is not bit-identical across
batch compositions. `Controller(deterministic=True)` sends one request at a time, admits a
request's samples in one scheduler step, and starts each problem from an emptied prefix cache.

Two arms on one engine, side by side, each solving the same GSM8K problems --repeats times with
the same seed: ``batched`` (the default; each repeat from an emptied prefix cache, problems one
at a time, so only the batching inside a problem varies) and ``deterministic``. Printed per
arm: how many problems got the same record (timings aside) in every repeat, seconds per
problem, and the deterministic/batched time ratio.

    .venv/bin/python benchmarks/deterministic.py --problems 6 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from reasoning import Controller
from reasoning.backends.vllm_local import VLLMBackend
from reasoning.compose import build
from reasoning.evals.datasets import load_dataset
from reasoning.record import without_clock


async def arm(backend: VLLMBackend, args: argparse.Namespace, deterministic: bool) -> tuple[int, float]:
    """Problems whose record repeated in every repeat, and seconds per problem solved."""
    problems = load_dataset("gsm8k", offset=args.offset, limit=args.problems)
    strategy = build(args.strategy)
    seen: dict[str, set[str]] = {p.id: set() for p in problems}
    start = time.monotonic()
    for _ in range(args.repeats):
        await backend.reset_prefix_cache()
        controller = Controller(backend, seed=args.seed, deterministic=deterministic)
        for problem in problems:
            run = await controller.run(problem, strategy)
            seen[problem.id].add(json.dumps(without_clock(run), sort_keys=True))
    seconds = (time.monotonic() - start) / (args.repeats * len(problems))
    return sum(len(records) == 1 for records in seen.values()), seconds


async def main(args: argparse.Namespace) -> None:
    with VLLMBackend.load(kv_cache_gb=args.kv_cache_gb) as backend:
        warm_up = argparse.Namespace(**{**vars(args), "problems": 1, "repeats": 1})
        await arm(backend, warm_up, False)
        batched = await arm(backend, args, False)
        deterministic = await arm(backend, args, True)
    print(f"{args.strategy}: {args.problems} GSM8K problems, {args.repeats} repeats, seed {args.seed}")
    print("arm            same record in every repeat   s/problem")
    for name, (same, seconds) in (("batched", batched), ("deterministic", deterministic)):
        print(f"{name:<14} {same:>3} of {args.problems:<24} {seconds:8.2f}")
    print(f"time ratio deterministic/batched: {deterministic[1] / batched[1]:.2f}")


if __name__ == "__main__":
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--strategy", default="beam-search(n=4, width=2, step_tokens=32, max_steps=4)")
    parser.add_argument("--problems", type=int, default=6)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kv-cache-gb", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
