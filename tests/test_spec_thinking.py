"""Speculative Thinking (spec-thinking) on scripted draft and target models: exact routing."""

from collections.abc import AsyncGenerator, Callable

import pytest

from reasoning import STRATEGIES, Chunk, ConfigError, Controller, Problem, Request, ScriptedBackend
from reasoning.strategies import SpecThinking
from reasoning.strategies.spec_thinking import RECAP_PROMPT, sentiment

PROBLEM = Problem("p", "2+2?", answer="4")


class Model:
    """A scripted model answering by the kind of request (segment, peek, ...) and its prefix.

    It counts its requests in flight (the most at once is `peak`).
    """

    def __init__(self, name: str, script: Callable[[Request], str], seconds_per_token: float = 0.0) -> None:
        self.inner = ScriptedBackend(
            lambda request, _: script(request), name=name, seconds_per_token=seconds_per_token
        )
        self.requests: list[Request] = []
        self.live = self.peak = 0

    @property
    def name(self) -> str:
        return self.inner.name

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        self.requests.append(request)
        self.live += 1
        self.peak = max(self.peak, self.live)
        try:
            async for chunk in self.inner.stream(request):
                yield chunk
        finally:
            self.live -= 1


def by_prefix(segments: dict[str, str], peeks: dict[str, str] | None = None) -> Callable[[Request], str]:
    """Draft segments (stopped at a blank line) and peeks (no stop string) keyed by the exact prefix."""
    return lambda r: segments[r.prefix] if r.sampling.stop else (peeks or {})[r.prefix]


async def solve(draft: Model, target: Model, **params: object):
    strategy = STRATEGIES.create("spec-thinking", params)
    return await Controller({"draft": draft, "target": target}).run(PROBLEM, strategy)


@pytest.mark.parametrize(
    ("text", "mood"),
    [
        ("So x = 4.", 0),  # no keyword
        ("Yes, that is right.", 1),  # positive only
        ("Wait, that is wrong.", -1),  # negative only
        ("Let me verify this.", -1),  # a verify word counts as negative
        ("Yes. Wait.", -1),  # a tie of non-zero counts is negative
        ("Yes yes, wait.", 1),  # occurrences are counted
        ("YEAH, I am Confident. Hold on, let me CHECK.", -1),  # 2 against 2, case-insensitive
        ("The final answer is 4. Let me think again.", -1),  # phrases: 1 against 1
        ("Alternatively, another way, hold on.", -1),
        ("I am confident: the final answer is 4, yeah.", 1),
    ],
)
def test_sentiment_counts_positive_against_negative_and_verify_words(text: str, mood: int) -> None:
    assert sentiment(text) == mood


async def test_a_reflective_peek_hands_the_segment_to_the_target_a_neutral_one_is_dropped() -> None:
    first, guided = "Let x be 2.\n\n", "Let x be 2.\n\nActually x = 2 "
    draft = Model(
        "draft",
        by_prefix(
            {
                "": first + "unused",
                guided: "so x+2 = 4.\n\n",
                guided + "so x+2 = 4.\n\n": "The answer is \\boxed{4}",
            },
            {first: "Wait, maybe x is 3", guided + "so x+2 = 4.\n\n": "So the sum is 4"},
        ),
    )
    target = Model("target", lambda r: "Actually x = 2 holds for sure.")
    run = await solve(draft, target, peek_tokens=4)

    [candidate] = run.candidates
    assert candidate.text == guided + "so x+2 = 4.\n\nThe answer is \\boxed{4}"
    assert run.answer == "4" and candidate.finish_reason == "end"
    kinds = [("peek" if not r.sampling.stop else "segment", r.prefix) for r in draft.requests]
    assert kinds == [
        ("segment", ""),
        ("peek", first),
        ("segment", guided),
        ("peek", guided + "so x+2 = 4.\n\n"),
        ("segment", guided + "so x+2 = 4.\n\n"),  # the neutral peek was dropped
    ]
    [big] = target.requests
    assert big.prefix == first and big.sampling.max_tokens == 4 and big.sampling.stop == ()
    for request in (*draft.requests, big):
        s = request.sampling
        assert (s.temperature, s.top_k, s.top_p) == (0.6, 50, 0.95)
    assert draft.requests[0].sampling.max_tokens == 1024 and draft.requests[0].sampling.stop == ("\n\n",)
    scores = candidate.scores
    assert (scores["segments"], scores["boundaries"], scores["flagged"], scores["target_segments"]) == (
        3,
        2,
        1,
        1,
    )
    assert (scores["negatives"], scores["recaps"], scores["verify_continuations"]) == (0, 0, 0)
    assert scores["kept_tokens"] == 4 + 4 + 4 + 4 and scores["target_share"] == 4 / 16
    assert (
        run.usage_by_backend["target"]["calls"] == 1 and run.usage_by_backend["target"]["output_tokens"] == 4
    )
    assert run.usage_by_backend["draft"]["calls"] == 5
    assert run.usage_by_backend["draft"]["output_tokens"] == 4 + 4 + 4 + 4 + 4 == scores["draft_tokens"]


