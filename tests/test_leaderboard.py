"""Leaderboard runs: the spec (sweeps, keys, every error listed), the store (per-row commits,
resume after SIGKILL, corruption refused), the runner (interleaving, the samples limit)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke
from rich.console import Console

import reasoning.strategies  # noqa: F401
from reasoning import Problem, ScriptedBackend
from reasoning.errors import ConfigError, StoreError
from reasoning.evals.datasets import load_dataset
from reasoning.evals.leaderboard.runner import _Samples, plan, run_leaderboard
from reasoning.evals.leaderboard.spec import LeaderboardSpec
from reasoning.evals.leaderboard.store import Store

GOLD = [p.answer for p in load_dataset("gsm8k", limit=6)]


def board(tmp_path: Path, **overrides: Any) -> LeaderboardSpec:
    data: dict[str, Any] = {
        "name": "t",
        "store": str(tmp_path / "t.sqlite"),
        "models": {"s": {"kind": "scripted"}},
        "datasets": {"g": {"name": "gsm8k", "limit": 6}},
        "entries": [
            {"name": "greedy", "strategy": "single"},
            {"name": "sc", "strategy": "self-consistency", "params": {"n": [2, 4]}},
        ],
    }
    data.update(overrides)
    return LeaderboardSpec.model_validate(data)


def answers(request: Any, sample: int) -> str:
    """Right on even problems (by the question's gold), wrong on odd ones."""
    text = request.messages[-1].content
    for i, problem in enumerate(load_dataset("gsm8k", limit=6)):
        if problem.question in text:
            return f"so \\boxed{{{GOLD[i] if i % 2 == 0 else '-1'}}}"
    return "so \\boxed{0}"


def quiet() -> Console:
    return Console(file=io.StringIO())


def test_sweeps_expand_to_cells_with_stable_keys(tmp_path: Path) -> None:
    spec = board(tmp_path)
    cells = spec.cells()
    assert [c.label for c in cells] == ["greedy", "sc n=2", "sc n=4"]
    assert len({c.key for c in cells}) == 3
    again = board(tmp_path).cells()
    assert [c.key for c in again] == [c.key for c in cells]
    # spelling a default out is the same cell; changing a value is a new one
    explicit = board(
        tmp_path, entries=[{"name": "greedy", "strategy": "single", "params": {"temperature": 0.0}}]
    )
    assert explicit.cells()[0].key == cells[0].key
    changed = board(
        tmp_path, entries=[{"name": "greedy", "strategy": "single", "params": {"max_tokens": 100}}]
    )
    assert changed.cells()[0].key != cells[0].key
    # a larger limit extends the same cell; another model is another cell
    assert board(tmp_path, datasets={"g": {"name": "gsm8k", "limit": 9}}).cells()[0].key == cells[0].key
    other = board(tmp_path, models={"s": {"kind": "scripted", "script": "x"}})
    assert other.cells()[0].key != cells[0].key


def test_budget_sweep_and_one_line_sweep(tmp_path: Path) -> None:
    spec = board(
        tmp_path,
        entries=[
            {"strategy": "self-consistency", "params": {"n": [1, 2]}, "budget": {"output_tokens": [64, 128]}}
        ],
    )
    labels = [c.label for c in spec.cells()]
    assert labels == [
        "self-consistency n=1 output_tokens=64",
        "self-consistency n=1 output_tokens=128",
        "self-consistency n=2 output_tokens=64",
        "self-consistency n=2 output_tokens=128",
    ]
    assert spec.cells()[1].budget.output_tokens == 128


def test_every_error_is_listed_with_its_field(tmp_path: Path) -> None:
    spec = board(
        tmp_path,
        entries=[
            {"name": "a", "strategy": "no-such-strategy"},
            {"name": "b", "strategy": "self-consistency", "params": {"nn": 3}},
            {"name": "c", "strategy": "self-consistency", "params": {"n": [2, 0]}},
            {"name": "d", "strategy": "single", "budget": {"tokens": 5}},
        ],
        baseline="missing",
    )
    with pytest.raises(ConfigError) as error:
        spec.cells()
    message = str(error.value)
    for part in (
        "entries[0] (a).strategy",
        "no-such-strategy",
        "entries[1] (b).params",
        "'nn'",
        "entries[2] (c).params {n: 0}",
        "entries[3] (d).budget",
        "'tokens'",
        "baseline 'missing'",
    ):
        assert part in message, part
    with pytest.raises(ConfigError) as error:
        LeaderboardSpec.model_validate(
            {
                "name": "bad name",
                "datasets": {},
                "entries": [{"strategy": "single", "models": ["nope"]}],
                "seeds": [1, 1],
            }
        )
    message = str(error.value)
    for part in ("name", "datasets", "'nope' is not a model"):
        assert part in message, part


def test_run_stores_every_problem_and_resumes_without_repeating(tmp_path: Path) -> None:
    spec = board(tmp_path)
    started: list[str] = []

    def start(model: str, hidden: bool) -> ScriptedBackend:
        started.append(model)
        return ScriptedBackend(answers)

    with Store.open(spec.store_path) as store:
        assert run_leaderboard(spec, store, start, console=quiet()) == 18
        rows = {c.label: store.results(c.key) for c in spec.cells()}
        assert [len(r) for r in rows.values()] == [6, 6, 6]
        assert [r.correct for r in rows["greedy"]] == [True, False] * 3
        sc4 = rows["sc n=4"][0]
        assert len(sc4.samples) == 4 and all(s[1] for s in sc4.samples)
        assert sc4.sequential_tokens is not None and 0 < sc4.sequential_tokens < sc4.output_tokens
        assert store.record(spec.cells()[0].key, rows["greedy"][0].problem_id, 0).answer == GOLD[0]
        assert run_leaderboard(spec, store, start, console=quiet()) == 0  # nothing left: no engine
    assert started == ["s"]


def test_error_rows_are_retried_and_fatal_errors_keep_finished_rows(tmp_path: Path) -> None:
    from reasoning.errors import BackendError

    spec = board(tmp_path, entries=[{"name": "greedy", "strategy": "single"}])
    calls = {"n": 0}

    def flaky(request: Any, sample: int) -> str:
        calls["n"] += 1
        if calls["n"] == 3:
            raise BackendError("transient", retryable=True)
        return answers(request, sample)

    with Store.open(spec.store_path) as store:
        run_leaderboard(spec, store, lambda m, h: ScriptedBackend(flaky), console=quiet())
        key = spec.cells()[0].key
        errors = [r for r in store.results(key) if r.error]
        assert len(errors) == 1 and "transient" in (errors[0].error or "")
        assert len(store.done(key, 0)) == 5
        assert run_leaderboard(spec, store, lambda m, h: ScriptedBackend(answers), console=quiet()) == 1
        assert len(store.done(key, 0)) == 6 and not [r for r in store.results(key) if r.error]


def test_jobs_interleave_across_cells(tmp_path: Path) -> None:
    spec = board(tmp_path)
    with Store.open(spec.store_path) as store:
        jobs = plan(spec, spec.cells(), {"g": load_dataset("gsm8k", limit=6)}, store)
    assert [j.cell.label for j in jobs[:6]] == ["greedy", "sc n=2", "sc n=4"] * 2
    assert len(jobs) == 18


async def test_samples_limit_holds_weights_first_come_first_served() -> None:
    limit = _Samples(4)
    inside: list[int] = []
    peak = {"now": 0, "max": 0}
    order: list[int] = []

    async def job(i: int, weight: int) -> None:
        async with limit.hold(weight):
            order.append(i)
            peak["now"] += min(weight, 4)
            peak["max"] = max(peak["max"], peak["now"])
            inside.append(weight)
            await asyncio.sleep(0.01)
            peak["now"] -= min(weight, 4)

    async with asyncio.TaskGroup() as group:
        for i, weight in enumerate([3, 3, 1, 8, 1]):
            group.create_task(job(i, weight))
    assert peak["max"] <= 4
    assert order == [0, 1, 2, 3, 4]  # the 1 behind a waiting 3 does not jump the queue
    assert limit.free == 4


def test_a_changed_entry_is_a_new_cell_and_old_rows_stay_apart(tmp_path: Path) -> None:
    spec = board(tmp_path, entries=[{"name": "greedy", "strategy": "single"}])
    with Store.open(spec.store_path) as store:
        run_leaderboard(spec, store, lambda m, h: ScriptedBackend(answers), console=quiet())
        changed = board(
            tmp_path, entries=[{"name": "greedy", "strategy": "single", "params": {"max_tokens": 7}}]
        )
        assert (
            run_leaderboard(changed, store, lambda m, h: ScriptedBackend(["\\boxed{1}"]), console=quiet())
            == 6
        )
        old, new = spec.cells()[0].key, changed.cells()[0].key
        assert [r.correct for r in store.results(old)] == [True, False] * 3
        assert {r.answer for r in store.results(new)} == {"1"}
        assert len(store.cells()) == 2


def test_not_a_store_and_corrupted_stores_are_refused_untouched(tmp_path: Path) -> None:
    text = tmp_path / "notes.sqlite"
    text.write_text("my notes")
    with pytest.raises(StoreError, match="not a SQLite leaderboard store"):
        Store.open(text)
    assert text.read_text() == "my notes"

    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE songs (title TEXT)")
    db.commit()
    db.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match="something else"):
        Store.open(other)
    assert other.read_bytes() == before

    spec = board(tmp_path)
    with Store.open(spec.store_path) as store:
        run_leaderboard(spec, store, lambda m, h: ScriptedBackend(answers), console=quiet())
    path = spec.store_path
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    data[page + 10 : page + 600] = b"\xff" * 590  # garble the second page
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupted"):
        Store.open(path)
    assert path.read_bytes() == bytes(data)

    with pytest.raises(StoreError, match="no leaderboard store"):
        Store.open(tmp_path / "missing.sqlite", create=False)


