"""The ``reasoning`` command line: ``solve`` datasets or questions, list ``strategies``."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reasoning import STRATEGIES, Budget, Controller, Problem, ReasoningError, Run
from reasoning.concurrency import run_all
from reasoning.config import EngineConfig
from reasoning.errors import BackendError, ConfigError
from reasoning.models import DEFAULT_MODEL, EMBEDDED_MODELS

DtypeOption = Annotated[
    str,
    typer.Option(
        help="Weight dtype: auto (chosen from the CPU's features; `reasoning doctor` says why), "
        "bfloat16, float16 or float32."
    ),
]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Test-time reasoning on local vLLM engines.",
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()


def _add_probe_commands() -> None:
    from reasoning.evals.doctor import doctor
    from reasoning.evals.probe_cli import probe_app

    app.add_typer(probe_app, name="probe")
    app.command()(doctor)


_add_probe_commands()


ImportOption = Annotated[
    list[str] | None,
    typer.Option(
        "--import",
        help="Module or .py file whose @STRATEGIES.register strategies to add (repeatable); "
        "installed plugins (entry-point group reasoning.strategies) load on their own.",
    ),
]


def _strategies(modules: list[str] | None = None) -> None:
    import reasoning.strategies  # noqa: F401  (registers the built-in strategies)
    from reasoning.registry import import_strategies

    import_strategies(modules or ())


def parse_params(items: list[str]) -> dict[str, str]:
    """Turn ``["n=8", "temperature=0.7"]`` into a dict; raise `ConfigError` on bad items."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"parameter {item!r} is not of the form name=value")
        params[key.strip()] = value.strip()
    return params


@app.command()
def strategies(import_: ImportOption = None) -> None:
    """List the strategies and their parameters."""
    _strategies(import_)
    for name in STRATEGIES.names():
        table = Table(title=name, title_justify="left", show_edge=False)
        for column in ("parameter", "type", "default", "meaning"):
            table.add_column(column)
        for p in STRATEGIES.parameters(name):
            table.add_row(p.name, p.type, repr(p.default), p.doc)
        out.print(table)
        out.print()


