"""Decode speed with vLLM's recommended CPU preloads (tcmalloc, Intel OpenMP) vs without.

vLLM's CPU worker warns when libtcmalloc and libiomp are not in LD_PRELOAD. Each variant runs
the same workload in a fresh process (LD_PRELOAD only works at process start; the engine's
spawned processes inherit it): one in-process engine, `--requests` greedy GSM8K requests of
`--tokens` tokens all in flight, after a warm-up. Variants alternate for `--repeats` rounds.
Printed: decode tok/s per run and each variant's mean relative to no preload.

    .venv/bin/python benchmarks/preload.py --requests 32 --tokens 128 --repeats 2

tcmalloc: ``apt-get install libtcmalloc-minimal4``; libiomp5 ships in the venv (intel-openmp).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
IOMP = str(Path(sys.prefix) / "lib" / "libiomp5.so")


async def workload(requests: int, tokens: int) -> float:
    from reasoning import Request, Sampling, collect, default_prompt
    from reasoning.backends.vllm_local import VLLMBackend
    from reasoning.evals.datasets import load_dataset

    problems = load_dataset("gsm8k", limit=requests)
    sampling = Sampling(temperature=0.0, max_tokens=tokens)
    batch = [Request(default_prompt(p), sampling) for p in problems]
    with VLLMBackend.load(kv_cache_gb=1.0) as backend:
        await collect(backend, batch[0].with_sampling(max_tokens=8))  # warm-up
        start = time.perf_counter()
        done = await asyncio.gather(*(collect(backend, r) for r in batch))
        seconds = time.perf_counter() - start
    return sum(c[0].output_tokens for c in done) / seconds


def main(args: argparse.Namespace) -> None:
    variants = {"none": ""}
    if os.path.exists(TCMALLOC):
        variants["tcmalloc"] = TCMALLOC
    if os.path.exists(IOMP):
        variants["iomp"] = IOMP
    if len(variants) == 3:
        variants["tcmalloc+iomp"] = f"{TCMALLOC}:{IOMP}"
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, preload in variants.items():
            env = dict(os.environ, LD_PRELOAD=preload) if preload else dict(os.environ)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    "--requests",
                    str(args.requests),
                    "--tokens",
                    str(args.tokens),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            lines = [line for line in out.stdout.splitlines() if line.startswith("rate ")]
            if not lines:
                print(f"round {repeat} {name:14s} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            rate = float(lines[-1].split()[1])
            rates[name].append(rate)
            print(f"round {repeat} {name:14s} {rate:6.1f} tok/s", flush=True)
    base = statistics.mean(rates["none"]) if rates["none"] else float("nan")
    for name, values in rates.items():
        if values:
            print(
                f"{name:14s} mean {statistics.mean(values):6.1f} tok/s  x{statistics.mean(values) / base:.2f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.worker:
        print(f"rate {asyncio.run(workload(parsed.requests, parsed.tokens)):.2f}")
    else:
        main(parsed)
