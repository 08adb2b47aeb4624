"""Self-consistency (Wang et al., 2023): sample N reasoning paths, majority-vote the answers.

The N samples go out as ONE request with ``n=N``, so the engine prefills the prompt once and
decodes the N samples as a batch. Votes are grouped by the verifier's normalised answer;
samples without an answer do not vote; ties go to the answer seen first (sample order).
"""

from __future__ import annotations

from dataclasses import dataclass

from reasoning import STRATEGIES, Context, Problem, Result, Sampling, majority_vote
from reasoning.errors import ConfigError


@STRATEGIES.register("self-consistency", "self_consistency", "sc", "majority")
@dataclass(frozen=True)
class SelfConsistency:
    """Majority vote over `n` sampled solutions."""

    n: int = 8
    """Number of sampled solutions."""
    temperature: float = 0.7
    """Sampling temperature (must be > 0 for the samples to differ)."""
    top_p: float = 0.95
    """Nucleus mass."""
    max_tokens: int = 512
    """Most tokens per sample."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"self-consistency: n must be >= 1, got {self.n}")
        Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, n=self.n)

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Sample n solutions in one batched request and vote."""
        sampling = Sampling(
            temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, n=self.n
        )
        completions = await ctx.generate(ctx.request(sampling))
        candidates = await ctx.candidates(completions)
        chosen = majority_vote([c.answer for c in candidates])
        answer = None if chosen is None else candidates[chosen].answer
        return Result(answer=answer, candidates=tuple(candidates), chosen=chosen)
