"""``reasoning leaderboard``: run a strategy x budget x dataset matrix, report it, advise from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from reasoning.errors import BackendError

__all__ = ["leaderboard_app"]

leaderboard_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Compare strategies x budgets x datasets x models: run into a SQLite store, report, advise.",
)

ConfigArgument = Annotated[
    Path, typer.Argument(help="Leaderboard file (YAML; see reasoning.evals.leaderboard.spec).")
]
StoreOption = Annotated[
    Path | None,
    typer.Option("--store", help="SQLite store (default: the file's `store`, or results/<name>.sqlite)."),
]


@leaderboard_app.command("run")
def run(
    config: ConfigArgument,
    store: StoreOption = None,
    limit: Annotated[
        int | None,
        typer.Option(help="Solve at most this many problems of each dataset (a quick first pass)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show engine logs.")] = False,
) -> None:
    """Solve every entry's unfinished problems; each is stored as it finishes (a re-run resumes)."""
    from reasoning.evals.cli import _announce, _close, _start, err, quiet_engine_logs
    from reasoning.evals.leaderboard.runner import cell_problems, load_problems, run_leaderboard
    from reasoning.evals.leaderboard.spec import read_leaderboard
    from reasoning.evals.leaderboard.store import Store
    from reasoning.evals.spec import VLLMEngine

    quiet_engine_logs(verbose)
    spec = read_leaderboard(config)
    if store is not None:
        spec = spec.model_copy(update={"store": store})
    if limit is not None:
        datasets = {
            name: d.model_copy(update={"limit": min(limit, d.limit) if d.limit is not None else limit})
            for name, d in spec.datasets.items()
        }
        spec = spec.model_copy(update={"datasets": datasets})
    cells = spec.cells()  # every error listed, before any compute
    problems = load_problems(spec)
    size = sum(len(cell_problems(c, problems)) for c in cells) * len(spec.seeds)
    err.print(
        f"leaderboard {spec.name}: {len(cells)} entries x datasets x models, {len(spec.seeds)} seed(s), "
        f"{size} problem runs; store {spec.store_path}",
        highlight=False,
    )

    def start(model: str, hidden_states: bool) -> Any:
        from reasoning.config import EngineConfig

        backend = spec.models[model]
        engine = None
        if isinstance(backend, VLLMEngine):
            settings = {**backend.engine_settings(), "hidden_states": backend.hidden_states or hidden_states}
            engine = EngineConfig(**settings)
        return _start(backend, engine)

    with Store.open(spec.store_path) as opened:
        try:
            solved = run_leaderboard(spec, opened, start, console=err, close=_close, announce=_announce)
        except BackendError as exc:
            raise BackendError(
                f"{exc}\nevery finished problem is in {spec.store_path}; re-run the same command to resume",
                backend=exc.backend,
            ) from exc
    err.print(f"solved {solved} problem runs; report: reasoning leaderboard report {config}", highlight=False)


@leaderboard_app.command("report")
def report(
    config: ConfigArgument,
    store: StoreOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder to write into (default: results/leaderboard/<name>/)."),
    ] = None,
) -> None:
    """Write the report (README.md, index.html, plots) from the store; starts no engine."""
    from reasoning.evals.cli import out as stdout
    from reasoning.evals.leaderboard.report import collect, rich_tables, write
    from reasoning.evals.leaderboard.spec import read_leaderboard
    from reasoning.evals.leaderboard.store import Store

    spec = read_leaderboard(config)
    folder = out or Path("results") / "leaderboard" / spec.name
    with Store.open(store or spec.store_path, create=False) as opened:
        collected = collect(spec, opened)
    for table in rich_tables(collected):
        stdout.print(table)
    paths = write(collected, folder)
    stdout.print(
        f"wrote {len(paths)} files into {folder}/: {', '.join(p.name for p in paths)}", highlight=False
    )
