"""Parallel strategies on scripted backends (the invariants each paper implies)."""

import math
from dataclasses import dataclass

import pytest

from reasoning import Budget, Controller, Problem, Request, ScriptedBackend, TokenLogprob
from reasoning.selection import (
    group_confidences,
    majority_probability,
    majority_vote,
    token_confidence,
    trace_confidence,
)
from reasoning.strategies import (
    AdaptiveSelfConsistency,
    BestOfN,
    DeepConf,
    FirstFinish,
    LongestFinish,
    SelfConsistency,
    ShortMAtK,
)

PROBLEM = Problem("p", "2+2?", answer="4")


def words(n: int, answer: str) -> str:
    """A scripted trace of exactly n tokens ending in a boxed answer."""
    return " ".join(["w"] * (n - 1) + [f"\\boxed{{{answer}}}"])


def lockstep(script, **kwargs) -> ScriptedBackend:
    """Samples decode one token each per step (like an engine batch), so shorter ones finish first."""
    return ScriptedBackend(script, seconds_per_token=0.001, **kwargs)


async def run(backend, strategy, budget=None):
    return await Controller(backend).run(PROBLEM, strategy, budget)


# -- first finish, short-m@k, longest finish ------------------------------------------------------


async def test_ffs_returns_the_first_finisher_and_cancels_the_rest() -> None:
    backend = lockstep([words(7, "7"), words(3, "3"), words(9, "9"), words(3, "33")])
    result = await run(backend, FirstFinish(n=4))
    assert result.answer == "3" and result.candidates[result.chosen].output_tokens == 3
    assert backend.cancelled == 1  # the one request was closed with samples still decoding
    cancelled = [c for c in result.candidates if c.finish_reason == "cancelled"]
    assert len(cancelled) == 3 and all(c.answer is None for c in cancelled)
    # Lock-step decoding: everyone had ~3 tokens when the winner finished (sync-FFS cost n x L_min).
    assert result.usage["output_tokens"] <= 4 * 3 and result.usage["cancelled_tokens"] >= 2 * 3
    assert backend.decoded_tokens == result.usage["output_tokens"]


async def test_ffs_skip_unanswered_waits_for_a_finisher_with_an_answer() -> None:
    backend = lockstep(["no answer", words(6, "6"), words(9, "9")])
    assert (await run(backend, FirstFinish(n=3))).answer is None
    backend = lockstep(["no answer", words(6, "6"), words(9, "9")])
    assert (await run(backend, FirstFinish(n=3, skip_unanswered=True))).answer == "6"


async def test_ffs_k_votes_over_the_first_k() -> None:
    backend = lockstep([words(3, "5"), words(4, "5"), words(5, "6"), words(9, "6"), words(9, "6")])
    assert (await run(backend, FirstFinish(n=5, k=3))).answer == "5"


async def test_short_m_at_k_with_m_equal_k_is_majority_at_k() -> None:
    script = [words(5, "1"), words(3, "2"), words(8, "2"), words(4, "1"), words(6, "2")]
    short = await run(lockstep(script), ShortMAtK(k=5, m=5))
    majority = await run(lockstep(script), SelfConsistency(n=5))
    assert short.answer == majority.answer == "2"


async def test_short_1_at_k_is_ffs_and_ties_go_to_the_shortest_chain() -> None:
    script = [words(7, "7"), words(3, "3"), words(9, "9")]
    assert (await run(lockstep(script), ShortMAtK(k=3, m=1))).answer == "3"
    # m=2: answers 3 (3 tokens) and 5 (4 tokens) tie 1-1: the shortest chain wins.
    script = [words(4, "5"), words(3, "3"), words(9, "9")]
    result = await run(lockstep(script), ShortMAtK(k=3, m=2))
    assert result.answer == "3" and result.usage["cancelled_samples"] == 1


async def test_longest_finish_votes_over_the_k_longest() -> None:
    script = [words(3, "1"), words(9, "2"), words(8, "2"), words(4, "1"), words(5, "1")]
    assert (await run(ScriptedBackend(script), LongestFinish(n=5, k=2))).answer == "2"
    assert (await run(ScriptedBackend(script), LongestFinish(n=5, k=5))).answer == "1"


# -- best-of-N selectors -----------------------------------------------------------------------------


@dataclass
class ScoreByAnswer:
    scores: dict

    async def __call__(self, problem, texts):
        from reasoning import Verdict, extract_answer

        return [Verdict(extract_answer(t), self.scores.get(extract_answer(t), 0.0)) for t in texts]


