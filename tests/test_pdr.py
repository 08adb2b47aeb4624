"""PDR and SR on the scripted backend: exact rounds, requests, workspaces and answers."""

from collections.abc import Callable

import numpy as np
import pytest

from reasoning import (
    STRATEGIES,
    Budget,
    ConfigError,
    Context,
    Controller,
    Message,
    Meter,
    Problem,
    Request,
    ScriptedBackend,
    default_prompt,
)
from reasoning.compose import build
from reasoning.strategies import PDR, SequentialRefinement
from reasoning.strategies.pdr import REFINE_PROMPT, SUMMARY_PROMPT
from reasoning.strategy import request_seed

PROBLEM = Problem("p", "2+2?", answer="4")
PROMPT = default_prompt(PROBLEM.without_gold())
QUESTION = PROMPT[0].content


def with_workspace(workspace: str) -> tuple[Message, ...]:
    """The prompt of a round after the first: the workspace after the problem's text."""
    return (Message("user", f"{QUESTION}\n\n{REFINE_PROMPT.replace('{workspace}', workspace)}"),)


def scripted(drafts: list[str], summaries: list[str] = (), **kwargs: object) -> ScriptedBackend:  # type: ignore[assignment]
    """Drafts in turn; summaries in turn for summary requests."""
    said = {"draft": 0, "summary": 0}

    def reply(request: Request, _: int) -> str:
        kind = "summary" if "Summarize the attempts" in request.messages[-1].content else "draft"
        texts = summaries if kind == "summary" else drafts
        said[kind] += 1
        return texts[(said[kind] - 1) % len(texts)]

    return ScriptedBackend(reply, **kwargs)  # type: ignore[arg-type]


async def test_summary_rounds_send_n_drafts_then_a_bounded_summary() -> None:
    drafts = [
        "a \\boxed{5}",
        "b b \\boxed{4}",
        "c \\boxed{4}",
        "d \\boxed{4}",
        "e \\boxed{6}",
        "f \\boxed{4}",
    ]
    drafts.append("final \\boxed{4}")
    summaries = ["one two three four five six seven eight nine \\boxed{9}", "s t \\boxed{4}"]
    backend = scripted(drafts, summaries)
    run = await Controller(backend).run(PROBLEM, PDR(rounds=3, drafts=3, workspace_tokens=8))

    requests = backend.requests
    assert [r.sampling.n for r in requests] == [3, 1, 3, 1, 1]
    assert [r.sampling.max_tokens for r in requests] == [512, 8, 512, 8, 512]
    assert all(r.sampling.logprobs is None for r in requests)
    assert requests[0].messages == PROMPT
    attempts = "Attempt 1:\na \\boxed{5}\n\nAttempt 2:\nb b \\boxed{4}\n\nAttempt 3:\nc \\boxed{4}"
    summary_prompt = SUMMARY_PROMPT.replace("{count}", "3").replace("{attempts}", attempts)
    assert requests[1].messages == (Message("user", f"{QUESTION}\n\n{summary_prompt}"),)
    first = "one two three four five six seven eight "  # cut at workspace_tokens = 8
    assert requests[2].messages == with_workspace(first)
    assert requests[4].messages == with_workspace("s t \\boxed{4}")

    rounds = [(c.scores["round"], c.scores.get("draft"), c.answer) for c in run.candidates]
    assert rounds == [
        (1.0, 0.0, "5"),
        (1.0, 1.0, "4"),
        (1.0, 2.0, "4"),
        (1.0, None, None),  # the summary holds \boxed{9} cut off, and never answers anyway
        (2.0, 0.0, "4"),
        (2.0, 1.0, "6"),
        (2.0, 2.0, "4"),
        (2.0, None, None),
        (3.0, 0.0, "4"),
    ]
    assert run.candidates[3].scores["summary"] == 1.0 and run.candidates[3].output_tokens == 8
    assert [c.scores.get("workspace_tokens_used") for c in run.candidates[-2:]] == [None, 3.0]
    assert run.chosen == 8 and run.answer == "4"
    # One request per round, one per summary, one after another: each adds its longest sample.
    assert run.usage["sequential_tokens"] == 3 + 8 + 2 + 3 + 2
    assert run.usage["output_tokens"] == 2 + 3 + 2 + 8 + 2 + 2 + 2 + 3 + 2


