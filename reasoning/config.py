"""Validated settings: the one `EngineConfig` every engine we start is described by.

`VLLMBackend`, `VLLMRewardBackend`, `VLLMServer` and the ``solve`` / ``serve`` / ``probe``
commands all take their engine settings from an `EngineConfig` (their keyword arguments are a
thin layer that builds one), so a setting is named, defaulted and checked in one place. The
module imports neither vLLM nor torch: a configuration is checked before anything slow starts.

`Settings` is the base of every settings model (this one, and the run spec of
`reasoning.evals.spec`): frozen, unknown keys refused, and any invalid value a `ConfigError`
that names the field.

Example:
    >>> EngineConfig(model="0.5b", dtype="float32").kv_cache_gb
    2.0
    >>> EngineConfig(kv_cache_gb=-1)
    Traceback (most recent call last):
    ...
    reasoning.errors.ConfigError: invalid engine config: kv_cache_gb must be greater than 0 (got -1)
"""

from __future__ import annotations

from collections.abc import Collection
from contextvars import ContextVar
from typing import Any, ClassVar, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reasoning.engine.hardware import DTYPES
from reasoning.errors import ConfigError

__all__ = ["EngineConfig", "EngineSettings", "Settings", "describe_errors"]

_nested: ContextVar[bool] = ContextVar("reasoning_settings_nested", default=False)


