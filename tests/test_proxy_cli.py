"""The ``reasoning proxy`` command: how it stops (Ctrl-C, SIGTERM), its port, its backend options."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import invoke

REASONING = str(Path(sys.executable).with_name("reasoning"))
LONG = " ".join(f"w{i}" for i in range(400))  # 20 s at 0.05 s a token


@contextmanager
def command(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``reasoning proxy --backend scripted ARGS`` on a free port; yield it and its /v1 URL."""
    process = subprocess.Popen(
        [REASONING, "proxy", "--backend", "scripted", "--port", "0", "--records", str(tmp_path / "r.jsonl"),
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once it listens
        assert line.startswith("serving "), (line, process.communicate(timeout=30))
        yield process, line.split(" at ")[1].strip()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def stopped(process: subprocess.Popen[str], sig: int) -> str:
    """Send `sig`; the standard error once the command has ended (it must, with status 0)."""
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    return stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_ends_requests_in_flight_with_an_error_and_no_traceback(
    tmp_path: Path, sig: int
) -> None:
    replies: dict[str, str] = {}
    first_token = threading.Event()

    def streamed(url: str) -> None:
        body = {"model": "scripted", "messages": [{"role": "user", "content": "?"}], "stream": True}
        with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=30) as response:
            lines = []
            for line in response.iter_lines():
                lines.append(line)
                first_token.set()
            replies["stream"] = "\n".join(lines)

    def whole(url: str) -> None:
        body = {"model": "self-consistency(n=2)@scripted", "messages": [{"role": "user", "content": "?"}]}
        response = httpx.post(f"{url}/chat/completions", json=body, timeout=30)
        replies["whole"] = f"{response.status_code} {response.text}"

    with command(
        tmp_path, "--script", LONG, "--script-seconds-per-token", "0.05", "--shutdown-grace", "0.5"
    ) as (
        process,
        url,
    ):
        clients = [
            threading.Thread(target=streamed, args=(url,)),
            threading.Thread(target=whole, args=(url,)),
        ]
        for client in clients:
            client.start()
        assert first_token.wait(20)
        time.sleep(0.3)  # the second run is decoding too
        start = time.monotonic()
        stderr = stopped(process, sig)
        took = time.monotonic() - start
        for client in clients:
            client.join(timeout=30)
    assert "Traceback" not in stderr and "exception" not in stderr.lower(), stderr
    assert stderr.rstrip().endswith("proxy stopped"), stderr
    assert "stopping: 2 request(s) in flight ended with an error" in stderr
    assert took < 15  # not the 20 s the runs would take
    status, text = replies["whole"].split(" ", 1)
    assert status == "503" and json.loads(text)["error"]["code"] == "server_stopping"
    events = [
        line.removeprefix("data: ") for line in replies["stream"].splitlines() if line.startswith("data: ")
    ]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "server_stopping"


def test_ctrl_c_with_nothing_in_flight_prints_proxy_stopped_only(tmp_path: Path) -> None:
    with command(tmp_path) as (process, url):
        assert httpx.get(f"{url}/models").status_code == 200
        stderr = stopped(process, signal.SIGINT)
    assert "Traceback" not in stderr and "exception" not in stderr.lower(), stderr
    assert stderr.rstrip().endswith("proxy stopped")


def test_model_names_what_the_scripted_backend_serves(tmp_path: Path) -> None:
    with command(tmp_path, "--model", "qwen2.5-coder-0.5b-instruct") as (process, url):
        ids = [m["id"] for m in httpx.get(f"{url}/models").json()["data"]]
        reply = httpx.post(
            f"{url}/chat/completions",
            json={
                "model": "single@qwen2.5-coder-0.5b-instruct",
                "messages": [{"role": "user", "content": "?"}],
            },
        )
        stopped(process, signal.SIGTERM)
    assert ids[0] == "qwen2.5-coder-0.5b-instruct" and reply.status_code == 200


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_out_of_range_is_one_clear_error(port: str) -> None:
    code, output = invoke("proxy", "--backend", "scripted", "--port", port)
    assert code == 2 and "Invalid value for '--port'" in output, output
    assert "Traceback" not in output and "OverflowError" not in output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--script", "hi"], "--script: not used by --backend vllm"),
        (
            ["--backend", "scripted", "--base-url", "http://127.0.0.1:9"],
            "--base-url: not used by --backend scripted",
        ),
        (["--backend", "scripted", "--kv-cache-gb", "4"], "--kv-cache-gb: not used by --backend scripted"),
        (["--backend", "nope"], "unknown backend 'nope'"),
    ],
)
def test_an_option_the_backend_would_ignore_is_refused_before_anything_starts(
    args: list[str], fragment: str
) -> None:
    code, output = invoke("proxy", *args)
    assert code != 0 and fragment in output, output


