"""Scale-out over engine replicas on a local Ray cluster (`reasoning.backends.replicas`).

The fast tests run scripted replicas (`ScriptedBackend` inside Ray actors) on a local Ray
cluster started once for all the ray tests of a session (`ray_cluster` in conftest.py); the
engine test runs one real engine replica beside a scripted one. Assertions are on mechanisms
(where requests went, what the results file holds), never on timings or the model's answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import pytest
from conftest import invoke, replica_pool

from reasoning import (
    BackendError,
    BackendUnavailable,
    Chunk,
    ConfigError,
    Controller,
    Message,
    Problem,
    ReplicaLost,
    Request,
    Run,
    Sampling,
    ScriptedBackend,
    collect,
)
from reasoning.evals.run import read_results, solve
from reasoning.strategies import SelfConsistency
from reasoning.strategies.beam_search import BeamSearch
from reasoning.verifiers.process import ScriptedScorer

ray = pytest.importorskip("ray")

from reasoning.backends import replicas as scale_out  # noqa: E402  (after the skip: the module needs Ray to run)
from reasoning.backends.replicas import ReplicaPool, connect, start_replicas  # noqa: E402

pytestmark = pytest.mark.ray

PROBLEMS = [Problem(id=f"p{i}", question=f"What is {i} plus {i}?", answer=str(2 * i)) for i in range(8)]


def stepwise(request: Request, number: int) -> str:
    """Two steps, then the doubled number (a beam search sends several requests per problem)."""
    i = int(request.messages[-1].content.split("What is ")[1].split(" ")[0])
    done = request.prefix.count("\n\n")
    if done >= 2:
        return f"so \\boxed{{{2 * i}}}"
    return f"step {done} of sample {number}\n\nmore"


def doubling(request: Request, number: int) -> str:
    i = int(request.messages[-1].content.split("What is ")[1].split(" ")[0])
    return f"so \\boxed{{{2 * i}}}"


@pytest.fixture
def cluster(ray_cluster: object) -> None:
    """The session's local Ray cluster (`ray_cluster` in conftest.py, 2 CPUs)."""
    # The scripts above are functions of this test module, which Ray's workers cannot import:
    # ship them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def scripted(script: object, seconds_per_token: float = 0.0) -> partial[ScriptedBackend]:
    return partial(ScriptedBackend, script, seconds_per_token=seconds_per_token)


@contextlib.contextmanager
def pool_of(*specs: object, routing: str = "affinity") -> Iterator[ReplicaPool]:
    pool = start_replicas(list(specs), routing=routing)  # type: ignore[arg-type]
    try:
        yield pool
    finally:
        pool.close()


def beam() -> BeamSearch:
    return BeamSearch(n=4, width=2, scorer="verifier")


def scorer() -> ScriptedScorer:
    return ScriptedScorer(lambda steps: 0.5)


def rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def served(run: Run) -> dict[str, int]:
    return dict(run.engine["replica_requests"])


async def test_affinity_sends_every_request_of_a_problem_to_one_replica(cluster: None) -> None:
    with pool_of(scripted(stepwise), scripted(stepwise)) as pool:
        runs = await solve(PROBLEMS, Controller(pool, verifier=scorer()), beam())
        counts = pool.counts()
    assert all(r.error is None for r in runs)
    assert all(sum(served(r).values()) >= 3 for r in runs)  # a step search: several requests each
    assert all(list(served(r)) == [r.engine["replica"]] for r in runs)  # one replica per problem
    # The replicas' own counts agree with the records, and both replicas served problems.
    per_replica = Counter[str]()
    for run in runs:
        per_replica.update(served(run))
    assert {name: c["requests"] for name, c in counts.items()} == dict(per_replica)
    assert len(per_replica) == 2


async def test_round_robin_spreads_one_problems_requests_and_shares_less_cache(cluster: None) -> None:
    shares = {}
    for routing in ("round-robin", "affinity"):
        with pool_of(scripted(stepwise), scripted(stepwise), routing=routing) as pool:
            runs = await solve(PROBLEMS, Controller(pool, verifier=scorer()), beam())
            sent = pool.requests()
        assert all(r.error is None for r in runs)
        if routing == "round-robin":
            assert abs(sent["replica-0"] - sent["replica-1"]) <= 1  # request by request, in turn
            assert sum(len(served(r)) == 2 for r in runs) > len(runs) // 2  # problems reach both
            assert all("replica" not in r.engine for r in runs)
        cached = sum(int(r.usage["cached_tokens"]) for r in runs)
        prompt = sum(int(r.usage["prompt_tokens"]) for r in runs)
        shares[routing] = cached / prompt
    assert shares["affinity"] > shares["round-robin"]


