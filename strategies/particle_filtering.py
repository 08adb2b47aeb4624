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

Parallel tempering (``chains`` > 1, the paper's Alg. 3): M chains run the above side by side,
chain k resampling by softmax(transform(r) / T_k) on a ladder T_1 > ... > T_M (hot chains
explore, cold ones exploit); after each Gibbs iteration the chains' reference particles are
exchanged between neighbours k, k+1 with the replica-exchange Metropolis probability
min(1, exp((w_k - w_{k+1}) (1/T_{k+1} - 1/T_k))), w = transform(r) (the standard ratio; the
paper's printed formula has a typo). The answer is the best final particle over all chains.
Budget: N particles x iterations x chains.

Weights are not multiplied across steps (the released code): a particle's weight is its current
aggregated score. Resampling copies share their prefix byte for byte, so the copies of one
particle go out as one request with ``n`` = their count, and the prefix cache serves them.

INFERRED choices (documented): defaults follow the paper and its code (softmax temperature 1,
logit transform, multinomial resampling, aggregation ``model``, LLM temperature 0.8, 40 steps)
with N = 8 and a 256-token step cap scaled to this framework's 512-token traces; the answer of
particle Gibbs is the best final particle of the last iteration (reference included); the
tempering ladder, unpublished, is geometric from 4 down to 1 (``ladder`` sets it), each chain
draws from its own generator seeded from the run's, and the exchanges sweep k = 1..M-1 in order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BeforeValidator

from reasoning import STRATEGIES, Context, Problem, Result
from reasoning.errors import ConfigError
from reasoning.strategies.step_search import StepSearch
from reasoning.strategies.step_tree import Node, StepTree
from reasoning.verifiers.process import Aggregation

Transform = Literal["logit", "raw"]


def _numbers(value: object) -> object:
    """Accept ``"4,2,1"`` (from the command line) as well as a sequence of numbers."""
    if isinstance(value, str):
        return tuple(float(part) for part in value.replace(" ", "").split(",") if part)
    return value


Ladder = Annotated[tuple[float, ...], BeforeValidator(_numbers)]
"""Temperatures; a comma-separated string is accepted when parameters are parsed."""
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


def transformed(reward: float, transform: Transform) -> float:
    """A score as the resampling softmax weighs it: logit(r) (clipped) or r itself."""
    if transform == "raw":
        return float(reward)
    r = min(max(float(reward), 1e-7), 1 - 1e-7)
    return float(np.log(r / (1 - r)))


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
    chains: int = 1
    """Parallel tempering: chains at the `ladder`'s resampling temperatures (1: no tempering)."""
    ladder: Ladder = ()
    """Resampling temperatures of the chains, hottest first (empty: geometric from 4 to 1; with
    one chain, `softmax_temperature`)."""

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
        if self.chains < 1:
            raise ConfigError(f"particle-filtering: chains must be >= 1, got {self.chains}")
        self.temperatures()
        self.steps()

    def temperatures(self) -> list[float]:
        """The chains' resampling temperatures, hottest first."""
        if self.ladder:
            ladder = [float(t) for t in self.ladder]
            if len(ladder) != self.chains or not all(t > 0 for t in ladder):
                raise ConfigError(
                    f"particle-filtering: ladder needs {self.chains} temperatures > 0 (one per chain), "
                    f"got {self.ladder}"
                )
            if any(a <= b for a, b in itertools.pairwise(ladder)):
                raise ConfigError(f"particle-filtering: ladder must be hottest first, got {self.ladder}")
            return ladder
        if self.chains == 1:
            return [self.softmax_temperature]
        return [4.0 ** ((self.chains - 1 - k) / (self.chains - 1)) for k in range(self.chains)]

    def weights(self, rewards: Sequence[float], temperature: float | None = None) -> np.ndarray:
        """Resampling probabilities of particles with these scores (at a chain's temperature)."""
        return resampling_weights(rewards, self.weight_transform, temperature or self.softmax_temperature)

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Particle filtering on every chain, then (particle Gibbs) again around reference particles."""
        tree = self.tree(ctx)
        temperatures = self.temperatures()
        rngs = [np.random.default_rng(int(ctx.rng.integers(2**63))) for _ in temperatures]
        populations = await ctx.run_all(
            *(self.filter(tree, rng, None, t) for rng, t in zip(rngs, temperatures, strict=True))
        )
        for _ in range(self.iterations - 1):
            references = [
                population[int(rng.choice(len(population), p=self.weights([p.score for p in population], t)))]
                for population, rng, t in zip(populations, rngs, temperatures, strict=True)
            ]
            references = self.exchange(references, temperatures, ctx.rng)
            populations = await ctx.run_all(
                *(
                    self.filter(tree, rng, reference, t)
                    for reference, rng, t in zip(references, rngs, temperatures, strict=True)
                )
            )
        return tree.result(max((p for population in populations for p in population), key=lambda p: p.score))

    def exchange(
        self, references: list[Node], temperatures: list[float], rng: np.random.Generator
    ) -> list[Node]:
        """Swap neighbouring chains' references by the replica-exchange Metropolis rule (k = 1..M-1)."""
        out = list(references)
        for k in range(len(out) - 1):
            w = [transformed(node.score, self.weight_transform) for node in out[k : k + 2]]
            log_ratio = (w[0] - w[1]) * (1 / temperatures[k + 1] - 1 / temperatures[k])
            if log_ratio >= 0 or rng.random() < np.exp(log_ratio):
                out[k], out[k + 1] = out[k + 1], out[k]
        return out

    async def filter(
        self,
        tree: StepTree,
        rng: np.random.Generator,
        reference: Node | None,
        temperature: float | None = None,
    ) -> list[Node]:
        """One particle-filtering run (around `reference`, never replaced); the final particles."""
        fresh = self.particles - (reference is not None)
        [particles] = await tree.grow([Node()], [fresh])
        step = 1
        while any(not p.finished for p in particles):
            pool = particles + ([reference] if reference is not None else [])
            weights = self.weights([p.score_at(step) for p in pool], temperature)
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
