"""Best-of-N: sample N solutions in one batched request, then select with a named selector.

Scores come from ``score``: ``verifier`` (the run's verifier, e.g. an outcome reward model),
``judge`` (the model judges each answer, P(Yes) from logprobs: `reasoning.verifiers.judge`)
``confidence`` (DeepConf's mean token confidence of the trace, from top-20 logprobs) or
``value`` (the value model on the policy's hidden states at each candidate's end, OVM: no
token decoded; ``probe`` names its artefact, default the one shipped for the model).
The judge may be another named backend (``judge_backend="target"``). No reward model ships
with the embedded models, so an outcome reward model plugs in as the run's verifier.
Selectors: ``majority`` (self-consistency, scores unused), ``weighted`` (sum of scores per
answer) and ``argmax`` (the single best-scored candidate). pass@k is not a selector: it is an
oracle the evaluation layer computes from gold answers (``Run.oracle_correct``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from reasoning import STRATEGIES, Completion, Context, Problem, Result
from reasoning.errors import ConfigError
from reasoning.probes.value import outcome_values
from reasoning.selection import argmax, token_confidence
from reasoning.strategies.sampled import Sampled
from reasoning.verifiers.judge import judge_scores


@STRATEGIES.register("best-of-n", "bon", "best_of_n")
@dataclass(frozen=True, kw_only=True)
class BestOfN(Sampled):
    """N samples, one selector."""

    independent_samples: ClassVar[bool] = True
    """Its candidates are independent samples of one prompt: pass@k and maj@k hold on them."""

    n: int = 8
    """Number of sampled solutions."""
    selector: Literal["majority", "weighted", "argmax"] = "weighted"
    """How to pick: majority vote, score-weighted vote, or the best-scored candidate."""
    score: Literal["verifier", "judge", "confidence", "value"] = "judge"
    """Where candidate scores come from (unused by ``majority``)."""
    probe: str = ""
    """Value-model artefact for ``score="value"`` (empty: the one shipped for the model)."""
    judge_backend: str | None = None
    """Named backend that judges (e.g. ``target`` judging a ``draft``'s samples); default: the run's."""
    temperature: float = 0.7
    """Sampling temperature."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"best-of-n: n must be >= 1, got {self.n}")
        if self.probe and self.score != "value":
            raise ConfigError("best-of-n: probe= is the value model of score='value'")
        super().__post_init__()

    @property
    def needs_hidden_states(self) -> bool:
        """A value model reads the policy's hidden states (the engine starts with them)."""
        return self.score == "value" and self.selector != "majority"

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Sample, score, select."""
        logprobs = 20 if self.score == "confidence" and self.selector != "majority" else None
        completions = await ctx.generate(ctx.request(self.sampling(self.n, logprobs=logprobs)))
        candidates = await ctx.candidates(completions)
        if self.selector == "majority":
            return Result.vote(candidates)
        if self.score == "judge":
            scores = await judge_scores(ctx, [c.text for c in candidates], self.judge_backend)
        elif self.score == "confidence":
            scores = [mean_confidence(c) for c in completions]
        elif self.score == "value":
            scores = await outcome_values(ctx, [c.text for c in candidates], self.probe)
        else:
            scores = [c.score or 0.0 for c in candidates]
        if self.score != "verifier":
            candidates = [c.with_scores(**{self.score: s}) for c, s in zip(candidates, scores, strict=True)]
        if self.selector == "weighted":
            return Result.vote(candidates, weights=scores)
        answered = [s if c.answer is not None else None for c, s in zip(candidates, scores, strict=True)]
        return Result.pick(candidates, argmax(answered))


def mean_confidence(completion: Completion) -> float:
    """DeepConf's mean token confidence of a trace (0 without log-probabilities)."""
    tokens = completion.logprobs or ()
    return sum(token_confidence(t) for t in tokens) / max(1, len(tokens))
