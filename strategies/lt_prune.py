"""LT early path selection: score n partial traces at a horizon, keep the best, cancel the rest.

Training-free adaptation of the early path selection of "Tracing the Traces" (Vilas et al., arXiv
2510.10494; the paper ranks prefixes with a random forest trained offline on [net_by_step,
cumulative_by_step]; here the prefix's LT `signal` ranks them):

    start n traces, each its own streamed request (the engine batches them)
    when trace i reaches `horizon` tokens (it keeps decoding meanwhile):
        s_i = LT signals of its first `horizon` tokens' hidden states  # net/cumulative_by_step at S
    a trace that ends before the horizon is scored on its whole text and stays a candidate
    once every trace is scored: keep the `keep` most confident still-running traces,
        cancel the others in the engine (recorded as cancelled, answer None)
    answer = the answered finished trace with the highest confidence
             (no confidence defined: majority vote over the finished traces)

Each trace is its own request so that closing one cancels only that trace (one request with
``n`` samples can only be cancelled whole). The kept traces run to ``max_tokens``: the budget
the pruned traces give up is the ``max_tokens - horizon`` tail they never decode; a cancelled
trace costs ``min(its length, horizon)`` tokens plus the few it decodes while the slowest trace
reaches the horizon and the probes read (counted in ``usage.cancelled_tokens``).

Defaults and choices (INFERRED, documented): ``horizon`` 128 and ``segment`` 32, so the
horizon spans 4 segments like the paper's 2,000 tokens at k = 500, scaled to this framework's
512-token traces; ``signal`` cumulative (the paper's strongest single signal); ``layers`` as in
`reasoning.strategies.lt_select`; ``combined`` z-normalised over the problem's n prefixes with
equal weights; a trace that finishes before the decision reaches it (its tokens are spent) is
kept as a finished candidate; the final pick uses the decision-time confidence (prefix signal,
or whole-trace signal for traces shorter than the horizon). Candidates record the LT signals
(``lt_*``, see lt-select), ``lt_tokens`` (tokens scored) and ``pruned`` (1: cancelled here).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import ClassVar

from reasoning import STRATEGIES, Completion, Context, Problem, Result
from reasoning.concurrency import task_group
from reasoning.errors import ConfigError
from reasoning.probes.trajectory import Layers, Signal, Signals
from reasoning.strategies.lt_select import (
    DEFAULT_LAYERS,
    best,
    check_lt,
    confidences,
    lt_scores,
    trace_signals,
)
from reasoning.strategies.sampled import Sampled


@dataclass
class _Trace:
    """What one running trace has shown so far."""

    pieces: list[str] = field(default_factory=list)
    """Decoded token strings (from the per-token logprobs), or chunk texts."""
    decoded: int = 0
    """Tokens decoded."""
    signals: Signals | None = None
    """LT signals at the horizon (or of the whole trace when it ended earlier)."""
    scored_tokens: int = 0
    """Tokens the signals were read from."""
    finished: bool = False
    """It ended by itself."""
    pruned: bool = False
    """Told to stop: the decision did not keep it."""
    completion: Completion | None = None
    """Its final (possibly cancelled) sample."""


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
        """Run n traces to the horizon, score them, keep the best, finish those, pick."""
        traces = [_Trace() for _ in range(self.n)]
        scored = asyncio.Event()
        scores: list[float] = []

        async def score(trace: _Trace, tokens: int) -> None:
            per_token = len(trace.pieces) == trace.decoded  # else chunk texts: read all of it
            text = "".join(trace.pieces[:tokens] if per_token else trace.pieces)
            trace.scored_tokens = tokens
            trace.signals = await trace_signals(ctx, self.layers, text, tokens, self.segment)
            if all(t.signals is not None for t in traces):
                scored.set()

        async def run(trace: _Trace) -> None:
            async with ctx.trace(ctx.request(self.sampling(logprobs=0))) as live:
                async for chunk in live:
                    done = live.ended
                    if chunk.logprobs:
                        trace.pieces.extend(t.token for t in chunk.logprobs)
                    else:
                        trace.pieces.append(chunk.text)
                    trace.decoded += chunk.tokens
                    if done is not None:
                        trace.finished = True
                        if trace.signals is None:
                            await score(trace, trace.decoded)
                    elif trace.signals is None and trace.decoded >= self.horizon:
                        await score(trace, self.horizon)
                    if trace.pruned and done is None:
                        break  # leaving the trace cancels it in the engine
            [trace.completion] = live.completions  # unfinished = cancelled
            if trace.signals is None:  # a stream that ended without a finish reason
                await score(trace, trace.decoded)

        async def decide() -> None:
            await scored.wait()
            rows = [t.signals for t in traces]
            scores.extend(confidences([r for r in rows if r is not None], self.signal))
            running = [i for i, t in enumerate(traces) if not t.finished]
            ranked = sorted(running, key=lambda i: (-scores[i] if math.isfinite(scores[i]) else math.inf, i))
            for i in ranked[self.keep :]:
                traces[i].pruned = True

        async with task_group() as group:
            for trace in traces:
                group.create_task(run(trace))
            group.create_task(decide())

        completions = [t.completion for t in traces if t.completion is not None]
        candidates = [
            c.with_scores(
                **(lt_scores(t.signals, s) if t.signals is not None else {}),
                lt_tokens=float(t.scored_tokens),
                pruned=float(c.finish_reason == "cancelled"),
            )
            for c, t, s in zip(await ctx.candidates(completions), traces, scores, strict=True)
        ]
        chosen = best(candidates, scores)
        return Result.vote(candidates) if chosen is None else Result.pick(candidates, chosen)
