"""TrimR on a scripted solver (target) and verifier (draft): exact checks, cuts and records."""

import asyncio
from collections.abc import AsyncGenerator, Callable

import pytest

from reasoning import STRATEGIES, Budget, Chunk, ConfigError, Controller, Problem, Request, ScriptedBackend
from reasoning.strategies import TrimR
from reasoning.strategies.step_tree import ANSWER_PHRASE
from reasoning.strategies.trimr import GUIDES, boundaries

PROBLEM = Problem("p", "2+2?", answer="4")
FILLER = "more " * 40
OVER = ["2+2 = 4, so the answer is 4.", "Wait, let me check: 2+2 is 4 again.", f"Hmm, {FILLER}\\boxed{{4}}"]
UNDER = ["Try x = 1: no.", "Alternatively, try x = 2: no.", f"Alternatively, try x = 3: {FILLER}\\boxed{{3}}"]


class Model:
    """A scripted model that logs when its requests start, stream a token and end."""

    def __init__(self, name: str, script: Callable[[Request], str], log: list[str], seconds: float) -> None:
        self.inner = ScriptedBackend(lambda request, _: script(request), name=name, seconds_per_token=seconds)
        self.requests: list[Request] = []
        self.log = log

    @property
    def name(self) -> str:
        return self.inner.name

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        self.requests.append(request)
        self.log.append(f"{self.name} start")
        try:
            async for chunk in self.inner.stream(request):
                self.log.append(f"{self.name} token")
                yield chunk
        finally:
            self.log.append(f"{self.name} end")


def solver(thoughts: list[str], log: list[str], seconds: float = 0.003) -> Model:
    """The trace (its thoughts joined by blank lines) and, after an answer prompt, "4} and more"."""
    trace = "\n\n".join(thoughts)
    return Model(
        "target", lambda r: "4} and more" if r.prefix.endswith(ANSWER_PHRASE) else trace, log, seconds
    )


def verifier(reached: Callable[[str], str], same: str, log: list[str], seconds: float = 0.0) -> Model:
    """Answers REACHED by the thought it shows, SAME with `same`."""

    def script(r: Request) -> str:
        prompt = r.messages[-1].content
        if "same final answer" in prompt:
            return same
        return reached(prompt.split("reasoning:\n")[1].split("\n\nDoes this excerpt")[0])

    return Model("draft", script, log, seconds)


async def solve(target: Model, draft: Model, budgets: dict[str, Budget] | None = None, **params: object):
    strategy = STRATEGIES.create("trimr", params)
    return await Controller({"target": target, "draft": draft}, budgets=budgets or {}).run(PROBLEM, strategy)


def checks_of(run) -> list[tuple[float, float, float | None]]:
    return [
        (c.scores["thought"], c.scores["check"], c.scores.get("p_yes"))
        for c in run.candidates
        if "check" in c.scores
    ]


async def test_overthinking_cancels_the_solver_and_forces_the_answer_after_the_confirming_thought() -> None:
    log: list[str] = []
    target, draft = solver(OVER, log), verifier(lambda t: "Yes", "Yes", log)
    run = await solve(target, draft)
    main = run.candidates[0]
    head = OVER[0] + "\n\n" + OVER[1] + GUIDES["overthinking"] + ANSWER_PHRASE
    assert main.text == head + "4} and more" and run.answer == "4" and main.finish_reason == "overthinking"
    trace, forced = target.requests
    assert forced.prefix == head and forced.messages == trace.messages and trace.prefix == ""
    assert (forced.sampling.temperature, forced.sampling.max_tokens) == (0.0, 24)
    assert target.inner.cancelled == 1  # the trace, in the engine
    # Thought 0: REACHED; thought 1: REACHED and SAME (with thought 0), sent together.
    assert checks_of(run) == [(0, 0, 1.0), (1, 0, 1.0), (1, 1, 1.0)]
    assert main.backend == "target" and {c.backend for c in run.candidates[1:]} == {"target", "draft"}
    prompts = [r.messages[-1].content for r in draft.requests]
    assert all(p.startswith("Question:\n2+2?\n\n") for p in prompts)
    assert f"First excerpt:\n{OVER[0]}\n\nSecond excerpt:\n{OVER[1]}\n\n" in prompts[2]
    assert all(
        (r.sampling.temperature, r.sampling.max_tokens, r.sampling.logprobs) == (0.0, 1, 20)
        for r in draft.requests
    )
    segments = [c for c in run.candidates if "thought" in c.scores and "check" not in c.scores]
    assert [(c.text.strip()[:4], c.finish_reason) for c in segments] == [
        ("2+2 ", "recheck"),
        ("Wait", "overthinking"),
        ("Hmm,", "cancelled"),
    ]
    s = main.scores
    assert (s["thoughts"], s["checks"], s["cut_thought"], s["forced_answer"], s["switches"]) == (
        2,
        3,
        1,
        1,
        0,
    )
    assert 1 <= s["decoded_past_cut"] < 40
    by = run.usage_by_backend
    assert (by["draft"]["calls"], by["draft"]["output_tokens"], s["verifier_tokens"]) == (3, 3, 3)
    assert (
        by["target"]["calls"] == 2
        and by["target"]["output_tokens"] == s["solver_tokens"] == main.output_tokens
    )


