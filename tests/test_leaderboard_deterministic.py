"""Deterministic leaderboards (``deterministic: true``): the spec, the cell key, the runner, replay,
the report and the command, on scripted backends (the mode itself: tests/test_deterministic.py).

The mechanism is asserted: a deterministic board sends one request at a time on each engine,
empties the prefix cache before each problem, records ``deterministic`` in every row, keys its
cells apart from a batched board's, and repeats its rows on a re-run.
"""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke
from rich.console import Console

import reasoning.strategies  # noqa: F401
from reasoning import ScriptedBackend
from reasoning.backend import AdmitsAtOnce, Chunk, Request
from reasoning.errors import ConfigError
from reasoning.evals.datasets import load_dataset
from reasoning.evals.leaderboard.replay import ReplayBackend
from reasoning.evals.leaderboard.report import collect, markdown
from reasoning.evals.leaderboard.runner import run_leaderboard
from reasoning.evals.leaderboard.spec import LeaderboardSpec
from reasoning.evals.leaderboard.store import Store
from reasoning.record import without_clock

GOLD = [p.answer for p in load_dataset("gsm8k", limit=4)]
ENTRIES = [
    {"name": "greedy", "strategy": "single"},
    {"name": "sc", "strategy": "self-consistency", "params": {"n": 3}},
]


def board(tmp_path: Path, name: str = "d", **overrides: Any) -> LeaderboardSpec:
    data: dict[str, Any] = {
        "name": name,
        "store": str(tmp_path / f"{name}.sqlite"),
        "models": {"s": {"kind": "scripted"}},
        "datasets": {"g": {"name": "gsm8k", "limit": 4}},
        "entries": ENTRIES,
    }
    return LeaderboardSpec.model_validate(data | overrides)


def answers(request: Request, sample: int) -> str:
    """The gold answer of the problem asked, on every other sample."""
    text = request.messages[-1].content
    for i, problem in enumerate(load_dataset("gsm8k", limit=4)):
        if problem.question in text:
            return f"s{sample} so \\boxed{{{GOLD[i] if sample % 2 == 0 else '-1'}}}"
    return "so \\boxed{0}"


def scripted() -> ScriptedBackend:
    return ScriptedBackend(answers, seconds_per_token=0.001)


def quiet() -> Console:
    return Console(file=io.StringIO())


def solve(spec: LeaderboardSpec, backend: ScriptedBackend) -> dict[str, list[dict[str, Any]]]:
    """Run `spec` on `backend`; every cell's records by label, without the clock's fields."""
    with Store.open(spec.store_path) as store:
        run_leaderboard(spec, store, lambda model, hidden: backend, console=quiet())
        return {
            c.label: [without_clock(store.record(c.key, r.problem_id, r.seed)) for r in store.results(c.key)]
            for c in spec.cells()
        }


def texts(row: dict[str, Any]) -> list[str]:
    return [c["text"] for c in row["candidates"]]


# -- the spec -----------------------------------------------------------------------------------------


def test_deterministic_is_off_by_default_and_keys_its_cells_apart(tmp_path: Path) -> None:
    batched, explicit, reproducible = (
        board(tmp_path),
        board(tmp_path, deterministic=False),
        board(tmp_path, deterministic=True),
    )
    assert batched.deterministic is False and reproducible.deterministic is True
    keys = [[c.key for c in spec.cells()] for spec in (batched, explicit, reproducible)]
    assert keys[0] == keys[1]  # off leaves every existing key as it was
    assert not set(keys[0]) & set(keys[2])  # on is another cell: its rows never mix with batched ones
    cell = reproducible.cells()[0]
    assert cell.identity(reproducible)["deterministic"] is True
    assert "deterministic" not in batched.cells()[0].identity(batched)