async def test_a_verify_word_makes_the_target_write_on() -> None:
    first = "Let x be 2.\n\n"
    draft = Model("draft", by_prefix({"": first}, {first: "Hmm, I should double-check this"}))
    target = Model(
        "target",
        lambda r: (
            "Let me check: x plus 2 is 4, fine." if r.sampling.max_tokens == 4 else "All good. \\boxed{4}"
        ),
    )
    run = await solve(draft, target, peek_tokens=4, verify_tokens=7)
    [candidate] = run.candidates
    assert candidate.text == first + "Let me check: x All good. \\boxed{4}"
    assert [(r.prefix, r.sampling.max_tokens) for r in target.requests] == [
        (first, 4),
        (first + "Let me check: x ", 7),
    ]
    assert candidate.scores["verify_continuations"] == 1 and candidate.scores["negatives"] == 1
    assert candidate.finish_reason == "end" and run.answer == "4"


async def test_a_segment_the_model_ended_gets_no_verify_continuation() -> None:
    first = "Let x be 2.\n\n"
    draft = Model("draft", by_prefix({"": first}, {first: "Wait, is that so"}))
    target = Model("target", lambda r: "Let me check. \\boxed{4}")
    run = await solve(draft, target, peek_tokens=10)
    [candidate] = run.candidates
    assert candidate.text == first + "Let me check. \\boxed{4}" and candidate.finish_reason == "end"
    assert len(target.requests) == 1 and candidate.scores["verify_continuations"] == 0


async def test_a_segment_cut_at_its_cap_is_no_boundary() -> None:
    draft = Model("draft", by_prefix({"": "one two three four", "one two three ": "four \\boxed{4}"}))
    run = await solve(draft, Model("target", lambda r: "never"), segment_tokens=3)
    [candidate] = run.candidates
    assert candidate.text == "one two three four \\boxed{4}"
    assert all(r.sampling.stop == ("\n\n",) for r in draft.requests) and len(draft.requests) == 2
    assert candidate.scores["boundaries"] == 0 and candidate.scores["segments"] == 2


def dithering(last: int) -> Callable[[Request], str]:
    """A draft whose every peek hesitates; its segment number `last` ends the text."""

    def script(r: Request) -> str:
        if not r.sampling.stop:
            return "Wait, hmm, not sure about this"
        k = r.prefix.count("seg") + 1
        return f"seg{k} done.\n\n" if k < last else "So \\boxed{4}"

    return script


async def test_recaps_come_after_the_negative_limit_which_grows_as_the_recaps_do() -> None:
    target = Model(
        "target",
        lambda r: (
            "So far fine and then more words here ok"
            if r.prefix.endswith(RECAP_PROMPT)
            else "Wait no hmm x y"
        ),
    )
    draft = Model("draft", dithering(9))
    params = {"peek_tokens": 3, "neg_limit": 1, "neg_growth": 1, "max_neg_limit": 2}
    run = await solve(draft, target, recap_tokens=3, recap_growth=2, max_recap_tokens=6, **params)
    [candidate] = run.candidates
    recaps = [r for r in target.requests if r.prefix.endswith(RECAP_PROMPT)]
    # boundaries 1..8: segment, recap (limit 1), segment, segment, recap (limit 2), segment, segment, recap
    assert [r.sampling.max_tokens for r in recaps] == [3, 5, 6]
    assert [r.prefix.count("seg") for r in recaps] == [2, 5, 8]
    assert all(r.prefix.endswith(".\n\n" + RECAP_PROMPT) for r in recaps)
    assert candidate.scores["recaps"] == 3 and candidate.scores["target_segments"] == 5
    assert candidate.scores["negatives"] == 5 and candidate.scores["flagged"] == 5
    assert "seg2 done.\n\nLet me check whether there are some wrong steps:So far fine " in candidate.text
    assert run.answer == "4"


async def test_the_recap_waits_for_the_default_limit_of_15_negatives() -> None:
    recap = " ".join(["words"] * 130)  # longer than the recap: cut at 125 tokens, not ended
    target = Model("target", lambda r: recap if r.prefix.endswith(RECAP_PROMPT) else "Wait no hmm x y")
    run = await solve(Model("draft", dithering(18)), target, peek_tokens=3)
    recaps = [r for r in target.requests if r.prefix.endswith(RECAP_PROMPT)]
    assert [(r.prefix.count("seg"), r.sampling.max_tokens) for r in recaps] == [(16, 125)]
    assert run.candidates[0].scores["negatives"] == 16  # 15, then one more after the recap


