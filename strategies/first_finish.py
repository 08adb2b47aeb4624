"""First Finish Search (FFS) and FFS-k@N.

FFS: "First Finish Search: Efficient Test-Time Scaling in Large Language Models" (Agarwal,
Sengupta, Chakraborty, arXiv 2505.18149); FFS-k@N: the same authors' "The Art of Scaling
Test-Time Compute for Large Language Models".

N samples start together as one request; the first to finish (end of text or the length cap)
is the answer and the engine cancels the others at once. FFS-k@N waits for the first k and
majority-votes them (ties: the earliest finisher). Samples finishing in the same engine step
arrive in the engine's order, which is the tie rule for FFS (INFERRED: the paper does not say).
``skip_unanswered`` (INFERRED extension, off by default as in the paper) skips finishers
without an extractable answer. Cost: total tokens ~ N x the winner's length, sequential = the
winner's length; the cancelled samples' tokens are ``usage.cancelled_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass

from reasoning import STRATEGIES, Completion, Context, Problem, Result
from reasoning.errors import ConfigError
from reasoning.strategies.sampled import Sampled


@STRATEGIES.register("first-finish", "ffs", "first_finish", "ffs-k")
@dataclass(frozen=True, kw_only=True)
class FirstFinish(Sampled):
    """Return the first of n samples to finish (k=1), or vote over the first k."""

    n: int = 4
    """Samples launched together."""
    k: int = 1
    """Finished samples to wait for (1 = FFS, more = FFS-k@N)."""
    skip_unanswered: bool = False
    """Only count finishers that carry an answer (INFERRED extension)."""

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ConfigError(f"first-finish: need 1 <= k <= n, got k={self.k}, n={self.n}")
        super().__post_init__()

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Race n samples; stop the rest once k have finished."""

        async def answered(completion: Completion) -> bool:
            return not self.skip_unanswered or (await ctx.candidates([completion]))[0].answer is not None

        request = ctx.request(self.sampling(self.n))
        finished, cancelled = await ctx.first_finished(request, self.k, accept=answered)
        everyone = await ctx.candidates([*finished, *cancelled])  # the cancelled have no answer
        if self.k == 1 and not self.skip_unanswered:  # FFS: the first finisher, answer or not
            return Result.pick(everyone, 0 if finished else None)
        return Result.vote(everyone)  # the finishers that answered (with skip_unanswered: the first k)
