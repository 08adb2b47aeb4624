"""Peers side by side: this framework vs its-hub on one vLLM server, same problems, model, N.

One `reasoning serve`-style vLLM server (`VLLMServer`) is started; both sides talk to it over
HTTP. Both solve the first K GSM8K test problems, all K in flight at once, with the same model,
N, temperature (top_p 1 on both: its-hub sends no top_p), max_tokens and prompt (our
`default_prompt`: one user message ending "... put your final answer within \\boxed{}."), and
both sides' answers are graded by the one function below (`reasoning.verifiers.grading.grade`
on the answer `extract_answer` reads, as `reasoning solve` grades). Methods:

* self-consistency: ours `SelfConsistency(n)`; its-hub `SelfConsistency(projection)` voting on
  the last ``\\boxed{}`` of each sample;
* best-of-n: ours `BestOfN(n, selector="argmax", score="judge")` (the model's P(Yes), one token
  per candidate); its-hub `BestOfN(LLMJudge(lm))`, its only outcome scorer that needs no reward
  model server (the same model writes a JSON score 0-10 with reasoning for each distinct
  candidate, under a JSON-schema response format, at the LM's temperature and max_tokens).

Per round and side: accuracy (correct/K), pass@N oracle, output tokens (ours: ``run.usage``;
its-hub: the ``usage.completion_tokens`` of every response the server sent, judge calls
included), tokens the engine decoded (vLLM's ``/metrics`` counter, the same meter for both),
prompt tokens per request, requests, wall time. Then ours/its-hub ratios of wall time (mean
over rounds) and tokens, and the goal line "equal accuracy at <= 0.85x its wall time" (met when
our correct answers summed over the rounds are not fewer than its-hub's and the wall ratio is
<= 0.85). A warm-up round of both sides precedes each method; then the arms alternate, ours
first (A B A B), for ``--repeats`` rounds. Ours is seeded (run seed 0), its-hub sends no seeds.

How the two sides use the server (this is where speed differs):
* ours renders the chat template locally and sends ONE streamed completions request with
  ``n=N`` per problem (the engine prefills once and decodes the N samples as a batch), its
  tokens in 16-token chunks (`Context.generate`'s ``stream_interval``; ``--per-token`` adds an
  arm of ours that streams every token, as before, so the two are compared in one run);
* its-hub sends N separate non-streamed chat-completions requests per problem (``n`` is never
  set), through aiohttp, with ``max_completion_tokens`` and ``temperature``; the server applies
  the same chat template (for self-consistency the prompt-tokens-per-request column of the two
  sides should then agree), and prefix caching spares most of the repeated prefills. Its
  best-of-N then sends one more chat request per distinct candidate to the judge.
* Its orchestrator caps requests in flight at 32 by default (a thread-backed semaphore); here
  it runs unlimited (``--its-hub-concurrency -1``) so that it is not held below the engine's
  ``max_num_seqs``, as ours is not. Its worker (`peers_its_hub.py`) is timed around its gathered
  solve only, as ours is around `solve`.

its-hub lives in its own venv, ``.bench/peers-venv`` (git-ignored), made on first use with
``python -m venv`` and ``pip install 'its-hub[lm]==1.2.0'`` (measured on the 2-core machine while
it was busy: 24-35 s; 162 MB, of which numpy 45, openai 30, pip 17, its_hub 2.4). Version 1.2.0
needs numpy and typing-extensions, and its ``[lm]`` extra (the OpenAI-compatible LM, the LLM
judge) adds openai, aiohttp, backoff, certifi and requests: no torch, vllm or transformers, so
nothing pulls CUDA torch (an older pyproject in its repository required ``vllm<=0.9.1`` and
``transformers``; in 1.2.0 transformers and the process-reward extras sit in ``[experimental]``,
not installed here). optillm 0.4.0 is not run (`SKIPPED` says why).

Cost: each round decodes about K * N * max_tokens tokens per side, more for its-hub's judge
(up to max_tokens per distinct candidate). At ~200 tok/s (the 0.5B in bf16 on an AVX-512 CPU,
both cores) the defaults take ~80 s per side and round: with the warm-ups, roughly 8 min for
self-consistency and 8-12 min for best-of-n, plus 1-2 min of server start. On a CPU without
AVX-512 the default ``--dtype auto`` picks float32 (bf16 is ~4.6x slower there).

    .venv/bin/python benchmarks/peers.py --problems 8 --n 8 --max-tokens 256 --repeats 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoning import Controller, Problem, default_prompt, extract_answer
from reasoning import strategy as reasoning_strategy
from reasoning.backends.openai_server import OpenAIBackend
from reasoning.errors import ReasoningError
from reasoning.evals.datasets import load_dataset
from reasoning.evals.run import solve
from reasoning.serving.server import VLLMServer
from reasoning.strategies import BestOfN, SelfConsistency
from reasoning.verifiers.grading import grade

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / ".bench" / "peers-venv"
WORKER = Path(__file__).with_name("peers_its_hub.py")
ITS_HUB_VERSION = "1.2.0"
GOAL_WALL_RATIO = 0.85
METHODS = ("self-consistency", "best-of-n")
SKIPPED = {
    "optillm": (
        "optillm 0.4.0 is not run: its self-consistency draws a fixed 5 samples at temperature 1, "
        "one request after another, and clusters whole texts by string similarity; its best-of-n "
        "also samples at temperature 1 (N set on its proxy's command line) and rates candidates "
        "one by one; so neither runs at the same N and temperature as ours. It works as a Flask "
        "proxy, and `import optillm` loads that server, whose requirements include torch, "
        "transformers, spacy, gradio, litellm, google-cloud-aiplatform, bitsandbytes and selenium "
        "(gigabytes on this machine)."
    ),
}


@dataclass
class Arm:
    """One side's round: what it got right and what it spent."""

    correct: int
    oracle: int
    tokens: int
    prompt_tokens: int
    requests: int
    seconds: float
    engine_tokens: int = 0
    errors: list[str] = field(default_factory=list)


