"""The Strategy and Verifier seams, and the Context through which strategies act.

A strategy is a frozen dataclass with an async ``__call__(problem, ctx) -> Result``. It
touches the world only through its `Context`: ``ctx.stream`` / ``ctx.generate`` for the
model (every call is metered against the budget and recorded), ``ctx.verify`` for answers
and scores, ``ctx.rng`` for randomness.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from reasoning.answers import extract_answer, normalize_answer
from reasoning.backend import (
    Backend,
    Chunk,
    Completion,
    Message,
    Request,
    Sampling,
    TokenCounter,
    collect_stream,
)
from reasoning.budget import Meter, Reservation
from reasoning.errors import BudgetExhausted
from reasoning.problem import Problem
from reasoning.record import Candidate

__all__ = ["Context", "Result", "Strategy", "Verdict", "Verifier", "request_seed"]


@dataclass(frozen=True)
class Verdict:
    """What a verifier says about one candidate text."""

    answer: str | None
    """Normalised final answer, None when the text has none (it then never wins a vote)."""
    score: float = 0.0
    """Quality score, higher is better."""


class Verifier(Protocol):
    """Reads candidates' answers and scores them; never sees the gold answer."""

    async def __call__(self, problem: Problem, texts: Sequence[str]) -> list[Verdict]:
        """Return one verdict per text, in order."""
        ...


class ExtractAnswer:
    """The fallback verifier: extract and normalise the final answer, score 1 if present."""

    async def __call__(self, problem: Problem, texts: Sequence[str]) -> list[Verdict]:
        """Extract each text's answer."""
        out = []
        for text in texts:
            answer = extract_answer(text)
            key = normalize_answer(answer) if answer else None
            out.append(Verdict(answer=key, score=1.0 if key else 0.0))
        return out


@dataclass(frozen=True)
class Result:
    """What a strategy returns: its answer and every candidate it considered."""

    answer: str | None
    """The final answer (normalised), None when the strategy found none."""
    candidates: tuple[Candidate, ...] = ()
    """All candidates, in production order."""
    chosen: int | None = None
    """Index into `candidates` of the one the answer came from."""


class Strategy(Protocol):
    """A test-time reasoning method.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Greedy:
        ...     async def __call__(self, problem, ctx):
        ...         [completion] = await ctx.generate(ctx.request(Sampling(temperature=0)))
        ...         [candidate] = await ctx.candidates([completion])
        ...         return Result(candidate.answer, (candidate,), 0)
    """

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Solve `problem` using only `ctx`."""
        ...


@dataclass
class Context:
    """The only door from a strategy to the world (model, verifier, budget, randomness)."""

    problem: Problem
    messages: tuple[Message, ...]
    backend: Backend
    meter: Meter
    verifier: Verifier = field(default_factory=ExtractAnswer)
    seed: int | None = 0
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    completions: list[Completion] = field(default_factory=list)
    """Every sample returned so far (the controller's best-so-far on a budget stop)."""
    _requests: int = 0

    def request(self, sampling: Sampling, prefix: str = "") -> Request:
        """A request for this problem's messages, continuing `prefix` when given."""
        return Request(self.messages, sampling, prefix)

    def _seeded(self, request: Request) -> Request:
        self._requests += 1
        if self.seed is None or request.sampling.seed is not None:
            return request
        return request.with_sampling(seed=request_seed(self.seed, self.problem.id, self._requests))

    def _reserve(self, request: Request) -> Reservation:
        count = 0
        if self.meter.budget.prompt_tokens is not None and isinstance(self.backend, TokenCounter):
            count = self.backend.prompt_tokens(request)
        return self.meter.reserve(request, count)

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        """Stream `request` under the budget; closing the iterator cancels it in the engine.

        Raises:
            BudgetExhausted: before sending, when the call cannot fit; or mid-stream when the
                wall-clock line runs out (the request is cancelled first).
        """
        request = self._seeded(request)
        reservation = self._reserve(request)
        request = replace(request, sampling=reservation.sampling)
        decoded = cached = 0
        prompt_counted = reservation.prompt_tokens > 0
        try:
            async with contextlib.aclosing(self.backend.stream(request)) as chunks:
                while True:
                    left = self.meter.seconds_left
                    try:
                        if left is None:
                            chunk = await anext(chunks)
                        else:
                            chunk = await asyncio.wait_for(anext(chunks), max(left, 0.0))
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise BudgetExhausted(
                            "seconds", self.meter.elapsed, self.meter.budget.seconds or 0
                        ) from None
                    decoded += chunk.tokens
                    cached = max(cached, chunk.cached_tokens)
                    if not prompt_counted and chunk.prompt_tokens:
                        self.meter.usage.prompt_tokens += chunk.prompt_tokens
                        prompt_counted = True
                    yield chunk
        finally:
            self.meter.settle(reservation, decoded, cached)

    async def generate(self, request: Request) -> list[Completion]:
        """Run `request` to the end; return its samples (recorded for the run)."""
        completions = await collect_stream(self.stream(request), request)
        self.completions.extend(completions)
        self.meter.usage.cancelled_samples += sum(c.finish_reason == "cancelled" for c in completions)
        return completions

    async def generate_all(self, requests: Sequence[Request]) -> list[list[Completion]]:
        """Run several requests concurrently so the engine batches them."""
        return list(await asyncio.gather(*(self.generate(r) for r in requests)))

    async def verify(self, texts: Sequence[str]) -> list[Verdict]:
        """Answers and scores of `texts` from the run's verifier."""
        verdicts = await self.verifier(self.problem, texts)
        if len(verdicts) != len(texts):
            raise ValueError("verifier returned a different number of verdicts than texts")
        return verdicts

    async def candidates(self, completions: Sequence[Completion], prefix: str = "") -> list[Candidate]:
        """Turn completions into verified candidate records."""
        texts = [prefix + c.text for c in completions]
        verdicts = await self.verify(texts)
        return [to_candidate(t, c, v) for t, c, v in zip(texts, completions, verdicts, strict=True)]


def request_seed(run_seed: int, problem_id: str, number: int) -> int:
    """Seed of the `number`-th request (1-based) a strategy sends for a problem."""
    return zlib.crc32(f"{run_seed}:{problem_id}:{number}".encode()) & 0x7FFFFFFF


def to_candidate(text: str, completion: Completion, verdict: Verdict) -> Candidate:
    """Build a candidate record from a completion and its verdict."""
    mean = None
    if completion.logprobs:
        mean = float(np.mean([t.logprob for t in completion.logprobs]))
    return Candidate(
        text=text,
        answer=verdict.answer,
        score=verdict.score,
        output_tokens=completion.output_tokens,
        finish_reason=completion.finish_reason,
        prompt_tokens=completion.prompt_tokens,
        cached_tokens=completion.cached_tokens,
        seconds=completion.seconds,
        mean_logprob=mean,
    )
