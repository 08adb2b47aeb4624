"""LFS-k@N: let all N samples finish, vote over the k longest.

From "The Art of Scaling Test-Time Compute for Large Language Models" (Agarwal, Sengupta,
Chakraborty), the follow-up of First Finish Search (arXiv 2505.18149).

The counterpart of FFS-k@N for "long-horizon" models, whose longer traces are the better ones
on hard problems. Ties go to the group holding the longest trace.
"""

from __future__ import annotations

from dataclasses import dataclass

from reasoning import STRATEGIES, Context, Problem, Result
from reasoning.errors import ConfigError
from reasoning.strategies.sampled import Sampled


@STRATEGIES.register("longest-finish", "lfs", "longest_finish")
@dataclass(frozen=True, kw_only=True)
class LongestFinish(Sampled):
    """Majority vote over the k longest of n samples."""

    n: int = 4
    """Samples drawn (one batched request)."""
    k: int = 1
    """How many of the longest to vote over."""

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ConfigError(f"longest-finish: need 1 <= k <= n, got k={self.k}, n={self.n}")
        super().__post_init__()

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Sample all n, keep the k longest, vote."""
        candidates = await ctx.candidates(await ctx.generate(ctx.request(self.sampling(self.n))))
        longest = sorted(range(len(candidates)), key=lambda i: (-candidates[i].output_tokens, i))[: self.k]
        return Result.vote(candidates, tie="longest", voters=set(longest))
