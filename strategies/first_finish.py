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

from reasoning import STRATEGIES, Completion, Context, Problem, Result, Sampling, majority_vote
from reasoning.errors import ConfigError


@STRATEGIES.register("first-finish", "ffs", "first_finish", "ffs-k")
@dataclass(frozen=True)
class FirstFinish:
    """Return the first of n samples to finish (k=1), or vote over the first k."""

    n: int = 4
    """Samples launched together."""
    k: int = 1
    """Finished samples to wait for (1 = FFS, more = FFS-k@N)."""
    temperature: float = 0.6
    """Sampling temperature (published default for FFS)."""
    top_p: float = 0.95
    """Nucleus mass."""
    max_tokens: int = 512
    """Most tokens per sample."""
    skip_unanswered: bool = False
    """Only count finishers that carry an answer (INFERRED extension)."""

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ConfigError(f"first-finish: need 1 <= k <= n, got k={self.k}, n={self.n}")
        Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, n=self.n)

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Race n samples; stop the rest once k have finished."""
        sampling = Sampling(
            n=self.n, temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens
        )

        async def answered(completion: Completion) -> bool:
            return not self.skip_unanswered or (await ctx.candidates([completion]))[0].answer is not None

        finished, cancelled = await ctx.first_finished(ctx.request(sampling), self.k, accept=answered)
        candidates = await ctx.candidates(finished)
        everyone = (*candidates, *await ctx.candidates(cancelled))
        winners = [i for i, c in enumerate(candidates) if not self.skip_unanswered or c.answer is not None]
        vote = None
        if winners:
            vote = majority_vote([candidates[i].answer for i in winners]) if self.k > 1 else 0
        if vote is None:
            return Result(answer=None, candidates=everyone)
        chosen = winners[vote]
        return Result(answer=candidates[chosen].answer, candidates=everyone, chosen=chosen)
