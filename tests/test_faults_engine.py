"""A real vLLM server SIGKILLed at a random point of a run, restarted, resumed (engine).

One kill here (each restart is a ~60 s engine start); `tests/test_faults.py` kills a fake vLLM
server at 20 random points of a run.
"""

import asyncio
import random
from pathlib import Path

import pytest

from reasoning import BackendUnavailable, Controller, Run
from reasoning.backends.server import VLLMServer, free_port
from reasoning.strategies import SelfConsistency

pytestmark = pytest.mark.engine

KILLS = 1


async def test_a_real_server_killed_mid_run_loses_and_repeats_nothing(tmp_path: Path) -> None:
    from reasoning.evals.datasets import load_dataset
    from reasoning.evals.run import read_results, solve

    problems = load_dataset("gsm8k", limit=6)
    strategy = SelfConsistency(n=2, max_tokens=16)
    rng = random.Random(19)
    port = free_port()
    reference, faulted = tmp_path / "reference.jsonl", tmp_path / "faulted.jsonl"
    kills = starts = 0
    server = VLLMServer(port=port, kv_cache_gb=0.5).start()
    try:
        starts += 1
        backend = server.backend()
        expected = await solve(
            problems, Controller(backend, seed=7), strategy, output=reference, concurrency=2
        )
        await backend.aclose()
        for _ in range(KILLS):
            done = {key for key, run in read_results(faulted).items() if run.error is None}
            todo = len([p for p in problems if p.id not in done])
            # The kill: once this session has finished a random number of rows (leaving at least
            # two problems to do), after a random delay.
            mark = len(problems) - todo + rng.randrange(max(1, min(3, todo - 2)))
            delay = rng.uniform(0, 0.3)
            finished: list[Run] = []  # resumed rows first, then this session's
            backend = server.backend(max_retries=1, backoff=0.2)

            async def killer(
                victim: VLLMServer = server,
                mark: int = mark,
                delay: float = delay,
                finished: list[Run] = finished,
            ) -> None:
                while len(finished) < mark:
                    await asyncio.sleep(0.02)
                await asyncio.sleep(delay)
                victim.kill()  # SIGKILL, as a crash

            task = asyncio.create_task(killer())
            with pytest.raises(
                BackendUnavailable, match=f"cannot reach the server at http://127.0.0.1:{port}"
            ):
                await solve(
                    problems,
                    Controller(backend, seed=7),
                    strategy,
                    output=faulted,
                    concurrency=2,
                    on_result=finished.append,
                )
            await task
            await backend.aclose()
            kills += 1
            assert len(read_results(faulted)) < len(problems) and todo > 0
            server = VLLMServer(port=port, kv_cache_gb=0.5).start()  # restarted on the same port
            starts += 1
        backend = server.backend()
        runs = await solve(problems, Controller(backend, seed=7), strategy, output=faulted, concurrency=2)
        await backend.aclose()
    finally:
        server.stop()
    ids = [p.id for p in problems]
    assert kills == KILLS and starts == KILLS + 1
    assert [r.problem_id for r in expected] == ids and [r.problem_id for r in runs] == ids
    lines = faulted.read_text().splitlines()
    assert [Run.model_validate_json(line).problem_id for line in lines] == ids  # each exactly once
    assert all(r.error is None for r in runs)
