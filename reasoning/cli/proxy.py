"""``reasoning proxy``: serve strategies behind an OpenAI-compatible API (`reasoning.serving.proxy`)."""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from reasoning.backends.specs import DEFAULT_SCRIPT, ScriptedReply, ServerBackend, VLLMEngine
from reasoning.cli.common import (
    DEFAULTS,
    DtypeOption,
    TrustRemoteCodeOption,
    close,
    err,
    launch,
    launch_all,
    named_values,
    out,
    quiet_engine_logs,
)
from reasoning.concurrency import task_group
from reasoning.errors import ConfigError

__all__ = ["proxy"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def proxy(
    backend: Annotated[
        str,
        typer.Option(
            help="vllm (an in-process engine, the default), openai (an upstream OpenAI-compatible "
            "server, see --base-url) or scripted (a fixed reply: demos and tests)."
        ),
    ] = "vllm",
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="The engine's model (embedded name, HF folder or id), the upstream's model, or the "
            "name the scripted backend serves (default: scripted). Several named ones as name=model "
            "(repeatable, e.g. --model draft=0.5b --model target=1.5b) serve a model group (--group): "
            "spec-reason, spec-thinking, atts and arbitrage run on it."
        ),
    ] = None,
    base_url: Annotated[
        list[str] | None,
        typer.Option(
            help="URL of the upstream server (--backend openai); a group's as name=URL each (repeatable)."
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            help="The name a model group (several named --model) is served under (default: group): "
            "ask for 'spec-reason@<group>' (or '@<a member's model>')."
        ),
    ] = None,
    upstream_api_key: Annotated[
        str, typer.Option(envvar="OPENAI_API_KEY", help="API key of the upstream server.")
    ] = "EMPTY",
    script: Annotated[str | None, typer.Option(help="Reply of the scripted backend.")] = None,
    script_seconds_per_token: Annotated[
        float, typer.Option(help="Delay per token of the scripted backend (to watch streaming).")
    ] = 0.0,
    host: Annotated[
        str, typer.Option(help="Interface to bind (127.0.0.1; 0.0.0.0 exposes it to the network).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: a free one).")] = 8080,
    strategy: Annotated[
        str, typer.Option("--strategy", "-s", help="Default strategy spec, for requests that name none.")
    ] = "single",
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="REASONING_PROXY_API_KEY",
            help="Ask every request for 'Authorization: Bearer <key>' (default: no key).",
        ),
    ] = None,
    records: Annotated[
        Path, typer.Option(help="JSONL file every request's full record is appended to.")
    ] = Path("results/proxy.jsonl"),
    instruction: Annotated[
        str | None,
        typer.Option(help="A line appended to each request's last user message (e.g. the boxed-answer one)."),
    ] = None,
    max_n: Annotated[int, typer.Option(help="Most samples per model call a strategy may ask for.")] = 16,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per sample.")] = 4096,
    max_budget_tokens: Annotated[
        int, typer.Option(help="Most output tokens per request, all calls together (the default budget).")
    ] = 32768,
    max_calls: Annotated[int, typer.Option(help="Most model calls per request.")] = 256,
    max_seconds: Annotated[float, typer.Option(help="Most wall seconds per request.")] = 600.0,
    max_concurrent: Annotated[
        int | None, typer.Option(help="Requests solved at once (default 16; --deterministic: 1).")
    ] = None,
    max_queue: Annotated[int, typer.Option(help="Requests waiting for a slot before 429s.")] = 256,
    kv_cache_gb: Annotated[float | None, typer.Option(help="KV-cache size of the engine, GiB.")] = None,
    max_model_len: Annotated[int | None, typer.Option(help="Context length per sequence.")] = None,
    dtype: DtypeOption = DEFAULTS.dtype,
    hidden_states: Annotated[
        bool, typer.Option("--hidden-states", help="Start the engine with hidden states (probe strategies).")
    ] = False,
    trust_remote_code: TrustRemoteCodeOption = False,
    deterministic: Annotated[
        bool,
        typer.Option(
            "--deterministic",
            help="Reproducible replies, as solve --deterministic: one request at a time, each from an "
            "empty prefix cache, its model calls one after another; a request without a seed gets "
            "seed 0. The same request then gets the same reply. In-process engines (or scripted) only.",
        ),
    ] = False,
    shutdown_grace: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds the requests in flight get to finish once the proxy is told to stop "
            "(Ctrl-C, SIGTERM); then each ends with a 503 server_stopping error.",
        ),
    ] = 5.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show engine and access logs.")] = False,
) -> None:
    """Serve test-time strategies behind an OpenAI-compatible API (/v1/chat/completions, ...).

    Ask for a strategy per request by model name ('self-consistency(n=4)@<model>'), by
    extra_body {"strategy", "params", "budget"}, or by X-Reasoning-* headers.
    """
    phase = ["starting"]
    try:
        _proxy(phase, backend, model or [], base_url or [], group, upstream_api_key, script,
               script_seconds_per_token, host, port, strategy, api_key, records, instruction, max_n,
               max_tokens, max_budget_tokens,
               max_calls, max_seconds, max_concurrent, max_queue, kv_cache_gb, max_model_len, dtype,
               hidden_states, trust_remote_code, deterministic, shutdown_grace, verbose)  # fmt: skip
    except KeyboardInterrupt:  # Ctrl-C before it serves (or while the engine shuts down)
        err.print(f"interrupted while {phase[0]}; proxy stopped")
        return
    err.print("proxy stopped")


