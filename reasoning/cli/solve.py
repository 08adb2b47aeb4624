"""The ``reasoning`` command line: ``solve`` datasets or questions, list ``strategies``."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reasoning import STRATEGIES, Controller, Problem, ReasoningError, Run
from reasoning.backends.specs import DEFAULT_SCRIPT, ServerBackend
from reasoning.cli.common import (
    DEFAULTS,
    ImportOption,
    TrustRemoteCodeOption,
    announce,
    backends_of,
    close,
    err,
    launch,
    launch_all,
    launch_pool,
    load_strategies,
    named_values,
    out,
    parse_params,
    quiet_engine_logs,
    settings_of,
    stop_on_signals,
    with_prm,
    with_settings,
)
from reasoning.compose import build
from reasoning.concurrency import run_all
from reasoning.engine.models import EMBEDDED_MODELS
from reasoning.errors import BackendError, ConfigError
from reasoning.evals.artefacts import check_artefacts
from reasoning.evals.spec import RunSpec, read_spec

__all__ = ["execute", "solve", "spec_of", "strategies"]


def strategies(import_: ImportOption = None) -> None:
    """List the strategies and their parameters."""
    load_strategies(import_)
    for name in STRATEGIES.names():
        aliases = STRATEGIES.aliases(name)
        title = f"{name} (also: {', '.join(aliases)})" if aliases else name
        table = Table(title=title, title_justify="left", show_edge=False)
        for column in ("parameter", "type", "default", "meaning"):
            table.add_column(column)
        for p in STRATEGIES.parameters(name):
            table.add_row(p.name, p.type, repr(p.default), p.doc)
        out.print(table)
        out.print()


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Run spec, YAML or JSON (backends, strategy and params, budget, dataset, output, ...; "
        "see reasoning.evals.spec); the flags given override it.",
    ),
]


def solve(
    config: ConfigOption = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="gsm8k, gsm8k-train, math500, aime24, a .jsonl file, gym:<task> or hf:<id>."),
    ] = None,
    question: Annotated[
        str | None, typer.Option(help="Solve one ad-hoc question instead of a dataset.")
    ] = None,
    gold: Annotated[str | None, typer.Option(help="Gold answer of --question, to grade it.")] = None,
    limit: Annotated[int | None, typer.Option(help="Solve at most this many problems.")] = None,
    offset: Annotated[int | None, typer.Option(help="Skip this many problems first (default 0).")] = None,
    field: Annotated[
        list[str] | None,
        typer.Option("--field", help="JSONL field mapping, e.g. question=problem (repeatable)."),
    ] = None,
    no_grade: Annotated[
        bool,
        typer.Option(
            "--no-grade",
            help="Grade nothing: the dataset's rows need no answer (without it, a row without one "
            "is refused) and no accuracy is reported.",
        ),
    ] = False,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            "-s",
            help="Strategy name or spec, e.g. 'self-consistency(n=4, inner=budget-forcing(max_tokens=256))' "
            "(see `reasoning strategies`; default self-consistency).",
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Strategy parameter name=value (repeatable)."),
    ] = None,
    budget_tokens: Annotated[int | None, typer.Option(help="Output-token budget per problem.")] = None,
    budget_prompt_tokens: Annotated[int | None, typer.Option(help="Prompt-token budget per problem.")] = None,
    budget_calls: Annotated[int | None, typer.Option(help="Model-call budget per problem.")] = None,
    budget_seconds: Annotated[float | None, typer.Option(help="Wall-clock budget per problem.")] = None,
    budget_line: Annotated[
        list[str] | None,
        typer.Option(
            help="Budget line of a named backend, e.g. draft.output_tokens=4000 (repeatable; "
            "lines: output_tokens, prompt_tokens, calls, seconds)."
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Embedded model ({', '.join(EMBEDDED_MODELS)}), local HF folder or HF id; "
            "several named ones as name=model (repeatable, e.g. draft=0.5b target=1.5b; the first "
            "is the default)."
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="vllm (in-process engine, the default), openai (a running server, see --base-url) "
            "or scripted (a fixed reply, for dry runs). It, --model and --base-url replace the "
            "--config file's backends."
        ),
    ] = None,
    base_url: Annotated[
        list[str] | None,
        typer.Option(
            help="URL of an OpenAI-compatible server (implies --backend openai); several named "
            "ones as name=URL (repeatable)."
        ),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="OPENAI_API_KEY", help="API key of the server (default EMPTY).")
    ] = None,
    script: Annotated[
        str | None, typer.Option(help=f"Reply of the scripted backend (default {DEFAULT_SCRIPT!r}).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Run seed (per-request seeds derive from it; default 0).")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Results JSONL (appended; re-running resumes).")] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Problems in flight (default: sized to the engine).")
    ] = None,
    kv_cache_gb: Annotated[
        float | None,
        typer.Option(help=f"KV-cache size on CPU, GiB, of every engine (default {DEFAULTS.kv_cache_gb:g})."),
    ] = None,
    max_model_len: Annotated[int | None, typer.Option(help="Context length per sequence.")] = None,
    prm: Annotated[
        str | None,
        typer.Option(
            help="Process reward model (HF folder, Qwen2.5-Math-PRM format) served beside the policy "
            "as backend 'prm', for tree searches with -p scorer=prm."
        ),
    ] = None,
    block_size: Annotated[
        int | None,
        typer.Option(help="KV-cache block size, the prefix cache's unit (tree searches: 32 on CPU)."),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="Weight dtype of every engine: auto (the default; chosen from the CPU's features, "
            "`reasoning doctor` says why), bfloat16, float16 or float32."
        ),
    ] = None,
    trust_remote_code: TrustRemoteCodeOption = False,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Also solve the same problems with this strategy spec (e.g. single, or "
            "self-consistency:n=4), at once on the same engine, and compare them side by side."
        ),
    ] = None,
    import_: ImportOption = None,
    ray: Annotated[
        str | None,
        typer.Option(help="Spread the problems over engine replicas on a Ray cluster: auto or HOST:PORT."),
    ] = None,
    replicas: Annotated[
        int | None, typer.Option(help="Engine replicas with --ray (default: one per node).")
    ] = None,
    deterministic: Annotated[
        bool,
        typer.Option(
            "--deterministic",
            help="Reproducible records: the same seed on the same engine and machine gives the same "
            "record (timings aside). Problems and requests run one at a time, each problem from an "
            "empty prefix cache; slower (a request's samples still batch). In-process engines only.",
        ),
    ] = False,
    truncated_answers: Annotated[
        str | None,
        typer.Option(
            help="What counts as the answer of a sample cut short by max_tokens: written (default: "
            "only a closed \\boxed{} or a complete 'the answer is' line) or any (its last number too).",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show engine logs.")] = False,
) -> None:
    """Solve a dataset (or one --question) with a strategy, under a budget.

    The settings are a run spec: the --config file's, with the flags given overriding it.
    """
    flags = dict(locals())  # every option, by name
    quiet_engine_logs(verbose)
    stop_on_signals()
    execute(spec_of(config, flags))


def spec_of(config: Path | None, flags: Mapping[str, Any]) -> RunSpec:
    """The run spec of a ``solve`` command: the `config` file's settings, the `flags` given over them.

    A flag overrides its setting; ``--param``, ``--field``, ``--budget-line`` and ``--import``
    add to the file's (a different ``--strategy`` drops the file's parameters). ``--backend``,
    ``--model`` and ``--base-url`` replace the file's backends; ``--kv-cache-gb``,
    ``--max-model-len``, ``--block-size`` and ``--dtype`` set every engine's, ``--script``
    every scripted backend's and ``--api-key`` every server's.

    Raises:
        ConfigError: The file or a flag is invalid (the message names the setting).
    """
    spec: dict[str, Any] = read_spec(config) if config is not None else {}
    # The problems.
    if flags["question"] is not None:
        spec["question"] = flags["question"]
        if flags["dataset"] is None:
            spec.pop("dataset", None)
    if flags["gold"] is not None:
        spec["gold"] = flags["gold"]
    if flags["dataset"] is not None:
        if flags["question"] is None:
            spec.pop("question", None)
            spec.pop("gold", None)
        spec["dataset"] = {**settings_of(spec.get("dataset"), "name"), "name": flags["dataset"]}
    if spec.get("dataset") is not None:
        data = settings_of(spec["dataset"], "name")
        for key in ("limit", "offset"):
            if flags[key] is not None:
                data[key] = flags[key]
        if flags["field"]:
            data["fields"] = {**data.get("fields", {}), **parse_params(flags["field"])}
        if flags.get("no_grade"):
            data["grade"] = False
        spec["dataset"] = data
    if flags.get("no_grade"):
        spec.pop("gold", None)
    # The strategy, the baseline and the budget.
    if flags["strategy"] is not None:
        if spec.get("strategy", "self-consistency") != flags["strategy"]:
            spec.pop("params", None)
        spec["strategy"] = flags["strategy"]
    if flags["param"]:
        spec["params"] = {**spec.get("params", {}), **parse_params(flags["param"])}
    budget = {
        "output_tokens": flags["budget_tokens"],
        "prompt_tokens": flags["budget_prompt_tokens"],
        "calls": flags["budget_calls"],
        "seconds": flags["budget_seconds"],
    }
    if any(value is not None for value in budget.values()):
        given = {key: value for key, value in budget.items() if value is not None}
        spec["budget"] = {**spec.get("budget", {}), **given}
    if flags["budget_line"]:
        budgets = dict(spec.get("budgets", {}))
        for name, lines in _budget_lines(flags["budget_line"]).items():
            budgets[name] = {**budgets.get(name, {}), **lines}
        spec["budgets"] = budgets
    for key in ("baseline", "seed", "output", "concurrency", "prm", "ray", "replicas"):
        if flags[key] is not None:
            spec[key] = flags[key]
    if flags["import_"]:
        spec["imports"] = [*spec.get("imports", []), *flags["import_"]]
    # The backends.
    models, urls = (
        named_values(flags["model"] or [], "model"),
        named_values(flags["base_url"] or [], "base-url"),
    )
    if flags["backend"] is not None or models is not None or urls is not None:
        spec.pop("backend", None)
        spec.pop("backends", None)
        spec.update(backends_of(flags["backend"] or "vllm", models, urls))
    engine = {
        key: flags[key]
        for key in ("kv_cache_gb", "max_model_len", "block_size", "dtype")
        if flags[key] is not None
    }
    if flags.get("trust_remote_code"):
        engine["trust_remote_code"] = True
    if flags.get("deterministic"):
        spec["deterministic"] = True
    if flags.get("truncated_answers") is not None:
        spec["truncated_answers"] = flags["truncated_answers"]
    given = {"vllm": engine, "scripted": {"script": flags["script"]}, "openai": {"api_key": flags["api_key"]}}
    settings = {kind: {k: v for k, v in values.items() if v is not None} for kind, values in given.items()}
    if not spec.get("backend") and not spec.get("backends"):
        spec["backend"] = {"kind": "vllm"}
    if spec.get("backend"):
        spec["backend"] = with_settings(spec["backend"], settings)
    if spec.get("backends"):
        spec["backends"] = {name: with_settings(b, settings) for name, b in spec["backends"].items()}
    run = RunSpec.model_validate(spec)
    _refuse_unused(run, engine, flags)
    return run


def _refuse_unused(run: RunSpec, engine: Mapping[str, Any], flags: Mapping[str, Any]) -> None:
    """Refuse a backend flag that no backend of `run` would use (it would be silently ignored).

    Raises:
        ConfigError: Names the flags and the run's backends.
    """
    kinds = sorted({b.kind for b in run.named().values()})
    backends = "/".join(kinds)
    if engine and "vllm" not in kinds:
        given = ", ".join(f"--{key.replace('_', '-')}" for key in engine)
        raise ConfigError(
            f"{given}: in-process engine options (--backend vllm), not used by --backend {backends}; "
            "drop them"
        )
    if flags.get("script") is not None and "scripted" not in kinds:
        raise ConfigError(f"--script: the scripted backend's reply, not used by --backend {backends}")


def execute(spec: RunSpec) -> None:
    """Run `spec`: every problem, with the strategy (and the baseline beside it); print a summary.

    The one function behind ``reasoning solve``. Before any engine starts, the results files
    are checked to be writable and against the spec's resume identity, and the artefacts the
    strategies name (probes, calibrations) are loaded for the run's models; when the results
    files already hold every problem, nothing starts at all and the summary is of the results
    on file.

    Raises:
        ConfigError: An invalid setting, an unusable artefact, or a results file that cannot be
            written or holds results of another configuration.
        BackendError: A backend failed for good (finished results are kept).
        ReasoningError: Every problem of the run failed (after the summary; the rows say why).
    """
    from reasoning.evals.run import check_writable, read_results, tidy, unfinished

    load_strategies(spec.imports)
    arms = _arms(spec)
    for arm in arms:  # named backends the run lacks: refused before anything starts
        spec.check_backends(
            arm.strategy, f"--baseline {spec.baseline}" if arm is not arms[-1] else _flags(spec)
        )
    problems = spec.problems()
    for arm in arms:
        if arm.output is not None:
            check_writable(arm.output, [spec.dataset.name] if spec.dataset is not None else [])
    spec = _ask_servers(spec)  # cheap: a running server's model name, for the resume identity
    for arm in arms:
        arm.identity = spec.identity(arm.strategy)
        arm.todo = len(unfinished(arm.output, problems, arm.identity))
    if not any(arm.todo for arm in arms):
        for arm in arms:
            previous = read_results(arm.output) if arm.output else {}
            arm.runs = [previous[p.id] for p in problems]
            if arm.output:  # a run killed before its final rewrite left superseded rows
                tidy(arm.output, arm.runs)
        kept = ", ".join(str(arm.output) for arm in arms)
        err.print(f"nothing left to do: {kept} already hold every problem (no engine started)")
        _summary(arms)
        return
    for warning in check_artefacts([arm.strategy for arm in arms], spec.models(), problems):
        err.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    hidden = any(getattr(arm.strategy, "needs_hidden_states", False) for arm in arms)
    engine = (
        launch_all(spec.named(), hidden_states=hidden)
        if spec.ray is None
        else launch_pool(
            spec.named()[""],
            address=spec.ray,
            replicas=spec.replicas,
            routing=spec.routing,
            hidden_states=hidden,
            prm=spec.prm,
        )
    )
    if spec.prm is not None and spec.ray is None:  # on a pool each replica holds the PRM
        engine = with_prm(engine, spec.prm)
    try:
        controller = Controller(
            engine,
            budget=spec.budget,
            seed=spec.seed,
            budgets=spec.budgets,
            deterministic=spec.deterministic,
            truncated_answers=spec.truncated_answers,
        )
        _run(problems, controller, arms, spec)
    except BackendError as exc:
        kept = ", ".join(str(arm.output) for arm in arms if arm.output)
        kept = f"finished results are kept in {kept}; " if kept else ""
        raise BackendError(f"{exc}\n{kept}re-run the same command to resume", backend=exc.backend) from exc
    finally:
        close(engine)
    if spec.question is not None:
        for arm in arms:
            run = (arm.runs or [])[0]
            tokens = run.usage.get("output_tokens", 0)
            label = f"{arm.label}: " if len(arms) > 1 else ""
            out.print(f"[bold]{label}answer:[/bold] {run.answer}   ({run.stop_reason}, {tokens} tokens)")
    _summary(arms)
    _refuse_all_failed(arms)


def _refuse_all_failed(arms: list[_Arm]) -> None:
    """Raise when every problem of an arm failed: such a run is no result (its exit code says so).

    Raises:
        ReasoningError: Names the arm and its first error.
    """
    for arm in arms:
        runs = arm.runs or []
        if runs and all(run.error is not None for run in runs):
            where = f" ({arm.output} keeps the error rows; a re-run retries them)" if arm.output else ""
            raise ReasoningError(
                f"{arm.label}: every problem failed ({len(runs)} of {len(runs)}){where}; "
                f"the first error: {runs[0].error}"
            )


def _arms(spec: RunSpec) -> list[_Arm]:
    """The strategy, and the baseline before it, each with its results file."""
    arms = [_Arm(spec.label(), build(spec.strategy, spec.params), spec.output)]
    if spec.baseline is not None:
        arms.insert(0, _Arm(f"{spec.baseline} (baseline)", build(spec.baseline), None))
    if spec.dataset is not None:
        stem = Path("results") / Path(spec.dataset.name).stem.replace(":", "-")
        for arm in arms:
            if arm.output is None:
                name = STRATEGIES.name_of(arm.strategy)
                if arm is not arms[-1] and spec.output is not None:  # beside the run's own file
                    arm.output = spec.output.with_name(f"{spec.output.stem}-{name}-baseline.jsonl")
                else:
                    arm.output = Path(f"{stem}-{name}{'-baseline' if arm is not arms[-1] else ''}.jsonl")
    if len({arm.output for arm in arms if arm.output is not None}) < sum(a.output is not None for a in arms):
        raise ConfigError("--baseline and the strategy would write the same results file; pass --output")
    return arms


def _flags(spec: RunSpec) -> str:
    """The strategy as flags say it: ``--strategy NAME -p k=v ...``."""
    return " ".join([f"--strategy {spec.strategy}", *(f"-p {k}={v}" for k, v in spec.params.items())])


def _budget_lines(items: list[str]) -> dict[str, dict[str, float]]:
    lines: dict[str, dict[str, float]] = {}
    for key, value in parse_params(items).items():
        name, dot, line = key.partition(".")
        if not dot or line not in ("output_tokens", "prompt_tokens", "calls", "seconds"):
            raise ConfigError(
                f"--budget-line {key!r} is not name.line with line one of "
                "output_tokens, prompt_tokens, calls, seconds"
            )
        try:
            lines.setdefault(name, {})[line] = float(value) if line == "seconds" else int(value)
        except ValueError:
            raise ConfigError(f"--budget-line {key}={value!r} is not a number") from None
    return lines


def _served_model(backend: Any) -> Any:
    return backend.model


def _ask_servers(spec: RunSpec) -> RunSpec:
    """`spec` with the model of each server that names none filled in (asked of the server)."""
    served = {
        name: str(_served_model(launch(b)))
        for name, b in spec.named().items()
        if isinstance(b, ServerBackend) and b.model is None
    }
    return spec.with_models(served) if served else spec


@dataclass
class _Arm:
    """One strategy of a solve run (the main one, or the --baseline beside it)."""

    label: str
    strategy: Any
    output: Path | None
    runs: list[Run] | None = None
    seconds: float | None = None
    """Wall time of this session's solving (None: it solved nothing)."""
    identity: dict[str, Any] = field(default_factory=dict)
    """Its results' resume identity (`RunSpec.identity`)."""
    todo: int = 0
    """Problems it has still to solve."""


