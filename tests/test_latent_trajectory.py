"""Latent-Trajectory signals ("Tracing the Traces", arXiv 2510.10494) and the lt-select / lt-prune strategies.

The scripted hidden states are a deterministic function of the text: a word ``"x,y"`` puts the
model at the point (x, y) (times the layer number), any other word leaves it where it was. A
*direct* trace walks east one step per token; a *wandering* one walks east at half the speed
while jumping between y = +10 and y = -10 every segment.
"""

import doctest
import math

import numpy as np
import pytest

import reasoning.probes.trajectory as trajectory
from reasoning import STRATEGIES, Controller, Problem, Request, ScriptedBackend
from reasoning.errors import ConfigError
from reasoning.probes.trajectory import (
    Signals,
    combine_weights,
    confidence,
    cumulative_by_step,
    lt_signals,
    net_by_step,
    segment_means,
    standardise,
)
from reasoning.strategies.lt_prune import LTPrune
from reasoning.strategies.lt_select import LTSelect
from reasoning.strategies.self_consistency import SelfConsistency

PROBLEM = Problem("p", "2+2?", answer="4")
SEGMENT = 8


def point(word: str) -> tuple[float, float] | None:
    x, comma, y = word.partition(",")
    try:
        return (float(x), float(y)) if comma else None
    except ValueError:
        return None


def states_of(text: str, layers, positions) -> np.ndarray:
    """Fake hidden states [positions, layers, 2] of `text` (the prompt sits at the origin)."""
    path, where = [], (0.0, 0.0)
    for word in text.split():
        where = point(word) or where
        path.append(where)
    out = np.zeros((len(positions), len(layers), 2))
    for i, position in enumerate(positions):
        if -len(path) <= position < len(path):
            out[i] = np.outer(layers, path[position])
    return out


def hidden(request: Request, layers, positions) -> np.ndarray:
    return states_of(request.prefix, layers, positions)


def direct(tokens: int, answer: str) -> str:
    return " ".join([f"{i},0" for i in range(1, tokens + 1)] + [f"\\boxed{{{answer}}}"])


def wandering(tokens: int, answer: str) -> str:
    steps = [f"{i / 2},{10 if (i - 1) // SEGMENT % 2 == 0 else -10}" for i in range(1, tokens + 1)]
    return " ".join([*steps, f"\\boxed{{{answer}}}"])


def lockstep(script, **kwargs) -> ScriptedBackend:
    return ScriptedBackend(script, seconds_per_token=0.001, hidden_states=hidden, **kwargs)


async def run(backend, strategy):
    return await Controller(backend).run(PROBLEM, strategy)


# -- signals ---------------------------------------------------------------------------------------


def test_signals_of_a_hand_computed_trajectory() -> None:
    # k = 2 over "e e n n w w": segment means (1.5, 0), (2, 1.5), (0.5, 2); layer 2 doubles them.
    text = "1,0 2,0 2,1 2,2 1,2 0,2"
    states = states_of(text, [1, 2], range(6))
    means = segment_means(states, 2)
    assert means.shape == (3, 2, 2) and means[:, 0].tolist() == [[1.5, 0.0], [2.0, 1.5], [0.5, 2.0]]
    s = lt_signals(states, 2)
    assert s.segments == 3
    assert s.net == pytest.approx(1.5 * math.sqrt(5) / 2)  # mean over layers 1, 2 of l * sqrt(5) / (N - 1)
    assert s.cumulative == pytest.approx(1.5 * math.sqrt(10))  # two updates of length sqrt(2.5) each
    assert s.aligned == pytest.approx(1 / math.sqrt(2))  # both updates at 45 degrees to the drift
    assert net_by_step(states, 2) == pytest.approx([1.5 * math.sqrt(2.5), 1.5 * math.sqrt(5) / 2])
    assert cumulative_by_step(states, 2) == pytest.approx([1.5 * math.sqrt(2.5), 1.5 * math.sqrt(10)])
    assert segment_means(states[:5], 2).shape[0] == 3  # the last segment may be shorter


def test_fewer_than_two_segments_is_undefined() -> None:
    s = lt_signals(states_of("1,0 2,0 3,0", [1], range(3)), 4)
    assert s.segments == 1 and not s.defined
    assert all(math.isnan(confidence(s, name)) for name in ("net", "cumulative", "aligned", "combined"))
    assert net_by_step(np.zeros((3, 1, 2)), 4).size == 0
    with pytest.raises(ValueError):
        segment_means(np.zeros((3, 1, 2)), 0)


