"""LYNX early exit on the default model: probe quality, the conformal guarantee, tokens saved.

Splits of GSM8K test (disjoint): probes are trained on problems [offset, offset+train),
calibrated on the next `calib`, evaluated on the first `eval` problems (never seen). For each
split: one trace per problem (T=0.6, seed 0), decision points (blank lines + cue words), forced
exits graded -> labels, hidden states of layers L/4, L/2, 3L/4, L.

Printed:
* decision points per trace; exit-probe AUROC on held-out training traces, on the evaluation
  problems, and on MATH-500 problems (transfer); difficulty-probe AUROC;
* per alpha: the measured premature-exit rate per decision point on the evaluation problems
  (P(exit | exiting there is wrong), the quantity the guarantee bounds by alpha), and the
  accuracy / tokens of exiting at the first decision point the rule accepts, replayed over the
  evaluation traces, vs the full-length baseline (the same seeded traces);
* online: the early-exit strategy on the real engine for `online` alphas (same seeds, so its
  traces are the baseline's up to the exit): accuracy, output tokens, and the agreement with
  the replay; the same on MATH-500 with the GSM8K probe.

    .venv/bin/python benchmarks/early_exit.py --train 160 --calib 120 --eval 60 --math 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from reasoning import Controller
from reasoning.backends.vllm_local import VLLMBackend
from reasoning.evals.datasets import load_dataset
from reasoning.evals.probing import collect_traces, compute_features, read_traces, write_traces
from reasoning.evals.run import solve
from reasoning.probes.data import DecisionPoints
from reasoning.probes.probe import Probe, auroc, calibrate, train_probe
from reasoning.strategies.early_exit import EarlyExit


async def split(
    backend: VLLMBackend, work: Path, name: str, problems: list, max_tokens: int
) -> DecisionPoints:
    """Collect + features for one split, reusing files from an earlier run with the same args."""
    stem = work / name
    if (work / f"{name}.json").exists():
        return DecisionPoints.load(stem)
    start = time.perf_counter()
    traces_file = work / f"{name}.traces.jsonl"
    if traces_file.exists():
        traces = read_traces(traces_file)
    else:
        traces = await collect_traces(backend, problems, max_tokens=max_tokens)
        write_traces(traces_file, traces)
    collected = time.perf_counter()
    data = await compute_features(backend, traces, dataset=name)
    data.save(stem)
    events = [len(t["events"]) for t in traces]
    print(
        f"{name}: {len(traces)} traces ({sum(t['correct'] for t in traces)} right), "
        f"{sum(t['output_tokens'] for t in traces)} tokens, decision points per trace mean "
        f"{np.mean(events):.1f} (median {np.median(events):.0f}, max {max(events)}), "
        f"safe at {int(data.labels.sum())}/{len(data)}; collect {collected - start:.0f} s, "
        f"features {time.perf_counter() - collected:.0f} s",
        flush=True,
    )
    return data


def replay(probe: Probe, data: DecisionPoints, exit_tokens: dict[int, int]) -> dict[str, float]:
    """Exit at the first accepted decision point of each trace, from the labelled events."""
    rule = probe.rule
    assert rule is not None
    p = probe.predict(data.features.astype(np.float32))
    exits = np.array([rule.exit(float(v)) for v in p])
    unsafe = data.labels == 0
    traces = data.meta["traces"]
    correct = tokens = exited = 0
    for t, trace in enumerate(traces):
        idx = np.flatnonzero((data.trace == t) & exits)
        if len(idx):
            i = int(idx[0])
            exited += 1
            correct += int(data.labels[i])
            tokens += int(data.position[i]) - 1 + exit_tokens.get(i, 4)
        else:
            correct += int(trace["correct"])
            tokens += int(trace["output_tokens"])
    return {
        "premature_rate": float(exits[unsafe].mean()) if unsafe.any() else float("nan"),
        "unsafe_points": int(unsafe.sum()),
        "exit_rate_safe": float(exits[~unsafe].mean()) if (~unsafe).any() else float("nan"),
        "accuracy": correct / len(traces),
        "tokens": tokens,
        "exited": exited,
    }


def exit_tokens_of(work: Path, name: str) -> dict[int, int]:
    traces = read_traces(work / f"{name}.traces.jsonl")
    spent = [e["tokens"] + 4 for t in traces for e in t["events"]]  # + ~4 exit-phrase tokens
    return dict(enumerate(spent))


async def online(
    backend: VLLMBackend, problems: list, probe_path: Path, max_tokens: int
) -> tuple[float, int, int, list[Any]]:
    strategy = EarlyExit(probe=str(probe_path), max_tokens=max_tokens)
    runs = await solve(problems, Controller(backend, seed=0), strategy, concurrency=len(problems))
    right = sum(bool(r.correct) for r in runs)
    tokens = sum(int(r.usage.get("output_tokens", 0)) for r in runs)
    exited = sum(1 for r in runs if r.candidates and r.candidates[0].finish_reason == "exit")
    return right / len(runs), tokens, exited, runs


async def main(args: argparse.Namespace) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    alphas = [float(a) for a in args.alphas.split(",")]
    on_alphas = [float(a) for a in args.online.split(",") if a]
    evals = load_dataset("gsm8k", limit=args.eval)
    train_p = load_dataset("gsm8k", offset=args.offset, limit=args.train)
    calib_p = load_dataset("gsm8k", offset=args.offset + args.train, limit=args.calib)
    math_p = load_dataset("math500", limit=args.math) if args.math else []
    assert not {p.id for p in evals} & {p.id for p in train_p + calib_p}
    with VLLMBackend.load(kv_cache_gb=args.kv_cache_gb, hidden_states=True) as backend:
        train = await split(backend, work, "train", train_p, args.max_tokens)
        calib = await split(backend, work, "calib", calib_p, args.max_tokens)
        held = await split(backend, work, "eval", evals, args.max_tokens)
        maths = await split(backend, work, "math", math_p, args.math_tokens) if math_p else None

        probe = train_probe(train, "exit")
        difficulty = train_probe(train, "difficulty", hidden=())
        p_eval = probe.predict(held.features.astype(np.float32))
        print(
            f"\nexit probe (MLP 256-64, layers {probe.card.layers}): AUROC held-out train traces "
            f"{probe.card.metrics['auroc_val']:.3f}, calibration split "
            f"{auroc(probe.predict(calib.features.astype(np.float32)), calib.labels):.3f}, "
            f"eval problems {auroc(p_eval, held.labels):.3f}"
            + (
                f", MATH-500 transfer {auroc(probe.predict(maths.features), maths.labels):.3f}"
                if maths
                else ""
            )
        )
        print(
            f"difficulty probe (logistic, prompt state): AUROC held-out train "
            f"{difficulty.card.metrics['auroc_val']:.3f}, eval problems "
            f"{auroc(difficulty.predict(held.prompt_features.astype(np.float32)), held.trace_correct):.3f}"
        )
        base_acc = float(held.trace_correct.mean())
        base_tokens = sum(t["output_tokens"] for t in held.meta["traces"])
        print(f"\nGSM8K eval ({args.eval} problems) baseline: accuracy {base_acc:.3f}, tokens {base_tokens}")
        header = "alpha  premature/alpha (unsafe pts)  safe-exit  replay acc  replay tokens (x base)  exited"
        print(header)
        calibrated: dict[float, Path] = {}
        for alpha in alphas:
            cal = calibrate(probe, calib, alpha)
            calibrated[alpha] = cal.save(work / f"probe-alpha{alpha}")
            r = replay(cal, held, exit_tokens_of(work, "eval"))
            print(
                f"{alpha:5.2f}  {r['premature_rate']:.3f} / {alpha:.2f} ({r['unsafe_points']:4d})"
                f"        {r['exit_rate_safe']:.3f}      {r['accuracy']:.3f}       {r['tokens']:6d} "
                f"(x{r['tokens'] / base_tokens:.2f})        {r['exited']}/{args.eval}"
            )
        math_cal = {}
        if maths is not None:
            math_tokens = sum(t["output_tokens"] for t in maths.meta["traces"])
            print(
                f"\nMATH-500 transfer ({args.math} problems, GSM8K-calibrated probe) baseline: accuracy "
                f"{float(maths.trace_correct.mean()):.3f}, tokens {math_tokens}"
            )
            print(header)
            for alpha in alphas:
                r = replay(Probe.load(calibrated[alpha]), maths, exit_tokens_of(work, "math"))
                math_cal[alpha] = r
                print(
                    f"{alpha:5.2f}  {r['premature_rate']:.3f} / {alpha:.2f} ({r['unsafe_points']:4d})"
                    f"        {r['exit_rate_safe']:.3f}      {r['accuracy']:.3f}       {r['tokens']:6d} "
                    f"(x{r['tokens'] / math_tokens:.2f})        {r['exited']}/{args.math}"
                )
        for alpha in on_alphas:
            path = calibrated.get(alpha) or calibrate(probe, calib, alpha).save(work / f"probe-alpha{alpha}")
            start = time.perf_counter()
            acc, tokens, exited, _ = await online(backend, evals, path, args.max_tokens)
            print(
                f"\nonline early exit, GSM8K, alpha {alpha}: accuracy {acc:.3f} (baseline {base_acc:.3f}), "
                f"output tokens {tokens} (x{tokens / base_tokens:.2f} of baseline; includes probe reads "
                f"and tokens decoded while probes ran), exited {exited}/{args.eval}, "
                f"{time.perf_counter() - start:.0f} s"
            )
            if maths is not None and alpha == on_alphas[-1]:
                acc, tokens, exited, _ = await online(backend, math_p, path, args.math_tokens)
                print(
                    f"online early exit, MATH-500 transfer, alpha {alpha}: accuracy {acc:.3f} "
                    f"(baseline {float(maths.trace_correct.mean()):.3f}), output tokens {tokens} "
                    f"(x{tokens / math_tokens:.2f}), exited {exited}/{args.math}"
                )
        (work / "summary.json").write_text(json.dumps({"alphas": alphas, "math": math_cal}, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=160)
    parser.add_argument("--calib", type=int, default=120)
    parser.add_argument("--eval", type=int, default=60)
    parser.add_argument("--math", type=int, default=40)
    parser.add_argument("--offset", type=int, default=500, help="first training problem of GSM8K test")
    parser.add_argument("--max-tokens", type=int, default=320)
    parser.add_argument("--math-tokens", type=int, default=512)
    parser.add_argument("--alphas", default="0.05,0.1,0.2,0.3")
    parser.add_argument("--online", default="0.1,0.3", help="alphas run online on the engine")
    parser.add_argument("--kv-cache-gb", type=float, default=4.0)
    parser.add_argument("--work", default=".bench/early_exit", help="collected data (reused on re-runs)")
    asyncio.run(main(parser.parse_args()))
