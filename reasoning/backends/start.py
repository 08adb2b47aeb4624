"""One way to start a backend: `start` takes any `BackendSpec` (or `EngineConfig`) and returns it running.

Every command that needs a backend (``solve``, ``serve``, ``proxy``, the ``probe`` commands,
``doctor``, the leaderboard) and the Ray replicas start theirs here, so an engine's settings
come from one `EngineConfig` and nowhere else::

    backend = start("0.5b", hidden_states=True)            # an in-process engine
    backends = start_all({"draft": "0.5b", "target": "1.5b"})   # checked to fit together first
    close(backends)

vLLM is imported only when an engine starts. `start` and `start_all` are synchronous: call
them before the run's event loop (a server backend is checked with a short one of its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from reasoning.backend import Backend
from reasoning.backends.specs import BackendSpec, ScriptedReply, ServerBackend, VLLMEngine
from reasoning.config import EngineConfig, describe_errors
from reasoning.engine.models import Progress
from reasoning.errors import ConfigError

__all__ = ["as_spec", "close", "engine_config", "start", "start_all", "start_reward"]

_SPEC: TypeAdapter[Any] = TypeAdapter(BackendSpec)


def as_spec(backend: BackendSpec | EngineConfig | str | None) -> VLLMEngine | ServerBackend | ScriptedReply:
    """`backend` as one of the `BackendSpec` kinds (a name or URL read as the run spec reads it).

    Raises:
        ConfigError: `backend` is not a backend's settings (the message names what is wrong).
    """
    if backend is None:
        return VLLMEngine()
    if isinstance(backend, (VLLMEngine, ServerBackend, ScriptedReply)):
        return backend
    if isinstance(backend, EngineConfig):
        return VLLMEngine(**backend.engine_settings())
    try:
        return _SPEC.validate_python(backend)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise ConfigError(f"invalid backend {backend!r}: {describe_errors(exc)}") from None


def engine_config(backend: VLLMEngine | EngineConfig, hidden_states: bool = False) -> EngineConfig:
    """The `EngineConfig` an engine starts with: its own, hidden states on when the run needs them."""
    settings = backend.engine_settings()
    return EngineConfig(**{**settings, "hidden_states": bool(settings["hidden_states"]) or hidden_states})


def start(
    backend: BackendSpec | EngineConfig | str | None = None,
    *,
    hidden_states: bool = False,
    progress: Progress | None = None,
) -> Backend:
    """Start one backend: an engine (`EngineConfig`), a running server, or a scripted reply.

    Args:
        backend: What to start; a model name or a URL is read as `BackendSpec` reads it; None:
            an engine for the default model.
        hidden_states: The run needs hidden states (an engine offers them; others are unchanged).
        progress: Called during the embedded model's first-use conversion.

    Raises:
        ConfigError: `backend` is not a backend's settings.
        EngineStartError: The engine could not start.
        BackendUnavailable: A server does not answer.
    """
    spec = as_spec(backend)
    if isinstance(spec, ScriptedReply):
        from reasoning.backends.scripted import ScriptedBackend

        return ScriptedBackend(
            [spec.script], seconds_per_token=spec.seconds_per_token, model=spec.served_model()
        )
    if isinstance(spec, ServerBackend):
        return _server(spec)
    from reasoning.backends.vllm_local import VLLMBackend

    return VLLMBackend.from_config(engine_config(spec, hidden_states), progress=progress)


def start_all(
    backends: Mapping[str, BackendSpec | EngineConfig | str],
    *,
    hidden_states: bool = False,
    progress: Progress | None = None,
) -> dict[str, Backend]:
    """Start named backends; several engines are first checked to fit in memory together.

    If one fails to start, those already started are shut down before the error propagates.

    Raises:
        ConfigError: No backends, or one is not a backend's settings.
        EngineStartError: The engines do not fit together, or one could not start.
    """
    if not backends:
        raise ConfigError("no backends to start")
    specs = {name: as_spec(b) for name, b in backends.items()}
    engines = {
        name: engine_config(spec, hidden_states)
        for name, spec in specs.items()
        if isinstance(spec, VLLMEngine)
    }
    started: dict[str, Backend] = {}
    try:
        if len(engines) > 1:
            from reasoning.backends.vllm_local import load_backends

            started.update(load_backends(engines))
        for name, spec in specs.items():
            if name not in started:
                started[name] = start(engines.get(name, spec), progress=progress)
    except BaseException:
        close(started)
        raise
    return {name: started[name] for name in specs}


def start_reward(model: str, name: str = "prm", **settings: Any) -> Backend:
    """Start a pooling engine for the process reward model `model` (`EngineConfig.reward`)."""
    from reasoning.backends.vllm_reward import VLLMRewardBackend

    return VLLMRewardBackend.from_config(EngineConfig.reward(model, **settings), name=name)


def close(backends: Backend | Mapping[str, Backend] | None) -> None:
    """Shut down the engines among `backends` (one, or several by name); others are left as they are."""
    if backends is None:
        return
    for each in backends.values() if isinstance(backends, Mapping) else [backends]:
        shut = getattr(each, "close", None)
        if shut is not None:
            shut()


def _server(spec: ServerBackend) -> Backend:
    from reasoning.backends.openai_server import OpenAIBackend

    backend = OpenAIBackend(spec.url, spec.model, api_key=spec.api_key)

    async def check() -> None:
        try:
            await backend.check()
        finally:
            await backend.aclose()  # the run opens its own connections in its own event loop

    asyncio.run(check())
    return backend
