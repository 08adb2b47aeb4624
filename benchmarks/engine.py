"""Engine speed on this machine: dtypes, settings, raw vLLM vs our backend, share of the roof.

Every measurement runs in a fresh process (dtype, instruction-set emulation and preloads are
fixed at process start), one after another, and prints one line; the tables at the end put
them side by side.

Parts (``--parts``, comma-separated):

* ``roof``: the machine's limits from a small torch probe on both cores: read bandwidth (sum
  of a 1 GiB tensor) and matmul rate (2048^3, float32 and bfloat16). The 0.5B decodes a token
  with ~2 x 494M = 0.99 GFLOP and reads all its weights once per engine step (0.99 GB in bf16,
  1.98 GB in float32), so at B sequences per step the roof is
  ``min(flops / 0.99e9, B * bandwidth / weight_bytes)`` tok/s: compute-bound above the batch
  where the two meet, bandwidth-bound below.
* ``dtype``: raw ``vllm.LLM``, greedy, ``--requests`` prompts x ``--tokens`` tokens (ignore_eos),
  bfloat16 vs float32, on this CPU and on the CPU kinds `--emulate` imitates on this chip:
  ``avx2`` (oneDNN and ATen capped at AVX2, torch's AVX-512/AMX probes answer False, so vLLM
  loads its AVX2 kernels) and ``avx512`` (AVX-512 without BF16/AMX). The emulation reproduced
  the AMD EPYC's 4.6x bf16 penalty (4.7x) and its oneDNN warning, which makes it a fair stand-in.
* ``batch``: raw vLLM at max_num_seqs 256, sequences per step 1..256 (what ``max_num_seqs``
  buys), with the roof at each.
* ``settings``: one change at a time from the defaults: KV block 16 vs 128, compiled vs eager,
  the tcmalloc / Intel OpenMP preloads (when present), sampled with top-p with and without this
  package's vLLM plugin (`reasoning.backends.vllm_plugin`).
* ``core``: our `VLLMBackend`'s time to ready and tok/s at 1, 8 and 64 sequences under each
  engine-core setting of `CORE_VARIANTS` (the engine core in its own process or in ours, OpenMP
  threads that sleep when idle, a core reserved for the engine core), one fresh process each.
* ``ours``: our `VLLMBackend` (async engine, streaming, hooks, plugin) vs the same engine's
  ``generate`` with final outputs only, vs stock ``vllm.LLM``: same prompts, same per-request
  seeds (so the same tokens), greedy and sampled (T=0.7, top_p=0.95).

    .venv/bin/python benchmarks/engine.py                       # everything, ~25 min on 2 cores
    .venv/bin/python benchmarks/engine.py --parts roof,dtype --emulate native,avx2
    .venv/bin/python benchmarks/engine.py --emulate avx2 --site /tmp/avx2  # then PYTHONPATH=/tmp/avx2 ...
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FLOPS_PER_TOKEN = 2 * 494e6
"""The 0.5B: two FLOPs per weight per token (linear layers and the tied LM head)."""
WEIGHT_BYTES = {"bfloat16": 494e6 * 2, "float32": 494e6 * 4}
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
IOMP = str(Path(sys.prefix) / "lib" / "libiomp5.so")

EMULATION = {
    "avx2": (
        {
            "ONEDNN_MAX_CPU_ISA": "AVX2",
            "ATEN_CPU_CAPABILITY": "avx2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "REASONING_CPU_FLAGS": "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c",
        },
        [
            "_is_avx512_supported",
            "_is_avx512_vnni_supported",
            "_is_avx512_bf16_supported",
            "_is_amx_tile_supported",
            "_is_amx_fp16_supported",
        ],
    ),
    "avx512": (
        {
            "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
            "MKL_ENABLE_INSTRUCTIONS": "AVX512",
            "REASONING_CPU_FLAGS": "fpu sse sse2 avx avx2 fma f16c avx512f avx512dq avx512bw avx512vl",
        },
        ["_is_avx512_bf16_supported", "_is_amx_tile_supported", "_is_amx_fp16_supported"],
    ),
}
SITE = """import os
for _k, _v in {env!r}.items():
    os.environ.setdefault(_k, _v)
