"""``reasoning leaderboard``: run a strategy x budget x dataset matrix, report it, advise from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from reasoning.cli.common import (
    announce,
    close,
    err,
    launch,
    launch_all,
    launch_pool,
    quiet_engine_logs,
    stop_on_signals,
)
from reasoning.cli.common import out as stdout
from reasoning.errors import BackendError, ConfigError

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
    entry: Annotated[
        list[str] | None,
        typer.Option(
            "--entry",
            help="Solve only the entries of this name (repeatable; an entry with over: brings its source); "
            "the rest wait.",
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="Solve only the cells of this model (its name in the file; repeatable); the rest wait.",
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Spread each model's problems over engine replicas on a Ray cluster: auto or HOST:PORT."
        ),
    ] = None,
    replicas: Annotated[
        int | None, typer.Option(help="Engine replicas per model with --ray (default: one per node).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show engine logs.")] = False,
) -> None:
    """Solve every entry's unfinished problems; each is stored as it finishes (a re-run resumes)."""
    from reasoning.evals.leaderboard.runner import cell_problems, load_problems, run_leaderboard, selected
    from reasoning.evals.leaderboard.spec import ModelGroup, read_leaderboard
    from reasoning.evals.leaderboard.store import Store

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
    cells, problems, errors = [], {}, []
    try:  # every error listed, the entries' and the datasets', before any compute
        cells = spec.cells()
    except ConfigError as exc:
        errors.append(str(exc))
    try:
        problems = load_problems(spec)
    except ConfigError as exc:
        errors.append(str(exc))
    names = sorted({c.entry for c in cells})
    unknown = sorted(set(entry or ()) - set(names))
    if unknown:
        errors.append(f"--entry {', '.join(unknown)}: no such entry; entries: {', '.join(names)}")
    unknown_models = sorted(set(model or ()) - set(spec.models))
    if unknown_models:
        errors.append(
            f"--model {', '.join(unknown_models)}: no such model; models: {', '.join(sorted(spec.models))}"
        )
    if entry or model:
        cells = selected(cells, entry or None, model or None)
    if ray is not None and not ray.strip():
        errors.append(f"--ray {ray!r} is empty: give auto (a local cluster) or a cluster's HOST:PORT")
    groups = sorted({c.model for c in cells if isinstance(spec.models.get(c.model), ModelGroup)})
    if ray is not None and groups:
        errors.append(
            f"--ray replicates one model's engine; model group {', '.join(groups)} cannot run on it: "
            "run those cells without --ray (--model NAME selects the others)"
        )
    if ray is not None and spec.deterministic:
        errors.append(
            f"--ray: {config} says deterministic: true, which empties each engine's prefix cache before "
            "each problem and solves one problem at a time on one engine; Ray replicas cannot: drop --ray, "
            "or deterministic"
        )
    if errors:
        raise ConfigError("; ".join(errors))
    size = sum(len(cell_problems(c, problems)) for c in cells) * len(spec.seeds)
    err.print(
        f"leaderboard {spec.name}: {len(cells)} cell{'s' if len(cells) != 1 else ''} (entries x datasets x "
        f"models), {len(spec.seeds)} seed(s), "
        f"{size} problem runs; store {spec.store_path}",
        highlight=False,
    )

    def start(model: str, hidden_states: bool) -> Any:
        backend = spec.models[model]
        if ray is not None:  # the model's replicas on the cluster; results still land in this store
            if isinstance(backend, ModelGroup):
                raise ConfigError("--ray replicates one model's engine; a model group cannot run on it")
            return launch_pool(
                backend, address=ray, replicas=replicas, routing="affinity", hidden_states=hidden_states
            )
        if isinstance(backend, ModelGroup):  # started together, checked to fit in memory first
            return launch_all(backend.backends, hidden_states=hidden_states)
        return launch(backend, hidden_states=hidden_states)

    if replicas is not None and ray is None:
        raise ConfigError("--replicas needs --ray (auto or HOST:PORT)")
    stop_on_signals()  # the engine is shut down; every finished problem is already in the store
    with Store.open(spec.store_path) as opened:
        try:
            solved = run_leaderboard(
                spec,
                opened,
                start,
                console=err,
                close=close,
                announce=announce,
                entries=entry or None,
                models=model or None,
            )
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


