"""Budgets, proven: every registered strategy under random budgets, finish orders, delays, failures.

Each example draws a world (what the scripted backend answers, each sample's speed, which call
fails and after how many chunks, a wall-clock line that cancels mid-stream) and budget lines for
the run and for named backends, solves one problem through `reasoning.evals.run.solve` and checks:

* no budget line is ever exceeded (the run's and each named backend's);
* the tokens charged equal the tokens the backends decoded, cancelled ones included (plus the one
  token a hidden-state read or a prompt scoring is documented to charge: their forward pass);
* the record is complete: every candidate has its text, finish reason and tokens; the stop reason
  is ``done`` (with an answer), ``no_answer``, ``budget:<line>`` or the error row's ``error``; the
  answer is None or a candidate's; an error is never an answer; and no request outlives its problem.

Compositions (`COMPOSITIONS`: inner runs that call the engine concurrently) are held to the same
properties and one more: a budget that pays for one sample never ends with nothing decoded.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_atts import DRAFT, TARGET, by_word, save_calibration
from test_probes import hand_probe, states

import reasoning.strategies  # noqa: F401  (registers the built-in strategies)
from reasoning import (
    STRATEGIES,
    BackendError,
    Budget,
    Controller,
    Problem,
    Request,
    Sampling,
    ScriptedBackend,
)
from reasoning.backend import Chunk
from reasoning.compose import build
from reasoning.evals.run import solve
from reasoning.record import Run

settings.register_profile("properties", max_examples=20, deadline=None, derandomize=True)
settings.register_profile("properties-long", max_examples=200, deadline=None)
PROFILE = os.environ.get("REASONING_PROPERTIES", "properties")
"""Small and fixed by default; ``REASONING_PROPERTIES=properties-long`` for a longer, random hunt."""

LINES = ("output_tokens", "prompt_tokens", "calls")
"""Budget lines checked (wall seconds are drawn too, to cancel mid-stream, but not asserted)."""

TEXTS = (
    "Let x be 2.\n\nThen x+x is 4.\n\nSo \\boxed{4}",
    "\\boxed{5}",
    "a b c d e f g h i j",
    "9",
    "Yes so \\boxed{4}",
    "Wait.\n\nthe answer is \\boxed{7}\n\nmore words here",
    "",
)
"""What the scripted models answer (drawn per sample): steps, answers, no answer, a judge digit, nothing."""

PROBLEM = Problem("p1", "What is 2+2?", "4")


# -- the backends: scripted, with random speeds, and a wrapper that fails on chosen calls --------


class Flaky:
    """A backend that forwards to a `ScriptedBackend` and fails one chosen call mid-stream.

    The failure is a retryable `BackendError` raised after `after` chunks of the `call`-th
    stream (0-based), so every token the inner backend decoded reached the caller first.
    """

    def __init__(self, inner: ScriptedBackend, call: int | None, after: int) -> None:
        self.inner = inner
        self.fail_call = call
        self.after = after
        self.calls = 0
        self.open = 0
        """Streams opened and not yet closed: 0 once a problem has ended."""
        self.failed = False
        self.forward_passes = 0
        """Hidden-state reads and prompt scorings that returned (each is charged one token)."""

    @property
    def name(self) -> str:
        return self.inner.name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.inner, attribute)

    def prompt_tokens(self, request: Request) -> int:
        return self.inner.prompt_tokens(request)

    async def hidden_states(self, request: Request, layers: Any, positions: Any = (-1,)) -> Any:
        states = await self.inner.hidden_states(request, layers, positions)
        self.forward_passes += 1
        return states

    async def prompt_logprobs(self, request: Request) -> Any:
        scored = await self.inner.prompt_logprobs(request)
        self.forward_passes += 1
        return scored

    async def step_rewards(self, request: Request) -> Any:
        return await self.inner.step_rewards(request)

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        number = self.calls
        self.calls += 1
        self.open += 1
        try:
            if number == self.fail_call and self.after == 0:
                self.failed = True
                raise BackendError("scripted failure (connection reset)", retryable=True, backend=self.name)
            sent = 0
            async with contextlib.aclosing(self.inner.stream(request)) as chunks:
                async for chunk in chunks:
                    yield chunk
                    sent += 1
                    if number == self.fail_call and sent == self.after:
                        self.failed = True
                        raise BackendError("scripted failure mid-stream", retryable=True, backend=self.name)
        finally:
            self.open -= 1


@dataclass(frozen=True)
class World:
    """One example's randomness."""

    texts: tuple[int, ...]
    """Index into `TEXTS` of each sample's answer (cycling over the samples by number)."""
    speeds: tuple[float, ...]
    """Seconds per token of each sample (cycling): the finish order."""
    fail_call: int | None
    """The call (0-based, per backend) that fails; None: none does."""
    fail_after: int
    """Chunks it streams before failing."""
    budget: Budget
    """The run's budget."""
    named: dict[str, Budget] = field(default_factory=dict)
    """Named backends' budget lines (used by draft/target strategies)."""