async def test_solve_over_a_pool_writes_every_problem_once(cluster: None, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    with pool_of(scripted(doubling), scripted(doubling)) as pool:
        runs = await solve(PROBLEMS, Controller(pool), SelfConsistency(n=2), output=out)
    written = rows(out)
    assert [r["problem_id"] for r in written] == [p.id for p in PROBLEMS]
    assert all(r["error"] is None and r["correct"] for r in written)
    assert {r.engine["replica"] for r in runs} == {"replica-0", "replica-1"}
    assert all(r.model == "scripted" and r.backend == "scripted" for r in runs)


async def test_a_replica_killed_mid_run_loses_nothing_and_its_problems_rerun_elsewhere(
    cluster: None, tmp_path: Path
) -> None:
    out = tmp_path / "r.jsonl"
    finished: list[str] = []
    slow = scripted(doubling, seconds_per_token=0.2)  # killed while a problem decodes on it
    with pool_of(slow, slow) as pool:
        victim = pool.replicas[0]

        async def kill_when_busy() -> None:
            while not (finished and victim.in_flight > 0):  # after a result, while it decodes
                if len(finished) == len(PROBLEMS):
                    return  # never busy: the assertions below fail (rather than hang)
                await asyncio.sleep(0.01)
            ray.kill(victim.actor)

        killer = asyncio.ensure_future(kill_when_busy())
        runs = await solve(
            PROBLEMS,
            Controller(pool),
            SelfConsistency(n=2),
            output=out,
            concurrency=4,
            on_result=lambda run: finished.append(run.problem_id),
        )
        await killer
        assert not victim.alive and pool.replicas[1].alive
    written = rows(out)
    assert sorted(r["problem_id"] for r in written) == sorted(p.id for p in PROBLEMS)  # once each
    assert all(r["error"] is None for r in written)
    rerouted = [r for r in runs if r.engine.get("reroutes")]
    assert rerouted  # some problem was on the killed replica when it died ...
    assert all(r.engine["replica"] == "replica-1" for r in rerouted)  # ... and finished on the other


async def test_every_replica_dead_stops_the_run_and_keeps_finished_rows(
    cluster: None, tmp_path: Path
) -> None:
    out = tmp_path / "r.jsonl"
    finished: list[str] = []
    slow = scripted(doubling, seconds_per_token=0.05)
    with pool_of(slow, slow) as pool:

        async def kill_all() -> None:
            while len(finished) < 2 or not all(r.in_flight for r in pool.replicas):
                if len(finished) == len(PROBLEMS):
                    return  # never both busy: pytest.raises below fails (rather than hang)
                await asyncio.sleep(0.01)
            for replica in pool.replicas:
                ray.kill(replica.actor)

        killer = asyncio.ensure_future(kill_all())
        with pytest.raises(BackendUnavailable, match="every engine replica"):
            await solve(
                PROBLEMS,
                Controller(pool),
                SelfConsistency(n=1),
                output=out,
                concurrency=2,
                on_result=lambda run: finished.append(run.problem_id),
            )
        await killer
    kept = read_results(out)
    assert set(finished) <= set(kept) and len(kept) < len(PROBLEMS)
    assert all(run.error is None for run in kept.values())


async def test_a_stream_on_a_dead_replica_is_a_replica_lost(cluster: None) -> None:
    with pool_of(scripted(doubling)) as pool:
        ray.kill(pool.replicas[0].actor)
        request = Request(Controller(pool).prompt(PROBLEMS[1]))
        with pytest.raises(ReplicaLost):
            async for _ in pool.stream(request):
                pass
        with pytest.raises(BackendUnavailable):
            pool.for_problem("p1")


async def test_closing_a_stream_cancels_the_request_on_its_replica(cluster: None) -> None:
    with pool_of(scripted(["a b c d e f g h i j k l m n o p"], seconds_per_token=0.05)) as pool:
        request = Request(Controller(pool).prompt(PROBLEMS[1]))
        stream = pool.stream(request)
        await anext(stream)
        await stream.aclose()
        for _ in range(200):  # the cancellation reaches the actor asynchronously
            counts = pool.counts()["replica-0"]
            if counts["cancelled"]:
                break
            await asyncio.sleep(0.02)
    assert counts["cancelled"] == 1
    assert counts["decoded_tokens"] < 16


async def test_a_replicas_backend_error_reaches_the_run_as_itself(cluster: None, tmp_path: Path) -> None:
    def dies_on_p3(request: Request, number: int) -> str:
        if "What is 3 " in request.messages[-1].content:
            raise BackendError("engine died", retryable=False)
        return doubling(request, number)

    out = tmp_path / "r.jsonl"
    with pool_of(scripted(dies_on_p3)) as pool, pytest.raises(BackendError, match="engine died"):
        await solve(PROBLEMS, Controller(pool), SelfConsistency(n=1), output=out, concurrency=1)
    assert list(read_results(out)) == ["p0", "p1", "p2"]  # finished before it, kept


def echo_environment() -> ScriptedBackend:
    """Built inside the replica: it answers with the replica's own REASONING_TEST_ENV."""
    import os

    return ScriptedBackend([os.environ.get("REASONING_TEST_ENV", "unset")])


async def test_each_replica_gets_its_own_environment(cluster: None) -> None:
    envs = [{"REASONING_TEST_ENV": "first"}, {"REASONING_TEST_ENV": "second"}]
    pool = start_replicas([echo_environment, echo_environment], envs=envs)
    try:
        request = Request(Controller(pool).prompt(PROBLEMS[1]))
        texts = [(await collect(pool.for_problem(f"q{i}"), request))[0].text for i in range(2)]
    finally:
        pool.close()
    assert texts == ["first", "second"]


async def test_a_leaderboard_on_replicas_stores_every_problem_once_despite_a_lost_replica(
    cluster: None, tmp_path: Path
) -> None:
    from rich.console import Console

    from reasoning.evals.leaderboard.runner import arun_leaderboard
    from reasoning.evals.leaderboard.spec import LeaderboardSpec
    from reasoning.evals.leaderboard.store import Store

    spec = LeaderboardSpec.model_validate(
        {
            "name": "t",
            "store": str(tmp_path / "t.sqlite"),
            "models": {"s": {"kind": "scripted"}},
            "datasets": {"g": {"name": "gsm8k", "limit": 4}},
            "entries": [{"name": "greedy", "strategy": "single"}, {"name": "sc", "strategy": "sc"}],
        }
    )
    pools: list[ReplicaPool] = []

    def start(model: str, hidden: bool) -> ReplicaPool:
        pools.append(start_replicas([scripted(["so \\boxed{0}"], seconds_per_token=0.2)] * 2))
        return pools[-1]

    async def kill_when_busy() -> None:
        while not (pools and pools[0].replicas[0].in_flight > 0):
            if over:
                return  # never busy: the assertions below fail (rather than hang)
            await asyncio.sleep(0.01)
        ray.kill(pools[0].replicas[0].actor)

    over: list[bool] = []
    killer = asyncio.ensure_future(kill_when_busy())
    with Store.open(spec.store_path) as store:
        close = lambda pool: pool.close()  # noqa: E731
        solved = await arun_leaderboard(spec, store, start, console=Console(file=io.StringIO()), close=close)
        over.append(True)
        await killer
        cells = spec.cells()
        rows = {c.key: store.results(c.key) for c in cells}
        records = [store.record(c.key, r.problem_id, r.seed) for c in cells for r in rows[c.key]]
    assert solved == 8 and all(len(r) == 4 for r in rows.values())
    assert all(len({r.problem_id for r in cell}) == 4 for cell in rows.values())  # each once
    assert all(r.error is None for cell in rows.values() for r in cell)
    assert any(r.engine.get("reroutes") for r in records)  # re-run on the live replica
    assert {r.engine["replica"] for r in records if r.engine.get("reroutes")} == {"replica-1"}


def test_engine_replicas_of_a_local_cluster_get_their_own_cores(
    cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reasoning import EngineConfig
    from reasoning.backends.vllm_local import configure_cpu_environment

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.delenv("REASONING_DEFAULT_OMP_BIND", raising=False)
    configure_cpu_environment()  # an engine started in this process earlier: its binding is ours

    assert scale_out._on_this_machine_only()  # the session's cluster is this machine alone
    engine = EngineConfig()
    assert scale_out.split_cores([engine, engine], 2) == [
        {"VLLM_CPU_OMP_THREADS_BIND": "0"},
        {"VLLM_CPU_OMP_THREADS_BIND": "1"},
    ]
    assert scale_out.split_cores([engine, scripted(doubling), engine], 5) == [
        {"VLLM_CPU_OMP_THREADS_BIND": "0-1"},
        {},
        {"VLLM_CPU_OMP_THREADS_BIND": "2-4"},
    ]
    assert scale_out.split_cores([engine, scripted(doubling)], 2) is None  # one engine: every core
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "1")  # the user's own binding is kept
    assert scale_out.split_cores([engine, engine], 2) is None


def test_a_malformed_ray_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        connect("not an address")


def test_an_unreachable_ray_address_is_a_clear_error(tmp_path: Path) -> None:
    """In a subprocess: this process is connected to the session's cluster already."""
    command = [
        sys.executable, "-m", "reasoning.cli", "solve", "--question", "2+2?", "--backend", "scripted",
        "--ray", "127.0.0.1:1",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1
    assert "no Ray cluster answers at 127.0.0.1:1" in " ".join(done.stderr.split())


def test_the_solve_command_runs_on_replicas(cluster: None, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"id": p.id, "question": p.question, "answer": "0"}) + "\n" for p in PROBLEMS)
    )
    out = tmp_path / "r.jsonl"
    code, text = invoke(
        "solve", "--dataset", str(data), "--backend", "scripted", "--ray", "auto", "--replicas", "2",
        "--output", str(out), "-p", "n=2",
    )  # fmt: skip
    assert code == 0, text
    written = rows(out)
    assert [r["question"] for r in written] == [p.question for p in PROBLEMS]  # each once, in order
    assert len({r["problem_id"] for r in written}) == len(PROBLEMS)
    assert {r["engine"]["replica"] for r in written} == {"replica-0", "replica-1"}
    assert all(r["correct"] for r in written)  # the scripted reply is \\boxed{0}


