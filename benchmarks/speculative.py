"""Speculative reasoning side by side: draft = 0.5B, target = 1.5B (both embedded), one pair of engines.

Every arm solves the same GSM8K test problems (``--offset``/``--problems``; all in flight at once
up to ``--concurrency``, same run seed): the target alone (greedy), the draft alone (greedy),
SpecReason, Speculative Thinking, ATTS (calibrated first on ``--calibration-problems`` other
problems), and Arbitrage's RSD baseline (the target judges every draft step) plus, with
``--router PATH``, Arbitrage with a trained router probe. Printed per arm: accuracy with its
Wilson interval, the paired McNemar p-value against the target alone, wall time and the speed-up
over the target alone (its wall time / the arm's), output tokens per model and the target's
share, each model's busy seconds, and the acceptance rate (the share of draft steps or chunks kept:
SpecReason's accepted steps, 1 - ATTS' rejection rate, 1 - Arbitrage's escalation rate,
Speculative Thinking's draft segments among all segments). "Speed-up at matched accuracy" holds
only where the paired test finds no difference: the table says both.

``--token-level`` adds vLLM's own token-level speculative decoding on the target engine: the
target restarted with n-gram prompt lookup and with the 0.5B as draft model, greedy decoding of
the same problems one at a time and all at once, tokens per second against the plain target.

    .venv/bin/python benchmarks/speculative.py --problems 30 --offset 1100
    .venv/bin/python benchmarks/speculative.py --problems 5 --token-level --only none
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from reasoning import Controller, Run, Sampling, collect
from reasoning.backends.vllm_local import DRAFT_TARGET, VLLMBackend, load_backends, shares_tokenizer
from reasoning.config import EngineConfig
from reasoning.engine.hardware import machine
from reasoning.evals.datasets import load_dataset
from reasoning.evals.leaderboard.stats import mcnemar_exact, wilson
from reasoning.evals.run import solve
from reasoning.probes.atts_calibration import ChunkSettings, collect_calibration
from reasoning.problem import Problem, default_prompt
from reasoning.strategies import ATTS, Arbitrage, Single, SpecReason, SpecThinking

ACCEPTANCE = {
    "spec-reason": lambda s: s["draft_steps_accepted"] / s["draft_steps"] if s.get("draft_steps") else None,
    "atts": lambda s: 1 - s["rejection_rate"] if s.get("chunks") else None,
    "arbitrage": lambda s: 1 - s["escalation_rate"] if s.get("steps") else None,
    "spec-thinking": lambda s: 1 - s["target_segments"] / s["segments"] if s.get("segments") else None,
}


def arms(args: argparse.Namespace, calibration: str) -> dict[str, tuple[str, Any]]:
    """Arm name -> (where it runs: target, draft or pair, strategy)."""
    budget = args.max_tokens
    chosen: dict[str, tuple[str, Any]] = {
        "target alone": ("target", Single(max_tokens=budget)),
        "draft alone": ("draft", Single(max_tokens=budget)),
        "spec-reason": ("pair", SpecReason(token_budget=budget, step_tokens=128)),
        "spec-thinking": ("pair", SpecThinking(max_tokens=budget, segment_tokens=256)),
        "atts": (
            "pair",
            ATTS(calibration=calibration, n=1, draft_tokens=args.chunk_tokens, target_tokens=96),
        ),
        "arbitrage rsd": ("pair", Arbitrage(router="judge", max_tokens=budget, step_tokens=128)),
    }
    if args.router:
        chosen["arbitrage probe"] = ("pair", Arbitrage(probe=args.router, max_tokens=budget, step_tokens=128))
    if args.only:
        keep = args.only.split(",")
        chosen = {k: v for k, v in chosen.items() if k == "target alone" or any(o in k for o in keep)}
    return chosen


def summarize(
    name: str, runs: list[Run], seconds: float, base: list[Run] | None, base_s: float | None
) -> dict:
    right = [bool(r.correct) for r in runs]
    low, high = wilson(sum(right), len(right))
    tokens = {
        b: sum(int(r.usage_by_backend.get(b, {}).get("output_tokens", 0)) for r in runs)
        for b in ("draft", "target")
    }
    busy = {
        b: sum(float(r.usage_by_backend.get(b, {}).get("busy_seconds", 0.0)) for r in runs)
        for b in ("draft", "target")
    }
    if not any(tokens.values()):  # a single-model arm: one unnamed backend
        tokens = {
            "draft" if name.startswith("draft") else "target": sum(
                int(r.usage["output_tokens"]) for r in runs
            )
        }
    kept = [ACCEPTANCE[r.strategy](c.scores) for r in runs for c in r.candidates if r.strategy in ACCEPTANCE]
    kept = [k for k in kept if k is not None]
    row: dict[str, Any] = {
        "arm": name,
        "correct": sum(right),
        "problems": len(right),
        "accuracy": sum(right) / len(right),
        "interval": [round(low, 3), round(high, 3)],
        "seconds": round(seconds, 1),
        "tokens": tokens,
        "target_share": round(tokens.get("target", 0) / max(1, sum(tokens.values())), 3),
        "busy_seconds": {k: round(v, 1) for k, v in busy.items()},
        "acceptance": round(sum(kept) / len(kept), 3) if kept else None,
    }
    if base is not None and base_s:
        b = sum(1 for x, y in zip(base, runs, strict=True) if x.correct and not y.correct)
        c = sum(1 for x, y in zip(base, runs, strict=True) if y.correct and not x.correct)
        row["vs_target"] = {"only_target_right": b, "only_arm_right": c, "p": round(mcnemar_exact(b, c), 3)}
        row["speedup"] = round(base_s / seconds, 2)
    return row


async def token_level(problems: list[Problem], args: argparse.Namespace) -> list[dict]:
    """Plain target vs vLLM's token-level speculative decoding (n-gram, draft model), greedy."""
    settings = {
        "plain": None,
        "ngram k=4": {
            "method": "ngram",
            "num_speculative_tokens": 4,
            "prompt_lookup_max": 4,
            "prompt_lookup_min": 2,
        },
        "draft 0.5B k=4": {"model": DRAFT_TARGET["draft"], "num_speculative_tokens": 4},
    }
    rows, reference = [], None
    for name, speculative in settings.items():
        config = EngineConfig(
            model=DRAFT_TARGET["target"], kv_cache_gb=args.kv_cache_gb, speculative=speculative
        )
        start = time.perf_counter()
        try:
            backend = VLLMBackend.from_config(config)
        except Exception as exc:  # the reason it is not available here is the finding
            rows.append({"engine": name, "error": str(exc)[-600:]})
            continue
        started = time.perf_counter() - start
        try:
            requests = [default_request(p, args.max_tokens) for p in problems]
            await collect(backend, requests[0])  # warm-up
            t = time.perf_counter()
            single = [(await collect(backend, r))[0] for r in requests]
            one_at_a_time = time.perf_counter() - t
            t = time.perf_counter()
            batched = [c[0] for c in await asyncio.gather(*(collect(backend, r) for r in requests))]
            all_at_once = time.perf_counter() - t
        finally:
            backend.close()
        texts = [c.text for c in single]
        reference = reference or texts
        rows.append(
            {
                "engine": name,
                "start_s": round(started),
                "single_tok_s": round(sum(c.output_tokens for c in single) / one_at_a_time, 1),
                "batch_tok_s": round(sum(c.output_tokens for c in batched) / all_at_once, 1),
                "same_greedy_text_as_plain": sum(a == b for a, b in zip(texts, reference, strict=True)),
                "problems": len(texts),
            }
        )
    return rows


