"""Scale-out: a dataset run spread over several engine replicas on a Ray cluster.

``reasoning solve --ray auto`` (or ``--ray HOST:PORT``) starts ``--replicas`` Ray actors
(`ReplicaServer`), each holding one engine built from the run's backend settings, and hands the
controller a `ReplicaPool` in place of the single engine. The pool is a Backend like any other;
it also routes per problem (`reasoning.backend.ProblemRouter`):

* ``affinity`` (the default): every request of a problem goes to one replica, chosen when the
  problem first asks (the live replica with the fewest samples in flight relative to its
  capacity, then the fewest problems pinned), so a step-wise search keeps hitting that
  replica's prefix cache;
* ``round-robin``: requests rotate over the live replicas one by one, whatever their problem
  (the comparison point for the prefix-cache share, ``benchmarks/scale_out.py``).

Why Ray actors and not Ray Serve LLM: the controller needs token streaming, cancellation that
aborts the request inside the engine (closing the stream cancels the actor's generator, which
closes the engine's stream), per-problem pinning and exact token accounting (prompt, cached
and decoded tokens per chunk), all through the project's own Backend seam. An actor holding a
`VLLMBackend` gives all four as they are; Serve would add an HTTP hop and a second router in
front of ours, and its strength, autoscaled online traffic, is what ``reasoning proxy`` covers.

Every strategy family runs on a pool. A problem's other calls go where its tokens go (the
pinned replica): hidden states, prompt log-probabilities, and process rewards from a PRM each
replica holds beside its policy (``start_replicas(named=...)``, `ReplicaPool.serving`). A probe
runs where the hidden states are: `reasoning.strategy.Context.mapped_hidden_states` ships its
head to the replica once (`ReplicaPool.mapped_on`), and only the head's output (a probability,
a trajectory's signals) crosses the network, not the states. The replica side is
`reasoning.backends.replica_server`.

A replica that dies mid-run (its actor killed, its node lost) is dropped from the pool; the
requests in flight on it fail with `ReplicaLost`, and `reasoning.evals.run.run_problem` re-runs
each of those problems from the start on a live replica. Finished problems are already in the
results file (or the leaderboard's store): nothing finished is lost, nothing is written twice.
With no replica left the pool raises `BackendUnavailable`, which stops the run.

Ray is an optional extra (``pip install 'reasoning[ray]'``), imported only inside functions.

Example:
    >>> from functools import partial
    >>> from reasoning import ScriptedBackend
    >>> connect("auto")                                               # doctest: +SKIP
    >>> pool = start_replicas([partial(ScriptedBackend, ["\\\\boxed{4}"])] * 2)  # doctest: +SKIP
    >>> Controller(pool).run_sync(problem, SelfConsistency(n=4))      # doctest: +SKIP
    >>> pool.close()                                                  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np

from reasoning.backend import Backend, Chunk, Request, TokenLogprob
from reasoning.backends.replica_server import HeadMissing, NamedSpec, ReplicaServer, ReplicaSpec, RewardEngine
from reasoning.config import EngineConfig
from reasoning.errors import BackendError, BackendUnavailable, ConfigError, EngineStartError, ReplicaLost

__all__ = [
    "ROUTINGS",
    "NamedSpec",
    "ReplicaPool",
    "ReplicaServer",
    "ReplicaSpec",
    "RewardEngine",
    "Routing",
    "cluster_nodes",
    "connect",
    "replica_spec",
    "split_cores",
    "start_pool",
    "start_replicas",
]

logger = logging.getLogger(__name__)

Routing = Literal["affinity", "round-robin"]
ROUTINGS: tuple[Routing, ...] = ("affinity", "round-robin")
"""The routing policies of a `ReplicaPool`."""

T = TypeVar("T")

_FORWARDED_ENV = ("VLLM_", "TORCH_", "TRANSFORMERS_", "TOKENIZERS_", "REASONING_", "HF_", "TQDM_")
"""Environment variables a local cluster's replicas get from the driver (engine log levels)."""


