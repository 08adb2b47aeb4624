"""The LYNX exit rule's guarantee, checked on engine data over many random calibration/test splits.

The conformal rule (`reasoning.probes.conformal.ClassConditional`) promises, for decision points
exchangeable with its calibration points, P(exit | exiting there is wrong) <= alpha, on average
over the draw of the calibration set. One calibration split (benchmarks/early_exit.py) shows
one draw; this script shows the distribution:

1. traces of the embedded 0.5B on GSM8K test problems (T=0.6, seed 0), decision points (blank
   lines + cue words), forced-exit labels, hidden states (the same collection as
   benchmarks/early_exit.py, cached in --work);
2. the exit probe trained on the `train` problems;
3. the `pool` problems split at random, by problem (a trace's points stay together), into
   calibration and test halves, --splits times; per split and alpha: calibrate, then measure the
   premature-exit rate on the test half's unsafe points.

Printed per alpha: the mean premature rate over splits with its 95% interval (the mean's normal
interval over splits), the 2.5-97.5% range of single splits, the share of splits above alpha,
and a Wilson interval on the pooled counts (splits share points, so it is narrower than it
should be; shown for scale).

    .venv/bin/python benchmarks/guarantees.py --train 100 --pool 120 --splits 500
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from early_exit import split

from reasoning.backends.vllm_local import VLLMBackend
from reasoning.evals.datasets import load_dataset
from reasoning.evals.leaderboard.stats import wilson
from reasoning.probes.conformal import ClassConditional
from reasoning.probes.probe import train_probe


async def main(args: argparse.Namespace) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train_p = load_dataset("gsm8k", offset=args.offset, limit=args.train)
    pool_p = load_dataset("gsm8k", offset=args.offset + args.train, limit=args.pool)
    with VLLMBackend.load(kv_cache_gb=args.kv_cache_gb, hidden_states=True) as backend:
        train = await split(backend, work, "train", train_p, args.max_tokens)
        pool = await split(backend, work, f"pool{args.pool}", pool_p, args.max_tokens)
    probe = train_probe(train, "exit")
    p = probe.predict(pool.features.astype(np.float32)).astype(float)
    safe = pool.labels.astype(bool)
    traces = np.unique(pool.trace)
    print(
        f"pool: {len(traces)} traces, {len(pool)} decision points ({int((~safe).sum())} unsafe); "
        f"{args.splits} random splits by problem into calibration / test halves"
    )
    rng = np.random.default_rng(args.seed)
    print("alpha  mean premature [95% CI]   single splits 2.5-97.5%   splits > alpha   pooled Wilson")
    for alpha in [float(a) for a in args.alphas.split(",")]:
        rates, exits_total, unsafe_total = [], 0, 0
        for _ in range(args.splits):
            chosen = rng.permutation(traces)[: len(traces) // 2]
            cal = np.isin(pool.trace, chosen)
            test_unsafe = ~cal & ~safe
            if not (cal & safe).any() or not (cal & ~safe).any() or not test_unsafe.any():
                continue
            rule = ClassConditional.calibrate(p[cal], safe[cal], alpha)
            exits = np.array([rule.exit(v) for v in p[test_unsafe]])
            rates.append(float(exits.mean()))
            exits_total += int(exits.sum())
            unsafe_total += int(test_unsafe.sum())
        print(split_row(alpha, rates, exits_total, unsafe_total))


def split_row(alpha: float, rates: list[float], hits: int, seen: int) -> str:
    """One alpha's row: mean rate over splits [95% CI], single-split range, share above alpha, Wilson."""
    r = np.array(rates)
    half = 1.96 * r.std(ddof=1) / math.sqrt(len(r))
    lo, hi = np.percentile(r, [2.5, 97.5])
    wl, wh = wilson(hits, seen)
    return (
        f"{alpha:5.2f}  {r.mean():.3f} [{r.mean() - half:.3f}, {r.mean() + half:.3f}]"
        f"        {lo:.3f}-{hi:.3f}                {(r > alpha).mean():.2f}"
        f"          [{wl:.3f}, {wh:.3f}]"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--pool", type=int, default=120)
    parser.add_argument("--offset", type=int, default=500)
    parser.add_argument("--splits", type=int, default=500)
    parser.add_argument("--alphas", default="0.05,0.1,0.2,0.3")
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--kv-cache-gb", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="results/guarantees")
    asyncio.run(main(parser.parse_args()))
