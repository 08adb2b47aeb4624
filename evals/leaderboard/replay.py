"""Selection over another entry's stored samples: the same samples, only the selection differs.

A leaderboard entry with ``over: sc@8`` runs its strategy on each problem with a backend that
serves the *sampled* requests of the problem from the samples the ``sc@8`` cell stored for it,
in order, and sends every other request (hidden-state reads, greedy judge calls, continuations)
to the engine. A best-of-n with the value model, an LT selection or a weighted vote over 8
samples then decodes nothing: the comparison with the vote is on identical samples (a paired
test with no sampling noise between the arms).

Costs are counted honestly: the replayed samples' tokens are the entry's own output tokens (it
needs them), its seconds are the source run's plus its own, and the reads are its calls.
A strategy asking for more samples than were stored, or for log-probabilities the record does
not keep, is refused. In a deterministic leaderboard (``deterministic: true``) the stored samples
were decoded deterministically and the rest goes to the engine as a deterministic run sends it
(the engine's samples admitted at once, or one by one), so a selection repeats too.

Selections over the same samples read the same hidden states: the value-weighted vote and the
value argmax apply one value model to the same 8 samples, LT selection and LT weighting the same
signals. A `ReadMemo` shared by a model's replays computes each probe read once (its key: the
prompt, the layers, the positions and the head: a probe by its weights, a function with its
arguments) and serves the others from memory; each
entry is still charged the read as if it ran alone, so its costs are what it would cost by itself.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

import numpy as np

from reasoning import Problem, Run
from reasoning.backend import AdmitsAtOnce, Chunk, HiddenStateMapper, Request
from reasoning.errors import ConfigError
from reasoning.problem import default_prompt

__all__ = ["ReadMemo", "ReplayBackend", "replayable"]

T = TypeVar("T")


def replayable(request: Request) -> bool:
    """Whether `request` draws fresh samples of the problem (served from the stored ones)."""
    return not request.prefix and request.sampling.temperature > 0


class ReadMemo:
    """Probe reads computed once and shared: in flight (a second asker awaits the first) and done.

    Holds at most `limit` results, the oldest dropped first; a read that failed is not kept.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._done: OrderedDict[Hashable, Any] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Future[Any]] = {}
        self.hits = 0
        """Reads served from memory (the engine computed them once for another entry)."""
        self.misses = 0
        """Reads the engine computed."""
        self._probes: dict[int, tuple[Any, str]] = {}  # id -> (the probe, kept alive; its digest)

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """The result for `key`: remembered, awaited from the read in flight, or `compute()`."""
        if key in self._done:
            self.hits += 1
            self._done.move_to_end(key)
            value: T = self._done[key]
            return value
        if key in self._pending:
            self.hits += 1
            shared: T = await asyncio.shield(self._pending[key])
            return shared
        self.misses += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            result = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        else:
            future.set_result(result)
            self._done[key] = result
            while len(self._done) > self.limit:
                self._done.popitem(last=False)
            return result
        finally:
            del self._pending[key]

    def head_key(self, head: Any) -> Hashable:
        """What identifies `head` across entries: equal heads share their reads.

        A probe head by its weights' sha256 and card, a partial by its function and arguments, a
        function by its name, anything else by itself (equality).
        """
        if isinstance(head, functools.partial):
            return ("partial", self.head_key(head.func), head.args, tuple(sorted(head.keywords.items())))
        probe = getattr(head, "probe", None)
        if probe is not None and hasattr(probe, "arrays"):
            known = self._probes.get(id(probe))
            if known is None or known[0] is not probe:
                digest = hashlib.sha256()
                for name in sorted(probe.arrays):
                    digest.update(name.encode() + np.ascontiguousarray(probe.arrays[name]).tobytes())
                digest.update(repr(getattr(probe, "card", "")).encode())
                known = self._probes[id(probe)] = (probe, digest.hexdigest())
            return (type(head).__module__, type(head).__qualname__, known[1])
        if callable(head) and hasattr(head, "__qualname__"):
            return (getattr(head, "__module__", ""), head.__qualname__)
        return head  # type: ignore[no-any-return]


