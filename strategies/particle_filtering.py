"""Particle filtering and particle Gibbs over reasoning steps (Puri et al., arXiv 2502.01618).

"Rollout Roulette: A Probabilistic Inference Approach to Inference-Time Scaling of LLMs using
Particle-Based Monte Carlo Methods": the paper's Alg. 1 and 2 as its released code runs them.

    particles = N first steps (one request), each weighted by its process score r
    while some particle is active:
        theta = softmax(transform(r) / T)             # transform: logit(r) (code) or r (paper)
        particles = N draws by theta (multinomial or systematic), finished ones included
        each active particle grows one step            # every request at once; copies share one
        score the new steps (one batch)                # weight = the path's current score
    answer = the particle with the highest final score

Particle Gibbs (``iterations`` > 1): a reference particle is drawn by theta from the final
particles; the next run has N - 1 fresh particles plus the reference, which is never replaced,
weighs in with its score at the current step (its last one when shorter), and can be drawn: a
drawn copy is cut to the current step and active again. Budget: N particles x iterations.

Weights are not multiplied across steps (the released code): a particle's weight is its current
aggregated score. Resampling copies share their prefix byte for byte, so the copies of one
particle go out as one request with ``n`` = their count, and the prefix cache serves them.

INFERRED choices (documented): defaults follow the paper and its code (softmax temperature 1,
logit transform, multinomial resampling, aggregation ``model``, LLM temperature 0.8, 40 steps)
with N = 8 and a 256-token step cap scaled to this framework's 512-token traces; the answer of
particle Gibbs is the best final particle of the last iteration (reference included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from reasoning import STRATEGIES, Context, Problem, Result
from reasoning.errors import ConfigError
from reasoning.strategies.step_search import StepSearch
from reasoning.strategies.step_tree import Node, StepTree
from reasoning.verifiers.process import Aggregation

Transform = Literal["logit", "raw"]
Resampling = Literal["multinomial", "systematic"]


def resampling_weights(rewards: Sequence[float], transform: Transform, temperature: float) -> np.ndarray:
    """Resampling probabilities softmax(transform(r) / T).

    ``logit`` (the released code): log(r / (1 - r)), r clipped to [1e-7, 1 - 1e-7], so that
    P(i) is proportional to (r_i / (1 - r_i)) ** (1 / T); ``raw`` (the paper's text): r itself.

    Example:
        >>> resampling_weights([0.9, 0.1], "logit", 1.0).round(4).tolist()
        [0.9878, 0.0122]
    """
    r = np.asarray(rewards, dtype=np.float64)
    if transform == "logit":
        r = np.clip(r, 1e-7, 1 - 1e-7)
        r = np.log(r / (1 - r))
    z = r / temperature
    p = np.exp(z - z.max())
    return np.asarray(p / p.sum())


def resample(weights: np.ndarray, count: int, method: Resampling, rng: np.random.Generator) -> list[int]:
    """Indices of `count` draws by `weights`: independent (multinomial) or systematic.

    Systematic resampling draws one uniform u and takes the points (u + j) / count, so each
    index is drawn floor or ceil of count x weight times.

    Example:
        >>> resample(np.array([0.5, 0.25, 0.25]), 4, "systematic", np.random.default_rng(0))
        [0, 0, 1, 2]
    """
    if method == "multinomial":
        return [int(i) for i in rng.choice(len(weights), size=count, p=weights)]
    points = (rng.random() + np.arange(count)) / count
    drawn = np.searchsorted(np.cumsum(weights), points, side="right")
    return [int(i) for i in np.minimum(drawn, len(weights) - 1)]


@STRATEGIES.register("particle-filtering", "pf", "particle_filtering")
@dataclass(frozen=True)
class ParticleFiltering(StepSearch):
    """N particles advance one step at a time, resampled by their process scores."""

    particles: int = 8
    """Particles N (the budget: model generations per step)."""
    iterations: int = 1
    """Particle Gibbs iterations (1: plain particle filtering); the budget is N x iterations."""
    softmax_temperature: float = 1.0
    """Temperature T of the resampling softmax (large: uniform; small: copy the best)."""
    weight_transform: Transform = "logit"
    """Softmax over logit(r) (the released code) or over r (the paper's text)."""
    resampling: Resampling = "multinomial"
    """Multinomial (the paper) or systematic resampling (lower variance)."""
    aggregation: Aggregation = "model"
    """How step scores make a particle's weight: last, min, product, or model (the paper's best)."""

    def __post_init__(self) -> None:
        if self.particles < 1 or self.iterations < 1:
            raise ConfigError(
                f"particle-filtering: particles and iterations must be >= 1, got {self.particles}, "
                f"{self.iterations}"
            )
        if self.iterations > 1 and self.particles < 2:
            raise ConfigError("particle-filtering: particle Gibbs (iterations > 1) needs particles >= 2")
        if not self.softmax_temperature > 0:
            raise ConfigError(
                f"particle-filtering: softmax_temperature must be > 0, got {self.softmax_temperature}"
            )
        self.steps()

    def weights(self, rewards: Sequence[float]) -> np.ndarray:
        """Resampling probabilities of particles with these scores."""
        return resampling_weights(rewards, self.weight_transform, self.softmax_temperature)

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Particle filtering, then (particle Gibbs) again around a drawn reference particle."""
        tree = self.tree(ctx)
        reference: Node | None = None
        population = await self.filter(tree, ctx.rng, reference)
        for _ in range(self.iterations - 1):
            weights = self.weights([p.score for p in population])
            reference = population[int(ctx.rng.choice(len(population), p=weights))]
            population = await self.filter(tree, ctx.rng, reference)
        return tree.result(max(population, key=lambda p: p.score))

    async def filter(self, tree: StepTree, rng: np.random.Generator, reference: Node | None) -> list[Node]:
        """One particle-filtering run (around `reference`, never replaced); the final particles."""
        fresh = self.particles - (reference is not None)
        [particles] = await tree.grow([Node()], [fresh])
        step = 1
        while any(not p.finished for p in particles):
            pool = particles + ([reference] if reference is not None else [])
            weights = self.weights([p.score_at(step) for p in pool])
            particles = [pool[i].truncated(step) for i in resample(weights, fresh, self.resampling, rng)]
            particles = await self.propagate(tree, particles)
            step += 1
        return particles + ([reference] if reference is not None else [])

    async def propagate(self, tree: StepTree, particles: list[Node]) -> list[Node]:
        """Grow every active particle one step; copies of one particle share a request."""
        copies: dict[tuple[str, ...], list[int]] = {}
        for i, particle in enumerate(particles):
            if not particle.finished:
                copies.setdefault(particle.steps, []).append(i)
        parents = [particles[slots[0]] for slots in copies.values()]
        grown = await tree.grow(parents, [len(slots) for slots in copies.values()])
        out = list(particles)
        for slots, children in zip(copies.values(), grown, strict=True):
            for i, child in zip(slots, children, strict=True):
                out[i] = child
        return out