@app.command()
def solve(
    dataset: Annotated[
        str | None,
        typer.Option(help="gsm8k, math500, aime24, a .jsonl file, gym:<task> or hf:<id>."),
    ] = None,
    question: Annotated[
        str | None, typer.Option(help="Solve one ad-hoc question instead of a dataset.")
    ] = None,
    gold: Annotated[str | None, typer.Option(help="Gold answer of --question, to grade it.")] = None,
    limit: Annotated[int | None, typer.Option(help="Solve at most this many problems.")] = None,
    offset: Annotated[int, typer.Option(help="Skip this many problems first.")] = 0,
    field: Annotated[
        list[str] | None,
        typer.Option("--field", help="JSONL field mapping, e.g. question=problem (repeatable)."),
    ] = None,
    strategy: Annotated[
        str, typer.Option(help="Strategy name (see `reasoning strategies`).")
    ] = "self-consistency",
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
        str,
        typer.Option(
            help="vllm (in-process engine), openai (a running server, see --base-url) "
            "or scripted (a fixed reply, for dry runs)."
        ),
    ] = "vllm",
    base_url: Annotated[
        list[str] | None,
        typer.Option(
            help="URL of an OpenAI-compatible server (implies --backend openai); several named "
            "ones as name=URL (repeatable)."
        ),
    ] = None,
    api_key: Annotated[str, typer.Option(envvar="OPENAI_API_KEY", help="API key of the server.")] = "EMPTY",
    script: Annotated[str, typer.Option(help="Reply of the scripted backend.")] = "The answer is \\boxed{0}.",
    seed: Annotated[int, typer.Option(help="Run seed (per-request seeds derive from it).")] = 0,
    output: Annotated[Path | None, typer.Option(help="Results JSONL (appended; re-running resumes).")] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Problems in flight (default: sized to the engine).")
    ] = None,
    kv_cache_gb: Annotated[float, typer.Option(help="KV-cache size on CPU, GiB.")] = 2.0,
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
    dtype: DtypeOption = "auto",
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Also solve the same problems with this strategy spec (e.g. single, or "
            "self-consistency:n=4), at once on the same engine, and compare them side by side."
        ),
    ] = None,
    import_: ImportOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show engine logs.")] = False,
) -> None:
    """Solve a dataset (or one --question) with a strategy, under a budget."""
    quiet_engine_logs(verbose)
    _strategies(import_)
    if (dataset is None) == (question is None):
        raise ConfigError("give exactly one of --dataset or --question")
    chosen = STRATEGIES.create(strategy, parse_params(param or []))
    arms = [_Arm(_describe(strategy, param or []), chosen, output)]
    if baseline is not None:
        from reasoning.strategies.difficulty import parse_spec

        arms.insert(0, _Arm(f"{baseline} (baseline)", parse_spec(baseline), None))
    budget = Budget(
        output_tokens=budget_tokens,
        prompt_tokens=budget_prompt_tokens,
        calls=budget_calls,
        seconds=budget_seconds,
    )
    budgets = _budget_lines(budget_line or [])
    problems = _problems(dataset, question, gold, limit, offset, field or [], seed)
    if dataset is not None:
        stem = Path("results") / Path(dataset).stem.replace(":", "-")
        for arm in arms:
            if arm.output is None:
                name = STRATEGIES.name_of(arm.strategy)
                arm.output = Path(f"{stem}-{name}{'-baseline' if arm is not arms[-1] else ''}.jsonl")
    if len({arm.output for arm in arms if arm.output is not None}) < sum(a.output is not None for a in arms):
        raise ConfigError("--baseline and the strategy would write the same results file; pass --output")
    for arm in arms:
        if arm.output is not None:
            arm.output.parent.mkdir(parents=True, exist_ok=True)
    if base_url and backend == "vllm":
        backend = "openai"
    if prm is not None and backend != "vllm":
        raise ConfigError("--prm starts an in-process pooling engine: it needs --backend vllm")
    models, urls = _named(model or [], "model"), _named(base_url or [], "base-url")
    if prm is not None and isinstance(models, dict) and "prm" in models:
        raise ConfigError("--prm is served as backend 'prm': no --model may be named prm")
    if backend == "vllm":
        # Refuse a results file of other settings before spending ~40 s starting an engine.
        from reasoning.evals.run import check_resumable

        stand_in = Controller(
            _with_prm(_stand_ins(models), prm, _StandIn), budget=budget, seed=seed, budgets=budgets
        )
        for arm in arms:
            if arm.output is not None and arm.output.exists():
                check_resumable(arm.output, problems, stand_in, arm.strategy, budget)
    hidden = any(getattr(arm.strategy, "needs_hidden_states", False) for arm in arms)
    engine = _backend(
        backend, models, script, kv_cache_gb, max_model_len, seed, urls, api_key, hidden, block_size, dtype
    )
    if prm is not None:
        engine = _with_prm(engine, prm, _start_prm)
    try:
        controller = Controller(engine, budget=budget, seed=seed, budgets=budgets)
        _run(problems, controller, arms, budget, concurrency)
    except BackendError as exc:
        kept = ", ".join(str(arm.output) for arm in arms if arm.output)
        kept = f"finished results are kept in {kept}; " if kept else ""
        raise BackendError(f"{exc}\n{kept}re-run the same command to resume", backend=exc.backend) from exc
    finally:
        for each in engine.values() if isinstance(engine, dict) else [engine]:
            close = getattr(each, "close", None)
            if close:
                close()
    if question is not None:
        for arm in arms:
            run = (arm.runs or [])[0]
            tokens = run.usage.get("output_tokens", 0)
            label = f"{arm.label}: " if len(arms) > 1 else ""
            out.print(f"[bold]{label}answer:[/bold] {run.answer}   ({run.stop_reason}, {tokens} tokens)")
    _summary(arms)


def _describe(strategy: str, params: list[str]) -> str:
    """How a strategy is shown in progress bars and tables: its name and parameters."""
    return " ".join([strategy, *params])


