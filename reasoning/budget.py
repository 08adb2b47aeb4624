"""Budgets with units, and the one meter that enforces them.

A `Budget` is a frozen spec: output tokens, prompt tokens, model calls and wall seconds, each
optional. A `Meter` enforces it in one place, before spending: every backend call goes
through `Meter.reserve`, which raises `BudgetExhausted` when the call cannot fit and
otherwise *clamps* the call's ``max_tokens`` so that its worst case fits in what is left.
Reservations are held until the call ends, so concurrent calls cannot overspend together:
a strategy cannot exceed its budget by construction. `Meter.settle` replaces the reservation
with what was actually spent.

Calls that arrive together share what is left: `Ledger.admit` (the async door every call of a
`reasoning.Context` takes) lets the calls started in the same instant line up, and each is
clamped to its fair share of the output tokens left (per sample: what is left over all the
samples waiting), so four concurrent inner runs under a line that pays for four short samples
get four short samples, not one long one and three refusals. A call that does not fit while
other calls are in flight waits in a queue until they settle (giving back the output tokens
they did not decode; on a calls or prompt-token line, finishing their samples before the
budget stop) instead of stopping the run at once, unless waiting could deadlock: a task that holds a
reservation itself never waits, nor does one whose ancestor (`reasoning.concurrency.task_group`)
holds one. A budget that can pay for one sample of a call therefore never ends with nothing
decoded.

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

import asyncio
import bisect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from reasoning.backend import Completion, Request, Sampling
from reasoning.concurrency import ancestors
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
    clamped_calls: int = 0
    """Calls whose ``max_tokens`` this budget lowered to fit (the strategy asked for more)."""
    clamped_samples: int = 0
    """Samples cut short by a lowered ``max_tokens``: they decoded all they were granted and
    ended by ``length``. More than 0 means the budget, not the strategy, shortened the work
    (the run's ``stop_reason`` is then ``budget:output_tokens``)."""


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
    clamped: bool = False
    """This meter lowered the call's ``max_tokens``."""

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
    waiting: int = field(default=0, init=False)
    """Samples of the calls lining up for a grant (`Ledger.admit`): what is left is shared among them."""
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
        clamped = False
        if left is not None:
            # Fair share: the samples lining up with this call (its own included) split what is left.
            per_sample = min(sampling.max_tokens, left // max(sampling.n, self.waiting))
            if per_sample < 1 and self.waiting > sampling.n:
                per_sample = min(sampling.max_tokens, left // sampling.n)  # too many to share: first come
            if per_sample < 1:
                raise BudgetExhausted(
                    self.line + "output_tokens", u.output_tokens + self._held, b.output_tokens or 0
                )
            if per_sample < sampling.max_tokens:
                sampling = replace(sampling, max_tokens=per_sample)
                clamped = True
                u.clamped_calls += 1
        held = sampling.max_tokens * sampling.n
        self._held += held
        u.calls += 1
        u.samples += sampling.n
        u.prompt_tokens += prompt_tokens
        return Reservation(
            sampling=sampling,
            output_tokens=held,
            prompt_tokens=prompt_tokens,
            started=self.clock(),
            clamped=clamped,
        )

    def shrink(self, reservation: Reservation, sampling: Sampling) -> Reservation:
        """Hold only what `sampling` (a tighter clamp of the same call) can decode; never refuses.

        A clamp of this meter's that another meter's tightened is not this meter's cut any more.
        """
        output_tokens = min(reservation.output_tokens, sampling.max_tokens * sampling.n)
        self._held -= reservation.output_tokens - output_tokens
        clamped = reservation.clamped and sampling.max_tokens == reservation.sampling.max_tokens
        if reservation.clamped and not clamped:  # another meter's line clamped it further: its cut
            self.usage.clamped_calls -= 1
        return replace(reservation, sampling=sampling, output_tokens=output_tokens, clamped=clamped)

    def cancel(self, reservation: Reservation, n: int) -> None:
        """Undo a reservation that was never sent (another meter refused the call)."""
        self._held -= reservation.output_tokens
        self.usage.calls -= 1
        self.usage.samples -= n
        self.usage.prompt_tokens -= reservation.prompt_tokens
        self.usage.clamped_calls -= int(reservation.clamped)

    @property
    def held(self) -> int:
        """Output tokens reserved by calls in flight."""
        return self._held

    def settle(
        self,
        reservation: Reservation,
        output_tokens: int,
        cached_tokens: int = 0,
        *,
        longest: int | None = None,
        cut: int = 0,
    ) -> None:
        """Release `reservation` and charge what the call really decoded.

        Args:
            reservation: What `reserve` granted for the call.
            output_tokens: Tokens it decoded, over all its samples (cancelled ones included).
            cached_tokens: Its prompt tokens the prefix cache served.
            longest: Tokens its longest sample decoded, for `Usage.sequential_tokens`. None
                (unknown) counts `output_tokens`, as if the samples had run one after another:
                an upper bound, exact for one sample, so the critical path is never understated.
            cut: Its samples that decoded all of their lowered ``max_tokens`` and ended by
                ``length`` (`Usage.clamped_samples`, counted where this meter lowered it).
        """
        if reservation.clamped:
            self.usage.clamped_samples += cut
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
    on_settle: Callable[[Charge], None] | None = None
    """Told once the call is settled (the `Ledger`: its reservations are given back)."""
    _settled: bool = False

    @property
    def clamped(self) -> bool:
        """A meter lowered the call's ``max_tokens``: a sample decoding all of it is cut by the budget."""
        return any(reservation.clamped for _, reservation in self.held)

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

    def settle(
        self, output_tokens: int, cached_tokens: int = 0, *, longest: int | None = None, cut: int = 0
    ) -> None:
        """Release the holds and charge what the call decoded; later calls do nothing.

        `longest` is the tokens of the call's longest sample (see `Meter.settle`; None: unknown,
        counted as `output_tokens`); `cut` its samples the budget's clamp cut short.
        """
        if self._settled:
            return
        self._settled = True
        for meter, reservation in self.held:
            meter.settle(reservation, output_tokens, cached_tokens, longest=longest, cut=cut)
        if self.on_settle is not None:
            self.on_settle(self)


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
        self._holders: dict[int, tuple[Charge, asyncio.Task[object] | None]] = {}
        """Calls admitted and not yet settled, with the task that sent each."""
        self._settled: asyncio.Event | None = None
        """Set when a call settles (reservations given back): the queue of `admit` retries."""

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

    async def admit(
        self, request: Request, backend: str | None = None, count: Callable[[Request], int] | None = None
    ) -> Charge:
        """Hold `request` like `reserve`, sharing fairly with the calls sent at the same time.

        The call lines up for a few turns of the event loop, so that calls started together
        (the branches of ``ctx.run_all``) are granted together, each its fair share of the
        output tokens left. When it does not fit but calls in flight hold reservations, it waits
        until one settles and tries again, unless its own task, or a task it was started from,
        holds one (that would wait on itself); holders whose task has ended do not count. A wait
        ends with the wall-clock line, or after `QUEUE_PATIENCE` seconds without a settle.

        Raises:
            BudgetExhausted: The call cannot fit and waiting cannot help (or the clock ran out).
        """
        meters = self.meters_for(backend)
        n = request.sampling.n
        for meter in meters:
            meter.waiting += n
        try:
            if any(meter.budget.output_tokens is not None for meter in meters):  # else: nothing to share
                for _ in range(_LINE_UP_TURNS):
                    await asyncio.sleep(0)
            while True:
                try:
                    charge = self.reserve(request, backend, count)
                except BudgetExhausted as exc:
                    await self._wait_for_release(exc, meters)
                    continue
                break
        finally:
            for meter in meters:
                meter.waiting -= n
        charge.on_settle = self._release
        self._holders[id(charge)] = (charge, asyncio.current_task())
        return charge

    async def _wait_for_release(self, exc: BudgetExhausted, meters: Sequence[Meter]) -> None:
        """Wait until a call in flight settles, or re-raise `exc` when waiting cannot help.

        Output tokens come back when a call settles; a call or prompt-token line does not, but a
        refused call that waits lets the calls already in flight finish (a budget stop would
        cancel them), so their samples are whole when it is refused on the retry.
        """
        if exc.resource.endswith("seconds"):
            raise exc
        me = asyncio.current_task()
        blocked = {me, *ancestors()}
        holders = [task for _, task in self._holders.values() if task is not None and not task.done()]
        if me in holders or not any(task not in blocked for task in holders):
            raise exc
        if self._settled is None:
            self._settled = asyncio.Event()
        settled = self._settled
        timed = [m for m in meters if m.seconds_left is not None]
        left = min((m.seconds_left or 0.0 for m in timed), default=None)
        patience = QUEUE_PATIENCE if left is None else min(max(left, 0.0), QUEUE_PATIENCE)
        try:
            async with asyncio.timeout(patience):  # not wait_for: 3.11's loses cancellations
                await settled.wait()
        except TimeoutError:
            if left is None or left > QUEUE_PATIENCE:
                raise exc from None  # nothing settled for a long while: stop as if it never waited
            tightest = min(timed, key=lambda m: m.seconds_left or 0.0)
            raise BudgetExhausted(
                tightest.line + "seconds", tightest.elapsed, tightest.budget.seconds or 0
            ) from None

    def _release(self, charge: Charge) -> None:
        self._holders.pop(id(charge), None)
        if self._settled is not None:
            self._settled.set()
            self._settled = None

    def cancelled(self, completions: Sequence[Completion], backend: str | None = None) -> None:
        """Count the cancelled samples among `completions` (and their decoded tokens) as such."""
        cancelled = [c for c in completions if c.finish_reason == "cancelled"]
        for meter in self.meters_for(backend):
            meter.usage.cancelled_samples += len(cancelled)
            meter.usage.cancelled_tokens += sum(c.output_tokens for c in cancelled)


QUEUE_PATIENCE = 120.0
"""Seconds a call waits in the budget's queue for any call in flight to settle before it is
refused after all: a bound on a wait that tasks awaiting each other outside
`reasoning.concurrency.task_group` could otherwise make endless."""

_LINE_UP_TURNS = 3
"""Turns of the event loop a call waits for the calls started with it (nested ``run_all`` branches
reach the meter a turn or two after their parent's siblings)."""


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
