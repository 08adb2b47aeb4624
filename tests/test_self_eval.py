"""Self-evaluation (arXiv 2410.02725) on the scripted backend: exact calls, stops, pruning, picks."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_governed import good_states, value_model

from reasoning import (
    STRATEGIES,
    BackendError,
    Budget,
    Completion,
    ConfigError,
    Controller,
    Problem,
    Request,
    ScriptedBackend,
    TokenLogprob,
)
from reasoning.backend import Chunk
from reasoning.compose import build, spec_of
from reasoning.evals.artefacts import artefacts_read, check_artefacts
from reasoning.evals.run import solve
from reasoning.probes.probe import ArtefactOverlap, FittedOn
from reasoning.problem import question_sha
from reasoning.strategies import SelfEval
from reasoning.strategies.self_eval import SELF_EVAL, p_no

PROBLEM = Problem("p", "2+2?", answer="4")
Table = Callable[[str], float | None]


def asks(request: Request) -> bool:
    """Whether `request` is a self-evaluation (else a sample)."""
    return request.prefix.endswith(SELF_EVAL)


class Odds(ScriptedBackend):
    """Samples from `samples` in turn; a self-evaluation of text t answers with P(No) = table(t)
    among its top log-probabilities (None: a "Maybe" whose top holds neither Yes nor No)."""

    def __init__(self, samples: list[str], table: Table, **options: Any) -> None:
        self.table, self.texts, self.drawn = table, samples, 0
        super().__init__(self.answer, **options)

    def answer(self, request: Request, number: int) -> str:
        if asks(request):
            return "Maybe" if self.table(request.prefix.removesuffix(SELF_EVAL)) is None else "No"
        self.drawn += 1
        return self.texts[(self.drawn - 1) % len(self.texts)]

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        async with contextlib.aclosing(super().stream(request)) as chunks:
            async for chunk in chunks:
                p = self.table(request.prefix.removesuffix(SELF_EVAL)) if asks(request) else None
                if p is not None and chunk.logprobs:
                    top = tuple((w, math.log(q)) for w, q in (("No", p), ("Yes", 1 - p)) if q > 0)
                    chunk = replace(chunk, logprobs=(TokenLogprob(chunk.text, top[0][1], top),))
                yield chunk


def by_answer(odds: dict[str, float | None]) -> Table:
    """P(No) of a text by the boxed answer (or first word) it holds."""
    return lambda text: next((p for key, p in odds.items() if key in text), None)


def split(backend: ScriptedBackend) -> tuple[list[Request], list[Request]]:
    """The backend's sample requests and self-evaluation requests, in order."""
    return [r for r in backend.requests if not asks(r)], [r for r in backend.requests if asks(r)]


async def test_adaptive_sampling_stops_at_the_threshold_and_anneals_the_next_sample() -> None:
    samples = ["so \\boxed{5}", "so \\boxed{6}", "so \\boxed{4}", "so \\boxed{7}"]
    backend = Odds(samples, by_answer({"{5}": 0.2, "{6}": 0.5, "{4}": 0.95, "{7}": 0.99}))
    run = await Controller(backend).run(PROBLEM, SelfEval(max_samples=4, threshold=0.9))
    drawn, asked = split(backend)
    assert [asks(r) for r in backend.requests] == [False, True] * 3  # sample, its evaluation, ...
    assert [r.sampling.temperature for r in drawn] == pytest.approx([0.0, 0.35, 0.525])  # 0.7 (1 - 0.5^k)
    assert all(r.sampling.n == 1 and r.sampling.top_p == 0.95 for r in drawn) and backend.peak_streaming == 1
    for sample, ask in zip(
        samples, asked, strict=False
    ):  # the sample's own prompt and text, then the question
        assert ask.messages == drawn[0].messages and ask.prefix == sample + SELF_EVAL
        assert (ask.sampling.temperature, ask.sampling.max_tokens, ask.sampling.logprobs) == (0.0, 1, 20)
    assert run.answer == "4" and run.chosen == 2 and run.stop_reason == "done"
    assert [c.scores["self_eval"] for c in run.candidates] == pytest.approx([0.2, 0.5, 0.95])
    assert [c.scores["temperature"] for c in run.candidates] == pytest.approx([0.0, 0.35, 0.525])
    assert run.usage["calls"] == 6 and run.usage["output_tokens"] == 2 * 3 + 3  # evaluations: one token


