"""Cost of reading hidden states during a generation, as a fraction of the trace's time.

A probe-driven strategy (early exit, difficulty estimation) streams a trace and, every
`--spacing` tokens (the cue spacing), asks for the hidden state of the position it has reached,
waiting for the answer while the engine keeps decoding. Two arms on ONE engine, alternating per
problem and repeat (A B B A ...), greedy so both decode identical traces:

* plain:  stream a `--tokens`-token greedy trace;
* probed: the same trace, awaiting `backend.hidden_states(prefix, layers, [-1])` at every cue.

Printed: each trace's wall time in both arms, the time of every probe call, and

    overhead per probe point = (probed - plain) / plain / probes per trace      (goal <= 10%)
    probe call / trace time  = mean probe latency / mean plain trace time

    .venv/bin/python benchmarks/hidden_states.py --problems 4 --tokens 256 --spacing 64
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from reasoning import Request, Sampling, default_prompt
from reasoning.backends.vllm_local import VLLMBackend
from reasoning.evals.datasets import load_dataset


async def trace(
    backend: VLLMBackend, request: Request, spacing: int | None, layers: list[int]
) -> tuple[float, int, list[float]]:
    """Stream one trace; probe at every cue when `spacing` is set. Returns (s, tokens, probe s)."""
    start = time.perf_counter()
    text: list[str] = []
    tokens, next_cue, probes = 0, spacing or 0, []
    async for chunk in backend.stream(request):
        text.append(chunk.text)
        tokens += chunk.tokens
        if spacing and tokens >= next_cue and chunk.finish_reason is None:
            t0 = time.perf_counter()
            values = await backend.hidden_states(
                Request(request.messages, prefix="".join(text)), layers, [-1]
            )
            probes.append(time.perf_counter() - t0)
            assert values.shape[:2] == (1, len(layers))
            next_cue += spacing
    return time.perf_counter() - start, tokens, probes


async def main(args: argparse.Namespace) -> None:
    layers = [int(x) for x in args.layers.split(",")]
    problems = load_dataset("gsm8k", limit=args.problems)
    with VLLMBackend.load(kv_cache_gb=args.kv_cache_gb) as backend:
        sampling = Sampling(temperature=0.0, max_tokens=args.tokens)
        requests = [Request(default_prompt(p), sampling) for p in problems]
        await trace(backend, requests[0], args.spacing, layers)  # warm-up: hooks, caches
        plain: list[float] = []
        probed: list[float] = []
        probe_times: list[float] = []
        probe_counts: list[int] = []
        for repeat in range(args.repeats):
            for i, request in enumerate(requests):
                order = ("plain", "probed") if (i + repeat) % 2 == 0 else ("probed", "plain")
                for arm in order:
                    seconds, tokens, probes = await trace(
                        backend, request, args.spacing if arm == "probed" else None, layers
                    )
                    if arm == "plain":
                        plain.append(seconds)
                    else:
                        probed.append(seconds)
                        probe_times += probes
                        probe_counts.append(len(probes))
                    detail = f"  probes {' '.join(f'{p * 1000:.0f}' for p in probes)} ms" if probes else ""
                    print(f"problem {i} repeat {repeat} {arm:6s} {seconds:6.1f} s {tokens:4d} tokens{detail}")
    mean_plain, mean_probed = statistics.mean(plain), statistics.mean(probed)
    per_trace = statistics.mean(probe_counts)
    overhead = (mean_probed - mean_plain) / mean_plain / per_trace
    latency = statistics.mean(probe_times)
    print(
        f"plain {mean_plain:.1f} s  probed {mean_probed:.1f} s  ({per_trace:.1f} probes/trace, "
        f"layers {layers}, every {args.spacing} tokens)"
    )
    print(f"overhead per probe point {overhead:.1%} of the trace (goal <= 10%)")
    print(f"probe call {latency * 1000:.0f} ms = {latency / mean_plain:.1%} of a plain trace's time")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256, help="trace length (greedy)")
    parser.add_argument("--spacing", type=int, default=64, help="tokens between probe points")
    parser.add_argument("--layers", default="12", help="comma-separated layers to read")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--kv-cache-gb", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