class ReplayBackend:
    """`inner`, with the problem's sampled requests served from `source`'s stored candidates."""

    def __init__(self, inner: Any, source: Run, label: str, memo: ReadMemo | None = None) -> None:
        self.inner = inner
        self.source = source
        self.label = label
        self.memo = memo
        """Probe reads shared with the other selections over the same samples (None: each reads)."""
        self.served = 0
        self.replayed_tokens = 0
        """Output tokens of the stored samples served (decoded by the source, not here)."""

    def __getattr__(self, name: str) -> Any:  # engine_info, model, max_concurrency, ...
        if name == "stream_at_once":  # never the engine's own: it would pass the stored samples by
            if not isinstance(self.inner, AdmitsAtOnce):
                raise AttributeError(name)  # a deterministic run sends the samples one by one
            return self._stream_at_once
        return getattr(self.inner, name)

    @property
    def name(self) -> str:
        """The engine's name."""
        return str(self.inner.name)

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        """The next stored samples for a sampled request; anything else from the engine."""
        if not replayable(request):
            async for chunk in self.inner.stream(request):
                yield chunk
            return
        if request.sampling.logprobs is not None:
            raise ConfigError(
                f"over {self.label}: stored samples keep no log-probabilities; this strategy needs them"
            )
        sampling = request.sampling
        asked = Problem(self.source.problem_id, self.source.question)
        if tuple(request.messages) != default_prompt(asked) or sampling.stop != tuple(
            self.source.params.get("stop") or ()
        ):
            raise ConfigError(
                f"over {self.label}: this strategy's sampled request differs from the stored samples' "
                "(another prompt or stop strings)"
            )
        differ = [
            f"{name} {getattr(sampling, name)} (stored: {self.source.params[name]})"
            for name in ("temperature", "top_p", "max_tokens")
            if name in self.source.params and getattr(sampling, name) != self.source.params[name]
        ]
        if differ:
            raise ConfigError(f"over {self.label}: this strategy samples with {', '.join(differ)}")
        stored = self.source.candidates
        n = request.sampling.n
        if self.served + n > len(stored):
            raise ConfigError(
                f"over {self.label}: {len(stored)} samples were stored for {self.source.problem_id}; "
                f"this strategy asks for {self.served + n}"
            )
        taken, self.served = stored[self.served : self.served + n], self.served + n
        self.replayed_tokens += sum(c.output_tokens for c in taken)
        for index, candidate in enumerate(taken):
            yield Chunk(
                index=index,
                text=candidate.text,
                tokens=candidate.output_tokens,
                prompt_tokens=candidate.prompt_tokens,
                cached_tokens=candidate.cached_tokens,
                finish_reason="length"
                if candidate.finish_reason == "length"
                else "cancelled"
                if candidate.finish_reason == "cancelled"
                else "stop",
            )

    def _stream_at_once(self, request: Request) -> AsyncGenerator[Chunk, None]:
        """`stream`, with the engine's samples admitted in one step (`AdmitsAtOnce`, when it can).

        A deterministic run sends a request through this: the stored samples are served as they
        are, the rest goes to the engine's `stream_at_once`.
        """
        return self.stream(request) if replayable(request) else self.inner.stream_at_once(request)

    async def reset_prefix_cache(self) -> None:
        """Empty the engine's prefix cache (`PrefixCache`: a deterministic run starts each problem cold).

        Raises:
            ConfigError: The engine has no prefix cache to empty (a server).
        """
        reset = getattr(self.inner, "reset_prefix_cache", None)
        if reset is None:
            raise ConfigError(f"over {self.label}: backend {self.name!r} cannot empty its prefix cache")
        await reset()

    async def hidden_states(
        self, request: Request, layers: Sequence[int], positions: Sequence[int] = (-1,)
    ) -> np.ndarray:
        """The engine's hidden states."""
        return np.asarray(await self.inner.hidden_states(request, layers, positions))

    async def mapped_hidden_states(
        self,
        request: Request,
        layers: Sequence[int],
        positions: Sequence[int],
        head: Callable[[np.ndarray], T],
    ) -> T:
        """`head` over the engine's hidden states (`HiddenStateMapper`), read once per `memo`."""

        async def compute() -> T:
            if isinstance(self.inner, HiddenStateMapper):
                return await self.inner.mapped_hidden_states(request, layers, positions, head)
            return head(await self.hidden_states(request, layers, positions))

        if self.memo is None:
            return await compute()
        key = (request.messages, request.prefix, tuple(layers), tuple(positions), self.memo.head_key(head))
        try:
            hash(key)
        except TypeError:  # a head with unhashable arguments: read without sharing
            return await compute()
        return await self.memo.get(key, compute)

    def prompt_tokens(self, request: Request) -> int:
        """The engine's prompt token count."""
        return int(self.inner.prompt_tokens(request))


def with_source_costs(run: Run, source: Run, label: str, replayed_tokens: int = 0) -> Run:
    """`run` with the source run's wall time added (its samples took that long to decode).

    ``usage.replayed_tokens`` says how many of its output tokens the source decoded (the
    engine's throughput in this session leaves them out).
    """
    usage = dict(run.usage)
    usage["replayed_tokens"] = replayed_tokens
    usage["seconds"] = float(usage.get("seconds", 0.0)) + float(source.usage.get("seconds", 0.0))
    if "sequential_tokens" in source.usage:
        usage["sequential_tokens"] = source.usage["sequential_tokens"]
    spec = {**run.spec, "over": label}
    return run.model_copy(update={"usage": usage, "spec": spec})
