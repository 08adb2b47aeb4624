"""Two named engines in one run: draft = 0.5B, target = 1.5B (both embedded), each with its own budget.

Starts both engines in this process (after one joint memory check), checks that they share a
tokenizer, reports their start times and memory, then solves GSM8K problems with a small
cascade written against the named-backend API: the draft samples `--n` answers; when they all
agree the draft's answer stands, otherwise the target answers greedily. Side by side, the
target alone answers the same problems greedily. Printed: accuracy, tokens per backend (from
the record's ``usage_by_backend``) and wall time of both arms, and the cascade / target ratio.

    .venv/bin/python benchmarks/two_models.py --problems 10 --n 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass

import psutil

from reasoning import Budget, Context, Controller, Problem, Result, Run, Sampling
from reasoning.backends.vllm_local import DRAFT_TARGET, load_backends, shares_tokenizer
from reasoning.evals.datasets import load_dataset
from reasoning.evals.run import solve
from reasoning.strategies import Single


@dataclass(frozen=True)
class Cascade:
    """Draft votes; the target answers only when the draft's samples disagree."""

    n: int = 4
    max_tokens: int = 384

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        drafts = await ctx.generate(
            ctx.request(Sampling(n=self.n, temperature=0.7, max_tokens=self.max_tokens))
        )
        candidates = await ctx.candidates(drafts)
        answers = Counter(c.answer for c in candidates if c.answer is not None)
        if answers and answers.most_common(1)[0][1] == self.n:
            return Result(candidates[0].answer, tuple(candidates), 0)
        final = await ctx.generate(
            ctx.request(Sampling(temperature=0.0, max_tokens=self.max_tokens)), backend="target"
        )
        candidates += await ctx.candidates(final)
        return Result(candidates[-1].answer, tuple(candidates), len(candidates) - 1)


def engine_memory_gib() -> float:
    """Resident memory of this process and its children (the engine processes)."""
    me = psutil.Process(os.getpid())
    return sum(p.memory_info().rss for p in [me, *me.children(recursive=True)]) / (1 << 30)


def report(name: str, runs: list[Run], seconds: float) -> None:
    correct = sum(bool(r.correct) for r in runs)
    tokens: Counter[str] = Counter()
    for run in runs:
        for backend, usage in run.usage_by_backend.items():
            tokens[backend] += int(usage["output_tokens"])
    print(
        f"{name:8s} {correct}/{len(runs)} correct  {seconds:6.1f} s  "
        + "  ".join(f"{b} {t} tokens" for b, t in sorted(tokens.items()))
    )


async def main(args: argparse.Namespace) -> None:
    problems = load_dataset("gsm8k", limit=args.problems)
    free_before = psutil.virtual_memory().available / (1 << 30)
    start = time.perf_counter()
    backends = load_backends(DRAFT_TARGET, kv_cache_gb=args.kv_cache_gb)
    print(
        f"both engines started in {time.perf_counter() - start:.0f} s; tokenizer shared: "
        f"{shares_tokenizer(backends['draft'], backends['target'])}"
    )
    print(
        f"memory: engines {engine_memory_gib():.1f} GiB resident; available before {free_before:.1f} GiB, "
        f"after {psutil.virtual_memory().available / (1 << 30):.1f} GiB"
    )
    try:
        budgets = {"draft": Budget(output_tokens=args.n * 384), "target": Budget(output_tokens=384)}
        cascade = Controller(backends, budgets=budgets, seed=0)
        target_only = Controller({"target": backends["target"]}, seed=0)
        t0 = time.perf_counter()
        runs = await solve(problems, cascade, Cascade(n=args.n), output=None)
        cascade_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        baseline = await solve(problems, target_only, Single(max_tokens=384), output=None)
        target_s = time.perf_counter() - t0
    finally:
        for backend in backends.values():
            backend.close()
    report("cascade", runs, cascade_s)
    report("target", baseline, target_s)
    escalated = sum(any(c.backend == "target" for c in r.candidates) for r in runs)
    print(
        f"escalated to the target: {escalated}/{len(runs)}; wall-time ratio cascade/target "
        f"{cascade_s / target_s:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=10)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--kv-cache-gb", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