@dataclass
class _Replica:
    """The coordinator's view of one replica actor."""

    name: str
    actor: Any
    backend: str
    model: str
    engine_info: dict[str, Any]
    max_concurrency: int
    counts_tokens: bool
    node: str = ""
    step_tag: str | None = None
    """The policy's step tag, when it is a process reward model too (a scripted backend)."""
    named: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The backends it holds beside its policy, by name (`ReplicaServer.info`)."""
    heads: set[str] = field(default_factory=set)
    """Heads (by digest) it has received (`ReplicaPool.mapped_on`)."""
    sending: dict[str, asyncio.Event] = field(default_factory=dict)
    """Heads being sent to it now (set when the call that carries one is over)."""
    alive: bool = True
    in_flight: int = 0
    """Samples in flight on it now."""
    pinned: int = 0
    """Problems pinned to it so far."""
    requests: int = 0
    """Requests sent to it so far."""


class ReplicaPool:
    """Several engine replicas (Ray actors) behind one Backend, routing per problem.

    Build one with `start_replicas`. Implements the Backend protocol (`stream`: each request
    to the next live replica) and `reasoning.backend.ProblemRouter` (`for_problem`: the
    backend of one problem, see the module docstring for the routing policies).
    """

    def __init__(self, replicas: Sequence[_Replica], routing: Routing = "affinity") -> None:
        """Wrap started replicas (use `start_replicas`).

        Raises:
            ConfigError: No replicas, or an unknown routing policy.
        """
        if not replicas:
            raise ConfigError("a replica pool needs at least one replica")
        if routing not in ROUTINGS:
            raise ConfigError(f"routing {routing!r} is not one of {', '.join(ROUTINGS)}")
        self.replicas = list(replicas)
        """Every replica started, the dead ones included (`_Replica.alive`)."""
        self.routing: Routing = routing
        """How requests are spread (``affinity`` or ``round-robin``)."""
        self._pins: dict[str, _Replica] = {}
        self._turn = 0
        self._digests: dict[Any, str] = {}

    @property
    def name(self) -> str:
        """The replicas' backend name (``vllm``: records read as with one engine)."""
        return self.replicas[0].backend

    @property
    def model(self) -> str:
        """The model the replicas serve (the first replica's)."""
        return self.replicas[0].model

    @property
    def engine_info(self) -> dict[str, Any]:
        """The first replica's engine settings, the replica count and the routing policy."""
        return {**self.replicas[0].engine_info, "replicas": len(self.replicas), "routing": self.routing}

    @property
    def max_concurrency(self) -> int:
        """Samples the live replicas decode at once, together."""
        return sum(r.max_concurrency for r in self.live) or 1

    @property
    def live(self) -> list[_Replica]:
        """The replicas still serving."""
        return [r for r in self.replicas if r.alive]

    def pins(self) -> dict[str, str]:
        """Problem id -> the replica it is pinned to (affinity routing)."""
        return {problem: replica.name for problem, replica in self._pins.items()}

    def for_problem(self, problem_id: str) -> Backend:
        """The backend of problem `problem_id` (`reasoning.backend.ProblemRouter`).

        Affinity: pinned to one live replica, the same on every call while it lives (a problem
        whose replica died is pinned anew). Round-robin: each request to the next live replica.

        Raises:
            BackendUnavailable: No replica is left.
        """
        return self._view(self.pin(problem_id), "")

    def pin(self, problem_id: str) -> _Replica | None:
        """The replica of problem `problem_id` (None with round-robin: each call to the next).

        Raises:
            BackendUnavailable: No replica is left.
        """
        if self.routing == "round-robin":
            self._check_live()
            return None
        replica = self._pins.get(problem_id)
        if replica is None or not replica.alive:
            replica = self._least_loaded()
            replica.pinned += 1
            self._pins[problem_id] = replica
        return replica

    def serving(self, name: str) -> Backend:
        """The backend `name` every replica holds beside its policy (a PRM), routed like the policy.

        It is a `ProblemRouter`: with affinity routing a problem's calls to it go to the replica
        its policy calls go to (``reasoning solve --prm ... --ray``:
        ``{"policy": pool, "prm": pool.serving("prm")}``).

        Raises:
            ConfigError: Some replica does not hold a backend called `name`.
        """
        lacking = [r.name for r in self.replicas if name not in r.named]
        if not name or lacking:
            raise ConfigError(f"replicas {', '.join(lacking) or '(all)'} hold no backend named {name!r}")
        return _Serving(self, name)

    def _view(self, replica: _Replica | None, backend: str) -> Backend:
        """A problem's backend: a `TokenCounter` too when every replica's backend counts tokens."""
        counting = all(_info(r, backend)["counts_tokens"] for r in self.replicas)
        return _CountingRouted(self, replica, backend) if counting else _Routed(self, replica, backend)

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        """Stream `request` on one live replica (the next in turn); closing it aborts the request.

        Raises:
            ReplicaLost: The replica died while serving it.
            BackendUnavailable: No replica is left.
        """
        async with contextlib.aclosing(self.send(self.next_replica(), request)) as chunks:
            async for chunk in chunks:
                yield chunk

    def next_replica(self) -> _Replica:
        """The next live replica in turn (round-robin).

        Raises:
            BackendUnavailable: No replica is left.
        """
        live = self._check_live()
        replica = live[self._turn % len(live)]
        self._turn += 1
        return replica

    def _least_loaded(self) -> _Replica:
        live = self._check_live()
        return min(
            live, key=lambda r: (r.in_flight / max(r.max_concurrency, 1), r.pinned, self.replicas.index(r))
        )

    def _check_live(self) -> list[_Replica]:
        live = self.live
        if not live:
            names = ", ".join(r.name for r in self.replicas)
            raise BackendUnavailable(
                f"every engine replica of the pool has died ({names})", backend=self.name
            )
        return live

    async def send(
        self, replica: _Replica, request: Request, backend: str = ""
    ) -> AsyncGenerator[Chunk, None]:
        """Stream `request` on `replica` (its `backend`); closing the stream cancels it there.

        Closing cancels it in the replica's engine too.

        Raises:
            ReplicaLost: The replica is dead or died while serving it (it leaves the pool).
        """
        import ray

        if not replica.alive:
            raise ReplicaLost(
                f"engine replica {replica.name} is gone", replica=replica.name, backend=self.name
            )
        samples = request.sampling.n
        replica.in_flight += samples
        replica.requests += 1
        finished = False
        refs: Any = None
        try:
            refs = replica.actor.stream.options(num_returns="streaming").remote(request, backend)
            async for ref in refs:
                for chunk in await ref:
                    yield chunk
            finished = True
        except _lost_errors() as exc:
            raise self._lose(replica, exc) from None
        except ray.exceptions.RayTaskError as exc:  # the replica's backend raised: re-raise its error
            raise self._cause(replica, exc) from None
        finally:
            replica.in_flight -= samples
            if refs is not None and not finished:
                with contextlib.suppress(Exception):
                    ray.cancel(refs)

    def _cause(self, replica: _Replica, exc: BaseException) -> Exception:
        """The error a replica's backend raised (Ray wraps it), as itself.

        A `BackendError` keeps its class, ``retryable`` and ``backend``: whether the run goes on
        past it (a retryable one fails one problem) is decided as on one engine. Where Ray could
        not carry the error itself, a `BackendError` naming the replica stands in, keeping what
        Ray's wrapper still says of ``retryable`` and ``backend``.
        """
        import ray

        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception) and not isinstance(cause, ray.exceptions.RayError):
            return cause
        return BackendError(
            f"engine replica {replica.name} failed: {cause or exc}",
            retryable=bool(getattr(cause, "retryable", getattr(exc, "retryable", False))),
            backend=str(getattr(cause, "backend", "") or self.name),
        )

    async def call(self, replica: _Replica, method: str, *args: Any) -> Any:
        """Call `replica`'s `method` (a `ReplicaServer` method) and return its result.

        Raises:
            ReplicaLost: The replica is dead or died during the call (it leaves the pool).
            Exception: What the replica's backend raised, as itself.
        """
        import ray

        if not replica.alive:
            raise ReplicaLost(
                f"engine replica {replica.name} is gone", replica=replica.name, backend=self.name
            )
        try:
            return await getattr(replica.actor, method).remote(*args)
        except _lost_errors() as exc:
            raise self._lose(replica, exc) from None
        except ray.exceptions.RayTaskError as exc:
            raise self._cause(replica, exc) from None

    async def mapped_on(
        self,
        replica: _Replica,
        request: Request,
        layers: Sequence[int],
        positions: Sequence[int],
        head: Callable[[np.ndarray], T],
        backend: str = "",
    ) -> T:
        """`head` applied on `replica` to the hidden states of `request`: only its output returns.

        The head goes (Ray serialises it) with the first call that needs it on each replica (and
        again if the replica dropped it); later calls send only its digest, and calls made
        while it is on its way wait for it rather than send it again.

        Raises:
            ReplicaLost: The replica died.
            CapabilityError: The replica's backend gives no hidden states.
        """
        key = self._digest(head)
        args = (request, list(layers), list(positions), key)
        while True:
            if key in replica.heads:
                try:
                    return await self.call(replica, "mapped_hidden_states", *args, None, backend)  # type: ignore[no-any-return]
                except HeadMissing:  # the replica dropped it (it keeps the most recent few)
                    replica.heads.discard(key)
            sending = replica.sending.get(key)
            if sending is not None:  # another read is sending it: wait, then go without it
                await sending.wait()
                continue
            replica.sending[key] = done = asyncio.Event()
            try:
                mapped = await self.call(replica, "mapped_hidden_states", *args, head, backend)
                replica.heads.add(key)
                return mapped  # type: ignore[no-any-return]
            finally:
                del replica.sending[key]
                done.set()

    def _digest(self, head: Callable[[np.ndarray], Any]) -> str:
        """The sha256 of `head` serialised (remembered for equal heads, e.g. one probe)."""
        import ray

        try:
            known = self._digests.get(head)
        except TypeError:  # unhashable: pickled each time
            known = None
        if known is not None:
            return known
        known = hashlib.sha256(ray.cloudpickle.dumps(head)).hexdigest()
        with contextlib.suppress(TypeError):
            if len(self._digests) >= _DIGESTS_KEPT:
                self._digests.pop(next(iter(self._digests)))
            self._digests[head] = known
        return known

    def _lose(self, replica: _Replica, exc: BaseException) -> ReplicaLost:
        """Drop `replica` from the pool; the error its problems are re-run after."""
        if replica.alive:
            replica.alive = False
            logger.warning(
                "engine replica %s died (%s); %d left", replica.name, type(exc).__name__, len(self.live)
            )
        return ReplicaLost(
            f"engine replica {replica.name} died ({type(exc).__name__})",
            replica=replica.name,
            backend=self.name,
        )

    def prompt_tokens_on(self, replica: _Replica, request: Request, backend: str = "") -> int:
        """`replica`'s count of `request`'s prompt tokens (a blocking call: a prompt-token budget).

        Raises:
            ReplicaLost: The replica died.
            BackendError: What the replica's backend raised, as itself (it cannot count tokens).
        """
        import ray

        try:
            return int(ray.get(replica.actor.prompt_tokens.remote(request, backend), timeout=120))
        except _lost_errors() as exc:
            raise self._lose(replica, exc) from None
        except ray.exceptions.RayTaskError as exc:  # the replica's backend raised: its error, as itself
            raise self._cause(replica, exc) from None

    def counts(self) -> dict[str, dict[str, int]]:
        """Each live replica's own counts (`ReplicaServer.counts`), by replica name."""
        import ray

        live = self.live
        values = ray.get([r.actor.counts.remote() for r in live], timeout=120)
        return {r.name: dict(v) for r, v in zip(live, values, strict=True)}

    def reset_prefix_caches(self) -> None:
        """Empty every live replica's prefix cache (benchmarks start each arm cold)."""
        import ray

        ray.get([r.actor.reset_prefix_cache.remote() for r in self.live], timeout=120)

    def requests(self) -> dict[str, int]:
        """Requests sent to each replica so far, by replica name (the dead ones included)."""
        return {r.name: r.requests for r in self.replicas}

    def close(self) -> None:
        """Shut every replica's engine down and end the actors (idempotent)."""
        import ray

        alive = [r for r in self.replicas if r.alive]
        for r in alive:
            r.alive = False
        if not alive:
            return
        with contextlib.suppress(Exception):
            ray.get([r.actor.close.remote() for r in alive], timeout=60)
        for r in alive:
            with contextlib.suppress(Exception):
                ray.kill(r.actor)


