"""Fault injection, on loopback only: a server killed and restarted mid-run, a slow server, HTTP
500/429, SIGINT, a full disk, an engine that cannot start. Every run must end with the finished
results kept, nothing lost, nothing duplicated, and one clear message.

The server is `tests/fake_vllm.py` (vLLM's streaming format, replies a deterministic function
of prompt, seed and sample), so an interrupted run can be compared with an uninterrupted one.
"""

import asyncio
import errno
import io
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_openai_backend import Template

from reasoning import BackendUnavailable, Controller, Message, Problem, Request, Run, Sampling, collect
from reasoning.backends.openai_server import OpenAIBackend
from reasoning.errors import EngineStartError, StoreError
from reasoning.serving.server import free_port
from reasoning.strategies import Single

FAKE = Path(__file__).with_name("fake_vllm.py")
ASK = Request((Message("user", "2+2?"),), Sampling(n=2, max_tokens=32, seed=7))

# The CLI with shorter retries, so a run gives up within about a second of its server going
# away (its defaults ride out about 8 s): both outcomes of a kill then happen in one test.
RUNNER = """
from reasoning.backends import openai_server
init = openai_server.OpenAIBackend.__init__
def quick(self, *args, **kwargs):
    kwargs.update(max_retries=3, backoff=0.05)
    init(self, *args, **kwargs)
openai_server.OpenAIBackend.__init__ = quick
from reasoning.cli import main
main()
"""


