"""How soon a client that leaves cancels its run in the strategy proxy: real sockets, curl and httpx.

The proxy serves a slow scripted backend (a run would decode for ~10 s) from uvicorn on loopback;
each client (curl and httpx, streaming and not) sends a request and leaves 0.3 s later, as a
client's timeout does, alternating ``single`` and ``self-consistency(n=3)``. For each client it
prints how many of the tries were cancelled in the engine within 0.5 s of the client leaving
(the target: all of them), the median and the slowest. tests/test_proxy_disconnect.py asserts
the mechanism (cancelled at all, nothing decodes on, one engine request per try).

    .venv/bin/python benchmarks/proxy_disconnect.py --tries 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from reasoning import ScriptedBackend
from reasoning.serving.proxy import ProxySettings, create_app
from reasoning.serving.server import free_port

LONG = " ".join(f"w{i}" for i in range(500))
LEAVE = 0.3
TARGET = 0.5


def leave_with_curl(url: str, data: str, stream: bool) -> None:
    curl = shutil.which("curl") or "curl"
    flags = ["-sS", "-N"] if stream else ["-sS"]
    command = [
        curl,
        *flags,
        "--max-time",
        str(LEAVE),
        url,
        "-H",
        "Content-Type: application/json",
        "-d",
        data,
    ]
    subprocess.run(command, capture_output=True, check=False)


def leave_with_httpx(url: str, data: str, stream: bool) -> None:
    with httpx.Client(timeout=LEAVE) as http:
        try:
            if not stream:
                http.post(url, content=data, headers={"Content-Type": "application/json"})
                return
            start = time.monotonic()
            with http.stream("POST", url, content=data, headers={"Content-Type": "application/json"}) as r:
                for _ in r.iter_lines():
                    if time.monotonic() - start > LEAVE:
                        break
        except httpx.TimeoutException:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tries", type=int, default=10)
    args = parser.parse_args()
    backend = ScriptedBackend([LONG], seconds_per_token=0.02)
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(backend, ProxySettings(model="m", records=Path(folder) / "records.jsonl"))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="error"))
        thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{server.config.port}/v1/chat/completions"
        print(f"{'client':<14} {'within 0.5 s':>13} {'median ms':>10} {'slowest ms':>11}")
        for name, leave in (("curl", leave_with_curl), ("httpx", leave_with_httpx)):
            for stream in (False, True):
                delays = []
                for attempt in range(args.tries):
                    strategy = ("single", "self-consistency(n=3)")[attempt % 2]
                    data = json.dumps(
                        {
                            "model": f"{strategy}@m",
                            "messages": [{"role": "user", "content": "?"}],
                            "stream": stream,
                        }
                    )
                    before = backend.cancelled
                    leave(url, data, stream)
                    left = time.monotonic()
                    while backend.cancelled == before or backend.streaming:
                        time.sleep(0.001)
                    delays.append(time.monotonic() - left)
                label = f"{name}{' stream' if stream else ''}"
                within = sum(d <= TARGET for d in delays)
                median, slowest = statistics.median(delays) * 1000, max(delays) * 1000
                print(f"{label:<14} {within:>6}/{len(delays):<6} {median:>10.1f} {slowest:>11.1f}")
        server.should_exit = True
        thread.join(timeout=30)


if __name__ == "__main__":
    main()