import torch.cpu as _cpu
for _name in {probes!r}:
    setattr(_cpu, _name, lambda: False)
"""


# ---------------------------------------------------------------- worker side (one measurement)


def roof() -> dict[str, float]:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    x = torch.ones(1 << 28, dtype=torch.float32)
    bandwidth = x.numel() * 4 / _best(lambda: x.sum())
    rates = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        size = 2048
        a, b = torch.randn(256, 256).to(dtype), torch.randn(256, 256).to(dtype)
        if 2 * 256**3 / _best(lambda a=a, b=b: a @ b, 1) < 20e9:  # emulated bf16: keep it short
            size = 512
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        rates[name] = 2 * size**3 / _best(lambda a=a, b=b: a @ b)
    return {"bandwidth": bandwidth, "flops_float32": rates["float32"], "flops_bfloat16": rates["bfloat16"]}


def _best(fn: Any, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _prompts(count: int) -> list[str]:
    from transformers import AutoTokenizer

    from reasoning import default_prompt
    from reasoning.engine.models import resolve_model
    from reasoning.evals.datasets import load_dataset

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    problems = load_dataset("gsm8k", limit=count)
    return [
        tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in default_prompt(p)],
            tokenize=False,
            add_generation_prompt=True,
        )
        for p in problems
    ]


def raw(spec: dict[str, Any]) -> dict[str, Any]:
    """Stock vllm.LLM: decode rate at each batch size of ``spec['batches']``."""
    from vllm import LLM, SamplingParams

    from reasoning.backends.vllm_local import configure_cpu_environment
    from reasoning.engine.models import resolve_model

    configure_cpu_environment()
    start = time.perf_counter()
    llm = LLM(
        resolve_model(None),
        dtype=spec["dtype"],
        enforce_eager=spec.get("eager", True),
        max_num_seqs=spec.get("max_num_seqs", 256),
        max_model_len=4096,
        max_num_batched_tokens=4096,
        enable_chunked_prefill=False,
        enable_prefix_caching=True,
        kv_cache_memory_bytes=int(spec.get("kv_cache_gb", 2.0) * (1 << 30)),
        seed=0,
        **({"block_size": spec["block_size"]} if spec.get("block_size") else {}),
    )
    started = time.perf_counter() - start
    batches = spec["batches"]
    prompts = _prompts(max(batches))
    llm.generate(prompts, SamplingParams(temperature=0, max_tokens=2), use_tqdm=False)  # prefill, JIT
    rates = {}
    for batch in batches:
        params = [
            SamplingParams(
                temperature=spec.get("temperature", 0.0),
                top_p=spec.get("top_p", 1.0),
                max_tokens=spec["tokens"],
                ignore_eos=True,
                seed=i if spec.get("temperature", 0.0) > 0 else None,
            )
            for i in range(batch)
        ]
        begin = time.perf_counter()
        outputs = llm.generate(prompts[:batch], params, use_tqdm=False)
        seconds = time.perf_counter() - begin
        rates[batch] = sum(len(o.outputs[0].token_ids) for o in outputs) / seconds
    return {"rates": rates, "start_s": started}


def ours(spec: dict[str, Any]) -> dict[str, Any]:
    """Our backend vs the same engine's bare generate vs nothing else: same seeds, same tokens."""
    from reasoning import Request, Sampling, collect, default_prompt
    from reasoning.backends.vllm_local import VLLMBackend
    from reasoning.evals.datasets import load_dataset

    problems = load_dataset("gsm8k", limit=spec["requests"])
    requests = [
        Request(
            default_prompt(p),
            Sampling(temperature=spec["temperature"], top_p=spec["top_p"], max_tokens=spec["tokens"], seed=i),
        )
        for i, p in enumerate(problems)
    ]
    backend = VLLMBackend.load(dtype=spec["dtype"], max_num_seqs=spec.get("max_num_seqs", 64))

    async def through_backend() -> tuple[float, int]:
        begin = time.perf_counter()
        done = await asyncio.gather(*(collect(backend, r) for r in requests))
        return time.perf_counter() - begin, sum(c[0].output_tokens for c in done)

    async def bare() -> tuple[float, int]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        async def one(i: int, request: Request) -> int:
            s = request.sampling
            params = SamplingParams(
                temperature=s.temperature,
                top_p=s.top_p,
                max_tokens=s.max_tokens,
                seed=s.seed if s.temperature > 0 else None,
                output_kind=RequestOutputKind.FINAL_ONLY,
            )
            final = None
            key = f"bare-{i}-{time.time_ns()}"
            async for out in backend._engine.generate(backend.render(request), params, key):
                final = out
            return len(final.outputs[0].token_ids) if final else 0

        begin = time.perf_counter()
        counts = await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
        return time.perf_counter() - begin, sum(counts)

    async def run() -> dict[str, Any]:
        await collect(backend, requests[0].with_sampling(max_tokens=2))
        await through_backend()  # warm-up: prefill and kernels for these shapes
        result: dict[str, list[float]] = {"ours": [], "bare": []}
        tokens = {}
        for _ in range(spec["repeats"]):
            for name, arm in (("ours", through_backend), ("bare", bare)):
                seconds, count = await arm()
                result[name].append(count / seconds)
                tokens[name] = count
        return {"rates": result, "tokens": tokens}

    try:
        return asyncio.run(run())
    finally:
        backend.close()