async def test_below_the_threshold_every_sample_is_drawn_and_the_most_confident_wins() -> None:
    samples = ["so \\boxed{5}", "so \\boxed{4}", "so \\boxed{6}"]
    backend = Odds(samples, by_answer({"{5}": 0.3, "{4}": 0.7, "{6}": 0.5}))
    run = await Controller(backend).run(PROBLEM, SelfEval(max_samples=3, anneal=0.0, temperature=0.8))
    drawn, asked = split(backend)
    assert [r.sampling.temperature for r in drawn] == [0.0, 0.8, 0.8] and len(asked) == 3
    assert (run.answer, run.chosen) == ("4", 1)
    # Samples of a batch go out together; each is evaluated as it finishes.
    backend = Odds(samples, by_answer({"{5}": 0.3, "{4}": 0.7, "{6}": 0.5}), seconds_per_token=0.001)
    run = await Controller(backend).run(PROBLEM, SelfEval(max_samples=3, batch=3))
    assert backend.peak_streaming >= 3 and (run.answer, run.chosen) == ("4", 1)


async def test_pruning_evaluates_the_running_samples_at_once_and_cancels_all_but_the_best() -> None:
    words = " ".join(["step"] * 30)
    named = (("alpha", 1), ("beta", 4), ("gamma", 6), ("delta", 7))
    samples = [f"{w} one two {words} \\boxed{{{a}}}" for w, a in named]
    odds = {"alpha": 0.3, "beta": 0.8, "gamma": None, "delta": 0.6}
    backend = Odds(samples, by_answer(odds), seconds_per_token=0.002)
    strategy = SelfEval(max_samples=4, batch=4, prune_at=3, keep=1, threshold=0.99)
    run = await Controller(backend).run(PROBLEM, strategy)
    drawn, asked = split(backend)
    assert len(drawn) == 4 and all(r.sampling.n == 1 and r.sampling.logprobs == 0 for r in drawn)
    assert [r.sampling.temperature for r in drawn] == pytest.approx([0.0, 0.35, 0.525, 0.6125])
    # Four evaluations at the prune point, of the first 3 tokens, while the samples decode on.
    prefixes = sorted(a.prefix.removesuffix(SELF_EVAL) for a in asked[:4])
    assert prefixes == sorted(f"{w} one two " for w, _ in named)
    assert backend.peak_streaming == 8 and backend.cancelled == 3
    [last] = asked[4:]  # the one kept is evaluated once more when it has finished
    assert last.prefix == samples[1] + SELF_EVAL
    assert [c.scores["pruned"] for c in run.candidates] == [1.0, 0.0, 1.0, 1.0]
    assert [c.finish_reason for c in run.candidates] == ["cancelled", "stop", "cancelled", "cancelled"]
    assert [c.scores.get("prune_eval") for c in run.candidates] == pytest.approx([0.3, 0.8, None, 0.6])
    assert (run.answer, run.chosen) == ("4", 1) and run.candidates[1].scores["self_eval"] == 0.8
    assert run.usage["cancelled_samples"] == 3


async def test_a_sample_that_ends_before_the_prune_point_is_kept_and_not_ranked() -> None:
    words = " ".join(["step"] * 20)
    samples = ["\\boxed{9}", f"alpha {words} \\boxed{{4}}", f"beta {words} \\boxed{{5}}"]
    backend = Odds(
        samples, by_answer({"{9}": 0.4, "{4}": 0.6, "alpha": 0.9, "beta": 0.2}), seconds_per_token=0.002
    )
    run = await Controller(backend).run(PROBLEM, SelfEval(max_samples=3, batch=3, prune_at=4, keep=1))
    _, asked = split(backend)
    at_prune = sorted(a.prefix for a in asked if "step" in a.prefix and "boxed" not in a.prefix)
    assert [p.split()[0] for p in at_prune] == ["alpha", "beta"]  # the short one is not ranked
    assert [c.finish_reason for c in run.candidates] == ["stop", "stop", "cancelled"]
    assert [c.scores.get("self_eval") for c in run.candidates] == [0.4, pytest.approx(0.6), None]
    assert (run.answer, run.chosen) == ("4", 1)


