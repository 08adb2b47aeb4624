"""GenRM on the scripted backend: the exact calls, the scoring, selection, budget stops, bad verdicts."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace

import pytest

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
from reasoning.evals.run import solve
from reasoning.strategies import GenRM
from reasoning.strategies.genrm import VERIFY_PROMPT, p_yes

PROBLEM = Problem("p", "2+2?", answer="4")
HEAD = VERIFY_PROMPT.split("{question}")[0]


def verdict(word: str, p: float | None = None) -> str:
    """A verification ending in the verdict line (``p``: the P(Yes) `Odds` gives its verdict token)."""
    said = "" if p is None else f"p={p} "
    return f"Step one checks out. {said}Is the answer correct (Yes/No)? {word}"


def genrm(solutions: list[str], verifications: Callable[[str, int], str], cls: type = ScriptedBackend):
    """A backend: `solutions` in turn, and ``verifications(solution, k)`` for its k-th verification."""
    asked: dict[str, int] = {}

    def reply(request: Request, number: int) -> str:
        content = request.messages[-1].content
        if not content.startswith(HEAD):
            return solutions[number % len(solutions)]
        solution = content.split("Proposed solution:\n", 1)[1]
        asked[solution] = asked.get(solution, -1) + 1
        return verifications(solution, asked[solution])

    return cls(reply)


class Odds(ScriptedBackend):
    """Its verdict token's top alternatives are Yes and No with P(Yes) = the ``p=`` its text wrote."""

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        said: dict[int, str] = {}
        async with contextlib.aclosing(super().stream(request)) as chunks:
            async for chunk in chunks:
                text = said[chunk.index] = said.get(chunk.index, "") + chunk.text
                if chunk.logprobs and chunk.text.strip() in ("Yes", "No"):
                    p = float(re.findall(r"p=([\d.]+)", text)[-1])
                    top = (("Yes", math.log(p)), ("No", math.log(1 - p)))
                    chosen = dict(top)[chunk.text.strip()]
                    chunk = replace(chunk, logprobs=(TokenLogprob(chunk.text, chosen, top),))
                yield chunk


class NoLogprobs(ScriptedBackend):
    """A backend that gives no log-probabilities."""

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        async with contextlib.aclosing(super().stream(request)) as chunks:
            async for chunk in chunks:
                yield replace(chunk, logprobs=())


async def test_one_solution_request_then_all_verifications_at_once_with_a_shared_prefix() -> None:
    backend = genrm(["so \\boxed{4}", "so \\boxed{5}", "thus \\boxed{4}"], lambda s, k: verdict("Yes"))
    run = await Controller(backend).run(PROBLEM, GenRM(solutions=3, verifications=2))
    first, *checks = backend.requests
    assert first.sampling.n == 3 and first.sampling.temperature == 0.7
    assert len(checks) == 6 and backend.peak_streaming == 6  # all S*V in flight together
    assert all(r.sampling.n == 1 and r.sampling.logprobs == 20 for r in checks)
    assert all((r.sampling.temperature, r.sampling.max_tokens) == (0.7, 512) for r in checks)
    prompts = [r.messages[-1].content for r in checks]
    for solution in ("so \\boxed{4}", "so \\boxed{5}", "thus \\boxed{4}"):  # V identical prompts each
        mine = [p for p in prompts if p.endswith(f"Proposed solution:\n{solution}")]
        assert len(mine) == 2 and mine[0] == mine[1]
    prefix = VERIFY_PROMPT.split("{solution}")[0].format(question=PROBLEM.question)
    assert all(p.startswith(prefix) and len(r.messages) == 1 for p, r in zip(prompts, checks, strict=True))
    assert run.usage["calls"] == 7 and run.usage["samples"] == 9 and run.usage["cached_tokens"] > 0
    assert run.stop_reason == "done" and run.answer == "4" and run.chosen == 0  # all score 1: the first
    assert [c.scores.get("genrm") for c in run.candidates[:3]] == [1.0, 1.0, 1.0]
    assert len(run.candidates) == 9 and all(c.answer is None for c in run.candidates[3:])


