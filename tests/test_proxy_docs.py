"""docs/proxy.md's demo, run as written: its scripted command, then its Python and curl snippets.

The only change made to the page's text is the port: the command listens on a free one
(``--port 0``, which it prints) and the snippets' ``127.0.0.1:8080`` becomes that address, so the
test does not depend on port 8080 being free.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "proxy.md"
REASONING = str(Path(sys.executable).with_name("reasoning"))
DOCUMENTED = "http://127.0.0.1:8080"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_pages_snippets_work_as_written_against_its_scripted_command(tmp_path: Path) -> None:
    lines = [line for block in blocks("bash") for line in block.splitlines()]
    demo = next(line for line in lines if "reasoning proxy" in line and "--backend scripted" in line)
    words = shlex.split(demo, comments=True)
    assert words[:2] == [".venv/bin/reasoning", "proxy"], demo
    python = next(b for b in blocks("python") if "OpenAI(base_url=" in b)
    curl = next(b for b in blocks("bash") if b.lstrip().startswith("curl "))
    assert DOCUMENTED in python and DOCUMENTED in curl
    assert shutil.which("curl"), "curl is needed by this test (apt-get install curl)"

    command = [REASONING, *words[1:], "--port", "0", "--records", str(tmp_path / "records.jsonl")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("serving "), (line, process.communicate(timeout=30))
        url = line.split(" at ")[1].strip().removesuffix("/v1")
        by_python = subprocess.run(
            [sys.executable, "-c", python.replace(DOCUMENTED, url)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        by_curl = subprocess.run(
            ["bash", "-c", curl.replace(DOCUMENTED, url)], capture_output=True, text=True, timeout=60
        )
    finally:
        process.send_signal(signal.SIGINT)  # "Ctrl-C stops it"
        _, stderr = process.communicate(timeout=30)

    assert by_python.returncode == 0, by_python.stderr
    content, reasoning = by_python.stdout.splitlines()[:2]
    assert content == "The answer is \\boxed{0}."  # the scripted reply
    facts = ast.literal_eval(reasoning)
    assert (
        facts["strategy"] == "self-consistency(n=4)" and facts["candidates"] == 4 and facts["answer"] == "0"
    )

    assert by_curl.returncode == 0, by_curl.stderr
    events = [e.removeprefix("data: ") for e in by_curl.stdout.splitlines() if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert not any("error" in c for c in chunks), chunks
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "The answer is \\boxed{0}."
    final = next(c["reasoning"] for c in chunks if "reasoning" in c)
    assert final["strategy"] == "first-finish(max_tokens=400)" and final["stop_reason"] == "done"

    assert process.returncode == 0 and stderr.rstrip().endswith("proxy stopped"), stderr
    assert "Traceback" not in stderr
