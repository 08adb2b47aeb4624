"""Single sample: one generation, greedy by default (the baseline every method is compared to)."""

from __future__ import annotations

from dataclasses import dataclass

from reasoning import STRATEGIES, Context, Problem, Result, Sampling


@STRATEGIES.register("single", "single-sample", "greedy")
@dataclass(frozen=True)
class Single:
    """Generate once and return that sample's answer."""

    temperature: float = 0.0
    """0 decodes greedily; above 0 samples (seeded by the run seed)."""
    top_p: float = 1.0
    """Nucleus mass when sampling."""
    max_tokens: int = 512
    """Most tokens to decode."""

    def __post_init__(self) -> None:
        Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Decode one sample."""
        sampling = Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)
        completions = await ctx.generate(ctx.request(sampling))
        candidates = await ctx.candidates(completions)
        return Result(answer=candidates[0].answer, candidates=tuple(candidates), chosen=0)
