"""Advice: the best entry under a budget, the held-out pick, and per-difficulty-bin allocation."""

from __future__ import annotations

import io
import statistics
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import reasoning.strategies  # noqa: F401
from reasoning import ScriptedBackend
from reasoning.errors import ConfigError, DatasetError
from reasoning.evals.datasets import load_dataset
from reasoning.evals.leaderboard.advise import advise, difficulty_scores, split
from reasoning.evals.leaderboard.runner import run_leaderboard
from reasoning.evals.leaderboard.spec import LeaderboardSpec
from reasoning.evals.leaderboard.store import Store
from reasoning.evals.leaderboard.summary import summarize

PROBLEMS = load_dataset("gsm8k", limit=80)
MEDIAN = statistics.median(len(p.question.split()) for p in PROBLEMS)


def reply(request: Any, sample: int) -> str:
    """One sample is right on short questions only; four samples are right everywhere."""
    text = request.messages[-1].content
    problem = next(p for p in PROBLEMS if p.question in text)
    short = len(problem.question.split()) <= MEDIAN
    right = short or request.sampling.n == 4
    return f"so \\boxed{{{problem.answer if right else '-1'}}}"


def stored(tmp_path: Path) -> tuple[Any, Any, dict[str, Any]]:
    spec = LeaderboardSpec.model_validate(
        {
            "name": "a",
            "store": str(tmp_path / "a.sqlite"),
            "models": {"s": {"kind": "scripted"}},
            "datasets": {"g": {"name": "gsm8k", "limit": 80}},
            "entries": [
                {"name": "one", "strategy": "single"},
                {"name": "four", "strategy": "sc", "params": {"n": 4}},
            ],
        }
    )
    store = Store.open(spec.store_path)
    run_leaderboard(spec, store, lambda m, h: ScriptedBackend(reply), console=Console(file=io.StringIO()))
    cells = store.cells([c.key for c in spec.cells()])
    stats = summarize(store, cells, {}, spec.price)
    rows = {c.key: store.results(c.key) for c in cells}
    store.close()
    return spec, stats, rows


def test_best_within_budget_and_held_out_pick(tmp_path: Path) -> None:
    _, stats, rows = stored(tmp_path)
    one, four = stats
    assert one.output_tokens == 2 and four.output_tokens == 8
    assert four.accuracy == 1.0 and 0.3 < one.accuracy < 0.7
    [roomy] = advise(stats, rows, budget_tokens=10)
    assert (
        roomy.best is four and roomy.runner_up is one and roomy.p_value is not None and roomy.p_value < 0.01
    )
    assert roomy.held_out is not None and roomy.held_out[:2] == ("four [s]", 1.0)
    [tight] = advise(stats, rows, budget_tokens=5)
    assert tight.best is one and tight.candidates == ["one [s]"] and tight.allocation is None
    [none] = advise(stats, rows, budget_tokens=1)
    assert none.best is None and none.held_out is None


def test_allocation_by_difficulty_beats_the_best_fixed_entry_on_held_out_problems(tmp_path: Path) -> None:
    _, stats, rows = stored(tmp_path)
    difficulty = difficulty_scores("length", PROBLEMS)
    [advice] = advise(stats, rows, budget_tokens=5.5, difficulty=difficulty, bins=2)
    allocation = advice.allocation
    assert allocation is not None
    assert allocation.chosen == ["four [s]", "one [s]"]  # hard (long) bin first: four samples; easy bin: one
    assert allocation.fixed == "one [s]"  # four samples everywhere does not fit 5.5 tokens
    assert allocation.accuracy > 0.9 and allocation.tokens <= 6.5
    assert allocation.gain > 0.3 and allocation.low > 0 and allocation.p_value < 0.01
    held = [p.id for p in PROBLEMS if not split(p.id)]
    assert allocation.problems == len(held)
    # without room for the expensive entry anywhere, both are the single sample
    [cheap] = advise(stats, rows, budget_tokens=2.5, difficulty=difficulty, bins=2)
    assert cheap.allocation is None or cheap.allocation.chosen == ["one [s]", "one [s]"]


def test_difficulty_sources_and_errors(tmp_path: Path) -> None:
    scores = tmp_path / "d.jsonl"
    scores.write_text('{"id": "a", "score": 0.2}\n{"id": "b", "score": 0.9}\n')
    assert difficulty_scores(str(scores), []) == {"a": 0.2, "b": 0.9}
    table = tmp_path / "d.csv"
    table.write_text("id,score\na,1\nb,2.5\n")
    assert difficulty_scores(str(table), []) == {"a": 1.0, "b": 2.5}
    table.write_text("id,score\na,high\n")
    with pytest.raises(DatasetError, match="d.csv:2"):
        difficulty_scores(str(table), [])
    with pytest.raises(ConfigError, match="length"):
        difficulty_scores("probe.bin", [])
    with pytest.raises(DatasetError, match="does not exist"):
        difficulty_scores(str(tmp_path / "missing.jsonl"), [])
    with pytest.raises(ConfigError, match="budget"):
        advise([], {}, budget_tokens=0)
