"""DeepConf: "Deep Think with Confidence" (Fu, Wang, Tian, Zhao; arXiv 2508.15260).

Token confidence C_i = -mean of the top-20 log-probabilities at position i; group confidence =
mean over a sliding window; a trace's confidence = its lowest group (or bottom-10%, tail, mean).

* offline: `budget` traces in one batched request; keep the top `eta`% by confidence; vote
  weighted by confidence.
* online: `warmup` traces set the threshold s = the (100 - eta)-th percentile of their lowest
  group confidences (eta=10 is DeepConf-low, the high bar; 90 DeepConf-high); warm-up traces
  under s do not vote. Then traces run `batch` at a time, each its own request: a trace is
  cancelled in the engine as soon as a full window's mean drops below s, and sampling stops
  (in-flight traces cancelled) once the confidence-weighted vote has consensus >= `tau`.

Defaults scaled to this framework's 512-token traces (INFERRED, documented): window 128
(paper: 2048 for 32k-token traces), budget 32 and warm-up 8 (paper: 512 and 16), batch 8
(the released code launches all remaining traces at once; the paper does not say).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from reasoning import STRATEGIES, Completion, Context, Problem, Result
from reasoning.concurrency import task_group
from reasoning.errors import ConfigError
from reasoning.selection import token_confidence, trace_confidence
from reasoning.strategies.sampled import Sampled

Metric = Literal["lowest", "bottom10", "tail", "mean"]


@STRATEGIES.register("deepconf", "deep-conf")
@dataclass(frozen=True, kw_only=True)
class DeepConf(Sampled):
    """Confidence-filtered, confidence-weighted voting; online mode stops low-confidence traces."""

    mode: Literal["online", "offline"] = "online"
    """offline: filter finished traces; online: stop traces and sampling early."""
    budget: int = 32
    """Most traces per problem (B)."""
    warmup: int = 8
    """Online warm-up traces that set the threshold (N_init)."""
    eta: float = 10.0
    """Percent of traces kept (offline) / threshold percentile 100 - eta (online)."""
    window: int = 128
    """Tokens per confidence group (sliding window)."""
    metric: Metric = "lowest"
    """Trace confidence used offline (online always uses the lowest group)."""
    tau: float = 0.95
    """Online: stop sampling once the weighted vote's top answer holds this share."""
    batch: int = 8
    """Online: traces in flight at once after the warm-up."""

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ConfigError(f"deepconf: budget must be >= 1, got {self.budget}")
        if not 0 < self.eta <= 100:
            raise ConfigError(f"deepconf: eta must be in (0, 100], got {self.eta}")
        if self.mode == "online" and not 1 <= self.warmup <= self.budget:
            raise ConfigError(f"deepconf: need 1 <= warmup <= budget, got {self.warmup}, {self.budget}")
        if self.window < 1 or self.batch < 1 or not 0 < self.tau <= 1:
            raise ConfigError("deepconf: window and batch must be >= 1 and tau in (0, 1]")
        super().__post_init__()

    def confidences(self, completion: Completion) -> list[float]:
        """Per-token confidences of a trace."""
        return [token_confidence(t) for t in completion.logprobs or ()]

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Run offline or online DeepConf."""
        if self.mode == "offline":
            return await self.offline(ctx)
        return await self.online(ctx)

    async def offline(self, ctx: Context) -> Result:
        """All traces, then filter the top eta% by confidence and vote weighted by it."""
        traces = await ctx.generate(ctx.request(self.sampling(self.budget, logprobs=20)))
        scores = [trace_confidence(self.confidences(t), self.metric, self.window) for t in traces]
        threshold = float(np.percentile(scores, 100 - self.eta))
        return await self.vote(ctx, traces, scores, keep=[s >= threshold for s in scores])

    async def online(self, ctx: Context) -> Result:
        """Warm up, set the threshold, then stop weak traces and stop once settled."""
        warm = await ctx.generate(ctx.request(self.sampling(self.warmup, logprobs=20)))
        lowest = [trace_confidence(self.confidences(t), "lowest", self.window) for t in warm]
        threshold = float(np.percentile(lowest, 100 - self.eta))
        traces, scores = list(warm), list(lowest)
        keep = [s >= threshold for s in lowest]
        answers = [c.answer for c in await ctx.candidates(warm)]
        settled = asyncio.Event()

        def consensus() -> float:
            tally: dict[str, float] = {}
            for answer, score, kept in zip(answers, scores, keep, strict=True):
                if kept and answer is not None:
                    tally[answer] = tally.get(answer, 0.0) + score
            total = sum(tally.values())
            return max(tally.values()) / total if total > 0 else 0.0

        async def trace() -> None:
            window = deque[float](maxlen=self.window)
            async with ctx.trace(ctx.request(self.sampling(1, logprobs=20))) as live:
                async for chunk in live:
                    if live.ended is not None:
                        continue  # finished; the stream ends by itself
                    window.extend(token_confidence(t) for t in chunk.logprobs)
                    full = len(window) == self.window
                    if settled.is_set() or (full and sum(window) / self.window < threshold):
                        break  # leaving the trace cancels it in the engine
            [completion] = live.completions  # unfinished = cancelled
            [candidate] = await ctx.candidates([completion])
            voting = completion.finish_reason != "cancelled"
            traces.append(completion)  # stopped traces stay in the record, without a vote
            scores.append(trace_confidence(self.confidences(completion), "lowest", self.window))
            keep.append(voting)
            answers.append(candidate.answer)
            if voting and consensus() >= self.tau:
                settled.set()

        launched = self.warmup
        while launched < self.budget and consensus() < self.tau:
            wave = min(self.batch, self.budget - launched)
            launched += wave
            async with task_group() as group:
                for _ in range(wave):
                    group.create_task(trace())
        return await self.vote(ctx, traces, scores, keep)

    async def vote(
        self, ctx: Context, traces: list[Completion], scores: list[float], keep: list[bool]
    ) -> Result:
        """Confidence-weighted vote over the kept traces; every trace is in the record."""
        candidates = [
            c.with_scores(confidence=s, kept=float(k))
            for c, s, k in zip(await ctx.candidates(traces), scores, keep, strict=True)
        ]
        return Result.vote(candidates, weights=scores, voters={i for i, k in enumerate(keep) if k})
