"""The Backend seam: requests in, token chunks streamed out.

A backend has one required method, `Backend.stream`, an async generator of `Chunk`s for one
`Request` (which may ask for ``n`` samples that the engine batches). Closing the generator
(``aclose()``, or leaving an ``async with contextlib.aclosing(...)`` block) cancels the
request in the engine at once; strategies that stop early rely on it. `collect` is the batch
convenience on top: it drains a stream into one `Completion` per sample.

Optional abilities are separate protocols: `TokenCounter` (count a request's prompt tokens
before sending it, needed to enforce a prompt-token budget) and `HiddenStateReader` (hidden
states of chosen layers at chosen positions of a prompt, from the model the engine serves) and
`PromptScorer` (the log-probability the model gives each token of a prompt, in one prefill).
`HiddenStateMapper` applies a function (a probe's head) to hidden states where they are read,
so only its output travels (a pool of engine replicas: the states stay on the replica).
`ProblemRouter` is a backend made of several engines (replicas) that serves each problem from
one of them: the controller asks it for the problem's own backend before the strategy starts.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, TypeVar, runtime_checkable

import numpy as np

from reasoning.errors import ConfigError

__all__ = [
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_P",
    "HIDDEN_STATES_OFFERED_BY",
    "PROMPT_LOGPROBS_OFFERED_BY",
    "REWARDS_OFFERED_BY",
    "AdmitsAtOnce",
    "Assembler",
    "Backend",
    "Chunk",
    "Completion",
    "FinishReason",
    "HiddenStateMapper",
    "HiddenStateReader",
    "Message",
    "PrefixCache",
    "ProblemRouter",
    "PromptScorer",
    "Request",
    "RewardReader",
    "Sampling",
    "TokenCounter",
    "TokenLogprob",
    "collect",
]

FinishReason = Literal["stop", "length", "cancelled"]

T = TypeVar("T")


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    """Who speaks."""
    content: str
    """What is said."""


DEFAULT_TEMPERATURE = 0.6
"""The sampling default, stated once: `Sampling` and every strategy that samples whole solutions
(`reasoning.strategies.sampled.Sampled`) start from it. 0.6 with top_p 0.95 is the setting
DeepSeek-R1 recommends and DeepConf, short-m@k and LYNX sample at; a method whose paper says
otherwise states its own (self-consistency 0.7, the step searches 0.8) beside its citation."""
DEFAULT_TOP_P = 0.95
"""The nucleus mass of the sampling default (`DEFAULT_TEMPERATURE`)."""


@dataclass(frozen=True)
class Sampling:
    """Decoding settings of one request."""

    temperature: float = DEFAULT_TEMPERATURE
    """Softmax temperature; 0 means greedy."""
    top_p: float = DEFAULT_TOP_P
    """Nucleus sampling mass."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 disables."""
    max_tokens: int = 512
    """Most tokens to decode per sample."""
    n: int = 1
    """Samples drawn for this request; the engine decodes them as one batch."""
    stop: tuple[str, ...] = ()
    """Strings that end a sample (not included in its text)."""
    logprobs: int | None = None
    """Return the top-k log-probabilities of every decoded token (k = this value)."""
    seed: int | None = None
    """Per-request seed; the controller fills it from the run seed when left None."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {self.top_k}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise ConfigError(f"logprobs must be in [0, 20], got {self.logprobs}")


@dataclass(frozen=True)
class Request:
    """A chat prompt, optionally continuing a partial assistant answer.

    The prompt the engine sees is the model's chat template applied to `messages` with the
    generation prompt, followed by `prefix` verbatim, so requests that share messages and a
    prefix share a byte-identical prompt prefix and the prefix cache serves it.
    """

    messages: tuple[Message, ...]
    """The conversation so far."""
    sampling: Sampling = Sampling()
    """Decoding settings."""
    prefix: str = ""
    """Assistant text already written; the model continues it (step-wise strategies)."""
    stream_interval: int = 1
    """Tokens per streamed chunk the caller can wait for (1: every token as it is decoded).

    A caller that reads nothing before a sample ends (`Context.generate`) asks for coarser
    chunks: the engine then sends a sample's tokens in pieces of this many (its first and last
    piece at once), which spares the server's per-token work and the client's per-token
    parsing. It changes no sample, only how often the stream speaks; a sample cancelled
    mid-way reports up to ``stream_interval - 1`` fewer tokens than the engine decoded.
    """

    def __post_init__(self) -> None:
        if self.stream_interval < 1:
            raise ConfigError(f"stream_interval must be >= 1, got {self.stream_interval}")

    def with_sampling(self, **changes: object) -> Request:
        """Return a copy with some sampling fields changed."""
        return replace(self, sampling=replace(self.sampling, **changes))  # type: ignore[arg-type]


@dataclass(frozen=True)
class TokenLogprob:
    """Log-probability of one decoded token and its top alternatives."""

    token: str
    """The decoded token's text."""
    logprob: float
    """Its log-probability."""
    top: tuple[tuple[str, float], ...] = ()
    """The top-k (token, log-probability) pairs at this position, most likely first."""


