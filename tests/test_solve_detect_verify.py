"""Solve-Detect-Verify (arXiv 2505.11966) on the scripted backend: the exact calls, the stops, feedback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable

import pytest

from reasoning import STRATEGIES, Budget, ConfigError, Controller, Problem, Request, ScriptedBackend
from reasoning.backend import Chunk
from reasoning.compose import build, spec_of
from reasoning.strategies.solve_detect_verify import (
    DETECT,
    FAST,
    FEEDBACK,
    SLOW,
    SolveDetectVerify,
    completion_points,
)

PROBLEM = Problem("p", "2+2?", answer="4")
FAST_TAIL, SLOW_TAIL = FAST.split("{solution}")[1], SLOW.split("{solution}")[1]
YES, NO = "Is the answer correct (Yes/No)? Yes", "Is the answer correct (Yes/No)? No"


def kind(request: Request) -> str:
    """What a request is: a Detect probe, a fast check, a slow chain, or the solver."""
    if request.prefix.endswith(DETECT):
        return "detect"
    content = request.messages[-1].content
    return "fast" if content.endswith(FAST_TAIL) else "slow" if content.endswith(SLOW_TAIL) else "solve"


def solution_of(request: Request) -> str:
    """The solution a check verifies, or the trace a Detect probe reads."""
    if kind(request) == "detect":
        return request.prefix.removesuffix(DETECT)
    return request.messages[-1].content.split("Proposed solution:\n", 1)[1].rsplit("\n\n", 1)[0]


class SDV(ScriptedBackend):
    """Solver traces in turn (decoding slowly, so checks finish while they run); every check
    answers by a function of the solution it reads."""

    def __init__(
        self,
        traces: list[str],
        fast: Callable[[str, int], str] = lambda s, k: YES,
        slow: Callable[[str], str] = lambda s: YES,
        detect: Callable[[str], str] = lambda s: "Yes",
    ) -> None:
        self.traces, self.solves, self.asked = traces, 0, dict[str, int]()

        def reply(request: Request, number: int) -> str:
            what = kind(request)
            if what == "solve":
                self.solves += 1
                return traces[(self.solves - 1) % len(traces)]
            if what == "detect":
                return detect(solution_of(request))
            if what == "slow":
                return slow(solution_of(request))
            key = solution_of(request)
            self.asked[key] = self.asked.get(key, -1) + 1
            return fast(key, self.asked[key])

        super().__init__(reply)

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        async with contextlib.aclosing(super().stream(request)) as chunks:
            async for chunk in chunks:
                if kind(request) == "solve":
                    await asyncio.sleep(0.01)
                yield chunk

    def of(self, what: str) -> list[Request]:
        return [r for r in self.requests if kind(r) == what]


TAIL = " and then some more words" * 6
"""What a trace would go on to say past its answer (cancelled when a check decides first)."""


def test_completion_points_are_before_cue_words_and_after_closed_boxes() -> None:
    text = "So \\boxed{\\frac{1}{2}} now. Hmm, waiting. Alternatively: \\boxed{3"
    cuts = [text.index("} now") + 1, text.index("Hmm"), text.index("Alternatively")]
    assert completion_points(text, ("wait", "hmm", "alternatively")) == cuts == [22, 28, 42]
    assert completion_points("Wait", ("wait",)) == []  # a word not yet complete is no cue
    assert completion_points("So \\boxed{4} but wait.", ()) == [12]


async def test_detection_fires_at_the_box_and_an_agreeing_fast_check_stops_the_trace() -> None:
    backend = SDV(["Let x be 2. So x+x = \\boxed{4}. Wait," + TAIL])
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify())
    solve, detect, fast = backend.requests
    partial = "Let x be 2. So x+x = \\boxed{4}"
    assert [kind(r) for r in (solve, detect, fast)] == ["solve", "detect", "fast"]
    # Detect continues the solver's own prompt and trace byte for byte: one greedy token.
    assert detect.messages == solve.messages and detect.prefix == partial + DETECT
    assert (detect.sampling.temperature, detect.sampling.max_tokens, detect.sampling.logprobs) == (0.0, 1, 20)
    assert fast.messages[-1].content == FAST.format(question=PROBLEM.question, solution=partial)
    assert (fast.sampling.n, fast.sampling.max_tokens, fast.sampling.temperature) == (4, 64, 0.7)
    assert backend.cancelled == 1 and not backend.of("slow")  # the trace stopped; no slow chain
    assert run.answer == "4" and run.stop_reason == "done"
    chosen = run.candidates[run.chosen or 0]
    assert chosen.text == partial and chosen.finish_reason == "exit" and chosen.output_tokens < 20
    assert chosen.scores == {"attempt": 0.0, "checks": 1.0, "verified": 1.0, "exit_token": 8.0}
    [probe, *checks, _] = run.candidates
    assert probe.scores == {"attempt": 0.0, "detect": float(len(partial)), "p_complete": 1.0}
    assert [c.scores for c in checks] == [{"attempt": 0.0, "fast": 0.0, "p_yes": 1.0}] * 4
    assert all(c.answer is None for c in (probe, *checks))


async def test_fast_checks_that_disagree_call_the_slow_chain_which_decides() -> None:
    backend = SDV(["So \\boxed{4}. Then" + TAIL], fast=lambda s, k: YES if k % 2 else NO)
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify())
    assert [kind(r) for r in backend.requests] == ["solve", "detect", "fast", "slow"]
    [fast], [slow] = backend.of("fast"), backend.of("slow")
    assert (slow.sampling.n, slow.sampling.max_tokens, slow.sampling.logprobs) == (1, 512, 20)
    # The slow chain's prompt shares the question and solution with the fast checks' prompt.
    shared = FAST.split("Is the final")[0].format(question=PROBLEM.question, solution="So \\boxed{4}")
    assert fast.messages[-1].content.startswith(shared) and slow.messages[-1].content.startswith(shared)
    assert run.answer == "4" and run.candidates[run.chosen or 0].finish_reason == "exit"
    [slow_record] = [c for c in run.candidates if "slow" in c.scores]
    assert slow_record.scores["p_yes"] == 1.0 and slow_record.cached_tokens > 0
    # Three of four (the default consensus, 0.75) decide without the slow chain.
    backend = SDV(["So \\boxed{4}. Then" + TAIL], fast=lambda s, k: NO if k == 0 else YES)
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify())
    assert not backend.of("slow") and run.answer == "4"


async def test_a_rejection_feeds_the_finding_to_the_next_attempt() -> None:
    finding = NO + " Step 2 adds 2 and 3, not 2 and 2."
    backend = SDV(
        ["2 and 3 make \\boxed{5}. Then" + TAIL, "2 and 2 make \\boxed{4}"],
        fast=lambda s, k: finding if "{5}" in s else YES,
    )
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify())
    first, retry = backend.of("solve")
    assert [kind(r) for r in backend.requests] == ["solve", "detect", "fast", "solve", "fast"]
    # The retry continues the conversation: the first prompt, the cut trace, the finding.
    assert retry.messages[: len(first.messages)] == first.messages
    [assistant, user] = retry.messages[len(first.messages) :]
    assert (assistant.role, assistant.content) == ("assistant", "2 and 3 make \\boxed{5}")
    assert (user.role, user.content) == ("user", FEEDBACK.format(finding=finding))
    rejected, accepted = [c for c in run.candidates if "checks" in c.scores]
    assert (rejected.answer, rejected.finish_reason, rejected.scores["verified"]) == ("5", "rejected", 0.0)
    # The retry ended by itself: its end is a completion point, verified without Detect.
    assert (accepted.answer, accepted.finish_reason, accepted.scores["verified"]) == ("4", "exit", 1.0)
    assert run.answer == "4" and run.chosen == len(run.candidates) - 1


async def test_the_last_attempt_decodes_on_after_a_rejection_and_is_checked_at_its_next_answer() -> None:
    backend = SDV(
        ["So \\boxed{5}. Wait, 2+2 is 4, so" + TAIL + " \\boxed{4}"],
        fast=lambda s, k: YES if s.endswith("{4}") else NO,
    )
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify(attempts=1))
    # Rejected at the first box, nothing to retry: the trace goes on; "Wait" repeats the answer
    # already checked (no probe); the second box is the trace's end, checked without Detect.
    assert [kind(r) for r in backend.requests] == ["solve", "detect", "fast", "fast"]
    assert backend.cancelled == 0
    [attempt] = [c for c in run.candidates if "checks" in c.scores]
    assert attempt.answer == "4" and attempt.scores["verified"] == 1.0 and attempt.scores["checks"] == 2
    assert run.answer == "4"


async def test_a_rejected_last_attempt_still_answers_and_an_earlier_answer_is_kept_when_it_has_none() -> None:
    backend = SDV(["So \\boxed{5}"], fast=lambda s, k: NO)
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify(attempts=1))
    assert run.answer == "5" and run.candidates[run.chosen or 0].scores["verified"] == 0.0
    backend = SDV(["So \\boxed{5}", "I am not sure."], fast=lambda s, k: NO)
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify(attempts=2))
    assert [kind(r) for r in backend.requests] == ["solve", "fast", "solve"]  # nothing to check
    assert run.answer == "5" and run.stop_reason == "done"


async def test_the_no_cue_path_verifies_the_end_or_nothing() -> None:
    backend = SDV(["2 and 2 make 4, so the result is \\boxed{4}"])
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify())
    assert [kind(r) for r in backend.requests] == ["solve", "fast"]
    assert run.answer == "4" and run.candidates[run.chosen or 0].finish_reason == "exit"
    backend = SDV(["I think it is four, but wait is not a cue here"])
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify(cues=("hmm",)))
    assert [kind(r) for r in backend.requests] == ["solve"]  # no written answer: nothing to verify
    assert (
        run.candidates[run.chosen or 0].finish_reason == "stop" and "verified" not in run.candidates[0].scores
    )


async def test_a_hesitation_word_cuts_before_it_and_detect_no_defers_to_the_end() -> None:
    text = "The answer is 4.\n\nHmm, let me see. Yes," + TAIL + " the answer is \\boxed{4}"
    backend = SDV([text], detect=lambda s: "No")
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify())
    [detect] = backend.of("detect")
    assert detect.prefix == "The answer is 4.\n\n" + DETECT
    # Not complete: nothing verified there; the end (the same answer, not yet verified) is.
    assert [kind(r) for r in backend.requests] == ["solve", "detect", "fast"]
    assert solution_of(backend.of("fast")[0]) == text and run.answer == "4"
    [probe] = [c for c in run.candidates if "detect" in c.scores]
    assert probe.scores["p_complete"] == 0.0
    # detect=0: every completion point is verified, without a probe.
    backend = SDV([text])
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify(detect=0.0))
    assert [kind(r) for r in backend.requests] == ["solve", "fast"] and backend.cancelled == 1


async def test_malformed_verdicts_are_unknown_never_yes() -> None:
    # Detect without Yes or No: not complete. Fast checks without a verdict line: no votes,
    # so the slow chain; no verdict there either: undecided, and the trace runs to its end.
    backend = SDV(
        ["So \\boxed{4}. Then" + TAIL],
        fast=lambda s, k: "Looks fine to me. Yes!",
        slow=lambda s: "Is the answer correct (Yes/No)? Maybe",
        detect=lambda s: "Maybe",
    )
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify())
    assert [kind(r) for r in backend.requests] == ["solve", "detect", "fast", "slow"]
    [probe] = [c for c in run.candidates if "detect" in c.scores]
    assert "p_complete" not in probe.scores
    assert not any("p_yes" in c.scores for c in run.candidates)
    chosen = run.candidates[run.chosen or 0]
    assert chosen.finish_reason == "stop" and chosen.answer == "4" and "verified" not in chosen.scores
    assert backend.cancelled == 0 and run.answer == "4"  # undecided is no rejection: no retry


async def test_a_budget_stop_answers_with_the_running_attempt_and_holds_the_budget() -> None:
    # The trace holds all that is left: the first probe cannot be sent; the trace so far answers.
    backend = SDV(["Let x be 2. So x+x = \\boxed{4}. Then" + TAIL])
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify(), Budget(output_tokens=30))
    assert run.stop_reason == "budget:output_tokens" and run.usage["output_tokens"] <= 30
    assert [kind(r) for r in backend.requests] == ["solve"] and run.answer == "4"
    chosen = run.candidates[run.chosen or 0]
    assert chosen.finish_reason == "budget" and chosen.scores == {"attempt": 0.0, "checks": 1.0}
    # Room for the checks, cut to their share: the slow chain is cut before its verdict, undecided.
    long_chain = "a b c d e f g h i j k l m n o p q r s t u v w " * 3 + YES
    backend = SDV(
        ["So x+x = \\boxed{4}. Then" + TAIL],
        fast=lambda s, k: NO if k % 2 else YES,
        slow=lambda s: long_chain,
    )
    run = await Controller(backend).run(PROBLEM, SolveDetectVerify(max_tokens=40), Budget(output_tokens=80))
    assert [kind(r) for r in backend.requests] == ["solve", "detect", "fast", "slow"]
    assert run.stop_reason == "budget:output_tokens" and run.usage["output_tokens"] <= 80
    [slow] = [c for c in run.candidates if "slow" in c.scores]
    assert slow.finish_reason == "length" and "p_yes" not in slow.scores
    assert run.answer == "4" and run.candidates[run.chosen or 0].finish_reason == "stop"


def test_parameters_are_checked_and_round_trip() -> None:
    for bad, match in (
        ({"attempts": 0}, "attempts >= 1"),
        ({"fast": 0, "slow": 0}, "fast \\+ slow >= 1"),
        ({"consensus": 0.5}, "consensus"),
        ({"detect": 1.5}, "detect"),
        ({"fast_tokens": 0}, "fast_tokens"),
        ({"verify_temperature": -1}, "verify_temperature"),
    ):
        with pytest.raises(ConfigError, match=match):
            SolveDetectVerify(**bad)  # type: ignore[arg-type]
    strategy = STRATEGIES.create("sdv", {"cues": "wait, hmm", "fast": "2", "attempts": "3"})
    assert strategy == SolveDetectVerify(cues=("wait", "hmm"), fast=2, attempts=3)
    assert build(spec_of(strategy)) == strategy
    assert STRATEGIES.get("solve-detect-verify") is STRATEGIES.get("flexive") is SolveDetectVerify