async def test_the_value_predictor_reads_hidden_states_and_decodes_nothing(tmp_path: Path) -> None:
    probe = value_model(tmp_path)
    backend = ScriptedBackend(
        ["bad \\boxed{1}", "good \\boxed{4}", "bad \\boxed{2}"], hidden_states=good_states
    )
    strategy = SelfEval(max_samples=3, threshold=0.8, predictor="value", probe=probe)
    assert strategy.needs_hidden_states and not SelfEval().needs_hidden_states
    run = await Controller(backend).run(PROBLEM, strategy)
    assert len(backend.requests) == 2 and not any(asks(r) for r in backend.requests)  # samples only
    assert [r.prefix for r in backend.hidden_requests] == ["bad \\boxed{1}", "good \\boxed{4}"]
    assert run.usage["output_tokens"] == sum(c.output_tokens for c in run.candidates) + 2  # the reads
    good, bad = 1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(2.0))
    assert [c.scores["self_eval"] for c in run.candidates] == pytest.approx([bad, good])
    assert (run.answer, run.chosen) == ("4", 1)
    # Pruning with it: the partial samples' hidden states, all read at the prune point.
    words = " ".join(["x"] * 20)
    backend = ScriptedBackend(
        [f"bad {words} \\boxed{{1}}", f"good {words} \\boxed{{4}}"],
        hidden_states=good_states,
        seconds_per_token=0.002,
    )
    strategy = SelfEval(max_samples=2, batch=2, prune_at=1, predictor="value", probe=probe)
    run = await Controller(backend).run(PROBLEM, strategy)
    assert len(backend.requests) == 2 and [r.prefix for r in backend.hidden_requests[:2]] in (
        ["bad ", "good "],
        ["good ", "bad "],
    )
    assert len(backend.hidden_requests) == 3 and backend.cancelled == 1 and run.answer == "4"


class NoLogprobs(Odds):
    """Self-evaluations answer "No", but without log-probabilities."""

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        async with contextlib.aclosing(ScriptedBackend.stream(self, request)) as chunks:
            async for chunk in chunks:
                yield replace(chunk, logprobs=())


@pytest.mark.parametrize("kind", ["no logprobs", "neither yes nor no"])
async def test_a_malformed_or_absent_evaluation_is_unknown_never_confident(kind: str) -> None:
    samples = ["so \\boxed{5}", "so \\boxed{4}", "thus \\boxed{4}"]
    if kind == "no logprobs":
        backend: ScriptedBackend = NoLogprobs(samples, lambda t: 0.99)
    else:
        backend = Odds(samples, lambda t: None)  # "Maybe", the top holding only other tokens
    run = await Controller(backend).run(PROBLEM, SelfEval(max_samples=3, threshold=0.5))
    assert len(split(backend)[0]) == 3  # unknown never stops the sampling
    assert not any("self_eval" in c.scores for c in run.candidates)
    assert (run.answer, run.chosen) == ("4", 1)  # nothing known: the majority vote


def test_p_no_reads_the_yes_and_no_alternatives_of_the_first_token() -> None:
    def reply(*top: tuple[str, float]) -> Completion:
        return Completion(0, "No", 1, "stop", logprobs=(TokenLogprob("No", -0.1, top),))

    assert p_no(
        reply(("No", math.log(0.6)), (" yes.", math.log(0.2)), ("Maybe", math.log(0.2)))
    ) == pytest.approx(0.75)
    assert p_no(reply((" NO", -0.1), ("no.", -0.1), ("Yes", -0.1))) == pytest.approx(2 / 3)
    assert p_no(reply()) is None  # the chosen token alone is no distribution
    assert p_no(reply(("Maybe", -0.1), ("<alt1>", -0.2))) is None
    assert p_no(reply(("No", math.nan), ("Yes", -math.inf))) is None
    assert p_no(Completion(0, "No", 1, "stop")) is None


