"""Step-level tree search side by side: best-of-N, beam, particle filtering, A* on one engine.

The default model solves the first GSM8K test problems and the first MATH-500 problems (sizes
printed), each strategy on the same problems, the same run seed and the same generative scorer
(the model judges its own partial solutions: P(Yes) from the answer token's logprobs), at
matched budgets: N = ``--n`` samples for best-of-N (judge-weighted vote), N beams (width 2) for
beam search, N particles for particle filtering, and k = N continuations per A* expansion with a
budget of N x ``--max-steps`` scorer calls (A* usually stops earlier, at its first goal). All
problems of a dataset are in flight at once (the engine batches them). Printed per strategy:
accuracy, output tokens (policy steps and judge tokens), scorer calls, model calls, wall time,
and the prefix-cache share of the resubmitted step prompts and of all prompts; then tokens and
time relative to best-of-N.

    .venv/bin/python benchmarks/tree_search.py --gsm8k 10 --math 10 --n 4

The engine runs with KV-cache blocks of ``--block-size`` tokens (the prefix cache's unit; vLLM's
CPU default is 128): step prompts grow by one step at a time, so smaller blocks let the cache
serve all but the last partial block.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from reasoning import Controller, Problem
from reasoning.backends.vllm_local import VLLMBackend
from reasoning.evals.datasets import load_dataset
from reasoning.evals.run import solve
from reasoning.strategies import AStar, BeamSearch, BestOfN, ParticleFiltering
from reasoning.strategies.step_tree import search_stats


def strategies(args: argparse.Namespace) -> dict[str, object]:
    """The compared strategies at matched budgets."""
    n, steps = args.n, {"step_tokens": args.step_tokens, "max_steps": args.max_steps}
    return {
        f"best-of-n judge-weighted n={n}": BestOfN(
            n=n, selector="weighted", score="judge", max_tokens=args.step_tokens * args.max_steps
        ),
        f"beam n={n} width=2": BeamSearch(n=n, width=2, **steps),  # type: ignore[arg-type]
        f"particle-filtering N={n}": ParticleFiltering(particles=n, **steps),  # type: ignore[arg-type]
        f"a-star k={n} budget={n * args.max_steps} scorer calls": AStar(
            k=n,
            budget=n * args.max_steps,
            **steps,  # type: ignore[arg-type]
        ),
    }


async def compare(backend: VLLMBackend, name: str, problems: list[Problem], args: argparse.Namespace) -> None:
    print(f"\n== {name}: {len(problems)} problems ({problems[0].id} .. {problems[-1].id}) ==", flush=True)
    rows = []
    for label, strategy in strategies(args).items():
        if args.only and not any(key in label for key in args.only.split(",")):
            continue
        start = time.perf_counter()
        runs = await solve(
            problems,
            Controller(backend, seed=args.seed),
            strategy,
            concurrency=len(problems),  # type: ignore[arg-type]
        )
        seconds = time.perf_counter() - start
        correct = sum(bool(r.correct) for r in runs)
        tokens = sum(int(r.usage["output_tokens"]) for r in runs)
        calls = sum(int(r.usage["calls"]) for r in runs)
        prompt = sum(int(r.usage["prompt_tokens"]) for r in runs)
        cached = sum(int(r.usage["cached_tokens"]) for r in runs)
        stats = [search_stats(r.candidates) for r in runs]
        step_prompt = sum(s["prompt_tokens"] for s in stats)
        step_cached = sum(s["cached_tokens"] for s in stats)
        scorer = int(sum(s["scorer_calls"] for s in stats)) if "best-of" not in label else len(runs) * args.n
        errors = sum(r.stop_reason == "error" for r in runs)
        step_share = f"{step_cached / step_prompt:.3f}" if "best-of" not in label and step_prompt else "  -  "
        rows.append((label, tokens, seconds))
        print(
            f"{label:44s} acc {correct:2d}/{len(runs)}  out tokens {tokens:6d}  scorer calls {scorer:4d}  "
            f"calls {calls:4d}  {seconds:6.1f} s  cache share steps {step_share}  "
            f"all {cached / max(prompt, 1):.3f}" + (f"  errors {errors}" if errors else ""),
            flush=True,
        )
    base = next((r for r in rows if r[0].startswith("best-of-n")), None)
    if base is not None:
        for label, tokens, seconds in rows:
            print(
                f"{label:44s} tokens x{tokens / base[1]:.2f}  time x{seconds / base[2]:.2f}  (vs best-of-N)"
            )


async def main(args: argparse.Namespace) -> None:
    with VLLMBackend.load(
        kv_cache_gb=args.kv_cache_gb, block_size=args.block_size, hidden_states=False
    ) as backend:
        print(
            f"model {backend.model}  n={args.n}  step_tokens={args.step_tokens}  max_steps={args.max_steps}  "
            f"block_size={args.block_size}  seed={args.seed}",
            flush=True,
        )
        if args.gsm8k:
            await compare(backend, "GSM8K test", load_dataset("gsm8k", limit=args.gsm8k), args)
        if args.math:
            await compare(backend, "MATH-500", load_dataset("math500", limit=args.math), args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gsm8k", type=int, default=10, help="first GSM8K test problems (0: skip)")
    parser.add_argument("--math", type=int, default=10, help="first MATH-500 problems (0: skip)")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--step-tokens", type=int, default=128)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--kv-cache-gb", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated name fragments to run")
    asyncio.run(main(parser.parse_args()))
