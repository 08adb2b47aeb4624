"""A fake vLLM OpenAI-compatible server for fault tests: ``python tests/fake_vllm.py --port P``.

Standard library only (asyncio), so it starts in a fraction of a second and can be killed and
restarted many times in one test. It binds 127.0.0.1 only. It serves ``/health``,
``/v1/models``, ``/stats`` (its request counts, as JSON) and *streaming* ``/v1/completions``
and ``/v1/chat/completions`` in vLLM's format: each piece has the choice's ``text`` (or
``delta.content``), its ``token_ids`` and ``finish_reason``, the first piece the
``prompt_token_ids``; every piece carries the usage so far (``continuous_usage_stats``) and a
last piece without choices the totals with ``prompt_tokens_details.cached_tokens``.

A sample's text is a deterministic function of (prompt, seed, sample index): a few words and
then ``\\boxed{A}``, so a run is reproduced exactly by any server process. Faults, counted over
generation requests (1, 2, ...): ``--fault 500|429`` answers that status, ``--fault stall``
stops sending (after ``--stall-after`` tokens; 0: before the response headers) until the
client hangs up; from request ``--fault-from`` on, for ``--fault-count`` requests (-1: all).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from typing import Any

WORDS = ("so", "then", "we", "add", "the", "two", "numbers", "and", "get", "it", "step", "thus")


class Fake:
    """The server's settings and counters."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.generations = 0
        self.faults = 0
        self.completed = 0
        self.seen: set[str] = set()

    def fault_for(self, number: int) -> str | None:
        """The fault of generation request `number` (1-based), if any."""
        a = self.args
        if a.fault is None or number < a.fault_from:
            return None
        if a.fault_count >= 0 and number >= a.fault_from + a.fault_count:
            return None
        return str(a.fault)


def sample_tokens(prompt: str, seed: Any, index: int, max_tokens: int) -> tuple[list[str], str]:
    """The tokens of one sample and its finish reason (deterministic)."""
    digest = hashlib.sha256(f"{prompt}|{seed}|{index}".encode()).digest()
    length = 4 + digest[0] % 8
    words = [(" " if i else "") + WORDS[digest[1 + i] % len(WORDS)] for i in range(length)]
    answer = 1 + digest[20] % 3  # a few distinct answers, so votes differ
    tokens = [*words, " so", " the", " answer", " is", f" \\boxed{{{answer}}}."]
    if len(tokens) > max_tokens:
        return tokens[:max_tokens], "length"
    return tokens, "stop"


def token_id(token: str) -> int:
    """A stable token id."""
    return int.from_bytes(hashlib.sha256(token.encode()).digest()[:2], "big")


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    """One HTTP/1.1 request (method, path, body), or None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return method, path, body


def head(status: int, headers: dict[str, str]) -> bytes:
    """A response's status line and headers."""
    reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Error"}
    lines = [f"HTTP/1.1 {status} {reasons.get(status, 'Status')}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def send_json(writer: asyncio.StreamWriter, status: int, value: Any) -> None:
    """A whole JSON response."""
    body = json.dumps(value).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    writer.write(head(status, headers) + body)
    await writer.drain()


async def handle(fake: Fake, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve one connection (keep-alive) until the client hangs up."""
    try:
        while True:
            request = await read_request(reader)
            if request is None:
                return
            method, path, body = request
            if path == "/health":
                await send_json(writer, 200, {})
            elif path == "/stats":
                stats = {"generations": fake.generations, "faults": fake.faults, "completed": fake.completed}
                await send_json(writer, 200, stats)
            elif path == "/v1/models":
                model = {"id": fake.args.model, "object": "model", "created": 0, "owned_by": "fake"}
                await send_json(writer, 200, {"object": "list", "data": [model]})
            elif method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
                if not await generate(
                    fake, json.loads(body), path.endswith("chat/completions"), reader, writer
                ):
                    return
            else:
                await send_json(writer, 404, {"error": {"message": f"no route {path}"}})
    except ConnectionError:
        return
    finally:
        writer.close()


async def generate(
    fake: Fake, body: dict[str, Any], chat: bool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> bool:
    """Answer a generation request; False when the connection is to be dropped."""
    fake.generations += 1
    fault = fake.fault_for(fake.generations)
    if fault in ("500", "429"):
        fake.faults += 1
        await send_json(writer, int(fault), {"error": {"message": f"fake fault {fault}", "code": int(fault)}})
        return True
    if not body.get("stream"):
        await send_json(writer, 400, {"error": {"message": "this fake server only streams"}})
        return True
    prompt = json.dumps(body["messages"], sort_keys=True) if chat else str(body["prompt"])
    seed = body.get("seed") if float(body.get("temperature", 1.0)) > 0 else "greedy"
    n, max_tokens = int(body.get("n", 1)), int(body.get("max_tokens") or 64)
    samples = [sample_tokens(prompt, seed, i, max_tokens) for i in range(n)]
    prompt_ids = [token_id(w) for w in prompt.split()]
    cached = (len(prompt_ids) // 16) * 16 if prompt in fake.seen else 0
    fake.seen.add(prompt)
    stall_at = fake.args.stall_after if fault == "stall" else None
    if fault == "stall":
        fake.faults += 1
    if stall_at == 0:
        await reader.read()  # hold the connection, answer nothing, until the client hangs up
        return False
    writer.write(head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
    kind = "chat.completion.chunk" if chat else "text_completion"
    done = 0
    for step in range(max(len(tokens) for tokens, _ in samples)):
        for index, (tokens, reason) in enumerate(samples):
            if step >= len(tokens):
                continue
            done += 1
            choice: dict[str, Any] = {
                "index": index,
                "token_ids": [token_id(tokens[step])],
                "finish_reason": reason if step == len(tokens) - 1 else None,
            }
            if chat:
                choice["delta"] = {"content": tokens[step], **({"role": "assistant"} if step == 0 else {})}
            else:
                choice["text"] = tokens[step]
                if step == 0:
                    choice["prompt_token_ids"] = prompt_ids
            usage = {"prompt_tokens": len(prompt_ids), "completion_tokens": done}
            usage["total_tokens"] = usage["prompt_tokens"] + done
            event = {"id": "f", "object": kind, "created": 0, "model": fake.args.model, "choices": [choice]}
            await send_event(writer, {**event, "usage": usage})
        if stall_at is not None and step + 1 >= stall_at:
            await reader.read()
            return False
        if fake.args.token_delay:
            await asyncio.sleep(fake.args.token_delay)
    usage = {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": done,
        "total_tokens": len(prompt_ids) + done,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    await send_event(
        writer,
        {"id": "f", "object": kind, "created": 0, "model": fake.args.model, "choices": [], "usage": usage},
    )
    await send_chunk(writer, b"data: [DONE]\n\n")
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    fake.completed += 1
    return True


async def send_event(writer: asyncio.StreamWriter, event: dict[str, Any]) -> None:
    """One server-sent event."""
    await send_chunk(writer, f"data: {json.dumps(event)}\n\n".encode())


async def send_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    """One chunk of a chunked response."""
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


async def serve(args: argparse.Namespace) -> None:
    """Listen on 127.0.0.1 until killed."""
    fake = Fake(args)
    server = await asyncio.start_server(lambda r, w: handle(fake, r, w), "127.0.0.1", args.port)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Parse the options and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="fake")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--fault", choices=["500", "429", "stall"])
    parser.add_argument("--fault-from", type=int, default=1)
    parser.add_argument("--fault-count", type=int, default=-1)
    parser.add_argument("--stall-after", type=int, default=0)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