def _problems(
    dataset: str | None,
    question: str | None,
    gold: str | None,
    limit: int | None,
    offset: int,
    fields: list[str],
    seed: int,
) -> list[Problem]:
    from reasoning.evals.datasets import load_dataset

    if question is not None:
        return [Problem(id="question", question=question, answer=gold, kind="math")]
    if dataset is None:
        raise ConfigError("give --dataset or --question")
    return load_dataset(dataset, limit=limit, offset=offset, fields=parse_params(fields), seed=seed)


def _named(items: list[str], what: str) -> str | dict[str, str] | None:
    """One plain value, or several ``name=value`` items as a dict (in the order given)."""
    named: dict[str, str] = {}
    plain: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        if sep and key.isidentifier():
            if key in named:
                raise ConfigError(f"--{what} names {key!r} twice")
            named[key] = value
        else:
            plain.append(item)
    if (plain and named) or len(plain) > 1:
        raise ConfigError(f"give one --{what}, or several as name=value (e.g. --{what} draft=...)")
    return named or (plain[0] if plain else None)


@dataclass
class _StandIn:
    """What the resume check needs of a backend before the engine exists."""

    name: str
    model: str

    async def stream(self, request: Any) -> Any:  # pragma: no cover - the check never generates
        raise ConfigError(f"{self.model}: a resume-check stand-in cannot generate")


def _start_prm(name: str, model: str) -> Any:
    from reasoning.backends.vllm_reward import VLLMRewardBackend

    with err.status(f"starting the PRM pooling engine for {model} ..."):
        return VLLMRewardBackend.load(model, name=name)


def _with_prm(engine: Any, prm: str | None, make: Any) -> Any:
    """The run's backends with the PRM added as ``prm`` (the policy named ``policy`` if unnamed)."""
    if prm is None:
        return engine
    try:
        reward = make("prm", prm)
    except BaseException:
        for each in engine.values() if isinstance(engine, dict) else [engine]:
            close = getattr(each, "close", None)
            if close:
                close()
        raise
    return {**(engine if isinstance(engine, dict) else {"policy": engine}), "prm": reward}


def _stand_ins(models: str | dict[str, str] | None) -> Any:
    from reasoning.models import embedded

    def name_of(model: str | None) -> str:
        spec = embedded(model or DEFAULT_MODEL)
        return spec.name if spec else str(model)

    if isinstance(models, dict):
        return {key: _StandIn("vllm", name_of(value)) for key, value in models.items()}
    return _StandIn("vllm", name_of(models))


def _budget_lines(items: list[str]) -> dict[str, Budget]:
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
    return {name: Budget(**values) for name, values in lines.items()}  # type: ignore[arg-type]


def _backend(
    kind: str,
    model: str | dict[str, str] | None,
    script: str,
    kv_cache_gb: float,
    max_model_len: int | None,
    seed: int,
    base_url: str | dict[str, str] | None = None,
    api_key: str = "EMPTY",
    hidden_states: bool = False,
    block_size: int | None = None,
    dtype: str = "auto",
) -> Any:
    if kind == "scripted":
        from reasoning import ScriptedBackend

        return ScriptedBackend([script])
    if kind == "openai":
        if isinstance(base_url, dict):
            models = model if isinstance(model, dict) else {}
            return {name: _server_backend(url, models.get(name), api_key) for name, url in base_url.items()}
        if isinstance(model, dict):
            raise ConfigError("several named --model need as many named --base-url (name=URL)")
        return _server_backend(base_url, model, api_key)
    if kind != "vllm":
        raise ConfigError(f"unknown backend {kind!r}; choose one of: vllm, openai, scripted")
    from reasoning.backends.vllm_local import VLLMBackend, load_backends

    if isinstance(model, dict):
        for each in model.values():
            _resolve_with_progress(each)
        with err.status(f"starting {len(model)} vLLM engines ({', '.join(model)}) ..."):
            return load_backends(
                model,
                kv_cache_gb=kv_cache_gb,
                max_model_len=max_model_len,
                seed=seed,
                hidden_states=hidden_states,
                block_size=block_size,
                dtype=dtype,
            )
    _resolve_with_progress(model)
    with err.status(f"starting the vLLM engine for {model or DEFAULT_MODEL} ..."):
        return VLLMBackend.load(
            model,
            kv_cache_gb=kv_cache_gb,
            max_model_len=max_model_len,
            seed=seed,
            hidden_states=hidden_states,
            block_size=block_size,
            dtype=dtype,
        )


