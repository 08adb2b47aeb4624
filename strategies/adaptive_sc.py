"""Adaptive self-consistency: sample in small batches, stop once the majority is settled.

Stopping rule (the Beta rule of Adaptive-Consistency, Aggarwal et al. 2023): with v1 votes for
the leading answer and v2 for the runner-up, a uniform prior on the leader's share p of the two
gives p ~ Beta(v1 + 1, v2 + 1); stop when P(p > 1/2) >= `confidence` (computed exactly:
`reasoning.selection.majority_probability`). With the default 0.95, four agreeing samples stop
(P = 0.97); 5 vs 1 does not (0.94); 6 vs 1 does (0.96). Batches of `batch` samples go out as
one request each (the paper samples one at a time; a batch keeps the engine busy).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from reasoning import STRATEGIES, Candidate, Context, Problem, Result
from reasoning.errors import ConfigError
from reasoning.selection import majority_probability
from reasoning.strategies.sampled import Sampled


@STRATEGIES.register("adaptive-sc", "adaptive-consistency", "adaptive_sc")
@dataclass(frozen=True, kw_only=True)
class AdaptiveSelfConsistency(Sampled):
    """Majority vote that stops sampling once the leader is statistically settled."""

    max_samples: int = 16
    """Most samples per problem."""
    batch: int = 4
    """Samples drawn per round (one request)."""
    confidence: float = 0.95
    """Stop when P(leading answer is the majority) reaches this."""
    temperature: float = 0.7
    """Sampling temperature."""

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= self.max_samples:
            raise ConfigError(
                f"adaptive-sc: need 1 <= batch <= max_samples, got {self.batch}, {self.max_samples}"
            )
        if not 0.5 < self.confidence < 1:
            raise ConfigError(f"adaptive-sc: confidence must be in (0.5, 1), got {self.confidence}")
        super().__post_init__()

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Sample batch by batch until settled or out of samples; vote."""
        candidates: list[Candidate] = []
        while len(candidates) < self.max_samples:
            n = min(self.batch, self.max_samples - len(candidates))
            candidates += await ctx.candidates(await ctx.generate(ctx.request(self.sampling(n))))
            votes = Counter(c.answer for c in candidates if c.answer is not None).most_common(2)
            if votes:
                runner_up = votes[1][1] if len(votes) > 1 else 0
                if majority_probability(votes[0][1], runner_up) >= self.confidence:
                    break
        return Result.vote(candidates)