@dataclass(frozen=True)
class Chunk:
    """A piece of one sample's output, as the engine streams it."""

    index: int
    """Which of the request's ``n`` samples this chunk belongs to."""
    text: str
    """Newly decoded text."""
    tokens: int
    """Number of newly decoded tokens."""
    prompt_tokens: int = 0
    """Prompt length of the request, in tokens."""
    cached_tokens: int = 0
    """Prompt tokens the engine's prefix cache served."""
    logprobs: tuple[TokenLogprob, ...] = ()
    """Log-probabilities of the new tokens, when asked for."""
    finish_reason: FinishReason | None = None
    """Set on the sample's last chunk."""
    stop_string: str | None = None
    """On the last chunk: the stop string that ended the sample (None at end of text)."""


@dataclass(frozen=True)
class Completion:
    """One finished (or cancelled) sample."""

    index: int
    """Position among the request's samples."""
    text: str
    """Decoded text (the continuation only, without the prefix)."""
    output_tokens: int
    """Tokens decoded."""
    finish_reason: FinishReason
    """``stop`` (end of text or stop string), ``length`` or ``cancelled``."""
    prompt_tokens: int = 0
    """Prompt length of the request, in tokens."""
    cached_tokens: int = 0
    """Prompt tokens served by the prefix cache."""
    seconds: float = 0.0
    """Wall time from sending the request to this sample's last token."""
    started: float = 0.0
    """When its request was sent, in seconds from the start of the run (0 outside a run)."""
    logprobs: tuple[TokenLogprob, ...] | None = None
    """Per-token log-probabilities, when asked for."""
    backend: str = ""
    """Name of the named backend that produced it (empty: the run's default backend)."""
    stop_string: str | None = None
    """Which of the request's stop strings ended it; None when it ended any other way.

    With ``finish_reason == "stop"`` it tells a stop string (the model goes on) from the end of
    text (the model is done): step-wise searches need the difference.
    """


class Backend(Protocol):
    """Something that decodes text: an in-process engine, a server, or a script.

    Example:
        >>> import anyio
        >>> from reasoning import Message, Request, ScriptedBackend, collect
        >>> backend = ScriptedBackend(["4"])
        >>> request = Request((Message("user", "2+2?"),))
        >>> anyio.run(collect, backend, request)[0].text
        '4'
    """

    @property
    def name(self) -> str:
        """Short name used in records and error messages."""
        ...

    def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        """Stream the chunks of all ``request.sampling.n`` samples, interleaved.

        Closing the iterator before it ends cancels the request in the engine.
        """
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """Capability: count the prompt tokens of a request without running it."""

    def prompt_tokens(self, request: Request) -> int:
        """Return the number of prompt tokens `request` will occupy."""
        ...


@runtime_checkable
class AdmitsAtOnce(Protocol):
    """Capability: stream a request whose samples all start decoding in the same engine step.

    An engine may fan ``n`` samples out into requests that reach its scheduler one by one, so
    some start a step later and the batches differ from run to run. A deterministic run
    (`Controller.deterministic`) uses this when it can; otherwise it sends the samples one by one.
    """

    def stream_at_once(self, request: Request) -> AsyncGenerator[Chunk, None]:
        """`Backend.stream`, with every sample admitted in one scheduler step."""
        ...