def lowest_first(logprobs: list[float]) -> Callable[[int, int], float]:
    """Every token of sample `number` has log-probability ``logprobs[number]``."""
    return lambda number, _: logprobs[number % len(logprobs)]


async def test_top_k_keeps_the_most_confident_drafts_ends_token_exact() -> None:
    drafts = ["p q \\boxed{3}", "a b c d e \\boxed{1}", "r \\boxed{2}", "x \\boxed{3}", "final \\boxed{1}"]
    backend = scripted(drafts, token_logprob=lowest_first([-0.5, -0.1, -0.9, -0.2, -0.3]))
    strategy = PDR(rounds=2, drafts=4, distill="top-k", k=2, workspace_tokens=6)
    run = await Controller(backend).run(PROBLEM, strategy)

    assert [(r.sampling.n, r.sampling.logprobs) for r in backend.requests] == [(4, 0), (1, 0)]
    # Drafts 2 and 4 are the most confident; 3 tokens each: draft 2 is cut to its last 3.
    assert backend.requests[1].messages == with_workspace(
        "Attempt 2:\n...d e \\boxed{1}\n\nAttempt 4:\nx \\boxed{3}"
    )
    assert run.candidates[-1].scores["workspace_tokens_used"] == 3 + 2 <= 6
    assert run.answer == "1" and run.chosen == 4 and len(run.candidates) == 5


async def test_top_k_by_the_verifier_keeps_the_answered_drafts() -> None:
    drafts = ["no answer here", "so \\boxed{2}", "none either", "so \\boxed{4}", "\\boxed{4}"]
    backend = scripted(drafts)
    run = await Controller(backend).run(PROBLEM, PDR(rounds=2, drafts=4, distill="top-k", score="verifier"))
    assert backend.requests[1].messages == with_workspace(
        "Attempt 2:\nso \\boxed{2}\n\nAttempt 4:\nso \\boxed{4}"
    )
    assert run.answer == "4"


async def test_random_k_draws_its_drafts_from_the_context_rng() -> None:
    drafts = [
        "w0 \\boxed{0}",
        "w1 \\boxed{1}",
        "w2 \\boxed{2}",
        "w3 \\boxed{3}",
        "w4 \\boxed{4}",
        "end \\boxed{4}",
    ]
    backend = scripted(drafts)
    ctx = Context(PROBLEM.without_gold(), PROMPT, backend, Meter(Budget()), rng=np.random.default_rng(11))
    result = await PDR(rounds=2, drafts=6, distill="random", k=3)(PROBLEM.without_gold(), ctx)
    kept = sorted(np.random.default_rng(11).choice(6, size=3, replace=False).tolist())
    workspace = "\n\n".join(f"Attempt {j + 1}:\n{drafts[j]}" for j in kept)
    assert backend.requests[1].messages == with_workspace(workspace)
    assert result.candidates[-1].scores["workspace_tokens_used"] == 2 * 3


async def test_drafts_per_round_and_a_final_vote_over_the_last_round_only() -> None:
    drafts = ["\\boxed{5}"] * 5 + ["\\boxed{5}"] * 2 + ["a \\boxed{7}", "b \\boxed{8}", "c \\boxed{7}"]
    backend = scripted(drafts)
    strategy = STRATEGIES.create(
        "pdr", {"rounds": 3, "drafts": ["5", "2"], "final_drafts": 3, "distill": "top-k"}
    )
    run = await Controller(backend).run(PROBLEM, strategy)
    assert [r.sampling.n for r in backend.requests] == [5, 2, 3]
    # Seven earlier drafts answer 5; only the last round votes: 7 wins, its first draft chosen.
    assert run.answer == "7" and run.chosen == 7


