"""The controller: runs a strategy on a problem under a budget and returns a full record."""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field

import anyio
import numpy as np

from reasoning.backend import Backend
from reasoning.budget import Budget, Meter
from reasoning.errors import BudgetExhausted
from reasoning.problem import Problem, Prompt, default_prompt
from reasoning.record import Run
from reasoning.registry import STRATEGIES, params_of
from reasoning.selection import majority_vote
from reasoning.strategy import Context, ExtractAnswer, Result, Strategy, Verifier

__all__ = ["Controller"]


@dataclass
class Controller:
    """Runs strategies against a backend, enforcing a budget, and records everything.

    Example:
        >>> from reasoning import Budget, Controller, Problem, ScriptedBackend
        >>> from reasoning.strategies import SelfConsistency
        >>> backend = ScriptedBackend(["\\\\boxed{4}", "\\\\boxed{5}", "\\\\boxed{4}"])
        >>> run = Controller(backend).run_sync(Problem("p", "2+2?"), SelfConsistency(n=3))
        >>> run.answer, run.usage["calls"]
        ('4', 1)
    """

    backend: Backend
    """Where tokens come from."""
    verifier: Verifier = field(default_factory=ExtractAnswer)
    """Reads answers and scores candidates (default: extract the final answer)."""
    budget: Budget = field(default_factory=Budget)
    """Default budget per problem."""
    seed: int | None = 0
    """Run seed; per-request seeds derive from it and the problem id (None: unseeded)."""
    prompt: Prompt = default_prompt
    """Builds the chat messages of a problem."""
    model: str = ""
    """Model name recorded in runs (defaults to the backend's)."""

    async def run(self, problem: Problem, strategy: Strategy, budget: Budget | None = None) -> Run:
        """Solve `problem` with `strategy` under `budget` (default: the controller's).

        On `BudgetExhausted` the run stops cleanly: the answer is the majority vote over the
        samples finished so far and ``stop_reason`` is ``budget:<line>``.
        """
        budget = budget or self.budget
        meter = Meter(budget)
        ctx = Context(
            problem=problem,
            messages=self.prompt(problem),
            backend=self.backend,
            meter=meter,
            verifier=self.verifier,
            seed=self.seed,
            rng=np.random.default_rng(None if self.seed is None else [self.seed, _stable(problem.id)]),
        )
        stop_reason = "done"
        try:
            result = await strategy(problem, ctx)
        except BudgetExhausted as exc:
            stop_reason = f"budget:{exc.resource}"
            result = await _best_so_far(ctx)
        usage = meter.finish()
        return Run(
            problem_id=problem.id,
            question=problem.question,
            gold=problem.answer,
            answer=result.answer,
            chosen=result.chosen,
            candidates=list(result.candidates),
            strategy=STRATEGIES.name_of(strategy),
            params=params_of(strategy),
            model=self.model or getattr(self.backend, "model", ""),
            backend=self.backend.name,
            seed=self.seed,
            budget=dataclasses.asdict(budget),
            usage=dataclasses.asdict(usage),
            stop_reason=stop_reason,
        )

    def run_sync(self, problem: Problem, strategy: Strategy, budget: Budget | None = None) -> Run:
        """Blocking form of `run` for scripts and notebooks without an event loop."""
        return anyio.run(self.run, problem, strategy, budget)


async def _best_so_far(ctx: Context) -> Result:
    done = [c for c in ctx.completions if c.finish_reason != "cancelled"]
    if not done:
        return Result(answer=None)
    candidates = await ctx.candidates(done)
    chosen = majority_vote([c.answer for c in candidates])
    return Result(
        answer=None if chosen is None else candidates[chosen].answer,
        candidates=tuple(candidates),
        chosen=chosen,
    )


def _stable(text: str) -> int:
    return zlib.crc32(text.encode())
