"""A tiny leaderboard on the real engine: rows, samples, sequential tokens and the session's throughput."""

import io
from pathlib import Path

import pytest
from rich.console import Console

import reasoning.strategies  # noqa: F401
from reasoning.evals.leaderboard.runner import arun_leaderboard
from reasoning.evals.leaderboard.spec import LeaderboardSpec
from reasoning.evals.leaderboard.store import Store
from reasoning.evals.leaderboard.summary import summarize

pytestmark = pytest.mark.engine


async def test_a_leaderboard_on_the_engine(engine, tmp_path: Path) -> None:
    spec = LeaderboardSpec.model_validate(
        {
            "name": "tiny",
            "store": str(tmp_path / "tiny.sqlite"),
            "models": {"0.5b": "qwen2.5-coder-0.5b-instruct"},
            "datasets": {"g": {"name": "gsm8k", "limit": 2}},
            "entries": [
                {"name": "greedy", "strategy": "single", "params": {"max_tokens": 24}},
                {"name": "sc", "strategy": "self-consistency", "params": {"n": 3, "max_tokens": 24}},
            ],
        }
    )
    started: list[str] = []

    def start(model: str, hidden: bool) -> object:
        started.append(model)
        return engine

    quiet = Console(file=io.StringIO())
    with Store.open(spec.store_path) as store:
        assert await arun_leaderboard(spec, store, start, console=quiet) == 4
        greedy, sc = spec.cells()
        rows = store.results(sc.key)
        assert [r.problem_id for r in rows] == [r.problem_id for r in store.results(greedy.key)]
        for row in rows:
            assert row.error is None and len(row.samples) == 3 and row.calls == 1
            assert sum(s[2] for s in row.samples) == row.output_tokens > 0
            # three samples decoded side by side: the critical path is the longest one
            assert row.sequential_tokens == max(s[2] for s in row.samples)
        [session] = store.sessions()
        assert session.output_tokens == sum(
            r.output_tokens for c in (greedy, sc) for r in store.results(c.key)
        )
        assert session.engine.get("dtype") in ("bfloat16", "float32", "float16")
        stats = summarize(store, store.cells([greedy.key, sc.key]), {sc.key: greedy.key}, spec.price)
        assert stats[1].comparison is not None and stats[1].comparison.problems == 2
        assert set(stats[1].pass_at) == {1, 2} and stats[1].device_seconds > 0
        assert await arun_leaderboard(spec, store, start, console=quiet) == 0
    assert started == ["0.5b"]