def core(spec: dict[str, Any]) -> dict[str, Any]:
    """Our backend under one engine-core setting: time to ready, then tok/s at each batch size."""
    from reasoning import Message, Request, Sampling, collect
    from reasoning.backends.vllm_local import VLLMBackend
    from reasoning.concurrency import run_all

    begin = time.perf_counter()
    backend = VLLMBackend.load(dtype=spec["dtype"], max_num_seqs=64)
    started = time.perf_counter() - begin
    ask = (Message("user", "Count from 1 to 500, separated by commas."),)

    async def rate(batch: int) -> float:
        requests = [Request(ask, Sampling(temperature=0.0, max_tokens=spec["tokens"])) for _ in range(batch)]
        begin = time.perf_counter()
        done = await run_all(*(collect(backend, r) for r in requests))
        return sum(c[0].output_tokens for c in done) / (time.perf_counter() - begin)

    async def run() -> dict[str, Any]:
        await rate(2)  # warm-up: prefill and kernels
        rates: dict[int, list[float]] = {b: [] for b in spec["batches"]}
        for _ in range(spec["repeats"]):
            for batch in spec["batches"]:
                rates[batch].append(await rate(batch))
        return {"start_s": started, "rates": {b: max(v) for b, v in rates.items()}}

    try:
        return asyncio.run(run())
    finally:
        backend.close()


CORE_VARIANTS: list[tuple[str, dict[str, str]]] = [
    ("worker in its own process (vLLM's default)", {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}),
    ("worker in the engine core (VLLM_ENABLE_V1_MULTIPROCESSING=0)", {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}),
    (
        "own process, OMP_WAIT_POLICY=PASSIVE",
        {"VLLM_ENABLE_V1_MULTIPROCESSING": "1", "OMP_WAIT_POLICY": "PASSIVE"},
    ),
    (
        "own process, one core reserved (VLLM_CPU_NUM_OF_RESERVED_CPU=1)",
        {
            "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "1",
            "VLLM_CPU_OMP_THREADS_BIND": "auto",
        },
    ),
]
"""The ``core`` part's settings, one change at a time from this package's (both cores bound)."""


# ---------------------------------------------------------------- parent side (orchestration)


def measure(
    kind: str,
    spec: dict[str, Any],
    emulate: str = "native",
    preload: str = "",
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(extra or {})
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    if spec.get("plugin") is False:
        env["REASONING_VLLM_PATCHES"] = "0"
    with tempfile.TemporaryDirectory() as site:
        if emulate != "native":
            variables, probes = EMULATION[emulate]
            Path(site, "sitecustomize.py").write_text(SITE.format(env=variables, probes=probes))
            env["PYTHONPATH"] = site + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        out = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps({"kind": kind, **spec})],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    tail = " | ".join(out.stderr.strip().splitlines()[-3:])
    return {"error": tail or f"exit status {out.returncode}"}


