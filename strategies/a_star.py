"""A*-decoding: best-first search over partial solutions (Chatziveroglou 2025, arXiv 2505.13672).

    h(s) = 1 - r(s)   (r: the process score of s);   root: g = 0, h = 1
    open = {root}, ordered by f = g + h (ties: lower h, then first pushed)
    while open and spent < budget:
        s = pop the lowest f                         # `frontier` > 1 pops that many together
        if s is finished: return s                   # the first goal popped
        children = k next steps of s                 # one request with n = k
        score the children (one batch); for each child c:
            penalize_drops: g(c) = g(s) + max(0, h(c) - h(s))   # "g accumulates only increases in h"
            consistent:     g(c) = g(s) + max(0, h(s) - h(c))   # f never decreases along a path
        push every child
    budget spent: the open goal with the lowest f, else the lowest-f partial state, its answer forced

The paper body was not available (only its abstract and reviews: h = 1 - r and "sample k, keep
the lowest f" are sourced; "g accumulates only increases in h" is one survey's sentence): the g
rule, the open set, the budget unit and the fallback are INFERRED and kept configurable:
``g_mode`` (default ``penalize_drops``, the literal reading; recorded with the run's parameters),
``budget`` in ``scorer_calls`` (default), ``output_tokens`` or ``expansions``: a round starts only
while the spend is below the budget, so the last round may pass it by at most one round (the run's
`Budget` stays the hard cap); when it is spent, the search returns the open goal with the lowest f, else
forces an answer on the lowest-f partial state (`StepTree.force`). Other INFERRED defaults:
k = 4, temperature 0.8, aggregation ``last``, h(root) = 1 (the empty solution is not scored),
``frontier`` = 1 (textbook A*; more states per round batch the engine); ties in f go to the lower
h (with h(root) = 1, ``consistent`` gives f = 1 + the score drops along the path, so every first
step ties at f = 1). Candidates record ``g``, ``h`` and ``f``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Literal

from reasoning import STRATEGIES, Context, Problem, Result
from reasoning.errors import ConfigError
from reasoning.strategies.step_search import StepSearch
from reasoning.strategies.step_tree import Node, StepTree


@dataclass(order=True)
class _Open:
    """An open state, ordered by f, then by h (the better-scored first), then by push order."""

    f: float
    h: float
    order: int
    g: float = field(compare=False)
    node: Node = field(compare=False)


@STRATEGIES.register("a-star", "astar", "a_star")
@dataclass(frozen=True)
class AStar(StepSearch):
    """Best-first search over partial solutions with f = g + h, h = 1 - process score."""

    k: int = 4
    """Continuations sampled per expansion."""
    budget: int = 64
    """Search budget, in `budget_unit`."""
    budget_unit: Literal["scorer_calls", "output_tokens", "expansions"] = "scorer_calls"
    """What `budget` counts: paths scored, step tokens decoded, or states expanded."""
    g_mode: Literal["penalize_drops", "consistent"] = "penalize_drops"
    """Cost so far: charge score drops (the literal reading) or score rises (consistent f)."""
    frontier: int = 1
    """Open states expanded together per round (1: textbook A*)."""

    def __post_init__(self) -> None:
        if self.k < 1 or self.budget < 1 or self.frontier < 1:
            raise ConfigError(
                f"a-star: k, budget and frontier must be >= 1, got {self.k}, {self.budget}, {self.frontier}"
            )
        self.steps()

    def cost(self, parent: _Open, h: float) -> float:
        """The cost so far g of a child whose heuristic is `h`."""
        if self.g_mode == "penalize_drops":
            return parent.g + max(0.0, h - parent.h)
        return parent.g + max(0.0, parent.h - h)

    def spent(self, tree: StepTree, expansions: int) -> int:
        """What the search has spent, in `budget_unit`."""
        if self.budget_unit == "scorer_calls":
            return tree.scorer_calls
        return tree.output_tokens if self.budget_unit == "output_tokens" else expansions

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Pop the lowest f, stop at a goal, else expand it k ways and push the children."""
        tree = self.tree(ctx)
        opened = [_Open(1.0, 1.0, 0, 0.0, Node())]
        pushed = expansions = 0
        while opened and self.spent(tree, expansions) < self.budget:
            popped = [heapq.heappop(opened) for _ in range(min(self.frontier, len(opened)))]
            goals = [s for s in popped if s.node.finished]
            if goals:
                return tree.result(goals[0].node)
            grown = await tree.grow([s.node for s in popped], [self.k] * len(popped))
            expansions += len(popped)
            for state, children in zip(popped, grown, strict=True):
                for child in children:
                    h = 1.0 - child.score
                    g = self.cost(state, h)
                    pushed += 1
                    heapq.heappush(opened, _Open(g + h, h, pushed, g, child))
                    tree.note(child, g=g, h=h, f=g + h)
        goals = [s for s in opened if s.node.finished]
        if goals:
            return tree.result(min(goals).node)
        return tree.result(await tree.force(min(opened).node) if opened else None)
