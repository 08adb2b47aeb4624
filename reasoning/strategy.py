"""The Strategy seam, and the Context through which strategies act (verifiers: `reasoning.verifier`).

A strategy is a frozen dataclass with an async ``__call__(problem, ctx) -> Result``. It
touches the world only through its `Context`: ``ctx.generate`` for whole samples and
``ctx.trace`` to watch them stream (every call is held and settled on the budget's `Ledger`
and recorded), ``ctx.verify`` for answers and scores, ``ctx.rng`` for randomness. It sees the
problem without its gold answer (`Problem.without_gold`). Work it runs concurrently goes through
``ctx.generate_all`` or ``ctx.run_all`` (or `reasoning.concurrency`'s ``task_group``), never
``asyncio.gather``: a budget stop or an error then cancels the siblings, so no request outlives
its problem; in a reproducible run (``Controller(deterministic=True)``) ``ctx.run_all`` awaits
them in order instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
import zlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, TypeVar

import numpy as np

from reasoning.answers import written_answer
from reasoning.backend import (
    HIDDEN_STATES_OFFERED_BY,
    PROMPT_LOGPROBS_OFFERED_BY,
    REWARDS_OFFERED_BY,
    AdmitsAtOnce,
    Backend,
    Chunk,
    Completion,
    HiddenStateMapper,
    HiddenStateReader,
    Message,
    PromptScorer,
    Request,
    RewardReader,
    Sampling,
    TokenCounter,
    TokenLogprob,
)
from reasoning.budget import Charge, Ledger, Meter
from reasoning.concurrency import run_all, run_in_order
from reasoning.errors import (
    BudgetExhausted,
    CapabilityError,
    ConfigError,
    checked_verdicts,
)
from reasoning.problem import Problem
from reasoning.record import Candidate
from reasoning.selection import TieBreak, majority_vote
from reasoning.trace import Trace
from reasoning.verifier import ExtractAnswer, Verdict, Verifier

__all__ = ["Context", "Result", "Strategy", "TruncatedAnswers", "request_seed"]

T = TypeVar("T")

GENERATE_STREAM_INTERVAL = 16
"""`Context.generate`'s `Request.stream_interval`: it reads nothing before the end, so the engine
sends each sample's tokens 16 at a time (measured in benchmarks/peers.py: over HTTP, per-token
chunks cost the server and the client CPU that the engine needs on a small machine)."""

TruncatedAnswers = Literal["written", "any"]
"""What counts as the answer of a sample cut short (``length``): ``written`` (the default) only
an answer the text states in full, a closed ``\\boxed{}`` or a complete ``#### x`` / ``the
answer is x`` / ``Answer: x`` line (`reasoning.answers.written_answer`); ``any``: whatever the
verifier reads, the last number of the cut text included."""


@dataclass(frozen=True)
class Result:
    """What a strategy returns: its answer and every candidate it considered.

    Example:
        >>> c = [Candidate("a", "3"), Candidate("b", "4"), Candidate("c", "4")]
        >>> Result.vote(c).chosen, Result.vote(c, weights=[5, 1, 1]).answer, Result.pick(c, 0).answer
        (1, '3', '3')
    """

    answer: str | None
    """The final answer (normalised), None when the strategy found none."""
    candidates: tuple[Candidate, ...] = ()
    """All candidates, in production order."""
    chosen: int | None = None
    """Index into `candidates` of the one the answer came from."""

    @classmethod
    def pick(cls, candidates: Sequence[Candidate], chosen: int | None) -> Result:
        """The answer of ``candidates[chosen]`` (None: no answer), every candidate kept."""
        return cls(None if chosen is None else candidates[chosen].answer, tuple(candidates), chosen)

    @classmethod
    def vote(
        cls,
        candidates: Sequence[Candidate],
        weights: Sequence[float] | None = None,
        tie: TieBreak = "first",
        voters: Collection[int] | None = None,
    ) -> Result:
        """A majority vote over the candidates' answers (`majority_vote`), every candidate kept.

        Args:
            candidates: Every candidate; those without an answer do not vote.
            weights: Weight of each candidate's vote (default 1).
            tie: A tie goes to the answer seen first, or to the group holding the shortest or
                longest candidate (in output tokens).
            voters: Indices of the candidates that vote (default: all of them).
        """
        answers = [c.answer if voters is None or i in voters else None for i, c in enumerate(candidates)]
        lengths = [c.output_tokens for c in candidates]
        return cls.pick(candidates, majority_vote(answers, weights, lengths, tie))


class Strategy(Protocol):
    """A test-time reasoning method.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Greedy:
        ...     async def __call__(self, problem, ctx):
        ...         completions = await ctx.generate(ctx.request(Sampling(temperature=0)))
        ...         return Result.pick(await ctx.candidates(completions), 0)
    """

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Solve `problem` using only `ctx`."""
        ...