KILLED = textwrap.dedent(
    """
    import io, sys
    from rich.console import Console
    import reasoning.strategies
    from reasoning import ScriptedBackend
    from reasoning.evals.leaderboard.runner import run_leaderboard
    from reasoning.evals.leaderboard.spec import LeaderboardSpec
    from reasoning.evals.leaderboard.store import Store
    spec = LeaderboardSpec.model_validate({
        "name": "k", "store": sys.argv[1], "models": {"s": {"kind": "scripted"}},
        "datasets": {"g": {"name": "gsm8k", "limit": 40}}, "concurrency": 2,
        "entries": [{"name": "greedy", "strategy": "single"},
                    {"name": "sc", "strategy": "sc", "params": {"n": 2}}]})
    with Store.open(spec.store_path) as store:
        run_leaderboard(spec, store, lambda m, h: ScriptedBackend(["so \\\\boxed{3}"],
            seconds_per_token=float(sys.argv[2])), console=Console(file=io.StringIO()))
    """
)


def test_sigkill_at_any_moment_loses_and_repeats_nothing(tmp_path: Path) -> None:
    path = tmp_path / "k.sqlite"
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    process = subprocess.Popen([sys.executable, str(script), str(path), "0.02"])
    deadline = time.monotonic() + 60
    count = 0
    while time.monotonic() < deadline:  # kill it once some rows are in, mid-run
        time.sleep(0.2)
        if path.exists():
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                    count = db.execute("SELECT count(*) FROM results").fetchone()[0]
            except sqlite3.Error:
                continue
            if count >= 10:
                break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert 10 <= count < 80, count
    with Store.open(path) as store:
        before = {(c.key, r.problem_id): r for c in store.cells() for r in store.results(c.key)}
    assert len(before) < 80
    subprocess.run([sys.executable, str(script), str(path), "0"], check=True, timeout=120)
    with Store.open(path) as store:
        after = {(c.key, r.problem_id): r for c in store.cells() for r in store.results(c.key)}
        assert len(after) == 80 and len(store.cells()) == 2
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 80
    for key, row in before.items():  # the rows stored before the kill are the same rows
        assert after[key] == row