def _proxy(
    phase: list[str],
    backend: str,
    model_items: list[str],
    url_items: list[str],
    group: str | None,
    upstream_api_key: str,
    script: str | None,
    script_seconds_per_token: float,
    host: str,
    port: int,
    strategy: str,
    api_key: str | None,
    records: Path,
    instruction: str | None,
    max_n: int,
    max_tokens: int,
    max_budget_tokens: int,
    max_calls: int,
    max_seconds: float,
    max_concurrent: int | None,
    max_queue: int,
    kv_cache_gb: float | None,
    max_model_len: int | None,
    dtype: str,
    hidden_states: bool,
    trust_remote_code: bool,
    deterministic: bool,
    shutdown_grace: float,
    verbose: bool,
) -> None:
    """`proxy`; `phase[0]` says what it is doing (starting, serving, stopping)."""
    import uvicorn

    from reasoning.serving.proxy import Limits, ProxySettings, create_app, stop_runs

    quiet_engine_logs(verbose)
    model = named_values(model_items, "model")
    base_url = named_values(url_items, "base-url")
    names = _group_names(model, base_url, group)
    if max_seconds <= 0:
        raise ConfigError(f"--max-seconds must be > 0, got {max_seconds:g}")
    concurrent = _concurrency(max_concurrent, deterministic)
    limits = Limits(
        max_n=max_n,
        max_tokens=max_tokens,
        output_tokens=max_budget_tokens,
        calls=max_calls,
        seconds=max_seconds,
        max_queue=max_queue,
        **({} if concurrent is None else {"max_concurrent": concurrent}),
    )
    _strategy_check(strategy, limits, names)  # bad settings fail before the engine starts
    _options_check(backend, base_url, script, script_seconds_per_token, kv_cache_gb, max_model_len, dtype,
                   hidden_states)  # fmt: skip
    if deterministic:
        _deterministic_check(backend, base_url)
    listening = _bind(host, port)
    port = listening.getsockname()[1]  # the one chosen for --port 0
    engine = _start(backend, model, base_url, upstream_api_key, script, script_seconds_per_token,
                    kv_cache_gb, max_model_len, dtype, hidden_states, trust_remote_code)  # fmt: skip
    try:
        if isinstance(engine, dict):
            served = group or DEFAULT_GROUP
            members = ", ".join(f"{name}: {_served(b)}" for name, b in engine.items())
            what, example = f"{served} ({members})", f"spec-reason@{served}"
        else:
            served = what = _served(engine)
            example = f"self-consistency(n=4)@{served}"
        settings = ProxySettings(
            model=served,
            strategy=strategy,
            limits=limits,
            api_key=api_key,
            records=records,
            instruction=instruction,
            deterministic=deterministic,
        )
        app = create_app(engine, settings)
        if host not in _LOOPBACK:
            exposed = (
                "with an API key" if api_key else "WITHOUT an API key (anyone who can reach it can use it)"
            )
            err.print(f"[yellow]warning:[/yellow] the proxy listens on {host}, {exposed}")
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="info" if verbose else "warning",
            lifespan="off",
            timeout_graceful_shutdown=int(shutdown_grace) + 10,  # runs have ended by then
        )

        class Server(uvicorn.Server):  # type: ignore[misc]  # uvicorn is untyped here
            """uvicorn, whose shutdown ends the runs still in flight after the grace period.

            uvicorn would cancel their requests after its own timeout, cutting clients off
            without an answer and printing a traceback for each.
            """

            async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
                phase[0] = "stopping"

                async def end_runs() -> None:
                    deadline = time.monotonic() + shutdown_grace
                    while time.monotonic() < deadline and not self.force_exit:  # a 2nd Ctrl-C
                        await asyncio.sleep(0.05)
                    if ended := stop_runs(app):
                        err.print(f"stopping: {ended} request(s) in flight ended with an error")

                ending = asyncio.create_task(end_runs())
                try:
                    await super().shutdown(sockets)
                    if self.force_exit:
                        # A 2nd Ctrl-C: uvicorn no longer waits for the requests in flight, and
                        # asyncio.run would cancel them (a traceback each, a plain-text 500 to
                        # their clients). Their runs end now; they answer 503 server_stopping.
                        await ending
                        deadline = time.monotonic() + ANSWER_SECONDS
                        while self.server_state.tasks and time.monotonic() < deadline:
                            await asyncio.sleep(0.02)
                finally:
                    ending.cancel()

        server = Server(config)

        async def serve() -> None:
            ended = asyncio.Event()

            async def run() -> None:
                try:
                    await server.serve(sockets=[listening])
                finally:
                    ended.set()

            async def announce() -> None:
                while not server.started and not ended.is_set():
                    await asyncio.sleep(0.05)
                if server.started:
                    url = f"http://{host}:{port}/v1"
                    out.print(f"serving {what} behind strategies at {url}", highlight=False, soft_wrap=True)
                    err.print(
                        f"ask for a strategy as the model, e.g. '{example}'; metrics: "
                        f"http://{host}:{port}/metrics; default "
                        f"{strategy}; records: {records}"
                        + (
                            "; deterministic: one request at a time, each from an empty prefix cache, "
                            "a request without a seed gets seed 0"
                            if deterministic
                            else ""
                        )
                        + "   (Ctrl-C stops it)",
                        highlight=False,
                    )
                    sys.stdout.flush()

            async with task_group() as group:
                group.create_task(run())
                group.create_task(announce())

        def stop(signum: int, frame: object) -> None:
            server.should_exit = True

        # While it serves, uvicorn's own handlers take SIGINT and SIGTERM (a graceful shutdown:
        # requests in flight get --shutdown-grace seconds, then end with an error, see `Server`);
        # when it has stopped it raises the signal again, which `stop` takes without an exception:
        # a KeyboardInterrupt raised there ended a task and asyncio printed its traceback. A signal
        # before uvicorn listens stops it too. The engine is shut down below.
        handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        phase[0] = "serving"
        try:
            asyncio.run(serve())
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    finally:
        phase[0] = "stopping"
        listening.close()
        close(engine)