def _run(problems: list[Problem], controller: Controller, arms: list[_Arm], spec: RunSpec) -> None:
    """Solve `problems` with every arm at once on the one engine, one progress bar each."""
    from reasoning.evals.run import solve as solve_all

    record = spec.record()

    async def go() -> None:
        try:
            await announce(controller)
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("acc {task.fields[acc]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(),
                console=err,
            ) as bar:
                await run_all(*(one(arm, bar) for arm in arms))
        finally:
            for backend in controller.backends.values() or [controller.primary]:
                aclose = getattr(backend, "aclose", None)
                if aclose is not None:
                    await aclose()

    async def one(arm: _Arm, bar: Progress) -> None:
        start = time.monotonic()
        state = {"done": 0, "correct": 0, "graded": 0, "tokens": 0}
        task = bar.add_task(arm.label, total=len(problems), acc="-", tps="-")

        def on_result(run: Run) -> None:
            state["done"] += 1
            state["tokens"] += int(run.usage.get("output_tokens", 0))
            if run.correct is not None:
                state["graded"] += 1
                state["correct"] += int(run.correct)
            acc = f"{state['correct'] / state['graded']:.1%}" if state["graded"] else "-"
            tps = f"{state['tokens'] / max(time.monotonic() - start, 1e-9):.0f}"
            bar.update(task, completed=state["done"], acc=acc, tps=tps)

        arm.runs = await solve_all(
            problems,
            controller,
            arm.strategy,
            budget=spec.budget,
            output=arm.output,
            concurrency=spec.concurrency,
            on_result=on_result,
            identity=arm.identity,
            spec={**record, "artefacts": arm.identity["artefacts"]}
            if arm.identity.get("artefacts")
            else record,
        )
        arm.seconds = time.monotonic() - start

    asyncio.run(go())