def test_cli_run_lists_config_errors_before_any_compute(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "name: bad\nmodels: {s: {kind: scripted}}\ndatasets: {g: {name: no-such-set}}\n"
        "entries: [{strategy: single, params: {bogus: 1}}]\n"
    )
    code, output = invoke("leaderboard", "run", str(config), "--store", str(tmp_path / "s.sqlite"))
    assert code != 0
    assert "bogus" in output and "datasets.g" in output  # both errors, at once
    assert not (tmp_path / "s.sqlite").exists()


def test_problems_must_exist_for_every_dataset(tmp_path: Path) -> None:
    from reasoning.evals.leaderboard.runner import load_problems

    spec = board(tmp_path, datasets={"a": {"name": "nope.jsonl"}, "b": {"name": "no-such-set"}})
    with pytest.raises(ConfigError) as error:
        load_problems(spec)
    assert "datasets.a" in str(error.value) and "datasets.b" in str(error.value)
    assert isinstance(Problem, type)


def test_the_shipped_leaderboard_is_valid_and_covers_every_strategy() -> None:
    """Every registered strategy is an entry of the shipped comparison, or named with its reason."""
    from reasoning import STRATEGIES
    from reasoning.evals.leaderboard.spec import read_leaderboard

    path = Path(__file__).resolve().parents[1] / "leaderboards" / "gsm8k-default.yaml"
    spec = read_leaderboard(path)
    cells = spec.cells()
    assert {c.model for c in cells} == {"0.5b", "1.5b", "pair"}
    assert {c.dataset for c in cells} == {"gsm8k", "math500"}
    artefacts = [getattr(c.strategy, k, "") for c in cells for k in ("calibration", "probe")]
    artefacts = [a for a in artefacts if a]
    root = path.parents[1]
    assert artefacts and all((root / a).is_file() for a in artefacts), artefacts  # shipped with it
    assert all(spec.baseline_of(cells, c) is not None for c in cells)
    entered = {c.strategy_name for c in cells}
    left_out = path.read_text().split("Left out, and why:")[1].split("name:")[0]
    missing = [n for n in STRATEGIES.names() if n not in entered and n not in left_out]
    assert not missing, f"strategies neither in {path.name} nor in its 'Left out' note: {missing}"