async def test_best_of_n_selectors_use_verifier_scores() -> None:
    script = [words(3, "1"), words(3, "1"), words(3, "2"), words(3, "1"), words(3, "3")]
    verifier = ScoreByAnswer({"1": 0.1, "2": 0.9, "3": 0.5})

    async def pick(selector: str) -> str | None:
        controller = Controller(ScriptedBackend(script), verifier=verifier)
        return (await controller.run(PROBLEM, BestOfN(n=5, selector=selector, score="verifier"))).answer

    assert await pick("majority") == "1"  # 3 votes
    assert await pick("argmax") == "2"  # best single score
    assert await pick("weighted") == "2"  # 0.9 > 3 x 0.1 and > 0.5


async def test_best_of_n_self_judge_reads_p_yes_from_logprobs() -> None:
    def script(request: Request, number: int) -> str:
        prompt = request.messages[0].content
        if "Proposed solution" in prompt:
            return "Yes" if "boxed{4}" in prompt else "No"
        return [words(3, "5"), words(3, "5"), words(3, "4")][number % 3]

    backend = ScriptedBackend(script)
    result = await run(backend, BestOfN(n=3, selector="argmax", score="judge"))
    assert result.answer == "4"  # the judge vetoes the majority answer
    assert [c.scores["judge"] for c in result.candidates] == [0.0, 0.0, 1.0]
    assert result.usage["calls"] == 4  # one sampling request + three judge requests


def test_yes_probability_normalises_yes_against_no() -> None:
    from reasoning.verifiers.judge import yes_probability

    token = TokenLogprob("Yes", math.log(0.6), (("Yes", math.log(0.6)), (" no", math.log(0.2)), ("x", -1)))
    assert yes_probability(token) == pytest.approx(0.75)
    assert yes_probability(TokenLogprob("x", -1.0, (("x", -1.0),))) == 0.5


async def test_confidence_weighted_best_of_n() -> None:
    # Sample 2 alone is very confident; samples 0 and 1 agree but are unsure.
    backend = ScriptedBackend(
        [words(4, "1"), words(4, "1"), words(4, "2")],
        token_logprob=lambda number, position: -9.0 if number == 2 else -1.0,
    )
    result = await run(backend, BestOfN(n=3, selector="weighted", score="confidence"))
    assert result.answer == "2" and result.candidates[2].scores["confidence"] == pytest.approx(9.0)


# -- DeepConf --------------------------------------------------------------------------------------


def test_token_confidence_of_a_peaked_distribution() -> None:
    p_min = 1e-4
    top = (("a", math.log(1 - 19 * p_min)), *((f"b{j}", math.log(p_min)) for j in range(19)))
    expected = -(math.log(1 - 19 * p_min) + 19 * math.log(p_min)) / 20
    assert token_confidence(TokenLogprob("a", top[0][1], top)) == pytest.approx(expected)


def test_lowest_group_confidence_is_the_min_sliding_window_mean() -> None:
    values = [5.0, 4.0, 1.0, 2.0, 6.0, 7.0]
    groups = group_confidences(values, 2)
    assert groups == [4.5, 2.5, 1.5, 4.0, 6.5]
    assert trace_confidence(values, "lowest", 2) == 1.5
    assert trace_confidence(values, "tail", 2) == 6.5
    assert trace_confidence(values, "lowest", 10) == pytest.approx(sum(values) / 6)  # shorter than window


async def test_deepconf_offline_keeps_the_most_confident_and_weights_the_vote() -> None:
    # Three unsure traces say 1, two confident ones say 2; keeping the top 40% leaves the 2s.
    backend = ScriptedBackend(
        [words(4, "1"), words(4, "1"), words(4, "1"), words(4, "2"), words(4, "2")],
        token_logprob=lambda number, position: -8.0 if number >= 3 else -1.0,
    )
    result = await run(backend, DeepConf(mode="offline", budget=5, eta=40, window=2))
    assert result.answer == "2"
    assert [c.scores["kept"] for c in result.candidates] == [0.0, 0.0, 0.0, 1.0, 1.0]


async def test_deepconf_online_stops_a_trace_at_the_first_full_window_under_the_threshold() -> None:
    # Warm-up traces (samples 0-3) are confident throughout (confidence 8), so the threshold
    # is 8; later traces collapse from their 5th token on (confidence 1).
    def logprob(number: int, position: int) -> float:
        return -8.0 if number < 4 or position < 4 else -1.0

    backend = lockstep(
        [words(4, "4")] * 3 + [words(4, "5")] + [words(20, "9")] * 4,
        token_logprob=logprob,
    )
    strategy = DeepConf(mode="online", budget=8, warmup=4, eta=90, window=4, tau=1.0, batch=4)
    result = await run(backend, strategy)
    late = result.candidates[4:]
    assert result.answer == "4" and len(late) == 4
    # Window means after tokens 4, 5, ...: 8, 6.25 (< threshold 8) -> stopped after 5 tokens.
    assert all(c.finish_reason == "cancelled" and c.output_tokens == 5 for c in late)
    assert result.usage["cancelled_tokens"] == 4 * 5


