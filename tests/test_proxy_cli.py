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