async def test_without_choose_large_the_target_segment_is_kept_only_when_it_turns_the_mood() -> None:
    first = "Let x be 2.\n\n"
    checking = first + "Wait, let me check "
    third = checking + "x is 2 so x+2 = 4.\n\n"
    draft = Model(
        "draft",
        by_prefix(
            {"": first, checking + "x is 2 ": "so x+2 = 4.\n\n", third + "Fine so x = ": "\\boxed{4}"},
            {first: "Wait, let me check x", third: "Wait, is x+2 really 4"},
        ),
    )

    def target_script(r: Request) -> str:
        if r.sampling.max_tokens == 3:  # the verify continuation
            return "x is 2 indeed"
        return "Wait again y z w" if r.prefix == first else "Fine so x = 2 and"

    target = Model("target", target_script)
    run = await solve(draft, target, peek_tokens=4, verify_tokens=3, choose_large=False)
    [candidate] = run.candidates
    # Boundary 1: both negative, the peek is kept (and its verify word calls the target);
    # boundary 2: the target's segment turns the mood and is kept.
    assert candidate.text == third + "Fine so x = \\boxed{4}"
    assert [r.prefix for r in target.requests] == [first, checking, third]
    scores = candidate.scores
    assert (scores["target_segments"], scores["negatives"], scores["verify_continuations"]) == (1, 1, 1)


async def test_max_tokens_caps_the_kept_tokens_and_the_target_answers() -> None:
    draft = Model("draft", lambda r: "a b c\n\n" if r.sampling.stop else "so then x y z")
    target = Model("target", lambda r: "4}")
    run = await solve(draft, target, max_tokens=10)
    [candidate] = run.candidates
    segments = [r for r in draft.requests if r.sampling.stop]
    assert [r.sampling.max_tokens for r in segments] == [10, 7, 4, 1]  # each capped at what is left
    assert [r.sampling.max_tokens for r in draft.requests if not r.sampling.stop] == [7, 4, 1]
    assert candidate.finish_reason == "max_tokens" and candidate.scores["kept_tokens"] == 10
    [forced] = target.requests
    assert forced.prefix == "a b c\n\n" * 3 + "a \n\nFinal Answer: \\boxed{"
    assert (forced.sampling.temperature, forced.sampling.max_tokens) == (0.0, 24)
    assert run.answer == "4" and candidate.scores["forced_answer"] == 1
    assert candidate.scores["draft_tokens"] == 10 + 5 + 4 + 1 and candidate.scores["target_tokens"] == 1


def traced(seconds: float) -> Model:
    """A draft whose traces each start with their number; trace 1 ends in 5, the others in 4."""
    started: list[int] = []

    def script(r: Request) -> str:
        if not r.prefix:
            started.append(len(started))
            return f"trace{started[-1]} starts\n\n"
        return (
            "So x = "
            if not r.sampling.stop
            else ("\\boxed{5}" if r.prefix.startswith("trace1") else "\\boxed{4}")
        )

    return Model("draft", script, seconds_per_token=seconds)


@pytest.mark.parametrize("n", [1, 3])
async def test_n_traces_run_concurrently_and_vote(n: int) -> None:
    draft = traced(0.01)
    run = await solve(draft, Model("target", lambda r: "never"), n=n)
    assert draft.peak == n
    assert [c.answer for c in run.candidates] == ["4", "5", "4"][:n]
    assert run.answer == "4" and run.chosen == 0
    assert run.usage_by_backend["draft"]["calls"] == 3 * n and run.usage_by_backend["target"]["calls"] == 0


async def test_missing_backends_are_named_with_the_fix() -> None:
    with pytest.raises(
        ConfigError, match=r"spec-thinking needs backends named 'draft' and 'target'.*--model"
    ):
        await Controller(ScriptedBackend(["x"])).run(PROBLEM, SpecThinking())


@pytest.mark.parametrize(
    "params",
    [
        {"max_tokens": "0"},
        {"peek_tokens": "0"},
        {"neg_growth": "-1"},
        {"n": "0"},
        {"top_p": "0"},
        {"max_neg_limit": "10"},
        {"recap_tokens": "300"},
        {"answer_tokens": "-1"},
    ],
)
def test_bad_parameters_are_config_errors(params: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        STRATEGIES.create("spec-thinking", params)


def test_defaults_are_the_released_configuration() -> None:
    s = SpecThinking()
    assert (s.temperature, s.top_k, s.top_p, s.segment_tokens, s.peek_tokens) == (0.6, 50, 0.95, 1024, 20)
    assert (s.verify_tokens, s.recap_tokens, s.recap_growth, s.max_recap_tokens) == (125, 125, 25, 200)
    assert (s.neg_limit, s.neg_growth, s.max_neg_limit, s.choose_large) == (15, 5, 30, True)
