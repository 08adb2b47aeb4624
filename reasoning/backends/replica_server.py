"""The replica side of scale-out: one Ray actor's body, holding its engine (and a PRM beside it).

`reasoning.backends.replicas.start_replicas` turns `ReplicaServer` into an async Ray actor; its
methods are the remote calls of the coordinator's `reasoning.backends.replicas.ReplicaPool`.
Besides streaming tokens, a replica serves every ability its backends have, where the engine
is, so that only small results cross the network:

* hidden states (``hidden_states``), and a head applied to them (``mapped_hidden_states``: a
  probe's head, shipped once per replica and kept, turns ``[positions, layers, hidden]`` floats
  into a score; only the score travels back);
* prompt log-probabilities (``prompt_logprobs``), and process rewards (``step_rewards``) from a
  PRM the replica holds beside its policy (`RewardEngine`, or any backend built by name).

Every call names the backend it is for (``""``: the policy; ``"prm"``: a PRM held beside it).
A backend that lacks an ability answers with the same `CapabilityError` it would give in
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reasoning.backend import (
    HIDDEN_STATES_OFFERED_BY,
    PROMPT_LOGPROBS_OFFERED_BY,
    REWARDS_OFFERED_BY,
    Chunk,
    Request,
    TokenCounter,
    TokenLogprob,
)
from reasoning.concurrency import task_group
from reasoning.config import EngineConfig
from reasoning.errors import BackendError, CapabilityError, ConfigError

__all__ = ["HEADS_KEPT", "HeadMissing", "NamedSpec", "ReplicaServer", "ReplicaSpec", "RewardEngine"]

ReplicaSpec = EngineConfig | Callable[[], Any]
"""What a replica holds: an in-process engine's settings, or a function that builds a backend
(called inside the replica's process; e.g. ``functools.partial(ScriptedBackend, [...])``)."""


@dataclass(frozen=True)
class RewardEngine:
    """A process reward model's pooling engine, started on every replica beside its policy.

    The replica starts it as ``reasoning solve --prm`` does in process
    (`reasoning.backends.start.start_reward`), so a step search's PRM calls go to the replica
    that holds the problem's prefix, and its policy and PRM share that machine.
    """

    model: str
    """The PRM: a local folder or a Hugging Face id (e.g. Qwen/Qwen2.5-Math-PRM-7B)."""


NamedSpec = RewardEngine | Callable[[], Any]
"""A backend a replica holds beside its policy, by name: a PRM engine, or a function that builds
a backend (tests: ``functools.partial(ScriptedBackend, [...], rewards=...)``)."""

HEADS_KEPT = 32
"""Heads a replica keeps (least recently used dropped first; the coordinator resends a dropped one)."""


class HeadMissing(LookupError):
    """A replica was asked to apply a head it does not hold (never sent, or dropped): send it."""


class ReplicaServer:
    """The body of one replica actor: its backends, served to the coordinator over Ray.

    `reasoning.backends.replicas.start_replicas` turns it into an async Ray actor; its methods
    are the remote calls. Each takes the name of the backend it is for (``""``: the policy).
    """

    def __init__(self, name: str, spec: ReplicaSpec, named: Mapping[str, NamedSpec] | None = None) -> None:
        """Build the replica's backends (engines start here, in the actor's process).

        Raises:
            ConfigError: A named backend is called ``""`` (the policy's name).
            EngineStartError: An engine could not start (those started are shut down).
        """
        self.name = name
        if isinstance(spec, EngineConfig):
            from reasoning.backends.vllm_local import VLLMBackend

            # Ray sets OMP_NUM_THREADS to the actor's (fractional) CPUs; the engine computes on
            # the cores its own settings bind (VLLM_CPU_OMP_THREADS_BIND), all of them by default.
            os.environ["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)
            self.backend: Any = VLLMBackend.from_config(EngineConfig(**spec.engine_settings()))
        else:
            self.backend = spec()
        self.backends: dict[str, Any] = {"": self.backend}
        """The policy (``""``) and the backends held beside it, by name."""
        try:
            for key, each in (named or {}).items():
                if not key:
                    raise ConfigError("a backend held beside a replica's policy needs a name")
                self.backends[key] = _build(key, each)
        except BaseException:
            self.close()
            raise
        self.requests = 0
        """Requests received."""
        self.cancelled = 0
        """Requests closed before their stream ended (aborted in the engine)."""
        self.reads: Counter[str] = Counter()
        """Calls other than streams, by kind (``hidden_states``, ``mapped_hidden_states``,
        ``prompt_logprobs``, ``step_rewards``) and heads received (``heads``)."""
        self._heads: OrderedDict[str, Callable[[np.ndarray], Any]] = OrderedDict()

    def info(self) -> dict[str, Any]:
        """Name, backend name, model, engine settings, capacity and abilities of this replica.

        ``named`` describes the backends held beside the policy (name, model, step tag).
        """
        b = self.backend
        return {
            "name": self.name,
            "backend": str(b.name),
            "model": str(getattr(b, "model", "") or b.name),
            "engine_info": dict(getattr(b, "engine_info", {}) or {}),
            "max_concurrency": int(getattr(b, "max_concurrency", 32)),
            "counts_tokens": isinstance(b, TokenCounter),
            "node": _node_id(),
            "step_tag": _describe(b)["step_tag"],
            "named": {key: _describe(each) for key, each in self.backends.items() if key},
        }

    def _backend(self, backend: str) -> Any:
        try:
            return self.backends[backend]
        except KeyError:
            held = ", ".join(repr(k) for k in self.backends if k) or "none"
            raise ConfigError(
                f"replica {self.name} holds no backend {backend!r} (held beside it: {held})"
            ) from None

    async def stream(self, request: Request, backend: str = "") -> AsyncGenerator[list[Chunk], None]:
        """Stream `request`'s chunks, in batches of those ready together (one Ray object each).

        Cancelling the remote generator cancels this one, which closes the backend's stream:
        the request is aborted in the engine.
        """
        self.requests += 1
        target = self._backend(backend)
        queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async with contextlib.aclosing(target.stream(request)) as chunks:
                    async for chunk in chunks:
                        queue.put_nowait(chunk)
            except Exception as exc:  # the backend's error reaches the coordinator as itself
                queue.put_nowait(exc)
            else:
                queue.put_nowait(None)

        async with task_group() as group:  # the pump never outlives this stream
            task = group.create_task(pump())
            try:
                while True:
                    batch: list[Chunk] = []
                    item: Chunk | BaseException | _More | None = await queue.get()
                    while isinstance(item, Chunk):
                        batch.append(item)
                        item = queue.get_nowait() if not queue.empty() else _MORE
                    if batch:
                        yield batch
                    if item is None:
                        return
                    if isinstance(item, BaseException):
                        raise item
            finally:
                if not task.done():  # closed or cancelled early: abort the request in the engine
                    self.cancelled += 1
                    task.cancel()

    def prompt_tokens(self, request: Request, backend: str = "") -> int:
        """The backend's count of `request`'s prompt tokens (`TokenCounter`).

        Raises:
            BackendError: This replica's backend cannot count tokens.
        """
        target = self._backend(backend)
        if not isinstance(target, TokenCounter):
            raise BackendError(f"replica {self.name} cannot count prompt tokens", backend=target.name)
        return target.prompt_tokens(request)

    async def hidden_states(
        self, request: Request, layers: Sequence[int], positions: Sequence[int], backend: str = ""
    ) -> np.ndarray:
        """The backend's hidden states of `request` (`reasoning.backend.HiddenStateReader`).

        Raises:
            CapabilityError: The backend cannot give hidden states.
        """
        self.reads["hidden_states"] += 1
        return await self._read(request, layers, positions, backend)

    async def _read(
        self, request: Request, layers: Sequence[int], positions: Sequence[int], backend: str
    ) -> np.ndarray:
        target = self._backend(backend)
        if not callable(getattr(target, "hidden_states", None)):
            raise CapabilityError("hidden states", target.name, HIDDEN_STATES_OFFERED_BY)
        return np.asarray(await target.hidden_states(request, layers, positions))

    async def mapped_hidden_states(
        self,
        request: Request,
        layers: Sequence[int],
        positions: Sequence[int],
        key: str,
        head: Callable[[np.ndarray], Any] | None = None,
        backend: str = "",
    ) -> Any:
        """The head `key` applied to the hidden states of `request`, here; only its output returns.

        Args:
            request: What to read, as for `hidden_states`.
            layers: Layers to read.
            positions: Token positions to read.
            key: The head's content digest (the coordinator's name for it).
            head: The head (Ray serialises it), sent with the first call that needs it on this replica.
            backend: Which backend's states.

        Raises:
            HeadMissing: `head` was not sent and this replica does not hold `key` (anymore).
            CapabilityError: The backend cannot give hidden states.
        """
        if head is not None:
            self._heads[key] = head  # sent by this run's own coordinator
            self.reads["heads"] += 1
            while len(self._heads) > HEADS_KEPT:
                self._heads.popitem(last=False)
        function = self._heads.get(key)
        if function is None:
            raise HeadMissing(f"replica {self.name} does not hold head {key[:12]}")
        self._heads.move_to_end(key)
        self.reads["mapped_hidden_states"] += 1
        return function(await self._read(request, layers, positions, backend))

    async def prompt_logprobs(self, request: Request, backend: str = "") -> tuple[TokenLogprob, ...]:
        """The backend's log-probabilities of `request`'s prompt tokens (`PromptScorer`).

        Raises:
            CapabilityError: The backend cannot score prompts.
        """
        target = self._backend(backend)
        if not callable(getattr(target, "prompt_logprobs", None)):
            raise CapabilityError("prompt log-probabilities", target.name, PROMPT_LOGPROBS_OFFERED_BY)
        self.reads["prompt_logprobs"] += 1
        return tuple(await target.prompt_logprobs(request))

    async def step_rewards(self, request: Request, backend: str = "") -> tuple[np.ndarray, int | None]:
        """The backend's step rewards of `request` (`RewardReader`) and its prompt tokens.

        The count (None when the backend cannot count) saves the coordinator a second call: the
        run charges a PRM call its prompt tokens.

        Raises:
            CapabilityError: The backend serves no process reward model.
        """
        target = self._backend(backend)
        if not callable(getattr(target, "step_rewards", None)):
            raise CapabilityError("process rewards", target.name, REWARDS_OFFERED_BY)
        self.reads["step_rewards"] += 1
        rewards = np.asarray(await target.step_rewards(request))
        counted = target.prompt_tokens(request) if isinstance(target, TokenCounter) else None
        return rewards, counted

    def counts(self) -> dict[str, int]:
        """Requests received and cancelled, other calls by kind, and tokens decoded and delivered.

        Tokens are the policy's (an engine's own statistics, or a scripted backend's count).
        """
        out = {"requests": self.requests, "cancelled": self.cancelled, **self.reads}
        stats = getattr(self.backend, "stats", None)
        if stats is not None:
            out["decoded_tokens"] = int(stats.decoded_tokens)
            out["delivered_tokens"] = int(stats.delivered_tokens)
        decoded = getattr(self.backend, "decoded_tokens", None)
        if isinstance(decoded, int):  # a ScriptedBackend counts its streamed tokens
            out["decoded_tokens"] = out["delivered_tokens"] = decoded
        return out

    async def reset_prefix_cache(self) -> None:
        """Empty the engines' prefix caches, where a backend has one to empty."""
        for each in self.backends.values():
            reset = getattr(each, "reset_prefix_cache", None)
            if reset is not None:
                await reset()

    def ping(self) -> str:
        """The replica's name: it is alive and answering."""
        return self.name

    def close(self) -> None:
        """Shut the backends down (an engine's processes stop)."""
        for each in self.backends.values():
            close = getattr(each, "close", None)
            if close is not None:
                close()


class _More:
    """Marks an empty queue between two batches (the next item is not there yet)."""


_MORE = _More()


def _build(name: str, spec: NamedSpec) -> Any:
    """Start a backend held beside the policy."""
    if isinstance(spec, RewardEngine):
        from reasoning.backends.start import start_reward

        return start_reward(spec.model, name=name)
    return spec()


def _describe(backend: Any) -> dict[str, Any]:
    """What the coordinator needs to know of a backend held beside the policy."""
    tag = getattr(backend, "step_tag", None)
    return {
        "backend": str(backend.name),
        "model": str(getattr(backend, "model", "") or backend.name),
        "counts_tokens": isinstance(backend, TokenCounter),
        "step_tag": tag if isinstance(tag, str) else None,
    }


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())
