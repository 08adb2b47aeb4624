"""One spec grammar for strategies and their composition: CLI, YAML and Python agree."""

import json
from pathlib import Path

import pytest
from conftest import invoke

import reasoning.strategies
from reasoning import STRATEGIES, Budget, ConfigError, Controller, Problem, ScriptedBackend
from reasoning.compose import build, parse, spec_of
from reasoning.evals.leaderboard.spec import LeaderboardSpec
from reasoning.evals.spec import RunSpec
from reasoning.registry import params_of
from reasoning.strategies import BudgetForcing, FirstFinish, SelfConsistency, Single


def test_the_grammar_reads_nested_specs_lists_and_quoted_text() -> None:
    assert parse("single") == ("single", {})
    assert parse("single()") == ("single", {})
    assert parse("sc:n=3, temperature=0.5") == ("sc", {"n": "3", "temperature": "0.5"})
    assert parse(" pdr( rounds = 2 , inner = first-finish(n=4, max_tokens=8) , drafts=[4, 2]) ") == (
        "pdr",
        {"rounds": "2", "inner": "first-finish(n=4, max_tokens=8)", "drafts": ["4", "2"]},
    )
    assert parse('x(a="b, (c)", d=null, e="null")') == ("x", {"a": "b, (c)", "d": None, "e": "null"})
    assert parse("a(b=c(d=e(f=1)), g=2)") == ("a", {"b": "c(d=e(f=1))", "g": "2"})
    assert parse('a(b=c(d=")"))') == ("a", {"b": 'c(d=")")'})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sc(n=3", "expected ')', found the end at position 6"),
        ("sc(n)", "expected param=value, got 'n' without '='"),
        ("sc(n=3)x", "unexpected 'x' at position 7"),
        ("(n=3)", "expected a strategy name at position 0"),
        ("sc(n=1, n=2)", "parameter 'n' given twice"),
        ("sc(inner=single(n=1)", "expected ')', found the end"),
        ("sc(inner=single(n=1", "unclosed '('"),
        ("sc:n=2,inner=single(max_tokens=8)", "the flat form name:param=value cannot nest"),
        ('sc(a="b)', "expected '\"', found the end"),
        ("sc(=3)", "expected param=value, got ''"),
        ("nosuch(n=1)", "unknown strategy 'nosuch'"),
        ("sc(k=1)", "has no parameter 'k'; valid parameters: n, temperature, inner"),
        ("sc(n=x)", "bad parameter 'n'"),
        ("sc(inner=nosuch)", "unknown strategy 'nosuch'"),
        ("sc(inner=[1, 2])", "not a strategy"),
    ],
)
def test_a_bad_spec_is_one_clear_error_naming_where(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        build(text)
    assert message in str(info.value)


def test_every_strategy_round_trips_through_its_canonical_spec() -> None:
    built = 0
    for name in STRATEGIES.names():
        try:
            strategy = build(name)
        except ConfigError:  # needs an artefact (a probe, a calibration): given below
            if name != "atts":
                continue
            strategy = build("atts(calibration=c.json)")
        assert build(spec_of(strategy)) == strategy, name
        built += 1
    assert built >= 15
    odd = BudgetForcing(answer_cue='\n\nFinal: "\\boxed{', wait="Wait, (no)", max_tokens=9)
    assert build(spec_of(odd)) == odd  # quoted text survives: newlines, quotes, commas, parentheses


def test_cli_yaml_and_python_forms_build_the_same_composition() -> None:
    python = SelfConsistency(n=3, inner=BudgetForcing(max_tokens=64, extend=1))
    text = build("self-consistency(n=3, inner=budget-forcing(max_tokens=64, extend=1))")
    mapping = build(
        {
            "strategy": "sc",
            "params": {"n": 3, "inner": {"strategy": "s1", "params": {"max_tokens": 64, "extend": 1}}},
        }
    )
    strings = SelfConsistency(n=3, inner="budget-forcing(max_tokens=64,extend=1)")  # type: ignore[arg-type]
    assert python == text == mapping == strings
    assert params_of(python)["inner"] == "budget-forcing(extend=1, max_tokens=64)"
    with pytest.raises(ConfigError, match="'strategy'"):
        build({"name": "sc"})


async def test_self_consistency_over_an_inner_strategy_votes_the_runs_chosen_answers(
    problem: Problem,
) -> None:
    # Each first-finish race gets two samples; the first to finish wins and the other is cancelled.
    texts = iter(["\\boxed{4}", "slow \\boxed{9}"] * 3)
    backend = ScriptedBackend(lambda request, _: next(texts), seconds_per_token=[0.0, 0.01])
    strategy = build("self-consistency(n=3, inner=first-finish(n=2, max_tokens=16))")
    run = await Controller(backend, seed=7).run(problem, strategy)
    assert len(backend.requests) == 3 and all(r.sampling.n == 2 for r in backend.requests)
    seeds = [r.sampling.seed for r in backend.requests]
    assert len(set(seeds)) == 3  # each run in its own derived scope: its own seeds
    assert run.answer == "4"
    assert sorted(c.scores["path"] for c in run.candidates) == [0, 0, 1, 1, 2, 2]
    assert run.params["inner"] == "first-finish(n=2, max_tokens=16)"
    assert build(run.strategy, run.params) == strategy  # the record replays the composition
    # Replaying gives the same seeds, whatever order the runs sent in.
    again = ScriptedBackend(lambda request, _: "\\boxed{4}")
    await Controller(again, seed=7).run(problem, strategy)
    assert sorted(r.sampling.seed or 0 for r in again.requests) == sorted(s or 0 for s in seeds)


async def test_self_consistency_inner_runs_go_out_together(problem: Problem) -> None:
    backend = ScriptedBackend(["a \\boxed{1}", "b \\boxed{2}", "c \\boxed{2}"], seconds_per_token=0.001)
    run = await Controller(backend).run(problem, SelfConsistency(n=3, inner=Single(max_tokens=8)))
    assert run.answer == "2" and run.chosen in (1, 2)
    # Three single runs in flight at once: the critical path is one sample, not three.
    tokens = run.usage["output_tokens"]
    assert tokens == 3 * run.candidates[0].output_tokens and run.usage["sequential_tokens"] == tokens / 3
    assert not strategy_is_iid(run.params)


def strategy_is_iid(params: dict[str, object]) -> bool:
    return bool(build("sc", params).independent_samples)


def test_composed_strategies_declare_what_their_inner_steps_need() -> None:
    assert SelfConsistency().independent_samples and not SelfConsistency(inner=Single()).independent_samples
    early = build("self-consistency(n=2, inner=early-exit(probe=p.json))")
    assert early.needs_hidden_states and not SelfConsistency(inner=FirstFinish()).needs_hidden_states


def test_solve_takes_a_composed_spec_and_records_it(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    spec = "self-consistency(n=2, inner=budget-forcing(max_tokens=12, answer_tokens=4))"
    code, text = invoke(
        "solve", "--dataset", "gsm8k", "--limit", "1", "--backend", "scripted",
        "--script", "so \\boxed{18}", "-s", spec, "--output", str(out),
    )  # fmt: skip
    assert code == 0, text
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["strategy"] == "self-consistency"
    assert row["params"]["inner"] == "budget-forcing(answer_tokens=4, max_tokens=12)"
    assert row["spec"]["strategy"] == spec and row["answer"] == "18"
    # The summary shows the critical path beside the total: two traces side by side, one's length.
    total, critical = row["usage"]["output_tokens"], row["usage"]["sequential_tokens"]
    assert 0 < critical < total and f"sequential tokens (mean per problem) │ {critical}" in " ".join(
        text.split()
    )
    code, text = invoke("solve", "--question", "1+1?", "--backend", "scripted", "-s", "sc(n=2, inner=x(")
    assert code == 1 and "strategy spec" in text and "Traceback" not in text


def test_yaml_run_specs_and_leaderboards_take_nested_strategies() -> None:
    spec = RunSpec.model_validate(
        {
            "question": "q",
            "strategy": "sc",
            "params": {"inner": {"strategy": "single", "params": {"max_tokens": 8}}},
        }
    )
    assert build(spec.strategy, spec.params) == SelfConsistency(inner=Single(max_tokens=8))
    board = LeaderboardSpec.model_validate(
        {
            "name": "t",
            "models": {"m": "scripted"},
            "datasets": {"d": {"name": "gsm8k", "limit": 1}},
            "entries": [
                {"strategy": "self-consistency(n=2, inner=single(max_tokens=8))", "params": {"n": [2, 3]}}
            ],
        }
    )
    cells = board.cells()
    assert [c.label for c in cells] == ["self-consistency n=2", "self-consistency n=3"]
    assert cells[1].strategy == SelfConsistency(n=3, inner=Single(max_tokens=8))


def test_strategies_registry_loads_the_built_ins_on_first_lookup() -> None:
    assert "self-consistency" in STRATEGIES.names() and reasoning.strategies.SelfConsistency


async def test_a_budget_stop_inside_a_composition_asks_each_inner_run_for_its_best_so_far(
    problem: Problem,
) -> None:
    # Two budget-forced paths: thinking stops at "\boxed{", then the answer is decoded after it.
    # Three calls fit: one path finishes (thinking + answer), the other is stopped after thinking.
    backend = ScriptedBackend(lambda request, _: "so \\boxed{" if request.sampling.stop else "4} and 5")
    strategy = build("self-consistency(n=2, inner=budget-forcing(max_tokens=16, answer_tokens=4))")
    run = await Controller(backend, budget=Budget(calls=3)).run(problem, strategy)
    assert run.stop_reason == "budget:calls" and run.answer == "4"
    # The candidates are the paths' own (the stopped one unanswered), never the raw segments.
    assert sorted(c.scores["path"] for c in run.candidates) == [0.0, 1.0]
    assert [c.answer for c in run.candidates].count(None) == 1
    assert all("think_tokens" in c.scores or c.answer is None for c in run.candidates)
