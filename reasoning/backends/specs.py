"""The backends a run can name, as one union: an engine to start, a running server, a reply.

`reasoning.backends.start.start` starts any of them; the run spec
(`reasoning.evals.spec.RunSpec`) and the leaderboard's models are made of them.

A backend is an `EngineConfig` (``kind: vllm``, the default), a `ServerBackend`
(``kind: openai``; a string starting with ``http://`` or ``https://`` is one) or a
`ScriptedReply` (``kind: scripted``).

Example:
    >>> from pydantic import TypeAdapter
    >>> TypeAdapter(BackendSpec).validate_python("0.5b").kind
    'vllm'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field

from reasoning.config import EngineConfig, Settings
from reasoning.engine.models import DEFAULT_MODEL, embedded

__all__ = ["DEFAULT_SCRIPT", "BackendSpec", "ScriptedReply", "ServerBackend", "VLLMEngine", "backend_kind"]

DEFAULT_SCRIPT = "The answer is \\boxed{0}."
"""The scripted backend's reply when none is given."""


class VLLMEngine(EngineConfig):
    """An in-process vLLM engine (``kind: vllm``): its `EngineConfig`.

    In a `RunSpec`, its seed is the run's unless given, and its hidden states are turned on when
    a strategy of the run needs them.
    """

    kind: Literal["vllm"] = "vllm"

    def served_model(self) -> str:
        """The model name the engine's records carry (an embedded model's own name)."""
        spec = embedded(self.model or DEFAULT_MODEL)
        return spec.name if spec else str(self.model)


class ServerBackend(Settings):
    """An OpenAI-compatible server that is already running (``kind: openai``)."""

    what: ClassVar[str] = "server backend"

    kind: Literal["openai"] = "openai"
    url: str
    """Base URL (what ``reasoning serve`` printed)."""
    model: str | None = None
    """Served model name (None: the server's first model, asked before the run)."""
    api_key: str = Field(
        default_factory=lambda: os.environ.get("OPENAI_API_KEY", "EMPTY"), exclude=True, repr=False
    )
    """API key (default: ``$OPENAI_API_KEY``); never written to records."""


class ScriptedReply(Settings):
    """The scripted backend (``kind: scripted``): one fixed reply, for dry runs."""

    what: ClassVar[str] = "scripted backend"

    kind: Literal["scripted"] = "scripted"
    script: str = DEFAULT_SCRIPT
    """The reply to every request."""
    seconds_per_token: float = Field(default=0.0, ge=0)
    """Delay before each token (a slow dry run, e.g. to try an interrupted run and its resume)."""

    model: str | None = Field(default=None, exclude=True)
    """The model name its records carry (None: ``scripted``); not part of a run's identity."""

    def served_model(self) -> str:
        """The model name its records carry."""
        return self.model or "scripted"


def backend_kind(value: Any) -> Any:
    """A backend's settings as a mapping with its ``kind`` (others pass as they are).

    Shorthands: a URL is a server, ``scripted`` the scripted reply, any other string a model;
    a mapping's kind from its keys.
    """
    if isinstance(value, str):
        if value.startswith(("http://", "https://")):
            return {"kind": "openai", "url": value}
        if value == "scripted":
            return {"kind": "scripted"}
        return {"kind": "vllm", "model": value}
    if isinstance(value, Mapping) and "kind" not in value:
        kind = "openai" if "url" in value else "scripted" if "script" in value else "vllm"
        return {"kind": kind, **value}
    return value


BackendSpec = Annotated[
    VLLMEngine | ServerBackend | ScriptedReply, Field(discriminator="kind"), BeforeValidator(backend_kind)
]
"""One backend of a run: an engine to start, a running server, or a scripted reply."""
