"""Start and stop a vLLM OpenAI-compatible server for a model (``reasoning serve``).

The server is vLLM's own API server in a child process (its own session, so a Ctrl-C aimed at
the parent does not hit it half-way: the parent stops it with SIGTERM and waits). It gets the
same engine settings as the in-process backend (both cores, explicit KV-cache size, chunked
prefill off so per-request seeds work, prefix caching, cached-token counts in the usage), so a
strategy produces the same samples on either backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Unpack

from reasoning.backends.hidden_states import EXTENSION
from reasoning.backends.openai_server import OpenAIBackend
from reasoning.backends.vllm_local import (
    check_memory,
    configure_cpu_environment,
    engine_info,
    on_gpu,
    speculative_config,
)
from reasoning.config import EngineConfig, EngineSettings
from reasoning.engine.hardware import choose_dtype
from reasoning.engine.models import DEFAULT_MODEL, Progress, embedded, resolve_model
from reasoning.errors import ConfigError, EngineStartError

__all__ = ["VLLMServer", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """A vLLM OpenAI-compatible server in a child process.

    Example:
        >>> with VLLMServer().start() as server:            # doctest: +SKIP
        ...     backend = server.backend()
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        log: Path | None = None,
        progress: Progress | None = None,
        **settings: Unpack[EngineSettings],
    ) -> None:
        """Describe the server; `start` launches it.

        The engine settings (`model` and `settings`) are the fields of `EngineConfig`, which
        documents them and their defaults; `from_config` takes them as one. With
        ``hidden_states=True`` the server installs the worker extension of
        `reasoning.backends.hidden_states` and turns on vLLM's development endpoints
        (``/collective_rpc`` among them: keep such a server on loopback); it needs eager mode.

        Args:
            model: Embedded model name, local HF folder or HF id (default: the default model).
            host: Interface to bind (loopback unless told otherwise).
            port: TCP port (default: a free one).
            extra_args: More ``vllm serve`` arguments, passed verbatim.
            log: File for the server's output (default: a temporary file); None with
                ``inherit`` output is chosen by `start`.
            progress: Progress callback for the embedded model's first-use conversion.
        """
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {port}")
        self.config = EngineConfig(model=model, **settings)
        """The engine's settings."""
        if self.config.hidden_states and not self.config.enforce_eager:
            raise ConfigError("hidden states need eager mode (compiled graphs skip the hooks)")
        config = self.config
        spec = embedded(config.model or DEFAULT_MODEL)
        self.path = resolve_model(config.model, progress, trust_remote_code=config.trust_remote_code)
        self.model = spec.name if spec else str(config.model)
        """Name the server serves the model under (the embedded name, or `model` as given)."""
        self.host = host
        self.port = port or free_port(host)
        self.max_model_len = config.context_length(spec.max_model_len if spec else None)
        self.kv_cache_gb = config.kv_cache_gb
        self.max_num_seqs = config.max_num_seqs
        self.enforce_eager = config.enforce_eager
        self.dtype_choice = choose_dtype(config.dtype)
        """The dtype the server runs in and why."""
        self.dtype = self.dtype_choice.dtype
        self.seed = config.seed
        self.hidden_states = config.hidden_states
        self.block_size = config.block_size
        self.extra_args = extra_args
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @classmethod
    def from_config(
        cls,
        config: EngineConfig,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        log: Path | None = None,
        progress: Progress | None = None,
    ) -> VLLMServer:
        """Describe a server for the engine `config` describes; the other arguments as `VLLMServer`."""
        return cls(
            **config.engine_settings(),
            host=host,
            port=port,
            extra_args=extra_args,
            log=log,
            progress=progress,
        )

    @property
    def url(self) -> str:
        """Base URL of the server (without ``/v1``)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def command(self) -> list[str]:
        """The server's command line."""
        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.launchers.api_server.entry",
            "--model",
            self.path,
            "--served-model-name",
            self.model,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--dtype",
            self.dtype,
            "--seed",
            str(self.seed),
            "--max-model-len",
            str(self.max_model_len),
            "--max-num-seqs",
            str(self.max_num_seqs),
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens",
            str(max(self.max_model_len, 2048)),
            "--enable-prefix-caching",
            "--enable-prompt-tokens-details",
            "--disable-uvicorn-access-log",
        ]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        if self.config.trust_remote_code:
            cmd.append("--trust-remote-code")
        if self.hidden_states:
            cmd += ["--worker-extension-cls", EXTENSION]
        if self.block_size:
            cmd += ["--block-size", str(self.block_size)]
        if self.config.speculative:
            cmd += ["--speculative-config", json.dumps(speculative_config(self.config.speculative))]
        if not on_gpu():
            cmd += ["--kv-cache-memory-bytes", str(int(self.kv_cache_gb * (1 << 30)))]
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 600.0, inherit_output: bool = False) -> VLLMServer:
        """Launch the server and wait until it answers ``/health``.

        Args:
            timeout: Seconds to wait for the server to become healthy.
            inherit_output: Show the server's output on this process's terminal instead of a log.

        Raises:
            EngineStartError: The server exited or did not become healthy in time; the
                message carries the end of its log.
        """
        if self.process is not None:
            return self
        configure_cpu_environment()
        if not on_gpu():
            check_memory(self.kv_cache_gb, self.path, dtype=self.dtype)
        if _listening(self.host, self.port):
            raise EngineStartError(f"port {self.port} on {self.host} is already in use; pick another --port")
        output: Any = None
        if not inherit_output:
            if self.log_path is None:
                handle, name = tempfile.mkstemp(prefix="reasoning-serve-", suffix=".log")
                os.close(handle)
                self.log_path = Path(name)
            self._log_file = self.log_path.open("wb")
            output = self._log_file
        env = dict(os.environ)
        if self.hidden_states:
            env["VLLM_SERVER_DEV_MODE"] = "1"
        self.process = subprocess.Popen(
            self.command(),
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                tail = self._log_tail()
                self.stop()
                raise EngineStartError(f"the vLLM server for {self.model!r} exited with status {code}{tail}")
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise EngineStartError(
            f"the vLLM server for {self.model!r} was not healthy after {timeout:g}s{self._log_tail()}"
        )

    def healthy(self) -> bool:
        """True when the server answers ``/health`` with 200."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def backend(self, **kwargs: Any) -> OpenAIBackend:
        """An `OpenAIBackend` for this server (keyword arguments go to its constructor)."""
        kwargs.setdefault("max_concurrency", self.max_num_seqs)
        backend = OpenAIBackend(self.url, self.model, tokenizer=self.path, **kwargs)
        backend.engine_info = self.engine_info()
        return backend

    def engine_info(self) -> dict[str, Any]:
        """The server's engine settings and why (as `VLLMBackend.engine_info`), plus its URL."""
        return engine_info(
            self.dtype_choice,
            max_num_seqs=self.max_num_seqs,
            enforce_eager=self.enforce_eager,
            kv_cache_gb=None if on_gpu() else self.kv_cache_gb,
            server=self.url,
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout`); idempotent."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would; for fault tests."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.stop()

    def _log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return " (its output is above)"
        text = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        return f"; log {self.log_path}, last lines:\n" + "\n".join(text)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1" if host in ("0.0.0.0", "") else host, port)) == 0