ANSWER_SECONDS = 5.0
"""After a second Ctrl-C, the most seconds the ended requests get to send their 503."""

DEFAULT_GROUP = "group"
"""The name a model group is served under without --group."""


def _served(backend: Any) -> str:
    return str(getattr(backend, "model", "") or backend.name)


def _group_names(
    models: str | dict[str, str] | None, urls: str | dict[str, str] | None, group: str | None
) -> list[str]:
    """The backend names of the model group the options ask for (empty: one model)."""
    names = list(urls) if isinstance(urls, dict) else list(models) if isinstance(models, dict) else []
    if group is not None and not group.strip():
        raise ConfigError(
            f"--group {group!r} is empty: name the model group (or leave --group out: {DEFAULT_GROUP})"
        )
    if isinstance(models, dict) and isinstance(urls, dict) and set(models) - set(urls):
        raise ConfigError(f"--model names {', '.join(sorted(set(models) - set(urls)))}, with no --base-url")
    if isinstance(urls, dict) and isinstance(models, str):
        raise ConfigError("with named --base-url, name each --model too (name=model)")
    if isinstance(models, dict) and isinstance(urls, str):
        raise ConfigError("several named --model need as many named --base-url (name=URL)")
    if names and len(names) < 2:
        raise ConfigError(f"a model group needs at least two named backends, got {names[0]} only")
    if group is not None and not names:
        raise ConfigError(
            "--group names a model group: give several --model name=model (e.g. draft=, target=)"
        )
    if group is not None and "@" in group:
        raise ConfigError(f"--group {group!r}: a name without '@'")
    return names


