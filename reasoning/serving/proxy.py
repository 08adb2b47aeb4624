"""An OpenAI-compatible server that answers each request with a test-time strategy.

``reasoning proxy`` serves `create_app`: ``POST /v1/chat/completions``, ``POST /v1/completions``,
``GET /v1/models``, ``GET /v1/models/{id}`` and ``GET /metrics``, in front of any backend (the
in-process engine, an upstream OpenAI-compatible server, or the scripted backend), or of a model
group of them. An unmodified OpenAI client gets test-time
scaling by naming a strategy:

- in the model name: ``self-consistency@qwen2.5-coder-0.5b-instruct`` (any spec of the grammar
  of `reasoning.compose`, e.g. ``self-consistency(n=3)@<model>``);
- in the body (``extra_body`` of the OpenAI client), exactly
  ``{"strategy": "self-consistency", "params": {"n": 3}, "budget": {"output_tokens": 2000}}``;
- or in headers: ``X-Reasoning-Strategy``, ``X-Reasoning-Params`` and ``X-Reasoning-Budget``
  (the last two JSON objects).

The body wins over the headers, the headers over the model name, and the server's default
strategy applies when none is named. Each request is one problem: its messages are the prompt,
verbatim (``--instruction`` appends a line to the last user message), and the strategy's chosen
candidate is the reply. ``usage`` counts every internal call (prompt, completion and cached
tokens), a ``reasoning`` object says what was done (strategy, candidates, answer, stop reason,
record id, the request fields it ignored), and the full `Run` record is appended to the records
JSONL (the format of ``reasoning solve``'s results; `reasoning.evals.run.read_results` reads it).

Every field of a request is applied or listed in ``reasoning.ignored``, and a value outside
OpenAI's range is a 400: ``max_tokens`` caps every model call of the strategy (inner strategies
included), ``stop`` ends every call and cuts the reply, ``temperature`` and ``top_p`` set the
parameter of that name of the strategy and of every strategy it composes (except where its spec
or ``params`` give that parameter explicitly). A run that ends
without a reply (no chosen candidate, or an empty one) is never an empty success: it is a 422
error naming why (its stop reason, and the budget line that stopped it), with the ``reasoning``
object and the usage beside the error, streamed or not (text a streamed ``single`` already sent
stays; the error event follows it, and no chunk has a finish reason).

A client that goes away (a closed connection, streaming or not, also while its request waits
for a slot) cancels its run at once: its engine requests are aborted, nothing is recorded.

A deterministic proxy (`ProxySettings.deterministic`, ``reasoning proxy --deterministic``) runs
every request as ``reasoning solve --deterministic`` runs a problem: one request at a time, from
an empty prefix cache, its requests one after another, its seed `DETERMINISTIC_SEED` unless it
gives one; the same request then gets the same reply (``reasoning.deterministic`` says so).

A model group (`create_app` given named backends, e.g. ``{"draft": ..., "target": ...}``) is
served under ``ProxySettings.model`` and each of its backends alone under its model's name. The
strategies that need named backends (`backends_needed`: spec-reason, spec-thinking, atts,
arbitrage, ...) run on the group, asked for at the group or at one of its models
(``spec-reason@<target's model>``); ``reasoning.usage_by_backend`` says what each backend spent.
Such a strategy where no group can serve it is a 400 naming why (``model_group_required``,
``model_group_not_found``, ``backend_not_found``).

``GET /metrics`` is Prometheus' text format (`reasoning.serving.metrics`): requests by strategy
and status, tokens by kind and model, latency and time-to-first-byte histograms, queue depth,
runs in flight, budget stops and cancels, on a registry of the app's own.

Streaming (``stream: true``) sends what is known when it is known:
- ``single`` (one trace): its tokens as the engine decodes them;
- ``first-finish`` with k=1 (a race): the winning trace the moment it finishes, before the
  losers' cancellation and the record are done;
- every other strategy: progress as SSE comments (``: reasoning {...}``: calls, samples,
  tokens decoded, samples finished) while it works, then the chosen candidate.

Limits (`Limits`): a request's budget defaults to the server's caps and may not exceed them, a
strategy may not ask for more samples per call (``n``) or tokens per sample (``max_tokens``)
than the caps, and at most ``max_concurrent`` requests run at once (``max_queue`` more wait;
beyond that: 429). Errors are OpenAI-format JSON (``{"error": {"message", "type", "param",
"code"}}``). With an API key set, every route asks for ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from reasoning import STRATEGIES, Budget, Controller, Message, Problem, Run, Strategy
from reasoning.backend import AdmitsAtOnce, Backend, Chunk, PrefixCache
from reasoning.backend import Request as BackendRequest
from reasoning.compose import build, parse, spec_of
from reasoning.concurrency import task_group
from reasoning.errors import (
    ArtefactRequired,
    BackendError,
    BackendUnavailable,
    CapabilityError,
    ConfigError,
    ReasoningError,
)
from reasoning.serving.metrics import CONTENT_TYPE, UNKNOWN, ProxyMetrics
from reasoning.strategies.named_backends import backends_needed

__all__ = [
    "DETERMINISTIC_SEED",
    "Limits",
    "ProxyError",
    "ProxySettings",
    "backends_needed",
    "create_app",
    "stop_runs",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

PROGRESS_EVERY = 0.5
"""Seconds between two progress comments of a streamed reply (and a sample's finish sends one)."""

_BUDGET_LINES = ("output_tokens", "prompt_tokens", "calls", "seconds")

DETERMINISTIC_SEED = 0
"""The run seed of a request without one, when the proxy is deterministic (``reasoning solve``'s
default): the same request replays. Without `ProxySettings.deterministic` a random one is drawn."""


@dataclass(frozen=True)
class Limits:
    """The server's caps on what one request may ask for and on requests at once."""

    max_n: int = 16
    """Most samples per model call a strategy may ask for (its ``n`` and any inner ``n``)."""
    max_tokens: int = 4096
    """Most tokens per sample (a strategy's ``max_tokens``)."""
    output_tokens: int = 32768
    """Most output tokens per request, all calls together (the default budget line too)."""
    prompt_tokens: int | None = None
    """Most prompt tokens per request (None: no cap)."""
    calls: int = 256
    """Most model calls per request."""
    seconds: float = 600.0
    """Most wall seconds per request."""
    max_concurrent: int = 16
    """Requests solved at once."""
    max_queue: int = 256
    """Requests waiting for a slot; one more is refused with 429."""

    def __post_init__(self) -> None:
        for name in ("max_n", "max_tokens", "output_tokens", "calls", "max_concurrent"):
            if getattr(self, name) < 1:
                raise ConfigError(f"proxy limit {name} must be >= 1, got {getattr(self, name)}")
        if self.seconds <= 0:
            raise ConfigError(f"proxy limit seconds must be > 0, got {self.seconds:g}")
        if self.prompt_tokens is not None and self.prompt_tokens < 1:
            raise ConfigError(f"proxy limit prompt_tokens must be >= 1, got {self.prompt_tokens}")
        if self.max_queue < 0:
            raise ConfigError(f"proxy limit max_queue must be >= 0, got {self.max_queue}")

    def budget(self, asked: Mapping[str, Any] | None) -> Budget:
        """The budget of a request: what it asked for, each line within the cap (default: the cap).

        Raises:
            ProxyError: An unknown line, a value that is not a positive number, or over the cap.
        """
        asked = dict(asked or {})
        unknown = sorted(set(asked) - set(_BUDGET_LINES))
        if unknown:
            raise ProxyError(
                f"unknown budget line {unknown[0]!r}; lines: {', '.join(_BUDGET_LINES)}", param="budget"
            )
        lines: dict[str, Any] = {}
        for line in _BUDGET_LINES:
            cap = getattr(self, line)
            value = asked.get(line)
            if value is None:
                lines[line] = cap
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ProxyError(f"budget.{line} must be a positive number, got {value!r}", param="budget")
            if line != "seconds" and not float(value).is_integer():
                raise ProxyError(f"budget.{line} must be a whole number, got {value!r}", param="budget")
            if cap is not None and value > cap:
                raise ProxyError(
                    f"budget.{line}={value} is over this server's cap of {cap}",
                    param="budget",
                    code="over_limit",
                )
            lines[line] = value if line == "seconds" else int(value)
        return Budget(**lines)

    def check(self, strategy: Strategy) -> None:
        """Refuse a strategy (or an inner one) asking for more samples or tokens than the caps."""
        for name, value in _knobs(strategy):
            if name == "n" and value > self.max_n:
                raise ProxyError(
                    f"{spec_of(strategy)} asks for n={value} samples; this server allows at most "
                    f"{self.max_n}",
                    param="params",
                    code="over_limit",
                )
            if name == "max_tokens" and value > self.max_tokens:
                raise ProxyError(
                    f"{spec_of(strategy)} asks for max_tokens={value} per sample; this server allows "
                    f"at most {self.max_tokens}",
                    param="max_tokens",
                    code="over_limit",
                )


def _knobs(strategy: object) -> list[tuple[str, int]]:
    """Every ``n`` and ``max_tokens`` of a strategy and of the strategies it composes."""
    found: list[tuple[str, int]] = []
    if not dataclasses.is_dataclass(strategy) or isinstance(strategy, type):
        return found
    for f in dataclasses.fields(strategy):
        value = getattr(strategy, f.name)
        if f.name in ("n", "max_tokens") and isinstance(value, int) and not isinstance(value, bool):
            found.append((f.name, value))
        elif dataclasses.is_dataclass(value) and STRATEGIES.holds(type(value)):
            found.extend(_knobs(value))
    return found


@dataclass
class ProxySettings:
    """How the server answers: the served model, the default strategy, caps, key and records."""

    model: str
    """The served model's name (``/v1/models`` lists it and ``<strategy>@<model>``); when the proxy
    serves a model group (`create_app` given named backends), the group's name."""
    strategy: str = "single"
    """Spec of the strategy used when a request names none."""
    limits: Limits = field(default_factory=Limits)
    """Caps per request and on requests at once."""
    api_key: str | None = None
    """When set, every request must carry ``Authorization: Bearer <api_key>``."""
    records: Path | None = Path("results/proxy.jsonl")
    """Where every request's full `Run` record is appended (None: kept in memory only)."""
    instruction: str | None = None
    """A line appended to the last user message (e.g. the boxed-answer instruction), if any."""
    keep: int = 1000
    """Records kept in memory for ``GET /v1/reasoning/records/{id}``."""
    deterministic: bool = False
    """Reproducible replies, in the mode of ``reasoning solve --deterministic``
    (`reasoning.Controller.deterministic`): requests are solved one at a time (`Limits.max_concurrent`
    is not used), each from an empty prefix cache, a run's requests one after another; a request
    without a ``seed`` runs with `DETERMINISTIC_SEED`. The same request then gets the same reply
    on the same engine and machine. Every backend must be able to empty its prefix cache (the
    in-process engine, the scripted backend): not a server."""


class ProxyError(Exception):
    """A request the proxy refuses, with its OpenAI error fields."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.param = param
        self.code = code
        self.extra = dict(extra or {})
        """Keys sent beside ``error`` (a run's ``reasoning`` and ``usage``)."""

    def body(self) -> dict[str, Any]:
        """The OpenAI error object (and `extra` beside it)."""
        error = {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}
        return {"error": error, **self.extra}


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class _ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_Part] | None = None


MAX_STOP = 4
"""Most stop strings a request may give (OpenAI's limit)."""

MAX_SEED = 2**63
"""A request's ``seed`` is a non-negative integer below this (OpenAI's: a signed 64-bit one)."""


class _Body(BaseModel):
    """The fields of a request the proxy reads, with OpenAI's ranges.

    Fields it does not apply (``user``, penalties, ``logit_bias``, anything else) are accepted,
    checked where OpenAI bounds them, and listed in ``reasoning.ignored``.
    """

    model_config = ConfigDict(extra="allow")
    model: str
    stream: bool = Field(default=False, strict=True)
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, strict=True)
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    top_p: float | None = Field(default=None, gt=0, le=1, strict=True)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, lt=MAX_SEED, strict=True)
    n: int = Field(default=1, ge=1, strict=True)
    best_of: int | None = Field(default=None, ge=1, strict=True)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, strict=True)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, strict=True)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    strategy: str | dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    budget: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, value: str | list[str] | None) -> str | list[str] | None:
        strings = [value] if isinstance(value, str) else value or []
        if len(strings) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings, got {len(strings)}")
        if any(not s for s in strings):
            raise ValueError("a stop string must not be empty")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _biases(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not -100 <= bias <= 100:
                raise ValueError(f"the bias of token {token} must be in [-100, 100], got {bias}")
        return value

    def stops(self) -> tuple[str, ...]:
        """The stop strings, as a tuple."""
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def given(self) -> set[str]:
        """The fields the request gave a value (not null), extra ones included."""
        named = {name for name in self.model_fields_set if getattr(self, name, None) is not None}
        return named | {name for name, value in (self.model_extra or {}).items() if value is not None}


class _ChatBody(_Body):
    messages: list[_ChatMessage] = Field(min_length=1)


class _CompletionBody(_Body):
    prompt: str | list[str]


_UNSUPPORTED = (
    "tools", "functions", "tool_choice", "function_call", "logprobs", "top_logprobs", "echo", "suffix",
)  # fmt: skip

_APPLIED = frozenset(
    {"model", "messages", "prompt", "stream", "seed", "n", "best_of", "strategy", "params", "budget"}
)
"""Request fields always applied when given (the sampling ones are decided per request)."""


def stop_runs(app: FastAPI) -> int:
    """End every run of `app` in flight, and refuse new ones: the server is stopping.

    Each request in flight (or waiting for a slot) is answered at once with a 503 error,
    ``server_stopping`` (streamed: an SSE error event, then ``[DONE]``); its engine requests are
    aborted. Returns how many runs it ended. ``reasoning proxy`` calls it when a stop signal's
    grace period is over, so that no request is cut off without an answer.
    """
    server: _Server = app.state.server
    return server.stop()


def create_app(backend: Backend | Mapping[str, Backend], settings: ProxySettings) -> FastAPI:
    """The proxy's ASGI app over `backend` (serve it with uvicorn; tests drive it in-process).

    `backend` is one model, served as ``settings.model``, or a model group: two or more named
    backends (``{"draft": ..., "target": ...}``, the first the default), served as the group
    ``settings.model`` and each also alone under its own model's name. A strategy that needs
    named backends (`backends_needed`: spec-reason, spec-thinking, atts, arbitrage, a
    ``judge_backend``, ...) runs on the group, whether the request names the group or one of its
    models (``spec-reason@<target's model>``); any other strategy runs on the backend named
    (the group's default backend for the group's name).

    Raises:
        ConfigError: The default strategy does not build, is over the caps, or needs named
            backends the proxy does not serve; a group of fewer than two backends, or one of
            whose models has the group's name.
    """
    import reasoning.strategies  # noqa: F401  (registers the built-in strategies)

    default = build(settings.strategy)  # a bad default fails at start, not at the first request
    try:
        settings.limits.check(default)
    except ProxyError as exc:  # every request naming no strategy would be refused
        raise ConfigError(f"the default strategy is over this server's caps: {exc}") from None
    server = _Server(backend, settings)
    needed = backends_needed(default)
    missing = [name for name in needed if name not in (server.group or {})]
    if missing:
        serves = (
            f"the model group {settings.model!r} has {', '.join(server.group)}"
            if server.group
            else "this proxy serves one model, no model group"
        )
        raise ConfigError(
            f"the default strategy {settings.strategy} needs backends named {', '.join(needed)}; {serves}"
        )
    app = FastAPI(title="reasoning proxy", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(ProxyError)
    async def refused(request: Request, exc: ProxyError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_error(exc.errors()).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        error = ProxyError(
            f"{request.method} {request.url.path}: {exc.detail}", status=exc.status_code, kind=kind
        )
        return JSONResponse(error.body(), status_code=exc.status_code)

    if settings.api_key is not None:
        app.add_middleware(_Authenticate, key=settings.api_key)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": server.models()}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        found = next((m for m in server.models() if m["id"] == model_id), None)
        if found is None:
            raise server._unknown_model(model_id)
        return found

    @app.get("/v1/reasoning/records/{record_id}")
    async def record(record_id: str) -> dict[str, Any]:
        run = server.kept.get(record_id)
        if run is None:
            raise ProxyError(f"no record {record_id!r} in memory", status=404, kind="not_found_error")
        return run.model_dump(mode="json")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        return await server.answer(request, _ChatBody, chat=True)

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Response:
        return await server.answer(request, _CompletionBody, chat=False)

    @app.get("/metrics", response_model=None)
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    return app


def _group_only(name: str) -> bool:
    """The registered strategy `name` always calls named backends (it cannot run on one model)."""
    from reasoning.strategies import ATTS, Arbitrage
    from reasoning.strategies.speculative_steps import Speculative

    return issubclass(STRATEGIES.get(name), Speculative | ATTS | Arbitrage)


def _model_name(backend: Backend) -> str:
    """The model `backend` serves (its name when it says none), as `Controller.models` reads it."""
    return str(getattr(backend, "model", "") or backend.name)


class _Authenticate:
    """Asks every request for ``Authorization: Bearer <key>`` (compared in constant time).

    A plain ASGI middleware: it hands the app the server's own ``receive``, so the app hears a
    client's disconnect (an ``http.disconnect`` message) the moment the server does. (Starlette's
    ``BaseHTTPMiddleware`` wraps ``receive`` and hid it: runs went on after their client left.)
    """

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scheme, _, token = Headers(scope=scope).get("authorization", "").strip().partition(" ")
            if scheme.lower() != "bearer":  # the scheme is case-insensitive (RFC 9110)
                token = ""
            token = token.strip()
            if not secrets.compare_digest(token.encode(), self.key):
                error = ProxyError(
                    "missing or wrong API key (send Authorization: Bearer <key>)",
                    status=401,
                    kind="authentication_error",
                    code="invalid_api_key",
                )
                await JSONResponse(error.body(), status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _parse(request: Request, model: type[_Body]) -> Any:
    try:
        raw = await request.json()
    except ValueError:
        raise ProxyError("the request body is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ProxyError("the request body must be a JSON object")
    for name in _UNSUPPORTED:
        if raw.get(name) not in (None, False, [], 0):
            raise ProxyError(f"{name!r} is not supported by the reasoning proxy", param=name)
    fmt = raw.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise ProxyError("response_format other than text is not supported", param="response_format")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _validation_error(exc.errors()) from None


def _validation_error(errors: Any) -> ProxyError:
    first = errors[0] if errors else {}
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
    return ProxyError(f"invalid request: {where or 'body'}: {first.get('msg', 'invalid')}", param=where)


@dataclass(frozen=True)
class _Target:
    """Where a request's run goes: one backend, or a model group's named backends."""

    backend: Backend | Mapping[str, Backend]
    model: str
    """The model its record and its token counts carry ("" for a group: each backend's own)."""


def _named(spec: object) -> str:
    """The registered name of the strategy `spec` names (`UNKNOWN` when it names none)."""
    if isinstance(spec, Mapping):
        spec = spec.get("strategy")
    if not isinstance(spec, str):
        return UNKNOWN
    try:
        return STRATEGIES.resolve(parse(spec)[0])
    except (ConfigError, ValueError):
        return UNKNOWN


@dataclass
class _Outcome:
    """One completion request's metrics: its strategy, its first reply byte, how it ended."""

    metrics: ProxyMetrics
    strategy: str = UNKNOWN
    """The strategy's registered name, once known."""
    started: float = field(default_factory=time.monotonic)
    replied: bool = False
    """The first byte of the reply's text has left."""
    ended: bool = False

    def text(self) -> None:
        """The reply's text starts to leave now (the first call counts)."""
        if not self.replied:
            self.replied = True
            self.metrics.first_byte.labels(self.strategy).observe(time.monotonic() - self.started)

    def cancelled(self, reason: Literal["client_disconnect", "server_stopping"]) -> None:
        """The run was cancelled before it answered (counted once, with the request's end)."""
        if not self.ended:
            self.metrics.cancels.labels(self.strategy, reason).inc()

    def end(self, status: int) -> None:
        """The request ended with `status` (the first call counts)."""
        if self.ended:
            return
        self.ended = True
        self.metrics.requests.labels(self.strategy, str(status)).inc()
        self.metrics.latency.labels(self.strategy).observe(time.monotonic() - self.started)


class _Streamed(StreamingResponse):
    """A streamed reply whose request counts as cancelled by its client (499) unless it ended otherwise."""

    def __init__(self, content: AsyncIterator[str], outcome: _Outcome) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.outcome = outcome

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            if not isinstance(exc, ClientDisconnect | OSError):  # a failure, not a client leaving
                self.outcome.end(500)
            raise
        finally:  # the stream was cut before it said how it ended: the client went away
            self.outcome.cancelled("client_disconnect")
            self.outcome.end(499)


@dataclass
class _Plan:
    """What one request asks for, resolved and checked."""

    target: _Target
    """The backend(s) it runs on."""
    strategy: Strategy
    budget: Budget
    seed: int
    messages: tuple[Message, ...]
    question: str
    ignored: list[str]
    max_tokens: int | None = None
    """The request's ``max_tokens``: a cap on every model call of the run."""
    stop: tuple[str, ...] = ()
    """The request's stop strings: they end every model call and cut the reply."""


class _Server:
    def __init__(self, backend: Backend | Mapping[str, Backend], settings: ProxySettings) -> None:
        self.group: dict[str, Backend] | None = None
        """A model group's backends by name (None: one model)."""
        self.members: dict[str, str] = {}
        """A group's models, each to its (first) backend's name."""
        if isinstance(backend, Mapping):
            self.group = dict(backend)
            if len(self.group) < 2:
                raise ConfigError(
                    f"a model group needs at least two named backends, got {', '.join(self.group) or 'none'}"
                )
            for name, each in self.group.items():
                model = _model_name(each)
                if model == settings.model:
                    raise ConfigError(
                        f"the model group is named {model!r}, as its backend {name!r}'s model is; give the "
                        "group another name"
                    )
                self.members.setdefault(model, name)
            self.backend: Backend = next(iter(self.group.values()))
        else:
            self.backend = backend
        self.settings = settings
        if settings.deterministic:  # the solve path's own check, before any request
            Controller(self.group or self.backend, deterministic=True)
        self.slots = asyncio.Semaphore(1 if settings.deterministic else settings.limits.max_concurrent)
        self.waiting = 0
        self.active = 0
        """Runs holding a slot."""
        self.metrics = ProxyMetrics(queue_depth=lambda: self.waiting, in_flight=lambda: self.active)
        self.kept: dict[str, Run] = {}
        self.write_lock = asyncio.Lock()
        self.running: dict[_Watch, asyncio.Task[Any]] = {}
        """The runs in flight (or waiting for a slot), by their watch."""
        self.stopping = False
        if settings.records is not None:
            settings.records.parent.mkdir(parents=True, exist_ok=True)

    def stop(self) -> int:
        """`stop_runs`."""
        self.stopping = True
        running = list(self.running.items())
        for watch, task in running:
            watch.abandon(task)
        return len(running)

    def _track(self, watch: _Watch, task: asyncio.Task[Any]) -> None:
        """Count `task` in flight until it ends (`stop`)."""
        self.running[watch] = task
        task.add_done_callback(lambda _: self.running.pop(watch, None))
        if self.stopping:
            watch.abandon(task)

    def _stopping(self) -> ProxyError:
        return ProxyError(
            "the proxy is stopping: this request was not answered; retry against a running server",
            status=503,
            kind="server_error",
            code="server_stopping",
        )

    def models(self) -> list[dict[str, Any]]:
        created = int(time.time())
        strategies = STRATEGIES.names()
        served = self.settings.model
        if self.group is None:  # the strategies that need a model group are not offered
            names = [served, *(f"{name}@{served}" for name in strategies if not _group_only(name))]
        else:  # the group's strategies at one of its models run on the group
            names = [served, *self.members]
            names += [f"{name}@{model}" for model in (served, *self.members) for name in strategies]
        return [
            {"id": name, "object": "model", "created": created, "owned_by": "reasoning"} for name in names
        ]

    def _group_line(self) -> str:
        """The group, e.g. ``'pair' (draft: small, target: big)``."""
        backends = ", ".join(f"{name}: {_model_name(b)}" for name, b in (self.group or {}).items())
        return f"{self.settings.model!r} ({backends})"

    def _target(self, served: str, strategy: Strategy) -> _Target:
        """Where a run of `strategy` asked for as the model `served` goes (`create_app`).

        Raises:
            ProxyError: 404 for a model not served; 400 for a strategy that needs named backends
                where there is no group (``model_group_required``), at a name that is no group
                here (``model_group_not_found``), or whose backends the group lacks
                (``backend_not_found``).
        """
        needed = backends_needed(strategy)
        name = STRATEGIES.name_of(strategy)
        wants = f"{name} needs a model group with backends named {', '.join(needed)}"
        hint = " ".join(f"--model {each}=MODEL" for each in needed)
        if self.group is None:
            model = self.settings.model
            if served != model and needed:
                raise ProxyError(
                    f"unknown model group {served!r}: {wants}, and this proxy serves the single model "
                    f"{model!r} (serve a group: reasoning proxy {hint})",
                    param="model",
                    code="model_group_not_found",
                )
            if served != model:
                raise self._unknown_model(served)
            if needed:
                raise ProxyError(
                    f"{wants}; this proxy serves the single model {model!r}, no model group (serve "
                    f"one: reasoning proxy {hint})",
                    param="model",
                    code="model_group_required",
                )
            return _Target(self.backend, model)
        member = self.members.get(served)
        if served != self.settings.model and member is None:
            if needed:
                raise ProxyError(
                    f"unknown model group {served!r}: {wants}; this proxy serves the group "
                    f"{self._group_line()} (ask for '{name}@{self.settings.model}')",
                    param="model",
                    code="model_group_not_found",
                )
            raise self._unknown_model(served)
        if member is not None and not needed:
            return _Target(self.group[member], served)
        missing = [each for each in needed if each not in self.group]
        if missing:
            raise ProxyError(
                f"{wants}; the model group {self._group_line()} has no {', '.join(missing)}",
                param="strategy",
                code="backend_not_found",
            )
        return _Target(self.group, "")

    # -- resolving a request --------------------------------------------------------------------

    def plan(self, request: Request, body: _Body, chat: bool, outcome: _Outcome) -> _Plan:
        spec, params, budget, served = self._strategy_fields(request, body)
        if body.n != 1:
            raise ProxyError(
                "n > 1 is not supported: ask for a strategy that samples more (e.g. self-consistency(n=4))",
                param="n",
            )
        if (body.best_of or 1) != 1:
            raise ProxyError(
                "best_of > 1 is not supported: ask for a strategy that samples more (e.g. best-of-n(n=4))",
                param="best_of",
            )
        try:
            strategy = build(spec, dict(params))
        except ConfigError as exc:
            outcome.strategy = _named(spec)  # a known strategy with a bad or missing parameter
            if isinstance(exc, ArtefactRequired):
                raise ProxyError(exc.through_api(), param="params", code="artefact_required") from None
            raise ProxyError(str(exc), param="strategy") from None
        outcome.strategy = STRATEGIES.name_of(strategy)
        given = body.given()
        applied = set(_APPLIED & given)
        if body.stream:
            applied.add("stream_options")
        fmt = getattr(body, "response_format", None)
        if isinstance(fmt, dict) and fmt.get("type") in (None, "text"):
            applied.add("response_format")  # text is what the proxy answers
        max_tokens = body.max_completion_tokens or body.max_tokens
        limit = self.settings.limits.max_tokens
        if max_tokens is not None and max_tokens > limit:
            raise ProxyError(
                f"max_tokens={max_tokens} is over this server's cap of {limit} tokens per sample",
                param="max_tokens",
                code="over_limit",
            )
        # The OpenAI sampling fields set the strategy's parameter of that name, and that of every
        # strategy it composes. `temperature` and `top_p` leave a value the spec or the params
        # give explicitly (those win); `max_tokens` is a cap on every call, unless the request's
        # params name it (then they win and it is not applied at all).
        sampling = {"max_tokens": max_tokens, "temperature": body.temperature, "top_p": body.top_p}
        values = {
            k: v for k, v in sampling.items() if v is not None and (k != "max_tokens" or k not in params)
        }
        took: set[str] = set()
        try:
            strategy = _with_values(strategy, values, took, {**_explicit(spec), **params})
        except (ConfigError, TypeError, ValueError) as exc:
            raise ProxyError(str(exc), param="strategy") from None
        applied |= took & {"temperature", "top_p"}
        if "max_tokens" in values:  # the cap on every call: it is applied whatever the strategy
            applied.add("max_completion_tokens" if body.max_completion_tokens else "max_tokens")
        else:
            max_tokens = None
        if body.stop is not None:
            applied.add("stop")
        target = self._target(served, strategy)  # a strategy it cannot serve at all, before its caps
        self.settings.limits.check(strategy)
        messages = self._messages(body, chat)
        seed = body.seed if body.seed is not None else self._default_seed()
        return _Plan(
            target=target,
            strategy=strategy,
            budget=self.settings.limits.budget(budget),
            seed=seed,
            messages=messages,
            question=next((m.content for m in reversed(messages) if m.role == "user"), messages[-1].content),
            ignored=sorted(given - applied),
            max_tokens=max_tokens,
            stop=body.stops(),
        )

    def _default_seed(self) -> int:
        """The run seed of a request that gives none: fixed when deterministic, else random."""
        return DETERMINISTIC_SEED if self.settings.deterministic else secrets.randbits(31)

    def _strategy_fields(
        self, request: Request, body: _Body
    ) -> tuple[str | dict[str, Any], dict[str, Any], dict[str, Any] | None, str]:
        """The request's strategy spec, params and budget, and the model (or group) it names."""
        spec: str | dict[str, Any] = self.settings.strategy
        served = body.model
        if "@" in served:
            named, _, served = served.rpartition("@")
            if not named:
                raise self._unknown_model(body.model)
            spec = named
        params: dict[str, Any] = {}
        budget: dict[str, Any] | None = None
        headers = request.headers
        if "x-reasoning-strategy" in headers:
            spec = headers["x-reasoning-strategy"]
        if "x-reasoning-params" in headers:
            params = _json_header(headers["x-reasoning-params"], "X-Reasoning-Params")
        if "x-reasoning-budget" in headers:
            budget = _json_header(headers["x-reasoning-budget"], "X-Reasoning-Budget")
        if body.strategy is not None:
            spec = body.strategy
            params = {}
        if body.params is not None:
            params = body.params
        if body.budget is not None:
            budget = body.budget
        return spec, params, budget, served

    def _unknown_model(self, model: str) -> ProxyError:
        served = self.settings.model
        models = f"the model group {served!r}, one of its models ({', '.join(map(repr, self.members))})"
        return ProxyError(
            f"the model {model!r} does not exist here; ask for {models if self.group else repr(served)} or "
            f"'<strategy>@{served}' (GET /v1/models lists them)",
            status=404,
            param="model",
            code="model_not_found",
        )

    def _messages(self, body: _Body, chat: bool) -> tuple[Message, ...]:
        if isinstance(body, _ChatBody):
            messages = [Message(_role(m.role), _content(m)) for m in body.messages]
        else:
            prompt = body.prompt if isinstance(body, _CompletionBody) else ""
            if isinstance(prompt, list):
                if len(prompt) != 1:
                    raise ProxyError("prompt must be one string (a list of one)", param="prompt")
                prompt = prompt[0]
            messages = [Message("user", prompt)]
        if not any(m.role == "user" for m in messages):
            raise ProxyError("the messages hold no user message", param="messages")
        if self.settings.instruction:
            last = max(i for i, m in enumerate(messages) if m.role == "user")
            messages[last] = Message("user", f"{messages[last].content}\n{self.settings.instruction}")
        return tuple(messages)

    # -- answering ------------------------------------------------------------------------------

    async def answer(self, request: Request, kind: type[_Body], chat: bool) -> Response:
        """The response to a completion request; its end is counted in the metrics."""
        outcome = _Outcome(self.metrics)
        try:
            response = await self._answer(request, kind, chat, outcome)
        except ProxyError as exc:
            outcome.end(exc.status)
            raise
        except Exception:
            outcome.end(500)
            raise
        if not isinstance(response, StreamingResponse):  # sent whole (a streamed one counts itself)
            if response.status_code == 200:
                outcome.text()
            outcome.end(response.status_code)
        return response

    async def _answer(self, request: Request, kind: type[_Body], chat: bool, outcome: _Outcome) -> Response:
        body = await _parse(request, kind)
        if self.stopping:
            raise self._stopping()
        plan = self.plan(request, body, chat, outcome)
        record_id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        if self.waiting >= self.settings.limits.max_queue and self.slots.locked():
            raise ProxyError(
                f"the server is busy ({self.settings.limits.max_concurrent} requests running, "
                f"{self.waiting} waiting); retry later",
                status=429,
                kind="rate_limit_exceeded",
                code="rate_limit_exceeded",
            )
        reply = _Reply(record_id, body.model, chat, int(time.time()))
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return _Streamed(self._stream(request, plan, reply, include_usage, outcome), outcome)
        watch = _Watch(plan.strategy, live=False)
        run = await _unless_disconnected(request, self._queued(plan, record_id, watch), watch, self._track)
        if run is None and self.stopping:
            outcome.cancelled("server_stopping")
            raise self._stopping()
        if run is None:  # nobody reads this reply; the run was cancelled, its requests aborted
            logger.info("%s: the client went away; its run is cancelled", record_id)
            outcome.cancelled("client_disconnect")
            gone = ProxyError("the client closed the request", status=499, code="client_closed_request")
            return JSONResponse(gone.body(), status_code=499)
        if isinstance(run, ProxyError):
            raise run
        return JSONResponse(reply.whole(run, plan))

    async def _queued(self, plan: _Plan, record_id: str, watch: _Watch) -> Run | ProxyError:
        """`_attempt` once a slot is free."""
        async with self._slot():
            return await self._attempt(plan, record_id, watch)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            self.slots.release()

    async def _attempt(self, plan: _Plan, record_id: str, watch: _Watch) -> Run | ProxyError:
        """`_solve`, its failure as the refusal the client gets (so sibling tasks go on)."""
        try:
            return await self._solve(plan, record_id, watch)
        except Exception as exc:
            return _refusal(exc)

    async def _solve(self, plan: _Plan, record_id: str, watch: _Watch) -> Run:
        # Seeds derive from the run seed and the problem id: the messages' digest, so the same
        # request with the same seed replays; the record carries the request's own id.
        digest = hashlib.sha256(
            json.dumps([dataclasses.asdict(m) for m in plan.messages]).encode()
        ).hexdigest()
        problem = Problem(id=f"messages-{digest[:16]}", question=plan.question)
        target = plan.target.backend

        def tap(backend: Backend) -> _Tap:
            return _Tap(backend, watch, max_tokens=plan.max_tokens, stop=plan.stop)

        controller = Controller(
            {name: tap(b) for name, b in target.items()} if isinstance(target, Mapping) else tap(target),
            budget=plan.budget,
            seed=plan.seed,
            prompt=lambda _problem: plan.messages,
            model=plan.target.model,
            deterministic=self.settings.deterministic,
        )
        run = await controller.run(problem, plan.strategy)
        self.metrics.run(STRATEGIES.name_of(plan.strategy), run, run.backends, run.model)
        run = run.model_copy(
            update={
                "problem_id": record_id,
                "spec": {
                    "proxy": {
                        "messages": [dataclasses.asdict(m) for m in plan.messages],
                        "seed_problem_id": problem.id,
                        "strategy": spec_of(plan.strategy),
                        "max_tokens": plan.max_tokens,
                        "stop": list(plan.stop),
                        "ignored": plan.ignored,
                    }
                },
            }
        )
        await self._keep(run)
        return run

    async def _keep(self, run: Run) -> None:
        self.kept[run.problem_id] = run
        while len(self.kept) > self.settings.keep:
            self.kept.pop(next(iter(self.kept)))
        if self.settings.records is None:
            return
        line = run.model_dump_json() + "\n"
        async with self.write_lock:
            try:
                with self.settings.records.open("a", encoding="utf-8") as sink:
                    sink.write(line)
            except OSError as exc:  # the client still gets its answer; the record stays in memory
                logger.error(
                    "%s: could not append the record to %s: %s", run.problem_id, self.settings.records, exc
                )

    async def _stream(
        self, request: Request, plan: _Plan, reply: _Reply, include_usage: bool, outcome: _Outcome
    ) -> AsyncGenerator[str, None]:
        watch = _Watch(plan.strategy)
        yield reply.event(delta={"role": "assistant", "content": ""} if reply.chat else {})
        sent = ""
        async with task_group() as group:
            # The run never raises (`_attempt`): a client going away cancels it, nothing else.
            # Starlette cancels this generator when it hears the disconnect (or leaves it
            # suspended at a `yield`): the watcher here cancels the run either way.
            task = group.create_task(self._queued(plan, reply.id, watch))
            task.add_done_callback(lambda _: watch.close())
            self._track(watch, task)
            gone = group.create_task(_disconnected(request))

            def left(done: asyncio.Task[None]) -> None:
                if not done.cancelled():
                    watch.abandon(task)

            gone.add_done_callback(left)
            try:
                while (event := await watch.next()) is not None:
                    kind, value = event
                    if kind == "text":
                        sent += str(value)
                        outcome.text()
                        yield reply.event(text=str(value))
                    else:
                        yield f": reasoning {json.dumps(value)}\n\n"
            except BaseException:  # cancelled or closed: the client went away, or the server stops
                watch.abandon(task)
                raise
            gone.cancel()
        if task.cancelled() and self.stopping:
            outcome.cancelled("server_stopping")
            outcome.end(503)
            yield f"data: {json.dumps(self._stopping().body())}\n\n"
            yield "data: [DONE]\n\n"
            return
        if task.cancelled():
            logger.info("%s: the client went away; its run is cancelled", reply.id)
            outcome.cancelled("client_disconnect")
            outcome.end(499)
            return
        run = task.result()
        if isinstance(run, ProxyError):
            outcome.end(run.status)
            yield f"data: {json.dumps(run.body())}\n\n"
            yield "data: [DONE]\n\n"
            return
        content = _content_of(run, plan.stop)
        if content is None:  # as sent whole: a 422; live text already sent stays, cut, no finish
            refusal = _no_reply(run, reply.reasoning(run, plan), plan)
            outcome.end(refusal.status)
            yield f"data: {json.dumps(refusal.body())}\n\n"
            yield "data: [DONE]\n\n"
            return
        text, finish = content
        if text.startswith(sent):
            if text[len(sent) :]:
                outcome.text()
                yield reply.event(text=text[len(sent) :])
        else:  # cannot happen for the live strategies; said rather than hidden
            logger.warning("%s: the streamed text is not a prefix of the chosen candidate", reply.id)
        yield reply.event(finish=finish, reasoning=reply.reasoning(run, plan))
        if include_usage:
            yield reply.event(usage=_usage(run), empty=True)
        outcome.end(200)
        yield "data: [DONE]\n\n"


async def _disconnected(request: Request) -> None:
    """Return when the client has gone away (the server's ``http.disconnect``).

    The body has been read, so the server's next message is the disconnect: awaiting it hears
    a closed connection at once (polling ``Request.is_disconnected`` missed it).
    """
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(
    request: Request,
    work: Coroutine[Any, Any, T],
    watch: _Watch,
    track: Callable[[_Watch, asyncio.Task[Any]], None],
) -> T | None:
    """`work`'s result, or None when the client went away first (or `stop_runs` ended it).

    `work` is then cancelled and has ended. `track` is told of its task.
    """
    async with task_group() as group:
        job = group.create_task(work)
        track(watch, job)
        gone = group.create_task(_disconnected(request))
        try:
            await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the server stops
            watch.abandon(job)
            raise
        if not job.done():
            watch.abandon(job)
        gone.cancel()
    return None if job.cancelled() else job.result()


_SPEC_WINS = frozenset({"temperature", "top_p"})
"""Sampling fields that leave a strategy's value given explicitly in its spec or params."""


def _explicit(spec: Any) -> dict[str, Any]:
    """The parameters a spec gives explicitly (a nested spec's as its raw value: see `_with_values`)."""
    if isinstance(spec, str):
        try:
            return parse(spec)[1]
        except ConfigError:
            return {}
    if isinstance(spec, Mapping):
        params = spec.get("params")
        return {**_explicit(spec.get("strategy")), **(params if isinstance(params, Mapping) else {})}
    return {}


def _with_values(
    strategy: Strategy, values: Mapping[str, Any], applied: set[str], explicit: Mapping[str, Any]
) -> Strategy:
    """`strategy`, and every strategy it composes, with each parameter named in `values` set.

    A `_SPEC_WINS` parameter named in `explicit` (the parameters the spec gave this strategy,
    `_explicit`) keeps its value, and an explicit ``max_tokens`` is only ever lowered. The names
    it set are added to `applied`.
    """
    if not values or not dataclasses.is_dataclass(strategy) or isinstance(strategy, type):
        return strategy
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(strategy):
        if not f.init:
            continue
        value = getattr(strategy, f.name)
        if f.name in values:
            if f.name in _SPEC_WINS and f.name in explicit:
                continue
            new = values[f.name]
            if f.name == "max_tokens" and f.name in explicit and isinstance(value, int):
                new = min(value, new)  # the request's max_tokens caps: it never raises the spec's
            changes[f.name] = new
            applied.add(f.name)
        elif dataclasses.is_dataclass(value) and STRATEGIES.holds(type(value)):
            changes[f.name] = _with_values(value, values, applied, _explicit(explicit.get(f.name)))
    if not changes:
        return strategy
    replaced: Strategy = dataclasses.replace(strategy, **changes)
    return replaced


def _refusal(exc: Exception) -> ProxyError:
    """What the client gets for a failed run: an error, never an error scored as an answer."""
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, BackendUnavailable):
        return ProxyError(str(exc), status=503, kind="server_error", code="backend_unavailable")
    if isinstance(exc, BackendError):
        status = 503 if exc.retryable else 502
        return ProxyError(str(exc), status=status, kind="server_error", code="backend_error")
    if isinstance(exc, ConfigError):
        return ProxyError(str(exc))
    if isinstance(exc, CapabilityError):  # the request asks for what this server does not offer
        hint = ""
        if "hidden_states=False" in exc.capability:  # the in-process engine, started without them
            hint = "; start the proxy with --hidden-states to serve strategies that read them"
        return ProxyError(f"{exc}{hint}", param="strategy", code="capability_unavailable")
    if isinstance(exc, ReasoningError):
        return ProxyError(str(exc), status=500, kind="server_error")
    logger.error("the strategy failed", exc_info=exc)
    return ProxyError("internal error (logged by the server)", status=500, kind="server_error")


def _json_header(value: str, name: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except ValueError:
        raise ProxyError(f"header {name} is not valid JSON", param=name) from None
    if not isinstance(parsed, dict):
        raise ProxyError(f"header {name} must be a JSON object", param=name)
    return parsed


def _role(role: str) -> Literal["system", "user", "assistant"]:
    return "system" if role == "developer" else role  # type: ignore[return-value]


def _content(message: _ChatMessage) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    parts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise ProxyError(
                f"message content of type {part.type!r} is not supported (text only)", param="messages"
            )
        parts.append(part.text)
    return "".join(parts)


def _content_of(run: Run, stop: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """The reply's text (the chosen candidate's, cut at a stop string) and its finish reason.

    None when there is no reply: no candidate was chosen, or its text is empty.
    """
    if run.chosen is None or not 0 <= run.chosen < len(run.candidates):
        return None
    chosen = run.candidates[run.chosen]
    text, finish = chosen.text, "length" if chosen.finish_reason in ("length", "cancelled") else "stop"
    cut = min((at for at in (text.find(s) for s in stop) if at >= 0), default=-1)
    if cut >= 0:
        text, finish = text[:cut], "stop"
    return (text, finish) if text else None


def _no_reply(run: Run, reasoning: dict[str, Any], plan: _Plan) -> ProxyError:
    """The error a run that ended without a reply gets: what is missing and why, never a 200."""
    if run.chosen is None or not 0 <= run.chosen < len(run.candidates):
        count = len(run.candidates)
        what = (
            f"the strategy chose none of its {count} candidate{'s' * (count != 1)} (none had an "
            "answer it could pick)"
            if count
            else "no sample finished"
        )
    else:
        what = "the chosen candidate's text is empty"
    stop = run.stop_reason
    if stop.startswith("budget:"):
        line = stop.removeprefix("budget:")
        limit = getattr(plan.budget, line, None) if line.isidentifier() else None
        spent = run.usage.get(line)
        amount = ""
        if limit is not None:
            amount = f" ({line} budget {limit}, {spent:g} spent)" if isinstance(spent, int | float) else ""
        why = f"the request's budget stopped it{amount}: raise budget.{line} or ask for a cheaper strategy"
        code = "budget_exhausted"
    else:
        why = f"stop reason {stop!r}"
        code = "no_answer"
    return ProxyError(
        f"the run ended without a reply: {what}; {why} (record {run.problem_id})",
        status=422,
        kind="no_reply_error",
        code=code,
        extra={"reasoning": reasoning, "usage": _usage(run)},
    )


def _usage(run: Run) -> dict[str, Any]:
    prompt = int(run.usage.get("prompt_tokens", 0))
    completion = int(run.usage.get("output_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(run.usage.get("cached_tokens", 0))},
    }


def _usage_by_backend(run: Run) -> dict[str, dict[str, Any]]:
    """What each named backend of a model group's run spent, with its model (empty: one backend)."""
    spent: dict[str, dict[str, Any]] = {}
    for name, usage in run.usage_by_backend.items():
        prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("output_tokens", 0))
        spent[name] = {
            "model": run.backends.get(name, name),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cached_tokens": int(usage.get("cached_tokens", 0)),
            "calls": int(usage.get("calls", 0)),
        }
    return spent


@dataclass
class _Reply:
    """Builds the OpenAI response objects of one request."""

    id: str
    model: str
    chat: bool
    created: int

    def reasoning(self, run: Run, plan: _Plan) -> dict[str, Any]:
        return {
            "strategy": spec_of(plan.strategy),
            "candidates": len(run.candidates),
            "chosen": run.chosen,
            "answer": run.answer,
            "stop_reason": run.stop_reason,
            "record_id": run.problem_id,
            "calls": int(run.usage.get("calls", 0)),
            "sequential_tokens": int(run.usage.get("sequential_tokens", 0)),
            "seconds": round(float(run.usage.get("seconds", 0.0)), 3),
            "usage_by_backend": _usage_by_backend(run),
            "seed": plan.seed,
            "deterministic": run.deterministic,
            "budget": {k: v for k, v in dataclasses.asdict(plan.budget).items() if v is not None},
            "ignored": plan.ignored,
        }

    def whole(self, run: Run, plan: _Plan) -> dict[str, Any]:
        """The response of a reply sent whole.

        Raises:
            ProxyError: The run ended without a reply (`_no_reply`).
        """
        content = _content_of(run, plan.stop)
        if content is None:
            raise _no_reply(run, self.reasoning(run, plan), plan)
        text, finish = content
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": _usage(run),
            "reasoning": self.reasoning(run, plan),
        }

    def event(
        self,
        *,
        delta: dict[str, Any] | None = None,
        text: str | None = None,
        finish: str | None = None,
        reasoning: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
        empty: bool = False,
    ) -> str:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if self.chat:
            choice["delta"] = delta if delta is not None else ({"content": text} if text is not None else {})
        else:
            choice["text"] = text or ""
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [] if empty else [choice],
        }
        if usage is not None:
            chunk["usage"] = usage
        if reasoning is not None:
            chunk["reasoning"] = reasoning
        return f"data: {json.dumps(chunk)}\n\n"


class _Watch:
    """What a streamed reply learns while the strategy works: live text, progress, the end.

    `_Tap` reports every call and chunk. For ``single`` the first call's tokens are the reply;
    for ``first-finish`` (k=1) the first sample to finish is; otherwise progress is reported.
    """

    def __init__(self, strategy: Strategy, *, live: bool = True) -> None:
        name = STRATEGIES.name_of(strategy)
        race = name == "first-finish" and getattr(strategy, "k", 1) == 1
        race = race and not getattr(strategy, "skip_unanswered", False)
        self.mode = "trace" if name == "single" else "race" if race else "progress"
        self.live = live
        self.queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()
        self.calls = self.samples = self.tokens = self.finished = 0
        self.texts: dict[tuple[int, int], str] = {}
        self.decided = False
        self.last = 0.0
        self.abandoned = False
        """The client went away: every call of the run ends at its next chunk (`_Tap`)."""

    def abandon(self, task: asyncio.Task[Any]) -> None:
        """Cancel the run `task` for good: its calls end at their next chunk, none starts.

        A cancellation alone can be lost: on Python 3.11 ``asyncio.wait_for`` (which the budget's
        seconds line uses around each chunk) swallows one that arrives as its chunk does, and the
        run then went on to the end. A lost one now costs at most a chunk.
        """
        self.abandoned = True
        task.cancel()

    def started(self, request: BackendRequest) -> int:
        self.calls += 1
        self.samples += request.sampling.n
        return self.calls

    def chunk(self, call: int, chunk: Chunk) -> None:
        self.tokens += chunk.tokens
        if not self.live:  # a reply sent whole: nobody reads the events
            return
        if self.mode == "trace" and call == 1 and chunk.index == 0 and chunk.text:
            self.queue.put_nowait(("text", chunk.text))
        if self.mode == "race" and call == 1:
            key = (call, chunk.index)
            self.texts[key] = self.texts.get(key, "") + chunk.text
        finished = chunk.finish_reason is not None and chunk.finish_reason != "cancelled"
        if finished:
            self.finished += 1
            if self.mode == "race" and call == 1 and not self.decided:
                self.decided = True
                self.queue.put_nowait(("text", self.texts.pop((call, chunk.index), "")))
        now = time.monotonic()
        if self.mode != "trace" and not self.decided and (finished or now - self.last >= PROGRESS_EVERY):
            self.last = now
            self.queue.put_nowait(("progress", self.progress()))

    def progress(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "samples": self.samples,
            "tokens": self.tokens,
            "finished": self.finished,
        }

    def close(self) -> None:
        self.queue.put_nowait(None)

    async def next(self) -> tuple[str, Any] | None:
        return await self.queue.get()


class _Tap:
    """A backend that reports every call and chunk of another to a `_Watch`.

    It changes a request only to apply the client's ``max_tokens`` (a cap on every call) and
    ``stop`` strings, and to stream every token where the client reads the text live. In a
    deterministic run it admits a request's samples at once where the
    backend it wraps can (`AdmitsAtOnce`), and empties that backend's prefix cache.
    """

    def __init__(
        self, inner: Backend, watch: _Watch, *, max_tokens: int | None = None, stop: tuple[str, ...] = ()
    ) -> None:
        self._inner = inner
        self._watch = watch
        self._max_tokens = max_tokens
        self._stop = stop

    @property
    def name(self) -> str:
        return self._inner.name

    def __getattr__(self, name: str) -> Any:  # model, engine_info, prompt_tokens, hidden_states, ...
        if name == "stream_at_once":  # `AdmitsAtOnce` where the wrapped backend is; watched and shaped
            inner = self._inner
            if not isinstance(inner, AdmitsAtOnce):
                raise AttributeError(name)  # a deterministic run then sends the samples one by one
            return lambda request: self._watched(request, inner.stream_at_once)
        return getattr(self._inner, name)

    def _shaped(self, request: BackendRequest) -> BackendRequest:
        """`request` with the client's cap on tokens and its stop strings.

        Where the client reads the text live (``single``'s reply is its call's tokens), every
        token is streamed (`Request.stream_interval` 1).
        """
        if self._watch.live and self._watch.mode == "trace" and request.stream_interval > 1:
            request = dataclasses.replace(request, stream_interval=1)
        sampling = request.sampling
        changes: dict[str, Any] = {}
        if self._max_tokens is not None and sampling.max_tokens > self._max_tokens:
            changes["max_tokens"] = self._max_tokens
        if self._stop and not set(self._stop) <= set(sampling.stop):
            changes["stop"] = tuple(dict.fromkeys((*sampling.stop, *self._stop)))
        if not changes:
            return request
        return dataclasses.replace(request, sampling=dataclasses.replace(sampling, **changes))

    def stream(self, request: BackendRequest) -> AsyncGenerator[Chunk, None]:
        return self._watched(request, self._inner.stream)

    async def reset_prefix_cache(self) -> None:
        """Empty the wrapped backend's prefix cache (`PrefixCache`; deterministic runs).

        Raises:
            ConfigError: It has none to empty (`ProxySettings.deterministic` refuses it first).
        """
        if not isinstance(self._inner, PrefixCache):
            raise ConfigError(f"backend {self._inner.name!r} cannot empty its prefix cache")
        await self._inner.reset_prefix_cache()

    async def _watched(
        self,
        request: BackendRequest,
        source: Callable[[BackendRequest], AsyncGenerator[Chunk, None]],
    ) -> AsyncGenerator[Chunk, None]:
        if self._watch.abandoned:
            raise asyncio.CancelledError("the client went away")
        request = self._shaped(request)
        call = self._watch.started(request)
        async with contextlib.aclosing(source(request)) as chunks:
            async for chunk in chunks:
                if self._watch.abandoned:  # closing `chunks` aborts the request in the engine
                    raise asyncio.CancelledError("the client went away")
                self._watch.chunk(call, chunk)
                yield chunk
