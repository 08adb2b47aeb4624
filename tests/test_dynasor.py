"""Dynasor-CoT (dynasor) on a scripted model: exact probe requests, stopping rule and accounting."""

from collections.abc import Mapping

import pytest

from reasoning import STRATEGIES, Budget, ConfigError, Controller, Problem, Request, ScriptedBackend
from reasoning.backends.scripted import tokenize
from reasoning.strategies import Dynasor
from reasoning.strategies.dynasor import SUFFIX

PROBLEM = Problem("p", "2+2?", answer="4")
TRACE = " ".join(f"t{i}" for i in range(40)) + " so \\boxed{5}"  # 43 tokens, its own answer 5
WORDS = tokenize(TRACE)


def model(probes: Mapping[int, str], trace: str = TRACE, **kwargs: object) -> ScriptedBackend:
    """The trace, or a probe's reply chosen by the tokens before the suffix ("9}" when not listed)."""

    def reply(request: Request, _: int) -> str:
        if request.prefix.endswith(SUFFIX):
            return probes.get(len(tokenize(request.prefix[: -len(SUFFIX)])), "9}")
        return trace

    return ScriptedBackend(reply, **kwargs)  # type: ignore[arg-type]


def probed(backend: ScriptedBackend) -> list[Request]:
    return [r for r in backend.requests if r.prefix.endswith(SUFFIX)]


def at(boundary: int) -> str:
    """The trace's text at `boundary` tokens."""
    return "".join(WORDS[:boundary])


async def test_probes_every_chunk_tokens_with_the_exact_prefix_and_sampling() -> None:
    backend = model({b: f"{b}}}" for b in range(8, 48, 8)})  # every probe answers differently: no stop
    strategy = Dynasor(window=2, chunk=8, temperature=0.7, top_p=0.9, max_tokens=300)
    run = await Controller(backend).run(PROBLEM, strategy)
    [trace, *probes] = backend.requests
    assert trace.prefix == "" and trace.sampling.max_tokens == 300
    assert (trace.sampling.temperature, trace.sampling.top_p) == (0.7, 0.9)
    assert [r.prefix for r in probes] == [at(b) + SUFFIX for b in (8, 16, 24, 32, 40)]  # not at 0, 43
    assert {(r.sampling.max_tokens, r.sampling.temperature, r.sampling.top_p) for r in probes} == {
        (20, 0.6, 0.95)
    }
    [candidate] = run.candidates
    assert run.answer == "5" and candidate.text == TRACE and candidate.finish_reason == "stop"
    assert candidate.scores == {"probes": 5.0, "probe_tokens": 5.0, "exit_token": 0.0, "agreement": 1.0}
    assert candidate.output_tokens == run.usage["output_tokens"] == len(WORDS) + 5 == backend.decoded_tokens
    assert backend.cancelled == 0


