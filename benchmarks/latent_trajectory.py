"""Latent-trajectory selection vs majority vote on the same samples, and each signal's AUROC.

`lt-select` draws n samples per problem and reads the hidden states of every trace; its record
keeps every candidate's answer and LT signals, so the same samples give: the LT pick (per
signal, recomputed from the recorded signals), the majority vote, and pass@n. AUROC of each
signal (sign-corrected) for "this candidate is right", over all candidates.

    .venv/bin/python benchmarks/latent_trajectory.py --problems 30 --n 4 --max-tokens 256
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time

from reasoning import Controller, majority_vote
from reasoning.backends.vllm_local import VLLMBackend
from reasoning.evals.datasets import load_dataset
from reasoning.evals.run import solve
from reasoning.probes.probe import auroc
from reasoning.strategies import LTSelect
from reasoning.verifiers.grading import grade

SIGNS = {"lt_net": 1.0, "lt_cumulative": -1.0, "lt_aligned": 1.0}


async def main(args: argparse.Namespace) -> None:
    problems = load_dataset(args.dataset, limit=args.problems, offset=args.offset)
    by_id = {p.id: p for p in problems}
    with VLLMBackend.load(kv_cache_gb=args.kv_cache_gb, hidden_states=True) as backend:
        start = time.perf_counter()
        strategy = LTSelect(n=args.n, max_tokens=args.max_tokens, segment=args.segment)
        runs = await solve(problems, Controller(backend, seed=0), strategy, concurrency=len(problems))
        seconds = time.perf_counter() - start
    scores: dict[str, list[float]] = {k: [] for k in SIGNS}
    labels: list[int] = []
    picks = {k: 0 for k in SIGNS}
    vote = oracle = 0
    for run in runs:
        problem = by_id[run.problem_id]
        right = [bool(grade(problem, c.answer)) if c.answer is not None else False for c in run.candidates]
        labels += [int(r) for r in right]
        oracle += any(right)
        chosen = majority_vote([c.answer for c in run.candidates])
        vote += chosen is not None and right[chosen]
        for key, sign in SIGNS.items():
            values = [sign * c.scores.get(key, math.nan) for c in run.candidates]
            scores[key] += values
            answered = [
                i for i, c in enumerate(run.candidates) if c.answer is not None and math.isfinite(values[i])
            ]
            best = max(answered, key=lambda i: values[i]) if answered else chosen
            picks[key] += best is not None and right[best]
    total = len(runs)
    tokens = sum(int(r.usage.get("output_tokens", 0)) for r in runs)
    print(f"{args.dataset} {total} problems, n={args.n}, {args.max_tokens} tokens, segment {args.segment}:")
    print(f"  majority vote      {vote}/{total}")
    for key in SIGNS:
        finite = [(s, y) for s, y in zip(scores[key], labels, strict=True) if math.isfinite(s)]
        area = auroc([s for s, _ in finite], [y for _, y in finite]) if finite else math.nan
        print(f"  LT argmax {key[3:]:<11} {picks[key]}/{total}   AUROC (candidate right) {area:.3f}")
    print(f"  pass@{args.n}             {oracle}/{total}")
    print(f"  {tokens} output tokens (incl. one metered call per hidden-state read), {seconds:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="gsm8k")
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--segment", type=int, default=32)
    parser.add_argument("--kv-cache-gb", type=float, default=4.0)
    asyncio.run(main(parser.parse_args()))
