"""Capability-aware self-evaluation: sample, prune and pick by P(no better if started over).

Manvi, Singh, Ermon, "Adaptive Inference-Time Compute: LLMs Can Predict if They Can Do Better,
Even Mid-Generation" (arXiv 2410.02725)::

    while fewer than max_samples samples:                     # adaptive sampling
        start `batch` samples, sample k at T_k = temperature * (1 - anneal^k)   # annealed, T_0 = 0
        if prune_at: once each has prune_at tokens (or ended), all at once:
            p_j = P(no better | partial_j) of the running ones; cancel all but the `keep` best
        p_i = P(no better | sample_i) of each finished sample with an answer
        if max_i p_i >= threshold: break                      # restarting is predicted not to help
    answer = the sample with the highest p (none known: the majority vote)

Predictors (`predictor`). ``prompt``: the paper fine-tunes a self-evaluation token; here the
instruct model is asked as it is: ``prompt + sample + SELF_EVAL``, byte for byte the sample's
prompt and text (the prefix cache serves all but the question), one greedy token, P(No) /
(P(Yes) + P(No)) over its top 20 (`p_no`). ``value``: the value model shipped for the model
(`reasoning.probes.value`) at the last token of prompt + sample, P(right) standing in; it
decodes nothing (one forward pass, metered as one call of one token).

INFERRED: the schedule rises from greedy (the first sample is the best single one, later ones
need diversity); the paper's constants are not checked here: ``temperature`` 0.7, ``anneal`` 0.5
(T = 0, 0.35, 0.53, 0.61). ``batch=1`` is the paper's adaptive sampling, ``batch=max_samples``
with ``prune_at`` its pruned best-of-N; 4 samples (paper: up to 16), threshold 0.9. Unknown is
never confident: no log-probabilities, or neither Yes nor No in the top 20, gives no P (it never
stops sampling, ranks last at pruning, is never picked over a known one). Unanswered samples are
not evaluated. Pruning ranks the samples still running when the last reaches ``prune_at`` (ties:
the earlier); they decode on meanwhile; the value model is read mid-step there. Candidates carry
``self_eval``, ``prune_eval``, ``pruned``, ``temperature``; a budget stop picks among the finished.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from reasoning import STRATEGIES, Candidate, Completion, Context, Problem, Result, Sampling
from reasoning.concurrency import task_group
from reasoning.errors import ConfigError
from reasoning.probes.value import outcome_values
from reasoning.selection import argmax
from reasoning.strategies.sampled import Sampled

__all__ = ["SELF_EVAL", "SelfEval", "p_no"]

SELF_EVAL = '\n\nWould you do better if you started over? ("Yes." or "No.")\n'
"""The paper's self-evaluation question, appended to the (partial) sample in the assistant turn."""


def p_no(reply: Completion) -> float | None:
    """P(No) / (P(Yes) + P(No)) over the top alternatives of a reply's first token; None: unknown."""
    yes = no = 0.0
    for text, logprob in reply.logprobs[0].top if reply.logprobs else ():
        word = text.strip().rstrip(".").lower()
        if math.isfinite(logprob) and word in ("yes", "no"):
            yes, no = (yes + math.exp(logprob), no) if word == "yes" else (yes, no + math.exp(logprob))
    return no / (yes + no) if yes + no > 0 else None


