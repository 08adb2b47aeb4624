"""Parallel strategies side by side: accuracy, tokens, tokens wasted, wall time, on one engine.

Each strategy solves the same first GSM8K test problems (all problems in flight at once, same
run seed) with a comparable sample count, one after another on ONE engine. Printed per
strategy: accuracy, pass@k oracle (any candidate correct), output tokens, tokens decoded for
samples that were then cancelled (``usage.cancelled_tokens``), tokens the engine decoded after
cancellation that nobody received (engine counter minus charged tokens), and wall time; then
each strategy's tokens and time relative to self-consistency.

    .venv/bin/python benchmarks/parallel.py --problems 8 --n 8 --max-tokens 256
"""

from __future__ import annotations

import argparse
import asyncio
import time

from reasoning import Controller
from reasoning.backends.vllm_local import VLLMBackend
from reasoning.evals.datasets import load_dataset
from reasoning.evals.run import solve
from reasoning.strategies import (
    AdaptiveSelfConsistency,
    BestOfN,
    DeepConf,
    FirstFinish,
    SelfConsistency,
    ShortMAtK,
)


def strategies(n: int, max_tokens: int) -> dict[str, object]:
    """The compared strategies at a comparable sample count `n`."""
    return {
        f"self-consistency n={n}": SelfConsistency(n=n, max_tokens=max_tokens),
        f"best-of-n judge-weighted n={n}": BestOfN(
            n=n, selector="weighted", score="judge", max_tokens=max_tokens
        ),
        f"first-finish n={n}": FirstFinish(n=n, max_tokens=max_tokens),
        f"short-3@{n}": ShortMAtK(k=n, m=3, max_tokens=max_tokens),
        f"deepconf online B={2 * n}": DeepConf(
            mode="online", budget=2 * n, warmup=n // 2, batch=n // 2, window=64, max_tokens=max_tokens
        ),
        f"adaptive-sc max={2 * n}": AdaptiveSelfConsistency(
            max_samples=2 * n, batch=n // 2, max_tokens=max_tokens
        ),
    }


async def main(args: argparse.Namespace) -> None:
    problems = load_dataset("gsm8k", limit=args.problems)
    rows = []
    with VLLMBackend.load(kv_cache_gb=args.kv_cache_gb) as backend:
        for name, strategy in strategies(args.n, args.max_tokens).items():
            if args.only and not any(key in name for key in args.only.split(",")):
                continue
            decoded_before = await backend.decoded_tokens()
            start = time.perf_counter()
            runs = await solve(
                problems, Controller(backend, seed=0), strategy, output=None, concurrency=len(problems)
            )
            seconds = time.perf_counter() - start
            await asyncio.sleep(1.0)  # let the engine's counters settle
            engine = await backend.decoded_tokens() - decoded_before
            tokens = sum(int(r.usage["output_tokens"]) for r in runs)
            cancelled = sum(int(r.usage["cancelled_tokens"]) for r in runs)
            correct = sum(bool(r.correct) for r in runs)
            oracle = sum(bool(r.oracle_correct) for r in runs)
            rows.append((name, correct, oracle, tokens, cancelled, engine - tokens, seconds))
            print(
                f"{name:32s} acc {correct}/{len(runs)}  pass@k {oracle}/{len(runs)}  tokens {tokens:6d}  "
                f"cancelled {cancelled:5d}  decoded-after-cancel {engine - tokens:4d}  {seconds:6.1f} s",
                flush=True,
            )
    base = next((r for r in rows if r[0].startswith("self-consistency")), None)
    if base is not None:
        for name, *_, tokens, _cancelled, _late, seconds in rows:
            ratios = f"tokens x{tokens / base[3]:.2f}  time x{seconds / base[6]:.2f}"
            print(f"{name:32s} {ratios}  (vs self-consistency)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--kv-cache-gb", type=float, default=2.0)
    parser.add_argument("--only", default="", help="comma-separated name fragments to run")
    asyncio.run(main(parser.parse_args()))
