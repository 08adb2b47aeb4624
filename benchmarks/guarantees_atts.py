"""ATTS's takeover rule, checked on engine data over many random calibration/test splits.

ATTS (`reasoning.strategies.atts`) hands a draft chunk to the target when its conformal p-value
against calibration perplexities is <= alpha; for chunks exchangeable with the calibration
chunks, P(takeover) <= alpha (exactly floor((n + 1) alpha) / (n + 1) for distinct scores). This
script collects first-turn chunks on GSM8K test problems with `collect_calibration` (the
strategy's own calibration code; draft and target are the embedded 0.5B on one engine, which
the check does not need to differ), then splits the problems at random, --splits times, into a
calibration half (pooled perplexities) and a test half, and measures the takeover (rejection)
rate of the test chunks per alpha.

Printed per alpha: the mean rejection rate over splits with its 95% interval, the 2.5-97.5%
range of single splits, the share of splits above alpha, and the pooled Wilson interval (splits
share chunks: narrower than it should be; for scale).

    .venv/bin/python benchmarks/guarantees_atts.py --problems 40 --samples 8 --draft-tokens 48
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np
from guarantees import split_row

from reasoning import Controller
from reasoning.backends.vllm_local import VLLMBackend
from reasoning.evals.datasets import load_dataset
from reasoning.probes.atts_calibration import ChunkSettings, collect_calibration, p_value


async def main(args: argparse.Namespace) -> None:
    problems = load_dataset("gsm8k", offset=args.offset, limit=args.problems)
    with VLLMBackend.load(kv_cache_gb=args.kv_cache_gb) as backend:
        controller = Controller({"draft": backend, "target": backend}, seed=0)
        calibration, _ = await collect_calibration(
            controller, problems, ChunkSettings(draft_tokens=args.draft_tokens), samples=args.samples
        )
    scores = {k: np.asarray(v, dtype=float) for k, v in calibration.scores.items()}
    ids = np.array(sorted(scores))
    total = sum(len(v) for v in scores.values())
    print(f"{len(ids)} problems, {total} scored chunks; {args.splits} random splits by problem")
    rng = np.random.default_rng(args.seed)
    print("alpha  mean takeover [95% CI]    single splits 2.5-97.5%   splits > alpha   pooled Wilson")
    for alpha in [float(a) for a in args.alphas.split(",")]:
        rates, taken, seen = [], 0, 0
        for _ in range(args.splits):
            order = rng.permutation(ids)
            half = len(order) // 2
            calib = np.sort(np.concatenate([scores[i] for i in order[:half]]))
            test = np.concatenate([scores[i] for i in order[half:]])
            over = np.array([p_value(float(x), calib) <= alpha for x in test])
            rates.append(float(over.mean()))
            taken += int(over.sum())
            seen += len(over)
        print(split_row(alpha, rates, taken, seen))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--offset", type=int, default=800)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--draft-tokens", type=int, default=48)
    parser.add_argument("--splits", type=int, default=500)
    parser.add_argument("--alphas", default="0.05,0.1,0.2,0.3")
    parser.add_argument("--kv-cache-gb", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(main(parser.parse_args()))
