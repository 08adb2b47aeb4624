"""Sequential strategies against self-consistency at matched total and matched sequential budget.

Every arm solves the same problems (a GSM8K subset and a MATH-500 subset, sizes from
``--gsm8k``/``--math500``; all problems of a dataset in flight at once, same run seed) on ONE
engine, one arm after another: greedy, self-consistency at several n (the reference curve), and
the sequential methods: budget forcing (s1), Dynasor-CoT, Sequential Refinement, Parallel-Distill-
Refine, Self-Refine, Plan-and-Budget, plus compositions. Every trace is capped at ``--max-tokens``.

Printed per arm and dataset: accuracy with its Wilson interval, mean total output tokens per
problem, mean sequential tokens (the critical path: the longest chain of calls each of which
started after the previous ended, `Usage.sequential_tokens`, a latency proxy), and wall time.
Then, per sequential method, the self-consistency arm closest to it in total tokens (matched
total budget) and the one closest in sequential tokens (matched sequential budget), with the
paired difference on the shared problems and its exact McNemar p-value. On ~20 problems per
dataset these are costs, not winners: the intervals say so.

    .venv/bin/python benchmarks/sequential.py --gsm8k 10 --math500 6      # ~40 min on 2 cores
    .venv/bin/python benchmarks/sequential.py --only greedy,sc@4,pdr --json results/sequential.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from reasoning import Controller, Run
from reasoning.backends.vllm_local import VLLMBackend
from reasoning.compose import build
from reasoning.engine.hardware import machine
from reasoning.evals.datasets import load_dataset
from reasoning.evals.leaderboard.stats import mcnemar_exact, wilson
from reasoning.evals.run import solve


def arms(t: int) -> dict[str, str]:
    """Arm name -> strategy spec, every trace capped at `t` tokens."""
    return {
        "greedy": f"single(max_tokens={t})",
        "sc@2": f"self-consistency(n=2, max_tokens={t})",
        "sc@4": f"self-consistency(n=4, max_tokens={t})",
        "sc@8": f"self-consistency(n=8, max_tokens={t})",  # not run by default (--only): ~1/4 of the time
        "budget-forcing": f"budget-forcing(max_tokens={t}, extend=1, temperature=0)",
        "dynasor": f"dynasor(effort=high, max_tokens={t})",
        "sr": f"sr(rounds=3, max_tokens={t})",
        "pdr": f"pdr(rounds=2, drafts=4, max_tokens={t})",
        "self-refine": f"self-refine(rounds=1, max_tokens={t})",
        "plan-and-budget": f"plan-and-budget(budget={t})",
        "sc@4 over budget-forcing": f"self-consistency(n=4, inner=budget-forcing(max_tokens={t}, extend=1))",
    }


REFERENCE = ("greedy", "sc@2", "sc@4", "sc@8")
"""The arms the sequential methods are matched against (self-consistency's curve; greedy = sc@1)."""


def stats(runs: list[Run]) -> dict[str, Any]:
    n = len(runs)
    correct = sum(bool(r.correct) for r in runs)
    low, high = wilson(correct, n)
    return {
        "n": n,
        "correct": correct,
        "ci": (low, high),
        "tokens": sum(int(r.usage.get("output_tokens", 0)) for r in runs) / max(n, 1),
        "sequential": sum(int(r.usage.get("sequential_tokens", 0)) for r in runs) / max(n, 1),
        "per_problem": {r.problem_id: bool(r.correct) for r in runs},
        "errors": sum(r.error is not None for r in runs),
    }


def paired(a: dict[str, Any], b: dict[str, Any]) -> tuple[int, float]:
    """(correct(a) - correct(b) on shared problems, exact McNemar p)."""
    shared = set(a["per_problem"]) & set(b["per_problem"])
    only_a = sum(a["per_problem"][p] and not b["per_problem"][p] for p in shared)
    only_b = sum(b["per_problem"][p] and not a["per_problem"][p] for p in shared)
    return only_a - only_b, mcnemar_exact(only_b, only_a)


async def main(args: argparse.Namespace) -> None:
    chosen = arms(args.max_tokens)
    if not args.only:
        del chosen["sc@8"]
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(chosen))
        if unknown:
            raise SystemExit(f"unknown arms {unknown}; choose from {', '.join(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in wanted}
    strategies = {name: build(spec) for name, spec in chosen.items()}  # bad specs fail before the engine
    datasets = {
        "gsm8k": load_dataset("gsm8k", limit=args.gsm8k, offset=args.gsm8k_offset),
        "math500": load_dataset("math500", limit=args.math500, offset=args.math500_offset),
    }
    datasets = {k: v for k, v in datasets.items() if v}
    m = machine()
    isa = "AVX-512" if m.has("avx512f") else "AVX2"
    cpu = f"{m.cpu}, {m.cores} cores, {isa}{' + avx512_bf16' if m.has('avx512_bf16') else ''}"
    cpu += " + AMX" if m.has("amx_bf16") else ""
    print(f"machine: {cpu}", flush=True)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with VLLMBackend.load(model=args.model, kv_cache_gb=args.kv_cache_gb, hidden_states=False) as backend:
        print(f"model {backend.model}; traces capped at {args.max_tokens} tokens", flush=True)
        for name, strategy in strategies.items():
            for dataset, problems in datasets.items():
                start = time.perf_counter()
                runs = await solve(
                    problems, Controller(backend, seed=args.seed), strategy, concurrency=len(problems)
                )
                row = stats(runs) | {"seconds": time.perf_counter() - start, "spec": chosen[name]}
                results.setdefault(name, {})[dataset] = row
                low, high = row["ci"]
                print(
                    f"{name:26s} {dataset:8s} {row['correct']:2d}/{row['n']:<2d} [{low:.2f}, {high:.2f}]  "
                    f"tokens {row['tokens']:7.1f}  sequential {row['sequential']:7.1f}  "
                    f"{row['seconds']:6.1f} s  errors {row['errors']}",
                    flush=True,
                )
    print()
    print("| arm | dataset | correct [95% CI] | total tokens | sequential tokens | wall s |")
    print("|---|---|---|---|---|---|")
    for name, by_dataset in results.items():
        for dataset, row in by_dataset.items():
            low, high = row["ci"]
            print(
                f"| {name} | {dataset} | {row['correct']}/{row['n']} [{low:.2f}, {high:.2f}] | "
                f"{row['tokens']:.0f} | {row['sequential']:.0f} | {row['seconds']:.0f} |"
            )
    print()
    head = "matched total: SC arm, tokens, diff (p) | matched sequential: SC arm, tokens, diff (p)"
    print(f"| method | dataset | {head} |")
    print("|---|---|---|---|")
    for name, by_dataset in results.items():
        if name in REFERENCE:
            continue
        for dataset, row in by_dataset.items():
            refs = {r: results[r][dataset] for r in REFERENCE if r in results and dataset in results[r]}
            if not refs:
                continue
            cells = []
            for key in ("tokens", "sequential"):
                ref = min(refs, key=lambda r: abs(refs[r][key] - row[key]))
                diff, p = paired(row, refs[ref])
                cells.append(f"{ref}, {refs[ref][key]:.0f} vs {row[key]:.0f}, {diff:+d} (p={p:.2f})")
            print(f"| {name} | {dataset} | {cells[0]} | {cells[1]} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": str(cpu),
            "args": {k: str(v) for k, v in vars(args).items()},
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=1, default=list))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gsm8k", type=int, default=10, help="GSM8K test problems")
    parser.add_argument("--gsm8k-offset", type=int, default=1300)
    parser.add_argument("--math500", type=int, default=6, help="MATH-500 problems")
    parser.add_argument("--math500-offset", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=512, help="cap of every trace")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--kv-cache-gb", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated arm names")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    asyncio.run(main(parser.parse_args()))
