"""The controller: runs a strategy on a problem under a budget and returns a full record."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import weakref
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio
import numpy as np

from reasoning.backend import Backend, PrefixCache, ProblemRouter
from reasoning.budget import Budget, Meter
from reasoning.errors import BudgetExhausted, ConfigError
from reasoning.problem import Problem, Prompt, default_prompt
from reasoning.record import Call, Run
from reasoning.registry import STRATEGIES, params_of
from reasoning.strategy import (
    Context,
    Result,
    Strategy,
    TruncatedAnswers,
    made_into_candidate,
    to_candidate,
)
from reasoning.verifier import ExtractAnswer, Verdict, Verifier

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

    backend: Backend | Mapping[str, Backend]
    """Where tokens come from: one backend, or several by name (the first is the default).

    Strategies reach a named one with ``ctx.generate(request, backend="draft")``.
    """
    verifier: Verifier = field(default_factory=ExtractAnswer)
    """Reads answers and scores candidates (default: extract the final answer)."""
    budget: Budget = field(default_factory=Budget)
    """Default budget per problem."""
    seed: int | None = 0
    """Run seed; per-request seeds derive from it and the problem id (None: unseeded)."""
    prompt: Prompt = default_prompt
    """Builds the chat messages of a problem."""
    model: str = ""
    """Model name recorded in runs (defaults to the default backend's)."""
    budgets: Mapping[str, Budget] = field(default_factory=dict)
    """Budget lines of named backends, on top of `budget` (which covers them all)."""
    deterministic: bool = False
    """Reproducible mode: the same seed on the same engine and machine gives the same record
    (timings aside), whatever else is run, for every strategy that does not stop on wall-clock
    timing. An engine's numerics depend on the batch a request lands in, and batches depend on
    arrival timing; so here no batch depends on timing. Problems run one at a time on each
    engine (concurrent `run` calls wait their turn, uncharged), each engine's prefix cache is
    emptied before each problem, the requests a strategy sends together go one after another in
    order (`Context.run_all`), and a request's ``n`` samples, which an engine fans out one by
    one (so they may start in different steps), are admitted in one scheduler step
    (`reasoning.backend.AdmitsAtOnce`, the in-process engine) or else sent one after another.
    It gives up batching across requests; a request's samples still decode as a batch. Every
    backend must be able to empty its prefix cache (`reasoning.backend.PrefixCache`: the
    in-process engines and the scripted backend)."""
    truncated_answers: TruncatedAnswers = "written"
    """What counts as the answer of a sample cut short by ``max_tokens``: ``written`` (default)
    only an answer stated in full (a closed ``\\boxed{}``, a complete ``the answer is x`` line),
    never the last number of a cut text; ``any`` lets the verifier read whatever it finds."""

    def __post_init__(self) -> None:
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be an integer from 0 to 2**63 - 1, got {self.seed}")
        if isinstance(self.backend, Mapping):
            if not self.backend:
                raise ConfigError("Controller needs at least one backend")
            self.backends: dict[str, Backend] = dict(self.backend)
            self.default_name = next(iter(self.backends))
        else:
            self.backends = {}
            self.default_name = ""
        unknown = set(self.budgets) - set(self.backends)
        if unknown:
            names = ", ".join(self.backends) or "(none: pass backends by name)"
            raise ConfigError(f"budgets name unknown backends {sorted(unknown)}; named backends: {names}")
        if self.deterministic:
            for backend in self.backends.values() or [self.primary]:
                if not isinstance(backend, ProblemRouter):  # a router's replicas are checked per problem
                    _check_resettable(backend)

    @property
    def primary(self) -> Backend:
        """The default backend."""
        if isinstance(self.backend, Mapping):
            return self.backends[self.default_name]
        return self.backend

    async def run(self, problem: Problem, strategy: Strategy, budget: Budget | None = None) -> Run:
        """Solve `problem` with `strategy` under `budget` (default: the controller's).

        The strategy, the verifier and the prompt see the problem without its gold answer
        (`Problem.without_gold`); the record keeps the gold for the grader.

        On `BudgetExhausted` the run stops cleanly: the answer is the majority vote over the
        samples finished so far and ``stop_reason`` is ``budget:<line>``; every sample that
        started is in the record (the unfinished ones as cancelled, with their partial text).
        A run that finished but whose samples the budget cut short (it lowered their
        ``max_tokens`` and they used all of it) says ``budget:output_tokens`` too (the line that
        cut them), and one that ended with no answer says ``no_answer``: ``done`` always means
        the strategy ran its course and answered.

        A backend that routes per problem (`ProblemRouter`, a pool of engine replicas) is asked
        for this problem's backend first; the strategy and the record's ``engine`` see that one.

        Raises:
            ConfigError: `deterministic`, and a backend cannot empty its prefix cache.
        """
        if not self.deterministic:
            return await self._run(problem, strategy, budget)
        async with _turn(self.primary):
            return await self._run(problem, strategy, budget)

    async def _run(self, problem: Problem, strategy: Strategy, budget: Budget | None) -> Run:
        budget = budget or self.budget
        primary = _routed(self.primary, problem.id)
        backends = {
            name: primary if name == self.default_name else _routed(b, problem.id)
            for name, b in self.backends.items()
        }
        if self.deterministic:
            for backend in {id(b): b for b in [primary, *backends.values()]}.values():
                await _check_resettable(backend).reset_prefix_cache()
        visible = problem.without_gold()
        meter = Meter(budget)
        meters = {name: Meter(self.budgets.get(name, Budget()), line=f"{name}.") for name in self.backends}
        ctx = Context(
            problem=visible,
            messages=self.prompt(visible),
            backend=primary,
            backends=backends,
            meters=meters,
            backend_name=self.default_name,
            meter=meter,
            verifier=self.verifier,
            seed=self.seed,
            rng=np.random.default_rng(None if self.seed is None else [self.seed, _stable(problem.id)]),
            deterministic=self.deterministic,
            truncated_answers=self.truncated_answers,
        )
        stop_reason = "done"
        try:
            result = await strategy(visible, ctx)
            if not isinstance(result, Result):
                raise ConfigError(
                    f"strategy {STRATEGIES.name_of(strategy)!r} returned {type(result).__name__}, "
                    "not a Result (its __call__ must return Result.vote / Result.pick / Result(...))"
                )
        except BudgetExhausted as exc:
            stop_reason = f"budget:{exc.resource}"
            result = await ctx.result_so_far()
        except ExceptionGroup as group:  # a strategy's task group: budget stops arrive wrapped
            budget_stops, rest = group.split(BudgetExhausted)
            if budget_stops is None or rest is not None:
                raise
            first = budget_stops.exceptions[0]
            while isinstance(first, ExceptionGroup):
                first = first.exceptions[0]
            stop_reason = f"budget:{getattr(first, 'resource', 'unknown')}"
            result = await ctx.result_so_far()
        if stop_reason != "done":
            result = _with_cut_samples(result, ctx)
        usage = meter.finish()
        by_backend = {name: dataclasses.asdict(m.finish()) for name, m in meters.items()}
        if stop_reason == "done":
            stop_reason = _why_not_done(result, meter, meters)
        return Run(
            problem_id=problem.id,
            question=problem.question,
            gold=problem.answer,
            answer=result.answer,
            chosen=result.chosen,
            candidates=list(result.candidates),
            calls=_calls(ctx),
            strategy=STRATEGIES.name_of(strategy),
            params=params_of(strategy),
            model=self.model or getattr(self.primary, "model", ""),
            backend=self.primary.name,
            backends=self.models(),
            engine=dict(getattr(primary, "engine_info", {}) or {}),
            engines={name: dict(getattr(b, "engine_info", {}) or {}) for name, b in backends.items()},
            seed=self.seed,
            deterministic=self.deterministic,
            budget=dataclasses.asdict(budget),
            usage=dataclasses.asdict(usage),
            budgets={name: dataclasses.asdict(m.budget) for name, m in meters.items()},
            usage_by_backend=by_backend,
            stop_reason=stop_reason,
        )

    def models(self) -> dict[str, str]:
        """Named backends and their models (empty with a single backend)."""
        return {name: str(getattr(b, "model", "") or b.name) for name, b in self.backends.items()}

    def run_sync(self, problem: Problem, strategy: Strategy, budget: Budget | None = None) -> Run:
        """Blocking form of `run` for scripts and notebooks without an event loop."""
        return anyio.run(self.run, problem, strategy, budget)


def _with_cut_samples(result: Result, ctx: Context) -> Result:
    """`result` plus, as cancelled candidates, the samples a budget stop cut that it holds nothing of.

    A strategy's own best-so-far (a tree search's, a composition's) holds the candidates it
    made; the samples its branches had started, decoded something of and made no candidate of
    (`made_into_candidate`) are added, so every sample that started is in the record.
    """
    cut = [
        c
        for c in ctx.completions
        if c.finish_reason == "cancelled" and c.output_tokens and not made_into_candidate(c)
    ]
    if not cut:
        return result
    extra = [to_candidate(c.text, c, Verdict(answer=None)) for c in cut]
    return Result(result.answer, (*result.candidates, *extra), result.chosen)


def _calls(ctx: Context) -> list[Call]:
    """Every sample of the run as a `Call`, when some are no candidate; else none.

    A strategy that assembles its candidates itself (a speculative trace of draft and target
    calls, a thinking trace and its forced answer) leaves its samples out of its candidates: the
    record keeps them here, so its timeline shows each call. When every sample is a candidate
    the candidates say it all.
    """
    if all(made_into_candidate(c) for c in ctx.completions):
        return []
    return [
        Call(
            started=c.started,
            seconds=c.seconds,
            backend=c.backend,
            output_tokens=c.output_tokens,
            prompt_tokens=c.prompt_tokens,
            cached_tokens=c.cached_tokens,
            finish_reason=c.finish_reason,
        )
        for c in ctx.completions
    ]


def _why_not_done(result: Result, meter: Meter, meters: Mapping[str, Meter]) -> str:
    """The stop reason of a run whose strategy returned: ``done``, or what kept it from an answer."""
    for m in (meter, *meters.values()):
        if m.usage.clamped_samples:
            return f"budget:{m.line}output_tokens"
    return "done" if result.answer is not None else "no_answer"


def _check_resettable(backend: Backend) -> PrefixCache:
    """`backend` as one that can empty its prefix cache (a reproducible run needs that)."""
    if not isinstance(backend, PrefixCache):
        raise ConfigError(
            f"a deterministic run empties each engine's prefix cache before each problem, and "
            f"backend {backend.name!r} ({type(backend).__name__}) cannot; use the in-process "
            "engine (backend vllm), or run without deterministic"
        )
    return backend


_TURNS: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = {}


def _turn(backend: Backend) -> asyncio.Lock:
    """The lock that gives deterministic runs on `backend` their turn (one per event loop).

    It is forgotten with `backend`: a wrapper made per request (the proxy's, a leaderboard's
    replay) would otherwise leave one behind each time.
    """
    loop = asyncio.get_running_loop()
    key = id(backend)
    held = _TURNS.get(key)
    if held is None or held[0] is not loop:
        if held is None:
            with contextlib.suppress(TypeError):  # an object without weak references keeps its lock
                weakref.finalize(backend, _TURNS.pop, key, None)
        held = (loop, asyncio.Lock())
        _TURNS[key] = held
    return held[1]


def _routed(backend: Backend, problem_id: str) -> Backend:
    """The backend that serves `problem_id`: its own, for a backend that routes per problem."""
    return backend.for_problem(problem_id) if isinstance(backend, ProblemRouter) else backend


def _stable(text: str) -> int:
    return zlib.crc32(text.encode())