def quiet_engine_logs(verbose: bool) -> None:
    """Turn the start-up chatter of vLLM and torch off (one ``engine ready`` line instead) unless -v.

    Set through the environment, so the engine's spawned processes inherit it.
    """
    import os

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TORCH_LOGS", "-all")  # torch's Python loggers at ERROR
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")


def _server_backend(base_url: str | None, model: str | None, api_key: str) -> Any:
    from reasoning.backends.openai_server import OpenAIBackend

    if not base_url:
        raise ConfigError("--backend openai needs --base-url (the URL `reasoning serve` printed)")
    backend = OpenAIBackend(base_url, model, api_key=api_key)

    async def check() -> None:
        try:
            await backend.check()
        finally:
            await backend.aclose()  # the run opens its own connections in its own event loop

    with err.status(f"connecting to {backend.url} ..."):
        asyncio.run(check())
    return backend


@app.command()
def serve(
    model: Annotated[
        str | None,
        typer.Option(help=f"Embedded model ({', '.join(EMBEDDED_MODELS)}), local HF folder or HF id."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind (0.0.0.0 exposes it to the network).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    kv_cache_gb: Annotated[float, typer.Option(help="KV-cache size on CPU, GiB.")] = 2.0,
    max_model_len: Annotated[int | None, typer.Option(help="Context length per sequence.")] = None,
    max_num_seqs: Annotated[int, typer.Option(help="Most sequences decoded at once.")] = 64,
    seed: Annotated[int, typer.Option(help="Engine seed.")] = 0,
    hidden_states: Annotated[
        bool,
        typer.Option(
            "--hidden-states",
            help="Also serve hidden states (turns on vLLM's development endpoints: keep it on loopback).",
        ),
    ] = False,
    log: Annotated[
        Path | None, typer.Option(help="Write the server's log here (default: a temp file).")
    ] = None,
    dtype: DtypeOption = "auto",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the server's log here.")] = False,
) -> None:
    """Start a vLLM OpenAI-compatible server for a model; Ctrl-C stops it."""
    import signal

    from reasoning.backends.server import VLLMServer

    config = EngineConfig(
        model=model,
        kv_cache_gb=kv_cache_gb,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        seed=seed,
        hidden_states=hidden_states,
        dtype=dtype,
    )
    quiet_engine_logs(verbose)
    _resolve_with_progress(model)
    server = VLLMServer.from_config(config, host=host, port=port, log=log)
    if hidden_states and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/yellow] --hidden-states exposes vLLM's development endpoints on {host}")

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM both stop the server cleanly (a shell may start us with SIGINT ignored).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        with err.status(f"starting a vLLM server for {server.model} on {host}:{port} ..."):
            server.start(inherit_output=verbose)
        out.print(f"serving {server.model} at {server.url}/v1", highlight=False)
        err.print(f"dtype: {server.dtype_choice}", highlight=False)
        if server.log_path:
            err.print(f"server log: {server.log_path}", highlight=False)
        err.print(f"use it with: reasoning solve --base-url {server.url} ...   (Ctrl-C stops the server)")
        sys.stdout.flush()
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
        code = server.process.returncode if server.process else 0
        tail = server._log_tail()
        server.stop()
        raise ReasoningError(f"the vLLM server exited by itself with status {code}{tail}")
    except KeyboardInterrupt:
        err.print("stopping the server ...")
    finally:
        server.stop()
    err.print("server stopped")


def _resolve_with_progress(model: str | None) -> None:
    """Make sure the model is on disk, showing the first-use conversion's progress."""
    from reasoning.models import resolve_model

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                label = (
                    "assembling + verifying model (first use)"
                    if phase == "assemble"
                    else "converting model to a local HF folder (first use)"
                )
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done)

        resolve_model(model, progress)