def test_direct_beats_wandering_on_every_signal() -> None:
    layers = [1, 2]
    a = lt_signals(states_of(direct(40, "4"), layers, range(-41, 0)), SEGMENT)
    b = lt_signals(states_of(wandering(40, "5"), layers, range(-41, 0)), SEGMENT)
    assert a.net > b.net and a.cumulative < b.cumulative and a.aligned > b.aligned
    combined = standardise([a, b])
    for name in ("net", "cumulative", "aligned"):
        assert confidence(a, name) > confidence(b, name)
    assert confidence(a, "combined", combined) > confidence(b, "combined", combined)
    assert confidence(a, "cumulative") == -a.cumulative


def test_combine_weights_follow_the_correlation_with_correctness() -> None:
    # Only net change separates right from wrong; the other two do not vary with correctness.
    rows = [
        Signals(1.0, 5.0, 0.5, 3),
        Signals(3.0, 5.0, 0.5, 3),
        Signals(1.0, 5.0, 0.5, 3),
        Signals(3.0, 5.0, 0.5, 3),
    ]
    c = combine_weights(rows, [False, True, False, True])
    assert c.weights == pytest.approx((1.0, 0.0, 0.0)) and c.means[0] == 2.0 and c.stds[0] == 1.0
    assert c.stds[1] == 1.0  # a constant signal is not divided by zero
    assert confidence(rows[1], "combined", c) == pytest.approx(1.0)
    assert combine_weights(rows, [True] * 4).weights == pytest.approx((1 / 3,) * 3)  # no signal: equal
    undefined = Signals(math.nan, math.nan, math.nan, 1)
    assert combine_weights([*rows, undefined], [False, True, False, True, True]).weights[0] == pytest.approx(
        1.0
    )
    with pytest.raises(ValueError):
        combine_weights(rows, [True])