def budgets() -> st.SearchStrategy[Budget]:
    small = st.none() | st.integers(1, 60)
    return st.builds(
        Budget,
        output_tokens=small,
        prompt_tokens=st.none() | st.integers(1, 400),
        calls=st.none() | st.integers(1, 8),
        seconds=st.none() | st.none() | st.none() | st.floats(0.002, 0.05),
    )


worlds = st.builds(
    World,
    texts=st.lists(st.integers(0, len(TEXTS) - 1), min_size=1, max_size=6).map(tuple),
    speeds=st.lists(st.sampled_from([0.0, 0.0, 0.0005, 0.001, 0.002]), min_size=1, max_size=4).map(tuple),
    fail_call=st.none() | st.integers(0, 3),
    fail_after=st.integers(0, 3),
    budget=budgets(),
    named=st.dictionaries(
        st.sampled_from(["draft", "target"]),
        st.builds(Budget, output_tokens=st.none() | st.integers(1, 40), calls=st.none() | st.integers(1, 6)),
        max_size=2,
    ),
)


def script_of(world: World) -> Callable[[Request, int], str]:
    def script(request: Request, number: int) -> str:
        return TEXTS[world.texts[number % len(world.texts)]]

    return script


# -- every strategy, with the scripted fakes it needs -------------------------------------------


@dataclass(frozen=True)
class Setup:
    """How one strategy is run: its spec and the backends it needs."""

    spec: str
    named: bool = False
    """Backends named draft and target (else one unnamed backend)."""
    hidden: bool = False
    """The policy gives (fake) hidden states."""
    scored: bool = False
    """The target scores prompts (fake prompt log-probabilities)."""


SETUPS: dict[str, Setup] = {
    "a-star": Setup("a-star(k=2, budget=4, step_tokens=6, max_steps=3)"),
    "adaptive-sc": Setup("adaptive-sc(max_samples=4, batch=2, max_tokens=8)"),
    "arbitrage": Setup("arbitrage(router=judge, step_tokens=6, max_steps=3, max_tokens=16)", named=True),
    "atts": Setup("atts(calibration={cal}, n=2, turns=3)", named=True, scored=True),
    "beam": Setup("beam(n=4, width=2, step_tokens=6, max_steps=3)"),
    "best-of-n": Setup("best-of-n(n=3, max_tokens=8)"),
    "budget-forcing": Setup("budget-forcing(max_tokens=8, answer_tokens=4, extend=1)"),
    "deepconf": Setup("deepconf(budget=4, warmup=2, batch=2, window=4, max_tokens=8)"),
    "difficulty": Setup(
        "difficulty(probe={difficulty}, easy=single(max_tokens=8), hard=self-consistency(n=2, max_tokens=8))",
        hidden=True,
    ),
    "dvts": Setup("dvts(n=4, width=2, step_tokens=6, max_steps=3)"),
    "dynasor": Setup("dynasor(max_tokens=16, chunk=4, probe_tokens=4)"),
    "early-exit": Setup("early-exit(probe={exit}, n=2, exit_tokens=4, max_tokens=12)", hidden=True),
    "first-finish": Setup("first-finish(n=3, max_tokens=8)"),
    "genrm": Setup("genrm(solutions=3, verifications=2, max_tokens=8, verify_max_tokens=8)"),
    "longest-finish": Setup("longest-finish(n=3, k=2, max_tokens=8)"),
    "lt-prune": Setup("lt-prune(n=3, keep=1, horizon=8, segment=4, max_tokens=12)", hidden=True),
    "lt-select": Setup("lt-select(n=3, segment=4, max_tokens=8)", hidden=True),
    "particle-filtering": Setup("particle-filtering(particles=3, step_tokens=6, max_steps=3)"),
    "pdr": Setup("pdr(rounds=2, drafts=2, workspace_tokens=8, k=2, max_tokens=8)"),
    "plan-and-budget": Setup(
        "plan-and-budget(budget=32, plan_tokens=8, answer_tokens=4, min_tokens=2, max_subquestions=2)"
    ),
    "self-consistency": Setup("self-consistency(n=3, max_tokens=8)"),
    "self-eval": Setup("self-eval(max_samples=3, batch=2, prune_at=2, keep=1, max_tokens=8)"),
    "self-refine": Setup("self-refine(rounds=2, feedback_tokens=4, max_tokens=8)"),
    "short-m@k": Setup("short-m@k(k=3, m=2, max_tokens=8)"),
    "single": Setup("single(max_tokens=8)"),
    "solve-detect-verify": Setup(
        "solve-detect-verify(max_tokens=12, fast=2, fast_tokens=6, slow_tokens=8, cues=[wait, then])"
    ),
    "spec-reason": Setup("spec-reason(token_budget=24, step_tokens=6)", named=True),
    "spec-thinking": Setup(
        "spec-thinking(max_tokens=24, segment_tokens=8, peek_tokens=4, verify_tokens=4, recap_tokens=4, "
        "recap_growth=0, max_recap_tokens=8, neg_limit=2, neg_growth=0, max_neg_limit=4)",
        named=True,
    ),
    "sr": Setup("sr(rounds=2, workspace_tokens=8, max_tokens=8)"),
    "trimr": Setup("trimr(segment=paragraph, max_tokens=24, answer_tokens=4)", named=True),
}
"""Every strategy covered, by registered name."""