def test_a_model_group_runs_its_named_backends_together(tmp_path: Path) -> None:
    pair = {"backends": {"draft": {"kind": "scripted"}, "target": {"kind": "scripted", "script": "Yes"}}}
    entry = {"name": "bon", "strategy": "best-of-n", "params": {"n": 2, "judge_backend": "target"}}
    spec = board(tmp_path, models={"pair": pair}, entries=[entry])
    started: list[str] = []
    closed: list[Any] = []

    def start(model: str, hidden: bool) -> dict[str, ScriptedBackend]:
        started.append(model)
        return {"draft": ScriptedBackend(answers, name="draft"), "target": ScriptedBackend(["Yes"], name="t")}

    with Store.open(spec.store_path) as store:
        assert run_leaderboard(spec, store, start, console=quiet(), close=closed.append) == 6
        [cell] = spec.cells()
        rows = store.results(cell.key)
        assert [r.correct for r in rows] == [True, False] * 3
        run = store.record(cell.key, rows[0].problem_id, 0)
        assert set(run.usage_by_backend) == {"draft", "target"}
        assert run.usage_by_backend["draft"]["samples"] == 2 and run.usage_by_backend["target"]["calls"] >= 1
        [session] = store.sessions()
        assert set(session.engine) == {"draft", "target"}
    assert started == ["pair"] and isinstance(closed[0], dict)
    # A group's identity is its members': another target model is another cell.
    other = {"backends": {**pair["backends"], "target": {"kind": "scripted", "script": "No"}}}
    assert board(tmp_path, models={"pair": other}, entries=[entry]).cells()[0].key != cell.key


