"""Diverse verifier tree search (DVTS; huggingface/search-and-learn): N/M greedy subtrees.

    subtrees = the N first-step samples, in N/M groups of M
    repeat: each subtree keeps only its best child by process score and grows it M ways
            (every subtree's request at once, one scorer batch)
            a subtree ends when its best child is a finished solution
    answer = the best-scored subtree result (or a score-weighted vote over them)

Beam search (`reasoning.strategies.beam_search`) with another `select` and `widths`: the same
parameters, early rejection included. INFERRED: a subtree whose best child is unfinished goes on
even when a sibling finished with a lower score (that sibling stays in the record only).
"""

from __future__ import annotations

from dataclasses import dataclass

from reasoning import STRATEGIES
from reasoning.strategies.beam_search import BeamSearch
from reasoning.strategies.step_tree import Node


@STRATEGIES.register("dvts", "diverse-verifier-tree-search")
@dataclass(frozen=True)
class DVTS(BeamSearch):
    """N/M independent subtrees, each a greedy beam of width M."""

    def widths(self, beams: int) -> list[int]:
        """Each subtree's beam grows M ways."""
        return [self.width] * beams

    def select(self, children: list[Node]) -> tuple[list[Node], list[Node]]:
        """Per subtree (M consecutive children), its best child: a beam, or a result when finished."""
        kept: list[Node] = []
        results: list[Node] = []
        for start in range(0, len(children), self.width):
            best = max(children[start : start + self.width], key=lambda c: c.score)
            (results if best.finished else kept).append(best)
        return kept, results