def test_a_server_model_is_refused_by_name(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/v1"
    with pytest.raises(ConfigError, match=r"deterministic.*'served' \(http://127\.0\.0\.1:9/v1\).*server"):
        board(tmp_path, deterministic=True, models={"s": {"kind": "scripted"}, "served": url})
    group = {"backends": {"draft": {"kind": "scripted"}, "target": url}}
    with pytest.raises(ConfigError, match=r"'pair' \(http://127\.0\.0\.1:9/v1\)"):
        board(tmp_path, deterministic=True, models={"pair": group})
    board(tmp_path, models={"served": url})  # fine without deterministic


# -- the runner ---------------------------------------------------------------------------------------


def test_a_deterministic_board_solves_one_problem_at_a_time_from_an_empty_cache(tmp_path: Path) -> None:
    batched_engine, engine = scripted(), scripted()
    batched = solve(board(tmp_path, "b"), batched_engine)
    spec = board(tmp_path, deterministic=True)
    rows = solve(spec, engine)
    assert batched_engine.peak_streaming > 1, "the batched board should overlap requests"
    assert engine.peak_streaming == 1
    assert engine.prefix_resets == 8  # two entries x four problems, each started cold
    assert [r.sampling.n for r in engine.requests] == [1] * (4 + 4 * 3)  # sc's samples one by one
    assert all(row["deterministic"] for cell in rows.values() for row in cell)
    assert not any(row["deterministic"] for cell in batched.values() for row in cell)
    with Store.open(spec.store_path) as store:
        assert {c.identity["deterministic"] for c in store.cells()} == {True}


def test_a_deterministic_board_repeats_its_rows(tmp_path: Path) -> None:
    first = solve(board(tmp_path, "one", deterministic=True), scripted())
    again = solve(board(tmp_path, "two", deterministic=True), scripted())
    assert first == again and len(first["sc"]) == 4


class AtOnce(ScriptedBackend):
    """A scripted engine that admits a request's samples in one step (`AdmitsAtOnce`)."""

    def __init__(self) -> None:
        super().__init__(answers, seconds_per_token=0.001)
        self.at_once: list[Request] = []

    def stream_at_once(self, request: Request) -> AsyncGenerator[Chunk, None]:
        self.at_once.append(request)
        return self.stream(request)


def test_an_engine_that_admits_samples_at_once_gets_each_request_whole(tmp_path: Path) -> None:
    engine = AtOnce()
    solve(board(tmp_path, deterministic=True), engine)
    assert engine.peak_streaming == 1
    assert [r.sampling.n for r in engine.at_once] == [3] * 4


# -- selection over stored samples --------------------------------------------------------------------

OVER = [
    {"name": "sc", "strategy": "self-consistency", "params": {"n": 3}},
    {"name": "vote", "strategy": "best-of-n", "over": "sc", "params": {"n": 3, "selector": "majority"}},
]


@pytest.mark.parametrize("make", [scripted, AtOnce], ids=["one-by-one", "at-once"])
def test_a_selection_over_stored_samples_replays_them_deterministically(tmp_path: Path, make: Any) -> None:
    engine = make()
    spec = board(tmp_path, deterministic=True, entries=OVER)
    rows = solve(spec, engine)
    assert [texts(row) for row in rows["vote"]] == [texts(row) for row in rows["sc"]]
    assert all(row["deterministic"] for row in rows["vote"])
    sampled = [r for r in engine.requests if r.sampling.temperature > 0]
    assert sum(r.sampling.n for r in sampled) == 4 * 3  # the source's samples only: the vote decodes none
    assert engine.peak_streaming == 1


def test_replay_offers_admission_at_once_only_where_its_engine_does(tmp_path: Path) -> None:
    spec = board(tmp_path, deterministic=True, entries=OVER)
    solve(spec, scripted())
    with Store.open(spec.store_path) as store:
        source = store.record(spec.cells()[0].key, "gsm8k-0", 0)
    assert not isinstance(ReplayBackend(scripted(), source, "sc"), AdmitsAtOnce)
    engine = AtOnce()
    replay = ReplayBackend(engine, source, "sc")
    assert isinstance(replay, AdmitsAtOnce)  # never the engine's own: the stored samples come first
    assert replay.stream_at_once != engine.stream_at_once


# -- the report and the command -----------------------------------------------------------------------


def test_the_report_says_which_cells_are_deterministic(tmp_path: Path) -> None:
    spec = board(tmp_path, deterministic=True)
    solve(spec, scripted())
    batched = board(tmp_path, "b")
    solve(batched, scripted())
    with Store.open(spec.store_path) as store:
        assert "Deterministic (every cell)" in markdown(collect(spec, store))
    with Store.open(batched.store_path) as store:
        assert "Deterministic" not in markdown(collect(batched, store))


def test_the_command_refuses_ray_replicas_before_any_compute(tmp_path: Path) -> None:
    config = tmp_path / "board.yaml"
    config.write_text(
        "name: d\ndeterministic: true\nmodels: {s: {kind: scripted}}\n"
        "datasets: {g: {name: gsm8k, limit: 1}}\nentries: [{strategy: single}]\n"
    )
    store = tmp_path / "d.sqlite"
    code, output = invoke("leaderboard", "run", str(config), "--store", str(store), "--ray", "auto")
    text = " ".join(output.split())
    assert code != 0 and "--ray" in text and "deterministic: true" in text and "Traceback" not in text
    assert not store.exists()
    code, output = invoke("leaderboard", "run", str(config), "--store", str(store))
    assert code == 0, output
    assert "leaderboard d: 1 cell (entries x datasets x models), 1 seed(s), 1 problem runs" in output
    with Store.open(store) as opened:
        [cell] = opened.cells()
        [row] = opened.results(cell.key)
        assert opened.record(cell.key, row.problem_id, 0).deterministic
