"""Best-of-N: sample N solutions in one batched request, then select with a named selector.

Scores come from ``score``: ``verifier`` (the run's verifier, e.g. an outcome reward model),
``judge`` (the model judges each answer, P(Yes) from logprobs: `reasoning.verifiers.judge`)
or ``confidence`` (DeepConf's mean token confidence of the trace, from top-20 logprobs).
The judge may be another named backend (``judge_backend="target"``). No reward model ships
with the embedded models, so an outcome reward model plugs in as the run's verifier.
Selectors: ``majority`` (self-consistency, scores unused), ``weighted`` (sum of scores per
answer) and ``argmax`` (the single best-scored candidate). pass@k is not a selector: it is an
oracle the evaluation layer computes from gold answers (``Run.oracle_correct``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reasoning import STRATEGIES, Context, Problem, Result, Sampling, majority_vote
from reasoning.errors import ConfigError
from reasoning.selection import argmax, token_confidence
from reasoning.verifiers.judge import judge_scores


@STRATEGIES.register("best-of-n", "bon", "best_of_n")
@dataclass(frozen=True)
class BestOfN:
    """N samples, one selector."""

    n: int = 8
    """Number of sampled solutions."""
    selector: Literal["majority", "weighted", "argmax"] = "weighted"
    """How to pick: majority vote, score-weighted vote, or the best-scored candidate."""
    score: Literal["verifier", "judge", "confidence"] = "judge"
    """Where candidate scores come from (unused by ``majority``)."""
    temperature: float = 0.7
    """Sampling temperature."""
    top_p: float = 0.95
    """Nucleus mass."""
    max_tokens: int = 512
    """Most tokens per sample."""
    judge_backend: str | None = None
    """Named backend that judges (e.g. ``target`` judging a ``draft``'s samples); default: the run's."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"best-of-n: n must be >= 1, got {self.n}")
        Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, n=self.n)

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Sample, score, select."""
        confidence = self.score == "confidence" and self.selector != "majority"
        sampling = Sampling(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            logprobs=20 if confidence else None,
        )
        completions = await ctx.generate(ctx.request(sampling))
        candidates = await ctx.candidates(completions)
        scores: list[float | None] = [c.score for c in candidates]
        if self.selector != "majority" and self.score == "judge":
            scores = list(await judge_scores(ctx, [c.text for c in candidates], self.judge_backend))
        elif confidence:
            scores = [
                sum(token_confidence(t) for t in c.logprobs or ()) / max(1, len(c.logprobs or ()))
                for c in completions
            ]
        if self.selector != "majority" and self.score != "verifier":
            candidates = [
                c.model_copy(update={"scores": {**c.scores, self.score: float(s or 0.0)}})
                for c, s in zip(candidates, scores, strict=True)
            ]
        answers = [c.answer for c in candidates]
        if self.selector == "majority":
            chosen = majority_vote(answers)
        elif self.selector == "weighted":
            chosen = majority_vote(answers, weights=[s or 0.0 for s in scores])
        else:
            chosen = argmax([s if a is not None else None for s, a in zip(scores, answers, strict=True)])
        answer = None if chosen is None else candidates[chosen].answer
        return Result(answer=answer, candidates=tuple(candidates), chosen=chosen)