class Settings(BaseModel):
    """Base of settings models: frozen, no unknown keys, errors as one `ConfigError`.

    An invalid value raises `ConfigError` naming the field (its path inside nested settings)
    and the value given, wherever the model is built: ``Model(...)``, ``Model.model_validate``,
    or as a field of another settings model (the outermost one raises, with the full path).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    what: ClassVar[str] = "settings"
    """How error messages call this model (``invalid <what>: ...``)."""
    tags: ClassVar[frozenset[str]] = frozenset()
    """The tags of its tagged unions (pydantic puts them in an error's path; messages leave them out)."""

    def __init__(self, **data: Any) -> None:
        outermost = not _nested.get()
        token = _nested.set(True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if not outermost:  # the outermost model reports it, with the field's whole path
                raise
            raise ConfigError(f"invalid {self.what}: {describe_errors(exc, self.tags)}") from None
        finally:
            _nested.reset(token)


def describe_errors(exc: ValidationError, tags: Collection[str] = ()) -> str:
    """Pydantic's errors in one line: each field's dotted path, what is wrong, the value given.

    Args:
        exc: The errors.
        tags: Tags of tagged unions, left out of the paths.
    """
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"] if part not in tags]
        where = ".".join(loc)
        message = str(error["msg"])
        if error["type"] == "value_error":  # our own validators' messages, kept as written
            message = message.removeprefix("Value error, ")
            parent, _, last = where.rpartition(".")
            if last and message.startswith(last + " "):  # it names the field already
                lines.append(f"{parent + '.' if parent else ''}{message}")
            else:
                lines.append(f"{where}: {message}" if where else message)
            continue
        if error["type"] == "extra_forbidden":
            lines.append(f"{where} is not a known setting")
            continue
        if error["type"] == "missing":
            lines.append(f"{where} is required")
            continue
        if error["type"] == "union_tag_invalid":
            context = error.get("ctx", {})
            key = str(context.get("discriminator", "")).strip("'")
            lines.append(f"{where}.{key} {context.get('tag')!r} is not one of {context.get('expected_tags')}")
            continue
        message = message.replace("Input should be", "must be").replace("Input should", "must")
        lines.append(f"{where} {message} (got {error.get('input')!r})")
    return "; ".join(lines)


class EngineConfig(Settings):
    """The settings of one engine we start (in process, as a server, or a pooling PRM).

    This class is the one place an engine default is written: the keyword forms
    (`VLLMBackend.load`, `VLLMServer`, `load_backends`, `VLLMRewardBackend.load`) take
    `EngineSettings` and leave out what is not given, and the commands' options default to
    these fields. ``solve`` and the leaderboard turn `hidden_states` on when a strategy needs
    hidden states; a pooling PRM engine starts from `EngineConfig.reward`.
    """

    what: ClassVar[str] = "engine config"
    FALLBACK_CONTEXT_LENGTH: ClassVar[int] = 4096
    """Context length of a model that is not embedded, when `max_model_len` is not given."""

    model: str | None = None
    """Embedded model name, local Hugging Face folder or HF id (None: the default model)."""
    dtype: str = "auto"
    """Weight dtype: ``auto`` (chosen from the CPU's features, `reasoning.engine.hardware.choose_dtype`;
    on a GPU, vLLM's choice), ``bfloat16``, ``float16`` or ``float32``."""
    kv_cache_gb: float = Field(default=2.0, gt=0)
    """KV-cache size on CPU, in GiB (ignored on GPUs)."""
    max_num_seqs: int = Field(default=64, gt=0)
    """Most sequences decoded at once."""
    max_model_len: int | None = Field(default=None, gt=0)
    """Context length per sequence (None: the embedded model's, or `FALLBACK_CONTEXT_LENGTH`)."""
    enforce_eager: bool = True
    """Skip graph compilation (faster start; hidden states need it)."""
    block_size: int | None = Field(default=None, gt=0)
    """Tokens per KV-cache block, the prefix cache's unit (None: the engine's default, 128 on
    CPU, 16 on GPUs; step-wise searches on CPU: 32)."""
    seed: int = 0
    """Engine seed (per-request seeds come from the controller)."""
    hidden_states: bool = False
    """Offer hidden states (installs idle forward hooks in the engine's worker; eager mode only)."""
    trust_remote_code: bool = False
    """Let a local model folder run the Python code its config names (``auto_map``); refused
    by default (`reasoning.engine.models.check_remote_code`), and passed on to vLLM."""
    speculative: dict[str, Any] | None = None
    """Token-level speculative decoding inside the engine: vLLM's ``speculative_config``, e.g.
    ``{method: ngram, num_speculative_tokens: 4, prompt_lookup_max: 4}`` (n-gram lookup in the
    prompt) or ``{model: qwen2.5-coder-0.5b-instruct, num_speculative_tokens: 4}`` (a draft
    model; an embedded name is resolved like `model`). Greedy outputs are unchanged, only
    faster or slower: ``benchmarks/speculative.py`` measures which on this machine."""

    @field_validator("speculative")
    @classmethod
    def _speculative_kind(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not ({"method", "model"} & set(value)):
            raise ValueError("speculative needs a method (e.g. ngram) or a draft model")
        if value is not None and int(value.get("num_speculative_tokens", 0)) < 1:
            raise ValueError("speculative needs num_speculative_tokens >= 1")
        return value

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"dtype {value!r} is not one of {', '.join(DTYPES)}")
        return value

    def context_length(self, embedded_length: int | None = None) -> int:
        """The context length the engine gets.

        `max_model_len`, else the embedded model's (`embedded_length`), else the fallback.
        """
        return self.max_model_len or embedded_length or self.FALLBACK_CONTEXT_LENGTH

    def engine_settings(self) -> dict[str, Any]:
        """The fields of `EngineConfig` alone (a subclass's own fields left out), by name."""
        return {name: getattr(self, name) for name in EngineConfig.model_fields}

    @classmethod
    def reward(cls, model: str, **settings: Any) -> EngineConfig:
        """A pooling PRM engine's settings, from a PRM's defaults.

        A smaller KV cache (0.5 GiB) and 4096 tokens of context unless `settings` say otherwise:
        it samples nothing and keeps no long generations.
        """
        return cls(
            **{"kv_cache_gb": 0.5, "max_model_len": cls.FALLBACK_CONTEXT_LENGTH, "model": model, **settings}
        )


class EngineSettings(TypedDict, total=False):
    """The fields of `EngineConfig` other than `model`, as keyword arguments.

    Each is optional: what is not given takes `EngineConfig`'s default.
    """

    dtype: str
    kv_cache_gb: float
    max_num_seqs: int
    max_model_len: int | None
    enforce_eager: bool
    block_size: int | None
    seed: int
    hidden_states: bool
    trust_remote_code: bool
    speculative: dict[str, Any] | None
