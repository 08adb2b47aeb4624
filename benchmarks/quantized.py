"""bf16 vs W8A8 int8 (issue 29): engine speed and paired GSM8K accuracy of the embedded model.

The W8A8 copy is `reasoning.engine.quantize.w8a8_model` (round-to-nearest, int8 weights per
output channel, int8 activations per token at run time; ``lm_head`` and embeddings in bf16),
converted once into the cache. Both arms are stock ``vllm.LLM``, bf16 activations, eager, each
in a fresh process; the arms run back to back (bf16, W8A8, bf16, W8A8, ... for ``--rounds``)
and each prints one line. The worker also reports which int8 kernel vLLM bound to each
quantised layer: ``sgl`` (the AMX ``int8_scaled_mm_with_quant``) or ``onednn``.

* speed (default): greedy, ``--tokens`` tokens per sequence (ignore_eos) at ``--batches``
  sequences at once, on the first GSM8K test prompts; tok/s per arm (best of the rounds) and
  the W8A8 / bf16 ratio.
* ``--accuracy N``: the first N GSM8K test problems, greedy, ``reasoning.default_prompt``, 512
  tokens, graded as ``reasoning solve`` grades the ``single`` strategy (`ExtractAnswer`, a text
  cut at max_tokens keeps only a written-out answer, `grade_answer`); both accuracies, the
  paired difference W8A8 - bf16 with its 95% bootstrap interval, and the exact McNemar p.

    .venv/bin/python benchmarks/quantized.py                      # speed, 1/8/64 x 128 tokens
    .venv/bin/python benchmarks/quantized.py --accuracy 300       # paired accuracy
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

ARMS = ("bf16", "w8a8")


# ---------------------------------------------------------------- worker side (one arm)


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    from reasoning import default_prompt
    from reasoning.backends.vllm_local import configure_cpu_environment
    from reasoning.engine.models import resolve_model
    from reasoning.engine.quantize import kernel_counts, w8a8_model
    from reasoning.evals.datasets import load_dataset

    configure_cpu_environment()
    path = w8a8_model() if spec["arm"] == "w8a8" else resolve_model(None)
    begin = time.perf_counter()
    llm = LLM(
        path,
        dtype="bfloat16",
        enforce_eager=True,
        max_num_seqs=max([64, *spec.get("batches", [])]),
        max_model_len=4096,
        max_num_batched_tokens=4096,
        enable_chunked_prefill=False,
        enable_prefix_caching=True,
        kv_cache_memory_bytes=1 << 30,
        seed=0,
    )
    result: dict[str, Any] = {"start_s": time.perf_counter() - begin}
    result["kernels"] = llm.apply_model(kernel_counts)[0]
    tokenizer = llm.get_tokenizer()
    problems = load_dataset("gsm8k", limit=spec["count"])
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in default_prompt(p)],
            tokenize=False,
            add_generation_prompt=True,
        )
        for p in problems
    ]
    if spec.get("accuracy"):
        from reasoning.answers import extract_answer, normalize_answer, written_answer
        from reasoning.verifiers.grading import grade_answer

        outputs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=512), use_tqdm=False)
        answers, correct = [], []
        for problem, output in zip(problems, outputs, strict=True):
            sample = output.outputs[0]
            found = extract_answer(sample.text)
            answer = normalize_answer(found) if found else None
            if sample.finish_reason == "length" and written_answer(sample.text) is None:
                answer = None
            answers.append(answer)
            correct.append(bool(grade_answer(problem, answer).correct))
        result.update(answers=answers, correct=correct, texts=[o.outputs[0].text for o in outputs[:3]])
    if not spec.get("batches"):
        return result
    llm.generate(prompts, SamplingParams(temperature=0, max_tokens=2), use_tqdm=False)  # prefill, warm-up
    rates = {}
    for batch in spec["batches"]:
        params = SamplingParams(temperature=0, max_tokens=spec["tokens"], ignore_eos=True)
        start = time.perf_counter()
        outputs = llm.generate(prompts[:batch], params, use_tqdm=False)
        rates[batch] = sum(len(o.outputs[0].token_ids) for o in outputs) / (time.perf_counter() - start)
    result["rates"] = rates
    return result


# ---------------------------------------------------------------- parent side (orchestration)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # apply_model(kernel_counts) in the worker
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
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


def speed(args: argparse.Namespace) -> None:
    batches = [int(b) for b in args.batches.split(",")]
    spec = {"batches": batches, "tokens": args.tokens, "count": max(batches)}
    print(f"-- speed: raw vllm.LLM, greedy, {args.tokens} tokens (ignore_eos), tok/s at batch {batches}")
    best: dict[str, dict[int, float]] = {arm: {} for arm in ARMS}
    for round_ in range(args.rounds):
        for arm in ARMS:
            r = measure({**spec, "arm": arm})
            if "error" in r:
                print(f"round {round_} {arm:5s} error: {r['error']}", flush=True)
                continue
            rates = {int(b): v for b, v in r["rates"].items()}
            for b, v in rates.items():
                best[arm][b] = max(best[arm].get(b, 0.0), v)
            shown = "  ".join(f"{b}: {v:6.1f}" for b, v in rates.items())
            print(
                f"round {round_} {arm:5s} start {r['start_s']:5.1f} s  kernels {r['kernels']}  tok/s {shown}"
            )
    for b in batches:
        base, quant = best["bf16"].get(b, float("nan")), best["w8a8"].get(b, float("nan"))
        print(f"batch {b:3d}  bf16 {base:6.1f}  w8a8 {quant:6.1f} tok/s  w8a8/bf16 {quant / base:.2f}")


def accuracy(args: argparse.Namespace) -> None:
    from reasoning.evals.leaderboard.stats import mcnemar_exact, paired_bootstrap, wilson

    n = args.accuracy
    print(f"-- accuracy: first {n} GSM8K test problems, greedy, 512 tokens, default prompt")
    runs = {}
    for arm in ARMS:
        r = measure({"accuracy": True, "arm": arm, "count": n})
        if "error" in r:
            sys.exit(f"{arm}: error {r['error']}")
        runs[arm] = r
        right = sum(r["correct"])
        low, high = wilson(right, n)
        print(
            f"{arm:5s} {right}/{n} = {right / n:.1%} [{low:.1%}, {high:.1%}]  kernels {r['kernels']}",
            flush=True,
        )
        if args.show:
            for text in r["texts"]:
                print("   ", text[-300:].replace("\n", " | "))
    a, b = runs["bf16"]["correct"], runs["w8a8"]["correct"]
    lost = sum(x and not y for x, y in zip(a, b, strict=True))
    gained = sum(y and not x for x, y in zip(a, b, strict=True))
    diff, low, high, _ = paired_bootstrap([float(x) for x in a], [float(y) for y in b], seed=0)
    same = sum(x == y for x, y in zip(runs["bf16"]["answers"], runs["w8a8"]["answers"], strict=True))
    print(
        f"w8a8 - bf16 = {diff:+.3f} [{low:+.3f}, {high:+.3f}] (paired bootstrap, 95%)  "
        f"bf16 only right {lost}, w8a8 only right {gained}, "
        f"McNemar exact p = {mcnemar_exact(lost, gained):.3g}; "
        f"same final answer on {same}/{n}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", default="1,8,64", help="sequences at once, speed mode")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="bf16, w8a8 pairs in the speed mode")
    parser.add_argument("--accuracy", type=int, metavar="N", help="paired accuracy on the first N problems")
    parser.add_argument("--show", action="store_true", help="print the ends of the first three texts")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.worker:
        print("RESULT " + json.dumps(worker(json.loads(parsed.worker))), flush=True)
    else:
        from reasoning.engine.quantize import w8a8_model

        print(f"w8a8 folder: {w8a8_model()}", flush=True)  # converted once, before any arm
        accuracy(parsed) if parsed.accuracy else speed(parsed)
