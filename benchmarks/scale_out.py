"""Scale-out over engine replicas on a local Ray cluster: what it gains, what it costs.

Three measurements, side by side in one run (`reasoning.backends.replicas`):

1. The coordinator's overhead per request: scripted replicas (no model, zero decode time), the
   same requests sent straight to an in-process `ScriptedBackend` and through a pool of one and
   of two replicas (requests/s, and the coordinator's CPU seconds per request).
2. Problems/hour with 1 and 2 engine replicas: GSM8K self-consistency (n samples per problem),
   every problem in flight at once. Two engine replicas are started once; the 1-replica arm is a
   pool over the first of them (the other idles). Every arm starts from an empty prefix cache.
   Twice: both engines computing on every core, then each on its own half of the cores (what
   `start_replicas` does on a local cluster). Also the coordinator's CPU seconds per problem,
   the input of the N-node estimate.
3. Affinity vs round-robin routing on a step-wise search (beam search, small settings, steps
   scored by a fixed pseudo-random score of their text) over the two engine replicas: the
   prefix-cache share (cached prompt tokens / prompt tokens, from the records' usage) and the
   wall time of each.

On a 2-core machine the replicas share two cores, so expect little gain from the second
replica: the point is the mechanism and the per-replica numbers.

    .venv/bin/python benchmarks/scale_out.py --problems 16 --n 4 --max-tokens 256 --beam-problems 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import zlib
from functools import partial
from pathlib import Path
from typing import Any

from reasoning import Controller, EngineConfig, Message, Request, Sampling, ScriptedBackend, collect
from reasoning.backends.replicas import ReplicaPool, connect, start_replicas
from reasoning.concurrency import run_all
from reasoning.evals.datasets import load_dataset
from reasoning.evals.run import solve
from reasoning.strategies import SelfConsistency
from reasoning.strategies.beam_search import BeamSearch
from reasoning.verifiers.process import ScriptedScorer


async def requests_per_second(
    backend: Any, requests: int, tokens: int, concurrency: int, n: int = 1
) -> dict[str, float]:
    """`requests` requests of `n` samples x `tokens` scripted tokens, `concurrency` at a time."""
    request = Request((Message("user", "count"),), Sampling(n=n, max_tokens=tokens))
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            await collect(backend, request)

    cpu, start = time.process_time(), time.perf_counter()
    await run_all(*(one() for _ in range(requests)))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "requests_per_s": requests / wall,
        "coordinator_cpu_ms_per_request": 1000 * cpu / requests,
        "coordinator_cpu_us_per_token": 1e6 * cpu / (requests * n * tokens),
    }


async def overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Unpaced: scripted tokens as fast as they come. Paced: n=4 x 256 tokens, a token every
    4 ms per sample (an engine's steps, at ~1000 tokens/s per request): the coordinator's CPU per
    token on a realistic stream."""
    out: dict[str, Any] = {}
    short = " ".join(["w"] * args.overhead_tokens)
    long = " ".join(["w"] * 256)
    shapes = {
        "unpaced": (partial(ScriptedBackend, [short]), args.overhead_requests, args.overhead_tokens, 32, 1),
        "paced": (partial(ScriptedBackend, [long], seconds_per_token=0.004), 64, 256, 16, 4),
    }
    for shape, (make, requests, tokens, concurrency, n) in shapes.items():
        direct = make()
        await requests_per_second(direct, 8, tokens, 8, n)  # warm-up
        out[f"{shape}, direct"] = await requests_per_second(direct, requests, tokens, concurrency, n)
        for count in (1, 2):
            pool = start_replicas([make] * count)
            try:
                await requests_per_second(pool, 8, tokens, 8, n)
                measured = await requests_per_second(pool, requests, tokens, concurrency, n)
                out[f"{shape}, pool of {count}"] = measured
            finally:
                pool.close()
    return out


