"""Shared machinery of the draft/target speculative-reasoning strategies (spec-reason, spec-thinking).

Both let a small *draft* model write most of a reasoning trace and bring in a large *target*
model for some of it. Each call goes to its named backend through the `Context`
(``ctx.generate(request, backend=...)``), so every model's tokens, calls and time land on its
own meter (``run.usage_by_backend``). A trace is one text that only ever grows: every request
continues it byte for byte, so the prefix cache serves everything but the newest piece.

`Speculative` holds what both share: the pair's backend names, ``n`` traces run concurrently
(`Context.run_all`) and then majority-voted (`Result.vote`: self-consistency
over speculative traces), the step sampling, and the final answer. `Tally` counts what one
trace spent per role; `Speculative.candidate` turns a finished trace into its record.

INFERRED (documented, not from the papers): when a trace ends without a stated answer (no
``\\boxed{}`` and no ``Answer:`` line: cut by its token budget, stopped by the repetition guard,
or ended by the model without one) the *target* writes the answer continuation, greedily, at most
``answer_tokens`` tokens after ``"Final Answer: \\boxed{"`` (`ANSWER_PHRASE`); ``answer_tokens=0``
leaves such a trace unanswered. On a budget stop the result is the vote over the traces that had
finished (their steps were recorded as samples, but steps are not solutions).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar

from reasoning import Candidate, Completion, ConfigError, Context, Request, Result, Sampling
from reasoning.strategies.step_tree import ANSWER_PHRASE, FORCED_ANSWER_TOKENS, is_final_step

__all__ = ["Speculative", "Tally", "ended_text"]


def ended_text(completion: Completion) -> bool:
    """True when the model ended its text (end of sequence), not a stop string or a token cap."""
    return completion.finish_reason == "stop" and completion.stop_string is None


@dataclass
class Tally:
    """What one speculative trace spent, per role (``draft`` / ``target``)."""

    tokens: Counter[str] = field(default_factory=Counter)
    """Tokens decoded, discarded ones included (rejected steps, judge tokens, dropped peeks)."""
    calls: Counter[str] = field(default_factory=Counter)
    """Requests sent."""
    prompt_tokens: int = 0
    """Prompt tokens of all its requests (re-sent prefixes included)."""
    cached_tokens: int = 0
    """Of those, the ones the prefix cache served."""
    started: float = field(default_factory=time.monotonic)
    """When the trace started (`time.monotonic`)."""
    at: float = 0.0
    """When the trace started on the run's clock (``ctx.meter.elapsed``): its candidate's ``started``."""

    async def call(self, ctx: Context, request: Request, backend: str, role: str) -> Completion:
        """One sample of `request` on the named `backend` (recorded by the context), counted as `role`."""
        [completion] = await ctx.generate(request, backend=backend)
        self.tokens[role] += completion.output_tokens
        self.calls[role] += 1
        self.prompt_tokens += completion.prompt_tokens
        self.cached_tokens += completion.cached_tokens
        return completion


@dataclass(frozen=True, kw_only=True)
class Speculative:
    """Base of the draft/target strategies: the pair, ``n`` voted traces, sampling, final answer."""

    label: ClassVar[str] = "speculative"
    """Strategy name used in error messages."""
    independent_samples: ClassVar[bool] = True
    """Its candidates are independent traces of one prompt: pass@k and maj@k hold on them."""

    draft: str = "draft"
    """Named backend of the small model that writes most of the reasoning."""
    target: str = "target"
    """Named backend of the large model that judges, rewrites or guides."""
    n: int = 1
    """Independent speculative traces, run concurrently and majority-voted."""
    answer_tokens: int = FORCED_ANSWER_TOKENS
    """Most tokens of the target's answer to a trace that ended without one (0: none)."""
    temperature: float = 0.6
    """Sampling temperature of both models."""
    top_p: float = 0.95
    """Nucleus mass of both models."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"{self.label}: n must be >= 1, got {self.n}")
        if self.answer_tokens < 0:
            raise ConfigError(f"{self.label}: answer_tokens must be >= 0, got {self.answer_tokens}")
        if not self.draft or not self.target:
            raise ConfigError(f"{self.label}: draft and target must name backends")
        self.sampling(1)

    def sampling(self, max_tokens: int, stop: tuple[str, ...] = (), top_k: int = 0) -> Sampling:
        """The sampling of one continuation of at most `max_tokens` tokens."""
        return Sampling(
            temperature=self.temperature, top_p=self.top_p, top_k=top_k, max_tokens=max_tokens, stop=stop
        )

    async def vote(self, ctx: Context, trace: Callable[[Tally], Awaitable[Candidate]]) -> Result:
        """Run ``n`` traces concurrently and vote; a budget stop votes over the finished ones.

        Raises:
            ConfigError: The run has no backend named `draft` or `target`.
        """
        missing = [name for name in (self.draft, self.target) if name not in ctx.backends]
        if missing:
            raise ConfigError(
                f"{self.label} needs backends named {self.draft!r} and {self.target!r} (missing: "
                f"{', '.join(missing)}); run with --model {self.draft}=... --model {self.target}=..."
            )
        finished: list[Candidate] = []

        async def best_so_far() -> Result:
            return Result.vote(finished)

        async def one() -> Candidate:
            candidate = await trace(Tally(at=ctx.meter.elapsed))
            finished.append(candidate)
            return candidate

        ctx.on_stop(best_so_far)
        return Result.vote(await ctx.run_all(*(one() for _ in range(self.n))))

    async def candidate(
        self, ctx: Context, tally: Tally, text: str, finish: str, scores: dict[str, float]
    ) -> Candidate:
        """The record of a finished trace, its answer written by the target when it has none.

        `scores` gains ``forced_answer`` (1: the target wrote the answer) and each role's
        ``<role>_tokens`` and ``<role>_calls``; ``output_tokens`` counts every token decoded for
        the trace by either model.
        """
        forced = self.answer_tokens > 0 and not is_final_step(text)
        if forced:
            head = text.removesuffix("\n\n") + ANSWER_PHRASE
            request = ctx.request(Sampling(temperature=0.0, max_tokens=self.answer_tokens), head)
            text = head + (await tally.call(ctx, request, self.target, "target")).text
        [verdict] = await ctx.verify([text])
        spent = {f"{role}_tokens": float(tally.tokens[role]) for role in ("draft", "target")}
        spent |= {f"{role}_calls": float(tally.calls[role]) for role in ("draft", "target")}
        return Candidate(
            text=text,
            answer=verdict.answer,
            score=verdict.score,
            output_tokens=sum(tally.tokens.values()),
            finish_reason=finish,
            prompt_tokens=tally.prompt_tokens,
            cached_tokens=tally.cached_tokens,
            seconds=time.monotonic() - tally.started,
            started=tally.at,
            scores={**scores, **spent, "forced_answer": float(forced)},
        )
