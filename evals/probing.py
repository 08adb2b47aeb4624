"""The probe pipeline: collect labelled decision points, read their features, train, calibrate.

    collect:   for each training problem: one sampled trace (T=0.6, top_p=0.95); its decision
               points (cue set); at each, a forced exit (text before the point + exit phrase,
               greedy, cut when the brace closes), graded against the gold answer -> label
    features:  hidden states of the chosen layers at each decision point (prompt + text up to
               and including the point's token, last position) and at the prompt's last token
    train / calibrate: `reasoning.probes.probe`

All traces of a collection run concurrently (the engine batches them); within a trace the
forced exits and hidden-state reads go out together, sharing the trace's cached prefix.
Grading uses gold answers, so this lives in evals: strategies never see labels.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from reasoning import Backend, Problem, Request, Sampling, extract_answer
from reasoning.backend import (
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    HIDDEN_STATES_OFFERED_BY,
    HiddenStateReader,
    TokenCounter,
)
from reasoning.concurrency import run_all
from reasoning.engine.models import cached_model_path, fingerprint
from reasoning.errors import CapabilityError, ConfigError, DatasetError
from reasoning.probes.cues import DEFAULT_CUES, CueSet
from reasoning.probes.data import DecisionPoints
from reasoning.probes.exit import EXIT_PHRASE, default_layers, read_answer
from reasoning.problem import default_prompt, question_sha
from reasoning.record import jsonl_lines
from reasoning.strategy import request_seed
from reasoning.trace import Trace
from reasoning.verifiers.grading import grade_async

__all__ = [
    "append_trace",
    "collect_traces",
    "collection_header",
    "compute_features",
    "model_layers",
    "read_traces",
    "write_traces",
]

logger = logging.getLogger(__name__)


def model_of(backend: Backend) -> str:
    """The model a backend serves (name, folder or id)."""
    return str(getattr(backend, "model", "") or backend.name)


def model_layers(backend: Backend) -> int:
    """Number of decoder layers of the backend's model, from its config.json.

    Raises:
        ConfigError: the model has no local folder to read it from.
    """
    folder = cached_model_path(model_of(backend))
    if folder is None:
        raise ConfigError(f"cannot read the layer count of {model_of(backend)!r}; give --layers")
    return int(json.loads((Path(folder) / "config.json").read_text())["num_hidden_layers"])


async def _trace(
    backend: Backend,
    problem: Problem,
    cues: CueSet,
    exit_phrase: str,
    sampling: Sampling,
    exit_tokens: int,
    seed: int,
    sample: int = 0,
) -> dict[str, Any]:
    messages = default_prompt(problem)
    request = Request(messages, replace(sampling, seed=request_seed(seed, problem.id, sample + 1)))
    async with Trace(request, backend.stream(request)) as trace:
        async for _ in trace:
            pass
    [completion], tokens = trace.completions, trace.tokens()
    answer = extract_answer(completion.text)
    events = cues.events(tokens)

    async def forced(position: int) -> dict[str, Any]:
        prefix = "".join(tokens[: position - 1]) + exit_phrase
        exit_request = Request(messages, Sampling(temperature=0.0, max_tokens=exit_tokens), prefix)
        text, spent = await read_answer(backend.stream(exit_request))
        got = extract_answer(prefix + text)
        label = int(bool((await grade_async(problem, got)).correct))
        return {"position": position, "answer": got, "label": label, "tokens": spent}

    labelled = await run_all(*(forced(p) for p in events))
    return {
        "problem_id": problem.id,
        "sample": sample,
        "question": problem.question,
        "gold": problem.answer,
        "kind": problem.kind,
        "text": completion.text,
        "tokens": tokens,
        "output_tokens": completion.output_tokens,
        "finish_reason": completion.finish_reason,
        "answer": answer,
        "correct": int(bool((await grade_async(problem, answer)).correct)),
        "events": labelled,
    }


async def collect_traces(
    backend: Backend,
    problems: Sequence[Problem],
    *,
    cues: CueSet = DEFAULT_CUES,
    exit_phrase: str = EXIT_PHRASE,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float = DEFAULT_TOP_P,
    max_tokens: int = 512,
    exit_tokens: int = 32,
    seed: int = 0,
    samples: int = 1,
    concurrency: int = 32,
    on_trace: Callable[[dict[str, Any]], None] | None = None,
    done: Collection[tuple[str, int]] = (),
) -> list[dict[str, Any]]:
    """`samples` traces per problem, their decision points labelled by forced exits (module doc).

    Every trace carries the collection's header (`collection_header`). `on_trace` is called with
    each trace the moment it is labelled (to write it at once: a stopped collection keeps what
    it finished); traces whose ``(problem_id, sample)`` is in `done` are not collected again (a
    resumed collection), and are not in the returned list.
    """
    if any(p.answer is None for p in problems):
        raise DatasetError("probe collection needs gold answers for every problem")
    if samples < 1:
        raise ConfigError(f"samples per problem must be >= 1, got {samples}")
    sampling = Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens, logprobs=0)
    header = collection_header(backend, cues, exit_phrase, temperature, top_p, max_tokens, seed, exit_tokens)
    gate = asyncio.Semaphore(concurrency)
    skip = set(done)

    async def one(problem: Problem, sample: int) -> dict[str, Any]:
        async with gate:
            trace = await _trace(backend, problem, cues, exit_phrase, sampling, exit_tokens, seed, sample)
        trace["collection"] = header
        if on_trace is not None:
            on_trace(trace)
        return trace

    return await run_all(*(one(p, k) for p in problems for k in range(samples) if (p.id, k) not in skip))


def collection_header(
    backend: Backend,
    cues: CueSet = DEFAULT_CUES,
    exit_phrase: str = EXIT_PHRASE,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float = DEFAULT_TOP_P,
    max_tokens: int = 512,
    seed: int = 0,
    exit_tokens: int = 32,
) -> dict[str, Any]:
    """What decides a collection's traces: model fingerprint, cue set, exit phrase, sampling.

    A resumed collection must have the same header as the traces already on disk.
    """
    return {
        "model": asdict(fingerprint(model_of(backend))),
        "cues": cues.to_dict(),
        "exit_phrase": exit_phrase,
        "sampling": {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "seed": seed},
        "exit_tokens": exit_tokens,
    }


def write_traces(path: Path, traces: Sequence[dict[str, Any]]) -> None:
    """Write traces as JSONL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(t) + "\n" for t in traces))


