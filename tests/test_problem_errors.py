"""A failure inside one problem becomes that problem's error row; the dataset run goes on."""

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from reasoning import (
    Context,
    Controller,
    Problem,
    Request,
    Result,
    ScriptedBackend,
    Verdict,
    VerifierError,
)
from reasoning.evals.run import read_results, solve
from reasoning.strategies import BeamSearch, SelfConsistency
from reasoning.verifier import ExtractAnswer
from reasoning.verifiers.process import ScriptedScorer

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = [Problem(id=f"p{i}", question=f"{i}+{i}?", answer=str(2 * i)) for i in range(4)]


def doubling(request: Request, number: int) -> str:
    i = int(request.messages[0].content.split("+")[0])
    return f"so \\boxed{{{2 * i}}}"


class BadOnP2:
    """Extracts answers, but misbehaves on problem p2 in the way `how` says."""

    def __init__(self, how: str) -> None:
        self.how = how

    async def __call__(self, problem: Problem, texts: Sequence[str]) -> list[Verdict]:
        verdicts = await ExtractAnswer()(problem, texts)
        if problem.id != "p2":
            return verdicts
        if self.how == "count":
            return [*verdicts, Verdict(answer="1")]
        raise KeyError("a bug in someone's verifier")


def check(out: Path, runs: list, error: str) -> None:
    assert [r.problem_id for r in runs] == [p.id for p in PROBLEMS]
    assert [r.correct for r in runs] == [True, True, False, True]  # an error counts as wrong
    failed = runs[2]
    assert failed.stop_reason == "error" and failed.answer is None
    assert failed.error is not None and failed.error.startswith(error)
    assert read_results(out)["p2"].error == failed.error  # on disk, retried on resume


@pytest.mark.parametrize(("how", "error"), [("count", "VerifierError"), ("raises", "VerifierError")])
async def test_a_misbehaving_verifier_fails_only_its_problem(tmp_path: Path, how: str, error: str) -> None:
    out = tmp_path / "r.jsonl"
    controller = Controller(ScriptedBackend(doubling), verifier=BadOnP2(how))
    runs = await solve(PROBLEMS, controller, SelfConsistency(n=2), output=out, concurrency=2)
    check(out, runs, error)


async def test_a_misbehaving_process_scorer_fails_only_its_problem(tmp_path: Path) -> None:
    class Scorer(ScriptedScorer):
        async def score(self, ctx: Context, paths: Sequence[Sequence[str]]) -> list[float]:
            scores = await super().score(ctx, paths)
            return scores[:-1] if ctx.problem.id == "p2" else scores

    out = tmp_path / "r.jsonl"
    controller = Controller(ScriptedBackend(doubling), verifier=Scorer(lambda steps: 1.0))
    strategy = BeamSearch(n=2, width=1, scorer="verifier")
    runs = await solve(PROBLEMS, controller, strategy, output=out)
    check(out, runs, "VerifierError")


async def test_a_failing_strategy_fails_only_its_problem(tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Buggy:
        async def __call__(self, problem: Problem, ctx: Context) -> Result:
            if problem.id == "p2":
                return Result(answer={}["missing"])
            return await SelfConsistency(n=1)(problem, ctx)

    out = tmp_path / "r.jsonl"
    runs = await solve(PROBLEMS, Controller(ScriptedBackend(doubling)), Buggy(), output=out)
    check(out, runs, "KeyError")


async def test_a_wrong_number_of_verdicts_is_a_verifier_error(problem: Problem) -> None:
    with pytest.raises(VerifierError, match="2 texts"):
        await Controller(ScriptedBackend(["\\boxed{4}"]), verifier=BadOnP2("count")).run(
            Problem("p2", "?"), SelfConsistency(n=2)
        )


def test_the_package_asserts_nothing_at_run_time() -> None:
    """``assert`` vanishes under ``python -O``: runtime checks raise typed errors instead."""
    found = []
    for folder in ("reasoning", "strategies", "verifiers", "probes", "evals"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno}"
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Assert)
            ]
    assert not found, "\n".join(found)
