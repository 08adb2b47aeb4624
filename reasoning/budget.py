"""Budgets with units, and the one meter that enforces them.

A `Budget` is a frozen spec: output tokens, prompt tokens, model calls and wall seconds, each
optional. A `Meter` enforces it in one place, before spending: every backend call goes
through `Meter.reserve`, which raises `BudgetExhausted` when the call cannot fit and
otherwise *clamps* the call's ``max_tokens`` so that its worst case fits in what is left.
Reservations are held until the call ends, so concurrent calls cannot overspend together:
a strategy cannot exceed its budget by construction. `Meter.settle` replaces the reservation
with what was actually spent.

Every call passes the meter, so the meter also times them: it notes when each call was granted
and when it was settled, and `Meter.finish` finds the longest chain of calls each of which
started after the previous one ended (`Usage.sequential_tokens`, the run's latency cost in
tokens: n parallel samples count as their longest, calls one after another add up).

A problem charges several meters at once: the run's, and the named backend's own when a call
goes to one (``draft.output_tokens=...``). The `Ledger` owns that: `Ledger.reserve` holds a call
on every meter it concerns or on none (a refusal by one undoes the others), and the `Charge` it
returns settles on all of them.

Example:
    >>> from reasoning import Budget, Meter, Message, Request, Sampling
    >>> meter = Meter(Budget(output_tokens=100))
    >>> req = Request((Message("user", "hi"),), Sampling(max_tokens=80, n=2))
    >>> meter.reserve(req, prompt_tokens=5).max_tokens   # 2 samples x 50 tokens fit
    50
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from reasoning.backend import Completion, Request, Sampling
from reasoning.errors import BudgetExhausted, ConfigError

__all__ = ["Budget", "Charge", "Ledger", "Meter", "Reservation", "Usage"]


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
            if value is not None and not value > 0:  # NaN too: a line it could never exhaust
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
    sequential_tokens: int = 0
    """Output tokens on the critical path: the longest chain of calls each of which started after
    the previous one ended, each contributing its longest sample (Amdahl-style latency cost;
    parallel samples count once). Cancelled samples count with the tokens they decoded."""
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
    busy_seconds: float = 0.0
    """Seconds with at least one call in flight (the union of the calls' intervals): for a named
    backend, the time that model was working for the problem, e.g. a draft's vs a target's."""


@dataclass(frozen=True)
class Reservation:
    """A granted call: the clamped sampling and the tokens held for it."""

    sampling: Sampling
    """The sampling to send (``max_tokens`` possibly lowered to fit)."""
    output_tokens: int
    """Output tokens held until `Meter.settle`."""
    prompt_tokens: int
    """Prompt tokens charged."""
    started: float = 0.0
    """The meter's clock when the call was granted (the start of its link in the critical path)."""

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
    _calls: list[tuple[float, float, int]] = field(default_factory=list, init=False, repr=False)
    """Each settled call: (granted, settled, tokens of its longest sample), on `clock`."""

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
        return Reservation(
            sampling=sampling, output_tokens=held, prompt_tokens=prompt_tokens, started=self.clock()
        )

    def shrink(self, reservation: Reservation, sampling: Sampling) -> Reservation:
        """Hold only what `sampling` (a tighter clamp of the same call) can decode; never refuses."""
        output_tokens = min(reservation.output_tokens, sampling.max_tokens * sampling.n)
        self._held -= reservation.output_tokens - output_tokens
        return replace(reservation, sampling=sampling, output_tokens=output_tokens)

    def cancel(self, reservation: Reservation, n: int) -> None:
        """Undo a reservation that was never sent (another meter refused the call)."""
        self._held -= reservation.output_tokens
        self.usage.calls -= 1
        self.usage.samples -= n
        self.usage.prompt_tokens -= reservation.prompt_tokens

    def settle(
        self,
        reservation: Reservation,
        output_tokens: int,
        cached_tokens: int = 0,
        *,
        longest: int | None = None,
    ) -> None:
        """Release `reservation` and charge what the call really decoded.

        Args:
            reservation: What `reserve` granted for the call.
            output_tokens: Tokens it decoded, over all its samples (cancelled ones included).
            cached_tokens: Its prompt tokens the prefix cache served.
            longest: Tokens its longest sample decoded, for `Usage.sequential_tokens`. None
                (unknown) counts `output_tokens`, as if the samples had run one after another:
                an upper bound, exact for one sample, so the critical path is never understated.
        """
        self._held -= reservation.output_tokens
        self.usage.output_tokens += output_tokens
        self.usage.cached_tokens += cached_tokens
        tokens = output_tokens if longest is None else longest
        self._calls.append((reservation.started, self.clock(), tokens))

    def finish(self) -> Usage:
        """Stamp the wall time and the critical path (`Usage.sequential_tokens`) on the usage; return it.

        Example:
            >>> from reasoning import Message, Request, Sampling
            >>> now = [0.0]
            >>> meter = Meter(Budget(), clock=lambda: now[0])
            >>> req = Request((Message("user", "hi"),), Sampling(n=4))
            >>> a, b = meter.reserve(req), meter.reserve(req)        # two calls at once ...
            >>> now[0] = 1.0; meter.settle(a, 40, longest=20); meter.settle(b, 12, longest=5)
            >>> c = meter.reserve(req); now[0] = 2.0; meter.settle(c, 8, longest=3)  # ... then one
            >>> meter.finish().sequential_tokens                     # a's longest sample, then c's
            23
        """
        self.usage.seconds = self.elapsed
        self.usage.sequential_tokens = _longest_chain(self._calls)
        self.usage.busy_seconds = _covered(self._calls)
        return self.usage


@dataclass
class Charge:
    """One call held on several meters: granted by all of them, settled on all of them once."""

    request: Request
    """The request as granted: its ``max_tokens`` lowered to fit every meter."""
    held: tuple[tuple[Meter, Reservation], ...]
    """Each meter and what it holds for the call."""
    _settled: bool = False

    @property
    def counted_prompt(self) -> bool:
        """Every meter charged the prompt up front (else `prompt_tokens` charges it later)."""
        return all(reservation.prompt_tokens > 0 for _, reservation in self.held)

    def prompt_tokens(self, count: int) -> None:
        """Charge the prompt length, learnt from the call, to the meters that did not count it."""
        for meter, reservation in self.held:
            if reservation.prompt_tokens == 0:
                meter.usage.prompt_tokens += count

    def seconds_left(self) -> tuple[float | None, Meter]:
        """The wall seconds left on the tightest meter (None: no wall-clock line), and that meter."""
        left, tightest = None, self.held[0][0]
        for meter, _ in self.held:
            mine = meter.seconds_left
            if mine is not None and (left is None or mine < left):
                left, tightest = mine, meter
        return left, tightest

    def settle(self, output_tokens: int, cached_tokens: int = 0, *, longest: int | None = None) -> None:
        """Release the holds and charge what the call decoded; later calls do nothing.

        `longest` is the tokens of the call's longest sample (see `Meter.settle`; None: unknown,
        counted as `output_tokens`).
        """
        if self._settled:
            return
        self._settled = True
        for meter, reservation in self.held:
            meter.settle(reservation, output_tokens, cached_tokens, longest=longest)


class Ledger:
    """The meters of one problem: the run's, and one per named backend.

    Example:
        >>> from reasoning import Budget, Message, Request, Sampling
        >>> ledger = Ledger(Meter(Budget(output_tokens=100)), {"draft": Meter(Budget(output_tokens=30))})
        >>> charge = ledger.reserve(Request((Message("user", "hi"),), Sampling(max_tokens=80)), "draft")
        >>> charge.request.sampling.max_tokens       # the draft's own line is the tighter
        30
        >>> charge.settle(12); ledger.meter.usage.output_tokens, ledger.meters["draft"].usage.output_tokens
        (12, 12)
    """

    def __init__(self, meter: Meter, meters: Mapping[str, Meter] | None = None) -> None:
        self.meter = meter
        """The run's meter: every call counts against it."""
        self.meters: Mapping[str, Meter] = meters or {}
        """Each named backend's own meter."""

    def meters_for(self, backend: str | None) -> list[Meter]:
        """The meters a call to `backend` (None: the run's default) counts against."""
        own = self.meters.get(backend) if backend is not None else None
        return [self.meter] if own is None else [self.meter, own]

    def reserve(
        self, request: Request, backend: str | None = None, count: Callable[[Request], int] | None = None
    ) -> Charge:
        """Hold `request` on every meter of `backend`, or on none.

        Args:
            request: The call about to be sent.
            backend: The named backend it goes to (None: the run's default).
            count: Counts the request's prompt tokens; asked only by meters with a prompt line.

        Raises:
            BudgetExhausted: A meter cannot fit the call; the meters that granted it are undone.
        """
        held: list[tuple[Meter, Reservation]] = []
        try:
            for meter in self.meters_for(backend):
                prompt = count(request) if count is not None and meter.budget.prompt_tokens is not None else 0
                reservation = meter.reserve(request, prompt)
                request = replace(request, sampling=reservation.sampling)
                held.append((meter, reservation))
        except BudgetExhausted:
            for meter, reservation in held:
                meter.cancel(reservation, request.sampling.n)
            raise
        # A meter that granted more than a later one allowed holds only what will be sent.
        return Charge(request, tuple((meter, meter.shrink(r, request.sampling)) for meter, r in held))

    def cancelled(self, completions: Sequence[Completion], backend: str | None = None) -> None:
        """Count the cancelled samples among `completions` (and their decoded tokens) as such."""
        cancelled = [c for c in completions if c.finish_reason == "cancelled"]
        for meter in self.meters_for(backend):
            meter.usage.cancelled_samples += len(cancelled)
            meter.usage.cancelled_tokens += sum(c.output_tokens for c in cancelled)


def _covered(calls: Sequence[tuple[float, float, int]]) -> float:
    """Length of the union of the calls' ``(start, end)`` intervals.

    Example:
        >>> _covered([(0.0, 2.0, 1), (1.0, 3.0, 1), (5.0, 6.0, 1)])
        4.0
    """
    total, reach = 0.0, float("-inf")
    for start, end, _ in sorted(calls):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _longest_chain(calls: Sequence[tuple[float, float, int]]) -> int:
    """Tokens on the heaviest chain of `calls` ``(start, end, tokens)`` each starting after the last ended.

    A call may follow one that ended no later than it started. Calls are taken in order of their
    end (ties in a fixed order, so zero-length calls at one instant chain without a cycle); the
    best chain ending at a call is its tokens plus the best over the calls before it in that
    order that ended by its start: a prefix of that order, read from a running maximum.
    O(n log n).
    """
    ordered = sorted(calls, key=lambda call: (call[1], call[0]))
    ends = [end for _, end, _ in ordered]
    best_up_to: list[int] = []  # best_up_to[k]: the heaviest chain ending at one of the first k + 1
    for position, (start, _, tokens) in enumerate(ordered):
        before = min(bisect.bisect_right(ends, start), position)
        chain = tokens + (best_up_to[before - 1] if before else 0)
        best_up_to.append(max(chain, best_up_to[-1]) if best_up_to else chain)
    return best_up_to[-1] if best_up_to else 0