def append_trace(path: Path, trace: dict[str, Any]) -> None:
    """Append one trace to a JSONL file and flush it to disk (a stop loses no finished trace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(trace) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_traces(path: Path) -> list[dict[str, Any]]:
    """Read traces written by `write_traces`.

    Raises:
        DatasetError: the file is missing or a line is not a trace (names the line).
    """
    if not path.is_file():
        raise DatasetError(f"traces file {path} does not exist")
    traces = []
    text = path.read_text(encoding="utf-8")
    lines = jsonl_lines(text)
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                trace = json.loads(line)
                trace["tokens"], trace["events"], trace["collection"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                if number == len(lines) and not text.endswith("\n"):
                    logger.warning(
                        "%s:%d: dropped a trace cut off mid-write (a stopped collection)", path, number
                    )
                    break
                raise DatasetError(f"{path}:{number}: not a collected trace ({exc})") from exc
            traces.append(trace)
    return traces


async def compute_features(
    backend: Backend,
    traces: Sequence[dict[str, Any]],
    layers: Sequence[int] | None = None,
    *,
    dataset: str = "",
    concurrency: int = 16,
    cache: Path | None = None,
) -> DecisionPoints:
    """Hidden states at every decision point and at every prompt's last token.

    With `cache` (a folder), each trace's rows are written there as soon as they are read and
    read back on the next call, so a stopped run resumes where it was (the reads of a thousand
    traces take about an hour on 2 CPU cores). The file name holds the trace's identity and
    the layers, so a cache never serves another trace or another layer choice.

    Raises:
        CapabilityError: the backend gives no hidden states.
        ConfigError: traces collected with another model.
    """
    if not isinstance(backend, HiddenStateReader):
        raise CapabilityError("hidden states", backend.name, HIDDEN_STATES_OFFERED_BY)
    if not traces:
        raise ConfigError("no traces to compute features for")
    mine = fingerprint(model_of(backend))
    theirs = traces[0]["collection"]["model"]
    if theirs["sha256"] != mine.sha256:
        raise ConfigError(f"these traces were generated by {theirs['name']!r}, not by {mine.name!r}")
    chosen = list(layers) if layers else default_layers(model_layers(backend))
    gate = asyncio.Semaphore(concurrency)

    def request_of(trace: dict[str, Any], prefix: str) -> Request:
        problem = Problem(trace["problem_id"], trace["question"], trace["gold"], trace["kind"])
        return Request(default_prompt(problem), Sampling(temperature=0.0, max_tokens=1), prefix)

    async def read(request: Request, positions: list[int]) -> np.ndarray:
        async with gate:
            states = await backend.hidden_states(request, chosen, positions)
        return np.asarray(states, dtype=np.float32).reshape(len(positions), -1)

    def cached(trace: dict[str, Any]) -> Path | None:
        if cache is None:
            return None
        identity = json.dumps(
            [trace["problem_id"], trace.get("sample", 0), trace["text"], chosen, mine.sha256]
        )
        return cache / (hashlib.sha256(identity.encode()).hexdigest()[:32] + ".npz")

    async def per_trace(trace: dict[str, Any]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        path = cached(trace)
        if path is not None and path.is_file():
            try:
                with np.load(path) as saved:
                    return saved["prompt"], list(saved["events"]), saved["last"]
            except (OSError, ValueError, KeyError):
                logger.warning("unreadable feature cache entry %s: reading it again", path)
        found = await read_trace(trace)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".tmp.npz")
            events = np.stack(found[1]) if found[1] else np.zeros((0, len(found[0])), dtype=np.float32)
            # float16: what the features are kept in anyway (DecisionPoints below)
            np.savez(
                partial,
                prompt=found[0].astype(np.float16),
                events=events.astype(np.float16),
                last=found[2].astype(np.float16),
            )
            os.replace(partial, path)
        return found

    async def read_trace(trace: dict[str, Any]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        tokens, events = trace["tokens"], [e["position"] for e in trace["events"]]
        # One read of the whole trace serves the prompt's last token, every decision point and
        # the trace's last token when the text re-tokenizes into the generated tokens (the usual
        # case; attention is causal, so a position's state does not see what follows it);
        # otherwise one read per point.
        counter = backend if isinstance(backend, TokenCounter) else None
        whole = request_of(trace, trace["text"])
        if counter is not None and "".join(tokens) == trace["text"]:
            start = counter.prompt_tokens(request_of(trace, ""))
            aligned = counter.prompt_tokens(whole) == start + len(tokens) and all(
                counter.prompt_tokens(request_of(trace, "".join(tokens[:p]))) == start + p for p in events
            )
            if aligned:
                rows = await read(whole, [start - 1, *(start + p - 1 for p in events), -1])
                return rows[0], list(rows[1:-1]), rows[-1]
        parts = await run_all(
            read(request_of(trace, ""), [-1]),
            read(whole, [-1]),
            *(read(request_of(trace, "".join(tokens[:p])), [-1]) for p in events),
        )
        return parts[0][0], [part[0] for part in parts[2:]], parts[1][0]

    results = await run_all(*(per_trace(t) for t in traces))
    width = len(results[0][0])
    rows = [row for _, events, _ in results for row in events]
    features = np.stack(rows) if rows else np.zeros((0, width), dtype=np.float32)
    header = traces[0]["collection"]
    return DecisionPoints(
        features=features.astype(np.float16),
        labels=np.array([e["label"] for t in traces for e in t["events"]], dtype=np.int8),
        trace=np.array([i for i, t in enumerate(traces) for _ in t["events"]], dtype=np.int32),
        position=np.array([e["position"] for t in traces for e in t["events"]], dtype=np.int32),
        prompt_features=np.stack([prompt for prompt, _, _ in results]).astype(np.float16),
        trace_correct=np.array([t["correct"] for t in traces], dtype=np.int8),
        final_features=np.stack([last for _, _, last in results]).astype(np.float16),
        meta={
            "model": header["model"],
            "layers": chosen,
            "cues": header["cues"],
            "exit_phrase": header["exit_phrase"],
            "sampling": header["sampling"],
            "dataset": dataset,
            "traces": [
                {
                    "problem_id": t["problem_id"],
                    "question_sha": question_sha(t["question"]),
                    "sample": t.get("sample", 0),
                    "output_tokens": t["output_tokens"],
                    "answer": t["answer"],
                    "correct": t["correct"],
                    "events": len(t["events"]),
                }
                for t in traces
            ],
        },
    )


def split_by_problem(data: DecisionPoints, fit: int) -> tuple[DecisionPoints, DecisionPoints]:
    """The traces of the first `fit` problems (in collection order), and those of the rest."""
    order: dict[str, int] = {}
    for t in data.meta.get("traces", []):
        order.setdefault(str(t["problem_id"]), len(order))
    rank = np.array([order[str(t["problem_id"])] for t in data.meta.get("traces", [])], dtype=np.int64)
    fitting, held = np.flatnonzero(rank < fit), np.flatnonzero(rank >= fit)
    if not len(fitting) or not len(held):
        raise ConfigError(f"cannot split {len(order)} problems into {fit} to fit on and the rest to hold out")
    return data.subset(fitting), data.subset(held)


def selection_check(value: Any, data: DecisionPoints) -> dict[str, float]:
    """On held-out problems with several traces: how often each rule picks a right answer.

    Majority vote, value-weighted vote and value argmax over each problem's own traces (the
    sharpest test of a value model as an outcome verifier: the same samples, only the rule
    differs), with pass@k as the ceiling. Traces without an answer do not vote.
    """
    from reasoning.selection import majority_vote

    if data.final_features is None:
        return {}
    scores = value.predict(np.asarray(data.final_features, dtype=np.float32))
    traces = data.meta.get("traces", [])
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(traces):
        groups.setdefault(str(t["problem_id"]), []).append(i)
    answers = [t.get("answer") for t in traces]
    right = [bool(t["correct"]) for t in traces]
    tally = {"majority": 0, "value_weighted": 0, "value_argmax": 0, "pass_at_k": 0}
    counted = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        counted += 1
        votes = [answers[i] for i in members]
        picks = {
            "majority": majority_vote(votes),
            "value_weighted": majority_vote(votes, [float(scores[i]) for i in members]),
            "value_argmax": max(
                (k for k, i in enumerate(members) if answers[i] is not None),
                key=lambda k: float(scores[members[k]]),
                default=None,
            ),
        }
        for rule, k in picks.items():
            tally[rule] += int(k is not None and right[members[k]])
        tally["pass_at_k"] += int(any(right[i] for i in members))
    return {"problems": float(counted), **{k: v / max(counted, 1) for k, v in tally.items()}}