async def test_a_solution_is_scored_by_the_mean_p_yes_of_its_verdict_tokens() -> None:
    odds = {
        "so \\boxed{4}": [verdict("Yes", 0.9), verdict("No", 0.3)],
        "so \\boxed{5}": [verdict("Yes", 0.8)] * 2,
    }
    backend = genrm(list(odds), lambda s, k: odds[s][k], cls=Odds)
    run = await Controller(backend).run(PROBLEM, GenRM(solutions=2, verifications=2))
    [four, five] = run.candidates[:2]
    assert four.scores["genrm"] == pytest.approx(0.6) and four.scores["verdicts"] == 2
    assert five.scores["genrm"] == pytest.approx(0.8)
    assert run.answer == "5" and run.chosen == 1
    checks = run.candidates[2:]
    assert sorted(round(c.scores["p_yes"], 6) for c in checks) == [0.3, 0.8, 0.8, 0.9]
    assert sorted(c.scores["solution"] for c in checks) == [0.0, 0.0, 1.0, 1.0]


async def test_without_logprobs_the_score_is_the_fraction_of_yes_verdicts() -> None:
    words = ["Yes", "No", "Yes", "Yes"]
    backend = genrm(["so \\boxed{4}"], lambda s, k: verdict(words[k]), cls=NoLogprobs)
    run = await Controller(backend).run(PROBLEM, GenRM(solutions=1, verifications=4))
    assert run.candidates[0].scores["genrm"] == 0.75 and run.answer == "4"


@pytest.mark.parametrize(("select", "answer"), [("best", "5"), ("vote", "4")])
async def test_best_picks_the_top_solution_and_vote_sums_scores_per_answer(select: str, answer: str) -> None:
    odds = {"so \\boxed{4}": 0.6, "so \\boxed{5}": 0.7, "thus \\boxed{4}": 0.6}
    backend = genrm(list(odds), lambda s, k: verdict("Yes", odds[s]), cls=Odds)
    run = await Controller(backend).run(PROBLEM, GenRM(solutions=3, verifications=1, select=select))  # type: ignore[arg-type]
    assert run.answer == answer  # best: 0.7 > 0.6; vote: 4 has 0.6 + 0.6 = 1.2 > 0.7
    assert run.candidates[run.chosen or 0].answer == answer


async def test_malformed_verdicts_are_unknown_never_yes() -> None:
    checks = {
        "so \\boxed{4}": [verdict("No"), "Yes, yes, this looks right to me."],
        "so \\boxed{5}": [
            "Is the answer correct (Yes/No)? Maybe",
            verdict("Yes") + " Is the answer correct? X",
        ],
    }
    backend = genrm(list(checks), lambda s, k: checks[s][k])
    run = await Controller(backend).run(PROBLEM, GenRM(solutions=2, verifications=2))
    [four, five] = run.candidates[:2]
    assert four.scores == {"genrm": 0.0, "verdicts": 1.0}  # its one known verdict: No
    assert "genrm" not in five.scores  # two unknowns: no score, not 1.0
    assert run.answer == "4"
    assert all("p_yes" not in c.scores for c in run.candidates[2:] if "Yes," in c.text or "Maybe" in c.text)
    # Every verdict unknown: nothing is scored, so the solutions vote (self-consistency).
    vague = genrm(["so \\boxed{5}", "so \\boxed{4}", "thus \\boxed{4}"], lambda s, k: "Looks fine. Yes!")
    run = await Controller(vague).run(PROBLEM, GenRM(solutions=3, verifications=1))
    assert run.answer == "4" and not any("genrm" in c.scores for c in run.candidates)


def test_p_yes_reads_the_last_verdict_token_aligned_from_the_end() -> None:
    def completion(text: str, tokens: list[str], top: tuple[tuple[str, float], ...]) -> Completion:
        logprobs = tuple(TokenLogprob(t, -0.1, top if t.strip() in ("Yes", "No") else ()) for t in tokens)
        return Completion(0, text, len(tokens), "stop", logprobs=logprobs)

    top = ((" Yes", math.log(0.2)), (" No", math.log(0.6)))
    text = "x ÷ 2 ok. Is the answer correct (Yes/No)? Yes"
    tokens = ["x", " �", " 2", " ok.", " Is the answer correct (Yes/No)?", " Yes", "<|im_end|>"]
    assert p_yes(completion(text, tokens, top)) == pytest.approx(0.25)  # past a special token at the end
    assert p_yes(completion(text, ["x ÷ 2 ok. Is the answer correct (Yes/No)?", " Ye", "s"], top)) == 1.0
    assert (
        p_yes(Completion(0, "Is the answer correct (Yes/No)? No. Is the answer correct?", 9, "stop")) is None
    )
    assert (
        p_yes(Completion(0, "I echo 'Is the answer correct (Yes/No)? X'. Is it? **yes**", 9, "stop")) is None
    )