class _Routed:
    """One problem's backend on a pool: pinned to one replica, or round-robin per request.

    It offers what the replicas' backend `backend` offers, served on the replica: hidden states
    (`HiddenStateReader`), a head applied to them there (`HiddenStateMapper`: only its output
    returns), prompt log-probabilities (`PromptScorer`) and process rewards (`RewardReader`); a
    replica whose backend lacks one answers with its `CapabilityError`.
    """

    def __init__(self, pool: ReplicaPool, replica: _Replica | None, backend: str = "") -> None:
        self._pool = pool
        self._replica = replica
        self._backend = backend
        self._counted: dict[Request, int] = {}
        self.served: Counter[str] = Counter()
        """Requests of this problem sent to each replica, by name."""

    @property
    def name(self) -> str:
        return str(_info(self._pool.replicas[0], self._backend)["backend"])

    @property
    def model(self) -> str:
        return str(_info(self._pool.replicas[0], self._backend)["model"])

    @property
    def step_tag(self) -> str:
        """The step tag of the replicas' process reward model (`RewardReader`).

        Raises:
            AttributeError: The backend is no process reward model (so it is no `RewardReader`).
        """
        tag = _info(self._pool.replicas[0], self._backend).get("step_tag")
        if not isinstance(tag, str):
            raise AttributeError("step_tag")
        return tag

    @property
    def max_concurrency(self) -> int:
        return self._replica.max_concurrency if self._replica else self._pool.max_concurrency

    @property
    def engine_info(self) -> dict[str, Any]:
        """The serving replica's engine settings, with ``replica`` and ``replica_requests``."""
        replica = self._replica or self._pool.replicas[0]
        info = {**replica.engine_info, "routing": self._pool.routing, "replica_requests": dict(self.served)}
        if self._replica is not None:
            info["replica"] = self._replica.name
        return info

    def _serving(self) -> _Replica:
        return self._replica or self._pool.next_replica()

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        replica = self._serving()
        self.served[replica.name] += 1
        async with contextlib.aclosing(self._pool.send(replica, request, self._backend)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def hidden_states(
        self, request: Request, layers: Sequence[int], positions: Sequence[int] = (-1,)
    ) -> np.ndarray:
        """Hidden states read on the serving replica; all of them cross the network."""
        args = (request, list(layers), list(positions), self._backend)
        return np.asarray(await self._pool.call(self._serving(), "hidden_states", *args))

    async def mapped_hidden_states(
        self,
        request: Request,
        layers: Sequence[int],
        positions: Sequence[int],
        head: Callable[[np.ndarray], T],
    ) -> T:
        """`head` applied on the serving replica to the hidden states there; only its output returns."""
        return await self._pool.mapped_on(self._serving(), request, layers, positions, head, self._backend)

    async def prompt_logprobs(self, request: Request) -> tuple[TokenLogprob, ...]:
        """The prompt's token log-probabilities, scored on the serving replica."""
        return tuple(await self._pool.call(self._serving(), "prompt_logprobs", request, self._backend))

    async def step_rewards(self, request: Request) -> np.ndarray:
        """Step rewards of the serving replica's process reward model.

        The replica counts the PRM's prompt tokens in the same call; `prompt_tokens` answers
        from that count without another call.
        """
        rewards, counted = await self._pool.call(self._serving(), "step_rewards", request, self._backend)
        if counted is not None:
            if len(self._counted) >= _COUNTS_KEPT:
                self._counted.pop(next(iter(self._counted)))
            self._counted[request] = int(counted)
        return np.asarray(rewards)


class _CountingRouted(_Routed):
    """A `_Routed` whose replicas count prompt tokens (`TokenCounter`, for prompt-token budgets)."""

    def prompt_tokens(self, request: Request) -> int:
        """The serving replica's count of `request`'s prompt tokens (a blocking call).

        A PRM call's count comes with its rewards (`step_rewards`): no second call then.
        """
        counted = self._counted.pop(request, None)
        if counted is not None:
            return counted
        return self._pool.prompt_tokens_on(self._serving(), request, self._backend)


class _Serving:
    """A backend every replica holds beside its policy (a PRM), routed per problem like the policy."""

    def __init__(self, pool: ReplicaPool, backend: str) -> None:
        self._pool = pool
        self._backend = backend

    @property
    def name(self) -> str:
        return str(_info(self._pool.replicas[0], self._backend)["backend"])

    @property
    def model(self) -> str:
        return str(_info(self._pool.replicas[0], self._backend)["model"])

    def for_problem(self, problem_id: str) -> Backend:
        """The backend of problem `problem_id`: on the replica its policy calls go to (affinity)."""
        return self._pool._view(self._pool.pin(problem_id), self._backend)

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        """Stream `request` on the next live replica's backend."""
        replica = self._pool.next_replica()
        async with contextlib.aclosing(self._pool.send(replica, request, self._backend)) as chunks:
            async for chunk in chunks:
                yield chunk


_COUNTS_KEPT = 1024
"""PRM prompt-token counts a problem's view keeps until the run asks for them."""

_DIGESTS_KEPT = 64
"""Heads whose pickled form and digest the pool remembers (equal heads are pickled once)."""


def _info(replica: _Replica, backend: str) -> dict[str, Any]:
    """Name, model, token counting and step tag of `replica`'s backend `backend` (``""``: the policy)."""
    if backend:
        return replica.named[backend]
    return {
        "backend": replica.backend,
        "model": replica.model,
        "counts_tokens": replica.counts_tokens,
        "step_tag": replica.step_tag,
    }


def _lost_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors that mean the actor (or its worker, or its node) is gone."""
    import ray.exceptions as rex

    names = (
        "RayActorError",
        "ActorDiedError",
        "ActorUnavailableError",
        "WorkerCrashedError",
        "NodeDiedError",
    )
    return tuple(getattr(rex, n) for n in names if isinstance(getattr(rex, n, None), type))


def _parse_address(address: str) -> tuple[str, int]:
    """Host and port of a ``HOST:PORT`` (or ``ray://HOST:PORT``) address.

    Raises:
        ConfigError: It is not of that form.
    """
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--ray {address!r} is neither 'auto' nor a cluster address HOST:PORT (e.g. 10.0.0.5:6379, "
            "what `ray start --head` printed)"
        )
    return host.strip("[]"), int(port)


def connect(address: str = "auto", *, verbose: bool = False, num_cpus: int | None = None) -> None:
    """Connect this process to a Ray cluster (once; later calls do nothing).

    Args:
        address: ``auto``: the running cluster this machine belongs to, else a new local one
            (all cores, no dashboard, a small object store); or a cluster's ``HOST:PORT``.
        verbose: Show the replicas' logs (the engines') here.
        num_cpus: CPUs of a new local cluster (default: the machine's cores).

    Raises:
        ConfigError: Ray is not installed, or `address` is malformed.
        BackendUnavailable: No cluster answers at `address`.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'reasoning[ray]'") from None
    if address != "auto":
        host, port = _parse_address(address)
    if ray.is_initialized():
        current = str(ray.get_runtime_context().gcs_address or "")
        if address not in ("auto", current, f"ray://{current}"):
            raise ConfigError(
                f"this process is already connected to the Ray cluster at {current}, not {address}"
            )
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from an offline machine
    level = logging.INFO if verbose else logging.ERROR
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV)}
    options: dict[str, Any] = {"logging_level": level, "log_to_driver": verbose}
    if address != "auto":
        try:  # Ray itself retries an unreachable address for minutes
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            raise BackendUnavailable(
                f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one there with "
                "`ray start --head`, or pass --ray auto for a local one",
                backend="ray",
            ) from None
        try:
            ray.init(address=address, **options)
        except Exception as exc:
            raise BackendUnavailable(
                f"could not join the Ray cluster at {address}: {exc}", backend="ray"
            ) from None
        return
    try:
        ray.init(address="auto", **options)
        return
    except ConnectionError:
        pass  # no running cluster on this machine: start a local one
    cpus = num_cpus or os.cpu_count() or 1
    # Ray runs its workers 15 nice levels below the driver; an engine replica is the run's
    # work, not background work: it gets the priority an in-process engine would have.
    os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            object_store_memory=256 << 20,  # chunks are small; the default takes 30% of RAM
            runtime_env={"env_vars": env},
            **options,
        )
    except Exception as exc:
        raise BackendUnavailable(f"could not start a local Ray cluster: {exc}", backend="ray") from None