async def test_underthinking_cuts_after_the_second_switch_away_from_a_line_without_an_answer() -> None:
    log: list[str] = []
    target, draft = solver(UNDER, log), verifier(lambda t: "No", "No", log)
    run = await solve(target, draft)
    main = run.candidates[0]
    head = UNDER[0] + "\n\n" + UNDER[1] + GUIDES["underthinking"] + ANSWER_PHRASE
    assert main.text == head + "4} and more" and main.finish_reason == "underthinking" and run.answer == "4"
    assert target.requests[1].prefix == head and target.inner.cancelled == 1
    # SAME is not asked: thought 0 was already known to reach no answer.
    assert checks_of(run) == [(0, 0, 0.0), (1, 0, 0.0)]
    assert (main.scores["switches"], main.scores["cut_thought"]) == (2, 1)


async def test_one_switch_is_not_underthinking_and_a_recheck_never_is() -> None:
    log: list[str] = []
    text = [UNDER[0], "Wait, x = 2: no.", UNDER[2].replace(FILLER, "")]
    run = await solve(solver(text, log), verifier(lambda t: "No", "No", log))
    assert run.candidates[0].finish_reason == "stop" and run.answer == "3"
    assert run.candidates[0].scores["switches"] == 1  # thought 1 ended at a switch; thought 0 at a recheck


async def test_an_unsure_verifier_lets_the_solver_finish() -> None:
    log: list[str] = []
    target, draft = solver(OVER, log), verifier(lambda t: "Maybe", "Maybe", log)
    run = await solve(target, draft)
    main = run.candidates[0]
    assert main.text == "\n\n".join(OVER) and main.finish_reason == "stop" and run.answer == "4"
    assert len(target.requests) == 1 and target.inner.cancelled == 0
    # P(Yes) 0.5: unsure; and no SAME for thought 1, thought 0 not known to reach an answer.
    assert checks_of(run) == [(0, 0, 0.5), (1, 0, 0.5)]
    assert (main.scores["cut_thought"], main.scores["forced_answer"], main.scores["decoded_past_cut"]) == (
        -1,
        0,
        0,
    )


@pytest.mark.parametrize(("segment", "checks"), [("cue", 0), ("paragraph", 1)])
async def test_without_a_cue_the_verifier_is_never_asked_unless_every_paragraph_is_a_thought(
    segment: str, checks: int
) -> None:
    log: list[str] = []
    target, draft = (
        solver(["2+2 = 4.", "So the answer is \\boxed{4}"], log),
        verifier(lambda t: "Yes", "Yes", log),
    )
    run = await solve(target, draft, segment=segment)
    assert run.answer == "4" and run.candidates[0].finish_reason == "stop"
    assert len(draft.requests) == run.candidates[0].scores["checks"] == checks
    assert run.usage_by_backend["draft"]["calls"] == checks and len(target.requests) == 1


class Gated(Model):
    """A verifier that answers only once the solver has decoded `ahead` more tokens since it was asked."""

    def __init__(self, log: list[str], ahead: int) -> None:
        super().__init__("draft", lambda r: "Maybe", log, 0.0)
        self.ahead = ahead

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        asked = len(self.log)
        while self.log[asked:].count("target token") < self.ahead:  # never, if the check blocked the solver
            await asyncio.sleep(0.001)
        async for chunk in super().stream(request):
            yield chunk


async def test_the_verifier_checks_while_the_solver_decodes_on() -> None:
    log: list[str] = []
    target, draft = solver(OVER, log), Gated(log, ahead=5)
    async with asyncio.timeout(60):
        run = await solve(target, draft)
    assert run.candidates[0].finish_reason == "stop" and run.answer == "4"
    assert log.count("target start") == 1 and log.count("draft start") == 2  # one trace, never paused
    assert checks_of(run) == [(0, 0, 0.5), (1, 0, 0.5)]


async def test_a_budget_stop_on_the_verifier_answers_with_what_the_trace_wrote() -> None:
    log: list[str] = []
    target, draft = solver(OVER, log), verifier(lambda t: "Yes", "Yes", log)
    run = await solve(target, draft, budgets={"draft": Budget(calls=1)})
    assert run.stop_reason == "budget:draft.calls"
    assert run.usage_by_backend["draft"]["calls"] == 1
    assert run.answer == "4" and run.candidates[0].finish_reason == "budget"  # "the answer is 4." written
    assert target.inner.streaming == 0 and target.inner.cancelled == 1  # nothing outlives the problem


async def test_a_budget_stop_before_any_written_answer_answers_nothing() -> None:
    log: list[str] = []
    target, draft = solver(UNDER, log), verifier(lambda t: "Maybe", "Maybe", log)
    run = await solve(target, draft, budgets={"target": Budget(output_tokens=12)})
    assert run.stop_reason.startswith("budget:target.output_tokens")
    assert run.answer is None
    assert run.usage_by_backend["target"]["output_tokens"] <= 12


def test_boundaries_need_a_blank_line_and_a_whole_cue_word() -> None:
    assert boundaries("Wait, no blank line.\nWait, one newline.") == []
    assert boundaries("x.\n\nWaiting is not a cue.\n\n**Alternatively**, y") == [(25, 27, "switch")]
    assert boundaries("x.\n\n \nhmm...") == [(2, 6, "recheck")]
    assert boundaries("x.\n\nBut") == []  # the cue word may go on: no boundary yet


async def test_missing_backends_are_named() -> None:
    with pytest.raises(ConfigError, match="no backend named 'draft'"):
        await Controller({"target": ScriptedBackend(["x"]), "big": ScriptedBackend(["y"])}).run(
            PROBLEM, TrimR()
        )


@pytest.mark.parametrize(
    "params",
    [{"yes_threshold": "0.3", "no_threshold": "0.3"}, {"no_threshold": "-0.1"}, {"switches": "0"},
     {"answer_tokens": "0"}, {"verifier_backend": ""}, {"segment": "sentence"}],
)  # fmt: skip
def test_bad_parameters_are_config_errors(params: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        STRATEGIES.create("trimr", params)