async def throughput(pool: ReplicaPool, problems: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """Problems/hour of GSM8K self-consistency on `pool`, every problem in flight at once."""
    pool.reset_prefix_caches()
    strategy = SelfConsistency(n=args.n, max_tokens=args.max_tokens)
    cpu, start = time.process_time(), time.perf_counter()
    runs = await solve(problems, Controller(pool, seed=0), strategy, concurrency=len(problems))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    errors = [r.error for r in runs if r.error]
    if errors:
        raise RuntimeError(errors[0])
    tokens = sum(int(r.usage["output_tokens"]) for r in runs)
    return {
        "replicas": len(pool.replicas),
        "seconds": wall,
        "problems_per_hour": 3600 * len(runs) / wall,
        "output_tokens": tokens,
        "tokens_per_s": tokens / wall,
        "coordinator_cpu_s_per_problem": cpu / len(runs),
        "problems_per_replica": _per_replica(runs),
    }


async def affinity(pool: ReplicaPool, problems: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """Prefix-cache share of a beam search with `pool`'s routing, from a cold cache."""
    pool.reset_prefix_caches()
    strategy = BeamSearch(
        n=args.beam_n, width=args.beam_width, scorer="verifier", step_tokens=args.step_tokens, max_steps=6
    )
    start = time.perf_counter()
    # Step scores: a fixed pseudo-random score per step text (the scorer's own requests would
    # add noise to the cache share; the search's shape is what matters here).
    scorer = ScriptedScorer(lambda steps: zlib.crc32(steps[-1].encode()) % 1000 / 1000)
    controller = Controller(pool, verifier=scorer, seed=0)
    runs = await solve(problems, controller, strategy, concurrency=len(problems))
    wall = time.perf_counter() - start
    errors = [r.error for r in runs if r.error]
    if errors:
        raise RuntimeError(errors[0])
    prompt = sum(int(r.usage["prompt_tokens"]) for r in runs)
    cached = sum(int(r.usage["cached_tokens"]) for r in runs)
    spread = [len(r.engine.get("replica_requests", {})) for r in runs]
    return {
        "routing": pool.routing,
        "seconds": wall,
        "requests": sum(int(r.usage["calls"]) for r in runs),
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "cache_share": cached / max(prompt, 1),
        "output_tokens": sum(int(r.usage["output_tokens"]) for r in runs),
        "replicas_per_problem": sum(spread) / len(spread),
    }


def _per_replica(runs: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        name = str(run.engine.get("replica", "?"))
        counts[name] = counts.get(name, 0) + 1
    return counts


async def engine_pair(
    args: argparse.Namespace, envs: list[dict[str, str]] | None, beam: bool
) -> dict[str, Any]:
    """Two engine replicas: problems/hour with one and with both, then (`beam`) the routing arms."""
    config = EngineConfig(kv_cache_gb=args.kv_cache_gb, block_size=32, max_num_seqs=64)
    start = time.perf_counter()
    both = start_replicas([config, config], envs=envs)
    out: dict[str, Any] = {
        "engine_start_s": time.perf_counter() - start,
        "engine": both.replicas[0].engine_info,
    }
    try:
        one = ReplicaPool(both.replicas[:1])
        warm = load_dataset("gsm8k", limit=2, offset=1000)
        await throughput(both, warm, argparse.Namespace(**{**vars(args), "max_tokens": 16}))  # warm-up
        problems = load_dataset("gsm8k", limit=args.problems)
        arms = []
        for _ in range(args.repeats):
            for pool in (one, both):
                arm = await throughput(pool, problems, args)
                print(f"  {arm['replicas']} replica(s): {json.dumps(arm)}", flush=True)
                arms.append(arm)
        out["throughput"] = arms
        if beam:
            beam_problems = load_dataset("gsm8k", limit=args.beam_problems, offset=args.problems)
            routed = []
            for routing in ("round-robin", "affinity", "affinity", "round-robin")[: 2 * args.beam_repeats]:
                pool = ReplicaPool(both.replicas, routing=routing)  # type: ignore[arg-type]
                arm = await affinity(pool, beam_problems, args)
                print(f"  beam search, {routing}: {json.dumps(arm)}", flush=True)
                routed.append(arm)
            out["routing"] = routed
        out["replica_counts"] = both.counts()
    finally:
        both.close()
    return out


def _cores(first: int, end: int) -> str:
    """A VLLM_CPU_OMP_THREADS_BIND value: cores first..end-1."""
    return str(first) if end - first == 1 else f"{first}-{end - 1}"


async def engines(args: argparse.Namespace) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    print("engines on every core:", flush=True)
    shared = [{"VLLM_CPU_OMP_THREADS_BIND": _cores(0, cores)}] * 2
    out = {"shared_cores": await engine_pair(args, shared, beam=True)}
    if args.split_cores and cores >= 2:
        half = cores // 2
        binds = [
            f"0-{half - 1}" if half > 1 else "0",
            f"{half}-{cores - 1}" if cores - half > 1 else str(half),
        ]
        print(f"engines on their own cores ({', '.join(binds)}; the default of start_replicas):", flush=True)
        envs = [{"VLLM_CPU_OMP_THREADS_BIND": bind} for bind in binds]
        out["own_cores"] = await engine_pair(args, envs, beam=False)
    return out


def report(result: dict[str, Any]) -> None:
    print("\n== coordinator overhead (scripted replicas, no decode time) ==")
    for name, value in result["overhead"].items():
        print(
            f"  {name:>18}: {value['requests_per_s']:7.0f} requests/s, "
            f"{value['coordinator_cpu_ms_per_request']:.2f} ms coordinator CPU per request, "
            f"{value['coordinator_cpu_us_per_token']:.1f} us per token"
        )
    for label, key in (("on every core", "shared_cores"), ("each on its own cores", "own_cores")):
        if key not in result:
            continue
        pair = result[key]
        print(f"\n== engines {label} (2 started in {pair['engine_start_s']:.0f} s) ==")
        by_count: dict[int, list[dict[str, Any]]] = {}
        for arm in pair["throughput"]:
            by_count.setdefault(arm["replicas"], []).append(arm)
        for count, arms in sorted(by_count.items()):
            rates = [a["problems_per_hour"] for a in arms]
            cpu = sum(a["coordinator_cpu_s_per_problem"] for a in arms) / len(arms)
            tps = sum(a["tokens_per_s"] for a in arms) / len(arms)
            print(
                f"  {count} replica(s): problems/hour {', '.join(f'{r:.0f}' for r in rates)}; "
                f"{tps:.0f} tok/s; coordinator CPU {cpu * 1000:.0f} ms per problem"
            )
        pairs = zip(by_count.get(1, []), by_count.get(2, []), strict=False)
        ratios = [b["problems_per_hour"] / a["problems_per_hour"] for a, b in pairs]
        print(f"  2 replicas / 1 replica, per repeat: {', '.join(f'{r:.2f}' for r in ratios)}")
        if "routing" in pair:
            print("\n== routing on beam search (2 engine replicas, every core) ==")
            for arm in pair["routing"]:
                print(
                    f"  {arm['routing']:>11}: cache share {arm['cache_share']:.1%} "
                    f"({arm['cached_tokens']}/{arm['prompt_tokens']}), {arm['requests']} requests, "
                    f"{arm['replicas_per_problem']:.1f} replicas per problem, {arm['seconds']:.0f} s"
                )


async def main(args: argparse.Namespace) -> None:
    connect("auto")
    result: dict[str, Any] = {"args": vars(args)}
    result["overhead"] = await overhead(args)
    if not args.skip_engines:
        result.update(await engines(args))
    report(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--beam-problems", type=int, default=8)
    parser.add_argument("--beam-repeats", type=int, default=2, help="1: RR, A; 2: RR, A, A, RR.")
    parser.add_argument(
        "--split-cores",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also run two replicas each bound to half the cores.",
    )
    parser.add_argument("--beam-n", type=int, default=4)
    parser.add_argument("--beam-width", type=int, default=2)
    parser.add_argument("--step-tokens", type=int, default=96)
    parser.add_argument("--kv-cache-gb", type=float, default=2.0)
    parser.add_argument("--overhead-requests", type=int, default=400)
    parser.add_argument("--overhead-tokens", type=int, default=32)
    parser.add_argument("--skip-engines", action="store_true", help="Only the coordinator's overhead.")
    parser.add_argument("--out", type=Path, default=None, help="Write every number as JSON here.")
    asyncio.run(main(parser.parse_args()))
