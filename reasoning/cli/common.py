"""What the commands share: consoles, options, parameters, and starting backends with progress shown.

No command module imports another: what two of them need lives here. Engines start through
`launch` / `launch_all`, which show the first-use model conversion and a status line around
`reasoning.backends.start` (the one way a backend starts; its settings' defaults are
`EngineConfig`'s, and so are the options' below).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from reasoning import Controller
from reasoning.backend import Backend
from reasoning.backends.specs import BackendSpec, ServerBackend, VLLMEngine, backend_kind
from reasoning.backends.start import as_spec, close, engine_config, start, start_all, start_reward
from reasoning.config import EngineConfig
from reasoning.engine.models import DEFAULT_MODEL
from reasoning.errors import ConfigError

__all__ = [
    "DEFAULTS",
    "INTERRUPTED",
    "DtypeOption",
    "ImportOption",
    "KvCacheOption",
    "TrustRemoteCodeOption",
    "announce",
    "backends_of",
    "close",
    "err",
    "launch",
    "launch_all",
    "launch_pool",
    "load_strategies",
    "named_values",
    "out",
    "parse_params",
    "quiet_engine_logs",
    "resolve_with_progress",
    "settings_of",
    "stop_on_signals",
    "with_prm",
    "with_settings",
]

err = Console(stderr=True)
out = Console()

DEFAULTS = EngineConfig()
"""The engine defaults, as the options below show them (`EngineConfig` states them)."""

INTERRUPTED = "interrupted; finished results are saved, re-run the same command to resume"

DtypeOption = Annotated[
    str,
    typer.Option(
        help="Weight dtype: auto (chosen from the CPU's features; `reasoning doctor` says why), "
        "bfloat16, float16 or float32."
    ),
]


KvCacheOption = Annotated[float, typer.Option(help="KV-cache size on CPU, GiB.")]

TrustRemoteCodeOption = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Let a local model folder run the Python code its config names (auto_map); "
        "refused without this flag.",
    ),
]
"""The ``--trust-remote-code`` flag of every command that starts an engine (solve, serve, proxy)."""

ImportOption = Annotated[
    list[str] | None,
    typer.Option(
        "--import",
        help="Module or .py file whose @STRATEGIES.register strategies to add (repeatable); "
        "installed plugins (entry-point group reasoning.strategies) load on their own.",
    ),
]


def load_strategies(modules: list[str] | None = None) -> None:
    """Register the built-in strategies, the installed plugins' and those of `modules` (``--import``)."""
    import reasoning.strategies  # noqa: F401  (registers the built-in strategies)
    from reasoning.registry import import_strategies

    import_strategies(modules or ())


def parse_params(items: list[str]) -> dict[str, str]:
    """Turn ``["n=8", "temperature=0.7"]`` into a dict; raise `ConfigError` on bad items.

    Example:
        >>> parse_params(["n=8", " temperature = 0.7"])
        {'n': '8', 'temperature': '0.7'}
    """
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"parameter {item!r} is not of the form name=value")
        params[key.strip()] = value.strip()
    return params


def stop_on_signals() -> None:
    """Make SIGTERM and SIGINT stop a run like Ctrl-C: engines shut down, finished results kept.

    A shell starts background jobs with SIGINT ignored, and Python's default SIGTERM exits at
    once, leaving the engine's processes running.
    """
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


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


def launch(backend: BackendSpec | EngineConfig | str | None, *, hidden_states: bool = False) -> Backend:
    """Start one backend (`reasoning.backends.start.start`), showing progress.

    An engine's model is made ready first (its first-use conversion shown), then a status line
    stays while the engine starts; a server is checked under a status line of its own.
    """
    spec = as_spec(backend)
    if isinstance(spec, VLLMEngine):
        config = engine_config(spec, hidden_states)
        resolve_with_progress(config.model, config.trust_remote_code)
        with err.status(f"starting the vLLM engine for {config.model or DEFAULT_MODEL} ..."):
            return start(config)
    if isinstance(spec, ServerBackend):
        with err.status(f"connecting to {spec.url} ..."):
            return start(spec)
    return start(spec)


def launch_all(backends: Mapping[str, BackendSpec], *, hidden_states: bool = False) -> Any:
    """Start a run's backends: the one unnamed backend, or a dict of them by name.

    Several engines are checked to fit in memory together before any starts
    (`reasoning.backends.start.start_all`); if one fails, those started are shut down.
    """
    if set(backends) == {""}:
        return launch(backends[""], hidden_states=hidden_states)
    for spec in map(as_spec, backends.values()):
        if isinstance(spec, VLLMEngine):
            resolve_with_progress(spec.model, spec.trust_remote_code)
    with err.status(f"starting the backends {', '.join(backends)} ..."):
        return start_all(backends, hidden_states=hidden_states)


