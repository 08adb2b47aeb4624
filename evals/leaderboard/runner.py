"""Run a leaderboard: every cell's unfinished problems, interleaved on each model's engine.

Models run one after another (each engine gets the machine to itself). On one engine, the
problems of every cell and seed are interleaved round-robin under one limit on the *samples*
in flight (a self-consistency problem of n=8 holds 8, a greedy one 1), so the engine stays
saturated across entries and every entry makes progress together. Each problem is graded and
committed to the store the moment it finishes (`Store.put`); a problem that fails is an error
row, retried by the next run; an engine that dies stops the run with everything finished kept
(on a pool of engine replicas, a problem whose replica died is re-run on a live one).

A deterministic leaderboard (``deterministic: true``) solves its problems one at a time in the
plan's order instead, each on a deterministic `Controller` (the mode of ``reasoning solve
--deterministic``): the engine starts as it always does, and every row repeats on a re-run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from reasoning import Controller, Problem, Run
from reasoning.concurrency import task_group
from reasoning.engine.hardware import machine
from reasoning.errors import ConfigError, ReasoningError, StoreError
from reasoning.evals.artefacts import check_artefacts
from reasoning.evals.leaderboard.replay import ReadMemo, ReplayBackend, with_source_costs
from reasoning.evals.leaderboard.spec import Cell, LeaderboardSpec, served_models
from reasoning.evals.leaderboard.store import CellRow, Store
from reasoning.evals.run import grade_run_async, run_problem

logger = logging.getLogger(__name__)

__all__ = ["Job", "StartBackend", "arun_leaderboard", "load_problems", "plan", "run_leaderboard", "selected"]

StartBackend = Callable[[str, bool], Any]
"""Starts the backend of a model by its leaderboard name (and whether hidden states are needed)."""


@dataclass(frozen=True)
class Job:
    """One problem to solve by one cell under one seed."""

    cell: Cell
    seed: int
    position: int
    problem: Problem


def load_problems(spec: LeaderboardSpec) -> dict[str, list[Problem]]:
    """Every dataset's problems, loaded before any compute.

    Raises:
        ConfigError: Some datasets cannot be loaded (every one is listed with its name).
    """
    from reasoning.evals.datasets import load_dataset

    problems: dict[str, list[Problem]] = {}
    errors = []
    for name, data in spec.datasets.items():
        try:
            seed = spec.seeds[0] if data.seed is None else data.seed
            problems[name] = load_dataset(
                data.name, limit=data.limit, offset=data.offset, fields=data.fields, seed=seed
            )
        except ReasoningError as exc:
            errors.append(f"datasets.{name}: {exc}")
    if errors:
        raise ConfigError(f"invalid leaderboard {spec.name}: " + "; ".join(errors))
    return problems


def selected(
    cells: Sequence[Cell], entries: Collection[str] | None, models: Collection[str] | None = None
) -> list[Cell]:
    """The cells of the named `entries` and `models` (all when None), with the cells they select over.

    An entry with ``over:`` reads its source's stored samples, so its source runs too.
    """
    if models is not None:
        cells = [c for c in cells if c.model in set(models)]
    if entries is None:
        return list(cells)
    wanted = set(entries)
    wanted |= {s.entry for c in cells if c.entry in wanted and c.over for s in cells if s.key == c.over}
    return [c for c in cells if c.entry in wanted]


def cell_problems(cell: Cell, problems: Mapping[str, list[Problem]]) -> list[Problem]:
    """The problems `cell` solves: its dataset's, the first `Cell.limit` of them when it has one."""
    return problems[cell.dataset][: cell.limit]


def iid_samples(cell: Cell) -> bool:
    """Whether the cell's candidates are independent samples of one prompt (pass@k and maj@k hold)."""
    return bool(getattr(cell.strategy, "independent_samples", False))


