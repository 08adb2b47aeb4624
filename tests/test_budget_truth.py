"""Budgets, votes and records that tell the truth (issue 26, items 1-4).

* Concurrent calls share what is left instead of starving each other: a budget that pays for
  some work gets it, and a call that finds nothing left waits for calls in flight to give back
  what they did not decode (never when that could wait on itself).
* A sample cut short does not vote with the last number of its cut text.
* The record says when the budget shortened the samples, and never ``done`` without an answer.
* A budget stop keeps every sample that started, with its partial text and tokens.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

import reasoning.strategies  # noqa: F401  (registers the built-in strategies)
from reasoning import (
    Budget,
    Context,
    Controller,
    Message,
    Problem,
    Request,
    Result,
    Run,
    Sampling,
    ScriptedBackend,
)
from reasoning.budget import Ledger, Meter
from reasoning.compose import build
from reasoning.errors import BudgetExhausted

PROBLEM = Problem("p", "What is 2+2?", "4")
LONG = "w " * 300 + "\\boxed{4}"
"""A 301-token solution whose answer comes at the very end."""
COUNTING = " ".join(f"w{i}" for i in range(400))
"""A text of numbered words: its last number is wherever it was cut."""


def run(
    spec: str, budget: Budget, text: str = LONG, seconds_per_token: float = 0.0, **options: object
) -> tuple[ScriptedBackend, Run]:
    backend = ScriptedBackend([text], seconds_per_token=seconds_per_token)
    return backend, Controller(backend, **options).run_sync(PROBLEM, build(spec), budget)  # type: ignore[arg-type]


# -- 1. concurrent inner runs share the budget --------------------------------------------------


def test_concurrent_inner_runs_get_fair_shares_instead_of_starving() -> None:
    # Each inner `single` asks for 512 tokens; four of them under 1,500 used to hold 512 + 512 +
    # 476 and refuse the fourth, stopping the run with nothing decoded. Now each gets 375.
    backend, composed = run("self-consistency(n=4, inner=single)", Budget(output_tokens=1500))
    _, plain = run("self-consistency(n=4)", Budget(output_tokens=1500))
    assert [r.sampling.max_tokens for r in backend.requests] == [375] * 4
    assert composed.answer == plain.answer == "4" and composed.stop_reason == plain.stop_reason == "done"
    assert composed.usage["output_tokens"] == plain.usage["output_tokens"] == 4 * 301


def test_a_nested_composition_decodes_within_its_budget() -> None:
    # Through the proxy this returned an empty 200 with 0 tokens: 4 first-finish(n=4) runs
    # under 4,000 tokens. 16 samples share it: 250 each, all cut before the answer.
    backend, record = run("self-consistency(n=4, inner=first-finish(n=4))", Budget(output_tokens=4000))
    assert {r.sampling.max_tokens for r in backend.requests} == {250}
    assert 0 < record.usage["output_tokens"] <= 4000
    assert len(record.candidates) == 16 and record.answer is None
    assert record.stop_reason == "budget:output_tokens"  # the budget, not the strategy, cut them


@dataclass(frozen=True)
class LateSecond:
    """Two branches: a long call at once, a second one a moment later (the budget is all held)."""

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        async def first() -> list[object]:
            return list(await ctx.generate(ctx.request(Sampling(max_tokens=100))))

        async def second() -> list[object]:
            await asyncio.sleep(0.01)
            return list(await ctx.generate(ctx.request(Sampling(max_tokens=100))))

        await ctx.run_all(first(), second())
        return Result.vote(await ctx.candidates(ctx.completions))


def test_a_call_that_finds_the_budget_held_waits_for_it_instead_of_stopping_the_run() -> None:
    backend = ScriptedBackend(["a b c d e f g h i \\boxed{4}"], seconds_per_token=0.002)
    record = Controller(backend).run_sync(PROBLEM, LateSecond(), Budget(output_tokens=100))  # type: ignore[arg-type]
    # The first call held all 100 and decoded 10; the second waited and got the 90 left.
    assert [r.sampling.max_tokens for r in backend.requests] == [100, 90]
    assert record.stop_reason == "done" and record.usage["output_tokens"] == 20


@dataclass(frozen=True)
class HoldsAndAsks:
    """Keeps its own trace open and asks for more (in its task, then in a child): must not hang."""

    child: bool

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        async with ctx.trace(ctx.request(Sampling(max_tokens=100))) as trace:
            async for _ in trace:
                more = ctx.generate(ctx.request(Sampling(max_tokens=10)))
                await (ctx.run_all(more) if self.child else more)
        return Result(None)


@pytest.mark.parametrize("child", [False, True])
def test_a_call_never_waits_on_a_reservation_its_own_task_or_its_parent_holds(child: bool) -> None:
    backend = ScriptedBackend(["a b c d e"], seconds_per_token=0.001)

    async def go() -> str:
        with anyio.fail_after(10):  # a deadlock would hang here
            record = await Controller(backend).run(PROBLEM, HoldsAndAsks(child), Budget(output_tokens=100))
        return record.stop_reason

    assert anyio.run(go) == "budget:output_tokens"
    assert [r.sampling.max_tokens for r in backend.requests] == [100]


def test_the_ledger_refuses_at_once_when_nothing_is_held() -> None:
    async def go() -> None:
        ledger = Ledger(Meter(Budget(output_tokens=5)))
        charge = await ledger.admit(_request(5))
        charge.settle(5)
        with anyio.fail_after(5), pytest.raises(BudgetExhausted):
            await ledger.admit(_request(5))

    anyio.run(go)


def _request(max_tokens: int) -> Request:
    return Request((Message("user", "hi"),), Sampling(max_tokens=max_tokens))


# -- 2 and 3. cut samples do not vote with a stray number; the record says why -------------------


def test_samples_the_budget_cut_do_not_vote_with_their_last_number_and_the_record_says_so() -> None:
    # Four samples cut to 150 tokens each used to vote "149" (from "... w148 w149") as "done".
    _, record = run("self-consistency(n=4)", Budget(output_tokens=600), text=COUNTING)
    assert [c.finish_reason for c in record.candidates] == ["length"] * 4
    assert [c.output_tokens for c in record.candidates] == [150] * 4
    assert record.answer is None and all(c.answer is None for c in record.candidates)
    assert record.stop_reason == "budget:output_tokens"
    assert record.usage["clamped_samples"] == 4 and record.usage["clamped_calls"] == 1


def test_a_sample_cut_by_its_own_max_tokens_has_no_answer_unless_the_caller_opts_in() -> None:
    # "17*23 = 391" cut after "17*23 =" used to answer "23".
    _, record = run("single(max_tokens=3)", Budget(), text="17 *23 = 391")
    assert record.candidates[0].finish_reason == "length" and record.answer is None
    assert record.stop_reason == "no_answer"  # not the budget's doing: its own max_tokens
    _, record = run("single(max_tokens=3)", Budget(), text="17 *23 = 391", truncated_answers="any")
    assert record.answer == "23" and record.stop_reason == "done"


def test_a_cut_sample_keeps_an_answer_it_wrote_out_in_full() -> None:
    _, record = run("single(max_tokens=4)", Budget(), text="so \\boxed{12} and then some more")
    assert record.candidates[0].finish_reason == "length" and record.answer == "12"
    _, record = run("single(max_tokens=6)", Budget(), text="The answer is 30.\nCheck: 3 * 10 = 30")
    assert record.answer == "30"
    _, record = run("single(max_tokens=3)", Budget(), text="The answer is 30 because")  # "is 3" of "30"?
    assert record.answer is None


def test_a_run_that_ends_without_an_answer_never_says_done() -> None:
    _, record = run("self-consistency(n=2)", Budget(), text="I do not know")
    assert record.answer is None and record.stop_reason == "no_answer"


# -- 4. a budget stop keeps what was decoded ----------------------------------------------------


def test_a_wall_clock_stop_records_every_started_sample_with_its_partial_text() -> None:
    backend, record = run("self-consistency(n=4)", Budget(seconds=0.2), seconds_per_token=0.01)
    assert record.stop_reason == "budget:seconds"
    assert len(record.candidates) == 4 and {c.finish_reason for c in record.candidates} == {"cancelled"}
    assert all(c.text and c.output_tokens for c in record.candidates)
    decoded = sum(c.output_tokens for c in record.candidates)
    assert (
        decoded == record.usage["output_tokens"] == record.usage["cancelled_tokens"] == backend.decoded_tokens
    )


def test_a_budget_stop_inside_a_composition_keeps_the_branches_partial_samples() -> None:
    _, record = run("self-consistency(n=3, inner=single)", Budget(seconds=0.2), seconds_per_token=0.01)
    assert record.stop_reason == "budget:seconds"
    assert len(record.candidates) == 3 and all(c.text and c.output_tokens for c in record.candidates)
    assert sum(c.output_tokens for c in record.candidates) == record.usage["output_tokens"]


def test_solve_takes_the_truncated_answers_choice_and_records_it(tmp_path: Path) -> None:
    from conftest import invoke

    data = tmp_path / "cut.jsonl"
    data.write_text(json.dumps({"question": "17*23?", "answer": "391"}) + "\n")
    base = ["solve", "--dataset", str(data), "--backend", "scripted", "--script", "17 *23 = 391"]
    for choice, answer, stop in ((None, None, "no_answer"), ("any", "23", "done")):
        out = tmp_path / f"{choice}.jsonl"
        flags = ["-s", "single(max_tokens=3)", "--output", str(out)]
        code, text = invoke(*base, *flags, *(["--truncated-answers", choice] if choice else []))
        assert code == 0, text
        row = json.loads(out.read_text())
        assert (row["answer"], row["stop_reason"], row["spec"]["truncated_answers"]) == (
            answer,
            stop,
            choice or "written",
        )
    code, text = invoke(*base, "--output", str(tmp_path / "bad.jsonl"), "--truncated-answers", "last")
    assert code != 0 and "truncated_answers must be 'written' or 'any'" in text


SHORT = " ".join(["w"] * 10) + " so \\boxed{4}"
"""A 12-token solution."""


@pytest.mark.parametrize("budget", [Budget(calls=1), Budget(calls=2), Budget(prompt_tokens=17)])
def test_a_refused_branch_lets_the_calls_in_flight_finish_before_the_budget_stop(budget: Budget) -> None:
    # The first inner run's call fits; the others are refused on the call or prompt line. They
    # used to stop the run at once, cancelling it: nothing decoded, no answer.
    backend, record = run("self-consistency(n=4, inner=single)", budget, text=SHORT, seconds_per_token=0.002)
    assert record.stop_reason.startswith("budget:") and record.answer == "4"
    finished = [c for c in record.candidates if c.finish_reason == "stop"]
    assert finished and all(c.output_tokens == 12 for c in finished)
    assert record.usage["output_tokens"] == backend.decoded_tokens == 12 * len(finished)


@pytest.mark.parametrize(
    "spec", ["beam", "dvts", "particle-filtering", "pdr(rounds=2, drafts=2, inner=single)"]
)
def test_a_budget_stop_in_a_search_keeps_the_samples_it_cut(spec: str) -> None:
    # A search's best-so-far holds the paths it made; the expansions the stop cut are added.
    _, record = run(spec, Budget(seconds=0.08), text=SHORT, seconds_per_token=0.01)
    assert record.stop_reason == "budget:seconds"
    cut = [c for c in record.candidates if c.finish_reason == "cancelled"]
    assert cut and sum(c.output_tokens for c in cut) == record.usage["cancelled_tokens"] > 0


def test_a_branch_s_samples_so_far_include_those_of_the_runs_nested_in_it() -> None:
    # A composition's branch without a best-so-far of its own answers a budget stop with a vote
    # over its samples: those its nested runs (derived in turn) returned are its samples too.
    from reasoning.backend import Completion

    root = Context(PROBLEM, (Message("user", "q"),), ScriptedBackend(["x"]), Meter(Budget()))
    branch = root.derive("sc0")
    nested = branch.derive("round1")
    sample = Completion(0, "so \\boxed{4}", 4, "stop")
    nested.record([sample])
    assert root.own == branch.own == nested.own == [sample] and root.derive("sc1").own == []
    assert anyio.run(branch.samples_so_far).answer == "4"


@pytest.mark.parametrize(
    ("cut_text", "answer"),
    [
        ("Final Answer: 42\nmore words", "42"),
        ("**Answer:** 42\nmore", "42"),
        ("**Final Answer: 42**\nmore", "42"),
        ("The answer is 42. Then we", "42"),
        ("the answer is $42$ and", "42"),
        ("so \\boxed{42} and", "42"),
        ("#### 42\n", "42"),
        ("The answer is 42.", None),  # "42.5"?
        ("Answer: 4", None),  # "40"?
        ("so \\boxed{4", None),
        ("w1 w2 w148 w149", None),
    ],
)
def test_what_a_cut_text_states_in_full(cut_text: str, answer: str | None) -> None:
    from reasoning.answers import written_answer

    assert written_answer(cut_text) == answer


def test_reading_a_huge_answer_is_linear() -> None:
    # "aaaa...a1" made the unit-stripping regex of `normalize_answer` quadratic (4.8 s at 16k
    # characters, minutes at 200k): a model can write that, and a vote reads every answer.
    import threading

    from reasoning import normalize_answer

    huge = "a" * 200_000 + "1"
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(normalize_answer(huge)), daemon=True)
    reader.start()
    reader.join(timeout=60)  # a hang guard, not a speed check
    assert got == [huge]


def test_a_negative_seed_is_one_clear_error_before_anything_runs() -> None:
    from conftest import invoke

    from reasoning.errors import ConfigError

    with pytest.raises(ConfigError, match="seed must be an integer from 0"):
        Controller(ScriptedBackend(["x"]), seed=-1)
    code, text = invoke("solve", "--question", "1+1?", "--backend", "scripted", "--seed", "-1")
    assert code != 0 and "seed must be greater than or equal to 0" in " ".join(text.split())


def test_the_cut_is_the_tightest_line_s() -> None:
    async def go() -> tuple[int, int]:
        run_meter, draft = Meter(Budget(output_tokens=80)), Meter(Budget(output_tokens=30), line="draft.")
        ledger = Ledger(run_meter, {"draft": draft})
        charge = await ledger.admit(
            _request(100), "draft"
        )  # the run's line lowers it to 80, the draft's to 30
        assert charge.request.sampling.max_tokens == 30
        charge.settle(30, cut=1)
        return run_meter.usage.clamped_samples, draft.usage.clamped_samples

    assert anyio.run(go) == (0, 1)


def test_a_call_never_waits_on_a_reservation_whose_task_has_ended() -> None:
    # A stream left unclosed by a finished task holds its tokens until it is collected; waiting
    # on it would wait forever: the call is refused at once instead.
    async def go() -> None:
        ledger = Ledger(Meter(Budget(output_tokens=10)))
        await asyncio.create_task(ledger.admit(_request(10)))  # admitted, never settled, task ended
        with anyio.fail_after(5), pytest.raises(BudgetExhausted):
            await asyncio.create_task(ledger.admit(_request(10)))

    anyio.run(go)