def verdict(problem: Problem, answer: str | None, candidates: Sequence[str | None]) -> tuple[bool, bool]:
    """(answer correct, some candidate correct): the one grading both sides go through."""
    seen: dict[str | None, bool] = {}

    def right(value: str | None) -> bool:
        if value not in seen:
            try:
                seen[value] = bool(grade(problem, value))
            except ReasoningError:
                seen[value] = False
        return seen[value]

    return right(answer), right(answer) or any(right(c) for c in candidates if c is not None)


def peer_python() -> Path:
    return PEER_VENV / "bin" / "python"


def its_hub_version(python: Path) -> str | None:
    probe = "import importlib.metadata as m; print(m.version('its-hub'))"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_its_hub() -> Path:
    """The interpreter of ``.bench/peers-venv`` with its-hub installed (installed on first use)."""
    python = peer_python()
    if python.exists() and its_hub_version(python) == ITS_HUB_VERSION:
        return python
    print(f"installing its-hub {ITS_HUB_VERSION} into {PEER_VENV.relative_to(ROOT)} ...", flush=True)
    start = time.perf_counter()
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"its-hub[lm]=={ITS_HUB_VERSION}"],
        capture_output=True,
        text=True,
        check=False,
    )
    version = its_hub_version(python)
    if done.returncode != 0 or version != ITS_HUB_VERSION:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"cannot install its-hub {ITS_HUB_VERSION} (pip exit {done.returncode}):\n{tail}")
    print(f"installed its-hub {version} in {time.perf_counter() - start:.0f} s", flush=True)
    return python


def strategy(method: str, args: argparse.Namespace) -> SelfConsistency | BestOfN:
    common: dict[str, Any] = {
        "n": args.n,
        "temperature": args.temperature,
        "top_p": 1.0,
        "max_tokens": args.max_tokens,
    }
    if method == "self-consistency":
        return SelfConsistency(**common)
    return BestOfN(selector="argmax", score="judge", **common)


async def ours(
    backend: OpenAIBackend, problems: list[Problem], method: str, args: argparse.Namespace, interval: int
) -> Arm:
    """Our side; `interval` is `Context.generate`'s stream interval (1: a chunk per token)."""
    default = reasoning_strategy.GENERATE_STREAM_INTERVAL
    reasoning_strategy.GENERATE_STREAM_INTERVAL = interval
    start = time.perf_counter()
    try:
        runs = await solve(
            problems,
            Controller(backend, seed=0),
            strategy(method, args),
            output=None,
            concurrency=len(problems),
        )
    finally:
        reasoning_strategy.GENERATE_STREAM_INTERVAL = default
    seconds = time.perf_counter() - start
    arm = Arm(0, 0, 0, 0, 0, seconds)
    for problem, run in zip(problems, runs, strict=True):
        right, oracle = verdict(problem, run.answer, [c.answer for c in run.candidates])
        arm.correct += right
        arm.oracle += oracle
        arm.tokens += int(run.usage.get("output_tokens", 0))
        arm.prompt_tokens += int(run.usage.get("prompt_tokens", 0))
        arm.requests += int(run.usage.get("calls", 0))
        if run.error:
            arm.errors.append(f"{problem.id}: {run.error}")
    return arm


