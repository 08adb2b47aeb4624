"""Beam search over reasoning steps with a process scorer.

As in huggingface/search-and-learn, after "Scaling LLM Test-Time Compute Optimally can be More
Effective than Scaling Model Parameters" (Snell, Lee, Xu, Kumar; arXiv 2408.03314):

    beams, widths = [empty solution], [N]
    while beams and fewer than N solutions:
        children = widths[i] next steps of each beam i        # every request at once
        score every child (one scorer batch)                   # aggregated: last / min / product / model
        finished children are solutions
        beams = the top N/M unfinished children by score
        widths = N spread over the beams (each kept beam grows about M ways)
    answer = the best-scored solution (or a score-weighted vote over the solutions)

Early rejection ("Accelerating LLM Reasoning via Early Rejection with Partial Reward Modeling",
Cheshmi et al., arXiv 2508.01969; ``reject_at`` = tau > 0): children are sampled only tau tokens
into their step and scored on that partial step; only the kept ones complete their step (one
request each, all at once) before the next expansion. With tau at or above every step's length it
is plain beam search. DVTS (`reasoning.strategies.dvts`) changes
only `select` and `widths`.

INFERRED choices (documented): when beams finish, the next step's N samples are spread over the
beams left (search-and-learn re-duplicates active beams up to N); finished children compete only
as solutions, never for beam slots; a step completed after early rejection keeps its partial
score (no second scorer call: the paper's cost model) and continues the cut text verbatim (on a
real engine a token split at the cut may re-tokenize differently); the search ends at N solutions, with no
beam left, or at ``max_steps`` (paths that long count as finished, answer or not); defaults
follow search-and-learn (M = 4, temperature 0.8, top_p 1, aggregation ``last``) with N = 8 and
a 256-token step cap scaled to this framework's 512-token traces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reasoning import STRATEGIES, Context, Problem, Result, majority_vote
from reasoning.errors import ConfigError
from reasoning.strategies.step_search import StepSearch
from reasoning.strategies.step_tree import Node


@STRATEGIES.register("beam", "beam-search", "beam_search")
@dataclass(frozen=True)
class BeamSearch(StepSearch):
    """N samples per step, the top N/M partial solutions kept, each grown M ways."""

    n: int = 8
    """Samples per step, the budget N (model generations per step)."""
    width: int = 4
    """Beam width M: children per kept beam; N/M beams are kept."""
    reject_at: int = 0
    """Early rejection: score steps this many tokens in and drop the rest before they finish (0: off)."""
    selector: Literal["argmax", "weighted"] = "argmax"
    """Final pick: the best-scored solution, or a vote over solutions weighted by score."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.n < 1 or self.width < 1 or self.n % self.width:
            raise ConfigError(
                f"{name}: n must be a positive multiple of width, got n={self.n}, width={self.width}"
            )
        if self.reject_at < 0:
            raise ConfigError(f"{name}: reject_at must be >= 0, got {self.reject_at}")
        self.steps()

    def widths(self, beams: int) -> list[int]:
        """Samples of the next step per beam: N spread over the beams."""
        base, extra = divmod(self.n, beams)
        return [base + (i < extra) for i in range(beams)]

    def select(self, children: list[Node]) -> tuple[list[Node], list[Node]]:
        """The beams kept (top N/M unfinished by score, best first) and the new solutions."""
        active = sorted((c for c in children if not c.finished), key=lambda c: -c.score)
        return active[: self.n // self.width], [c for c in children if c.finished]

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Grow, score, keep the best; pick among the finished solutions."""
        tree = self.tree(ctx)
        cut = self.reject_at if 0 < self.reject_at < self.step_tokens else None
        beams, widths, solutions = [Node()], [self.n], list[Node]()
        while beams and len(solutions) < self.n:
            children = [c for group in await tree.grow(beams, widths, cut) for c in group]
            kept, finished = self.select(children)
            if cut is not None:
                kept = await tree.complete(kept, self.step_tokens - cut)
            solutions += finished + [k for k in kept if k.finished]
            beams = [k for k in kept if not k.finished]
            widths = self.widths(len(beams)) if beams else []
        return tree.result(self.pick(solutions or beams))

    def pick(self, solutions: list[Node]) -> Node | None:
        """The solution answered: best score (first on ties), or the score-weighted vote's."""
        if not solutions:
            return None
        if self.selector == "weighted":
            chosen = majority_vote([s.answer for s in solutions], weights=[s.score for s in solutions])
            if chosen is not None:
                return solutions[chosen]
        return max(solutions, key=lambda s: s.score)
