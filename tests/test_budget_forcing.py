"""Budget forcing (s1) on the scripted backend: exact pushes, cuts, continuations and answers."""

import pytest

from reasoning import STRATEGIES, Budget, ConfigError, Controller, Problem, Request, ScriptedBackend
from reasoning.probes.exit import EXIT_PHRASE
from reasoning.strategies import BudgetForcing


def model(segment: str, answer: str) -> ScriptedBackend:
    """Every thinking request (it has a stop string) gets `segment`, every answer request `answer`."""
    return ScriptedBackend(lambda request, _: segment if request.sampling.stop else answer)


def shape(request: Request) -> tuple[str, int, tuple[str, ...], float]:
    sampling = request.sampling
    return request.prefix, sampling.max_tokens, sampling.stop, sampling.temperature


async def test_an_early_end_is_refused_with_wait_and_continued_from_the_exact_text(problem: Problem) -> None:
    backend = ScriptedBackend(["a b so \\boxed{4}", ", so c d \\boxed{5} more", "5} tail"])
    run = await Controller(backend).run(problem, BudgetForcing(min_think=6, max_tokens=20, answer_tokens=8))
    boxed = ("\\boxed{",)
    assert [shape(r) for r in backend.requests] == [
        ("", 20, boxed, 0.6),
        ("a b so \n\nWait", 17, boxed, 0.6),  # the stop string is left out; 3 of 20 tokens spent
        ("a b so \n\nWait, so c d \\boxed{", 8, (), 0.0),  # 7 >= min_think: the boxed line is put back
    ]
    [candidate] = run.candidates
    assert candidate.text == "a b so \n\nWait, so c d \\boxed{5}" and run.answer == "5"
    assert candidate.scores == {
        "think_tokens": 7.0,
        "waits": 1.0,
        "forced": 0.0,
        "segments": 2.0,
        "answer_tokens": 1.0,
    }
    assert candidate.output_tokens == 8 and candidate.finish_reason == "stop"
    assert run.usage["output_tokens"] == 8 and run.usage["calls"] == 3  # each call metered once


async def test_extend_pushes_exactly_that_many_times(problem: Problem) -> None:
    backend = model("x y \\boxed{1}", "2}")
    run = await Controller(backend).run(problem, BudgetForcing(extend=2, max_tokens=30))
    assert [r.prefix for r in backend.requests] == [
        "",
        "x y \n\nWait",
        "x y \n\nWaitx y \n\nWait",
        "x y \n\nWaitx y \n\nWaitx y \\boxed{",
    ]
    assert [r.sampling.max_tokens for r in backend.requests] == [30, 28, 26, 32]
    assert run.candidates[0].scores["waits"] == 2.0 and run.candidates[0].scores["segments"] == 3.0
    assert run.answer == "2"


async def test_max_waits_caps_the_pushes_and_each_continuation_gets_what_is_left(problem: Problem) -> None:
    backend = model("p q \\boxed{1}", "1}")
    strategy = BudgetForcing(min_think=100, max_waits=3, max_tokens=200, wait="Hmm", separator=" ")
    run = await Controller(backend).run(problem, strategy)
    thinking = [r for r in backend.requests if r.sampling.stop]
    assert [r.sampling.max_tokens for r in thinking] == [200, 198, 196, 194]
    assert thinking[-1].prefix == "p q  Hmmp q  Hmmp q  Hmm"
    [candidate] = run.candidates
    assert candidate.scores["waits"] == 3.0 and candidate.scores["think_tokens"] == 8.0
    assert candidate.finish_reason == "stop" and run.answer == "1"


async def test_the_upper_bound_cuts_the_thinking_and_forces_the_answer_cue(problem: Problem) -> None:
    backend = ScriptedBackend(["a b \\boxed{1}", ", c d e f g h i", "3} and on"])
    strategy = BudgetForcing(min_think=4, max_tokens=6, answer_tokens=5)
    run = await Controller(backend).run(problem, strategy)
    assert [shape(r) for r in backend.requests] == [
        ("", 6, ("\\boxed{",), 0.6),
        ("a b \n\nWait", 4, ("\\boxed{",), 0.6),
        ("a b \n\nWait, c d e " + EXIT_PHRASE, 5, (), 0.0),  # cut at 2 + 4 = max_tokens tokens
    ]
    [candidate] = run.candidates
    assert candidate.text == "a b \n\nWait, c d e \n\nFinal Answer: \\boxed{3}" and run.answer == "3"
    assert candidate.finish_reason == "forced"
    assert candidate.scores == {
        "think_tokens": 6.0,
        "waits": 1.0,
        "forced": 1.0,
        "segments": 2.0,
        "answer_tokens": 1.0,
    }
    assert run.usage["output_tokens"] == candidate.output_tokens == 7