def test_a_second_ctrl_c_answers_the_requests_in_flight_with_503_and_no_traceback(tmp_path: Path) -> None:
    replies: list[tuple[int, str]] = []
    started = threading.Event()

    def whole(url: str) -> None:
        body = {"model": "scripted", "messages": [{"role": "user", "content": "?"}]}
        started.set()
        response = httpx.post(f"{url}/chat/completions", json=body, timeout=30)
        replies.append((response.status_code, response.text))

    script = " ".join(f"w{i}" for i in range(200))  # 4 s at 0.02 s a token
    with command(tmp_path, "--script", script, "--script-seconds-per-token", "0.02") as (process, url):
        clients = [threading.Thread(target=whole, args=(url,)) for _ in range(2)]
        for client in clients:
            client.start()
        assert started.wait(10)
        time.sleep(0.7)  # both runs are decoding (default --shutdown-grace: 5 s)
        process.send_signal(signal.SIGINT)
        time.sleep(0.2)
        stderr = stopped(process, signal.SIGINT)
        for client in clients:
            client.join(timeout=30)
    assert "Traceback" not in stderr and "exception" not in stderr.lower(), stderr
    assert stderr.rstrip().endswith("proxy stopped"), stderr
    assert len(replies) == 2
    for status, text in replies:
        assert status == 503 and json.loads(text)["error"]["code"] == "server_stopping", text


def test_ctrl_c_while_starting_says_so_without_solves_message(tmp_path: Path) -> None:
    # The interrupt arrives while the backend starts (an engine load takes that long).
    program = (
        "import os, signal, sys\n"
        "import reasoning.cli.proxy as p\n"
        "def start(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    raise AssertionError('not interrupted')\n"
        "p._start = start\n"
        "from reasoning.cli import main\n"
        f"sys.argv = ['reasoning', 'proxy', '--backend', 'scripted', '--port', '0', '--records', "
        f"{str(tmp_path / 'r.jsonl')!r}]\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr and "re-run the same command" not in done.stderr, done.stderr
    assert done.stderr.strip() == "interrupted while starting; proxy stopped", done.stderr
    assert done.returncode == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--strategy", "self-consistency(n=99)"], "--strategy self-consistency(n=99): "),
        (["--strategy", "single(max_tokens=99999)"], "max_tokens=99999 per sample"),
        (["--max-seconds", "0"], "--max-seconds must be > 0, got 0"),
        (["--host", "192.0.2.1"], "check --host"),
    ],
)
def test_bad_settings_are_one_clear_error_at_start(tmp_path: Path, args: list[str], fragment: str) -> None:
    # the command, not `invoke`: a setting accepted by mistake would serve forever in-process
    done = subprocess.run(
        [REASONING, "proxy", "--backend", "scripted", "--port", "0", "--records", str(tmp_path / "r"), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())  # unwrapped
    assert done.returncode == 1 and fragment in output, output
    assert "Traceback" not in output and not done.stdout
    assert "prompt_tokens" not in output and "another --port" not in output