@pytest.mark.parametrize(("window", "stop"), [(2, 24), (3, 32)])
async def test_stops_when_the_last_window_probes_agree(window: int, stop: int) -> None:
    backend = model({8: "3} \\]", 16: "4} \\]", 24: "4.0} \\]", 32: "4} \\]"})
    run = await Controller(backend).run(PROBLEM, Dynasor(window=window, chunk=8))
    [candidate] = run.candidates
    assert run.answer == "4" and candidate.finish_reason == "exit"
    answer = {24: "4.0", 32: "4"}[stop]
    assert candidate.text == at(stop) + SUFFIX + answer + "}"  # the probe's own words, boxed
    assert candidate.scores["exit_token"] == stop and candidate.scores["agreement"] == window
    assert [r.prefix for r in probed(backend)] == [at(b) + SUFFIX for b in range(8, stop + 1, 8)]
    # The trace was cancelled in the engine after the stop and recorded so, with all its tokens.
    past = int(candidate.scores["decoded_past_exit"])
    assert backend.cancelled == 1 and run.usage["cancelled_samples"] == 1
    assert run.usage["cancelled_tokens"] == stop + past and 0 <= past < 8
    assert (
        candidate.output_tokens
        == run.usage["output_tokens"]
        == backend.decoded_tokens
        == stop + past + 2 * (stop // 8)
    )


async def test_hesitation_words_block_a_stop_and_match_whole_words() -> None:
    backend = model({8: "4} \\] Wait, check", 16: "4} \\] HMM", 24: "4} nothing known", 32: "4} \\]"})
    run = await Controller(backend).run(PROBLEM, Dynasor(window=2, chunk=8))
    [candidate] = run.candidates
    assert (
        candidate.scores["exit_token"] == 32 and candidate.scores["agreement"] == 4
    )  # "no" is not in "nothing"
    relaxed = await Controller(model({8: "4} \\] Wait", 16: "4} hmm"})).run(
        PROBLEM, STRATEGIES.create("dynasor", {"window": 2, "chunk": 8, "hesitation": "maybe, perhaps"})
    )
    assert relaxed.candidates[0].scores["exit_token"] == 16


async def test_an_empty_answer_blocks_a_stop() -> None:
    # No closing brace within the probe's tokens, a blank answer: neither is an answer.
    backend = model({8: "4 and more", 16: "4 and more", 24: " } \\]", 32: " } \\]", 40: " } \\]"})
    run = await Controller(backend).run(PROBLEM, Dynasor(window=2, chunk=8))
    [candidate] = run.candidates
    assert run.answer == "5" and candidate.finish_reason == "stop" and candidate.scores["exit_token"] == 0
    assert candidate.scores["agreement"] == 0 and candidate.scores["probes"] == 5


def test_effort_presets_and_overrides() -> None:
    presets = {"mild": (8, 64), "low": (5, 64), "mid": (3, 64), "high": (2, 64), "crazy": (2, 32)}
    assert {e: Dynasor(effort=e).settings() for e in presets} == presets  # type: ignore[arg-type]
    assert Dynasor().settings() == (3, 64)
    assert Dynasor(effort="crazy", window=4).settings() == (4, 32)
    assert Dynasor(effort="mild", chunk=16).settings() == (8, 16)
    assert STRATEGIES.get("dynasor-cot") is STRATEGIES.get("certaindex") is Dynasor


async def test_a_trace_that_ends_first_keeps_its_own_answer_and_cancels_a_running_probe() -> None:
    short = " ".join(f"t{i}" for i in range(10)) + " so \\boxed{5}"  # 13 tokens: one probe, at 8
    backend = model({8: "4}"}, trace=short, seconds_per_token=[0.0, 0.05])  # the probe is slow
    run = await Controller(backend).run(PROBLEM, Dynasor(window=1, chunk=8))
    [candidate] = run.candidates
    assert run.answer == "5" and candidate.text == short and candidate.finish_reason == "stop"
    assert candidate.scores["probes"] == 1 and candidate.scores["exit_token"] == 0
    assert backend.cancelled == 1 and run.usage["cancelled_samples"] == 1  # the probe, not the trace
    assert candidate.output_tokens == run.usage["output_tokens"] == backend.decoded_tokens


async def test_a_budget_stop_answers_with_the_latest_answered_probe() -> None:
    backend = model({8: "3}", 16: "4} wait"})
    run = await Controller(backend, budget=Budget(calls=3)).run(PROBLEM, Dynasor(window=3, chunk=8))
    assert run.stop_reason == "budget:calls" and run.answer == "4"
    [candidate] = run.candidates
    assert candidate.text == at(16) + SUFFIX + "4}" and candidate.scores["exit_token"] == 16


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"window": -1}, "window"),
        ({"chunk": -2}, "chunk"),
        ({"chunk": 512}, "chunk"),
        ({"temperature": -1.0}, "temperature"),
        ({"effort": "max", "window": 2, "chunk": 8}, "effort"),
        ({"probe_tokens": 0}, "probe_tokens"),
        ({"probe_temperature": -1.0}, "probe_temperature"),
        ({"probe_top_p": 0.0}, "probe_top_p"),
    ],
)
def test_bad_parameters_raise_config_error_naming_them(params: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Dynasor(**params)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=named):
        STRATEGIES.create("dynasor", params)