def cluster_nodes() -> int:
    """Alive nodes of the connected cluster (the default number of replicas: one per node)."""
    import ray

    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))


def start_replicas(
    specs: Sequence[ReplicaSpec],
    *,
    routing: Routing = "affinity",
    names: Sequence[str] | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    envs: Sequence[Mapping[str, str]] | None = None,
    named: Mapping[str, NamedSpec] | None = None,
    timeout: float = 600.0,
) -> ReplicaPool:
    """Start one replica actor per spec on the connected cluster (`connect` first); their pool.

    Replicas are spread over the nodes (Ray's SPREAD scheduling). Each asks for
    ``min(1, cluster CPUs / replicas)`` CPUs (so all fit on one small machine too) and, on a
    cluster with GPUs, one GPU per engine replica. On a local one-node CPU cluster, several
    engine replicas each compute on their own share of the cores (`split_cores`) unless `envs`
    says otherwise.

    Args:
        specs: One per replica: an `EngineConfig` or a function that builds a backend.
        routing: ``affinity`` (the default) or ``round-robin`` (see the module docstring).
        names: Replica names (default ``replica-0``, ``replica-1``, ...).
        num_cpus: CPUs each replica asks for (default: as above).
        num_gpus: GPUs each engine replica asks for (default: 1 when the cluster has GPUs).
        envs: Environment variables of each replica's process, one mapping per replica (e.g.
            ``VLLM_CPU_OMP_THREADS_BIND``: the cores a CPU engine computes on).
        named: Backends every replica holds beside its policy, by name: a PRM's engine
            (`RewardEngine`) or a function that builds a backend; the pool serves one with
            `ReplicaPool.serving`.
        timeout: Seconds to wait for every replica to start.

    Raises:
        ConfigError: No specs, or names that do not match them.
        EngineStartError: A replica's engine failed to start (the others are ended).
    """
    import ray

    if not specs:
        raise ConfigError("start_replicas needs at least one replica")
    names = list(names or [f"replica-{i}" for i in range(len(specs))])
    if len(names) != len(specs) or len(set(names)) != len(names):
        raise ConfigError("replica names must be unique, one per replica")
    if envs is not None and len(envs) != len(specs):
        raise ConfigError("envs needs one mapping per replica")
    resources = ray.cluster_resources()
    cpus = num_cpus if num_cpus is not None else min(1.0, float(resources.get("CPU", 1)) / len(specs))
    gpus = num_gpus if num_gpus is not None else (1.0 if resources.get("GPU", 0) >= 1 else 0.0)
    if envs is None and not gpus and _on_this_machine_only():
        envs = split_cores(specs, os.cpu_count() or 1)
    actor_class = ray.remote(ReplicaServer)
    actors = []
    for i, (name, spec) in enumerate(zip(names, specs, strict=True)):
        engine = isinstance(spec, EngineConfig)
        env = {"runtime_env": {"env_vars": dict(envs[i])}} if envs is not None and envs[i] else {}
        actors.append(
            actor_class.options(
                num_cpus=cpus,
                num_gpus=gpus if engine else 0,
                scheduling_strategy="SPREAD",
                max_concurrency=1000,
                **env,
            ).remote(name, spec, dict(named or {}))
        )
    try:
        infos = ray.get([a.info.remote() for a in actors], timeout=timeout)
    except Exception as exc:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        raise EngineStartError(f"an engine replica failed to start: {_first_line(exc)}") from None
    replicas = [
        _Replica(
            name=info["name"],
            actor=actor,
            backend=info["backend"],
            model=info["model"],
            engine_info=info["engine_info"],
            max_concurrency=info["max_concurrency"],
            counts_tokens=info["counts_tokens"],
            node=info["node"],
            step_tag=info["step_tag"],
            named=info["named"],
        )
        for actor, info in zip(actors, infos, strict=True)
    ]
    return ReplicaPool(replicas, routing)