class FakeServer:
    """`tests/fake_vllm.py` in a child process, on a fixed loopback port (restartable)."""

    def __init__(self, log: Path, *options: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.options = options
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeServer":
        with self.log.open("ab") as log:
            command = [sys.executable, str(FAKE), "--port", str(self.port), *self.options]
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.02)
        raise AssertionError(f"the fake server did not listen on {self.port}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()
        self.process = None

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as response:
            stats: dict[str, int] = json.loads(response.read())
        return stats

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def rows_of(path: Path) -> list[dict[str, Any]]:
    """Every line of a results file, parsed (a line that does not parse fails the test)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def finished(path: Path) -> set[str]:
    """Problems with a row without an error (tolerates a line being written right now)."""
    done = set()
    if path.exists():
        for line in path.read_bytes().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("error") is None:
                done.add(row["problem_id"])
    return done


def remote(url: str, **kwargs: Any) -> OpenAIBackend:
    """A backend on the completions endpoint (a local template), quick to retry."""
    kwargs.setdefault("backoff", 0.01)
    return OpenAIBackend(url, "fake", tokenizer=Template(), **kwargs)


# -- a server SIGKILLed and restarted at 20 random points of a run, the runner killed too -----


def test_sigkill_at_20_random_points_loses_and_repeats_nothing(tmp_path: Path) -> None:
    rng = random.Random(19)
    server = FakeServer(tmp_path / "server.log", "--token-delay", "0.01")

    def command(output: Path) -> list[str]:
        return [
            sys.executable, "-c", RUNNER, "solve", "--dataset", "gsm8k", "--limit", "30",
            "--base-url", server.url, "-p", "n=2", "--seed", "7", "--concurrency", "4",
            "--output", str(output),
        ]  # fmt: skip

    reference, faulted = tmp_path / "reference.jsonl", tmp_path / "faulted.jsonl"
    logs: list[Path] = []
    runner: subprocess.Popen[bytes] | None = None
    count: Counter[str] = Counter()

    def start_runner() -> subprocess.Popen[bytes]:
        log = tmp_path / f"runner-{len(logs)}.log"
        logs.append(log)
        count["runs"] += 1
        with log.open("wb") as sink:
            return subprocess.Popen(command(faulted), stdout=sink, stderr=subprocess.STDOUT)

    failed: set[str] = set()

    def ended(process: subprocess.Popen[bytes]) -> None:
        count[f"runner exit {process.returncode}"] += 1
        if faulted.exists():  # problems whose stream a kill cut: error rows, retried on resume
            failed.update(
                f"{r['problem_id']} {r['error']}"
                for r in map(json.loads, faulted.read_bytes().splitlines()[:-1])
                if r["error"]
            )
            count["error rows (cut streams)"] = len(failed)
        text = logs[-1].read_text()
        assert "Traceback" not in text, text
        if process.returncode == 1:  # it gave up on the server: one clear line, results kept
            assert server.url in text and "error:" in text, text
        else:
            assert process.returncode in (0, -signal.SIGKILL), text

    # 20 server kills and 4 runner kills, each once the file holds a random number of
    # finished rows (0..24 of 30), after a random delay; the server stays down a random while.
    events = sorted(
        [(rng.randrange(25), rng.uniform(0, 0.3), "server") for _ in range(20)]
        + [(rng.randrange(25), rng.uniform(0, 0.3), "runner") for _ in range(4)]
    )
    try:
        server.start()
        done = subprocess.run(command(reference), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        for mark, delay, target in events:
            deadline = time.monotonic() + 120
            while len(finished(faulted)) < mark:
                if runner is None or runner.poll() is not None:
                    if runner is not None:
                        ended(runner)
                    runner = start_runner()
                assert time.monotonic() < deadline, "the run made no progress"
                time.sleep(0.01)
            if runner is None or runner.poll() is not None:
                if runner is not None:
                    ended(runner)
                runner = start_runner()
            time.sleep(delay)
            active = runner.poll() is None and len(finished(faulted)) < 30
            count["kills while the run is active"] += active
            if target == "server":
                server.kill()
                count["server kills"] += 1
                time.sleep(rng.uniform(0, 0.6))  # down for a while: the runner rides it out or gives up
                server.start()
                count["server restarts"] += 1
            else:
                runner.send_signal(signal.SIGKILL)
                runner.wait()
                ended(runner)
                count["runner kills"] += 1
                if count["runner kills"] == 2 and faulted.exists():  # as a kill in mid-write leaves it
                    data = faulted.read_bytes()
                    if data.endswith(b"\n") and data.count(b"\n") > 1:
                        faulted.write_bytes(data[: len(data) - len(data[:-1].split(b"\n")[-1]) // 2 - 1])
                        count["rows cut in half"] += 1
                runner = None
        for _ in range(5):  # no more faults: the run finishes (a last re-run retries error rows)
            if runner is None:
                runner = start_runner()
            runner.wait(timeout=120)
            ended(runner)
            runner = None
            rows = rows_of(faulted)
            if len(rows) == 30 and all(r["error"] is None for r in rows):
                break
    finally:
        if runner is not None and runner.poll() is None:
            runner.kill()
            runner.wait()
        server.kill()
    expected, got = rows_of(reference), rows_of(faulted)
    assert len(expected) == 30 and all(r["error"] is None for r in expected)
    assert [r["problem_id"] for r in got] == [r["problem_id"] for r in expected]  # each once, in order
    assert [r["answer"] for r in got] == [r["answer"] for r in expected]
    assert [[c["text"] for c in r["candidates"]] for r in got] == [
        [c["text"] for c in r["candidates"]] for r in expected
    ]
    assert all(r["error"] is None for r in got)
    assert count["server kills"] == 20 and count["server restarts"] == 20 and count["runner kills"] == 4
    print("\nfaults:", dict(count), f"resumes: {count['runs'] - 1}")  # reported with -s


# -- a slow server: timeouts and retries ------------------------------------------------------


def test_a_stalled_server_is_retried_then_reported_with_its_url_and_rows_are_kept(tmp_path: Path) -> None:
    from reasoning.evals.run import read_results, solve

    with FakeServer(tmp_path / "a.log", "--fault", "stall", "--fault-count", "2") as server:
        backend = remote(server.url, timeout=1.0, max_retries=2)
        completions = asyncio.run(collect(backend, ASK))  # two stalls, then an answer
        assert completions[0].text.endswith("}.") and server.stats()["generations"] == 3

    problems = [Problem(f"p{i}", f"{i}+{i}?", answer=str(2 * i)) for i in range(5)]
    out = tmp_path / "r.jsonl"
    with FakeServer(tmp_path / "b.log", "--fault", "stall", "--fault-from", "4") as server:
        backend = remote(server.url, timeout=1.0, max_retries=2)
        message = (
            rf"cannot reach the server at {server.url} after 3 tries \(timed out waiting for {server.url}\)"
        )
        with pytest.raises(BackendUnavailable, match=message):
            asyncio.run(solve(problems, Controller(backend), Single(), output=out, concurrency=1))
        assert server.stats()["generations"] == 3 + 3  # three answered, then one problem tried 3 times
    assert sorted(read_results(out)) == ["p0", "p1", "p2"]
    assert all(r["error"] is None for r in rows_of(out))

    # A stream that stalls half-way fails that one problem (an error row naming the URL);
    # the others finish and a re-run retries it.
    out = tmp_path / "half.jsonl"
    options = ("--fault", "stall", "--fault-count", "1", "--stall-after", "3")
    with FakeServer(tmp_path / "c.log", *options) as server:

        async def twice() -> tuple[list[Run], list[Run]]:
            backend = remote(server.url, timeout=1.0, max_retries=2)
            first = await solve(problems, Controller(backend), Single(), output=out, concurrency=1)
            second = await solve(problems, Controller(backend), Single(), output=out, concurrency=1)
            await backend.aclose()
            return first, second

        first, second = asyncio.run(twice())
    assert [r.error is None for r in first] == [False, True, True, True, True]
    assert f"the stream from {server.url} broke off: timed out waiting for {server.url}" in str(
        first[0].error
    )
    assert all(r.error is None for r in second) and len(rows_of(out)) == 5


# -- HTTP 500 and 429: backoff, then success, or a clear error ---------------------------------


@pytest.mark.parametrize(("status", "failures"), [("500", 2), ("429", 3)])
def test_transient_statuses_are_backed_off_and_retried(tmp_path: Path, status: str, failures: int) -> None:
    options = ("--fault", status, "--fault-count", str(failures))
    with FakeServer(tmp_path / "s.log", *options) as server:
        completions = asyncio.run(collect(remote(server.url, max_retries=3), ASK))
        stats = server.stats()
    assert len(completions) == 2 and all(c.finish_reason == "stop" for c in completions)
    assert stats == {"generations": failures + 1, "faults": failures, "completed": 1}


def test_a_persistent_429_ends_in_one_clear_error(tmp_path: Path) -> None:
    from reasoning.evals.run import solve

    problems = [Problem(f"p{i}", f"{i}+1?") for i in range(3)]
    with FakeServer(tmp_path / "s.log", "--fault", "429", "--fault-from", "2") as server:
        out = tmp_path / "r.jsonl"
        message = (
            rf"the server at {server.url} still failed after 3 tries \(the server at {server.url} "
            r"answered HTTP 429: fake fault 429\); it is overloaded"
        )
        with pytest.raises(BackendUnavailable, match=message):
            controller = Controller(remote(server.url, max_retries=2))
            asyncio.run(solve(problems, controller, Single(), output=out, concurrency=1))
        assert server.stats()["generations"] == 1 + 3
    assert [r["problem_id"] for r in rows_of(out)] == ["p0"]


# -- SIGINT during a run: a clean stop, a consistent file, a resume ----------------------------


def test_sigint_stops_a_run_cleanly_and_a_rerun_resumes(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    out = tmp_path / "r.jsonl"
    config.write_text(
        "backend: {kind: scripted, script: 'so \\boxed{18}', seconds_per_token: 0.1}\n"
        f"dataset: {{name: gsm8k, limit: 12}}\nparams: {{n: 2}}\nconcurrency: 2\noutput: {out}\n"
    )
    command = [sys.executable, "-m", "reasoning.cli", "solve", "--config", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(finished(out)) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "interrupted; finished results are saved, re-run the same command to resume" in err
    assert "Traceback" not in err
    rows = rows_of(out)  # every line parses
    ids = [r["problem_id"] for r in rows]
    assert 3 <= len(ids) < 12 and len(set(ids)) == len(ids)
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    final = rows_of(out)
    assert len(final) == 12 and len({r["problem_id"] for r in final}) == 12
    assert {r["problem_id"]: r for r in final if r["problem_id"] in ids} == dict(zip(ids, rows, strict=True))


# -- the disk full while writing results ------------------------------------------------------


class FillsUp:
    """A file whose disk fills up after `room` more bytes: a partial write, then ENOSPC."""

    def __init__(self, file: Any, room: int) -> None:
        self.file = file
        self.room = room

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.file.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return int(self.file.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __enter__(self) -> "FillsUp":  # a file is a context manager (dunders skip __getattr__)
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def full_disk(monkeypatch: pytest.MonkeyPatch, target: Path, room: int) -> None:
    """Appending to `target` fills the disk after `room` bytes."""
    real = Path.open

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = real(self, mode, *args, **kwargs)
        return FillsUp(file, room) if self == target and "a" in mode else file

    monkeypatch.setattr(Path, "open", open_)


def test_a_full_disk_ends_the_run_with_one_clear_error_and_no_partial_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reasoning import ScriptedBackend
    from reasoning.evals.run import read_results, solve

    problems = [Problem(f"p{i}", f"{i}+{i}?", answer=str(2 * i)) for i in range(6)]
    out = tmp_path / "r.jsonl"
    controller = Controller(ScriptedBackend(["so \\boxed{2}"]))
    asyncio.run(solve(problems[:1], controller, Single(), output=out))
    row = len(out.read_bytes())
    full_disk(monkeypatch, out, room=2 * row + row // 2)  # room for two rows and a half
    with pytest.raises(StoreError, match=rf"{out}: cannot write results \(No space left on device\)"):
        asyncio.run(solve(problems, controller, Single(), output=out, concurrency=1))
    assert out.read_bytes().endswith(b"\n") and len(rows_of(out)) == 3  # whole rows only
    monkeypatch.undo()
    runs = asyncio.run(solve(problems, controller, Single(), output=out, concurrency=1))
    assert len(runs) == 6 and sorted(read_results(out)) == [p.id for p in problems]
    assert len(rows_of(out)) == 6


def test_a_full_disk_in_the_cli_is_one_line_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reasoning.cli import main

    out = tmp_path / "r.jsonl"
    full_disk(monkeypatch, out, room=100)
    argv = ["reasoning", "solve", "--dataset", "gsm8k", "--limit", "3", "--backend", "scripted"]
    monkeypatch.setattr("sys.argv", [*argv, "--output", str(out)])
    with pytest.raises(SystemExit) as info:
        main()
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 1 and "no space left on device" in err.lower() and str(out.name) in err
    assert "Traceback" not in err
    assert out.read_bytes() == b""  # the first row did not fit: nothing of it is left


def test_a_full_disk_leaves_the_leaderboard_store_valid_with_every_committed_row(tmp_path: Path) -> None:
    from rich.console import Console
    from test_leaderboard import board

    from reasoning import ScriptedBackend
    from reasoning.evals.leaderboard.runner import run_leaderboard
    from reasoning.evals.leaderboard.store import Store

    spec = board(tmp_path)
    quiet = Console(file=io.StringIO())

    def start(model: str, hidden_states: bool) -> ScriptedBackend:
        return ScriptedBackend(["so \\boxed{18}"])

    path = tmp_path / "s.sqlite"
    with Store.open(path) as store:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages + 8}")  # the disk fills up a few rows in
        with pytest.raises(
            StoreError, match=rf"{path}: writing the store failed \(database or disk is full\)"
        ):
            run_leaderboard(spec, store, start, console=quiet)
        committed = {(c.key, r.problem_id): r for c in store.cells() for r in store.results(c.key)}
    assert committed  # some rows made it before the disk was full
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Store.open(path) as store:  # the store opens (its own check passes) and the run resumes
        run_leaderboard(spec, store, start, console=quiet)
        after = {(c.key, r.problem_id): r for c in store.cells() for r in store.results(c.key)}
    for key, row in committed.items():
        assert after[key] == row
    assert len(after) > len(committed)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM results").fetchone()[0] == len(after)


# -- an engine that cannot start: a clear message, before any engine process -------------------


def test_an_engine_that_cannot_start_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reasoning.errors import ConfigError
    from reasoning.serving import server as server_module
    from reasoning.serving.server import VLLMServer

    with pytest.raises(ConfigError, match="is a path but holds no config.json"):
        VLLMServer(model=str(tmp_path))  # a folder that is not a model
    monkeypatch.setattr(server_module, "on_gpu", lambda: False)  # the CPU checks, without torch
    with pytest.raises(EngineStartError, match=r"not enough memory to start the engine.*lower --kv-cache-gb"):
        VLLMServer(kv_cache_gb=1 << 20).start()
    with (
        FakeServer(tmp_path / "taken.log") as taken,
        pytest.raises(EngineStartError, match=f"port {taken.port} on 127.0.0.1 is already in use"),
    ):
        VLLMServer(port=taken.port, kv_cache_gb=0.01).start()

    crash = [sys.executable, "-c", "import sys; print('RuntimeError: no usable model weights'); sys.exit(3)"]
    monkeypatch.setattr(VLLMServer, "command", lambda self: crash)
    dying = VLLMServer(kv_cache_gb=0.01, log=tmp_path / "dying.log")
    with pytest.raises(EngineStartError, match=r"(?s)exited with status 3; log .*no usable model weights"):
        dying.start()
    assert dying.process is None
    monkeypatch.setattr(
        VLLMServer, "command", lambda self: [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    hung = VLLMServer(kv_cache_gb=0.01, log=tmp_path / "hung.log")
    with pytest.raises(EngineStartError, match=r"was not healthy after 1s"):
        hung.start(timeout=1)
    assert hung.process is None  # stopped, not left running