def roof_at(limits: dict[str, float], dtype: str, batch: int) -> tuple[float, str]:
    compute = limits[f"flops_{dtype}"] / FLOPS_PER_TOKEN
    memory = batch * limits["bandwidth"] / WEIGHT_BYTES[dtype]
    return (compute, "compute") if compute <= memory else (memory, "bandwidth")


def main(args: argparse.Namespace) -> None:
    from reasoning.engine.hardware import choose_dtype, cpu_kind, machine

    m = machine()
    parts = args.parts.split(",")
    kinds = args.emulate.split(",")
    here = kinds[0]  # the CPU kind the batch / settings / ours parts run on
    if here != "native":  # the choice the framework makes on the emulated kind
        m = dataclasses.replace(m, flags=frozenset(EMULATION[here][0]["REASONING_CPU_FLAGS"].split()))
    if args.dtype == "auto":
        args.dtype = choose_dtype("auto", m).dtype
    print(
        f"machine: {m.cpu}, {m.cores} cores, kind {cpu_kind(m)}{' (emulated)' if here != 'native' else ''}; "
        f"{args.requests} x {args.tokens} tokens; dtype {args.dtype}"
    )
    limits: dict[str, dict[str, float]] = {}
    if "roof" in parts or "batch" in parts or "dtype" in parts:
        for kind in kinds:
            limits[kind] = measure("roof", {}, kind)
            lim = limits[kind]
            print(
                f"roof [{kind}]: bandwidth {lim['bandwidth'] / 1e9:.1f} GB/s, matmul float32 "
                f"{lim['flops_float32'] / 1e9:.0f} GFLOP/s, "
                f"bfloat16 {lim['flops_bfloat16'] / 1e9:.0f} GFLOP/s",
                flush=True,
            )
    if "dtype" in parts:
        print("\n-- dtype: raw vllm.LLM, greedy, eager, tok/s at batch", args.requests)
        for kind in kinds:
            rates = {}
            for dtype in ("bfloat16", "float32"):
                r = measure("raw", {"dtype": dtype, "batches": [args.requests], "tokens": args.tokens}, kind)
                rates[dtype] = r.get("rates", {}).get(str(args.requests), float("nan"))
                bound, by = roof_at(limits[kind], dtype, args.requests)
                print(
                    f"{kind:7s} {dtype:9s} {rates[dtype]:6.1f} tok/s  roof {bound:5.0f} ({by})  "
                    f"share {rates[dtype] / bound:4.0%}" + (f"  error: {r['error']}" if "error" in r else ""),
                    flush=True,
                )
            print(f"{kind:7s} bfloat16 / float32 = {rates['bfloat16'] / rates['float32']:.2f}", flush=True)
    if "batch" in parts:
        dtype = args.dtype
        print(f"\n-- batch [{here}]: raw vllm.LLM, {dtype}, max_num_seqs 256, greedy")
        spec = {"dtype": dtype, "batches": [int(b) for b in args.batches.split(",")], "tokens": args.tokens}
        r = measure("raw", spec, here)
        for batch, rate in r.get("rates", {}).items():
            bound, by = roof_at(limits[here], dtype, int(batch))
            share = rate / bound
            print(f"batch {int(batch):4d}  {rate:6.1f} tok/s  roof {bound:5.0f} ({by})  share {share:4.0%}")
    if "settings" in parts:
        dtype = args.dtype
        batch = args.requests
        print(f"\n-- settings [{here}]: raw vllm.LLM, {dtype}, batch {batch}, one change at a time")
        base = {"dtype": dtype, "batches": [batch], "tokens": args.tokens, "max_num_seqs": 256}
        sampled = {**base, "temperature": 0.7, "top_p": 0.95}
        variants: list[tuple[str, dict[str, Any], str]] = [
            ("defaults (eager, block 128)", base, ""),
            ("block_size 16", {**base, "block_size": 16}, ""),
            ("block_size 32", {**base, "block_size": 32}, ""),
            ("compiled (not eager)", {**base, "eager": False}, ""),
            ("sampled top_p .95, no plugin", {**sampled, "plugin": False}, ""),
            ("sampled top_p .95, plugin", sampled, ""),
        ]
        if os.path.exists(TCMALLOC):
            variants.append(("LD_PRELOAD tcmalloc", base, TCMALLOC))
        if os.path.exists(IOMP):
            variants.append(("LD_PRELOAD libiomp5", base, IOMP))
        for name, spec, preload in variants:
            r = measure("raw", spec, here, preload)
            rate = r.get("rates", {}).get(str(batch), float("nan"))
            note = f"  start {r['start_s']:.0f} s" if "start_s" in r else f"  error: {r.get('error')}"
            print(f"{name:32s} {rate:6.1f} tok/s{note}", flush=True)
    if "ours" in parts:
        print(f"\n-- ours vs raw: {args.requests} GSM8K prompts, up to {args.tokens} tokens, same seeds")
        for label, temperature, top_p in (("greedy", 0.0, 1.0), ("sampled T=0.7 top_p=0.95", 0.7, 0.95)):
            spec = {
                "dtype": args.dtype,
                "requests": args.requests,
                "tokens": args.tokens,
                "temperature": temperature,
                "top_p": top_p,
                "repeats": args.repeats,
            }
            r = measure("ours", spec, here)
            if "error" in r:
                print(f"{label}: error {r['error']}")
                continue
            mean = {k: sum(v) / len(v) for k, v in r["rates"].items()}
            print(
                f"{label:26s} ours {mean['ours']:6.1f} tok/s  same engine, final outputs only "
                f"{mean['bare']:6.1f} tok/s  ratio {mean['ours'] / mean['bare']:.3f}  tokens {r['tokens']}",
                flush=True,
            )
            stock = measure(
                "raw",
                {
                    "dtype": args.dtype,
                    "batches": [args.requests],
                    "tokens": args.tokens,
                    "temperature": temperature,
                    "top_p": top_p,
                    "max_num_seqs": 64,
                    "plugin": False,
                },
                here,
            )
            rate = stock.get("rates", {}).get(str(args.requests), float("nan"))
            print(f"{'':26s} stock vllm.LLM (no plugin, ignore_eos) {rate:6.1f} tok/s", flush=True)

    if "core" in parts:
        batches = [int(b) for b in args.core_batches.split(",")]
        print(
            f"\n-- core [{here}]: our backend, {args.dtype}, greedy {args.tokens} tokens, "
            f"tok/s at batch {batches}"
        )
        for name, extra in CORE_VARIANTS:
            spec = {"dtype": args.dtype, "batches": batches, "tokens": args.tokens, "repeats": args.repeats}
            r = measure("core", spec, here, extra=extra)
            if "error" in r:
                print(f"{name:62s} error: {r['error']}", flush=True)
                continue
            rates = "  ".join(f"{b}: {r['rates'][str(b)]:6.1f}" for b in batches)
            print(f"{name:62s} start {r['start_s']:5.1f} s  tok/s {rates}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="roof,dtype,batch,settings,ours")
    parser.add_argument(
        "--emulate",
        default="native,avx512,avx2",
        help="CPU kinds for the dtype part; the other parts run on the first",
    )
    parser.add_argument("--dtype", default="auto", help="dtype for the batch/settings/ours parts")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--batches", default="1,8,32,64,128,256", help="sequences per step, batch part")
    parser.add_argument("--core-batches", default="1,8,64", help="sequences at once, core part")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--site",
        metavar="DIR",
        help="write the first --emulate kind's sitecustomize.py into DIR and exit "
        "(then PYTHONPATH=DIR runs anything, e.g. the test suite, as on that CPU)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.site:
        variables, probes = EMULATION[parsed.emulate.split(",")[0]]
        Path(parsed.site).mkdir(parents=True, exist_ok=True)
        Path(parsed.site, "sitecustomize.py").write_text(SITE.format(env=variables, probes=probes))
    elif parsed.worker:
        job = json.loads(parsed.worker)
        kind = job.pop("kind")
        result = {
            "roof": lambda: roof(),
            "raw": lambda: raw(job),
            "ours": lambda: ours(job),
            "core": lambda: core(job),
        }[kind]()
        print("RESULT " + json.dumps(result), flush=True)
    else:
        main(parsed)
