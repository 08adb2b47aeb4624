"""Structured concurrency: after any stop or error no request of the problem is still decoding,
and the tokens the backend decoded are the tokens charged."""

import ast
import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reasoning import (
    BackendError,
    Budget,
    BudgetExhausted,
    Chunk,
    Context,
    Controller,
    Meter,
    Problem,
    Request,
    Result,
    Sampling,
    ScriptedBackend,
    default_prompt,
)

ROOT = Path(__file__).resolve().parents[1]
LONG = "w " * 200 + "\\boxed{4}"


class Tracking(ScriptedBackend):
    """A scripted backend that knows how many of its streams are still open."""

    def __init__(self, *args: object, failing: str | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.active = 0
        self.failing = failing
        """Prefix of a request that fails after 20 ms (its siblings are decoding by then)."""

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        self.active += 1
        try:
            if self.failing is not None and request.prefix.startswith(self.failing):
                await asyncio.sleep(0.02)
                raise BackendError("this request fails", retryable=True)
            async with contextlib.aclosing(super().stream(request)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            self.active -= 1


@dataclass(frozen=True)
class Three:
    """Three requests at once, each long enough to still be decoding when a sibling stops."""

    max_tokens: int = 50

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        sampling = Sampling(max_tokens=self.max_tokens)
        await ctx.generate_all([ctx.request(sampling, prefix=f"{i} ") for i in range(3)])
        return Result(answer=None)


async def settled(backend: Tracking) -> int:
    """Tokens decoded once anything left running would have decoded more."""
    before = backend.decoded_tokens
    await asyncio.sleep(0.1)
    assert backend.decoded_tokens == before, "a request kept decoding after the run ended"
    return before


@pytest.mark.parametrize("budget", [Budget(calls=2), Budget(output_tokens=100)], ids=["calls", "tokens"])
async def test_a_budget_stop_leaves_no_request_decoding(problem: Problem, budget: Budget) -> None:
    backend = Tracking([LONG], seconds_per_token=0.002)
    run = await Controller(backend, budget=budget).run(problem, Three())
    assert run.stop_reason.startswith("budget:")
    assert backend.active == 0
    assert await settled(backend) == run.usage["output_tokens"]


async def test_a_seconds_stop_leaves_no_request_decoding(problem: Problem) -> None:
    backend = Tracking([LONG], seconds_per_token=[0.002, 0.004, 0.008])
    run = await Controller(backend, budget=Budget(seconds=0.05)).run(problem, Three(max_tokens=200))
    assert run.stop_reason == "budget:seconds"
    assert backend.active == 0
    assert await settled(backend) == run.usage["output_tokens"] > 0


async def test_an_error_in_one_request_cancels_its_siblings(problem: Problem) -> None:
    backend = Tracking([LONG], seconds_per_token=0.002, failing="2 ")
    meter = Meter(Budget())
    ctx = Context(problem=problem, messages=default_prompt(problem), backend=backend, meter=meter)
    requests = [ctx.request(Sampling(max_tokens=200), prefix=f"{i} ") for i in range(3)]
    with pytest.raises(BackendError, match="request fails"):
        await ctx.generate_all(requests)
    assert backend.active == 0
    assert await settled(backend) == meter.usage.output_tokens > 0


async def test_run_all_cancels_siblings_and_raises_the_first_error_unwrapped() -> None:
    from reasoning.concurrency import run_all

    finished: list[str] = []
    cancelled: list[str] = []

    async def sleeper(name: str, seconds: float) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        finished.append(name)
        return name

    async def fails(seconds: float, error: Exception) -> str:
        await asyncio.sleep(seconds)
        raise error

    assert await run_all(sleeper("a", 0.01), sleeper("b", 0)) == ["a", "b"]
    with pytest.raises(BackendError, match="boom"):
        await run_all(sleeper("c", 1), fails(0.01, BackendError("boom")))
    assert cancelled == ["c"] and sorted(finished) == ["a", "b"]
    # A real error wins over a budget stop that happened at the same time.
    with pytest.raises(BackendError, match="real"):
        await run_all(fails(0, BudgetExhausted("calls", 1, 1)), fails(0, BackendError("real")))
    with pytest.raises(BudgetExhausted):
        await run_all(fails(0, BudgetExhausted("calls", 1, 1)), sleeper("d", 1))
    assert await run_all() == []


def test_the_package_starts_no_unstructured_task() -> None:
    """No ``asyncio.gather`` / ``create_task`` / ``ensure_future``: siblings outlive a failure there."""
    banned = {"gather", "create_task", "ensure_future"}
    allowed = {
        # Runs inside the engine's worker (one-token probe reads of one hidden-state call).
        "reasoning/backends/hidden_states.py",
        # A finished run's grade is shielded from a cancellation so the run is still stored (the
        # grade is bounded: GRADE_SECONDS an answer).
        "evals/run.py",
        # The proxy's shutdown watcher, cancelled when uvicorn's shutdown returns.
        "reasoning/cli/proxy.py",
    }
    problems = []
    for folder in ("reasoning", "strategies", "verifiers", "probes", "evals"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = str(path.relative_to(ROOT))
            if name in allowed:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr in banned
                    and isinstance(node.value, ast.Name)
                    and node.value.id in ("asyncio", "loop")
                ):
                    problems.append(f"{name}:{node.lineno}: asyncio.{node.attr}")
                if isinstance(node, ast.ImportFrom) and node.module == "asyncio":
                    problems += [f"{name}:{node.lineno}: {a.name}" for a in node.names if a.name in banned]
    assert not problems, "use reasoning.concurrency (run_all, task_group):\n" + "\n".join(problems)