def plan(
    spec: LeaderboardSpec, cells: Sequence[Cell], problems: Mapping[str, list[Problem]], store: Store
) -> list[Job]:
    """The jobs still to do, interleaved round-robin over cells (and seeds), models in order."""
    for cell in cells:
        store.add_cell(
            CellRow(
                key=cell.key, leaderboard=spec.name, entry=cell.entry, label=cell.label, model=cell.model,
                dataset=cell.dataset, strategy=cell.strategy_name, swept=cell.swept,
                identity=cell.identity(spec), iid_samples=iid_samples(cell),
            )
        )  # fmt: skip
    queues: dict[str, list[deque[Job]]] = {}
    for cell in cells:
        for seed in spec.seeds:
            done = store.done(cell.key, seed)
            todo = deque(
                Job(cell, seed, i, p) for i, p in enumerate(cell_problems(cell, problems)) if p.id not in done
            )
            if todo:
                queues.setdefault(cell.model, []).append(todo)
    jobs: list[Job] = []
    for model in spec.models:
        lanes = queues.get(model, [])
        mine: list[Job] = []
        while any(lanes):
            for lane in lanes:
                if lane:
                    mine.append(lane.popleft())
        # Selections over another cell's samples after every sampling job (they read its rows).
        jobs += [j for j in mine if j.cell.over is None] + [j for j in mine if j.cell.over is not None]
    return jobs