@dataclass
class Context:
    """The only door from a strategy to the world (model, verifier, budget, randomness)."""

    problem: Problem
    """The problem being solved, without its gold answer (`Problem.without_gold`)."""
    messages: tuple[Message, ...]
    """The prompt's chat messages."""
    backend: Backend
    """The run's default backend."""
    meter: Meter
    """The run's budget and what it has spent."""
    verifier: Verifier = field(default_factory=ExtractAnswer)
    seed: int | None = 0
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    completions: list[Completion] = field(default_factory=list)
    """Every sample returned so far (the controller's best-so-far on a budget stop)."""
    backends: Mapping[str, Backend] = field(default_factory=dict)
    """Named backends of the run (``draft``, ``target``, ...); `backend` is one of them."""
    meters: Mapping[str, Meter] = field(default_factory=dict)
    """One meter per named backend (its own budget lines and usage)."""
    backend_name: str = ""
    """Name of the default `backend` among `backends` (empty when there is only one)."""
    scope: str = ""
    """Where in a composition this context runs (`derive`): its requests' seeds derive from it."""
    deterministic: bool = False
    """Reproducible mode (`Controller.deterministic`): `run_all` and `generate_all` await one
    after another, and a request's samples start in one engine step, so no batch depends on
    arrival timing."""
    truncated_answers: TruncatedAnswers = "written"
    """What counts as the answer of a sample cut short (`TruncatedAnswers`, `candidates`)."""
    own: list[Completion] = field(default_factory=list)
    """The samples of this context's calls and of the contexts derived from it (a branch's only)."""
    _lineage: tuple[list[Completion], ...] = ()
    _requests: int = 0
    _best_so_far: Callable[[], Awaitable[Result]] | None = None
    ledger: Ledger = field(init=False, repr=False)
    """Holds and settles every call on `meter` and the named backend's own meter in `meters`."""

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.meter, self.meters)

    def derive(self, scope: str, messages: Sequence[Message] | None = None) -> Context:
        """A context for an inner strategy of a composition: same problem, budget, backends, record.

        The inner strategy's calls are metered, recorded and seeded like the outer one's; its
        requests' seeds derive from the `scope` path (``/round2/draft0``), so concurrent inner runs
        get distinct, replayable seeds whatever order they send in. `messages` replace the prompt
        (a refinement round's prompt holding the previous round's workspace).

        Example:
            >>> from reasoning import Budget, Meter, Message, Problem, ScriptedBackend
            >>> prompt = (Message("user", "2+2?"),)
            >>> ctx = Context(Problem("p", "2+2?"), prompt, ScriptedBackend(["4"]), Meter(Budget()))
            >>> inner = ctx.derive("r1", [Message("user", "improve: 4")])
            >>> inner.scope, inner.meter is ctx.meter, inner.completions is ctx.completions
            ('/r1', True, True)
        """
        child = replace(
            self,
            messages=self.messages if messages is None else tuple(messages),
            scope=f"{self.scope}/{scope}",
            _best_so_far=None,
            own=[],
            _lineage=(*self._lineage, self.own),
            _requests=0,
        )
        child.ledger = self.ledger
        return child

    def request(self, sampling: Sampling, prefix: str = "") -> Request:
        """A request for this problem's messages, continuing `prefix` when given."""
        return Request(self.messages, sampling, prefix)

    def backend_named(self, name: str | None) -> Backend:
        """The backend called `name` (None: the default one).

        Raises:
            ConfigError: No backend has that name; the message lists the names.
        """
        if name is None:
            return self.backend
        if name not in self.backends:
            known = ", ".join(self.backends) or "(only the default backend)"
            raise ConfigError(f"no backend named {name!r} in this run; named backends: {known}")
        return self.backends[name]

    def _seeded(self, request: Request) -> Request:
        self._requests += 1
        if self.seed is None or request.sampling.seed is not None:
            return request
        seed = request_seed(self.seed, self.problem.id + self.scope, self._requests)
        return request.with_sampling(seed=seed)

    async def _charge(self, request: Request, target: Backend, backend: str | None) -> Charge:
        """Hold `request` on the run's meter and on `backend`'s own (None: the default's).

        Calls sent together share what is left fairly, and one that finds nothing left waits for
        calls in flight to give back what they did not use (`Ledger.admit`).
        """
        name = backend if backend is not None else (self.backend_name or None)
        count = target.prompt_tokens if isinstance(target, TokenCounter) else None
        return await self.ledger.admit(request, name, count)

    async def stream(self, request: Request, backend: str | None = None) -> AsyncGenerator[Chunk, None]:
        """Stream `request` under the budget; closing the iterator cancels it in the engine.

        Args:
            request: What to decode.
            backend: Name of the backend to use (None: the run's default backend).

        Raises:
            BudgetExhausted: before sending, when the call cannot fit; or mid-stream when the
                wall-clock line runs out (the request is cancelled first).
        """
        target = self.backend_named(backend)
        charge = await self._charge(self._seeded(request), target, backend)
        decoded = cached = cut = 0
        by_sample: dict[int, int] = {}  # tokens each sample decoded: the longest is on the critical path
        prompt_counted = charge.counted_prompt
        try:
            source = _source(target, charge.request, self.deterministic)
            async with contextlib.aclosing(source) as chunks:
                while True:
                    left, tightest = charge.seconds_left()
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation
                    # that arrives in the step a chunk does, and the call would decode on.
                    clock = asyncio.timeout(None if left is None else max(left, 0.0))
                    try:
                        async with clock:
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        if not clock.expired():
                            raise  # the backend's own, not the budget's
                        raise BudgetExhausted(
                            tightest.line + "seconds", tightest.elapsed, tightest.budget.seconds or 0
                        ) from None
                    decoded += chunk.tokens
                    by_sample[chunk.index] = by_sample.get(chunk.index, 0) + chunk.tokens
                    cached = max(cached, chunk.cached_tokens)
                    if chunk.finish_reason == "length" and charge.clamped:
                        cut += by_sample[chunk.index] >= charge.request.sampling.max_tokens
                    if not prompt_counted and chunk.prompt_tokens:
                        charge.prompt_tokens(chunk.prompt_tokens)
                        prompt_counted = True
                    yield chunk
        finally:
            charge.settle(decoded, cached, longest=max(by_sample.values(), default=0), cut=cut)

    def trace(self, request: Request, backend: str | None = None, *, record: bool = True) -> Trace:
        """Stream `request` as a `Trace` that assembles its samples and closes once.

        Leaving ``async with ctx.trace(request) as trace`` cancels the samples still decoding,
        settles their cost and (with `record`) records every sample: each as it finishes, the
        unfinished as cancelled. A strategy that makes its own record of the samples (a trace
        cut short and continued by a forced answer) passes ``record=False``.
        """
        recorder = functools.partial(self.record, backend=backend) if record else None
        return Trace(request, self.stream(request, backend), recorder, started=self.meter.elapsed)

    async def generate(self, request: Request, backend: str | None = None) -> list[Completion]:
        """Run `request` to the end on `backend` (default: the run's); return its samples.

        Its samples are recorded in index order when it ends; when the call is stopped (a budget
        stop, a sibling's error, a cancellation) the unfinished ones are recorded as cancelled,
        with the text and tokens they had decoded, so the record keeps every sample that started.
        The samples stream in chunks of `GENERATE_STREAM_INTERVAL` tokens unless `request` sets
        its own `Request.stream_interval` (a cancelled sample's count lags by less than that).
        """
        if request.stream_interval == 1:  # nothing reads it before the end: spare per-token chunks
            request = replace(request, stream_interval=GENERATE_STREAM_INTERVAL)
        trace = self.trace(request, backend, record=False)
        try:
            async with trace:
                async for _ in trace:
                    pass
        finally:  # closed: every sample, in index order (the record's order does not hang on timing)
            recorded = self.record(trace.completions, backend)
        return recorded

    async def finishes(
        self, request: Request, backend: str | None = None
    ) -> AsyncGenerator[Completion, None]:
        """Yield each sample of `request` the moment it finishes, in finishing order.

        Leaving the loop (or closing the iterator) cancels the samples still decoding, in the
        engine, at once; they are recorded as cancelled with the tokens they had decoded
        (``usage.cancelled_tokens``). Every yielded completion is recorded too.
        """
        async with self.trace(request, backend) as trace:
            async for _ in trace:
                if trace.ended is not None:
                    yield trace.ended

    def record(self, completions: list[Completion], backend: str | None = None) -> list[Completion]:
        """Add samples obtained through `stream` to the run's record (cancelled ones counted)."""
        backend = backend if backend is not None else (self.backend_name or None)
        if backend is not None:
            completions = [replace(c, backend=backend) for c in completions]
        self.completions.extend(completions)
        for samples in (*self._lineage, self.own):
            samples.extend(completions)
        self.ledger.cancelled(completions, backend)
        return completions

    def on_stop(self, best_so_far: Callable[[], Awaitable[Result]]) -> None:
        """Say what a budget stop returns for this context: `best_so_far` instead of a vote.

        For a strategy that keeps its own records (a step search: its samples are steps, not
        solutions; a composition: its inner runs' results); the controller and a composing
        strategy ask `result_so_far`.
        """
        self._best_so_far = best_so_far

    async def result_so_far(self) -> Result:
        """What this context's run holds at a budget stop.

        Its strategy's best so far (`on_stop`), else a vote over its own samples (`samples_so_far`).
        """
        if self._best_so_far is not None:
            return await self._best_so_far()
        return await self.samples_so_far()

    async def samples_so_far(self) -> Result:
        """A vote over this context's own samples so far: what a budget stop returns by default.

        Every sample is a candidate, the cancelled ones too (with their partial text and
        tokens; they have no answer and do not vote), so the record keeps all that started.
        """
        if not self.own:
            return Result(answer=None)
        return Result.vote(await self.candidates(self.own))

    async def hidden_states(
        self,
        layers: Sequence[int],
        prefix: str = "",
        positions: Sequence[int] = (-1,),
        backend: str | None = None,
    ) -> np.ndarray:
        """Hidden states of this problem's prompt plus `prefix` (see `HiddenStateReader`).

        Metered as one call decoding one token (the probe's forward pass).

        Raises:
            CapabilityError: The backend cannot give hidden states; the message names those that can.
        """
        target = self.backend_named(backend)
        if not isinstance(target, HiddenStateReader):
            raise CapabilityError("hidden states", target.name, HIDDEN_STATES_OFFERED_BY)
        request = self.request(Sampling(temperature=0.0, max_tokens=1), prefix)
        charge = await self._charge(request, target, backend)
        spent = 0
        try:
            values = await target.hidden_states(request, layers, positions)
            spent = 1
        finally:
            charge.settle(spent)
        return values

    async def mapped_hidden_states(
        self,
        head: Callable[[np.ndarray], T],
        layers: Sequence[int],
        prefix: str = "",
        positions: Sequence[int] = (-1,),
        backend: str | None = None,
    ) -> T:
        """``head`` applied to `hidden_states` (same arguments), computed where the states are read.

        A backend that maps hidden states itself (`HiddenStateMapper`: a pool of engine replicas)
        runs `head` beside its engine and returns only its output (a probe's scores, not the
        states); any other `HiddenStateReader` gives the states and `head` runs here. Metered as
        `hidden_states` is. `head` must pickle (see `HiddenStateMapper`).

        Raises:
            CapabilityError: The backend cannot give hidden states; the message names those that can.
        """
        target = self.backend_named(backend)
        if not isinstance(target, HiddenStateMapper):
            return head(await self.hidden_states(layers, prefix, positions, backend))
        request = self.request(Sampling(temperature=0.0, max_tokens=1), prefix)
        charge = await self._charge(request, target, backend)
        spent = 0
        try:
            mapped = await target.mapped_hidden_states(request, layers, positions, head)
            spent = 1
        finally:
            charge.settle(spent)
        return mapped

    async def prompt_logprobs(
        self, prefix: str = "", backend: str | None = None, messages: Sequence[Message] | None = None
    ) -> tuple[TokenLogprob, ...]:
        """Log-probabilities `backend` gives the tokens of a prompt (see `PromptScorer`).

        The prompt is this problem's messages (or `messages`) with the assistant `prefix`.
        Metered as one call: its prompt tokens and one decoded token.

        Raises:
            CapabilityError: The backend cannot score prompts; the message names those that can.
        """
        target = self.backend_named(backend)
        if not isinstance(target, PromptScorer):
            raise CapabilityError("prompt log-probabilities", target.name, PROMPT_LOGPROBS_OFFERED_BY)
        request = Request(tuple(messages or self.messages), Sampling(temperature=0.0, max_tokens=1), prefix)
        charge = await self._charge(request, target, backend)
        spent = 0
        try:
            scored = await target.prompt_logprobs(request)
            if not charge.counted_prompt:
                charge.prompt_tokens(len(scored) + 1)
            spent = 1
        finally:
            charge.settle(spent)
        return scored

    async def step_rewards(self, messages: Sequence[Message], backend: str | None = None) -> np.ndarray:
        """Step rewards ``[steps, labels]`` of a process reward model (see `RewardReader`).

        Metered as one call decoding no token (a forward pass of the PRM).

        Raises:
            CapabilityError: The backend serves no process reward model; the message says which do.
        """
        target = self.backend_named(backend)
        if not isinstance(target, RewardReader):
            raise CapabilityError("process rewards", target.name, REWARDS_OFFERED_BY)
        request = Request(tuple(messages), Sampling(temperature=0.0, max_tokens=1))
        charge = await self._charge(request, target, backend)
        try:
            rewards = await target.step_rewards(request)
            if isinstance(target, TokenCounter):  # the PRM's prefill: its prompt tokens
                charge.prompt_tokens(target.prompt_tokens(request))
            return rewards
        finally:
            charge.settle(0)

    async def run_all(self, *awaitables: Awaitable[T]) -> list[T]:
        """Await `awaitables` concurrently, so the engine batches their requests; results in order.

        A budget stop or an error in one cancels the others in the engine and waits until they
        have ended (`reasoning.concurrency.run_all`): nothing of the problem keeps decoding. In
        `deterministic` mode they run one after another, in order (`run_in_order`).
        """
        if self.deterministic:
            return await run_in_order(*awaitables)
        return await run_all(*awaitables)

    async def generate_all(
        self, requests: Sequence[Request], backend: str | None = None
    ) -> list[list[Completion]]:
        """Run several requests concurrently so the engine batches them (`run_all`)."""
        return await self.run_all(*(self.generate(r, backend) for r in requests))

    async def verify(self, texts: Sequence[str]) -> list[Verdict]:
        """Answers and scores of `texts` from the run's verifier.

        Raises:
            VerifierError: The verifier failed with an error of its own (not a `ReasoningError`:
                those pass as they are), or returned another number of verdicts than texts.
        """
        what = f"verifier {type(self.verifier).__name__}"
        return await checked_verdicts(
            what, self.verifier(self.problem, texts), len(texts), ("verdicts", "texts")
        )

    async def candidates(self, completions: Sequence[Completion], prefix: str = "") -> list[Candidate]:
        """Turn completions into verified candidate records.

        A cancelled sample has no final answer: it is recorded with answer None, unverified. A
        sample cut short (``length``) keeps the verifier's answer only when its text writes one
        out in full (`truncated_answers`): the last number of a cut text is not an answer.
        """
        texts = [prefix + c.text for c in completions]
        done = [i for i, c in enumerate(completions) if c.finish_reason != "cancelled"]
        verdicts = [Verdict(answer=None) for _ in completions]
        for i, verdict in zip(done, await self.verify([texts[i] for i in done]), strict=True):
            cut = completions[i].finish_reason == "length" and self.truncated_answers == "written"
            if cut and verdict.answer is not None and written_answer(texts[i]) is None:
                verdict = Verdict(answer=None, score=verdict.score)
            verdicts[i] = verdict
        return [to_candidate(t, c, v) for t, c, v in zip(texts, completions, verdicts, strict=True)]

    async def first_finished(
        self,
        request: Request,
        count: int,
        backend: str | None = None,
        accept: Callable[[Completion], Awaitable[bool]] | None = None,
    ) -> tuple[list[Completion], list[Completion]]:
        """Run `request` until `count` samples have finished (and passed `accept`); cancel the rest.

        Returns:
            The finished samples in finishing order (only accepted ones count towards `count`,
            all are returned), and the samples cancelled in the engine, with their partial text.
        """
        finished: list[Completion] = []
        accepted = 0
        async with self.trace(request, backend) as trace:  # its own samples: others may run beside it
            async for _ in trace:
                if trace.ended is None:
                    continue
                finished.append(trace.ended)
                accepted += 1 if accept is None or await accept(trace.ended) else 0
                if accepted >= count:
                    break
        cancelled = [c for c in trace.completions if c.finish_reason == "cancelled"]
        return finished, cancelled