async def its_hub(
    python: Path, server: VLLMServer, problems: list[Problem], method: str, args: argparse.Namespace
) -> Arm:
    job = {
        "base_url": server.url + "/v1",
        "model": server.model,
        "method": method,
        "n": args.n,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "concurrency": args.its_hub_concurrency,
        "problems": [
            {"id": p.id, "messages": [{"role": m.role, "content": m.content} for m in default_prompt(p)]}
            for p in problems
        ],
    }
    log = ROOT / ".bench" / "peers-its-hub.log"
    with log.open("ab") as stderr:
        worker = await asyncio.create_subprocess_exec(
            str(python),
            str(WORKER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        out, _ = await worker.communicate(json.dumps(job).encode())
    if worker.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
        raise SystemExit(f"the its-hub worker exited with status {worker.returncode}; {log}:\n{tail}")
    result = json.loads(out.decode().strip().splitlines()[-1])  # the worker's one JSON line
    arm = Arm(
        0, 0, result["completion_tokens"], result["prompt_tokens"], result["requests"], result["seconds"]
    )
    for problem, solved in zip(problems, result["problems"], strict=True):
        candidates = [extract_answer(text) for text in solved["texts"]]
        right, oracle = verdict(problem, extract_answer(solved["text"] or ""), candidates)
        arm.correct += right
        arm.oracle += oracle
        if solved["error"]:
            arm.errors.append(f"{problem.id}: {solved['error']}")
    return arm


def report(label: str, side: str, arm: Arm, k: int) -> None:
    per_request = arm.prompt_tokens / max(1, arm.requests)
    print(
        f"  {label:8s} {side:8s} acc {arm.correct}/{k}  pass@n {arm.oracle}/{k}  tokens {arm.tokens:6d}  "
        f"engine {arm.engine_tokens:6d}  prompt/req {per_request:6.1f}  requests {arm.requests:4d}  "
        f"{arm.seconds:6.1f} s  {arm.tokens / max(arm.seconds, 1e-9):5.0f} tok/s",
        flush=True,
    )
    for error in arm.errors:
        print(f"    error {error}", flush=True)


def check_sampling_defaults(model_path: str) -> None:
    """Warn when the model's generation config gives vLLM a top_p default that its-hub inherits."""
    config = Path(model_path) / "generation_config.json"
    if not config.is_file():
        return
    top_p = json.loads(config.read_text()).get("top_p")
    if top_p not in (None, 1, 1.0):
        print(
            f"warning: {config} sets top_p={top_p}; the server applies it to its-hub's requests "
            "(which send no top_p) while ours send top_p=1: the two sides sample differently",
            flush=True,
        )


async def main(args: argparse.Namespace, server: VLLMServer, python: Path) -> None:
    default_interval = reasoning_strategy.GENERATE_STREAM_INTERVAL
    problems = load_dataset("gsm8k", limit=args.problems)
    k = len(problems)
    check_sampling_defaults(server.path)
    backend = server.backend()
    try:
        for method in args.methods.split(","):
            print(
                f"\n{method}: {k} problems, n={args.n}, max_tokens={args.max_tokens}, "
                f"T={args.temperature}, top_p=1, model {server.model}, dtype {server.dtype_choice.dtype}",
                flush=True,
            )
            rounds: dict[str, list[Arm]] = {"ours": [], "its-hub": []}
            if args.per_token:
                rounds = {"ours": [], "ours/tok": [], "its-hub": []}
            for round_ in range(args.repeats + 1):
                label = "warm-up" if round_ == 0 else f"round {round_}"
                for side in rounds:
                    before = await backend.decoded_tokens()
                    if side == "ours":
                        arm = await ours(backend, problems, method, args, default_interval)
                    elif side == "ours/tok":
                        arm = await ours(backend, problems, method, args, 1)
                    else:
                        arm = await its_hub(python, server, problems, method, args)
                    await asyncio.sleep(1.0)  # let the engine's counter settle
                    arm.engine_tokens = await backend.decoded_tokens() - before
                    report(label, side, arm, k)
                    if round_ > 0:
                        rounds[side].append(arm)
            summarize(method, rounds["ours"], rounds["its-hub"], k)
            if args.per_token:
                coarse = statistics.mean(a.seconds for a in rounds["ours"])
                fine = statistics.mean(a.seconds for a in rounds["ours/tok"])
                theirs = statistics.mean(a.seconds for a in rounds["its-hub"])
                print(
                    f"  ours streamed {default_interval} tokens a chunk vs 1: wall x{coarse / fine:.2f} "
                    f"({coarse:.1f} vs {fine:.1f} s/round); ours/tok vs its-hub: wall x{fine / theirs:.2f}",
                    flush=True,
                )
    finally:
        await backend.aclose()


def summarize(method: str, mine: list[Arm], theirs: list[Arm], k: int) -> None:
    if not mine or not theirs:
        return
    wall = statistics.mean(a.seconds for a in mine) / statistics.mean(a.seconds for a in theirs)
    tokens = sum(a.tokens for a in mine) / max(1, sum(a.tokens for a in theirs))
    engine = sum(a.engine_tokens for a in mine) / max(1, sum(a.engine_tokens for a in theirs))
    total = k * len(mine)
    ours_right, theirs_right = sum(a.correct for a in mine), sum(a.correct for a in theirs)
    for side, arms in (("ours", mine), ("its-hub", theirs)):
        print(
            f"  {method} {side:8s} acc {sum(a.correct for a in arms)}/{total} "
            f"({', '.join(str(a.correct) for a in arms)} of {k})  "
            f"tokens {statistics.mean(a.tokens for a in arms):.0f}/round  "
            f"wall {statistics.mean(a.seconds for a in arms):.1f} s/round",
            flush=True,
        )
    print(f"  ratio ours/its-hub: wall x{wall:.2f}  tokens x{tokens:.2f}  engine tokens x{engine:.2f}")
    met = ours_right >= theirs_right and wall <= GOAL_WALL_RATIO
    print(
        f"  goal: equal accuracy at <= {GOAL_WALL_RATIO}x its wall time: {'MET' if met else 'NOT MET'} "
        f"(accuracy {ours_right}/{total} vs {theirs_right}/{total}, "
        f"{'not lower' if ours_right >= theirs_right else 'lower'}; wall x{wall:.2f})",
        flush=True,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=8, help="first K GSM8K test problems")
    parser.add_argument("--n", type=int, default=8, help="samples per problem (both sides)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=2, help="measured rounds after the warm-up")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated: " + ", ".join(METHODS))
    parser.add_argument("--peers", default="its-hub", help="comma-separated: its-hub, optillm")
    parser.add_argument("--model", default=None, help="embedded model, local folder or HF id")
    parser.add_argument("--dtype", default="auto", help="auto: chosen from the CPU (reasoning doctor)")
    parser.add_argument("--kv-cache-gb", type=float, default=2.0)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument(
        "--per-token",
        action="store_true",
        help="add an arm of ours that streams every token (Context.generate's stream interval 1)",
    )
    parser.add_argument(
        "--its-hub-concurrency",
        type=int,
        default=-1,
        help="its-hub orchestrator cap (-1: none; its default 32)",
    )
    args = parser.parse_args()
    for method in args.methods.split(","):
        if method not in METHODS:
            parser.error(f"--methods: unknown {method!r}; choose from {', '.join(METHODS)}")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    peers = [p.strip() for p in arguments.peers.split(",") if p.strip()]
    for peer in peers:
        if peer in SKIPPED:
            print(SKIPPED[peer], flush=True)
        elif peer != "its-hub":
            raise SystemExit(f"--peers: unknown peer {peer!r} (its-hub, optillm)")
    if "its-hub" not in peers:
        raise SystemExit("no peer to run")
    interpreter = ensure_its_hub()
    with VLLMServer(
        arguments.model,
        kv_cache_gb=arguments.kv_cache_gb,
        dtype=arguments.dtype,
        max_num_seqs=arguments.max_num_seqs,
    ) as vllm_server:
        print(f"server {vllm_server.url} serving {vllm_server.model}", flush=True)
        asyncio.run(main(arguments, vllm_server, interpreter))