def _strategy_check(spec: str, limits: Any, names: list[str] | None = None) -> None:
    """Refuse a default strategy that does not build, is over the caps or needs absent backends.

    The caps: `Limits.check`; the backends: `backends_needed`, of those in `names` (a group's).
    """
    import reasoning.strategies  # noqa: F401  (registers the built-in strategies)
    from reasoning.compose import build
    from reasoning.serving.proxy import ProxyError
    from reasoning.strategies.named_backends import backends_needed, reward_backends_needed

    try:
        strategy = build(spec)
        limits.check(strategy)
    except ProxyError as exc:
        raise ConfigError(
            f"--strategy {spec}: {exc} (raise --max-n or --max-tokens, or ask for less)"
        ) from None
    needed = backends_needed(strategy)
    rewards = reward_backends_needed(strategy)
    if rewards:  # a group's --model starts a generative engine, never a PRM's pooling one
        raise ConfigError(
            f"--strategy {spec} scores steps with a process reward model (scorer=prm, backend "
            f"{', '.join(rewards)}), which the proxy does not serve: use scorer=judge or scorer=value, "
            "or run it with reasoning solve --prm PATH"
        )
    missing = [name for name in needed if name not in (names or [])]
    if missing:
        flags = " ".join(f"--model {name}=MODEL" for name in needed)
        raise ConfigError(
            f"--strategy {spec} needs backends named {', '.join(needed)}: serve them with {flags}"
        )


def _options_check(
    backend: str,
    base_url: str | dict[str, str] | None,
    script: str | None,
    seconds_per_token: float,
    kv_cache_gb: float | None,
    max_model_len: int | None,
    dtype: str,
    hidden_states: bool,
) -> None:
    """Refuse an option the chosen backend would silently ignore."""
    kind = "openai" if backend == "openai" or (backend == "vllm" and base_url is not None) else backend
    if kind not in ("vllm", "openai", "scripted"):
        raise ConfigError(f"unknown backend {backend!r}; choose one of: vllm, openai, scripted")
    given = {
        "--script": (script is not None, "scripted"),
        "--script-seconds-per-token": (seconds_per_token != 0.0, "scripted"),
        "--base-url": (base_url is not None, "openai"),
        "--kv-cache-gb": (kv_cache_gb is not None, "vllm"),
        "--max-model-len": (max_model_len is not None, "vllm"),
        "--dtype": (dtype != DEFAULTS.dtype, "vllm"),
        "--hidden-states": (hidden_states, "vllm"),
    }
    unused = [option for option, (set_, applies) in given.items() if set_ and applies != kind]
    if unused:
        raise ConfigError(f"{', '.join(unused)}: not used by --backend {kind}")
    if kind == "openai" and not base_url:
        raise ConfigError("--backend openai needs --base-url (the URL `reasoning serve` printed)")
    if seconds_per_token < 0:
        raise ConfigError(f"--script-seconds-per-token must be >= 0, got {seconds_per_token}")