def _summary(arms: list[_Arm]) -> None:
    """The summary table: one column per arm (the baseline first), rows as ``_arm_rows`` gives."""
    columns = [
        (
            arm,
            dict(
                [("sampling", _sampling(arm.strategy)), *_arm_rows(arm.runs or [], arm.seconds, arm.output)]
            ),
        )
        for arm in arms
    ]
    table = Table(title="summary", show_header=len(arms) > 1, title_justify="left")
    table.add_column("")
    for arm, _ in columns:
        table.add_column(arm.label, justify="right")
    names = list(dict.fromkeys(name for _, rows in columns for name in rows))
    for name in names:
        table.add_row(name, *(rows.get(name, "-") for _, rows in columns))
    out.print(table)
    if len(arms) > 1:
        out.print(
            "(the columns ran at once on one engine, so their wall times overlap; "
            "the accuracy intervals are Wilson 95%: on a few problems they are wide)"
        )
        samplings = {_sampling(arm.strategy) for arm in arms}
        main = arms[-1]
        if len(samplings) > 1:
            plain = getattr(main.strategy, "max_tokens", None) is not None and not _sampling(
                main.strategy
            ).startswith("its own")
            example = f", e.g. --baseline 'single:{_sampling_params(main.strategy)}'" if plain else ""
            out.print(
                "(the columns sample differently: "
                + "; ".join(f"{a.label}: {_sampling(a.strategy)}" for a in arms)
                + ". A saving against another sampling is not the strategy's own: compare like with like"
                + example
                + ")",
                highlight=False,
            )