def launch_pool(
    backend: Any,
    *,
    address: str | None,
    replicas: int | None,
    routing: Any,
    hidden_states: bool,
    prm: str | None = None,
) -> Any:
    """A model's engine replicas on the Ray cluster at `address` (`reasoning.backends.replicas`).

    With `prm`, each replica holds the PRM's pooling engine beside its policy, and the run's
    backends are ``{"policy": pool, "prm": ...}`` (as `with_prm` names them in process).
    """
    from reasoning.backends.replicas import start_pool

    if isinstance(backend, VLLMEngine):  # converted once here, not by every replica at once
        resolve_with_progress(backend.model, backend.trust_remote_code)
    with err.status(f"starting {replicas or 'one per node'} engine replica(s) on Ray ({address}) ..."):
        pool = start_pool(
            backend,
            address=address or "auto",
            replicas=replicas,
            routing=routing,
            hidden_states=hidden_states,
            prm=prm,
            verbose=logging.getLogger().level <= logging.INFO,
        )
    return pool if prm is None else {"policy": pool, "prm": pool.serving("prm")}


def with_prm(engine: Any, prm: str | None) -> Any:
    """The run's backends with the PRM's pooling engine added as ``prm``.

    An unnamed policy is named ``policy``; the engines already started are shut down if the
    PRM's fails to start.
    """
    if prm is None:
        return engine
    try:
        with err.status(f"starting the PRM pooling engine for {prm} ..."):
            reward = start_reward(prm, name="prm")
    except BaseException:
        close(engine)
        raise
    return {**(engine if isinstance(engine, dict) else {"policy": engine}), "prm": reward}


def resolve_with_progress(model: str | None, trust_remote_code: bool = False) -> None:
    """Make sure the model is on disk, showing the first-use conversion's progress.

    A local folder asking to run its own code is refused unless `trust_remote_code`.
    """
    from reasoning.engine.models import resolve_model

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

        resolve_model(model, progress, trust_remote_code=trust_remote_code)


async def announce(controller: Controller) -> None:
    """One ``engine ready`` line per in-process engine: model, dtype and why, measured speed.

    Runs in the solve's own event loop (an engine's client stays bound to its first loop); the
    measurement doubles as the warm-up.
    """
    from reasoning.engine.hardware import measure_decode

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


def settings_of(value: Any, key: str) -> dict[str, Any]:
    """A settings mapping (a plain string is shorthand for its `key`)."""
    if isinstance(value, str):
        return {key: value}
    return dict(value) if isinstance(value, Mapping) else {}


def with_settings(backend: Any, settings: Mapping[str, Mapping[str, Any]]) -> Any:
    """`backend` (as the spec gives it) with the flags' settings for its kind."""
    backend = backend_kind(backend)
    if isinstance(backend, Mapping) and settings.get(str(backend.get("kind"))):
        return {**backend, **settings[str(backend["kind"])]}
    return backend


def backends_of(
    kind: str, models: str | dict[str, str] | None, urls: str | dict[str, str] | None
) -> dict[str, Any]:
    """The spec's backend(s) from ``--backend``, ``--model`` and ``--base-url``."""
    if urls is not None and kind == "vllm":
        kind = "openai"
    if kind == "scripted":  # --model names what it serves; several named ones are a group of them
        if isinstance(models, dict):
            return {
                "backends": {name: {"kind": "scripted", "model": value} for name, value in models.items()}
            }
        return {"backend": {"kind": "scripted", "model": models}}
    if kind == "openai":
        if isinstance(urls, dict):
            named = models if isinstance(models, dict) else {}
            return {
                "backends": {
                    name: {"kind": "openai", "url": url, "model": named.get(name)}
                    for name, url in urls.items()
                }
            }
        if isinstance(models, dict):
            raise ConfigError("several named --model need as many named --base-url (name=URL)")
        if not urls:
            raise ConfigError("--backend openai needs --base-url (the URL `reasoning serve` printed)")
        return {"backend": {"kind": "openai", "url": urls, "model": models}}
    if kind != "vllm":
        raise ConfigError(f"unknown backend {kind!r}; choose one of: vllm, openai, scripted")
    if isinstance(models, dict):
        return {"backends": {name: {"kind": "vllm", "model": value} for name, value in models.items()}}
    return {"backend": {"kind": "vllm", "model": models}}


def named_values(items: list[str], what: str) -> str | dict[str, str] | None:
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