def _source(target: Backend, request: Request, deterministic: bool) -> AsyncGenerator[Chunk, None]:
    """The chunks of `request`, from `target`.

    In a deterministic run a request's samples start in one engine step (`AdmitsAtOnce`), or,
    where the backend cannot promise that, go out one after another.
    """
    if not deterministic or request.sampling.n == 1:
        return target.stream(request)
    if isinstance(target, AdmitsAtOnce):
        return target.stream_at_once(request)
    return _samples_in_turn(target, request)


async def _samples_in_turn(target: Backend, request: Request) -> AsyncGenerator[Chunk, None]:
    """The samples of `request` as single-sample requests, one after another (deterministic mode).

    An engine fans ``n`` samples out into ``n`` requests that reach its scheduler one by one,
    so they may start in different steps, and the batches (and a CPU's bfloat16 numerics) vary
    from run to run. Sample ``i`` gets seed ``seed + i``, as vLLM seeds its own fan-out, and
    its chunks keep index ``i``. The request's prompt is counted once, and so are its cached
    tokens: the first sample's (the later ones find the prompt the first one cached).
    """
    seed = request.sampling.seed
    for i in range(request.sampling.n):
        single = request.with_sampling(n=1, seed=None if seed is None else seed + i)
        async with contextlib.aclosing(target.stream(single)) as chunks:
            async for chunk in chunks:
                yield replace(chunk, index=i, cached_tokens=chunk.cached_tokens if i == 0 else 0)