def split_cores(specs: Sequence[ReplicaSpec], cores: int) -> list[dict[str, str]] | None:
    """Give each CPU engine replica of one machine its own cores (None: leave them as they are).

    Two engines that both compute on every core slow each other down badly (measured on 2
    cores: 0.39x the problems/hour of one engine; each on its own core: 1.21x, docs/scale_out.md).
    So when several engine replicas share this machine and there are at least as many cores,
    engine replica i computes on the i-th contiguous share of the cores
    (``VLLM_CPU_OMP_THREADS_BIND``). A binding the caller set in the environment is kept.

    Example:
        >>> split_cores([EngineConfig()] * 2, 4)
        [{'VLLM_CPU_OMP_THREADS_BIND': '0-1'}, {'VLLM_CPU_OMP_THREADS_BIND': '2-3'}]
        >>> split_cores([EngineConfig()] * 3, 2) is None   # fewer cores than engines
        True
    """
    engines = [i for i, spec in enumerate(specs) if isinstance(spec, EngineConfig)]
    bound = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    users = bound is not None and bound != os.environ.get("REASONING_DEFAULT_OMP_BIND")
    if len(engines) < 2 or cores < len(engines) or users:
        return None
    envs: list[dict[str, str]] = [{} for _ in specs]
    for k, i in enumerate(engines):
        first, end = k * cores // len(engines), (k + 1) * cores // len(engines)
        bind = str(first) if end - first == 1 else f"{first}-{end - 1}"
        envs[i] = {"VLLM_CPU_OMP_THREADS_BIND": bind}
    return envs