def test_run_can_solve_only_the_named_entries(tmp_path: Path) -> None:
    spec = board(tmp_path)
    with Store.open(spec.store_path) as store:
        start = lambda m, h: ScriptedBackend(answers)  # noqa: E731
        assert run_leaderboard(spec, store, start, console=quiet(), entries={"greedy"}) == 6
        assert {c.entry for c in store.cells()} == {"greedy"}
        assert run_leaderboard(spec, store, start, console=quiet()) == 12  # the others, later
    config = tmp_path / "board.yaml"
    config.write_text(
        "name: t\nmodels: {s: {kind: scripted}}\ndatasets: {g: {name: gsm8k, limit: 1}}\n"
        "entries: [{name: greedy, strategy: single}, {name: sc, strategy: sc}]\n"
    )
    code, output = invoke("leaderboard", "run", str(config), "--entry", "greedy", "--entry", "nope")
    assert code != 0 and "--entry nope: no such entry; entries: greedy, sc" in " ".join(output.split())


def test_run_can_solve_only_the_named_models(tmp_path: Path) -> None:
    spec = board(tmp_path, models={"a": {"kind": "scripted"}, "b": {"kind": "scripted", "script": "b"}})
    started: list[str] = []

    def start(model: str, hidden: bool) -> ScriptedBackend:
        started.append(model)
        return ScriptedBackend(answers)

    with Store.open(spec.store_path) as store:
        assert run_leaderboard(spec, store, start, console=quiet(), models={"b"}, entries={"greedy"}) == 6
        assert started == ["b"] and {(c.model, c.entry) for c in store.cells()} == {("b", "greedy")}
    config = tmp_path / "board.yaml"
    config.write_text(
        "name: t\nmodels: {s: {kind: scripted}}\ndatasets: {g: {name: gsm8k, limit: 1}}\n"
        "entries: [{name: greedy, strategy: single}]\n"
    )
    code, output = invoke("leaderboard", "run", str(config), "--model", "nope")
    assert code != 0 and "--model nope: no such model; models: s" in " ".join(output.split())


def test_ray_refuses_a_model_group_before_any_compute(tmp_path: Path) -> None:
    config = tmp_path / "board.yaml"
    config.write_text(
        "name: t\nmodels: {s: {kind: scripted}, pair: {backends: {target: {kind: scripted}, "
        "draft: {kind: scripted, script: d}}}}\ndatasets: {g: {name: gsm8k, limit: 1}}\n"
        "entries: [{name: greedy, strategy: single}]\n"
    )
    code, output = invoke(
        "leaderboard", "run", str(config), "--ray", "auto", "--store", str(tmp_path / "s.sqlite")
    )
    assert code != 0 and "model group pair cannot run on it" in " ".join(output.split())
    assert not (tmp_path / "s.sqlite").exists()  # refused before the store opened


def test_the_governed_leaderboard_is_valid_and_enters_the_probe_and_search_strategies() -> None:
    from reasoning.evals.leaderboard.spec import read_leaderboard

    path = Path(__file__).resolve().parents[1] / "leaderboards" / "governed.yaml"
    spec = read_leaderboard(path)
    cells = spec.cells()
    entered = {c.strategy_name for c in cells}
    for name in (
        "early-exit",
        "difficulty",
        "lt-select",
        "lt-prune",
        "beam",
        "dvts",
        "a-star",
        "particle-filtering",
    ):
        assert name in entered, name
    gsm8k = [c for c in cells if c.dataset == "gsm8k" and c.model == "0.5b"]
    assert all((c.limit or 300) >= 150 for c in gsm8k)  # every entry on at least 150 problems
    over = [c for c in cells if c.over]
    assert over and all(next(s for s in cells if s.key == c.over).label == "sc@8" for c in over)
    assert spec.datasets["gsm8k"].offset == 200 and spec.datasets["gsm8k"].limit == 300