class _Samples:
    """A first-come first-served limit on samples in flight (a job holds its strategy's n)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.free = capacity
        self.waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def hold(self, weight: int) -> AsyncIterator[None]:
        weight = max(1, min(weight, self.capacity))
        if not self.waiting and self.free >= weight:
            self.free -= weight
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiting.append((weight, future))
            await future
        try:
            yield
        finally:
            self.free += weight
            while self.waiting and (self.waiting[0][1].done() or self.waiting[0][0] <= self.free):
                wanted, future = self.waiting.popleft()
                if not future.done():
                    self.free -= wanted
                    future.set_result(None)


def _weight(cell: Cell) -> int:
    strategy = cell.strategy
    for name in ("n", "k", "batch", "num_particles", "width"):
        value = getattr(strategy, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1


def run_leaderboard(
    spec: LeaderboardSpec,
    store: Store,
    start: StartBackend,
    *,
    console: Console | None = None,
    close: Callable[[Any], None] | None = None,
    announce: Callable[[Controller], Any] | None = None,
    entries: Collection[str] | None = None,
    models: Collection[str] | None = None,
) -> int:
    """Solve every unfinished job of `spec` (see the module docstring); returns the jobs solved.

    `start` starts a model's backend (by its name in the leaderboard), `close` shuts it down
    once its jobs are done, `announce` is awaited with a controller on it first (the CLI's
    ``engine ready`` line). `entries`: solve only the cells of the entries of these names (a
    new entry added to a leaderboard whose other entries should wait); `models`: only the cells
    of these models (by their leaderboard names). Runs its own event loop;
    `arun_leaderboard` is the same in a running one.

    Raises:
        ConfigError: The spec or a dataset is invalid (before any backend starts).
        BackendError: A backend failed for good; everything finished is in the store.
    """
    return asyncio.run(
        arun_leaderboard(
            spec,
            store,
            start,
            console=console,
            close=close,
            announce=announce,
            entries=entries,
            models=models,
        )
    )


async def arun_leaderboard(
    spec: LeaderboardSpec,
    store: Store,
    start: StartBackend,
    *,
    console: Console | None = None,
    close: Callable[[Any], None] | None = None,
    announce: Callable[[Controller], Any] | None = None,
    entries: Collection[str] | None = None,
    models: Collection[str] | None = None,
) -> int:
    """`run_leaderboard` in the running event loop (where the backends' clients live).

    Raises:
        ConfigError: The spec or a dataset is invalid (before any backend starts).
        BackendError: A backend failed for good; everything finished is in the store.
    """
    cells = selected(spec.cells(), entries, models)
    problems = load_problems(spec)
    console = console or Console(stderr=True)
    for cell in cells:  # artefacts usable, and fitted on none of the problems the cell solves
        try:
            warnings = check_artefacts(
                [cell.strategy], served_models(spec.models[cell.model]), cell_problems(cell, problems)
            )
            for warning in warnings:
                console.print(f"[bold yellow]warning:[/] {escape(warning)}")
        except ConfigError as exc:
            raise type(exc)(
                f"invalid leaderboard {spec.name}: entry {cell.label} on {cell.model}/{cell.dataset}: {exc}"
            ) from None
    jobs = plan(spec, cells, problems, store)
    console = console or Console(stderr=True)
    if not jobs:
        console.print(
            f"nothing left to do: {store.path} holds every problem of every entry (no engine started)"
        )
        return 0
    totals = {cell.key: len(cell_problems(cell, problems)) * len(spec.seeds) for cell in cells}
    left = {cell.key: 0 for cell in cells}
    for job in jobs:
        left[job.cell.key] += 1
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acc {task.fields[acc]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        overall = bar.add_task("all entries", total=len(jobs), acc="-")
        tasks = {
            cell.key: bar.add_task(
                escape(_where(cell, spec)),
                total=totals[cell.key],
                completed=totals[cell.key] - left[cell.key],
                acc="-",
            )
            for cell in cells
        }
        score: dict[str, list[int]] = {cell.key: [0, 0] for cell in cells}
        for cell in cells:  # the accuracy shown counts the rows already stored
            stored = [r for r in store.results(cell.key) if r.error is None and r.correct is not None]
            score[cell.key] = [sum(bool(r.correct) for r in stored), len(stored)]
            if stored:
                bar.update(tasks[cell.key], acc=f"{score[cell.key][0] / len(stored):.0%}")
        solved = 0
        outcomes: dict[str, list[Run]] = {cell.key: [] for cell in cells}
        for model in spec.models:
            mine = [job for job in jobs if job.cell.model == model]
            if not mine:
                continue
            hidden = any(getattr(job.cell.strategy, "needs_hidden_states", False) for job in mine)
            backend = start(model, hidden)
            try:

                def advance(job: Job, run: Run) -> None:
                    nonlocal solved
                    solved += 1
                    outcomes[job.cell.key].append(run)
                    if run.correct is not None:
                        score[job.cell.key][0] += int(run.correct)
                        score[job.cell.key][1] += 1
                    right, graded = score[job.cell.key]
                    acc = f"{right / graded:.0%}" if graded else "-"
                    bar.update(tasks[job.cell.key], advance=1, acc=acc)
                    bar.update(overall, advance=1)

                await _solve(spec, model, mine, backend, store, advance, announce)
            finally:
                if close is not None:
                    close(backend)
    failed = [
        f"{_where(cell, spec)}: {len(outcomes[cell.key])} of {len(outcomes[cell.key])} failed "
        f"(the first error: {outcomes[cell.key][0].error})"
        for cell in cells
        if outcomes[cell.key] and all(r.error is not None for r in outcomes[cell.key])
    ]
    if failed:  # after every row is stored: the rest of the board stands
        raise ReasoningError(
            "entries that failed every problem they ran: "
            + "; ".join(failed)
            + f" (error rows are in {store.path} and are retried by the next run)"
        )
    return solved


async def _solve(
    spec: LeaderboardSpec,
    model: str,
    jobs: list[Job],
    backend: Any,
    store: Store,
    advance: Callable[[Job, Run], None],
    announce: Callable[[Controller], Any] | None,
) -> None:
    """Solve `jobs` on one model's backend, all interleaved under one limit on samples in flight.

    With ``spec.deterministic``, one after another, in order, on deterministic controllers.
    """
    controllers: dict[int, Controller] = {}

    def controller(seed: int) -> Controller:
        if seed not in controllers:
            controllers[seed] = Controller(backend, seed=seed, deterministic=spec.deterministic)
        return controllers[seed]

    try:
        if announce is not None:
            await announce(controller(spec.seeds[0]))
        grouped = dict(backend) if isinstance(backend, Mapping) else {}  # a model group's backends
        members = list(grouped.values()) or [backend]
        capacity = spec.concurrency or 2 * max(int(getattr(b, "max_concurrency", 32)) for b in members)
        limit = _Samples(capacity)
        if grouped:
            info = {name: dict(getattr(b, "engine_info", {}) or {}) for name, b in grouped.items()}
        else:
            info = dict(getattr(backend, "engine_info", {}) or {})
        session = store.start_session(model, info, _machine())
        started = time.monotonic()
        spent = {"output": 0, "prompt": 0}
        memo = ReadMemo()  # selections over the same samples read each probe input once

        async def one(job: Job) -> None:
            run_controller = controller(job.seed)
            source = None
            if job.cell.over is not None:  # select over the samples that cell stored
                with contextlib.suppress(StoreError):
                    source = store.record(job.cell.over, job.problem.id, job.seed)
                if source is None or source.error is not None:
                    waiting.append(job)  # the source has no sampled row: left for the next run
                    return
                replay = ReplayBackend(backend, source, job.cell.over_label or "", memo)
                run_controller = Controller(replay, seed=job.seed, deterministic=spec.deterministic)
            async with limit.hold(_weight(job.cell)):  # its error row, unless the engine is gone
                run = await run_problem(run_controller, job.problem, job.cell.strategy, job.cell.budget)
            if source is not None and replay.served:  # nothing replayed (a greedy route): its own costs
                run = with_source_costs(run, source, job.cell.over_label or "", replay.replayed_tokens)
            run, verdicts = await grade_run_async(job.problem, run)
            samples = [
                (c.answer, verdict, c.output_tokens)
                for c, verdict in zip(run.candidates, verdicts, strict=True)
            ]
            store.put(job.cell.key, job.seed, job.position, run, samples, session)
            spent["output"] += int(run.usage.get("output_tokens", 0)) - int(
                run.usage.get("replayed_tokens", 0)
            )
            spent["prompt"] += int(run.usage.get("prompt_tokens", 0))
            store.update_session(session, time.monotonic() - started, spent["output"], spent["prompt"])
            advance(job, run)

        waiting: list[Job] = []
        sampling = [job for job in jobs if job.cell.over is None]
        for phase in (sampling, [job for job in jobs if job.cell.over is not None]):
            if spec.deterministic:  # one at a time (a replay's controller has a turn of its own)
                for job in phase:
                    await one(job)
                continue
            async with task_group() as group:  # a fatal error re-raised as itself, the rest cancelled
                for job in phase:
                    group.create_task(one(job))
        if waiting:
            cells = sorted({f"{j.cell.label} (over {j.cell.over_label})" for j in waiting})
            logger.warning(
                "%d problems of %s wait for their source's rows (it has none, or an error row); "
                "run the source entry, then this again",
                len(waiting),
                ", ".join(cells),
            )
    finally:
        opened = [b for c in controllers.values() for b in (c.backends.values() or [c.primary])]
        for each in {id(b): b for b in opened}.values():
            aclose = getattr(each, "aclose", None)
            if aclose is not None:
                await aclose()


def _where(cell: Cell, spec: LeaderboardSpec) -> str:
    """The cell's label, with its model and dataset when the leaderboard has several."""
    place = [
        name
        for name, many in ((cell.model, len(spec.models) > 1), (cell.dataset, len(spec.datasets) > 1))
        if many
    ]
    return f"{cell.label} [{'/'.join(place)}]" if place else cell.label


def _machine() -> dict[str, Any]:
    m = machine()
    described = asdict(m)
    described["flags"] = sorted(f for f in m.flags if f.startswith(("avx", "amx", "sse4", "fma", "bf16")))
    return described