async def test_inner_drafts_are_concurrent_runs_in_distinct_derived_scopes() -> None:
    texts = {"/r1d0": ["no answer", "aa bb cc dd"], "/r1d1": ["w \\boxed{4}", "v \\boxed{5}"]}
    texts["/r2d0"] = ["\\boxed{4}", "late \\boxed{9}"]
    seeds = {request_seed(0, "p" + scope, 1): scope for scope in texts}
    sent = dict.fromkeys(texts, 0)

    def reply(request: Request, _: int) -> str:  # each scope's samples in turn
        scope = seeds[request.sampling.seed or 0]
        sent[scope] += 1
        return texts[scope][sent[scope] - 1]

    backend = ScriptedBackend(reply)
    spec = "pdr(rounds=2, drafts=2, distill=top-k, score=verifier, workspace_tokens=4, inner=sc(n=2))"
    run = await Controller(backend, seed=0).run(PROBLEM, build(spec))

    assert sorted(seeds[r.sampling.seed or 0] for r in backend.requests) == ["/r1d0", "/r1d1", "/r2d0"]
    assert all(r.sampling.n == 2 for r in backend.requests)
    # Each draft is its run's chosen candidate (the vote's; no answer: its last), 2 tokens of it
    # kept, cut at the same fraction of its characters (an inner run returns no tokens).
    assert backend.requests[-1].messages == with_workspace("Attempt 1:\n...cc dd\n\nAttempt 2:\nw \\boxed{4}")
    marks = [(c.scores["round"], c.scores["draft"], c.text) for c in run.candidates]
    assert marks == [
        (1.0, 0.0, "no answer"),
        (1.0, 0.0, "aa bb cc dd"),
        (1.0, 1.0, "w \\boxed{4}"),
        (1.0, 1.0, "v \\boxed{5}"),
        (2.0, 0.0, "\\boxed{4}"),
        (2.0, 0.0, "late \\boxed{9}"),
    ]
    assert run.candidates[4].scores["workspace_tokens_used"] == 4.0
    assert run.answer == "4" and run.chosen == 4


async def test_sr_rewrites_its_one_previous_answer_each_round() -> None:
    drafts = ["first try \\boxed{5}", "second \\boxed{4}", "third \\boxed{4}"]
    backend = scripted(drafts)
    run = await Controller(backend).run(PROBLEM, SequentialRefinement(rounds=3))
    assert [(r.sampling.n, r.sampling.logprobs) for r in backend.requests] == [(1, 0)] * 3
    assert [r.messages for r in backend.requests] == [
        PROMPT,
        with_workspace("Attempt 1:\nfirst try \\boxed{5}"),
        with_workspace("Attempt 1:\nsecond \\boxed{4}"),
    ]
    assert [c.scores["round"] for c in run.candidates] == [1.0, 2.0, 3.0]
    assert run.chosen == 2 and run.answer == "4"
    assert STRATEGIES.get("sequential-refinement") is SequentialRefinement


async def test_sr_keeps_the_end_of_a_long_answer() -> None:
    backend = scripted(["a b c d \\boxed{5}", "\\boxed{4}"])
    await Controller(backend).run(PROBLEM, SequentialRefinement(rounds=2, workspace_tokens=2))
    assert backend.requests[1].messages == with_workspace("Attempt 1:\n...d \\boxed{5}")


@pytest.mark.parametrize(
    "params",
    [
        {"rounds": 0},
        {"drafts": 0},
        {"final_drafts": 0},
        {"k": 0},
        {"rounds": 2, "drafts": [2, 2]},
        {"workspace_tokens": 1, "k": 2},
        {"distill": "best"},
        {"score": "length"},
        {"refine_prompt": "improve it"},
        {"summary_prompt": "summarize"},
        {"inner": "no-such-strategy"},
    ],
)
def test_bad_parameters_are_config_errors(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        STRATEGIES.create("pdr", params)


@pytest.mark.parametrize("params", [{"drafts": 2}, {"final_drafts": 2}, {"k": 2}, {"rounds": 0}])
def test_sr_has_one_draft_per_round(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        STRATEGIES.create("sr", params)


def test_direct_construction_checks_too() -> None:
    with pytest.raises(ConfigError, match="distill"):
        PDR(distill="best")  # type: ignore[arg-type]
    assert PDR(rounds=3, drafts=[4, 2]).drafts == (4, 2)  # type: ignore[arg-type]


async def test_a_budget_stop_votes_over_the_latest_finished_round_not_the_summary() -> None:
    backend = scripted(["\\boxed{4}", "\\boxed{5}", "none"], ["they say \\boxed{5}"])
    run = await Controller(backend, budget=Budget(calls=2)).run(PROBLEM, PDR(rounds=2, drafts=3))
    assert run.stop_reason == "budget:calls" and len(backend.requests) == 2
    assert run.answer == "4" and run.chosen == 0  # 4 and 5 tie among the drafts; the summary has no vote


def test_needs_hidden_states_follows_the_inner_strategy() -> None:
    assert build("pdr(inner=early-exit(probe=p.json))").needs_hidden_states  # type: ignore[attr-defined]
    assert not PDR().needs_hidden_states