def request_seed(run_seed: int, problem_id: str, number: int) -> int:
    """Seed of the `number`-th request (1-based) a strategy sends for a problem."""
    return zlib.crc32(f"{run_seed}:{problem_id}:{number}".encode()) & 0x7FFFFFFF


_MADE_INTO_CANDIDATES: dict[int, weakref.ref[Completion]] = {}
"""Samples a candidate was made of (`to_candidate`), by identity (equal samples of two runs are
two samples): a budget stop adds the others to the record."""


def made_into_candidate(completion: Completion) -> bool:
    """Whether a candidate was made of this very `completion` object (by `to_candidate`)."""
    made = _MADE_INTO_CANDIDATES.get(id(completion))
    return made is not None and made() is completion


def _made(completion: Completion) -> None:
    key = id(completion)

    def forget(ref: weakref.ref[Completion]) -> None:
        if _MADE_INTO_CANDIDATES.get(key) is ref:
            del _MADE_INTO_CANDIDATES[key]

    _MADE_INTO_CANDIDATES[key] = weakref.ref(completion, forget)


def to_candidate(text: str, completion: Completion, verdict: Verdict) -> Candidate:
    """Build a candidate record from a completion and its verdict."""
    _made(completion)
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
        started=completion.started,
        mean_logprob=mean,
        backend=completion.backend,
    )
