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
import logging
import os
import socket
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reasoning.backend import Backend, Chunk, Request, TokenCounter
from reasoning.concurrency import task_group
from reasoning.config import EngineConfig
from reasoning.errors import BackendError, BackendUnavailable, ConfigError, EngineStartError, ReplicaLost

__all__ = [
    "ROUTINGS",
    "ReplicaPool",
    "ReplicaServer",
    "ReplicaSpec",
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

ReplicaSpec = EngineConfig | Callable[[], Any]
"""What a replica holds: an in-process engine's settings, or a function that builds a backend
(called inside the replica's process; e.g. ``functools.partial(ScriptedBackend, [...])``)."""

_FORWARDED_ENV = ("VLLM_", "TORCH_", "TRANSFORMERS_", "TOKENIZERS_", "REASONING_", "HF_", "TQDM_")
"""Environment variables a local cluster's replicas get from the driver (engine log levels)."""


class ReplicaServer:
    """The body of one replica actor: one backend, served to the coordinator over Ray.

    `start_replicas` turns it into an async Ray actor; its methods are the remote calls.
    """

    def __init__(self, name: str, spec: ReplicaSpec) -> None:
        """Build the replica's backend (an engine starts here, in the actor's process).

        Raises:
            EngineStartError: The engine could not start.
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
        self.requests = 0
        """Requests received."""
        self.cancelled = 0
        """Requests closed before their stream ended (aborted in the engine)."""

    def info(self) -> dict[str, Any]:
        """Name, backend name, model, engine settings, capacity and abilities of this replica."""
        b = self.backend
        return {
            "name": self.name,
            "backend": str(b.name),
            "model": str(getattr(b, "model", "") or b.name),
            "engine_info": dict(getattr(b, "engine_info", {}) or {}),
            "max_concurrency": int(getattr(b, "max_concurrency", 32)),
            "counts_tokens": isinstance(b, TokenCounter),
            "node": _node_id(),
        }

    async def stream(self, request: Request) -> AsyncGenerator[list[Chunk], None]:
        """Stream `request`'s chunks, in batches of those ready together (one Ray object each).

        Cancelling the remote generator cancels this one, which closes the backend's stream:
        the request is aborted in the engine.
        """
        self.requests += 1
        queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async with contextlib.aclosing(self.backend.stream(request)) as chunks:
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

    def prompt_tokens(self, request: Request) -> int:
        """The backend's count of `request`'s prompt tokens (`TokenCounter`).

        Raises:
            BackendError: This replica's backend cannot count tokens.
        """
        if not isinstance(self.backend, TokenCounter):
            raise BackendError(f"replica {self.name} cannot count prompt tokens", backend=self.backend.name)
        return self.backend.prompt_tokens(request)

    def counts(self) -> dict[str, int]:
        """Requests received and requests cancelled, and (an engine's) tokens decoded and delivered."""
        out = {"requests": self.requests, "cancelled": self.cancelled}
        stats = getattr(self.backend, "stats", None)
        if stats is not None:
            out["decoded_tokens"] = int(stats.decoded_tokens)
            out["delivered_tokens"] = int(stats.delivered_tokens)
        decoded = getattr(self.backend, "decoded_tokens", None)
        if isinstance(decoded, int):  # a ScriptedBackend counts its streamed tokens
            out["decoded_tokens"] = out["delivered_tokens"] = decoded
        return out

    async def reset_prefix_cache(self) -> None:
        """Empty the engine's prefix cache, when the backend has one to empty."""
        reset = getattr(self.backend, "reset_prefix_cache", None)
        if reset is not None:
            await reset()

    def ping(self) -> str:
        """The replica's name: it is alive and answering."""
        return self.name

    def close(self) -> None:
        """Shut the backend down (an engine's processes stop)."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()


class _More:
    """Marks an empty queue between two batches (the next item is not there yet)."""


_MORE = _More()


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


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
        if self.routing == "round-robin":
            self._check_live()
            return self._view(None)
        replica = self._pins.get(problem_id)
        if replica is None or not replica.alive:
            replica = self._least_loaded()
            replica.pinned += 1
            self._pins[problem_id] = replica
        return self._view(replica)

    def _view(self, replica: _Replica | None) -> Backend:
        """A problem's backend: a `TokenCounter` too when every replica counts tokens."""
        counting = all(r.counts_tokens for r in self.replicas)
        return _CountingRouted(self, replica) if counting else _Routed(self, replica)

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

    async def send(self, replica: _Replica, request: Request) -> AsyncGenerator[Chunk, None]:
        """Stream `request` on `replica`; closing the stream cancels it there (and in its engine).

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
            refs = replica.actor.stream.options(num_returns="streaming").remote(request)
            async for ref in refs:
                for chunk in await ref:
                    yield chunk
            finished = True
        except _lost_errors() as exc:
            raise self._lose(replica, exc) from None
        except ray.exceptions.RayTaskError as exc:  # the replica's backend raised: re-raise its error
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise BackendError(f"engine replica {replica.name} failed: {exc}", backend=self.name) from None
        finally:
            replica.in_flight -= samples
            if refs is not None and not finished:
                with contextlib.suppress(Exception):
                    ray.cancel(refs)

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

    def prompt_tokens_on(self, replica: _Replica, request: Request) -> int:
        """`replica`'s count of `request`'s prompt tokens (a blocking call: a prompt-token budget).

        Raises:
            ReplicaLost: The replica died.
        """
        import ray

        try:
            return int(ray.get(replica.actor.prompt_tokens.remote(request), timeout=120))
        except _lost_errors() as exc:
            raise self._lose(replica, exc) from None

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
    """One problem's backend on a pool: pinned to one replica, or round-robin per request."""

    def __init__(self, pool: ReplicaPool, replica: _Replica | None) -> None:
        self._pool = pool
        self._replica = replica
        self.served: Counter[str] = Counter()
        """Requests of this problem sent to each replica, by name."""

    @property
    def name(self) -> str:
        return self._pool.name

    @property
    def model(self) -> str:
        return self._pool.model

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

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        replica = self._replica or self._pool.next_replica()
        self.served[replica.name] += 1
        async with contextlib.aclosing(self._pool.send(replica, request)) as chunks:
            async for chunk in chunks:
                yield chunk


class _CountingRouted(_Routed):
    """A `_Routed` whose replicas count prompt tokens (`TokenCounter`, for prompt-token budgets)."""

    def prompt_tokens(self, request: Request) -> int:
        """The serving replica's count of `request`'s prompt tokens (a blocking call)."""
        replica = self._replica or self._pool.next_replica()
        return self._pool.prompt_tokens_on(replica, request)


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
            ).remote(name, spec)
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

    Raises:
        ConfigError: The backend is a running server (it is a replica already: use it as it is),
            or the run needs hidden states (the pool streams text; it serves no hidden states).
    """
    from functools import partial

    from reasoning.backends.scripted import ScriptedBackend
    from reasoning.backends.specs import ScriptedReply, VLLMEngine

    if hidden_states:
        raise ConfigError(
            "--ray: strategies that read hidden states do not run on a replica pool "
            "(it streams tokens only); run them without --ray"
        )
    if isinstance(backend, VLLMEngine):
        return EngineConfig(**backend.engine_settings())
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
    verbose: bool = False,
) -> ReplicaPool:
    """Connect to the cluster at `address` and start a run's replicas (``solve --ray``).

    ``reasoning solve --ray`` and ``reasoning leaderboard run --ray`` start their pools here.

    Args:
        backend: The run spec's one backend (`reasoning.backends.specs.VLLMEngine` or
            `reasoning.backends.specs.ScriptedReply`).
        address: ``auto`` or a cluster's ``HOST:PORT`` (`connect`).
        replicas: How many (default: one per node of the cluster).
        routing: ``affinity`` or ``round-robin``.
        hidden_states: The run's strategies need hidden states (refused: see `replica_spec`).
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
    return start_replicas([spec] * count, routing=routing)