@dataclass
class _Arm:
    """One strategy of a solve run (the main one, or the --baseline beside it)."""

    label: str
    strategy: Any
    output: Path | None
    runs: list[Run] | None = None
    seconds: float = 0.0


def _run(
    problems: list[Problem],
    controller: Controller,
    arms: list[_Arm],
    budget: Budget,
    concurrency: int | None,
) -> None:
    """Solve `problems` with every arm at once on the one engine, one progress bar each."""
    from reasoning.evals.run import solve as solve_all

    async def go() -> None:
        try:
            await _announce(controller)
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
            budget=budget,
            output=arm.output,
            concurrency=concurrency,
            on_result=on_result,
        )
        arm.seconds = time.monotonic() - start

    asyncio.run(go())


async def _announce(controller: Controller) -> None:
    """One ``engine ready`` line per in-process engine: model, dtype and why, measured speed.

    Runs in the solve's own event loop (an engine's client stays bound to its first loop); the
    measurement doubles as the warm-up.
    """
    from reasoning.hardware import measure_decode

    named = controller.backends or {"": controller.primary}
    for label, backend in named.items():
        info = getattr(backend, "engine_info", {}) or {}
        if "dtype" not in info:  # a server started elsewhere: nothing known to announce
            continue
        with err.status("warming up ..."):
            rate = await measure_decode(backend)
        reason = f" ({info['dtype_reason']})" if info.get("dtype_requested") == "auto" else ""
        model = getattr(backend, "model", "")
        err.print(
            f"engine ready: {label + ': ' if label else ''}{model}, {info['dtype']}{reason}, "
            f"{rate:.0f} tok/s measured (8 x 16-token warm-up)",
            highlight=False,
            soft_wrap=True,
        )


def _summary(arms: list[_Arm]) -> None:
    """The summary table: one column per arm (the baseline first), rows as ``_arm_rows`` gives."""
    columns = [(arm, dict(_arm_rows(arm.runs or [], arm.seconds, arm.output))) for arm in arms]
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


def _arm_rows(runs: list[Run], seconds: float, output: Path | None) -> list[tuple[str, str]]:
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
    rows.append(("output tokens (mean per problem)", f"{tokens / max(len(runs), 1):.0f}"))
    rows.append(("prompt tokens cached", f"{cached}/{prompt}"))
    stats = [search_stats(r.candidates) for r in runs]
    scorer_calls = int(sum(s["scorer_calls"] for s in stats))
    if scorer_calls:  # a step search: its resubmitted step prompts and its process-scorer calls
        step_prompt = int(sum(s["prompt_tokens"] for s in stats))
        step_cached = int(sum(s["cached_tokens"] for s in stats))
        share = step_cached / max(step_prompt, 1)
        rows.append(("step prompt tokens cached", f"{step_cached}/{step_prompt} = {share:.1%}"))
        rows.append(("process scorer calls (mean per problem)", f"{scorer_calls / max(len(runs), 1):.1f}"))
    rows.append(("stopped by budget", str(sum(r.stop_reason.startswith("budget") for r in runs))))
    rows.append(("errors", str(sum(r.error is not None for r in runs))))
    rows.append(("wall time (this session)", f"{seconds:.1f} s"))
    rows.append(("decode rate (this session)", f"{tokens / max(seconds, 1e-9):.0f} tok/s"))
    if output:
        rows.append(("results", str(output)))
    return rows


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default).

    Example:
        >>> [round(v, 3) for v in wilson(8, 20)]
        [0.219, 0.613]
    """
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * ((p * (1 - p) / trials + z * z / (4 * trials * trials)) ** 0.5) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def main() -> None:
    """Console entry point: ReasoningErrors print one line and exit 1."""
    try:
        app()
    except ReasoningError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted; finished results are saved, re-run the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
