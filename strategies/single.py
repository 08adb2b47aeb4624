"""Single sample: one generation, greedy by default (the baseline every method is compared to)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from reasoning import STRATEGIES, Context, Problem, Result
from reasoning.strategies.sampled import Sampled


@STRATEGIES.register("single", "single-sample", "greedy")
@dataclass(frozen=True, kw_only=True)
class Single(Sampled):
    """Generate once and return that sample's answer."""

    independent_samples: ClassVar[bool] = True
    """Its candidates are independent samples of one prompt: pass@k and maj@k hold on them."""

    temperature: float = 0.0
    """0 decodes greedily; above 0 samples (seeded by the run seed)."""
    top_p: float = 1.0
    """Nucleus mass when sampling."""

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Decode one sample."""
        completions = await ctx.generate(ctx.request(self.sampling()))
        return Result.pick(await ctx.candidates(completions), 0)
