"""``reasoning serve``: vLLM's OpenAI-compatible server for a model (`reasoning.serving.server`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from reasoning.cli.common import (
    DEFAULTS,
    DtypeOption,
    KvCacheOption,
    TrustRemoteCodeOption,
    err,
    out,
    quiet_engine_logs,
    resolve_with_progress,
)
from reasoning.config import EngineConfig
from reasoning.engine.models import EMBEDDED_MODELS
from reasoning.errors import ReasoningError

__all__ = ["serve"]


def serve(
    model: Annotated[
        str | None,
        typer.Option(help=f"Embedded model ({', '.join(EMBEDDED_MODELS)}), local HF folder or HF id."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind (0.0.0.0 exposes it to the network).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    kv_cache_gb: KvCacheOption = DEFAULTS.kv_cache_gb,
    max_model_len: Annotated[int | None, typer.Option(help="Context length per sequence.")] = None,
    max_num_seqs: Annotated[
        int, typer.Option(help="Most sequences decoded at once.")
    ] = DEFAULTS.max_num_seqs,
    seed: Annotated[int, typer.Option(help="Engine seed.")] = DEFAULTS.seed,
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
    dtype: DtypeOption = DEFAULTS.dtype,
    trust_remote_code: TrustRemoteCodeOption = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the server's log here.")] = False,
) -> None:
    """Start a vLLM OpenAI-compatible server for a model; Ctrl-C stops it."""
    import signal

    from reasoning.serving.server import VLLMServer

    config = EngineConfig(
        model=model,
        kv_cache_gb=kv_cache_gb,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        seed=seed,
        hidden_states=hidden_states,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    quiet_engine_logs(verbose)
    resolve_with_progress(model, trust_remote_code)
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