@runtime_checkable
class PrefixCache(Protocol):
    """Capability: empty the engine's prefix cache (a reproducible run starts each problem cold)."""

    async def reset_prefix_cache(self) -> None:
        """Drop every cached prefix; raise `BackendError` when the engine refuses."""
        ...


@runtime_checkable
class ProblemRouter(Protocol):
    """Capability: route all of one problem's requests to one place (a pool of engine replicas).

    `Controller.run` calls `for_problem` once per problem (per attempt) and gives the strategy
    the backend it returns, so every request of a step-wise search reaches the same engine and
    its prefix cache (`reasoning.backends.replicas.ReplicaPool`).
    """

    def for_problem(self, problem_id: str) -> Backend:
        """The backend serving every request of problem `problem_id` (the same one each call).

        Raises:
            BackendUnavailable: No replica is left to serve it.
        """
        ...


HIDDEN_STATES_OFFERED_BY = (
    "vllm (in-process, eager mode: the default), and openai against a server started with "
    "`reasoning serve --hidden-states`"
)
"""Which backends can give hidden states, for `CapabilityError` messages."""


REWARDS_OFFERED_BY = (
    "vllm_reward (a process reward model such as Qwen2.5-Math-PRM on vLLM's pooling runner: "
    "reasoning.backends.vllm_reward.VLLMRewardBackend)"
)
"""Which backends can give process rewards, for `CapabilityError` messages."""


PROMPT_LOGPROBS_OFFERED_BY = (
    "vllm (in-process), openai against a vLLM server (its prompt_logprobs extension), and "
    "scripted (with prompt_logprob=)"
)
"""Which backends can score a prompt's tokens, for `CapabilityError` messages."""


@runtime_checkable
class PromptScorer(Protocol):
    """Capability: how likely the model finds each token of a prompt (a prefill, no decoding).

    ATTS' conformity score is the target model's perplexity of a draft's chunk: the chunk is
    the end of the prompt's assistant prefix, scored by the target in one forward pass.
    """

    async def prompt_logprobs(self, request: Request) -> tuple[TokenLogprob, ...]:
        """Log-probability of each token of `request`'s rendered prompt given those before it.

        The text is rendered as a continuation request would send it (chat template, then
        ``request.prefix``). The first token has no context and is left out, so the result has
        one entry fewer than the prompt has tokens; each entry's ``token`` is its text.

        Raises:
            CapabilityError: This backend instance cannot score prompts.
        """
        ...


@runtime_checkable
class RewardReader(Protocol):
    """Capability: step rewards from a process reward model (a pooling model, it does not generate)."""

    step_tag: str
    """The text that ends every step in the PRM's input (Qwen2.5-Math-PRM: ``<extra_0>``)."""

    async def step_rewards(self, request: Request) -> np.ndarray:
        """Class probabilities ``[steps, labels]`` at each step tag of `request`'s conversation.

        The conversation is rendered with the PRM's chat template and no generation prompt; its
        last message is the assistant's partial solution with `step_tag` after every step. Row i
        belongs to step i; for Qwen2.5-Math-PRM column 1 is P(step correct).

        Raises:
            CapabilityError: This backend instance serves no process reward model.
        """
        ...


@runtime_checkable
class HiddenStateReader(Protocol):
    """Capability: hidden states of the served model at chosen layers and token positions."""

    async def hidden_states(
        self, request: Request, layers: Sequence[int], positions: Sequence[int] = (-1,)
    ) -> np.ndarray:
        """Hidden states ``[len(positions), len(layers), hidden]`` (float32) of `request`'s prompt.

        The text is the rendered prompt (chat template, then ``request.prefix``) exactly as a
        continuation request would send it. Layers follow transformers' numbering (0 =
        embeddings, i = decoder layer i, num_layers = final normed output); positions index
        the text's tokens, negative ones from the end (default: the last token, the state from
        which generation would continue).

        Raises:
            CapabilityError: This backend instance cannot give hidden states.
            ConfigError: A layer or position is out of range.
        """
        ...