def test_docstring_examples() -> None:
    result = doctest.testmod(trajectory, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# -- lt-select -------------------------------------------------------------------------------------


@pytest.mark.parametrize("signal", ["net", "cumulative", "aligned", "combined"])
async def test_lt_select_picks_the_direct_trace_over_the_majority(signal: str) -> None:
    script = [wandering(40, "5"), direct(40, "4"), wandering(40, "5"), wandering(40, "5")]
    assert (await run(lockstep(script), SelfConsistency(n=4))).answer == "5"
    backend = lockstep(script)
    result = await run(backend, LTSelect(n=4, signal=signal, segment=SEGMENT, layers=(1, 2)))
    assert result.answer == "4" and result.chosen == 1
    assert len(backend.hidden_requests) == 4  # one read per trace
    assert [len(r.prefix.split()) for r in backend.hidden_requests] == [41] * 4
    scores = result.candidates[1].scores
    assert {"lt_net", "lt_cumulative", "lt_aligned", "lt_confidence", "lt_segments"} <= set(scores)
    assert scores["lt_segments"] == 6 and scores["lt_aligned"] == pytest.approx(1.0)


async def test_lt_select_weighted_vote() -> None:
    script = [wandering(40, "5"), direct(40, "4"), wandering(40, "5"), wandering(40, "5")]
    assert (await run(lockstep(script), LTSelect(n=4, select="weighted", segment=SEGMENT))).answer == "4"


async def test_lt_select_falls_back_to_majority_without_signals() -> None:
    script = [wandering(4, "5"), direct(4, "4"), wandering(4, "5")]  # 5 tokens: one segment each
    result = await run(lockstep(script), LTSelect(n=3, segment=SEGMENT))
    assert result.answer == "5"
    assert all("lt_confidence" not in c.scores and c.scores["lt_segments"] == 1 for c in result.candidates)


# -- lt-prune --------------------------------------------------------------------------------------


def continuing(traces) -> ScriptedBackend:
    """Trace k for the k-th sample; a continuation gets the rest of the trace its prefix begins."""

    def script(request: Request, number: int) -> str:
        if not request.prefix:
            return traces[number % len(traces)]
        text = next(t for t in traces if t.startswith(request.prefix))
        return text[len(request.prefix) :]

    return lockstep(script)


async def test_lt_prune_stops_every_trace_at_the_horizon_and_continues_the_best() -> None:
    horizon, length = 32, 100
    script = [wandering(length, "5"), direct(length, "4"), wandering(length, "5")]
    backend = continuing(script)
    strategy = LTPrune(n=3, keep=1, horizon=horizon, segment=SEGMENT, layers=(1, 2), max_tokens=200)
    result = await run(backend, strategy)
    assert result.answer == "4" and result.chosen == 1
    # One request of 3 samples to the horizon, then one continuation of the kept trace's text.
    first, rest = backend.requests
    assert first.sampling.n == 3 and first.sampling.max_tokens == horizon and first.prefix == ""
    assert rest.sampling.n == 1 and rest.prefix == script[1][: len(rest.prefix)]
    assert len(rest.prefix.split()) == horizon and rest.sampling.max_tokens == 200 - horizon
    kept = result.candidates[1]
    assert kept.finish_reason == "stop" and kept.output_tokens == length + 1 and kept.scores["pruned"] == 0
    assert kept.text.endswith(script[1].split()[-1])  # the whole trace, head and continuation
    pruned = [result.candidates[0], result.candidates[2]]
    assert all(
        c.finish_reason == "cancelled" and c.answer is None and c.scores["pruned"] == 1 for c in pruned
    )
    assert all(c.output_tokens == horizon for c in pruned)  # not a token past the horizon
    assert backend.decoded_tokens == 3 * horizon + (length + 1 - horizon)
    assert result.usage["output_tokens"] == backend.decoded_tokens + 3  # each read is metered as 1 token
    assert backend.cancelled == 0  # nothing races the decision: no engine cancellation needed
    # Every trace was scored on exactly its first `horizon` tokens.
    assert all(c.scores["lt_tokens"] == horizon for c in result.candidates)
    assert sorted(len(r.prefix.split()) for r in backend.hidden_requests) == [horizon] * 3


async def test_lt_prune_keeps_traces_that_finish_before_the_horizon() -> None:
    script = [wandering(100, "5"), wandering(100, "6"), direct(20, "4")]
    backend = continuing(script)
    result = await run(backend, LTPrune(n=3, keep=1, horizon=32, segment=SEGMENT, max_tokens=200))
    short = result.candidates[2]
    assert short.finish_reason == "stop" and short.scores["lt_tokens"] == 21 and short.answer == "4"
    # The short trace is not running at the decision, so one wandering trace is kept and runs on.
    assert sorted(c.finish_reason for c in result.candidates[:2]) == ["cancelled", "stop"]
    assert len(backend.requests) == 2
    assert result.answer == "4"  # the most confident finished trace


async def test_lt_prune_keeps_everything_when_keep_is_n() -> None:
    script = [wandering(40, "5"), direct(40, "4"), wandering(40, "5")]
    backend = continuing(script)
    result = await run(backend, LTPrune(n=3, keep=3, horizon=16, segment=SEGMENT, max_tokens=100))
    assert [c.finish_reason for c in result.candidates] == ["stop"] * 3
    assert [c.output_tokens for c in result.candidates] == [41] * 3
    assert result.answer == "4" and len(backend.requests) == 4 and result.usage["cancelled_samples"] == 0


# -- parameters ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"n": 0},
        {"signal": "entropy"},
        {"segment": 0},
        {"layers": ()},
        {"layers": (0, 4)},
        {"layers": (4, 4)},
        {"select": "best"},
        {"temperature": -1.0},
    ],
)
def test_lt_select_rejects_bad_parameters(params) -> None:
    with pytest.raises(ConfigError):
        LTSelect(**params)


@pytest.mark.parametrize(
    "params",
    [
        {"keep": 0},
        {"n": 2, "keep": 3},
        {"horizon": 40, "segment": 32},  # fewer than two segments at the horizon
        {"horizon": 512, "max_tokens": 512},  # nothing left to save
        {"signal": "entropy"},
        {"layers": ()},
    ],
)
def test_lt_prune_rejects_bad_parameters(params) -> None:
    with pytest.raises(ConfigError):
        LTPrune(**params)


def test_registered_and_layers_parse_from_the_command_line() -> None:
    select = STRATEGIES.create("lt-select", {"layers": "2, 6,10", "segment": "16"})
    assert select.layers == (2, 6, 10) and select.segment == 16
    assert STRATEGIES.create("lt-prune", {"keep": "2"}).keep == 2
    assert LTSelect.needs_hidden_states and LTPrune.needs_hidden_states
    with pytest.raises(ConfigError):
        STRATEGIES.create("lt-select", {"layers": "a,b"})