@leaderboard_app.command("advise")
def advise(
    config: ConfigArgument,
    budget_tokens: Annotated[float, typer.Option(help="Mean output tokens per problem allowed.")],
    store: StoreOption = None,
    difficulty: Annotated[
        str | None,
        typer.Option(
            help="Per-problem difficulty for per-bin allocation: 'length' (the question's length, "
            "free), or a .jsonl (id, score) / .csv (id,score) file, e.g. a difficulty probe's P(right)."
        ),
    ] = None,
    bins: Annotated[int, typer.Option(help="Difficulty bins (quantiles of the score).")] = 3,
    min_problems: Annotated[
        int, typer.Option(help="Entries with fewer problems stay out of the allocation.")
    ] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the selection / held-out split.")] = 0,
) -> None:
    """The best entry under a token budget per dataset, checked on held-out problems; starts no engine."""
    from rich.table import Table

    from reasoning.evals.leaderboard.advise import advise as advise_from
    from reasoning.evals.leaderboard.advise import difficulty_scores
    from reasoning.evals.leaderboard.runner import load_problems
    from reasoning.evals.leaderboard.spec import read_leaderboard
    from reasoning.evals.leaderboard.store import Store
    from reasoning.evals.leaderboard.summary import summarize

    spec = read_leaderboard(config)
    cells = spec.cells()
    with Store.open(store or spec.store_path, create=False) as opened:
        rows = opened.cells([c.key for c in cells])
        baselines = {c.key: (b.key if (b := spec.baseline_of(cells, c)) else None) for c in cells}
        stats = summarize(opened, rows, baselines, spec.price)
        results = {row.key: opened.results(row.key) for row in rows}
    scores = None
    if difficulty is not None:
        problems = [p for ps in load_problems(spec).values() for p in ps]
        scores = difficulty_scores(difficulty, problems)
    for advice in advise_from(
        stats, results, budget_tokens, difficulty=scores, bins=bins, seed=seed, min_problems=min_problems
    ):
        table = Table(
            title=f"{advice.dataset}: within {budget_tokens:g} output tokens per problem", show_header=False
        )
        table.add_column("")
        table.add_column("")
        if advice.best is None:
            table.add_row("advice", "no entry fits: raise the budget")
            stdout.print(table)
            continue
        best = advice.best
        table.add_row(
            "best entry",
            f"{best.label} [{best.cell.model}]: {best.accuracy:.3f} [{best.low:.3f}, {best.high:.3f}] "
            f"on {best.runs}, {best.output_tokens:.0f} tokens",
        )
        if advice.runner_up is not None:
            second = advice.runner_up
            verdict = (
                "the difference is established"
                if advice.p_value is not None and advice.p_value < 0.05
                else "the difference is NOT established"
            )
            p_text = "n/a" if advice.p_value is None else f"{advice.p_value:.2g}"
            table.add_row(
                "runner-up",
                f"{second.label} [{second.cell.model}]: {second.accuracy:.3f}, "
                f"{second.output_tokens:.0f} tokens (paired p={p_text}: {verdict})",
            )
        if advice.held_out is not None:
            label, value, count = advice.held_out
            table.add_row(
                "picked on half, scored on the other", f"{label}: {value:.3f} on {count} held-out problems"
            )
        a = advice.allocation
        if a is not None:
            chosen = "; ".join(
                f"{'hardest' if i == 0 else 'easiest' if i == len(a.chosen) - 1 else 'middle'}: {c}"
                for i, c in enumerate(a.chosen)
            )
            table.add_row("per-difficulty allocation", chosen)
            table.add_row(
                "held-out gain over the best fixed entry",
                f"{a.accuracy:.3f} ({a.tokens:.0f} tokens) vs {a.fixed} {a.fixed_accuracy:.3f} "
                f"({a.fixed_tokens:.0f} tokens): {a.gain:+.3f} [{a.low:+.3f}, {a.high:+.3f}] "
                f"p={a.p_value:.2g} on {a.problems} problems"
                + (" (over the budget on the held-out half)" if a.tokens > budget_tokens else ""),
            )
        elif scores is not None:
            table.add_row("per-difficulty allocation", "not enough shared problems (see --min-problems)")
        table.add_row("within the budget", ", ".join(advice.candidates))
        stdout.print(table)