def _concurrency(max_concurrent: int | None, deterministic: bool) -> int | None:
    """Requests solved at once: --max-concurrent (None: `Limits`' default); one when deterministic.

    Raises:
        ConfigError: --deterministic with --max-concurrent over 1.
    """
    if deterministic and max_concurrent not in (None, 1):
        raise ConfigError(
            f"--max-concurrent {max_concurrent}: --deterministic solves one request at a time (a request "
            "that shares the engine's batches with another would not repeat); drop --max-concurrent"
        )
    return 1 if deterministic else max_concurrent


def _deterministic_check(backend: str, base_url: str | dict[str, str] | None) -> None:
    """Refuse --deterministic in front of a server, before anything starts.

    A deterministic run empties the engine's prefix cache before each request and relies on no
    other request sharing its batches: an upstream server's cache cannot be emptied from here,
    and its batches hold whatever its other clients send.
    """
    if backend == "openai" or base_url is not None:
        urls = ", ".join(base_url.values()) if isinstance(base_url, dict) else base_url or "(none given)"
        raise ConfigError(
            f"--deterministic cannot be kept in front of an upstream server ({urls}): its prefix cache "
            "cannot be emptied from here, and its batches mix in its other clients' requests, so the "
            "same request would not give the same reply; serve the model in process (--backend vllm "
            "--model ...), or drop --deterministic"
        )


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, or a clear error when the address is taken or not ours."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except (OSError, OverflowError) as exc:
        listening.close()
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        taken = isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EACCES)
        hint = "choose another --port" if taken else "check --host: an address of this machine"
        raise ConfigError(f"cannot listen on {host}:{port}: {why} ({hint})") from None
    return listening


def _start(
    kind: str,
    model: str | dict[str, str] | None,
    base_url: str | dict[str, str] | None,
    upstream_api_key: str,
    script: str | None,
    seconds_per_token: float,
    kv_cache_gb: float | None,
    max_model_len: int | None,
    dtype: str,
    hidden_states: bool,
    trust_remote_code: bool = False,
) -> Any:
    """The backend the proxy serves, or a model group's by name (named --model or --base-url).

    Started the one way: `reasoning.cli.common.launch`, or `launch_all` for a group (its engines
    are checked to fit in memory together first).
    """

    def spec_of(model: str | None, url: str | None) -> VLLMEngine | ServerBackend | ScriptedReply:
        if kind == "scripted":
            return ScriptedReply(
                script=script or DEFAULT_SCRIPT, seconds_per_token=seconds_per_token, model=model
            )
        if kind == "openai" or url is not None:
            if not url:
                raise ConfigError("--backend openai needs --base-url (the URL `reasoning serve` printed)")
            return ServerBackend(url=url, model=model, api_key=upstream_api_key)
        if kind != "vllm":
            raise ConfigError(f"unknown backend {kind!r}; choose one of: vllm, openai, scripted")
        given: dict[str, Any] = {"kv_cache_gb": kv_cache_gb, "max_model_len": max_model_len}
        return VLLMEngine(
            model=model,
            dtype=dtype,
            hidden_states=hidden_states,
            trust_remote_code=trust_remote_code,
            **{key: value for key, value in given.items() if value is not None},
        )

    if isinstance(base_url, dict):
        models = model if isinstance(model, dict) else {}
        return launch_all({name: spec_of(models.get(name), url) for name, url in base_url.items()})
    if isinstance(model, dict):
        url = base_url if isinstance(base_url, str) else None
        return launch_all(
            {name: spec_of(value, url) for name, value in model.items()}, hidden_states=hidden_states
        )
    return launch(spec_of(model, base_url))