def _on_this_machine_only() -> bool:
    """The cluster is one node, this machine (a local cluster): its cores are ``os.cpu_count()``."""
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    here = ray.util.get_node_ip_address()
    return len(nodes) == 1 and nodes[0].get("NodeManagerAddress") == here


def _first_line(exc: BaseException) -> str:
    """The most telling line of a replica's start-up failure (its own error, not Ray's wrapping)."""
    text = str(getattr(exc, "cause", None) or exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    ours = [line for line in lines if "Error:" in line and "ray." not in line.split("Error:")[0]]
    return (ours[-1] if ours else lines[0] if lines else type(exc).__name__)[:500]


def replica_spec(backend: Any, hidden_states: bool = False) -> ReplicaSpec:
    """What each replica of a run holds, from the run spec's backend (`reasoning.backends.specs`).

    An engine offers hidden states only when `hidden_states` (a strategy of the run reads them:
    the engine then runs eager, with its hooks installed), as an in-process engine would.

    Raises:
        ConfigError: The backend is a running server (it is a replica already: use it as it is).
    """
    from functools import partial

    from reasoning.backends.scripted import ScriptedBackend
    from reasoning.backends.specs import ScriptedReply, VLLMEngine
    from reasoning.backends.start import engine_config

    if isinstance(backend, VLLMEngine):
        return engine_config(backend, hidden_states)
    if isinstance(backend, ScriptedReply):
        return partial(ScriptedBackend, [backend.script])
    raise ConfigError(
        "--ray starts in-process engines (--backend vllm) or scripted replicas (--backend scripted); "
        "a running server cannot be replicated from here"
    )


def start_pool(
    backend: Any,
    *,
    address: str = "auto",
    replicas: int | None = None,
    routing: Routing = "affinity",
    hidden_states: bool = False,
    prm: str | None = None,
    verbose: bool = False,
) -> ReplicaPool:
    """Connect to the cluster at `address` and start a run's replicas (``solve --ray``).

    ``reasoning solve --ray`` and ``reasoning leaderboard run --ray`` start their pools here.
    With `prm`, every replica holds the PRM's pooling engine beside its policy, as ``prm``
    (the run's backends: ``{"policy": pool, "prm": pool.serving("prm")}``).

    Args:
        backend: The run spec's one backend (`reasoning.backends.specs.VLLMEngine` or
            `reasoning.backends.specs.ScriptedReply`).
        address: ``auto`` or a cluster's ``HOST:PORT`` (`connect`).
        replicas: How many (default: one per node of the cluster).
        routing: ``affinity`` or ``round-robin``.
        hidden_states: The run's strategies read hidden states (the engines offer them).
        prm: A process reward model each replica serves beside its policy (``--prm``).
        verbose: Show the replicas' logs here.

    Raises:
        ConfigError: A setting cannot run on a pool (the message says why).
        BackendUnavailable: No cluster answers at `address`.
        EngineStartError: A replica failed to start.
    """
    spec = replica_spec(backend, hidden_states)
    connect(address, verbose=verbose)
    count = replicas or cluster_nodes()
    if count < 1:
        raise ConfigError(f"--replicas must be at least 1, got {count}")
    named: dict[str, NamedSpec] = {"prm": RewardEngine(prm)} if prm is not None else {}
    return start_replicas([spec] * count, routing=routing, named=named)