async def test_deepconf_online_stops_sampling_once_the_vote_is_settled() -> None:
    backend = ScriptedBackend([words(4, "4")])
    strategy = DeepConf(mode="online", budget=32, warmup=4, batch=4, window=2)
    result = await run(backend, strategy)
    assert result.answer == "4" and len(backend.requests) == 1  # unanimous warm-up: consensus 1.0


# -- adaptive self-consistency ------------------------------------------------------------------------


def test_beta_stopping_rule() -> None:
    assert majority_probability(4, 0) == pytest.approx(31 / 32)
    assert majority_probability(5, 1) < 0.95 < majority_probability(6, 1)
    assert majority_probability(0, 0) == 0.5


async def test_adaptive_sc_stops_when_settled_and_continues_when_split() -> None:
    agree = ScriptedBackend([words(3, "4")])
    result = await run(agree, AdaptiveSelfConsistency(max_samples=16, batch=4))
    assert result.answer == "4" and len(agree.requests) == 1 and len(result.candidates) == 4
    split = ScriptedBackend([words(3, "4"), words(3, "5")])
    result = await run(split, AdaptiveSelfConsistency(max_samples=12, batch=4))
    assert len(split.requests) == 3 and len(result.candidates) == 12


# -- every strategy: budgets hold, costs are reported -------------------------------------------------

STRATEGIES = [
    BestOfN(n=4, selector="weighted", score="judge"),
    BestOfN(n=4, selector="argmax", score="confidence"),
    FirstFinish(n=4),
    FirstFinish(n=4, k=2),
    LongestFinish(n=4, k=2),
    ShortMAtK(k=4, m=2),
    DeepConf(mode="offline", budget=6),
    DeepConf(mode="online", budget=12, warmup=4, batch=4, window=2),
    AdaptiveSelfConsistency(max_samples=12, batch=4),
]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: f"{type(s).__name__}")
async def test_budget_holds_and_costs_are_reported(strategy) -> None:
    backend = ScriptedBackend(
        [words(30, "4"), words(20, "5"), words(25, "4")], seconds_per_token=[0.0, 0.001, 0.002]
    )
    budget = Budget(output_tokens=50)
    result = await run(backend, strategy, budget)
    assert result.usage["output_tokens"] <= 50
    assert result.stop_reason in ("done", "budget:output_tokens")
    assert result.usage["seconds"] > 0 and "cancelled_tokens" in result.usage
    assert result.usage["output_tokens"] == backend.decoded_tokens
    tight = await run(ScriptedBackend([words(30, "4")]), strategy, Budget(calls=1, output_tokens=8))
    assert tight.usage["output_tokens"] <= 8 and tight.usage["calls"] <= 1


def test_majority_vote_tie_rules() -> None:
    assert majority_vote(["a", "b"], lengths=[5, 3], tie="first") == 0
    assert majority_vote(["a", "b"], lengths=[5, 3], tie="shortest") == 1
    assert majority_vote(["a", "b", "b"], lengths=[9, 3, 4], tie="longest") == 2  # no tie: b wins
    assert majority_vote(["a", "b"], lengths=[5, 7], tie="longest") == 1


async def test_another_named_backend_can_judge() -> None:
    drafts = ScriptedBackend([words(3, "5"), words(3, "4")], name="vllm", model="small")
    judge = ScriptedBackend(
        lambda request, number: "Yes" if "boxed{4}" in request.messages[0].content else "No"
    )
    controller = Controller({"draft": drafts, "target": judge})
    strategy = BestOfN(n=2, selector="argmax", score="judge", judge_backend="target")
    result = await controller.run(PROBLEM, strategy)
    assert result.answer == "4" and len(judge.requests) == 2 and len(drafts.requests) == 1
    assert result.usage_by_backend["target"]["calls"] == 2


async def test_deepconf_online_trace_whose_confidence_drops_on_its_last_token_finishes() -> None:
    def logprob(number: int, position: int) -> float:
        return -8.0 if number < 4 or position < 4 else -1.0

    # Late traces are exactly 5 tokens: the window mean drops under the threshold on the token
    # that also ends the trace, which therefore finishes (and votes) rather than being cancelled.
    backend = lockstep([words(4, "4")] * 3 + [words(4, "5")] + [words(5, "4")] * 4, token_logprob=logprob)
    strategy = DeepConf(mode="online", budget=8, warmup=4, eta=90, window=4, tau=1.0, batch=4)
    result = await run(backend, strategy)
    assert all(c.finish_reason == "stop" for c in result.candidates) and result.answer == "4"
