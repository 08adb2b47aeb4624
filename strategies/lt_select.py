"""LT-guided answer selection: pick the trace whose hidden states travelled best (Tracing the Traces).

"Tracing the Traces" (Vilas, Yousefi, Nushi, Horvitz, Balachandran; arXiv 2510.10494), its
signals in `reasoning.probes.trajectory`:

    traces = n samples, one batched request (temperature 0.6)
    for each trace i (hidden-state reads issued concurrently):
        H_i = hidden states of its T_i generated tokens at `layers`     # prompt + trace, teacher-forced
        s_i = LT signals of H_i with segments of `segment` tokens        # net, cumulative, aligned
        c_i = confidence(s_i, signal)                                    # cumulative negated
    argmax:   answer of the answered trace with the highest c_i
    weighted: vote weighted by softmax of the z-scored c_i
    no finite c_i (every trace shorter than 2 segments): majority vote

The paper's use draws traces one after another and stops at the first whose signal
passes a calibrated threshold; that needs calibration data, so this strategy scores a batch
and selects (the paper's "highest-select" baseline of its notebook), which needs none.

Defaults and choices (INFERRED, documented): ``segment`` 64 tokens, scaled down from 500 for
the default model's ~300-token traces so a trace spans several segments; ``layers``
4,8,...,24, every 4th block of the 24-block default model up to its final normed output (the
paper averages all blocks; a subset keeps the read at 6 x T x hidden floats per trace);
``combined`` z-normalises the three signals over the problem's own traces with equal weights
(the paper's |r| weights need labelled calibration traces: `combine_weights`); ``argmax``
considers only traces with an answer; ``weighted`` gives a trace without a defined signal the
average weight (z = 0). The paper tokenises ``thinking + "</think>"``; this reads the trace
text as decoded, re-tokenised by the engine (its count may differ by a token or two from the
decoded count, so the read covers the last ``T`` positions). Each candidate records
``lt_net``, ``lt_cumulative``, ``lt_aligned`` and ``lt_confidence`` where they are defined
(records hold no NaN), and ``lt_segments``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Literal

import numpy as np

from reasoning import STRATEGIES, Candidate, Context, Problem, Result
from reasoning.errors import ConfigError
from reasoning.probes.trajectory import SIGNALS, Layers, Signal, Signals, confidence, lt_signals, standardise
from reasoning.strategies.sampled import Sampled

DEFAULT_LAYERS: tuple[int, ...] = (4, 8, 12, 16, 20, 24)
"""Every 4th block of the 24-block default model (qwen2.5-coder-0.5b-instruct)."""


def check_lt(name: str, signal: str, segment: int, layers: Sequence[int]) -> None:
    """Raise `ConfigError` for parameters an LT strategy cannot use."""
    if signal not in SIGNALS:
        raise ConfigError(f"{name}: signal must be one of {', '.join(SIGNALS)}, got {signal!r}")
    if segment < 1:
        raise ConfigError(f"{name}: segment must be >= 1 token, got {segment}")
    if not layers or any(layer < 1 for layer in layers) or len(set(layers)) != len(layers):
        raise ConfigError(f"{name}: layers must be distinct block numbers >= 1, got {tuple(layers)}")


async def trace_signals(ctx: Context, layers: Sequence[int], text: str, tokens: int, segment: int) -> Signals:
    """LT signals of the last `tokens` tokens of prompt + `text` (the trace's own tokens).

    Computed where the states are read: on a replica pool only the signals cross the network.
    """
    head = partial(lt_signals, k=segment)
    return await ctx.mapped_hidden_states(head, layers, text, list(range(-max(tokens, 1), 0)))


def confidences(rows: Sequence[Signals], signal: Signal) -> list[float]:
    """Each trace's confidence (NaN when undefined); ``combined`` is z-scored over `rows`."""
    weights = standardise(rows) if signal == "combined" else None
    return [confidence(row, signal, weights) for row in rows]


def lt_scores(signals: Signals, conf: float) -> dict[str, float]:
    """The candidate's ``scores`` entries: finite signals only (records hold no NaN)."""
    named = {
        "lt_net": signals.net,
        "lt_cumulative": signals.cumulative,
        "lt_aligned": signals.aligned,
        "lt_confidence": conf,
    }
    return {"lt_segments": float(signals.segments)} | {k: v for k, v in named.items() if math.isfinite(v)}


def best(candidates: Sequence[Candidate], scores: Sequence[float]) -> int | None:
    """The answered candidate with the highest finite score (first on ties), else None."""
    pool = [
        i
        for i, (c, s) in enumerate(zip(candidates, scores, strict=True))
        if c.answer is not None and math.isfinite(s)
    ]
    return max(pool, key=lambda i: (scores[i], -i)) if pool else None


def softmax_weights(scores: Sequence[float]) -> list[float]:
    """Softmax weights: exp of the z-scored `scores` (undefined: z = 0); equal if they do not vary."""
    finite = np.array([s for s in scores if math.isfinite(s)], dtype=np.float64)
    spread = float(finite.std()) if len(finite) else 0.0
    if spread <= 0:
        return [1.0] * len(scores)
    centre = float(finite.mean())
    return [math.exp((s - centre) / spread) if math.isfinite(s) else 1.0 for s in scores]


@STRATEGIES.register("lt-select", "lt_select", "latent-trajectory")
@dataclass(frozen=True, kw_only=True)
class LTSelect(Sampled):
    """n traces; select by their latent-trajectory signal (argmax or weighted vote)."""

    needs_hidden_states: ClassVar[bool] = True

    n: int = 5
    """Traces sampled together (the paper's K = 5)."""
    signal: Signal = "cumulative"
    """LT signal that ranks traces: net, cumulative (lower wandering = better), aligned, combined."""
    select: Literal["argmax", "weighted"] = "argmax"
    """argmax: the most confident answered trace; weighted: vote weighted by softmax of z-scores."""
    segment: int = 64
    """Tokens per segment k (paper: 500 for traces of thousands of tokens; INFERRED 64)."""
    layers: Layers = DEFAULT_LAYERS
    """Layers whose signals are averaged (1 = first block; comma-separated on the command line)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"lt-select: n must be >= 1, got {self.n}")
        if self.select not in ("argmax", "weighted"):
            raise ConfigError(f"lt-select: select must be argmax or weighted, got {self.select!r}")
        check_lt("lt-select", self.signal, self.segment, self.layers)
        super().__post_init__()

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Sample n traces, read their hidden states concurrently, select."""
        traces = await ctx.generate(ctx.request(self.sampling(self.n)))
        rows = await ctx.run_all(
            *(trace_signals(ctx, self.layers, t.text, t.output_tokens, self.segment) for t in traces)
        )
        scores = confidences(rows, self.signal)
        candidates = [
            c.with_scores(**lt_scores(row, s))
            for c, row, s in zip(await ctx.candidates(traces), rows, scores, strict=True)
        ]
        chosen = best(candidates, scores) if self.select == "argmax" else None
        if chosen is not None:
            return Result.pick(candidates, chosen)
        finite = any(math.isfinite(s) for s in scores)
        return Result.vote(
            candidates, softmax_weights(scores) if self.select == "weighted" and finite else None
        )