def test_replicas_without_ray_and_ray_with_named_backends_are_refused() -> None:
    from reasoning.evals.spec import RunSpec

    with pytest.raises(ConfigError, match="replicas needs ray"):
        RunSpec(question="q", replicas=2)
    with pytest.raises(ConfigError, match="ray replicates one backend"):
        RunSpec(question="q", ray="auto", backends={"a": "0.5b", "b": "1.5b"})
    with pytest.raises(ConfigError, match="running server"):
        scale_out.replica_spec(RunSpec(question="q", backend="http://localhost:1").named()[""])


@pytest.mark.engine
async def test_one_engine_replica_beside_a_scripted_one(
    cluster: None, engine_replica: object, tmp_path: Path
) -> None:
    """A real engine replica (the embedded 0.5B, 1 GiB KV cache) and a scripted replica in one pool.

    The engine replica is the session's (`engine_replica` in conftest.py, shared with
    test_scale_out_families): its counts are cumulative, so this test reads what they grew by.
    """
    out = tmp_path / "r.jsonl"
    problems = PROBLEMS[:4]
    with replica_pool(engine_replica, scripted(doubling)) as pool:
        assert pool.model == "qwen2.5-coder-0.5b-instruct" and pool.name == "vllm"
        before = pool.counts()["replica-0"]
        runs = await solve(problems, Controller(pool), SelfConsistency(n=2, max_tokens=16), output=out)
        counts = {k: v - before.get(k, 0) for k, v in pool.counts()["replica-0"].items()}
    assert sorted(r["problem_id"] for r in rows(out)) == [p.id for p in problems]  # each once
    assert all(r.error is None for r in runs)
    assert all(list(served(r)) == [r.engine["replica"]] for r in runs)  # affinity
    on_engine = [r for r in runs if r.engine["replica"] == "replica-0"]
    assert on_engine and len(on_engine) < len(runs)  # both replicas served problems
    assert all(r.engine["dtype"] for r in on_engine)  # the engine's own settings are recorded
    tokens = sum(int(r.usage["output_tokens"]) for r in on_engine)
    assert counts["requests"] == len(on_engine)  # one request per problem (n=2)
    assert counts["delivered_tokens"] == tokens  # every token decoded is in a record
    assert counts["decoded_tokens"] == tokens  # and none was decoded for nobody
    assert 0 < tokens <= 2 * 16 * len(on_engine)


class Overloaded(ScriptedBackend):
    """Built inside a replica: every call fails with a retryable error naming its engine."""

    def __init__(self) -> None:
        super().__init__(["unused"])

    def _fail(self) -> BackendError:
        return BackendError("engine overloaded", retryable=True, backend="engine-x")

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        raise self._fail()
        yield  # an async generator, as a backend's stream is

    def prompt_tokens(self, request: Request) -> int:
        raise self._fail()


async def test_a_replicas_backend_error_keeps_its_class_retryable_and_backend(cluster: None) -> None:
    """Through a stream and through a blocking call, the driver gets the replica's error itself:
    a retryable one fails one problem, as on one engine, instead of stopping the run."""
    request = Request((Message("user", "2+2?"),), Sampling(max_tokens=4))
    with pool_of(Overloaded) as pool:
        with pytest.raises(BackendError) as streamed:
            await collect(pool, request)
        with pytest.raises(BackendError) as counted:
            pool.prompt_tokens_on(pool.live[0], request)
    for raised in (streamed.value, counted.value):
        assert type(raised) is BackendError, type(raised)  # not Ray's wrapper
        assert (raised.retryable, raised.backend, str(raised)) == (True, "engine-x", "engine overloaded")