def _sampling(strategy: Any) -> str:
    """How a strategy samples, in words (from its temperature, top_p and max_tokens)."""
    temperature = getattr(strategy, "temperature", None)
    if temperature is None or getattr(strategy, "inner", None) is not None:
        return "its own (see its parameters and its inner strategies')"
    cap = getattr(strategy, "max_tokens", None)
    up_to = f", up to {cap} tokens" if cap is not None else ""
    if temperature == 0:
        return f"greedy{up_to}"
    return f"T={temperature} top_p={getattr(strategy, 'top_p', 1.0)}{up_to}"


def _sampling_params(strategy: Any) -> str:
    """``temperature=...,top_p=...,max_tokens=...`` of a strategy, for a like-with-like baseline."""
    names = ("temperature", "top_p", "max_tokens")
    return ",".join(f"{n}={getattr(strategy, n)}" for n in names if getattr(strategy, n, None) is not None)


def _arm_rows(runs: list[Run], seconds: float | None, output: Path | None) -> list[tuple[str, str]]:
    from reasoning.evals.leaderboard.stats import e3, wilson
    from reasoning.strategies.step_tree import search_stats

    graded = [r for r in runs if r.correct is not None]
    tokens = sum(int(r.usage.get("output_tokens", 0)) for r in runs)
    prompt = sum(int(r.usage.get("prompt_tokens", 0)) for r in runs)
    cached = sum(int(r.usage.get("cached_tokens", 0)) for r in runs)
    rows = [("problems", str(len(runs)))]
    if graded:
        correct = sum(bool(r.correct) for r in graded)
        low, high = wilson(correct, len(graded))
        rows.append(
            ("accuracy", f"{correct}/{len(graded)} = {correct / len(graded):.0%} [{low:.0%}-{high:.0%}]")
        )
        efficiency = e3(correct / len(graded), tokens / max(len(runs), 1))
        if not math.isnan(efficiency):  # some token decoded (Lin et al. 2025, arXiv 2505.16122)
            rows.append(("E^3 = accuracy%² / mean tokens", f"{efficiency:.3g}"))
    rows.append(("output tokens (mean per problem)", f"{tokens / max(len(runs), 1):.0f}"))
    critical = [int(r.usage["sequential_tokens"]) for r in runs if "sequential_tokens" in r.usage]
    if critical:  # the latency proxy: tokens on the critical path (rows before it existed lack it)
        rows.append(("sequential tokens (mean per problem)", f"{sum(critical) / len(critical):.0f}"))
    rows.append(("prompt tokens cached", f"{cached}/{prompt}"))
    stats = [search_stats(r.candidates) for r in runs]
    scorer_calls = int(sum(s["scorer_calls"] for s in stats))
    if scorer_calls:  # a step search: its resubmitted step prompts and its process-scorer calls
        step_prompt = int(sum(s["prompt_tokens"] for s in stats))
        step_cached = int(sum(s["cached_tokens"] for s in stats))
        share = step_cached / max(step_prompt, 1)
        rows.append(("step prompt tokens cached", f"{step_cached}/{step_prompt} = {share:.1%}"))
        rows.append(("process scorer calls (mean per problem)", f"{scorer_calls / max(len(runs), 1):.1f}"))
    rows += _governing_rows(runs)
    rows.append(("stopped by budget", str(sum(r.stop_reason.startswith("budget") for r in runs))))
    rows.append(("no answer", str(sum(r.answer is None and r.error is None for r in runs))))
    rows.append(("errors", str(sum(r.error is not None for r in runs))))
    if seconds is not None:
        rows.append(("wall time (this session)", f"{seconds:.1f} s"))
        rows.append(("decode rate (this session)", f"{tokens / max(seconds, 1e-9):.0f} tok/s"))
    if output:
        rows.append(("results", str(output)))
    return rows