def _machine() -> dict[str, Any]:
    m = machine()
    wanted = ("avx512f", "avx512_bf16", "amx_bf16", "avx2")
    flags = [f for f in wanted if m.has(f)]
    return {"cpu": m.cpu, "cores": m.cores, "memory_gib": m.memory_gib, "flags": flags}


def default_request(problem: Problem, max_tokens: int) -> Any:
    from reasoning import Request

    return Request(default_prompt(problem), Sampling(temperature=0.0, max_tokens=max_tokens))


async def main(args: argparse.Namespace) -> None:
    problems = load_dataset("gsm8k", offset=args.offset, limit=args.problems)
    print(
        json.dumps(
            {"machine": _machine(), "problems": f"gsm8k test {args.offset}-{args.offset + len(problems) - 1}"}
        )
    )
    rows: list[dict] = []
    if args.only != "none":
        backends = load_backends(DRAFT_TARGET, kv_cache_gb=args.kv_cache_gb, hidden_states=bool(args.router))
        assert shares_tokenizer(backends["draft"], backends["target"])
        try:
            calibration = args.calibration or str(Path(tempfile.mkdtemp()) / "atts.json")
            if not args.calibration and (not args.only or "atts" in args.only):
                cal_problems = load_dataset(
                    "gsm8k", offset=args.calibration_offset, limit=args.calibration_problems
                )
                t = time.perf_counter()
                cal, _ = await collect_calibration(
                    Controller(backends, seed=1),
                    cal_problems,
                    ChunkSettings(draft_tokens=args.chunk_tokens),
                    samples=4,
                )
                cal.save(calibration)
                print(
                    json.dumps(
                        {
                            "atts_calibration": f"{len(cal.pooled())} chunks",
                            "seconds": round(time.perf_counter() - t, 1),
                        }
                    )
                )
            base: list[Run] | None = None
            base_s: float | None = None
            for name, (where, strategy) in arms(args, calibration).items():
                controller = Controller(backends if where == "pair" else backends[where], seed=0)
                t = time.perf_counter()
                runs = await solve(problems, controller, strategy, concurrency=args.concurrency)
                seconds = time.perf_counter() - t
                row = summarize(name, runs, seconds, base, base_s)
                if name == "target alone":
                    base, base_s = runs, seconds
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            for backend in backends.values():
                backend.close()
    if args.token_level:
        for row in await token_level(problems[: args.token_problems], args):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument(
        "--offset", type=int, default=1100, help="first GSM8K test problem (unused elsewhere)"
    )
    parser.add_argument("--calibration-problems", type=int, default=20)
    parser.add_argument("--calibration-offset", type=int, default=1200)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--chunk-tokens", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kv-cache-gb", type=float, default=1.5)
    parser.add_argument("--calibration", default="", help="an ATTS calibration to use (default: collect one)")
    parser.add_argument("--router", default="", help="a trained Arbitrage router probe (adds its arm)")
    parser.add_argument(
        "--only", default="", help="comma-separated arm names (target alone always runs); none: skip"
    )
    parser.add_argument(
        "--token-level", action="store_true", help="also measure vLLM's token-level speculation"
    )
    parser.add_argument("--token-problems", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
