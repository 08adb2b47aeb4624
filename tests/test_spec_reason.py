"""SpecReason (spec-reason) on scripted draft and target models: exact routing and acceptance."""

from collections.abc import AsyncGenerator, Callable

import pytest

from reasoning import (
    STRATEGIES,
    Budget,
    Chunk,
    ConfigError,
    Controller,
    Message,
    Problem,
    Request,
    ScriptedBackend,
    TokenLogprob,
    default_prompt,
)
from reasoning.strategies import SpecReason
from reasoning.strategies.step_tree import split_steps
from reasoning.verifiers.step_judge import JUDGE_PREFIX as SCORE_PREFIX
from reasoning.verifiers.step_judge import STEP_JUDGE_PROMPT as JUDGE_PROMPT

PROBLEM = Problem("p", "2+2?", answer="4")
PROMPT = default_prompt(PROBLEM.without_gold())
Top = tuple[tuple[str, float], ...]


def digit(score: str) -> Top:
    """A judge token that is `score` for sure."""
    return ((score, 0.0),)


class Model:
    """A scripted model: steps by the steps already written, judge tokens by the judged step.

    It counts its requests in flight (the most at once is `peak`).
    """

    def __init__(
        self,
        name: str,
        steps: Callable[[list[str]], str],
        judge: Callable[[str], Top] | None = None,
        seconds_per_token: float = 0.0,
    ) -> None:
        self.inner = ScriptedBackend(
            lambda request, _: steps(split_steps(request.prefix)),
            name=name,
            model=name,
            seconds_per_token=seconds_per_token,
        )
        self.judge = judge
        self.requests: list[Request] = []
        self.live = self.peak = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def judged(self) -> list[Request]:
        return [r for r in self.requests if r.sampling.logprobs is not None]

    @property
    def written(self) -> list[Request]:
        return [r for r in self.requests if r.sampling.logprobs is None]

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        self.requests.append(request)
        self.live += 1
        self.peak = max(self.peak, self.live)
        try:
            if request.sampling.logprobs is not None:
                assert self.judge is not None, "this model does not judge"
                top = self.judge(split_steps(request.messages[-2].content)[-1])
                token = TokenLogprob(top[0][0], top[0][1], top)
                yield Chunk(0, token.token, 1, prompt_tokens=7, logprobs=(token,), finish_reason="length")
            else:
                async for chunk in self.inner.stream(request):
                    yield chunk
        finally:
            self.live -= 1


def drafts(*steps: str) -> Callable[[list[str]], str]:
    """Step k of the script (the last one repeats), each closed by a blank line."""
    return lambda done: steps[min(len(done), len(steps) - 1)] + "\n\nnot part of the step"


async def solve(draft: Model, target: Model, **params: object):
    strategy = STRATEGIES.create("spec-reason", params)
    return await Controller({"draft": draft, "target": target}).run(PROBLEM, strategy)


async def test_steps_are_judged_accepted_at_the_threshold_and_rejected_below_it() -> None:
    draft = Model("draft", drafts("d0 step", "d1 step", "d2 so \\boxed{5}"))
    scores = {"d0 step": "8", "d1 step": "3", "d2 so \\boxed{5}": "7"}
    target = Model("target", drafts("t0", "t1 step", "t2 \\boxed{4}"), lambda step: digit(scores[step]))
    run = await solve(draft, target)

    [candidate] = run.candidates
    assert candidate.text == "d0 step\n\nt1 step\n\nd2 so \\boxed{5}"  # d1 rejected, d2 accepted at 7
    assert run.answer == "5" and candidate.finish_reason == "answer"
    assert [r.prefix for r in draft.requests] == ["", "d0 step\n\n", "d0 step\n\nt1 step\n\n"]
    assert [r.prefix for r in target.written] == ["d0 step\n\n"]  # the target rewrites step 1
    step = target.written[0].sampling
    assert (step.temperature, step.top_p, step.max_tokens, step.stop) == (0.6, 0.95, 512, ("\n\n",))
    judged = ["d0 step\n\n", "d0 step\n\nd1 step\n\n", "d0 step\n\nt1 step\n\nd2 so \\boxed{5}\n\n"]
    for request, partial in zip(target.judged, judged, strict=True):
        assert request.messages == (*PROMPT, Message("assistant", partial), Message("user", JUDGE_PROMPT))
        assert request.prefix == SCORE_PREFIX == "I think the quality score is: "
        assert (request.sampling.temperature, request.sampling.max_tokens, request.sampling.logprobs) == (
            0,
            1,
            10,
        )
    assert candidate.scores == {
        "steps": 3.0,
        "draft_steps": 3.0,
        "draft_steps_accepted": 2.0,
        "target_steps": 1.0,
        "acceptance_rate": 2 / 3,
        "mean_judge_score": 6.0,
        "kept_tokens": 7.0,
        "draft_tokens": 7.0,
        "target_tokens": 5.0,  # three judge tokens and the rewritten step
        "draft_calls": 3.0,
        "target_calls": 4.0,
        "forced_answer": 0.0,
    }
    assert run.usage_by_backend["draft"]["calls"] == 3 and run.usage_by_backend["draft"]["output_tokens"] == 7
    assert (
        run.usage_by_backend["target"]["calls"] == 4 and run.usage_by_backend["target"]["output_tokens"] == 5
    )
    assert {c.backend for c in run.candidates} == {""}