async def test_think_mode_ends_at_the_think_delimiter_and_appends_wait_as_is(problem: Problem) -> None:
    backend = ScriptedBackend(["hmm ok. </think>It is 4.", ", more x y </think>done", "So \\boxed{4}."])
    run = await Controller(backend).run(problem, BudgetForcing(mode="think", min_think=5, max_tokens=50))
    assert [shape(r) for r in backend.requests] == [
        ("", 50, ("</think>",), 0.6),
        ("hmm ok. Wait", 48, ("</think>",), 0.6),
        ("hmm ok. Wait, more x y </think>", 32, (), 0.0),  # an accepted end: the model answers
    ]
    assert run.candidates[0].text == "hmm ok. Wait, more x y </think>So \\boxed{4}." and run.answer == "4"


async def test_think_mode_cut_closes_the_thinking_before_the_cue(problem: Problem) -> None:
    backend = model("a b c d e f", "7} x")
    run = await Controller(backend).run(problem, BudgetForcing(mode="think", max_tokens=3))
    assert backend.requests[-1].prefix == "a b c </think>" + EXIT_PHRASE
    assert run.candidates[0].text == "a b c </think>\n\nFinal Answer: \\boxed{7}" and run.answer == "7"


async def test_an_end_of_text_without_an_answer_is_an_end_too(problem: Problem) -> None:
    backend = ScriptedBackend(["a b", "c d e", "9}"])
    run = await Controller(backend).run(problem, BudgetForcing(min_think=3))
    assert [r.prefix for r in backend.requests] == ["", "a b\n\nWait", "a b\n\nWaitc d e" + EXIT_PHRASE]
    assert run.answer == "9" and run.candidates[0].scores["waits"] == 1.0


async def test_a_budget_stop_returns_the_trace_so_far_unanswered(problem: Problem) -> None:
    backend = model("a \\boxed{4}", "4}")
    run = await Controller(backend, budget=Budget(calls=2)).run(problem, BudgetForcing(extend=1))
    assert run.stop_reason == "budget:calls" and run.answer is None
    [partial] = run.candidates
    assert partial.text == "a \n\nWaita " and partial.answer is None and partial.finish_reason == "cancelled"


def test_the_aliases_build_it_from_command_line_strings() -> None:
    strategy = STRATEGIES.create("s1", {"mode": "think", "min_think": "4", "max_tokens": "64"})
    assert isinstance(strategy, BudgetForcing) and (strategy.mode, strategy.min_think) == ("think", 4)
    assert isinstance(STRATEGIES.create("budget_forcing"), BudgetForcing)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"mode": "reason"}, "mode"),
        ({"min_think": -1}, "min_think"),
        ({"min_think": 600}, "min_think"),  # above max_tokens
        ({"max_waits": -1}, "max_waits"),
        ({"extend": 5, "max_waits": 4}, "extend"),
        ({"wait": ""}, "wait"),
        ({"answer_cue": ""}, "answer_cue"),
        ({"answer_tokens": 0}, "answer_tokens"),
    ],
)
def test_bad_parameters_are_refused_by_name(params: dict[str, object], name: str) -> None:
    with pytest.raises(ConfigError, match=f"budget-forcing: {name} must be"):
        BudgetForcing(**params)  # type: ignore[arg-type]


async def test_the_answer_is_timed_and_its_segments_are_the_record_s_calls(problem: Problem) -> None:
    backend = model("x y \\boxed{1}", "2}")
    run = await Controller(backend).run(problem, BudgetForcing(extend=2, max_tokens=30))
    [candidate] = run.candidates
    # The three thinking segments (the answer, read from a bare stream up to its brace, is no sample)
    assert [c.output_tokens for c in run.calls] == [2, 2, 2]
    starts = [c.started for c in run.calls]
    assert starts == sorted(starts) and 0 < candidate.started <= starts[0]
