"""LT early path selection: score n partial traces at a horizon, continue the best, drop the rest.

Training-free adaptation of the early path selection of "Tracing the Traces" (Vilas et al., arXiv
2510.10494; the paper ranks prefixes with a random forest trained offline on [net_by_step,
cumulative_by_step]; here the prefix's LT `signal` ranks them):

    decode n traces to `horizon` tokens (one request: the engine batches them)
    s_i = LT signals of trace i's tokens' hidden states             # net/cumulative_by_step at S
    a trace that ended before the horizon is complete: it stays a candidate
    keep the `keep` most confident unfinished traces; the others end here (answer None)
    each kept trace continues from its own text to `max_tokens` (its prefix is cached)
    answer = the answered finished trace with the highest confidence
             (no confidence defined: majority vote over the finished traces)

The traces stop at the horizon and wait for the decision rather than decoding on while the
probes read: on a busy engine the reads queue behind other problems' decoding, and traces left
running had all finished (~300 tokens) before a decision reached them, so nothing was saved (the
first 14 problems of the governed leaderboard: no trace pruned, 2,150 tokens a problem). Stopping
costs one re-read of each kept prefix, which the prefix cache serves, and the kept traces'
continuation is re-tokenised from their text (as the step searches continue steps). The pruned
traces cost exactly their `horizon` tokens.

Defaults and choices (INFERRED, documented): ``horizon`` 128 and ``segment`` 32, so the
horizon spans 4 segments like the paper's 2,000 tokens at k = 500, scaled to this framework's
512-token traces; ``signal`` cumulative (the paper's strongest single signal); ``layers`` as in
`reasoning.strategies.lt_select`; ``combined`` z-normalised over the problem's n prefixes with
equal weights; the final pick uses the decision-time confidence (prefix signal, or whole-trace
signal for traces shorter than the horizon). Candidates record the LT signals (``lt_*``, see
lt-select), ``lt_tokens`` (tokens scored) and ``pruned`` (1: dropped at the horizon; its
candidate's finish reason is ``cancelled``: it never finished).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

from reasoning import STRATEGIES, Completion, Context, Problem, Result
from reasoning.errors import ConfigError
from reasoning.probes.trajectory import Layers, Signal
from reasoning.strategies.lt_select import (
    DEFAULT_LAYERS,
    best,
    check_lt,
    confidences,
    lt_scores,
    trace_signals,
)
from reasoning.strategies.sampled import Sampled


@STRATEGIES.register("lt-prune", "lt_prune", "lt-early")
@dataclass(frozen=True, kw_only=True)
class LTPrune(Sampled):
    """n traces to a horizon; continue the `keep` with the best LT prefix signal, cancel the rest."""

    needs_hidden_states: ClassVar[bool] = True

    n: int = 5
    """Traces started together (the paper's K = 5)."""
    keep: int = 1
    """Running traces continued past the horizon (the paper: 1)."""
    horizon: int = 128
    """Tokens each trace decodes before the decision (paper: 2,000; INFERRED 128)."""
    segment: int = 32
    """Tokens per segment k (INFERRED: horizon / 4, the paper's 4 segments at the horizon)."""
    signal: Signal = "cumulative"
    """LT signal that ranks the prefixes: net, cumulative (lower = better), aligned, combined."""
    layers: Layers = DEFAULT_LAYERS
    """Layers whose signals are averaged (1 = first block; comma-separated on the command line)."""

    def __post_init__(self) -> None:
        if self.n < 1 or not 1 <= self.keep <= self.n:
            raise ConfigError(f"lt-prune: need n >= 1 and 1 <= keep <= n, got n={self.n}, keep={self.keep}")
        check_lt("lt-prune", self.signal, self.segment, self.layers)
        if not 2 * self.segment <= self.horizon < self.max_tokens:
            raise ConfigError(
                f"lt-prune: need 2 * segment <= horizon < max_tokens (two segments to trace, a tail to "
                f"save), got segment={self.segment}, horizon={self.horizon}, max_tokens={self.max_tokens}"
            )
        super().__post_init__()

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Run n traces to the horizon, score them, continue the best, pick."""
        heads = await ctx.generate(ctx.request(replace(self.sampling(self.n), max_tokens=self.horizon)))
        signals = await ctx.run_all(
            *(trace_signals(ctx, self.layers, h.text, h.output_tokens, self.segment) for h in heads)
        )
        scores = confidences(signals, self.signal)
        running = [i for i, h in enumerate(heads) if h.finish_reason == "length"]
        ranked = sorted(running, key=lambda i: (-scores[i] if math.isfinite(scores[i]) else math.inf, i))
        kept, pruned = ranked[: self.keep], set(ranked[self.keep :])

        async def go_on(head: Completion) -> Completion:
            rest = replace(self.sampling(), max_tokens=self.max_tokens - head.output_tokens)
            [tail] = await ctx.generate(ctx.request(rest, prefix=head.text))
            return replace(
                tail,
                index=head.index,
                text=head.text + tail.text,
                output_tokens=head.output_tokens + tail.output_tokens,
                seconds=head.seconds + tail.seconds,
                started=head.started,
            )

        tails = dict(zip(kept, await ctx.run_all(*(go_on(heads[i]) for i in kept)), strict=True))
        completions = [
            tails.get(i) or (replace(h, finish_reason="cancelled") if i in pruned else h)
            for i, h in enumerate(heads)
        ]
        candidates = [
            c.with_scores(
                **lt_scores(t, s),
                lt_tokens=float(h.output_tokens),
                pruned=float(i in pruned),
            )
            for i, (c, h, t, s) in enumerate(
                zip(await ctx.candidates(completions), heads, signals, scores, strict=True)
            )
        ]
        chosen = best(candidates, scores)
        return Result.vote(candidates) if chosen is None else Result.pick(candidates, chosen)