@pytest.mark.parametrize(("threshold", "kept"), [(8.0, "d0"), (8.5, "t0")])
async def test_a_score_equal_to_the_threshold_is_accepted(threshold: float, kept: str) -> None:
    draft = Model("draft", drafts("d0", "\\boxed{4}"))
    target = Model("target", drafts("t0", "\\boxed{4}"), lambda step: digit("8" if step == "d0" else "9"))
    run = await solve(draft, target, threshold=threshold)
    assert run.candidates[0].text.split("\n\n")[0] == kept


# The decoded token is no digit; the digits among the top-10 are 9 and 6, equally likely.
UNSURE: Top = (("The", -0.5), ("9", -1.0), (" 6", -1.0), ("x", -1.5))


@pytest.mark.parametrize(("method", "kept", "mean"), [("greedy", "t0", 0.0), ("average", "d0", 7.5)])
async def test_greedy_reads_the_decoded_digit_average_the_expected_digit(
    method: str, kept: str, mean: float
) -> None:
    draft = Model("draft", drafts("d0", "\\boxed{4}"))
    target = Model("target", drafts("t0", "\\boxed{4}"), lambda step: UNSURE if step == "d0" else digit("9"))
    run = await solve(draft, target, score_method=method)
    [candidate] = run.candidates
    assert candidate.text.split("\n\n")[0] == kept
    assert candidate.scores["mean_judge_score"] == (mean + 9) / 2


async def test_the_first_steps_are_the_targets_and_unjudged() -> None:
    draft = Model("draft", drafts("d0", "d1", "d2", "d3 \\boxed{4}"))
    target = Model("target", drafts("t0", "t1", "t2", "t3"), lambda step: digit("9"))
    run = await solve(draft, target, first_n_target=2)
    [candidate] = run.candidates
    assert candidate.text == "t0\n\nt1\n\nd2\n\nd3 \\boxed{4}"
    assert [r.prefix for r in target.written] == ["", "t0\n\n"]
    assert [r.prefix for r in draft.requests] == ["t0\n\nt1\n\n", "t0\n\nt1\n\nd2\n\n"]
    assert len(target.judged) == 2
    assert (candidate.scores["target_steps"], candidate.scores["draft_steps_accepted"]) == (2, 2)


async def test_an_answer_line_ends_the_trace() -> None:
    draft = Model("draft", drafts("d0", "Answer: 4", "never written"))
    target = Model("target", drafts("t0"), lambda step: digit("9"))
    run = await solve(draft, target)
    assert run.candidates[0].text == "d0\n\nAnswer: 4" and run.answer == "4"
    assert len(draft.requests) == 2 and run.candidates[0].scores["forced_answer"] == 0


async def test_the_repetition_guard_stops_at_three_steps_and_the_target_answers() -> None:
    draft = Model("draft", drafts("loop"))
    target = Model("target", lambda done: "4} and more", lambda step: digit("9"))
    run = await solve(draft, target)
    [candidate] = run.candidates
    assert candidate.finish_reason == "repetition" and candidate.scores["steps"] == 3
    forced = target.written[-1]
    assert forced.prefix == "loop\n\nloop\n\nloop\n\nFinal Answer: \\boxed{"
    assert (forced.sampling.temperature, forced.sampling.max_tokens) == (0.0, 24)
    assert candidate.text == "loop\n\nloop\n\nloop\n\nFinal Answer: \\boxed{4} and more"
    assert run.answer == "4" and candidate.scores["forced_answer"] == 1


async def test_the_token_budget_counts_only_the_kept_steps() -> None:
    # Kept: 3 + 1 (the target's rewrite of a rejected 3-token step) + 3 = 7 < 8, so a 4th step.
    draft = Model("draft", drafts("a a a", "b b b", "c c c", "d d d", "e e e"))
    target = Model("target", drafts("t", "t", "t"), lambda step: digit("2" if step == "b b b" else "9"))
    run = await solve(draft, target, token_budget=8)
    [candidate] = run.candidates
    assert candidate.text.startswith("a a a\n\nt\n\nc c c\n\nd d d\n\nFinal Answer: \\boxed{")
    assert candidate.finish_reason == "token_budget"
    assert (candidate.scores["steps"], candidate.scores["kept_tokens"]) == (4, 10)
    assert candidate.scores["draft_tokens"] == 12


async def test_a_step_that_ends_the_text_ends_the_trace() -> None:
    draft = Model("draft", lambda done: "no blank line here" if done else "d0\n\n")
    target = Model("target", lambda done: "4}", lambda step: digit("9"))
    run = await solve(draft, target, answer_tokens=0)
    [candidate] = run.candidates
    assert candidate.text == "d0\n\nno blank line here" and candidate.finish_reason == "end"
    assert target.written == [] and candidate.scores["forced_answer"] == 0


