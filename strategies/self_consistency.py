"""Self-consistency (Wang et al., 2023): sample N reasoning paths, majority-vote the answers.

The N samples go out as ONE request with ``n=N``, so the engine prefills the prompt once and
decodes the N samples as a batch. Votes are grouped by the verifier's normalised answer;
samples without an answer do not vote; ties go to the answer seen first (sample order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from reasoning import STRATEGIES, Context, Problem, Result
from reasoning.errors import ConfigError
from reasoning.strategies.sampled import Sampled


@STRATEGIES.register("self-consistency", "self_consistency", "sc", "majority")
@dataclass(frozen=True, kw_only=True)
class SelfConsistency(Sampled):
    """Majority vote over `n` sampled solutions."""

    independent_samples: ClassVar[bool] = True
    """Its candidates are independent samples of one prompt: pass@k and maj@k hold on them."""

    n: int = 8
    """Number of sampled solutions."""
    temperature: float = 0.7
    """Sampling temperature (must be > 0 for the samples to differ)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"self-consistency: n must be >= 1, got {self.n}")
        super().__post_init__()

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Sample n solutions in one batched request and vote."""
        completions = await ctx.generate(ctx.request(self.sampling(self.n)))
        return Result.vote(await ctx.candidates(completions))