EXCLUDED: dict[str, str] = {}
"""Registered strategies not covered here, with the reason (none today)."""


def test_every_registered_strategy_is_covered_or_excluded_with_a_reason() -> None:
    names = set(STRATEGIES.names())
    assert set(SETUPS) | set(EXCLUDED) == names
    assert not set(SETUPS) & set(EXCLUDED)
    assert all(EXCLUDED.values())


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("artefacts")
    cal = save_calibration(folder / "cal.json", {"a": [1.5, 2.0, 3.0], "b": [1.2, 2.5]})
    return {
        "cal": str(cal),
        "exit": hand_probe(folder, kind="exit"),
        "difficulty": hand_probe(folder, kind="difficulty"),
    }


def backends_for(setup: Setup, world: World) -> tuple[dict[str, Flaky], Controller]:
    def scripted(model: str, **options: Any) -> ScriptedBackend:
        return ScriptedBackend(script_of(world), seconds_per_token=world.speeds, model=model, **options)

    hidden = {"hidden_states": states} if setup.hidden else {}
    if setup.named:
        draft = scripted(DRAFT, name="draft", **hidden)
        target = scripted(TARGET, name="target", prompt_logprob=by_word if setup.scored else None)
        # The failing call is the draft's (the one every draft/target strategy calls first).
        wrapped = {
            "draft": Flaky(draft, world.fail_call, world.fail_after),
            "target": Flaky(target, None, 0),
        }
        return wrapped, Controller(dict(wrapped), budgets=world.named)  # type: ignore[arg-type]
    one = Flaky(scripted("scripted", **hidden), world.fail_call, world.fail_after)
    return {"": one}, Controller(one)  # type: ignore[arg-type]


def check(run: Run, setup: Setup, world: World, wrapped: dict[str, Flaky]) -> None:
    event(f"stop: {run.stop_reason.split('.')[0]}")
    if run.usage.get("cancelled_samples"):
        event("samples cancelled")
    # No request outlives its problem, whatever happened.
    assert all(b.open == 0 for b in wrapped.values())
    assert run.problem_id == PROBLEM.id
    if run.stop_reason == "error":
        assert any(b.failed for b in wrapped.values()), run.error
        assert run.error and "BackendError" in run.error
        assert run.answer is None and run.candidates == [] and run.chosen is None
        return
    assert run.error is None
    # Budget lines: the run's and each named backend's.
    for line in LINES:
        limit = run.budget[line]
        assert limit is None or run.usage[line] <= limit, (line, run.usage, run.budget)
    for name, lines in run.budgets.items():
        for line in LINES:
            limit = lines[line]
            spent = run.usage_by_backend[name][line]
            assert limit is None or spent <= limit, (name, line, spent, limit)

    # Tokens charged = tokens decoded (+1 per hidden-state read or prompt scoring that returned:
    # their forward pass; one cancelled by a sibling's budget stop decoded nothing).
    def charged(b: Flaky) -> int:
        return b.inner.decoded_tokens + b.forward_passes

    assert run.usage["output_tokens"] == sum(charged(b) for b in wrapped.values())
    for name, b in wrapped.items():
        if name:
            assert run.usage_by_backend[name]["output_tokens"] == charged(b), name
            # Every call that reached the backend is charged (a stream the wall clock stopped
            # before its first step is charged too, never sent: calls may count one more).
            reached = b.calls + len(b.inner.hidden_requests) + len(b.inner.scored_requests)
            assert reached + len(b.inner.reward_requests) <= run.usage_by_backend[name]["calls"]
    assert run.usage["cancelled_tokens"] <= run.usage["output_tokens"]
    # The record is complete, and "done" always comes with an answer.
    assert run.stop_reason in ("done", "no_answer") or run.stop_reason.startswith("budget:")
    assert (run.stop_reason == "done") <= (run.answer is not None), run.stop_reason
    if run.stop_reason.startswith("budget:"):
        line = run.stop_reason.removeprefix("budget:")
        owner, _, bare = line.rpartition(".")
        assert bare in (*LINES, "seconds") and owner in ("", *run.budgets), line
    for candidate in run.candidates:
        assert isinstance(candidate.text, str)
        # A sample's own reason, or the one a strategy gives a trace it ended itself (budget
        # forcing's ``forced``, an early ``exit``, SpecReason's ``token_budget``, ...).
        assert isinstance(candidate.finish_reason, str) and candidate.finish_reason
        assert isinstance(candidate.output_tokens, int) and candidate.output_tokens >= 0
        assert candidate.finish_reason != "cancelled" or candidate.answer is None
    answers = {c.answer for c in run.candidates if c.answer is not None}
    assert run.answer is None or run.answer in answers, (run.answer, answers)
    if run.chosen is not None:
        assert 0 <= run.chosen < len(run.candidates)
        assert run.candidates[run.chosen].answer == run.answer
    assert not any("Error" in (c.answer or "") for c in run.candidates)
    assert math.isfinite(run.usage["seconds"])


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_budgets_hold_tokens_add_up_and_records_are_complete(name: str, artefacts: dict[str, str]) -> None:
    setup = SETUPS[name]
    strategy = build(setup.spec.format(**artefacts))

    @settings(settings.get_profile(PROFILE), suppress_health_check=[HealthCheck.too_slow])
    @given(world=worlds)
    def prop(world: World) -> None:
        wrapped, controller = backends_for(setup, world)

        async def go() -> list[Run]:
            return await solve([PROBLEM], controller, strategy, budget=world.budget)

        [run] = anyio.run(go)
        check(run, setup, world, wrapped)

    prop()