@runtime_checkable
class HiddenStateMapper(Protocol):
    """Capability: apply a function to hidden states where they are read; only its output returns.

    A pool of engine replicas (`reasoning.backends.replicas.ReplicaPool`) reads hidden states on
    the replica that holds the problem's prefix; a probe's head shipped there turns
    ``[positions, layers, hidden]`` floats into a few scores, and only those cross the network.
    `reasoning.strategy.Context.mapped_hidden_states` uses it when the backend offers it, and
    otherwise reads the states (`HiddenStateReader`) and applies the head in place.
    """

    async def mapped_hidden_states(
        self,
        request: Request,
        layers: Sequence[int],
        positions: Sequence[int],
        head: Callable[[np.ndarray], T],
    ) -> T:
        """``head(hidden states)``, the states as `HiddenStateReader.hidden_states` gives them.

        `head` must pickle (a module-level function, a `functools.partial` of one, or an object
        such as a probe whose class the replica can import); it is sent once per replica.

        Raises:
            CapabilityError: This backend instance cannot give hidden states.
            ConfigError: A layer or position is out of range.
        """
        ...


@dataclass
class _Partial:
    text: list[str] = field(default_factory=list)
    tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: FinishReason | None = None
    stop_string: str | None = None
    seconds: float = 0.0


class Assembler:
    """Builds `Completion`s from interleaved chunks, handing each over when its sample ends.

    Example:
        >>> a = Assembler(Request((Message("user", "hi"),), Sampling(n=2)))
        >>> a.add(Chunk(1, "ok", 1, finish_reason="stop")).text
        'ok'
        >>> [c.finish_reason for c in a.unfinished()]
        ['cancelled']
    """

    def __init__(self, request: Request, started: float = 0.0) -> None:
        self.request = request
        self.started = started
        """When the request was sent, in seconds from the start of the run (`Completion.started`)."""
        self.start = time.monotonic()
        self._parts = [_Partial() for _ in range(request.sampling.n)]
        self._prompt_tokens = 0
        self._cached_tokens = 0

    def add(self, chunk: Chunk) -> Completion | None:
        """Take one chunk; return the sample's `Completion` if this chunk finished it."""
        part = self._parts[chunk.index]
        part.text.append(chunk.text)
        part.tokens += chunk.tokens
        part.logprobs.extend(chunk.logprobs)
        self._prompt_tokens = max(self._prompt_tokens, chunk.prompt_tokens)
        self._cached_tokens = max(self._cached_tokens, chunk.cached_tokens)
        if chunk.finish_reason is None or part.finish is not None:
            return None
        part.finish = chunk.finish_reason
        part.stop_string = chunk.stop_string
        part.seconds = time.monotonic() - self.start
        return self._completion(chunk.index)

    def unfinished(self) -> list[Completion]:
        """The samples that have not finished, as cancelled completions (with their tokens)."""
        return [self._completion(i) for i, p in enumerate(self._parts) if p.finish is None]

    def all(self) -> list[Completion]:
        """Every sample by index; unfinished ones count as cancelled."""
        return [self._completion(i) for i in range(len(self._parts))]

    def _completion(self, index: int) -> Completion:
        p = self._parts[index]
        return Completion(
            index=index,
            text="".join(p.text),
            output_tokens=p.tokens,
            finish_reason=p.finish or "cancelled",
            prompt_tokens=self._prompt_tokens,
            cached_tokens=self._cached_tokens,
            seconds=p.seconds or time.monotonic() - self.start,
            started=self.started,
            logprobs=tuple(p.logprobs) if self.request.sampling.logprobs is not None else None,
            stop_string=p.stop_string,
        )


async def collect(backend: Backend, request: Request) -> list[Completion]:
    """Run `request` to the end and return its samples, ordered by index."""
    return await collect_stream(backend.stream(request), request)


async def collect_stream(chunks: AsyncIterator[Chunk], request: Request) -> list[Completion]:
    """Drain `chunks` into one `Completion` per sample of `request`."""
    assembler = Assembler(request)
    async for chunk in chunks:
        assembler.add(chunk)
    return assembler.all()
