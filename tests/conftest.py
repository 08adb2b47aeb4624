import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from reasoning import Problem


@pytest.fixture
def problem() -> Problem:
    return Problem(id="p1", question="What is 2+2?", answer="4")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread while a test trains a probe on a few hundred rows.

    Ops that small gain nothing from a second thread, and on a busy machine (CI's two cores,
    an engine beside the tests) every op waits for the other thread to be scheduled: a probe
    build ran 4x slower on two threads than on one. The count is restored afterwards.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """`OpenAIBackend` retries as often as by default, without the waits between tries.

    For a test that asks an address nothing listens on: the default backoff (0.5 s, doubling,
    over 4 retries) spends about 7.5 s asleep before the error the test reads.
    """
    from reasoning.backends.openai_server import OpenAIBackend

    monkeypatch.setitem(OpenAIBackend.__init__.__kwdefaults__, "backoff", 0.0)


@pytest.fixture
def ray_cluster() -> Any:
    """A local Ray cluster (2 CPUs), shared by every test that asks for it; the `ray` module.

    The first such test starts it and it stays up until the last such test of the session
    has run (`pytest_runtest_teardown` below), so the ray modules start one cluster, not one
    each.
    """
    ray = pytest.importorskip("ray")
    from reasoning.backends.replicas import connect

    connect("auto", num_cpus=2)  # nothing to do while this process is connected already
    return ray


_replica_pools: list[Any] = []
"""The pool that started `engine_replica` (closed before the shared Ray cluster shuts down)."""


@pytest.fixture
def engine_replica(ray_cluster: Any) -> Any:
    """One real engine replica on the shared Ray cluster, for every ray test that needs one.

    The embedded 0.5B with a 1 GiB KV cache, 8 sequences at once and hidden states on: the
    settings both engine-replica tests (test_scale_out, test_scale_out_families) ran their own
    replica with, so one engine starts for both instead of one each. It asks Ray for no CPU
    (idle between its tests, it must not keep the scripted pools of the tests in between from
    being scheduled on the 2-CPU cluster). Build a pool around it with `replica_pool`; the
    replica's counts are cumulative, so its tests compare counts before and after.
    """
    from reasoning.backends.replicas import start_replicas
    from reasoning.config import EngineConfig

    if not _replica_pools:  # the first test that asks starts it; it stays up with the cluster
        spec = EngineConfig(kv_cache_gb=1.0, max_num_seqs=8, hidden_states=True)
        _replica_pools.append(start_replicas([spec], num_cpus=0))
    return _replica_pools[0].replicas[0]


@contextlib.contextmanager
def replica_pool(shared: Any, *others: Any, routing: str = "affinity") -> Iterator[Any]:
    """A pool of the shared engine replica (``replica-0``) and replicas started for `others`.

    The pool gets its own view of the shared replica (no heads known, nothing pinned), as a
    pool started for the test would; on leaving, only the replicas started here are closed.
    """
    from reasoning.backends.replicas import ReplicaPool, start_replicas

    names = [f"replica-{i}" for i in range(1, len(others) + 1)]
    started = start_replicas(list(others), names=names) if others else None
    view = dataclasses.replace(shared, heads=set(), sending={}, in_flight=0, pinned=0, requests=0)
    try:
        yield ReplicaPool([view, *(started.replicas if started else [])], routing)
    finally:
        if started is not None:
            started.close()


def _needs_ray(item: pytest.Item) -> bool:
    return "ray_cluster" in getattr(item, "fixturenames", ())


def _close_replicas() -> None:
    while _replica_pools:
        _replica_pools.pop().close()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Shut the shared Ray cluster down after the last test of the session that uses it."""
    if not _needs_ray(item) or "ray" not in sys.modules:
        return
    items = item.session.items
    later = items[items.index(item) + 1 :] if item in items else []
    if nextitem is None or not any(_needs_ray(i) for i in later):
        _close_replicas()
        sys.modules["ray"].shutdown()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A run stopped early (``-x``, Ctrl-C) still shuts the shared Ray cluster down."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        _close_replicas()
        ray.shutdown()


@pytest.fixture(scope="session")
def engine() -> Iterator[object]:
    """The in-process engine on the embedded default model, hidden states on (started once per session)."""
    from reasoning.backends.vllm_local import VLLMBackend

    backend = VLLMBackend.load(kv_cache_gb=1.0, hidden_states=True)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def server() -> Iterator[object]:
    """A vLLM OpenAI-compatible server for the same model on a free loopback port (hidden states on)."""
    from reasoning.serving.server import VLLMServer

    with VLLMServer(kv_cache_gb=1.0, hidden_states=True) as running:
        yield running


@pytest.fixture
async def remote(server) -> AsyncIterator[object]:
    """An OpenAIBackend talking to the session's server."""
    backend = server.backend()
    yield backend
    await backend.aclose()


@pytest.fixture(params=["vllm", "openai"])
def backend(request: pytest.FixtureRequest) -> object:
    """Each real backend in turn: the same test runs in-process and over HTTP."""
    return request.getfixturevalue("engine" if request.param == "vllm" else "remote")


async def decoded_tokens(backend: object) -> int:
    """Tokens the backend's engine decoded so far (its own count, cancelled work included)."""
    return int(await backend.decoded_tokens())


def invoke(*args: str) -> tuple[int, str]:
    """Run the `reasoning` CLI in-process; the exit code and the output (plus any exception)."""
    from typer.testing import CliRunner

    from reasoning.cli import app

    result = CliRunner().invoke(app, list(args))
    text = result.output
    if result.exception and not isinstance(result.exception, SystemExit):
        text += f"\n{type(result.exception).__name__}: {result.exception}"
    return result.exit_code, text
