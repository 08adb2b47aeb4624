"""ATTS calibration: the draft's chunks scored by the target, their conformal p-values, the artefact.

ATTS (Xiong et al., "Asynchronous Test-Time Scaling via Conformal Prediction", arXiv 2509.15148)
decides each draft chunk on its own, against a calibration set, so no sample waits for another.
This module holds what the strategy (`reasoning.strategies.atts`) and its calibration share, so
test-time and calibration scores are computed by the same code (spec: docs ALGORITHMS.md §5.2,
§5.3, §11.1):

* a chunk: the draft's continuation of the solution so far, up to `ChunkSettings.delimiter` (a
  step) or `ChunkSettings.draft_tokens` tokens, at the draft temperature (`draft_chunk`);
* its score: the target's perplexity of the chunk's tokens only, PPL = exp(-mean log p), read
  from one prefill of prompt + text so far + chunk (`chunk_perplexity`, `target_perplexity`).
  PPL is the nonconformity score (higher = stranger; the spec's conformity score is s = -PPL);
* its conformal p-value against calibration PPLs: p = (1 + #{calibration PPL >= PPL}) / (n + 1),
  the same as (1 + #{calibration s <= s}) / (n + 1); `p_value` reads it from the chunk's rank in
  the sorted calibration. The chunk is taken over by the target iff p <= alpha; under
  exchangeability P(p <= alpha) <= alpha (= floor((n + 1) alpha) / (n + 1) for distinct scores).
  The authors' code instead rejects iff #{calibration PPL < PPL} / n >= 1 - alpha: it rejects
  every chunk the p-value rule rejects and at most one rank more, so it may exceed alpha by up
  to 1/(n + 1). Note: the spec's formula "(1 + #{cal >= s}) / (nm + 1) with s = -PPL", read
  literally, would take over the *least* perplexing chunks; the code (most perplexing chunks
  taken over) fixes the direction used here.

Calibration (spec §5.3): for each problem, m draft first-turn chunks, each scored by the target,
sent through a `Controller` (`collect_calibration`) so the cost is metered per backend. Each
chunk request carries its own seed, derived from the run seed and the problem id under a
calibration namespace: a solve run with the same seed never redraws a calibration chunk. The
scores are kept per problem: pooled they give marginal coverage; per problem, conditional
coverage (the paper's "online calibration": the calibration chunks are sampled on the test
questions themselves). The artefact (`AttsCalibration.save`) is JSON: the PPLs, both models'
names and sha256 fingerprints, the chunk settings and a sha256 of its content; no alpha (any
alpha can be used with it). Loading refuses another model pair, a tampered or truncated file.

Assumptions (spec §11.1): exchangeability of test chunks with calibration chunks (same models,
prompt, chunk settings, task distribution). Calibration chunks are first-turn chunks; later
turns' chunks are scored against them all the same, as in the paper's code, so the bound is
per decision and holds exactly for the first turn only. An "online conformal" variant growing
the calibration set with the PPLs of chunks accepted at test time is not in the spec and is
not offered: accepted chunks are the low-PPL ones, so adding them would bias the set (the
takeover rate would drift above alpha).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reasoning.backend import Backend, Completion, Sampling, TokenLogprob
from reasoning.concurrency import run_all
from reasoning.controller import Controller
from reasoning.engine.models import fingerprint
from reasoning.errors import BackendError, ConfigError
from reasoning.probes.data import what_artefact
from reasoning.problem import Problem
from reasoning.record import Candidate, Run
from reasoning.strategy import Context, Result, request_seed

__all__ = [
    "DRAFT",
    "FORMAT",
    "TARGET",
    "AttsCalibration",
    "CalibrationMismatch",
    "ChunkSettings",
    "FirstChunks",
    "chunk_perplexity",
    "collect_calibration",
    "draft_chunk",
    "load_calibration",
    "p_value",
    "served_model",
    "target_perplexity",
]

DRAFT, TARGET = "draft", "target"
"""Names of the two backends ATTS uses."""
FORMAT = "reasoning.atts-calibration/1"
"""Format tag of the calibration artefact."""


class CalibrationMismatch(ConfigError):
    """A calibration artefact was made for other models or other chunk settings."""


@dataclass(frozen=True)
class ChunkSettings:
    """How the draft writes one chunk; calibration and test runs must use the same."""

    draft_tokens: int = 128
    """Most tokens per chunk (Kd; the paper's 500 with its 32k-token reasoning models)."""
    delimiter: str = "\n\n"
    """A chunk ends at this step delimiter (stop string) or after `draft_tokens`; empty: only
    at `draft_tokens` (the authors' fixed-length chunks)."""
    temperature: float = 0.8
    """Draft sampling temperature (spec: 0.8 for test and calibration chunks)."""
    top_p: float = 1.0
    """Draft nucleus mass."""

    def __post_init__(self) -> None:
        self.sampling()

    def sampling(self, seed: int | None = None) -> Sampling:
        """The sampling of one chunk request (raises ConfigError on bad values)."""
        stop = (self.delimiter,) if self.delimiter else ()
        return Sampling(self.temperature, self.top_p, max_tokens=self.draft_tokens, stop=stop, seed=seed)

    def separator(self, chunk: Completion) -> str:
        """What follows `chunk` in the solution: the delimiter it stopped at, else nothing."""
        return self.delimiter if chunk.stop_string else ""


def chunk_perplexity(scored: Sequence[TokenLogprob], chunk: str) -> float:
    """exp(-mean log p) over the trailing scored tokens whose text covers `chunk`.

    A token straddling the chunk's start (merged with the text before it) counts.

    Example:
        >>> lp = [TokenLogprob("so ", -9.0), TokenLogprob("a ", -1.0), TokenLogprob("b", -3.0)]
        >>> round(chunk_perplexity(lp, "a b"), 4) == round(math.exp(2.0), 4)
        True

    Raises:
        BackendError: the scores cover less text than the chunk.
    """
    covered, logprobs = 0, []
    for token in reversed(scored):
        if covered >= len(chunk):
            break
        covered += len(token.token)
        logprobs.append(token.logprob)
    if covered < len(chunk) or not logprobs:
        raise BackendError(f"prompt scores cover {covered} characters, fewer than the chunk's {len(chunk)}")
    return math.exp(-sum(logprobs) / len(logprobs))


def p_value(ppl: float, calibration: np.ndarray) -> float:
    """Conformal p-value (1 + #{calibration >= ppl}) / (n + 1) from ppl's rank in sorted `calibration`.

    Example:
        >>> cal = np.array([1.0, 2.0, 3.0, 4.0])
        >>> p_value(3.5, cal), p_value(3.0, cal), p_value(0.5, cal)
        (0.4, 0.6, 1.0)
    """
    n = len(calibration)
    below = int(np.searchsorted(calibration, ppl, side="left"))  # #{calibration < ppl}
    return (n + 1 - below) / (n + 1)


async def draft_chunk(
    ctx: Context, text: str, settings: ChunkSettings, seed: int | None = None
) -> Completion:
    """The draft's next chunk after the solution `text` (one request on backend ``draft``)."""
    [chunk] = await ctx.generate(ctx.request(settings.sampling(seed), text), DRAFT)
    return chunk


async def target_perplexity(ctx: Context, text: str, chunk: str) -> float:
    """The target's perplexity of `chunk` following `text` (one prefill on backend ``target``)."""
    return chunk_perplexity(await ctx.prompt_logprobs(text + chunk, TARGET), chunk)


def served_model(backend: Backend) -> str:
    """The model a backend serves, as artefacts name it."""
    return str(getattr(backend, "model", "") or backend.name)


def _missing(file: Path) -> str:
    return f"ATTS calibration {file} does not exist (make one with `reasoning probe atts-calibrate`)"


def _digest(content: Mapping[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class AttsCalibration:
    """Target PPLs of draft first-turn chunks, per problem, for one (draft, target) pair."""

    draft: tuple[str, str]
    """The draft model: (name, sha256 fingerprint)."""
    target: tuple[str, str]
    """The target model: (name, sha256 fingerprint)."""
    chunk: ChunkSettings
    """How the chunks were written."""
    samples: int
    """Chunks drawn per problem (m; empty chunks have no score, so a problem may hold fewer)."""
    scores: Mapping[str, tuple[float, ...]]
    """Problem id -> the target PPLs of its chunks, ascending."""
    source: str = ""
    """Where the problems came from (a dataset slice), for the record."""

    def pooled(self) -> np.ndarray:
        """Every problem's PPLs together, sorted (marginal coverage)."""
        return np.sort(np.concatenate([np.asarray(v, dtype=float) for v in self.scores.values()]))

    def of_problem(self, problem_id: str) -> np.ndarray:
        """The PPLs of one problem's chunks, sorted (conditional coverage).

        Raises:
            ConfigError: the calibration holds no chunks of that problem.
        """
        if problem_id not in self.scores:
            raise ConfigError(
                f"the ATTS calibration holds no chunks of problem {problem_id!r}: conditional coverage "
                "needs a calibration collected on the same problems (or use coverage=marginal)"
            )
        return np.asarray(self.scores[problem_id], dtype=float)

    def check(self, draft: str, target: str, chunk: ChunkSettings) -> None:
        """Refuse other models than the calibration's, or other chunk settings.

        Raises:
            CalibrationMismatch: names what differs.
        """
        theirs = {DRAFT: fingerprint(draft), TARGET: fingerprint(target)}
        mine = {DRAFT: self.draft, TARGET: self.target}
        for role, model in theirs.items():
            name, sha = mine[role]
            if model.sha256 != sha:
                swapped = theirs[DRAFT].sha256 == self.target[1] and theirs[TARGET].sha256 == self.draft[1]
                raise CalibrationMismatch(
                    f"this ATTS calibration was made with {role} {name!r} (sha256 {sha[:12]}...), not "
                    f"{model.name!r} (sha256 {model.sha256[:12]}...)"
                    + ("; draft and target are swapped" if swapped else "")
                    + "; collect one for this pair with `reasoning probe atts-calibrate`"
                )
        if chunk != self.chunk:
            raise CalibrationMismatch(
                f"the ATTS calibration's chunks were written with {self.chunk}, this run's with {chunk}: "
                "scores are comparable only under the same chunk settings"
            )

    def save(self, path: str | Path) -> Path:
        """Write the artefact as JSON (with the sha256 of its content); return its path."""
        content = {
            "format": FORMAT,
            "score": "target perplexity of the draft's first-turn chunk (higher = stranger)",
            "draft": {"name": self.draft[0], "sha256": self.draft[1]},
            "target": {"name": self.target[0], "sha256": self.target[1]},
            "chunk": asdict(self.chunk),
            "samples": self.samples,
            "source": self.source,
            "scores": {k: list(v) for k, v in self.scores.items()},
        }
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps({**content, "sha256": _digest(content)}, indent=1, allow_nan=False))
        return file

    @classmethod
    def load(cls, path: str | Path) -> AttsCalibration:
        """Read an artefact written by `save`.

        Raises:
            ConfigError: missing, not JSON (e.g. truncated), another format, content not matching
                its sha256 (edited), or invalid scores.
        """
        file = Path(path)
        if not file.is_file():
            raise ConfigError(_missing(file))
        try:
            document = json.loads(file.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"ATTS calibration {file} is not valid JSON (truncated?): {exc}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            what = what_artefact(document)
            if what is not None and not what.startswith("an ATTS"):
                raise ConfigError(f"{file} is {what}, not an ATTS calibration")
            found = document.get("format") if isinstance(document, dict) else type(document).__name__
            raise ConfigError(f"{file}: format {found!r}, expected an ATTS calibration ({FORMAT})")
        recorded = document.pop("sha256", None)
        if recorded != _digest(document):
            raise ConfigError(f"{file} does not match the sha256 recorded in it: edited or damaged")
        try:
            scores = {str(k): tuple(sorted(float(s) for s in v)) for k, v in document["scores"].items()}
            calibration = cls(
                draft=(str(document["draft"]["name"]), str(document["draft"]["sha256"])),
                target=(str(document["target"]["name"]), str(document["target"]["sha256"])),
                chunk=ChunkSettings(**document["chunk"]),
                samples=int(document["samples"]),
                scores=scores,
                source=str(document.get("source", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{file}: not a valid ATTS calibration ({type(exc).__name__}: {exc})") from None
        values = [s for v in scores.values() for s in v]
        if not values or not all(math.isfinite(s) and s > 0 for s in values):
            raise ConfigError(f"{file}: the scores must be finite positive perplexities, and at least one")
        return calibration


@functools.lru_cache(maxsize=16)
def _cached(path: str, stamp: tuple[int, int]) -> AttsCalibration:
    return AttsCalibration.load(path)


def load_calibration(path: str, draft: str, target: str, chunk: ChunkSettings) -> AttsCalibration:
    """Load (once per file version) a calibration and check it fits these models and chunks.

    Raises:
        ConfigError: see `AttsCalibration.load`.
        CalibrationMismatch: made for other models or chunk settings.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(_missing(file))
    stat = file.stat()
    calibration = _cached(str(file.resolve()), (stat.st_mtime_ns, stat.st_size))
    calibration.check(draft, target, chunk)
    return calibration


@dataclass(frozen=True)
class FirstChunks:
    """Calibration for one problem: `samples` draft first-turn chunks, each scored by the target.

    A strategy in form (run by a `Controller`, so every call is metered); its candidates are the
    chunks, with their PPL in ``scores["ppl"]``.
    """

    chunk: ChunkSettings
    """How chunks are written."""
    samples: int = 16
    """Chunks per problem (the spec's m = 16)."""

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Draw and score the chunks concurrently."""

        async def one(i: int) -> Candidate:
            seed = None if ctx.seed is None else request_seed(ctx.seed, f"atts-calibration:{problem.id}", i)
            chunk = await draft_chunk(ctx, "", self.chunk, seed)
            scores = {"ppl": await target_perplexity(ctx, "", chunk.text)} if chunk.text else {}
            return Candidate(chunk.text, output_tokens=chunk.output_tokens, scores=scores, backend=DRAFT)

        return Result(None, tuple(await run_all(*(one(i) for i in range(1, self.samples + 1)))))


async def collect_calibration(
    controller: Controller,
    problems: Sequence[Problem],
    chunk: ChunkSettings,
    samples: int = 16,
    concurrency: int = 8,
    source: str = "",
) -> tuple[AttsCalibration, list[Run]]:
    """Collect an ATTS calibration: per problem, `samples` first-turn chunks scored by the target.

    `controller` has backends named ``draft`` and ``target``; `concurrency` problems are in
    flight at once. Returns the calibration and each problem's `Run` (costs per backend).

    Raises:
        ConfigError: a backend is missing, or no chunk got a score.
    """
    missing = [name for name in (DRAFT, TARGET) if name not in controller.backends]
    if missing or samples < 1 or concurrency < 1:
        raise ConfigError(
            f"ATTS calibration needs backends named draft and target (missing: {', '.join(missing) or '-'}), "
            "samples >= 1 and concurrency >= 1"
        )
    slots = asyncio.Semaphore(concurrency)
    strategy = FirstChunks(chunk, samples)

    async def one(problem: Problem) -> Run:
        async with slots:
            run = await controller.run(problem, strategy)
        if run.stop_reason not in ("done", "no_answer"):  # its strategy answers nothing, on purpose
            raise ConfigError(f"ATTS calibration on problem {problem.id} stopped: {run.stop_reason}")
        return run

    runs = await run_all(*(one(p) for p in problems))
    scores = {
        run.problem_id: tuple(sorted(c.scores["ppl"] for c in run.candidates if "ppl" in c.scores))
        for run in runs
    }
    scores = {k: v for k, v in scores.items() if v}
    if not scores:
        raise ConfigError("ATTS calibration: the draft wrote no non-empty chunk")
    pair = {role: fingerprint(served_model(controller.backends[role])) for role in (DRAFT, TARGET)}
    calibration = AttsCalibration(
        draft=(pair[DRAFT].name, pair[DRAFT].sha256),
        target=(pair[TARGET].name, pair[TARGET].sha256),
        chunk=chunk,
        samples=samples,
        scores=scores,
        source=source,
    )
    return calibration, runs