@STRATEGIES.register("self-eval", "adaptive-self-eval", "self_eval")
@dataclass(frozen=True, kw_only=True)
class SelfEval(Sampled):
    """Sample until the model predicts starting over would not do better; prune and pick by it."""

    max_samples: int = 4
    """Most samples per problem."""
    batch: int = 1
    """Samples started together in each round (1: one at a time, the paper's adaptive sampling)."""
    threshold: float = 0.9
    """Stop sampling once a sample's P(no better) reaches this."""
    temperature: float = 0.7
    """The schedule's ceiling: sample k (from 0) is drawn at temperature * (1 - anneal^k)."""
    anneal: float = 0.5
    """How slowly the temperature rises from greedy (0: greedy first, then `temperature`)."""
    prune_at: int = 0
    """Tokens after which a round's running samples are evaluated, all but `keep` cancelled (0: off)."""
    keep: int = 1
    """Samples of a round that decode on past `prune_at`."""
    predictor: Literal["prompt", "value"] = "prompt"
    """prompt: the model's P(No) to SELF_EVAL; value: the value model on its hidden states."""
    probe: str = ""
    """Value-model artefact for ``predictor=value`` (empty: the one shipped for the model)."""

    def __post_init__(self) -> None:
        for bad, need in (
            (not 1 <= self.batch <= self.max_samples, "1 <= batch <= max_samples"),
            (not (0 < self.threshold <= 1 and 0 <= self.anneal < 1), "0 < threshold <= 1, 0 <= anneal < 1"),
            (not 0 <= self.prune_at < self.max_tokens, "0 <= prune_at < max_tokens"),
            (self.prune_at > 0 and not 1 <= self.keep < self.batch, "1 <= keep < batch to prune"),
            (bool(self.probe) and self.predictor != "value", "predictor=value to read probe="),
        ):
            if bad:
                raise ConfigError(f"self-eval: need {need}")
        super().__post_init__()

    @property
    def needs_hidden_states(self) -> bool:
        """The value predictor reads the policy's hidden states (the engine starts with them)."""
        return self.predictor == "value"

    async def predict(self, ctx: Context, texts: Sequence[str]) -> list[float | None]:
        """P(no better) of each (partial) sample, all requests at once; None where unknown."""
        if not texts:
            return []
        if self.predictor == "value":
            return [v if math.isfinite(v) else None for v in await outcome_values(ctx, texts, self.probe)]
        ask = Sampling(temperature=0.0, max_tokens=1, logprobs=20)
        replies = await ctx.generate_all([ctx.request(ask, text + SELF_EVAL) for text in texts])
        return [p_no(r[0]) if r else None for r in replies]

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Round after round until a sample is predicted good enough or none are left; pick."""
        done: dict[int, Candidate] = {}  # by sample number: finished (and evaluated) or pruned

        async def best_so_far() -> Result:
            return self.picked(done)

        ctx.on_stop(best_so_far)
        started = 0
        while started < self.max_samples:
            width = min(self.batch, self.max_samples - started)
            await self.round(ctx, started, width, done)
            started += width
            if any(done[k].scores.get("self_eval", 0.0) >= self.threshold for k in done):
                break
        return self.picked(done)

    async def round(self, ctx: Context, first: int, width: int, done: dict[int, Candidate]) -> None:
        """Samples first..first+width at once; pruned at `prune_at`; each evaluated as it finishes."""
        prune = self.prune_at > 0 and width > self.keep
        partial: dict[int, str | None] = {}  # text at the prune point (None: ended before it)
        ended, pruned, at_prune = set[int](), set[int](), dict[int, float]()
        arrived = asyncio.Event()

        def arrive(j: int, text: str | None) -> None:
            partial.setdefault(j, text)
            if len(partial) == width:
                arrived.set()

        async def decide() -> None:
            await arrived.wait()
            running = [j for j, text in partial.items() if text is not None and j not in ended]
            evaluated = await self.predict(ctx, [partial[j] or "" for j in running])
            at_prune.update({j: p for j, p in zip(running, evaluated, strict=True) if p is not None})
            pruned.update(sorted(running, key=lambda j: (-at_prune.get(j, -math.inf), j))[self.keep :])

        async def sample(j: int) -> None:
            text, annealed = "", self.temperature * (1 - self.anneal ** (first + j))
            sampling = replace(self.sampling(logprobs=0 if prune else None), temperature=annealed)
            async with ctx.trace(ctx.request(sampling)) as live:
                async for chunk in live:
                    text += chunk.text
                    if live.ended is not None:
                        ended.add(j)
                        arrive(j, None)
                    elif prune and j not in partial and live.decoded >= self.prune_at:
                        tokens = live.tokens()  # token strings; without them, the text so far
                        arrive(j, "".join(tokens[: self.prune_at]) if len(tokens) >= self.prune_at else text)
                    elif j in pruned:
                        break  # leaving the trace cancels it in the engine
            arrive(j, None)  # a stream that ended without a finish reason
            [completion] = live.completions
            [candidate] = await ctx.candidates([completion])
            cut = float(completion.finish_reason == "cancelled" and j in pruned)
            early = {"prune_eval": at_prune[j]} if j in at_prune else {}
            done[first + j] = candidate = candidate.with_scores(temperature=annealed, pruned=cut, **early)
            if candidate.answer is not None and completion.finish_reason != "cancelled":
                [p] = await self.predict(ctx, [completion.text])
                done[first + j] = candidate if p is None else candidate.with_scores(self_eval=p)

        async with task_group() as group:
            for j in range(width):
                group.create_task(sample(j))
            if prune:
                group.create_task(decide())

    @staticmethod
    def picked(done: dict[int, Candidate]) -> Result:
        """The answered sample with the highest P(no better); none known: the majority vote."""
        candidates = [done[k] for k in sorted(done)]
        known = [c.scores.get("self_eval") if c.answer is not None else None for c in candidates]
        chosen = argmax(known)
        return Result.vote(candidates) if chosen is None else Result.pick(candidates, chosen)