async def test_a_solution_without_an_answer_is_not_verified() -> None:
    backend = genrm(["I cannot tell.", "so \\boxed{4}"], lambda s, k: verdict("Yes"))
    run = await Controller(backend).run(PROBLEM, GenRM(solutions=2, verifications=3))
    assert len(backend.requests) == 1 + 3 and run.answer == "4" and run.chosen == 1
    assert all("boxed{4}" in r.messages[-1].content for r in backend.requests[1:])


async def test_a_budget_stop_keeps_the_verdicts_that_finished() -> None:
    solutions = ["so \\boxed{5}", "so \\boxed{4}", "thus \\boxed{4}"]
    backend = genrm(solutions, lambda s, k: verdict("Yes" if "4" in s else "No"))
    run = await Controller(backend).run(PROBLEM, GenRM(solutions=3, verifications=2), Budget(calls=3))
    assert run.stop_reason == "budget:calls" and run.usage["calls"] == 3
    # The budget paid for two verifications (the first of solutions 0 and 1): those are scored.
    assert [c.scores.get("genrm") for c in run.candidates[:3]] == [0.0, 1.0, None]
    assert [c.scores["p_yes"] for c in run.candidates[3:]] == [0.0, 1.0]
    assert (run.answer, run.chosen) == ("4", 1) and all(c.answer is None for c in run.candidates[3:])


async def test_a_budget_stop_before_any_verdict_returns_the_solutions_vote() -> None:
    backend = genrm(["so \\boxed{5}", "so \\boxed{4}", "thus \\boxed{4}"], lambda s, k: verdict("Yes"))
    spent = 2 + 2 + 2  # the three solutions' tokens: nothing left for a verification
    strategy = GenRM(solutions=3, verifications=2)
    run = await Controller(backend).run(PROBLEM, strategy, Budget(output_tokens=spent))
    assert run.stop_reason == "budget:output_tokens" and run.usage["output_tokens"] == spent
    assert len(backend.requests) == 1 and len(run.candidates) == 3
    assert (run.answer, run.chosen) == ("4", 1) and not any(c.scores for c in run.candidates)
    # A little left: one verification starts, is cut short without a verdict, and is unknown.
    backend = genrm(["so \\boxed{5}", "so \\boxed{4}", "thus \\boxed{4}"], lambda s, k: verdict("Yes"))
    run = await Controller(backend).run(PROBLEM, strategy, Budget(output_tokens=spent + 3))
    assert run.stop_reason == "budget:output_tokens" and run.answer == "4"
    [cut] = run.candidates[3:]
    assert cut.finish_reason == "length" and cut.scores == {"solution": 0.0}


async def test_error_text_is_never_scored_as_an_answer() -> None:
    def failing(solution: str, k: int) -> str:
        if k == 1:
            raise BackendError("connection reset \\boxed{99}", retryable=True, backend="scripted")
        return verdict("Yes") + " \\boxed{77}"

    backend = genrm(["so \\boxed{4}"], failing)
    [run] = await solve([PROBLEM], Controller(backend), GenRM(solutions=1, verifications=2))
    assert run.stop_reason == "error" and run.error and "connection reset" in run.error
    assert run.answer is None and not any(c.answer in ("99", "77") for c in run.candidates)
    # A verification that writes a boxed number is a verification, never an answer.
    ok = genrm(["so \\boxed{4}"], lambda s, k: "\\boxed{77} " + verdict("No"))
    run = await Controller(ok).run(PROBLEM, GenRM(solutions=1, verifications=2))
    assert run.answer == "4" and [c.answer for c in run.candidates] == ["4", None, None]


def test_parameters_are_checked_and_round_trip() -> None:
    with pytest.raises(ConfigError, match="solutions, verifications >= 1"):
        GenRM(verifications=0)
    with pytest.raises(ConfigError, match="temperature"):
        GenRM(verify_temperature=-1)
    strategy = STRATEGIES.create("genrm", {"solutions": "8", "verifications": "2", "select": "vote"})
    assert build(spec_of(strategy)) == strategy == GenRM(solutions=8, verifications=2, select="vote")
    assert STRATEGIES.get("gen-rm") is GenRM
