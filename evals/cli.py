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
from reasoning.errors import BackendError, ConfigError
from reasoning.models import DEFAULT_MODEL, EMBEDDED_MODELS

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Test-time reasoning on local vLLM engines.",
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()


def _add_probe_commands() -> None:
    from reasoning.evals.probe_cli import probe_app

    app.add_typer(probe_app, name="probe")


_add_probe_commands()


def _strategies() -> None:
    import reasoning.strategies  # noqa: F401  (registers the built-in strategies)


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
def strategies() -> None:
    """List the strategies and their parameters."""
    _strategies()
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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show engine logs.")] = False,
) -> None:
    """Solve a dataset (or one --question) with a strategy, under a budget."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if verbose:
        import os

        os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")
    _strategies()
    if (dataset is None) == (question is None):
        raise ConfigError("give exactly one of --dataset or --question")
    chosen = STRATEGIES.create(strategy, parse_params(param or []))
    budget = Budget(
        output_tokens=budget_tokens,
        prompt_tokens=budget_prompt_tokens,
        calls=budget_calls,
        seconds=budget_seconds,
    )
    budgets = _budget_lines(budget_line or [])
    problems = _problems(dataset, question, gold, limit, offset, field or [], seed)
    if output is None and dataset is not None:
        output = (
            Path("results") / f"{Path(dataset).stem.replace(':', '-')}-{STRATEGIES.resolve(strategy)}.jsonl"
        )
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
    if base_url and backend == "vllm":
        backend = "openai"
    if prm is not None and backend != "vllm":
        raise ConfigError("--prm starts an in-process pooling engine: it needs --backend vllm")
    models, urls = _named(model or [], "model"), _named(base_url or [], "base-url")
    if prm is not None and isinstance(models, dict) and "prm" in models:
        raise ConfigError("--prm is served as backend 'prm': no --model may be named prm")
    if output is not None and output.exists() and backend == "vllm":
        # Refuse a results file of other settings before spending ~40 s starting an engine.
        from reasoning.evals.run import check_resumable

        stand_in = Controller(
            _with_prm(_stand_ins(models), prm, _StandIn), budget=budget, seed=seed, budgets=budgets
        )
        check_resumable(output, problems, stand_in, chosen, budget)
    hidden = bool(getattr(chosen, "needs_hidden_states", False))
    engine = _backend(
        backend, models, script, kv_cache_gb, max_model_len, seed, urls, api_key, hidden, block_size
    )
    if prm is not None:
        engine = _with_prm(engine, prm, _start_prm)
    try:
        controller = Controller(engine, budget=budget, seed=seed, budgets=budgets)
        runs, seconds = _run(problems, controller, chosen, budget, output, concurrency)
    except BackendError as exc:
        kept = f"finished results are kept in {output}; " if output else ""
        raise BackendError(f"{exc}\n{kept}re-run the same command to resume", backend=exc.backend) from exc
    finally:
        for each in engine.values() if isinstance(engine, dict) else [engine]:
            close = getattr(each, "close", None)
            if close:
                close()
    if question is not None:
        run = runs[0]
        tokens = run.usage.get("output_tokens", 0)
        out.print(f"[bold]answer:[/bold] {run.answer}   ({run.stop_reason}, {tokens} tokens)")
    _summary(runs, seconds, output)


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
        )


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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the server's log here.")] = False,
) -> None:
    """Start a vLLM OpenAI-compatible server for a model; Ctrl-C stops it."""
    import os
    import signal

    from reasoning.backends.server import VLLMServer

    if verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")
    _resolve_with_progress(model)
    server = VLLMServer(
        model,
        host=host,
        port=port,
        kv_cache_gb=kv_cache_gb,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        seed=seed,
        hidden_states=hidden_states,
        log=log,
    )
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


def _run(
    problems: list[Problem],
    controller: Controller,
    strategy: Any,
    budget: Budget,
    output: Path | None,
    concurrency: int | None,
) -> tuple[list[Run], float]:
    from reasoning.evals.run import solve as solve_all

    start = time.monotonic()
    state = {"done": 0, "correct": 0, "graded": 0, "tokens": 0}
    with Progress(
        TextColumn("[bold]solving"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acc {task.fields[acc]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TimeElapsedColumn(),
        console=err,
    ) as bar:
        task = bar.add_task("solve", total=len(problems), acc="-", tps="-")

        def on_result(run: Run) -> None:
            state["done"] += 1
            state["tokens"] += int(run.usage.get("output_tokens", 0))
            if run.correct is not None:
                state["graded"] += 1
                state["correct"] += int(run.correct)
            acc = f"{state['correct'] / state['graded']:.1%}" if state["graded"] else "-"
            tps = f"{state['tokens'] / max(time.monotonic() - start, 1e-9):.0f}"
            bar.update(task, completed=state["done"], acc=acc, tps=tps)

        async def go() -> list[Run]:
            try:
                return await solve_all(
                    problems,
                    controller,
                    strategy,
                    budget=budget,
                    output=output,
                    concurrency=concurrency,
                    on_result=on_result,
                )
            finally:
                for backend in controller.backends.values() or [controller.primary]:
                    aclose = getattr(backend, "aclose", None)
                    if aclose is not None:
                        await aclose()

        runs = asyncio.run(go())
    return runs, time.monotonic() - start


def _summary(runs: list[Run], seconds: float, output: Path | None) -> None:
    from reasoning.verifiers.process import search_stats

    graded = [r for r in runs if r.correct is not None]
    tokens = sum(int(r.usage.get("output_tokens", 0)) for r in runs)
    prompt = sum(int(r.usage.get("prompt_tokens", 0)) for r in runs)
    cached = sum(int(r.usage.get("cached_tokens", 0)) for r in runs)
    errors = sum(r.error is not None for r in runs)
    budget_stops = sum(r.stop_reason.startswith("budget") for r in runs)
    table = Table(title="summary", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("problems", str(len(runs)))
    if graded:
        correct = sum(bool(r.correct) for r in graded)
        table.add_row("accuracy", f"{correct}/{len(graded)} = {correct / len(graded):.1%}")
    table.add_row("output tokens (mean per problem)", f"{tokens / max(len(runs), 1):.0f}")
    table.add_row("prompt tokens cached", f"{cached}/{prompt}")
    stats = [search_stats(r.candidates) for r in runs]
    scorer_calls = int(sum(s["scorer_calls"] for s in stats))
    if scorer_calls:  # a step search: its resubmitted step prompts and its process-scorer calls
        step_prompt = int(sum(s["prompt_tokens"] for s in stats))
        step_cached = int(sum(s["cached_tokens"] for s in stats))
        share = step_cached / max(step_prompt, 1)
        table.add_row("step prompt tokens cached", f"{step_cached}/{step_prompt} = {share:.1%}")
        table.add_row("process scorer calls (mean per problem)", f"{scorer_calls / max(len(runs), 1):.1f}")
    table.add_row("stopped by budget", str(budget_stops))
    table.add_row("errors", str(errors))
    table.add_row("wall time (this session)", f"{seconds:.1f} s")
    table.add_row("decode rate (this session)", f"{tokens / max(seconds, 1e-9):.0f} tok/s")
    if output:
        table.add_row("results", str(output))
    out.print(table)


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
