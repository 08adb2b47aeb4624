"""Budgets with units, and the one meter that enforces them.

A `Budget` is a frozen spec: output tokens, prompt tokens, model calls and wall seconds, each
optional. A `Meter` enforces it in one place, before spending: every backend call goes
through `Meter.reserve`, which raises `BudgetExhausted` when the call cannot fit and
otherwise *clamps* the call's ``max_tokens`` so that its worst case fits in what is left.
Reservations are held until the call ends, so concurrent calls cannot overspend together:
a strategy cannot exceed its budget by construction. `Meter.settle` replaces the reservation
with what was actually spent.

Example:
    >>> from reasoning import Budget, Meter, Message, Request, Sampling
    >>> meter = Meter(Budget(output_tokens=100))
    >>> req = Request((Message("user", "hi"),), Sampling(max_tokens=80, n=2))
    >>> meter.reserve(req, prompt_tokens=5).max_tokens   # 2 samples x 50 tokens fit
    50
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from reasoning.backend import Request, Sampling
from reasoning.errors import BudgetExhausted, ConfigError

__all__ = ["Budget", "Meter", "Reservation", "Usage"]


@dataclass(frozen=True)
class Budget:
    """Spending limits of one problem; None means unlimited."""

    output_tokens: int | None = None
    """Tokens decoded, summed over all samples."""
    prompt_tokens: int | None = None
    """Prompt tokens submitted (including those the prefix cache serves)."""
    calls: int | None = None
    """Requests sent to the backend (a request with n samples is one call)."""
    seconds: float | None = None
    """Wall-clock seconds from the start of the problem."""

    def __post_init__(self) -> None:
        for name in ("output_tokens", "prompt_tokens", "calls", "seconds"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"budget {name} must be > 0, got {value}")

    @property
    def unlimited(self) -> bool:
        """True when no line is set."""
        return all(v is None for v in (self.output_tokens, self.prompt_tokens, self.calls, self.seconds))


@dataclass
class Usage:
    """What a run spent."""

    output_tokens: int = 0
    """Tokens decoded (all samples, including ones later cancelled)."""
    prompt_tokens: int = 0
    """Prompt tokens submitted."""
    cached_tokens: int = 0
    """Prompt tokens served by the prefix cache."""
    calls: int = 0
    """Requests sent."""
    samples: int = 0
    """Samples requested (sum of n)."""
    cancelled_samples: int = 0
    """Samples cancelled before they finished."""
    cancelled_tokens: int = 0
    """Tokens decoded for samples that were then cancelled (work whose result was dropped)."""
    seconds: float = 0.0
    """Wall time."""


@dataclass(frozen=True)
class Reservation:
    """A granted call: the clamped sampling and the tokens held for it."""

    sampling: Sampling
    """The sampling to send (``max_tokens`` possibly lowered to fit)."""
    output_tokens: int
    """Output tokens held until `Meter.settle`."""
    prompt_tokens: int
    """Prompt tokens charged."""

    @property
    def max_tokens(self) -> int:
        """The granted ``max_tokens`` per sample."""
        return self.sampling.max_tokens


@dataclass
class Meter:
    """Live accounting against a `Budget`; the only place budgets are enforced."""

    budget: Budget
    clock: Callable[[], float] = time.monotonic
    usage: Usage = field(default_factory=Usage)
    line: str = ""
    """Prefix of this meter's budget lines in errors (``draft.`` for a named backend's)."""
    _held: int = 0
    _start: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._start = self.clock()

    @property
    def elapsed(self) -> float:
        """Seconds since the meter started."""
        return self.clock() - self._start

    @property
    def seconds_left(self) -> float | None:
        """Wall seconds left, or None when unlimited."""
        if self.budget.seconds is None:
            return None
        return self.budget.seconds - self.elapsed

    @property
    def output_tokens_left(self) -> int | None:
        """Output tokens neither spent nor held, or None when unlimited."""
        if self.budget.output_tokens is None:
            return None
        return self.budget.output_tokens - self.usage.output_tokens - self._held

    def reserve(self, request: Request, prompt_tokens: int = 0) -> Reservation:
        """Grant `request` or raise `BudgetExhausted`; clamp its ``max_tokens`` to fit.

        Args:
            request: The call about to be sent.
            prompt_tokens: Its prompt length (0 when the backend cannot count tokens).
        """
        b, u = self.budget, self.usage
        if b.seconds is not None and self.elapsed >= b.seconds:
            raise BudgetExhausted(self.line + "seconds", self.elapsed, b.seconds)
        if b.calls is not None and u.calls + 1 > b.calls:
            raise BudgetExhausted(self.line + "calls", u.calls, b.calls)
        if b.prompt_tokens is not None and u.prompt_tokens + prompt_tokens > b.prompt_tokens:
            raise BudgetExhausted(self.line + "prompt_tokens", u.prompt_tokens, b.prompt_tokens)
        sampling = request.sampling
        left = self.output_tokens_left
        if left is not None:
            per_sample = min(sampling.max_tokens, left // sampling.n)
            if per_sample < 1:
                raise BudgetExhausted(
                    self.line + "output_tokens", u.output_tokens + self._held, b.output_tokens or 0
                )
            if per_sample < sampling.max_tokens:
                sampling = replace(sampling, max_tokens=per_sample)
        held = sampling.max_tokens * sampling.n
        self._held += held
        u.calls += 1
        u.samples += sampling.n
        u.prompt_tokens += prompt_tokens
        return Reservation(sampling=sampling, output_tokens=held, prompt_tokens=prompt_tokens)

    def cancel(self, reservation: Reservation, n: int) -> None:
        """Undo a reservation that was never sent (another meter refused the call)."""
        self._held -= reservation.output_tokens
        self.usage.calls -= 1
        self.usage.samples -= n
        self.usage.prompt_tokens -= reservation.prompt_tokens

    def settle(self, reservation: Reservation, output_tokens: int, cached_tokens: int = 0) -> None:
        """Release `reservation` and charge what the call really decoded."""
        self._held -= reservation.output_tokens
        self.usage.output_tokens += output_tokens
        self.usage.cached_tokens += cached_tokens

    def finish(self) -> Usage:
        """Stamp the wall time on the usage and return it."""
        self.usage.seconds = self.elapsed
        return self.usage
