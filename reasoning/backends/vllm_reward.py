"""A process reward model on vLLM's pooling runner, in process (the `RewardReader` capability).

A PRM such as Qwen2.5-Math-PRM (``Qwen2ForProcessRewardModel``) is a token classifier: it reads
the question and a solution whose steps each end with a step tag (``<extra_0>``) and outputs two
class logits per token; vLLM's ``STEP`` pooling keeps the rows at the step tag's token and applies
the softmax, so one request gives ``[steps, 2]`` probabilities (column 1: the step is correct).
The engine runs with ``runner="pooling"``: it cannot generate, so it serves as a named scorer
backend beside the policy (``Controller({"policy": engine, "prm": prm})``, ``scorer="prm"``).

The step tag must be one token of the PRM's tokenizer (checked at load): its id is the pooler's
``step_tag_id``. Requests go out concurrently and the engine batches them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any, Unpack

import numpy as np

from reasoning.backend import Chunk, Request
from reasoning.backends.vllm_local import (
    backend_error,
    check_memory,
    configure_cpu_environment,
    empty_prefix_cache,
    shutdown_engine,
)
from reasoning.config import EngineConfig, EngineSettings
from reasoning.engine.hardware import choose_dtype
from reasoning.engine.models import resolve_model
from reasoning.errors import BackendError, CapabilityError, ConfigError, EngineStartError

__all__ = ["VLLMRewardBackend"]


class VLLMRewardBackend:
    """A process reward model served by an in-process vLLM pooling engine."""

    def __init__(
        self, engine: Any, tokenizer: Any, name: str, model: str, step_tag: str, step_tag_id: int
    ) -> None:
        self._engine = engine
        self._tokenizer = tokenizer
        self._name = name
        self.model = model
        """Model path or name, as loaded."""
        self.step_tag = step_tag
        """The text that ends every step in the PRM's input."""
        self.step_tag_id = step_tag_id
        """Its token id (the pooler's ``step_tag_id``)."""

    @property
    def name(self) -> str:
        """Backend name."""
        return self._name

    @classmethod
    def load(
        cls, model: str, *, step_tag: str = "<extra_0>", name: str = "prm", **settings: Unpack[EngineSettings]
    ) -> VLLMRewardBackend:
        """Start a pooling engine for the PRM `model` (a local Hugging Face folder or an HF id).

        The keyword form of `from_config`: `settings` are the fields of `EngineConfig`, from a
        PRM's defaults (`EngineConfig.reward`: a smaller KV cache).

        Raises:
            ConfigError: A setting is invalid, or `step_tag` is not one token of the model's
                tokenizer.
            EngineStartError: The engine could not start.
        """
        config = EngineConfig.reward(model, **settings)
        return cls.from_config(config, step_tag=step_tag, name=name)

    @classmethod
    def from_config(
        cls, config: EngineConfig, *, step_tag: str = "<extra_0>", name: str = "prm"
    ) -> VLLMRewardBackend:
        """Start a pooling engine for the PRM `config` describes (its model is required).

        The engine always runs eagerly; `EngineConfig.seed` and `EngineConfig.hidden_states`
        do not apply to it (it samples nothing and offers no hidden states), and its context
        length is `EngineConfig.FALLBACK_CONTEXT_LENGTH` unless `EngineConfig.max_model_len` says otherwise.

        Raises:
            ConfigError: `config` names no model, or `step_tag` is not one token of the model's
                tokenizer.
            EngineStartError: The engine could not start.
        """
        if not config.model:
            raise ConfigError("a PRM engine needs a model (a local Hugging Face folder or an HF id)")
        model, dtype, kv_cache_gb = config.model, config.dtype, config.kv_cache_gb
        max_model_len = config.context_length()
        path = resolve_model(model)
        configure_cpu_environment()
        try:
            import torch
            from transformers import AutoTokenizer
            from vllm.config import PoolerConfig
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise EngineStartError(f"vLLM is not installed ({exc}); see the README's install line") from exc
        tokenizer = AutoTokenizer.from_pretrained(path)
        ids = tokenizer.encode(step_tag, add_special_tokens=False)
        if len(ids) != 1:
            raise ConfigError(
                f"step tag {step_tag!r} is {len(ids)} tokens in {model}'s tokenizer; a PRM's step tag "
                "must be one token (Qwen2.5-Math-PRM: '<extra_0>')"
            )
        gpu = torch.cuda.is_available()
        choice = choose_dtype(dtype, gpu=gpu)
        if not gpu:
            check_memory(kv_cache_gb, path, dtype=choice.dtype)
        args = AsyncEngineArgs(
            model=path,
            tokenizer=path,
            runner="pooling",
            pooler_config=PoolerConfig(pooling_type="STEP", step_tag_id=ids[0]),
            dtype=choice.dtype,
            max_model_len=max_model_len,
            max_num_seqs=config.max_num_seqs,
            enable_chunked_prefill=False,
            max_num_batched_tokens=max(max_model_len, 2048),
            enforce_eager=True,
            **({"block_size": config.block_size} if config.block_size else {}),
            **({} if gpu else {"kv_cache_memory_bytes": int(kv_cache_gb * (1 << 30))}),
        )
        try:
            engine = AsyncLLM.from_engine_args(args)
        except Exception as exc:  # engine start failures arrive as assorted exception types
            raise EngineStartError(f"the PRM engine for {model} could not start: {exc}") from exc
        return cls(engine, engine.get_tokenizer(), name, model, step_tag, ids[0])

    def render(self, request: Request) -> str:
        """The PRM's input text: the conversation through its chat template, no generation prompt."""
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        text: str = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        return text

    def prompt_tokens(self, request: Request) -> int:
        """Tokens of the PRM's input for `request` (its prefill; the PRM decodes nothing)."""
        return len(self._tokenizer.encode(self.render(request), add_special_tokens=False))

    async def step_rewards(self, request: Request) -> np.ndarray:
        """Class probabilities ``[steps, labels]`` at each step tag (see `RewardReader`)."""
        from vllm import PoolingParams

        if self._engine is None:
            raise BackendError("the PRM engine is closed", backend=self.name)
        final = None
        try:
            async for out in self._engine.encode(
                self.render(request), PoolingParams(task="token_classify"), uuid.uuid4().hex
            ):
                final = out
        except Exception as exc:
            raise backend_error(exc, self.name) from exc
        if final is None:
            raise BackendError("the PRM engine returned no output", backend=self.name)
        data = final.outputs.data
        return np.asarray(data.float().cpu().numpy() if hasattr(data, "cpu") else data, dtype=np.float32)

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        """A pooling engine does not generate: always raises `CapabilityError`."""
        raise CapabilityError("generation", self.name, "vllm, openai (a PRM backend only scores steps)")
        yield  # pragma: no cover  (makes this an async generator)

    async def reset_prefix_cache(self) -> None:
        """Empty the PRM engine's prefix cache (a reproducible run starts each problem cold).

        Raises:
            BackendError: The engine refused: requests of another caller are running on it.
        """
        if self._engine is not None:
            await empty_prefix_cache(self._engine, self.name)

    def close(self) -> None:
        """Shut the engine down (idempotent)."""
        engine, self._engine = self._engine, None
        shutdown_engine(engine)

    def __enter__(self) -> VLLMRewardBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
