"""Run a strategy over a dataset: many problems in flight, results in order, resumable.

Problems are solved concurrently (bounded by `concurrency`, sized by default so the engine has
about twice as many samples queued as it decodes at once), so the engine stays saturated.
Each finished run is graded and appended to the JSONL output the moment it finishes (so a
crash loses nothing finished); when all are done the file is rewritten in dataset order.
Re-running with the same output skips the problems already there; a problem that failed is
retried. On a pool of engine replicas (`reasoning.backends.replicas`), a problem whose replica
died (`ReplicaLost`) is re-run at once on a live replica, a few times at most.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reasoning import Budget, Controller, Problem, Run, Strategy
from reasoning.concurrency import first_error, task_group
from reasoning.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    DatasetError,
    ReasoningError,
    ReplicaLost,
    StoreError,
)
from reasoning.record import jsonl_lines
from reasoning.registry import STRATEGIES, params_of
from reasoning.verifiers.grading import Grade, grade_answer

__all__ = [
    "check_resumable",
    "check_writable",
    "default_concurrency",
    "grade_run",
    "grade_run_async",
    "read_results",
    "resume_identity",
    "run_problem",
    "solve",
    "superseded",
    "tidy",
    "unfinished",
]

logger = logging.getLogger(__name__)

OnResult = Callable[[Run], None]

_IDENTITY = ("strategy", "params", "model", "backends", "seed", "budget", "budgets")

REROUTES = 3
"""Times a problem whose engine replica died is re-run on another (`ReplicaLost`)."""


def default_concurrency(controller: Controller, strategy: Strategy) -> int:
    """Problems in flight: enough that about twice the engine's batch of samples is queued."""
    engine_batch = int(getattr(controller.primary, "max_concurrency", 32))
    samples = max(1, int(getattr(strategy, "n", 1)))
    return max(2, (2 * engine_batch) // samples)


def read_results(path: str | Path) -> dict[str, Run]:
    """Read a results file; the last row of each problem wins (none when it does not exist).

    A truncated last line (the process was killed mid-write) is dropped with a warning;
    any other malformed line is an error naming the file and line.

    Raises:
        DatasetError: A malformed row, or `path` is not a results file (a directory, not text).
    """
    path = Path(path)
    runs: dict[str, Run] = {}
    if path.is_dir():
        raise DatasetError(f"{path} is a directory, not a results file")
    if not path.exists():
        return runs
    try:
        lines = jsonl_lines(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a results file (not UTF-8 text at byte {exc.start})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read results ({exc.strerror or exc})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            run = Run.model_validate_json(line)
        except ValueError as exc:
            if number == len(lines):
                logger.warning("%s:%d: dropping a truncated last line", path, number)
                continue
            raise DatasetError(
                f"{path}:{number}: not a valid result row ({exc.__class__.__name__})"
            ) from None
        runs[run.problem_id] = run
    return runs


def _identity(run: Run) -> dict[str, Any]:
    identity: dict[str, Any] = json.loads(json.dumps({k: getattr(run, k) for k in _IDENTITY}, default=str))
    identity["artefacts"] = dict((run.spec or {}).get("artefacts") or {})  # the probes' sha256
    return identity


def grade_run(problem: Problem, run: Run) -> tuple[Run, list[bool | None]]:
    """Grade the answer and every candidate's (distinct answers once); the run with its verdict.

    Returns the run with `Run.correct` and the pass@k oracle `Run.oracle_correct` set, and each
    candidate's verdict (None when the problem has no gold answer; a candidate without an answer
    is wrong). An answer the grader cannot judge (too big, out of time: `grade_answer`) or fails
    on counts wrong (logged), its reason in ``Run.grading``. Blocks while sympy works:
    async code runs it in a thread.
    """
    verdicts: dict[str | None, bool | None] = {}
    reasons: list[str] = []

    def correct(answer: str | None) -> bool | None:
        if answer not in verdicts:
            try:
                result = grade_answer(problem, answer)
            except ReasoningError as exc:
                logger.warning("grading %s failed: %s", problem.id, exc)
                result = Grade(False, str(exc))
            if result.reason is not None:
                shown = answer if answer is None or len(answer) <= 60 else f"{answer[:60]}..."
                reasons.append(f"{shown!r}: {result.reason}")
            verdicts[answer] = result.correct
        return verdicts[answer]

    final = correct(run.answer)
    samples = [
        None if final is None else bool(c.answer is not None and correct(c.answer)) for c in run.candidates
    ]
    oracle = any(bool(v) for v in samples) if final is not None and run.candidates else None
    update: dict[str, Any] = {"correct": final, "oracle_correct": oracle}
    if reasons:
        update["grading"] = reasons
    return run.model_copy(update=update), samples


async def grade_run_async(problem: Problem, run: Run) -> tuple[Run, list[bool | None]]:
    """`grade_run` in a thread, so sympy never stalls the event loop.

    A finished run is graded even when its task is cancelled meanwhile (another problem's fatal
    error, Ctrl-C): the grade is bounded (`reasoning.verifiers.grading.GRADE_SECONDS` an answer)
    and its caller stores the run before it ends, so a crash still loses nothing finished.
    """
    grading = asyncio.ensure_future(asyncio.to_thread(grade_run, problem, run))
    while True:
        try:
            return await asyncio.shield(grading)
        except asyncio.CancelledError:
            if grading.cancelled():
                raise


async def solve(
    problems: Sequence[Problem],
    controller: Controller,
    strategy: Strategy,
    *,
    budget: Budget | None = None,
    output: Path | None = None,
    concurrency: int | None = None,
    on_result: OnResult | None = None,
    identity: Mapping[str, Any] | None = None,
    spec: Mapping[str, Any] | None = None,
) -> list[Run]:
    """Solve `problems` with `strategy`; return all runs (resumed ones included), in order.

    Args:
        problems: What to solve (unique ids).
        controller: The backends, verifier, seed and named budgets.
        strategy: How to solve each problem.
        budget: Budget per problem (default: the controller's).
        output: Results JSONL: each run is appended as it finishes; runs already there are
            resumed (a failed one is retried).
        concurrency: Problems in flight (default: `default_concurrency`).
        on_result: Called with each run, resumed ones first.
        identity: The configuration's `resume_identity`, when the caller has it (the CLI
            computes it from the run spec); default: computed from `controller` and `strategy`.
        spec: The run spec, stored in every new row (`Run.spec`).

    Raises:
        ConfigError: `output` holds results of a different configuration.
        StoreError: `output` cannot be written (the disk is full): the file is cut back to its
            last whole row, so the rows before are kept and a re-run resumes after them.
        BackendError: The backend failed for good (the engine died, the server cannot be
            reached: `BackendUnavailable`); runs already finished are on disk and a re-run
            resumes after them. Every other failure inside a problem (a retryable backend
            error, a `VerifierError`, any exception of a strategy or verifier, logged with its
            traceback when it is not a `ReasoningError`) fails only that problem: its error
            row (``stop_reason="error"``) is retried on resume.
    """
    budget = budget or controller.budget
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise DatasetError(f"problem id {repeated!r} repeats; ids must be unique (results are resumed by id)")
    previous = read_results(output) if output else {}
    if identity is None:
        identity = _controller_identity(controller, strategy, budget)
    _check_identity(output, previous, ids, identity)
    done: dict[int, Run] = {}
    todo: list[int] = []
    for index, problem in enumerate(problems):
        old = previous.get(problem.id)
        if old is not None and old.error is None:
            done[index] = old
            if on_result:
                on_result(old)
        else:
            todo.append(index)
    limit = asyncio.Semaphore(concurrency or default_concurrency(controller, strategy))
    if output is not None:
        _end_last_line(output)
    sink = _Sink(output) if output else None

    async def one(index: int) -> None:
        problem = problems[index]
        async with limit:
            run = await run_problem(controller, problem, strategy, budget)
        run = (await grade_run_async(problem, run))[0]
        if spec is not None:
            run = run.model_copy(update={"spec": dict(spec)})
        done[index] = run
        if sink:  # written the moment it is finished: a crash loses nothing finished
            sink.append(run.model_dump_json() + "\n")
        if on_result:
            on_result(run)

    try:
        async with task_group() as group:  # a fatal error re-raised as itself, the rest cancelled
            for index in todo:
                group.create_task(one(index))
    finally:
        if sink:
            sink.close()
    runs = [done[i] for i in range(len(problems))]
    if output and (todo or superseded(output)):
        _rewrite_in_order(output, runs)
    return runs


async def run_problem(controller: Controller, problem: Problem, strategy: Strategy, budget: Budget) -> Run:
    """Solve one problem of a dataset run: its record, or its error row.

    Every failure of the problem becomes its error row (``stop_reason="error"``, retried on
    resume), except two: a lost engine replica (`ReplicaLost`) re-runs the problem from the
    start on a live replica of the pool (`REROUTES` times at most, then the error row), and a
    backend gone for good (`BackendError` that is not retryable, `BackendUnavailable`) is
    raised: no other problem would survive it.

    Raises:
        BackendError: The backend failed for good.
    """
    attempt = 0
    while True:
        try:
            run = await controller.run(problem, strategy, budget)
        except Exception as exc:  # every failure of this problem is its error row ...
            error = first_error(exc) if isinstance(exc, ExceptionGroup) else exc
            if isinstance(error, ReplicaLost) and attempt < REROUTES:
                attempt += 1
                logger.warning("problem %s: %s; re-running it on another replica", problem.id, error)
                continue
            if _fatal(error):  # ... but an engine gone for good stops the whole run
                raise error from None
            if not isinstance(error, ReasoningError):  # not one of ours: a bug somewhere
                logger.warning("problem %s failed", problem.id, exc_info=error)
            return _failed(controller, strategy, budget, problem, error)
        if attempt:  # the record says it was re-run (the lost attempts' tokens are not in its usage)
            run = run.model_copy(update={"engine": {**run.engine, "reroutes": attempt}})
        return run


def superseded(output: Path) -> bool:
    """Whether `output` holds rows that a later row of the same problem replaced.

    A run killed before its final rewrite leaves them (an error row, then its retry); the rewrite
    in dataset order a finished run ends with drops them.
    """
    lines = [line for line in jsonl_lines(output.read_text(encoding="utf-8")) if line.strip()]
    return len(lines) > len(read_results(output))


def tidy(output: Path, runs: Sequence[Run]) -> None:
    """Leave a finished run's `output` with one row per problem, in dataset order (when it is not)."""
    if superseded(output):
        _rewrite_in_order(output, list(runs))


class _Sink:
    """The results file, appended one whole row at a time (unbuffered: on disk at once).

    A failed append (the disk is full) is undone: the file is cut back to where the row began,
    so it never holds a partial row, and a `StoreError` names the file and the cause.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = path.open("ab", buffering=0)
        except OSError as exc:
            raise _write_error(path, exc) from None

    def append(self, row: str) -> None:
        """Append `row` (one line) whole, or not at all."""
        data = memoryview(row.encode("utf-8"))
        offset = self._file.seek(0, os.SEEK_END)
        try:
            while data:
                written = self._file.write(data)  # may write part of it (then fail on the rest)
                data = data[written or 0 :]
        except OSError as exc:
            try:
                self._file.truncate(offset)
            except OSError:  # pragma: no cover (shrinking a file does not need space)
                logger.warning("%s: could not remove a partial row at byte %d", self.path, offset)
            raise _write_error(self.path, exc) from None

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def check_writable(path: Path, inputs: Sequence[str | Path] = ()) -> None:
    """Make sure a run can write its results to `path` (creating its missing folders), before it starts.

    The file (appended to) and a file beside it (the final rewrite in dataset order) are opened
    for writing, and removed again when they did not exist.

    Args:
        path: The results file.
        inputs: Files the run reads (its dataset): the results must not overwrite one.

    Raises:
        ConfigError: `path` is a directory or not a regular file, lies under a file, is one of
            `inputs`, or cannot be written (the message says which and why).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"results file {path} is a directory; give a file path, e.g. {path / 'results.jsonl'}"
        )
    if path.exists() and not path.is_file():
        raise ConfigError(f"results file {path} is not a regular file (a device, a pipe?); give a file path")
    for dataset in inputs:
        if path.exists() and Path(dataset).exists() and path.samefile(dataset):
            raise ConfigError(f"results file {path} is the dataset itself; give another --output")
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ConfigError(f"results file {path} lies under {parent}, which is a file, not a folder")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for each in (path, path.with_name(path.name + ".tmp")):
            existed = each.exists()
            with each.open("ab"):
                pass
            if not existed:
                each.unlink()
    except OSError as exc:
        raise ConfigError(f"results file {path} cannot be written ({exc.strerror or exc})") from None


def _write_error(path: Path, exc: OSError) -> StoreError:
    return StoreError(
        f"{path}: cannot write results ({exc.strerror or exc}); the rows written before are kept "
        "(no partial row): free some space and re-run the same command to resume"
    )


def _end_last_line(output: Path) -> None:
    """Before appending: end a last line a kill left without its newline.

    A complete row that lost only its newline gets it back (it is a finished result); a cut row
    (`read_results` dropped it) is removed, so a new row is not glued onto it.
    """
    if not output.exists():
        return
    try:
        _end_cut_line(output)
    except OSError as exc:
        raise _write_error(output, exc) from None


def _end_cut_line(output: Path) -> None:
    with output.open("rb+") as file:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            return
        file.seek(size - 1)
        if file.read(1) == b"\n":
            return
        file.seek(0)
        data = file.read()
        start = data.rfind(b"\n") + 1
        try:
            Run.model_validate_json(data[start:])
        except ValueError:
            file.truncate(start)  # the cut row, which will be solved again
        else:
            file.write(b"\n")


def _fatal(error: BaseException) -> bool:
    """A backend failure no other problem would survive: not retryable, or unreachable."""
    return isinstance(error, BackendError) and (not error.retryable or isinstance(error, BackendUnavailable))


def _rewrite_in_order(output: Path, runs: list[Run]) -> None:
    """Once every problem is done, leave the file in dataset order (atomically)."""
    ids = {run.problem_id for run in runs}
    others = [r for r in read_results(output).values() if r.problem_id not in ids]
    temporary = output.with_name(output.name + ".tmp")
    try:
        with temporary.open("w", encoding="utf-8") as sink:
            for run in [*others, *runs]:
                sink.write(run.model_dump_json() + "\n")
        os.replace(temporary, output)
    except OSError as exc:  # the file itself is untouched: every row is still in it
        temporary.unlink(missing_ok=True)
        raise _write_error(output, exc) from None


def check_resumable(
    output: Path, problems: Sequence[Problem], controller: Controller, strategy: Strategy, budget: Budget
) -> None:
    """Raise `ConfigError` if `output` holds results of another configuration for `problems`.

    Cheap (no model call). `controller` may hold stand-in backends that only carry ``name``
    and ``model``; `unfinished` does the same from a `resume_identity`, without a controller.
    """
    previous = read_results(output)
    expected = _controller_identity(controller, strategy, budget)
    _check_identity(output, previous, [p.id for p in problems], expected)


def resume_identity(
    strategy: Strategy,
    *,
    model: str,
    backends: Mapping[str, str] | None = None,
    seed: int | None = 0,
    budget: Budget | None = None,
    budgets: Mapping[str, Budget] | None = None,
    artefacts: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What a results file's rows must share with a run for it to resume them.

    The strategy and its parameters, the model (and each named backend's), the seed, the budget
    and each named backend's budget lines: the fields of `Run` of those names, as JSON values;
    and the sha256 of every probe or value model the strategy reads (``Run.spec["artefacts"]``):
    a rebuilt artefact does not resume the rows of the old one.

    Args:
        strategy: The run's strategy.
        model: The default backend's model, as records name it.
        backends: Named backends and their models (none: a single unnamed backend).
        seed: The run seed.
        budget: Budget per problem.
        budgets: Named backends' budget lines.
        artefacts: The artefacts' sha256 by kind and path (`reasoning.evals.artefacts.artefact_hashes`).
    """
    backends = dict(backends or {})
    budgets = budgets or {}
    return _identity(
        Run(
            problem_id="",
            strategy=STRATEGIES.name_of(strategy),
            params=params_of(strategy),
            model=model,
            backends=backends,
            budgets={name: asdict(budgets.get(name, Budget())) for name in backends},
            seed=seed,
            budget=asdict(budget or Budget()),
            spec={"artefacts": dict(artefacts)} if artefacts else {},
        )
    )


def unfinished(
    output: Path | None, problems: Sequence[Problem], identity: Mapping[str, Any]
) -> list[Problem]:
    """The problems a run writing `output` has still to solve (all of them without a file).

    A problem is finished when `output` holds a row of it without an error.

    Raises:
        ConfigError: `output` holds results of another configuration (`resume_identity`).
    """
    previous = read_results(output) if output else {}
    _check_identity(output, previous, [p.id for p in problems], identity)
    return [p for p in problems if p.id not in previous or previous[p.id].error is not None]


def _controller_identity(controller: Controller, strategy: Strategy, budget: Budget) -> dict[str, Any]:
    return resume_identity(
        strategy,
        model=controller.model or str(getattr(controller.primary, "model", "")),
        backends=controller.models(),
        seed=controller.seed,
        budget=budget,
        budgets=controller.budgets,
    )


def _check_identity(
    output: Path | None, previous: dict[str, Run], ids: Sequence[str], expected: Mapping[str, Any]
) -> None:
    wanted = set(ids)
    for run in previous.values():
        if run.problem_id in wanted and _identity(run) != expected:
            mismatch = [k for k in (*_IDENTITY, "artefacts") if _identity(run)[k] != expected.get(k)]
            raise ConfigError(
                f"{output} holds results of another configuration (different {', '.join(mismatch)}); "
                "use a new --output or the same settings to resume"
            )


def _probe_run(controller: Controller, strategy: Strategy, budget: Budget) -> Run:
    """A Run carrying only the fields of this configuration (an error row's start)."""
    return Run(
        problem_id="",
        strategy=STRATEGIES.name_of(strategy),
        params=params_of(strategy),
        model=controller.model or str(getattr(controller.primary, "model", "")),
        backends=controller.models(),
        budgets={name: asdict(controller.budgets.get(name, Budget())) for name in controller.backends},
        seed=controller.seed,
        budget=asdict(budget),
    )


def _failed(
    controller: Controller, strategy: Strategy, budget: Budget, problem: Problem, exc: BaseException
) -> Run:
    base = _probe_run(controller, strategy, budget)
    return base.model_copy(
        update={
            "problem_id": problem.id,
            "question": problem.question,
            "gold": problem.answer,
            "stop_reason": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "backend": controller.primary.name,
        }
    )
