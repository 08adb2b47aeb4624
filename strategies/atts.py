"""ATTS: asynchronous test-time scaling via conformal prediction, draft + target.

Xiong et al., "Asynchronous Test-Time Scaling via Conformal Prediction" (arXiv 2509.15148, ICLR
2026); spec: docs ALGORITHMS.md §5 (and §11.1-11.2 for the p-value). Each of the `n` samples
runs on its own, no barrier between them (a slow sample never delays a fast one):

    text = ""
    for turn in 1..turns:
        d = draft.generate(prompt + text, max_tokens=Kd, T=0.8, stop=delimiter)     # stage 1
        if d == "": break
        ppl = target perplexity of d's tokens after prompt + text (one prefill)     # stage 2
        p = (1 + #{calibration PPL >= ppl}) / (n_cal + 1)                           # conformal
        text += d
        if p <= alpha:                                                             # stage 3
            text += target.generate(prompt + text, max_tokens=Kt, stop=delimiter)  # continues d
        if text states its answer, or the last writer ended its text: break
    answer = majority vote over the n samples' answers (maj@n)

Under exchangeability of chunk scores with the calibration's, a chunk is taken over with
probability <= alpha (about alpha): alpha sets the target's share of turns (its cost), not the
accuracy. Chunks, scores and p-values come from `reasoning.probes.atts_calibration`, which also
collects the calibration (``reasoning probe atts-calibrate``); the artefact is refused for
another draft/target pair or other chunk settings. ``coverage=marginal`` compares a chunk with
all calibration chunks pooled; ``conditional`` with its own problem's (spec §5.3).

Documented choices (INFERRED where the spec is silent):

* chunks end at the step delimiter or after Kd tokens (the authors' chunks are Kd = 500 tokens,
  no delimiter, for 32k-token traces; at this framework's few-hundred-token solutions a
  fixed-length chunk would be the whole solution). ``delimiter=""`` gives fixed-length chunks.
  The target's continuation stops at the delimiter too (one step, at most Kt tokens). Pieces
  are joined by the delimiter they stopped at, never one inserted mid-sentence;
* a sample ends when its text holds a ``\\boxed{}`` or an ``Answer:`` line (the extractor's
  last-number fallback would end every sample at its first chunk), when the last writer ended
  its text (end of text, not the delimiter), on an empty draft chunk, or after `turns` turns;
* aggregation (spec §5.7): the answer is maj@n over the samples' answers (ties: first seen);
  the authors report pass@n ("any sample right"), which the evaluation layer records as
  ``oracle_correct``. Defaults: n = 4 on CPU (paper 16), Kd = Kt = 128 (paper 500).

Each candidate's ``scores``: ``turns``, ``chunks`` (scored draft chunks), ``rejected``,
``rejection_rate``, ``mean_p_value`` and ``mean_ppl`` (when a chunk was scored), and
``draft_tokens`` / ``target_tokens`` (decoded by each model for the sample).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from reasoning import STRATEGIES, Candidate, Completion, Context, Problem, Result, Sampling
from reasoning.errors import ArtefactRequired, ConfigError
from reasoning.probes.atts_calibration import (
    DRAFT,
    TARGET,
    ChunkSettings,
    draft_chunk,
    load_calibration,
    p_value,
    served_model,
    target_perplexity,
)
from reasoning.strategies.step_tree import is_final_step


@STRATEGIES.register("atts")
@dataclass(frozen=True, kw_only=True)
class ATTS:
    """The draft writes chunks; the target takes over those whose conformal p-value is <= alpha."""

    calibration: str = ""
    """Path of the calibration artefact (``reasoning probe atts-calibrate``)."""
    alpha: float = 0.4
    """Takeover rate: reject a chunk iff its p-value <= alpha (the authors' threshold 0.6)."""
    n: int = 4
    """Samples (m), run concurrently and independently; the paper uses 16."""
    turns: int = 15
    """Most draft chunks per sample."""
    draft_tokens: int = 128
    """Most tokens per draft chunk (Kd)."""
    target_tokens: int = 128
    """Most tokens the target writes after a rejected chunk (Kt)."""
    delimiter: str = "\n\n"
    """Chunks (and target continuations) stop at this step delimiter; empty: at the token caps."""
    temperature: float = 0.8
    """Draft temperature (must match the calibration's)."""
    target_temperature: float = 0.8
    """Target temperature of continuations."""
    top_p: float = 1.0
    """Nucleus mass of both models."""
    coverage: Literal["marginal", "conditional"] = "marginal"
    """Compare with all calibration chunks pooled, or with this problem's only."""

    def __post_init__(self) -> None:
        if not self.calibration:
            raise ArtefactRequired("atts", "calibration", "atts-cal.json", "the calibration artefact")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"atts: alpha must be in (0, 1), got {self.alpha}")
        if self.n < 1 or self.turns < 1:
            raise ConfigError("atts: n and turns must be >= 1")
        if self.coverage not in ("marginal", "conditional"):
            raise ConfigError(f"atts: coverage must be marginal or conditional, got {self.coverage!r}")
        self.chunks()
        self.continuation()

    def chunks(self) -> ChunkSettings:
        """How the draft writes chunks (the calibration must have used the same)."""
        return ChunkSettings(self.draft_tokens, self.delimiter, self.temperature, self.top_p)

    def continuation(self) -> Sampling:
        """The target's continuation after a rejected chunk."""
        stop = (self.delimiter,) if self.delimiter else ()
        return Sampling(self.target_temperature, self.top_p, max_tokens=self.target_tokens, stop=stop)

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Run n samples, each deciding its chunks on its own; vote."""
        missing = [name for name in (DRAFT, TARGET) if name not in ctx.backends]
        if missing:
            known = ", ".join(ctx.backends) or "one unnamed backend"
            raise ConfigError(
                f"atts needs backends named draft and target (e.g. --model draft=0.5b --model "
                f"target=1.5b); missing {', '.join(missing)}; this run has {known}"
            )
        models = (served_model(ctx.backends[DRAFT]), served_model(ctx.backends[TARGET]))
        calibration = load_calibration(self.calibration, *models, self.chunks())
        scores = calibration.pooled() if self.coverage == "marginal" else calibration.of_problem(problem.id)
        if self.alpha < 1 / (len(scores) + 1):
            raise ConfigError(
                f"atts: alpha={self.alpha} can never reject with {len(scores)} calibration scores "
                f"(the smallest p-value is 1/{len(scores) + 1})"
            )
        samples = [_Sample(at=ctx.meter.elapsed) for _ in range(self.n)]

        async def best_so_far() -> Result:  # a budget stop: the finished samples vote
            finished = {i for i, s in enumerate(samples) if s.finished}
            return Result.vote([s.candidate() for s in samples], voters=finished)

        ctx.on_stop(best_so_far)

        async def run(s: _Sample) -> None:
            await self.sample(ctx, scores, s)
            [verdict] = await ctx.verify([s.text])
            s.answer, s.score, s.seconds = verdict.answer, verdict.score, time.monotonic() - s.start
            s.finished = True

        await ctx.run_all(*(run(s) for s in samples))
        return Result.vote([s.candidate() for s in samples])

    async def sample(self, ctx: Context, calibration: np.ndarray, s: _Sample) -> None:
        """One sample's turns: draft, score, and on rejection the target continues."""
        chunks = self.chunks()
        for _ in range(self.turns):
            s.turns += 1
            d = await draft_chunk(ctx, s.text, chunks)
            s.draft_tokens += d.output_tokens
            if not d.text:
                s.finish = "stop"
                return
            ppl = await target_perplexity(ctx, s.text, d.text)
            p = p_value(ppl, calibration)
            s.ppls.append(ppl)
            s.p_values.append(p)
            s.text += d.text + chunks.separator(d)
            last = d
            if p <= self.alpha:
                s.rejected += 1
                [t] = await ctx.generate(ctx.request(self.continuation(), s.text), TARGET)
                s.target_tokens += t.output_tokens
                s.text += t.text + chunks.separator(t)
                last = t
            if is_final_step(s.text) or _ended(last):
                s.finish = "stop"
                return