def _governing_rows(runs: list[Run]) -> list[tuple[str, str]]:
    """What probes and scorers decided, from the candidates' ``scores`` (docs/usage.md lists them).

    Early exit (``exit_token``: where a trace stopped, 0 = ran on), LT pruning (``pruned``),
    difficulty routing (``route``: 1 easy, 0 hard), tree searches (``step_score``: one scorer
    call per scored path; ``process``), value selection (``value``).
    """
    rows: list[tuple[str, str]] = []
    candidates = [c for r in runs for c in r.candidates]
    traces = [c for c in candidates if "exit_token" in c.scores and "decision_points" in c.scores]
    if traces:
        exited = [c for c in traces if c.scores["exit_token"] > 0]
        ran = [c.output_tokens for c in traces if c.scores["exit_token"] == 0]
        at = [c.scores["exit_token"] for c in exited]
        rows.append(
            (
                "traces exited early (probe)",
                f"{len(exited)}/{len(traces)}"
                + (f", at token {sum(at) / len(at):.0f} on average" if at else "")
                + (f"; those that ran on: {sum(ran) / len(ran):.0f} tokens" if ran else ""),
            )
        )
    pruned = [c for c in candidates if c.scores.get("pruned") == 1]
    if any("pruned" in c.scores for c in candidates):
        kept = [c.output_tokens for c in candidates if "pruned" in c.scores and c.scores["pruned"] == 0]
        spent = sum(c.output_tokens for c in pruned)
        rows.append(
            (
                "traces pruned (LT)",
                f"{len(pruned)}/{sum('pruned' in c.scores for c in candidates)}, "
                f"{spent} tokens decoded before the cut"
                + (f"; kept traces: {sum(kept) / len(kept):.0f} tokens on average" if kept else ""),
            )
        )
    routes = [
        r.candidates[0].scores["route"] for r in runs if r.candidates and "route" in r.candidates[0].scores
    ]
    if routes:
        easy = sum(v == 1 for v in routes)
        rows.append(("routes (difficulty probe)", f"easy {easy}, hard {len(routes) - easy}"))
    scored = [sum("step_score" in c.scores for c in r.candidates) for r in runs]
    if any(scored):
        finished = [sum(c.answer is not None and "process" in c.scores for c in r.candidates) for r in runs]
        rows.append(
            (
                "nodes scored / finished paths (mean per problem)",
                f"{sum(scored) / len(runs):.1f} / {sum(finished) / len(runs):.1f}",
            )
        )
    valued = [c.scores["value"] for c in candidates if "value" in c.scores]
    if valued:
        rows.append(
            (
                "candidates scored by the value model",
                f"{len(valued)}, mean P(right) {sum(valued) / len(valued):.2f}",
            )
        )
    return rows
