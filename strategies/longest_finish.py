"""LFS-k@N: let all N samples finish, vote over the k longest.

From "The Art of Scaling Test-Time Compute for Large Language Models" (Agarwal, Sengupta,
Chakraborty), the follow-up of First Finish Search (arXiv 2505.18149).

The counterpart of FFS-k@N for "long-horizon" models, whose longer traces are the better ones
on hard problems. Ties go to the group holding the longest trace.
"""

from __future__ import annotations

from dataclasses import dataclass

from reasoning import STRATEGIES, Context, Problem, Result, Sampling, majority_vote
from reasoning.errors import ConfigError


@STRATEGIES.register("longest-finish", "lfs", "longest_finish")
@dataclass(frozen=True)
class LongestFinish:
    """Majority vote over the k longest of n samples."""

    n: int = 4
    """Samples drawn (one batched request)."""
    k: int = 1
    """How many of the longest to vote over."""
    temperature: float = 0.6
    """Sampling temperature."""
    top_p: float = 0.95
    """Nucleus mass."""
    max_tokens: int = 512
    """Most tokens per sample."""

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ConfigError(f"longest-finish: need 1 <= k <= n, got k={self.k}, n={self.n}")
        Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, n=self.n)

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Sample all n, keep the k longest, vote."""
        sampling = Sampling(
            n=self.n, temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens
        )
        candidates = await ctx.candidates(await ctx.generate(ctx.request(sampling)))
        longest = sorted(range(len(candidates)), key=lambda i: (-candidates[i].output_tokens, i))[: self.k]
        kept = [candidates[i] for i in longest]
        chosen = majority_vote(
            [c.answer for c in kept], lengths=[c.output_tokens for c in kept], tie="longest"
        )
        answer = None if chosen is None else kept[chosen].answer
        return Result(
            answer=answer, candidates=tuple(candidates), chosen=None if chosen is None else longest[chosen]
        )
