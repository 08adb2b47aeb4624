"""short-m@k: stop once m of k samples have finished, vote among them.

"Don't Overthink it. Preferring Shorter Thinking Chains for Improved LLM Reasoning" (Hassid et
al., arXiv 2505.17813).

k samples start together as one request; when the m-th finishes the engine cancels the rest.
The m finished samples vote; a tie goes to the group holding the shortest chain (measured in
decoded tokens: these models have no separate thinking segment, so "thinking done" is the end
of the sample; INFERRED, documented). short-1@k is FFS; short-k@k is majority@k.
"""

from __future__ import annotations

from dataclasses import dataclass

from reasoning import STRATEGIES, Context, Problem, Result
from reasoning.errors import ConfigError
from reasoning.strategies.sampled import Sampled


@STRATEGIES.register("short-m@k", "short-m-at-k", "short_m_at_k")
@dataclass(frozen=True, kw_only=True)
class ShortMAtK(Sampled):
    """Vote over the first m of k samples to finish; ties to the shortest chain."""

    k: int = 5
    """Samples launched together."""
    m: int = 3
    """Finished samples to wait for."""

    def __post_init__(self) -> None:
        if not 1 <= self.m <= self.k:
            raise ConfigError(f"short-m@k: need 1 <= m <= k, got m={self.m}, k={self.k}")
        super().__post_init__()

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Race k samples, keep the first m, vote."""
        finished, cancelled = await ctx.first_finished(ctx.request(self.sampling(self.k)), self.m)
        everyone = await ctx.candidates([*finished, *cancelled])  # the cancelled have no answer
        return Result.vote(everyone, tie="shortest")
