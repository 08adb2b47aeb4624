"""Self-consistency (Wang et al., 2023): sample N reasoning paths, majority-vote the answers.

The N samples go out as ONE request with ``n=N``, so the engine prefills the prompt once and
decodes the N samples as a batch. Votes are grouped by the verifier's normalised answer;
samples without an answer do not vote; ties go to the answer seen first (sample order).

Composed (``inner``): the N paths are N runs of another strategy, concurrently, each in its own
derived context (`Context.derive`, scope ``sc<i>``: its own seeds), and each run's chosen
candidate votes; every candidate of every run is kept in the record, marked with its ``path``.
E.g. ``self-consistency(n=4, inner=budget-forcing(max_think=256))`` votes over budget-forced
traces. The sampling parameters are then the inner strategy's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from reasoning import STRATEGIES, Candidate, Context, Problem, Result
from reasoning.compose import Inner, build_optional, needs_hidden_states
from reasoning.errors import ConfigError
from reasoning.strategies.sampled import Sampled


@STRATEGIES.register("self-consistency", "self_consistency", "sc", "majority")
@dataclass(frozen=True, kw_only=True)
class SelfConsistency(Sampled):
    """Majority vote over `n` sampled solutions (or over `n` runs of an `inner` strategy)."""

    n: int = 8
    """Number of sampled solutions."""
    temperature: float = 0.7
    """Sampling temperature (must be > 0 for the samples to differ)."""
    inner: Inner = None
    """A strategy spec whose `n` runs vote instead of `n` samples (their chosen answers vote)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"self-consistency: n must be >= 1, got {self.n}")
        object.__setattr__(self, "inner", build_optional(self.inner))
        super().__post_init__()

    @property
    def independent_samples(self) -> bool:
        """Its candidates are independent samples of one prompt (pass@k and maj@k hold on them)."""
        return self.inner is None

    @property
    def needs_hidden_states(self) -> bool:
        """Whether the inner strategy reads hidden states."""
        return needs_hidden_states(self.inner)

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Sample n solutions in one batched request and vote (or run `inner` n times and vote)."""
        if self.inner is None:
            completions = await ctx.generate(ctx.request(self.sampling(self.n)))
            return Result.vote(await ctx.candidates(completions))
        inner, finished = self.inner, dict[int, Result]()
        paths = [ctx.derive(f"sc{i}") for i in range(self.n)]

        async def path(i: int) -> Result:
            finished[i] = await inner(problem, paths[i])
            return finished[i]

        async def best_so_far() -> Result:  # a budget stop: each path's result, or its own best so far
            runs = [finished.get(i) or await p.result_so_far() for i, p in enumerate(paths)]
            return self.voted(runs)

        ctx.on_stop(best_so_far)
        return self.voted(await ctx.run_all(*(path(i) for i in range(self.n))))

    @staticmethod
    def voted(runs: list[Result]) -> Result:
        """A vote of the runs' chosen candidates, every candidate kept and marked with its ``path``."""
        candidates: list[Candidate] = []
        voters: set[int] = set()
        for path, run in enumerate(runs):
            if run.chosen is not None:
                voters.add(len(candidates) + run.chosen)
            candidates.extend(c.with_scores(path=float(path)) for c in run.candidates)
        return Result.vote(candidates, voters=voters)