async def test_a_stray_end_of_thinking_tag_is_removed_from_a_step_without_an_answer() -> None:
    draft = Model("draft", drafts("so x = 2</think>", "</think>\\boxed{4}"))
    target = Model("target", drafts("t"), lambda step: digit("9"))
    run = await solve(draft, target)
    assert run.candidates[0].text == "so x = 2\n\n</think>\\boxed{4}"
    assert draft.requests[1].prefix == "so x = 2\n\n"


def traced(seconds: float) -> Model:
    """A draft whose traces each start with their number; trace 1 ends in 5, the others in 4."""
    started: list[int] = []

    def step(done: list[str]) -> str:
        if not done:
            started.append(len(started))
            return f"trace{started[-1]} starts"
        return "\\boxed{5}" if done[0] == "trace1 starts" else "\\boxed{4}"

    return Model("draft", lambda done: step(done) + "\n\n", seconds_per_token=seconds)


@pytest.mark.parametrize("n", [1, 3])
async def test_n_traces_run_concurrently_and_vote(n: int) -> None:
    draft = traced(0.01)
    target = Model("target", drafts("t"), lambda step: digit("9"))
    run = await solve(draft, target, n=n)
    assert draft.peak == n  # every trace's first step in flight at once
    assert [c.answer for c in run.candidates] == ["4", "5", "4"][:n]
    assert run.answer == "4" and run.chosen == 0
    assert (
        run.usage_by_backend["draft"]["calls"] == 2 * n and run.usage_by_backend["target"]["calls"] == 2 * n
    )


async def test_a_budget_stop_votes_over_finished_traces_only_never_over_steps() -> None:
    draft = Model("draft", drafts("d0 4", "d1 4", "\\boxed{4}"))
    target = Model("target", drafts("t"), lambda step: digit("9"))
    strategy = SpecReason()
    run = await Controller({"draft": draft, "target": target}, budget=Budget(calls=3)).run(PROBLEM, strategy)
    assert run.stop_reason == "budget:calls"
    assert run.answer is None and run.candidates == []


async def test_missing_backends_are_named_with_the_fix() -> None:
    with pytest.raises(
        ConfigError, match=r"spec-reason needs backends named 'draft' and 'target'.*--model draft="
    ):
        await Controller(ScriptedBackend(["x"])).run(PROBLEM, SpecReason())
    with pytest.raises(ConfigError, match="missing: target"):
        await Controller({"draft": ScriptedBackend(["x"]), "big": ScriptedBackend(["y"])}).run(
            PROBLEM, SpecReason()
        )
    run = await Controller(
        {"small": Model("s", drafts("\\boxed{4}")), "large": Model("l", drafts("t"), lambda s: digit("9"))}
    ).run(PROBLEM, SpecReason(draft="small", target="large"))
    assert run.answer == "4" and run.usage_by_backend["large"]["calls"] == 1


@pytest.mark.parametrize(
    "params",
    [
        {"threshold": "9.5"},
        {"threshold": "-1"},
        {"score_method": "median"},
        {"n": "0"},
        {"token_budget": "0"},
    ],
)
def test_bad_parameters_are_config_errors(params: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        STRATEGIES.create("spec-reason", params)


def test_defaults_are_the_papers() -> None:
    s = SpecReason()
    assert (s.threshold, s.score_method, s.token_budget, s.first_n_target, s.step_tokens) == (
        7.0,
        "greedy",
        8192,
        0,
        512,
    )
    assert (s.temperature, s.top_p, s.draft, s.target, s.n) == (0.6, 0.95, "draft", "target", 1)
    assert STRATEGIES.get("specreason") is SpecReason


async def test_the_record_keeps_each_draft_and_target_call_with_when_it_started() -> None:
    """The trace is the candidate; its calls are `Run.calls`, on the run's clock, by backend."""
    draft = Model("draft", drafts("d0 step", "d1 step", "d2 so \\boxed{5}"), seconds_per_token=0.001)
    scores = {"d0 step": "8", "d1 step": "3", "d2 so \\boxed{5}": "7"}
    target = Model("target", drafts("t0", "t1 step", "t2 \\boxed{4}"), lambda step: digit(scores[step]))
    run = await solve(draft, target)
    [candidate] = run.candidates
    # one trace: draft d0, judge, draft d1, judge (rejected), target t1, draft d2, judge
    roles = ["draft", "target", "draft", "target", "target", "draft", "target"]
    assert [c.backend for c in run.calls] == roles
    starts = [c.started for c in run.calls]
    assert starts == sorted(starts) and starts[0] > 0  # one after another, on the run's clock
    ends = [c.started + c.seconds for c in run.calls]
    assert all(end <= start + 1e-9 for end, start in zip(ends, starts[1:], strict=False))
    assert 0 < candidate.started <= starts[0] and candidate.seconds >= sum(c.seconds for c in run.calls)
    assert [c.output_tokens for c in run.calls if c.backend == "draft"] == [2, 2, 3]