def _ended(piece: Completion) -> bool:
    """The model ended its text (not at the delimiter, not at the token cap)."""
    return piece.finish_reason == "stop" and piece.stop_string is None


@dataclass
class _Sample:
    """One sample's state as its turns go (read by a budget stop too)."""

    text: str = ""
    turns: int = 0
    rejected: int = 0
    draft_tokens: int = 0
    target_tokens: int = 0
    ppls: list[float] = field(default_factory=list)
    p_values: list[float] = field(default_factory=list)
    finish: str = "length"
    """Its candidate's finish reason: ``stop`` (answer, end of text, empty chunk) or ``length`` (turns)."""
    finished: bool = False
    """Verified and done (a budget stop records the others as cancelled)."""
    answer: str | None = None
    score: float = 0.0
    start: float = field(default_factory=time.monotonic)
    at: float = 0.0
    """When it started on the run's clock (``ctx.meter.elapsed``): its candidate's ``started``."""
    seconds: float = 0.0
    """Wall time from its start to its verdict."""

    def candidate(self) -> Candidate:
        """This sample as a candidate record (unfinished: cancelled, no answer)."""
        chunks = len(self.p_values)
        scores = {
            "turns": float(self.turns),
            "chunks": float(chunks),
            "rejected": float(self.rejected),
            "rejection_rate": self.rejected / chunks if chunks else 0.0,
            "draft_tokens": float(self.draft_tokens),
            "target_tokens": float(self.target_tokens),
        }
        if chunks:  # records hold no NaN
            scores |= {"mean_p_value": float(np.mean(self.p_values)), "mean_ppl": float(np.mean(self.ppls))}
        return Candidate(
            text=self.text,
            answer=self.answer if self.finished else None,
            score=self.score,
            output_tokens=self.draft_tokens + self.target_tokens,
            finish_reason=self.finish if self.finished else "cancelled",
            seconds=self.seconds if self.finished else time.monotonic() - self.start,
            started=self.at,
            scores=scores,
        )