COMPOSITIONS = {
    "sc-of-single": "self-consistency(n=3, inner=single(max_tokens=8))",
    "sc-of-first-finish": "self-consistency(n=2, inner=first-finish(n=2, max_tokens=8))",
    "sc-of-budget-forcing": (
        "self-consistency(n=2, inner=budget-forcing(max_tokens=8, answer_tokens=4, extend=1))"
    ),
    "pdr-of-sc": (
        "pdr(rounds=2, drafts=2, workspace_tokens=8, k=2, inner=self-consistency(n=2, max_tokens=8))"
    ),
}
"""Compositions whose inner runs reach the meter together (and so share what is left)."""

ONE_SAMPLE = 8
"""The most tokens one sample of `COMPOSITIONS` asks for: a budget of this pays for one."""


@pytest.mark.parametrize("spec", sorted(COMPOSITIONS.values()))
def test_compositions_hold_their_budget_and_a_budget_for_one_sample_decodes(spec: str) -> None:
    strategy = build(spec)
    setup = Setup(spec)

    @settings(settings.get_profile(PROFILE), suppress_health_check=[HealthCheck.too_slow])
    @given(world=worlds, spendable=st.integers(ONE_SAMPLE, 80))
    def prop(world: World, spendable: int) -> None:
        # Every sample has something to say (a non-empty text), so a granted call decodes.
        texts = tuple(i for i in world.texts if TEXTS[i]) or (0,)
        world = World(texts, world.speeds, world.fail_call, world.fail_after, world.budget)
        wrapped, controller = backends_for(setup, world)

        async def go() -> list[Run]:
            return await solve([PROBLEM], controller, strategy, budget=world.budget)

        [run] = anyio.run(go)
        check(run, setup, world, wrapped)
        # Only the output line, at least one sample's worth, and no failure: something decodes.
        calm = World(texts, world.speeds, None, 0, Budget(output_tokens=spendable))
        wrapped, controller = backends_for(setup, calm)

        async def calm_run() -> list[Run]:
            return await solve([PROBLEM], controller, strategy, budget=calm.budget)

        [run] = anyio.run(calm_run)
        check(run, setup, calm, wrapped)
        assert run.usage["output_tokens"] > 0, (spendable, run.stop_reason)
        assert run.candidates, run.stop_reason

    prop()


def test_the_failing_wrapper_fails_where_told() -> None:
    """The fault injector itself: a failing call raises after the chunks it was told to send."""
    inner = ScriptedBackend(["a b c"])
    flaky = Flaky(inner, call=0, after=2)
    request = Request((), Sampling(max_tokens=5))

    async def drain() -> list[str]:
        got = []
        with pytest.raises(BackendError) as info:
            async for chunk in flaky.stream(request):
                got.append(chunk.text)
        assert info.value.retryable
        return got

    assert anyio.run(drain) == ["a ", "b "] and inner.decoded_tokens == 2 and flaky.open == 0
