import json
from pathlib import Path

import pytest

from reasoning import (
    BackendError,
    ConfigError,
    Controller,
    DatasetError,
    Problem,
    Request,
    Run,
    ScriptedBackend,
)
from reasoning.evals.run import check_writable, read_results, solve
from reasoning.strategies import SelfConsistency

PROBLEMS = [Problem(id=f"p{i}", question=f"{i}+{i}?", answer=str(2 * i)) for i in range(6)]


def doubling(request: Request, number: int) -> str:
    i = int(request.messages[0].content.split("+")[0])
    return f"so \\boxed{{{2 * i}}}"


async def test_results_are_graded_and_written_in_dataset_order(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    # Later problems decode faster, so they finish first; the finished file is still in order.
    backend = ScriptedBackend(doubling, seconds_per_token=[0.02, 0.01, 0.0])
    runs = await solve(PROBLEMS, Controller(backend), SelfConsistency(n=1), output=out, concurrency=6)
    assert [r.correct for r in runs] == [True] * 6
    ids = [json.loads(line)["problem_id"] for line in out.read_text().splitlines()]
    assert ids == [p.id for p in PROBLEMS]


async def test_resume_skips_finished_problems(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    await solve(PROBLEMS[:3], Controller(ScriptedBackend(doubling)), SelfConsistency(n=1), output=out)
    backend = ScriptedBackend(doubling)
    runs = await solve(PROBLEMS, Controller(backend), SelfConsistency(n=1), output=out)
    assert len(backend.requests) == 3
    assert len(runs) == 6 and len(out.read_text().splitlines()) == 6


async def test_resume_refuses_another_configuration(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    await solve(PROBLEMS[:2], Controller(ScriptedBackend(doubling)), SelfConsistency(n=1), output=out)
    with pytest.raises(ConfigError, match="another configuration"):
        await solve(PROBLEMS, Controller(ScriptedBackend(doubling)), SelfConsistency(n=2), output=out)


async def test_engine_death_keeps_finished_results_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"

    def dies_on_p3(request: Request, number: int) -> str:
        if request.messages[0].content.startswith("3+"):
            raise BackendError("engine died", retryable=False)
        return doubling(request, number)

    with pytest.raises(BackendError, match="engine died"):
        await solve(
            PROBLEMS,
            Controller(ScriptedBackend(dies_on_p3)),
            SelfConsistency(n=1),
            output=out,
            concurrency=1,
        )
    assert list(read_results(out)) == ["p0", "p1", "p2"]

    backend = ScriptedBackend(doubling)
    runs = await solve(PROBLEMS, Controller(backend), SelfConsistency(n=1), output=out)
    assert len(backend.requests) == 3 and all(r.correct for r in runs)


async def test_a_result_finished_out_of_order_survives_a_crash(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"

    def p0_slow_then_dies(request: Request, number: int) -> str:
        content = request.messages[0].content
        if content.startswith("2+"):
            raise BackendError("engine died", retryable=False)
        return doubling(request, number)

    # Two in flight: p1 finishes before the slow p0, then p2 starts and kills the engine
    # while p0 is still decoding.
    backend = ScriptedBackend(p0_slow_then_dies, seconds_per_token=[0.05, 0.0, 0.0])
    with pytest.raises(BackendError, match="engine died"):
        await solve(PROBLEMS[:3], Controller(backend), SelfConsistency(n=1), output=out, concurrency=2)
    assert "p1" in read_results(out)


async def test_truncated_last_line_is_dropped_and_rerun(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    await solve(PROBLEMS[:2], Controller(ScriptedBackend(doubling)), SelfConsistency(n=1), output=out)
    text = out.read_text()
    out.write_text(text[: len(text) - 40])
    assert list(read_results(out)) == ["p0"]
    out.write_text("garbage\n" + text)
    from reasoning import DatasetError

    with pytest.raises(DatasetError, match=r"r.jsonl:1"):
        read_results(out)


async def test_resuming_after_a_cut_last_line_appends_whole_rows(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    strategy = SelfConsistency(n=1)
    await solve(PROBLEMS[:2], Controller(ScriptedBackend(doubling)), strategy, output=out)
    text = out.read_text()
    out.write_text(text[: len(text) - 40])  # p1's row cut by a kill
    seen: list[list[str]] = []  # the file after each append (before the final rewrite)

    def snapshot(run: Run) -> None:
        if run.problem_id != "p0":  # p0 is resumed, reported before anything is appended
            seen.append([Run.model_validate_json(line).problem_id for line in out.read_text().splitlines()])

    runs = await solve(
        PROBLEMS[:3], Controller(ScriptedBackend(doubling)), strategy, output=out, on_result=snapshot
    )
    assert [r.problem_id for r in runs] == ["p0", "p1", "p2"]
    assert len(seen) == 2 and sorted(seen[-1]) == ["p0", "p1", "p2"]  # every line whole, mid-run too
    lines = out.read_text().splitlines()
    assert [Run.model_validate_json(line).problem_id for line in lines] == ["p0", "p1", "p2"]
    out.write_text(text.rstrip("\n"))  # a whole row that lost only its newline is kept
    backend = ScriptedBackend(doubling)
    await solve(PROBLEMS[:3], Controller(backend), strategy, output=out)
    assert len(backend.requests) == 1  # only p2 solved again
    assert [Run.model_validate_json(line).problem_id for line in out.read_text().splitlines()] == [
        "p0",
        "p1",
        "p2",
    ]


async def test_pass_at_k_oracle_is_graded_but_never_chosen() -> None:
    problem = Problem(id="q", question="2+2?", answer="4")
    backend = ScriptedBackend(["\\boxed{5}", "\\boxed{5}", "\\boxed{4}"])
    [run] = await solve([problem], Controller(backend), SelfConsistency(n=3))
    assert run.answer == "5" and run.correct is False and run.oracle_correct is True
    ungraded = Problem(id="u", question="?", answer=None)
    [run] = await solve([ungraded], Controller(ScriptedBackend(["\\boxed{1}"])), SelfConsistency(n=1))
    assert run.correct is None and run.oracle_correct is None


async def test_a_finished_run_leaves_one_row_per_problem_even_when_nothing_was_left(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    strategy = SelfConsistency(n=1)
    await solve(PROBLEMS[:2], Controller(ScriptedBackend(doubling)), strategy, output=out)
    first, second = out.read_text().splitlines()
    failed = Run.model_validate_json(second).model_copy(update={"error": "BackendError: cut", "answer": None})
    out.write_text("\n".join([first, failed.model_dump_json(), second]) + "\n")  # killed before its rewrite
    backend = ScriptedBackend(doubling)
    runs = await solve(PROBLEMS[:2], Controller(backend), strategy, output=out)
    assert not backend.requests and [r.error for r in runs] == [None, None]
    assert out.read_text().splitlines() == [first, second]


async def test_read_results_takes_a_str_and_refuses_a_directory(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    await solve(PROBLEMS[:2], Controller(ScriptedBackend(doubling)), SelfConsistency(n=1), output=out)
    assert list(read_results(str(out))) == ["p0", "p1"]
    with pytest.raises(DatasetError, match="is a directory, not a results file"):
        read_results(str(tmp_path))


async def test_a_repeated_problem_id_is_named(tmp_path: Path) -> None:
    twice = [PROBLEMS[0], PROBLEMS[1], PROBLEMS[0]]
    with pytest.raises(DatasetError, match="problem id 'p0' repeats"):
        await solve(twice, Controller(ScriptedBackend(doubling)), SelfConsistency(n=1))


def test_check_writable_leaves_no_file_behind(tmp_path: Path) -> None:
    out = tmp_path / "new" / "r.jsonl"
    check_writable(out)
    assert list(out.parent.iterdir()) == []  # the folder is made, the probe files removed
    out.write_text("kept\n")
    check_writable(out)
    assert out.read_text() == "kept\n"
    with pytest.raises(ConfigError, match="is a directory"):
        check_writable(tmp_path)
