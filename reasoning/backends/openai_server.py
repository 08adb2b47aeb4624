"""Backend over an OpenAI-compatible server (a vLLM server, or any compatible one).

Requests go through the ``openai`` package's async client, streamed. Choices:

* **Same prompts as in-process.** When the model's tokenizer is available locally (an embedded
  model, a local folder, or ``tokenizer=``), the prompt is rendered here with the model's chat
  template plus the assistant prefix verbatim and sent to the *completions* endpoint, so the
  server sees byte for byte what `VLLMBackend` sends (same prefix-cache hits, same seeded
  samples) and prefix continuation works on any server. Without a local tokenizer the *chat*
  endpoint is used; a prefix is then continued with vLLM's ``continue_final_message``.
* **Exact token counts.** vLLM's ``return_token_ids`` gives each streamed piece's token ids;
  other servers fall back to logprobs or continuous usage statistics.
* **Cancellation** is closing the stream: the HTTP connection closes and vLLM aborts the request.
* **Faults.** Connection errors, timeouts, HTTP 429 and 5xx are retried with exponential
  backoff while nothing has been streamed yet. When retries run out the server is declared
  unreachable (`BackendUnavailable`, the runner stops and keeps finished results); a stream
  cut mid-way raises a retryable `BackendError`. Server error text never becomes answer text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import numpy as np

from reasoning.backend import (
    HIDDEN_STATES_OFFERED_BY,
    PROMPT_LOGPROBS_OFFERED_BY,
    Chunk,
    FinishReason,
    Request,
    TokenLogprob,
)
from reasoning.backends.hidden_states import capture_args, decode_popped, fetch, positions_of
from reasoning.errors import BackendError, BackendUnavailable, CapabilityError, ConfigError

__all__ = ["OpenAIBackend"]

logger = logging.getLogger(__name__)

_CPU_BLOCK_SIZE = 128  # prefix-cache block of vLLM on CPU; only steers how cached positions are refetched


class OpenAIBackend:
    """A model behind an OpenAI-compatible HTTP server.

    Example:
        >>> backend = OpenAIBackend("http://127.0.0.1:8000")        # doctest: +SKIP
        >>> await backend.check()                                   # doctest: +SKIP
        >>> await collect(backend, request)                         # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str = "EMPTY",
        tokenizer: str | Any = None,
        timeout: float = 300.0,
        connect_timeout: float = 10.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_concurrency: int = 64,
        name: str = "openai",
        http_client: Any = None,
    ) -> None:
        """Point at a server; nothing is sent until `check` or the first request.

        Args:
            base_url: Server URL, with or without the trailing ``/v1``.
            model: Served model name (default: the server's first model, read by `check`).
            api_key: Bearer token, if the server wants one.
            tokenizer: Local tokenizer for the chat template: an embedded model name, a folder,
                or a tokenizer object (``apply_chat_template`` and ``encode``); default: the
                model's own when it is an embedded model or a local folder, else none (chat).
            timeout: Seconds to wait for the next streamed piece before giving up.
            connect_timeout: Seconds to wait for a connection.
            max_retries: Retries of a failed call before the server counts as unreachable.
            backoff: First retry delay in seconds; doubles on every retry (with jitter).
            max_concurrency: Samples the server decodes at once (sizes the runner's queue).
            name: Backend name in records and errors.
            http_client: A custom ``httpx.AsyncClient`` (proxies, certificates, tests).
        """
        if max_retries < 0 or backoff < 0 or timeout <= 0 or connect_timeout <= 0:
            raise ConfigError("max_retries and backoff must be >= 0, timeouts > 0")
        url = base_url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"base URL {base_url!r} must start with http:// or https://")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        """The API root (ends with ``/v1``)."""
        self.model = model or ""
        """Served model name (filled by `check` when not given)."""
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_concurrency = max_concurrency
        self.engine_info: dict[str, Any] = {"server": url.removesuffix("/v1")}
        """What records say about the engine behind the URL (`VLLMServer.backend` fills in its
        settings; a server started elsewhere is known only by its URL)."""
        self._name = name
        self._api_key = api_key
        self._timeout = (timeout, connect_timeout)
        self._tokenizer_source = tokenizer
        self._tokenizer: Any = None
        self._tokenizer_loaded = False
        self._client: Any = None
        self._http_client = http_client
        self._num_layers: int | None = None

    @property
    def name(self) -> str:
        """Backend name."""
        return self._name

    @property
    def url(self) -> str:
        """Server URL without the API suffix, for messages."""
        return self.base_url.removesuffix("/v1")

    def _get_client(self) -> Any:
        if self._client is None:
            import httpx
            import openai

            read, connect = self._timeout
            if self._http_client is None or self._http_client.is_closed:
                self._http_client = httpx.AsyncClient(timeout=httpx.Timeout(read, connect=connect))
            self._client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key,
                max_retries=0,  # retries are ours: only before anything streamed
                timeout=httpx.Timeout(read, connect=connect),
                http_client=self._http_client,
            )
        return self._client

    async def check(self) -> list[str]:
        """Reach the server, fill in the model name, and return the models it serves.

        Raises:
            BackendUnavailable: The server cannot be reached (the message has the URL).
            ConfigError: The server does not serve the requested model.
        """
        page = await self._with_retries(lambda: self._get_client().models.list())
        models = [m.id for m in page.data]
        if not self.model:
            if not models:
                raise BackendError(f"the server at {self.url} serves no model", backend=self.name)
            self.model = models[0]
        elif self.model not in models:
            raise ConfigError(
                f"the server at {self.url} does not serve {self.model!r}; it serves: {', '.join(models)}"
            )
        return models

    async def decoded_tokens(self) -> int:
        """Tokens the server's engine has decoded since it started (vLLM's ``/metrics``).

        Read it before and after a run to see what cancellation freed: tokens decoded minus
        tokens delivered is the work done for requests already cancelled.

        Raises:
            CapabilityError: The server publishes no vLLM generation-token counter.
        """
        import httpx

        self._get_client()
        try:
            response = await self._http_client.get(self.url + "/metrics")
        except httpx.HTTPError as exc:
            raise self._error(exc) from exc
        total, found = 0.0, False
        for line in response.text.splitlines():
            if line.startswith("vllm:generation_tokens_total"):
                total += float(line.rsplit(" ", 1)[-1])
                found = True
        if response.status_code != 200 or not found:
            raise CapabilityError("engine token counts", self.name, "vllm, or openai on a vLLM server")
        return int(total)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # -- prompts -------------------------------------------------------------------------------

    def _local_tokenizer(self) -> Any:
        if self._tokenizer_loaded:
            return self._tokenizer
        if self._tokenizer_source is not None and not isinstance(self._tokenizer_source, str):
            self._tokenizer, self._tokenizer_loaded = self._tokenizer_source, True
            return self._tokenizer
        source = self._tokenizer_source or self.model
        if not source:
            return None  # the model name is not known yet (`check` reads it): decide later
        self._tokenizer_loaded = True
        from reasoning.engine.models import cached_model_path

        path = cached_model_path(source)
        if path is None and not _in_hf_cache(source):
            if self._tokenizer_source:
                raise ConfigError(f"tokenizer {source!r} is neither a local folder nor a cached model")
            logger.info("no local tokenizer for %r; using the chat endpoint", source)
            return None
        path = path or source
        try:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # any load failure means: no local template, use chat
            if self._tokenizer_source:
                raise ConfigError(f"cannot load tokenizer {self._tokenizer_source!r}: {exc}") from exc
            logger.info("no local tokenizer for %r (%s); using the chat endpoint", source, exc)
            self._tokenizer = None
        return self._tokenizer

    def render(self, request: Request) -> str:
        """The exact prompt text sent to the completions endpoint (needs a local tokenizer)."""
        tokenizer = self._local_tokenizer()
        if tokenizer is None:
            raise CapabilityError("prompt rendering", self.name, "vllm, or openai with a local tokenizer")
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        text: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + request.prefix

    def prompt_tokens(self, request: Request) -> int:
        """Number of tokens of the rendered prompt (needs a local tokenizer)."""
        tokenizer = self._local_tokenizer()
        if tokenizer is None:
            raise CapabilityError(
                "prompt token counting", self.name, "vllm, or openai with a local tokenizer"
            )
        return len(tokenizer.encode(self.render(request), add_special_tokens=False))

    # -- hidden states ---------------------------------------------------------------------------

    async def prompt_logprobs(self, request: Request) -> tuple[TokenLogprob, ...]:
        """Log-probability of each prompt token after the first (`PromptScorer`).

        vLLM's ``prompt_logprobs`` extension: one request decoding one token, retried like the
        others. A server without the extension answers without them: `CapabilityError`.
        """
        if not self.model:
            await self.check()
        client = self._get_client()
        extra: dict[str, Any] = {"prompt_logprobs": 0, "return_token_ids": True}
        common: dict[str, Any] = {"model": self.model, "max_tokens": 1, "temperature": 0.0}
        if self._local_tokenizer() is not None:
            response = await self._with_retries(
                lambda: client.completions.create(prompt=self.render(request), extra_body=extra, **common)
            )
            holder = response.choices[0]
        else:
            messages = [{"role": m.role, "content": m.content} for m in request.messages]
            if request.prefix:
                messages.append({"role": "assistant", "content": request.prefix})
                extra.update(continue_final_message=True, add_generation_prompt=False)
            response = await self._with_retries(
                lambda: client.chat.completions.create(messages=messages, extra_body=extra, **common)
            )
            holder = response
        extras = holder.model_extra or {}
        positions = extras.get("prompt_logprobs")
        if not positions:
            raise CapabilityError(
                f"prompt log-probabilities (the server at {self.url} returned none)",
                self.name,
                PROMPT_LOGPROBS_OFFERED_BY,
            )
        ids = extras.get("prompt_token_ids") or []
        out = []
        for i, position in enumerate(positions):
            if i == 0 or not position:
                continue
            entry = position.get(str(ids[i])) if i < len(ids) else None
            if entry is None:  # without ids: the one entry prompt_logprobs=0 returns
                entry = next(iter(position.values()))
            out.append(TokenLogprob(token=entry.get("decoded_token") or "", logprob=float(entry["logprob"])))
        return tuple(out)

    async def hidden_states(
        self, request: Request, layers: Sequence[int], positions: Sequence[int] = (-1,)
    ) -> np.ndarray:
        """Hidden states ``[len(positions), len(layers), hidden]`` of `request`'s prompt text.

        Works against a vLLM server started with ``reasoning serve --hidden-states`` (the
        worker extension of `reasoning.backends.hidden_states` plus vLLM's ``/collective_rpc``
        development endpoint); the probe itself is an ordinary completions request.

        Raises:
            CapabilityError: The server has no hidden-state extension, or there is no local
                tokenizer to render the prompt.
        """
        if not self.model:
            await self.check()  # the served model's name: where its local tokenizer is found
        tokenizer = self._local_tokenizer()
        if tokenizer is None:
            raise CapabilityError(
                "hidden states (no local tokenizer to render the prompt)", self.name, HIDDEN_STATES_OFFERED_BY
            )
        count = await self._install()
        bad = [layer for layer in layers if not 0 <= layer <= count]
        if bad or not layers:
            raise ConfigError(f"layers {bad or '[]'} are outside 0..{count} (0 = embeddings)")
        ids = tokenizer.encode(self.render(request), add_special_tokens=False)
        wanted = positions_of(positions, len(ids))
        return await fetch(self._probe, self._pop, ids, list(layers), wanted, _CPU_BLOCK_SIZE)

    async def _rpc(self, method: str, *args: str) -> Any:
        import httpx

        self._get_client()
        try:
            response = await self._http_client.post(
                self.url + "/collective_rpc", json={"method": method, "args": list(args)}
            )
        except httpx.HTTPError as exc:
            raise self._error(exc) from exc
        if response.status_code != 200:
            raise CapabilityError(
                f"hidden states (the server at {self.url} answered {response.status_code} to "
                f"{method}: it was not started with --hidden-states)",
                self.name,
                HIDDEN_STATES_OFFERED_BY,
            )
        return response.json()["results"][0]

    async def _install(self) -> int:
        if self._num_layers is None:
            self._num_layers = int(await self._rpc("reasoning_hs_install"))
        return self._num_layers

    async def _probe(self, ids: list[int], layers: list[int], positions: list[int], salt: str | None) -> str:
        key = uuid.uuid4().hex
        extra: dict[str, Any] = {"vllm_xargs": capture_args(key, layers, positions)}
        if salt is not None:
            extra["cache_salt"] = salt
        call = self._get_client().completions.create
        await self._with_retries(
            lambda: call(model=self.model, prompt=ids, max_tokens=1, temperature=0.0, extra_body=extra)
        )
        return key

    async def _pop(self, keys: list[str]) -> dict[str, tuple[list[int], np.ndarray | None]]:
        return decode_popped(await self._rpc("reasoning_hs_pop", json.dumps(keys)))

    # -- streaming -----------------------------------------------------------------------------

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        """Stream all samples of `request`; closing the stream aborts it on the server."""
        if not self.model:
            await self.check()
        attempt = 0
        while True:
            streamed = False
            try:
                async with contextlib.aclosing(self._stream_once(request)) as chunks:
                    async for chunk in chunks:
                        streamed = True
                        yield chunk
                return
            except BackendError as exc:
                if not exc.retryable:
                    raise
                if streamed:
                    if not await self._reachable():
                        raise self._unavailable(exc) from exc
                    raise BackendError(
                        f"the stream from {self.url} broke off: {exc}", retryable=True, backend=self.name
                    ) from exc
                if attempt >= self.max_retries:
                    raise self._unavailable(exc) from exc
                await self._sleep(attempt, exc)
                attempt += 1

    async def _reachable(self) -> bool:
        try:
            await self._with_retries(lambda: self._get_client().models.list())
        except BackendUnavailable:
            return False
        except BackendError:
            return True
        return True

    async def _with_retries(self, call: Any) -> Any:
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                error = self._error(exc)
                if not error.retryable:
                    raise error from exc
                if attempt >= self.max_retries:
                    raise self._unavailable(error) from exc
                await self._sleep(attempt, error)
                attempt += 1

    async def _sleep(self, attempt: int, exc: BackendError) -> None:
        delay = self.backoff * (2**attempt) * (0.5 + random.random())
        logger.info("retrying %s in %.1fs after: %s", self.url, delay, exc)
        await asyncio.sleep(delay)

    def _unavailable(self, exc: BackendError) -> BackendUnavailable:
        tries = self.max_retries + 1
        if isinstance(exc, _StatusError):  # it is up, but keeps refusing (429) or failing (5xx)
            return BackendUnavailable(
                f"the server at {self.url} still failed after {tries} tries ({exc}); "
                "it is overloaded or broken: try again later, or with fewer problems in flight",
                backend=self.name,
            )
        return BackendUnavailable(
            f"cannot reach the server at {self.url} after {tries} tries ({exc}); "
            "is it running? start one with: reasoning serve",
            backend=self.name,
        )

    async def _stream_once(self, request: Request) -> AsyncGenerator[Chunk, None]:
        s = request.sampling
        common: dict[str, Any] = {
            "model": self.model,
            "n": s.n,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        if s.stop:
            common["stop"] = list(s.stop)
        if s.seed is not None and s.temperature > 0:
            common["seed"] = s.seed
        extra: dict[str, Any] = {"return_token_ids": True}
        if request.stream_interval > 1:  # vLLM's per-request chunking; the last piece comes at once
            extra["stream_interval"] = request.stream_interval
        if s.top_k > 0:
            extra["top_k"] = s.top_k
        client = self._get_client()
        chat = self._local_tokenizer() is None
        try:
            if chat:
                messages = [{"role": m.role, "content": m.content} for m in request.messages]
                if request.prefix:
                    messages.append({"role": "assistant", "content": request.prefix})
                    extra.update(continue_final_message=True, add_generation_prompt=False)
                if s.logprobs is not None:
                    common.update(logprobs=True, top_logprobs=s.logprobs)
                response = await client.chat.completions.create(messages=messages, extra_body=extra, **common)
            else:
                if s.logprobs is not None:
                    common["logprobs"] = s.logprobs
                response = await client.completions.create(
                    prompt=self.render(request), extra_body=extra, **common
                )
            async with contextlib.aclosing(self._chunks(response, chat, s.logprobs)) as chunks:
                async for chunk in chunks:
                    if not 0 <= chunk.index < s.n:
                        raise BackendError(
                            f"the server at {self.url} sent sample {chunk.index} of a request for {s.n}",
                            backend=self.name,
                        )
                    yield chunk
        except (GeneratorExit, asyncio.CancelledError, BackendError):
            raise
        except Exception as exc:
            raise self._error(exc) from exc

    async def _chunks(self, response: Any, chat: bool, k: int | None) -> AsyncGenerator[Chunk, None]:
        seen: dict[int, int] = {}  # tokens so far per sample, from continuous usage
        prompt_tokens = 0
        try:
            async for event in response:
                usage = getattr(event, "usage", None)
                if usage is not None:
                    prompt_tokens = usage.prompt_tokens or prompt_tokens
                if not event.choices:
                    details = getattr(usage, "prompt_tokens_details", None) if usage else None
                    cached = getattr(details, "cached_tokens", None) or 0
                    if cached:  # the final usage piece: the prefix-cache hits of the request
                        yield Chunk(
                            index=0, text="", tokens=0, prompt_tokens=prompt_tokens, cached_tokens=cached
                        )
                    continue
                for choice in event.choices:
                    text = (choice.delta.content or "") if chat else (choice.text or "")
                    extra = choice.model_extra or {}
                    logprobs = _chat_logprobs(choice, k) if chat else _completion_logprobs(choice, k)
                    tokens = _count_tokens(extra, logprobs, usage, seen, choice.index, text)
                    prompt_ids = extra.get("prompt_token_ids")
                    if prompt_ids:
                        prompt_tokens = len(prompt_ids)
                    reason: FinishReason | None = None
                    stop = extra.get("stop_reason")
                    if choice.finish_reason is not None:
                        reason = "length" if choice.finish_reason == "length" else "stop"
                        if choice.finish_reason == "abort":
                            reason = "cancelled"
                    yield Chunk(
                        index=choice.index,
                        text=text,
                        tokens=tokens,
                        prompt_tokens=prompt_tokens,
                        logprobs=logprobs,
                        finish_reason=reason,
                        stop_string=stop if reason == "stop" and isinstance(stop, str) else None,
                    )
        finally:
            await response.close()

    def _error(self, exc: BaseException) -> BackendError:
        import httpx
        import openai

        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            return BackendError(f"timed out waiting for {self.url}", retryable=True, backend=self.name)
        if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
            cause = exc.__cause__ or exc
            return BackendError(
                f"connection to {self.url} failed ({type(cause).__name__}: {cause})",
                retryable=True,
                backend=self.name,
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = _server_message(exc)
            retryable = status == 429 or status >= 500
            return _StatusError(
                f"the server at {self.url} answered HTTP {status}: {detail}",
                retryable=retryable,
                backend=self.name,
            )
        if isinstance(exc, openai.APIError):  # an error event inside the stream
            return BackendError(f"the server at {self.url} reported: {exc.message}", backend=self.name)
        return BackendError(f"request to {self.url} failed ({type(exc).__name__}: {exc})", backend=self.name)


class _StatusError(BackendError):
    """The server answered with an HTTP error status (it is reachable)."""


def _in_hf_cache(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return False
    try:
        found = try_to_load_from_cache(model_id, "tokenizer_config.json")
    except Exception:  # an id huggingface_hub rejects is not cached either
        return False
    return isinstance(found, str)


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        if isinstance(body.get("message"), str):
            return str(body["message"])[:500]
    return str(getattr(exc, "message", exc))[:500]


def _count_tokens(
    extra: dict[str, Any],
    logprobs: tuple[TokenLogprob, ...],
    usage: Any,
    seen: dict[int, int],
    index: int,
    text: str,
) -> int:
    ids = extra.get("token_ids")
    if ids is not None:
        return len(ids)
    if logprobs:
        return len(logprobs)
    if usage is not None and usage.completion_tokens is not None:
        before, seen[index] = seen.get(index, 0), int(usage.completion_tokens)
        return max(0, seen[index] - before)
    return 1 if text else 0  # last resort: servers stream about one token per piece


def _completion_logprobs(choice: Any, k: int | None) -> tuple[TokenLogprob, ...]:
    lp = choice.logprobs
    if k is None or lp is None or not lp.tokens:
        return ()
    out = []
    tops = lp.top_logprobs or [None] * len(lp.tokens)
    for token, value, top in zip(lp.tokens, lp.token_logprobs or [], tops, strict=False):
        ranked = sorted((top or {token: value}).items(), key=lambda kv: -kv[1])[: max(k, 1)]
        out.append(
            TokenLogprob(token=token, logprob=float(value), top=tuple((t, float(v)) for t, v in ranked))
        )
    return tuple(out)


def _chat_logprobs(choice: Any, k: int | None) -> tuple[TokenLogprob, ...]:
    lp = choice.logprobs
    if k is None or lp is None or not lp.content:
        return ()
    out = []
    for item in lp.content:
        ranked = sorted(((t.token, t.logprob) for t in item.top_logprobs or ()), key=lambda kv: -kv[1])
        top = tuple((t, float(v)) for t, v in ranked[: max(k, 1)]) or ((item.token, float(item.logprob)),)
        out.append(TokenLogprob(token=item.token, logprob=float(item.logprob), top=top))
    return tuple(out)
