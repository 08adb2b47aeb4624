"""`reasoning serve`, and a server that dies mid-run (real engine; marked ``engine``)."""

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reasoning import BackendUnavailable, CapabilityError, Controller, Message, Request, Sampling, collect
from reasoning.backends.openai_server import OpenAIBackend
from reasoning.serving.server import free_port
from reasoning.strategies import Single

pytestmark = pytest.mark.engine

REASONING = str(Path(sys.executable).with_name("reasoning"))


def test_serve_starts_prints_the_url_and_stops_on_ctrl_c() -> None:
    port = free_port()
    process = subprocess.Popen(
        [REASONING, "serve", "--port", str(port), "--kv-cache-gb", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()  # blocks until the server is healthy
        assert line.strip() == f"serving qwen2.5-coder-0.5b-instruct at http://127.0.0.1:{port}/v1", line

        async def ask() -> str:
            backend = OpenAIBackend(f"http://127.0.0.1:{port}")
            try:
                request = Request((Message("user", "Say hi."),), Sampling(temperature=0, max_tokens=3))
                # Served without --hidden-states: asking for them is a clear capability error.
                with pytest.raises(
                    CapabilityError, match=r"hidden states .*not started with --hidden-states"
                ):
                    await backend.hidden_states(Request((Message("user", "hi"),)), [1])
                return (await collect(backend, request))[0].text
            finally:
                await backend.aclose()

        assert asyncio.run(ask())
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert "server stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    time.sleep(1)
    assert not _listening(port), "the server still listens after Ctrl-C"
    leftover = subprocess.run(["pgrep", "-f", f"--port {port}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "a server process outlived `reasoning serve`"


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_server_death_mid_run_stops_cleanly_keeps_results_and_resumes(tmp_path: Path, server) -> None:
    from reasoning.evals.datasets import load_dataset
    from reasoning.evals.run import read_results, solve

    problems = load_dataset("gsm8k", limit=4)
    out = tmp_path / "r.jsonl"
    strategy = Single(max_tokens=48)
    # The session's server dies mid-run and comes back on the same port: one engine at a time
    # (a second server beside the session's did not fit CI's memory), one restart.
    finished: list[str] = []
    backend = server.backend(max_retries=2, backoff=0.2)
    try:

        def on_result(run) -> None:
            finished.append(run.problem_id)
            if len(finished) == 1:
                server.kill()  # the server dies while the other problem is mid-stream

        controller = Controller(backend)
        with pytest.raises(BackendUnavailable, match=f"cannot reach the server at {server.url}"):
            await solve(problems, controller, strategy, output=out, concurrency=2, on_result=on_result)
    finally:
        await backend.aclose()
        server.start()  # the later tests' server, whatever happened here
    rows = read_results(out)
    # What finished before the death is kept (a second problem may beat the kill), nothing more.
    assert list(rows) == finished and 1 <= len(finished) < len(problems)
    assert all(r.error is None for r in rows.values())

    # Resumed on the restarted server.
    backend = server.backend()
    runs = await solve(problems, Controller(backend), strategy, output=out, concurrency=2)
    await backend.aclose()
    assert [r.problem_id for r in runs] == [p.id for p in problems]
    assert all(r.error is None and len(r.candidates) == 1 for r in runs)
    assert [r.problem_id for r in read_results(out).values()] == [p.id for p in problems]
    lines = out.read_text().splitlines()  # each problem exactly once: nothing lost, nothing repeated
    assert [json.loads(line)["problem_id"] for line in lines] == [p.id for p in problems]