async def test_a_budget_stop_keeps_the_samples_and_evaluations_it_paid_for() -> None:
    samples = ["so \\boxed{4}", "so \\boxed{5}", "so \\boxed{6}"]
    backend = Odds(samples, by_answer({"{4}": 0.3, "{5}": 0.8}))
    run = await Controller(backend).run(PROBLEM, SelfEval(max_samples=3), Budget(calls=3))
    assert run.stop_reason == "budget:calls" and run.usage["calls"] == 3
    # sample 0, its evaluation, sample 1; its evaluation was refused: sample 0 is the one known
    assert [c.answer for c in run.candidates] == ["4", "5"]
    assert [c.scores.get("self_eval") for c in run.candidates] == [0.3, None]
    assert (run.answer, run.chosen) == ("4", 0)
    # Cut mid-sample: the finished sample stays, the cut one is recorded as cancelled.
    backend = Odds(["so \\boxed{4}", "a b c d e f g \\boxed{5}"], by_answer({"{4}": 0.3}))
    run = await Controller(backend).run(PROBLEM, SelfEval(max_samples=2), Budget(output_tokens=6))
    assert run.stop_reason.startswith("budget:") and (run.answer, run.chosen) == ("4", 0)
    assert run.usage["output_tokens"] <= 6 and run.candidates[-1].answer is None


async def test_error_text_is_never_scored_as_an_answer() -> None:
    def failing(request: Request, number: int) -> str:
        if asks(request):
            raise BackendError("connection reset \\boxed{99}", retryable=True, backend="scripted")
        return "so \\boxed{4}"

    [run] = await solve([PROBLEM], Controller(ScriptedBackend(failing)), SelfEval(max_samples=2))
    assert run.stop_reason == "error" and run.error and "connection reset" in run.error
    assert run.answer is None and not any(c.answer == "99" for c in run.candidates)
    # An evaluation that writes an answer is an evaluation, never a candidate.
    boxed = ScriptedBackend(lambda r, n: "\\boxed{77}" if asks(r) else "so \\boxed{4}")
    run = await Controller(boxed).run(PROBLEM, SelfEval(max_samples=2))
    assert [c.answer for c in run.candidates] == ["4", "4"] and run.answer == "4"


def test_parameters_are_checked_and_round_trip() -> None:
    for bad, match in (
        ({"batch": 5}, "batch <= max_samples"),
        ({"threshold": 0.0}, "threshold"),
        ({"anneal": 1.0}, "anneal"),
        ({"prune_at": 512}, "prune_at < max_tokens"),
        ({"prune_at": 8, "batch": 2, "keep": 2}, "keep < batch"),
        ({"probe": "v.json"}, "predictor=value"),
    ):
        with pytest.raises(ConfigError, match=match):
            SelfEval(**bad)  # type: ignore[arg-type]
    strategy = STRATEGIES.create(
        "self-eval", {"max_samples": "8", "batch": "8", "prune_at": "64", "keep": "2"}
    )
    assert build(spec_of(strategy)) == strategy == SelfEval(max_samples=8, batch=8, prune_at=64, keep=2)
    assert STRATEGIES.get("adaptive-self-eval") is SelfEval


def test_the_value_model_it_reads_is_checked_before_any_engine_starts(tmp_path: Path) -> None:
    path = value_model(
        tmp_path,
        [
            FittedOn(
                role="training",
                dataset="gsm8k-train[0:1]",
                problem_ids=["x"],
                question_sha=[question_sha(PROBLEM.question)],
            )
        ],
    )
    reads = SelfEval(predictor="value", probe=path)
    assert artefacts_read(reads, {"": "scripted"}) == [("self-eval", path, "scripted", "value", False)]
    assert artefacts_read(SelfEval(), {"": "scripted"}) == []  # the prompt predictor reads none
    with pytest.raises(ArtefactOverlap, match="strategy self-eval"):
        check_artefacts([reads], {"": "scripted"}, [PROBLEM])
