"""Difficulty-aware budgets (DiffAdapt, Liu et al., arXiv 2510.19669): a prompt probe picks the strategy.

    p = difficulty probe(hidden states of the prompt's last token)   # P(one sample is right)
    if p >= threshold:  run the `easy` strategy (default: one sample, 256 tokens)
    else:               run the `hard` strategy (default: self-consistency, 4 x 512 tokens)

Routes are strategy specs (`reasoning.compose`: ``name(param=value, ...)`` or
``name:param=value,...``), so any strategy can be a route, including ``early-exit(probe=..., n=4)``
or a composition. INFERRED
(DiffAdapt's three classes and per-model heuristics are not published in full): two routes, a
binary probe trained on whether a single trace was right (``reasoning probe train --kind
difficulty``), threshold 0.5 unless given. Every candidate records ``p_easy`` and ``route``
(1 = easy) in its scores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from reasoning import STRATEGIES, Context, Problem, Result
from reasoning.compose import build
from reasoning.errors import ConfigError
from reasoning.probes.heads import ProbeHead
from reasoning.probes.probe import load_probe, model_of


@STRATEGIES.register("difficulty", "diffadapt", "difficulty-router")
@dataclass(frozen=True)
class DifficultyRouter:
    """Route each problem to a cheap or an expensive strategy by a prompt-difficulty probe."""

    needs_hidden_states: ClassVar[bool] = True

    probe: str = ""
    """Path of a difficulty-probe artefact (``reasoning probe train --kind difficulty``); empty:
    the one shipped for the model."""
    threshold: float = 0.5
    """Easy when the probe's P(a sample is right) is at least this."""
    easy: str = "single:max_tokens=256"
    """Strategy spec for easy problems."""
    hard: str = "self-consistency:n=4,max_tokens=512"
    """Strategy spec for hard problems."""

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"difficulty: threshold must be in [0, 1], got {self.threshold}")
        build(self.easy)
        build(self.hard)

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Read the prompt's hidden states, score difficulty, run the chosen route."""
        probe = load_probe(self.probe, model_of(ctx), "difficulty", problem=ctx.problem)
        p = await ctx.mapped_hidden_states(ProbeHead(probe), probe.card.layers)
        easy = p >= self.threshold
        result = await build(self.easy if easy else self.hard)(problem, ctx)
        marks = {"p_easy": p, "route": 1.0 if easy else 0.0}
        return replace(result, candidates=tuple(c.with_scores(**marks) for c in result.candidates))
