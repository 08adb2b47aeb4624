"""A deterministic fake backend for tests and examples, shipped with the package.

`ScriptedBackend` answers from a script: a list of texts used in turn (one per sample), or a
function of the request and the sample number. Text is streamed word by word ("tokens" are
whitespace-delimited pieces), ``max_tokens`` and stop strings are honoured, cancellation is
recorded, and a simple prefix cache reports how many prompt tokens earlier requests share.

Example:
    >>> import anyio
    >>> from reasoning import Message, Request, Sampling, collect
    >>> backend = ScriptedBackend(["a b c", "d e"])
    >>> request = Request((Message("user", "hi"),), Sampling(n=2, max_tokens=2))
    >>> [(c.text, c.finish_reason) for c in anyio.run(collect, backend, request)]
    [('a b ', 'length'), ('d e', 'stop')]
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Callable, Sequence

import numpy as np

from reasoning.backend import (
    HIDDEN_STATES_OFFERED_BY,
    PROMPT_LOGPROBS_OFFERED_BY,
    REWARDS_OFFERED_BY,
    Chunk,
    FinishReason,
    Request,
    TokenLogprob,
)
from reasoning.errors import CapabilityError, ConfigError

__all__ = ["ScriptedBackend"]

_TOKEN = re.compile(r"\S+\s*|\s+")

Script = Sequence[str] | Callable[[Request, int], str]
HiddenStates = Callable[
    [Request, Sequence[int], Sequence[int]], "np.ndarray | Sequence[Sequence[Sequence[float]]]"
]


def tokenize(text: str) -> list[str]:
    """Split text into the fake backend's tokens (words with their trailing space)."""
    return _TOKEN.findall(text)


class ScriptedBackend:
    """Replays scripted outputs through the streaming Backend seam."""

    def __init__(
        self,
        script: Script,
        *,
        seconds_per_token: float | Sequence[float] = 0.0,
        name: str = "scripted",
        model: str = "scripted",
        token_logprob: float | Callable[[int, int], float] = -0.1,
        hidden_states: HiddenStates | None = None,
        rewards: Callable[[Request], Sequence[float]] | None = None,
        step_tag: str = "<extra_0>",
        prompt_logprob: Callable[[Request, int, str], float] | None = None,
    ) -> None:
        """Create a backend.

        Args:
            script: Texts handed out in turn, one per sample (cycling), or a function
                ``(request, sample_number) -> text``.
            seconds_per_token: Delay before each token; a sequence gives each sample
                (by global sample number, cycling) its own speed, to script finish order.
            name: Backend name in records.
            model: Model name in records.
            token_logprob: Log-probability of every decoded token and of each of its top-k
                alternatives, or a function ``(sample_number, token_index) -> logprob``; so the
                DeepConf token confidence of a token is minus this value.
            hidden_states: Fake hidden states for probes: ``(request, layers, positions) ->
                array [positions, layers, hidden]``; the request's prefix is the text so far.
                Without it, asking for hidden states raises `CapabilityError`.
            rewards: Fake process rewards: ``request -> P(correct) of each step`` (the steps
                are the last message split at `step_tag`); without it `step_rewards` raises
                `CapabilityError`.
            step_tag: The step tag of the fake process reward model.
            prompt_logprob: Fake prompt scoring: ``(request, position, token) -> logprob`` of
                each prompt token (position 1 onwards, as `PromptScorer` leaves out the first);
                without it `prompt_logprobs` raises `CapabilityError`.
        """
        if not callable(script) and len(script) == 0:
            raise ConfigError("ScriptedBackend needs at least one scripted output")
        self._script = script
        self._speeds = seconds_per_token
        self._token_logprob = token_logprob
        self._hidden_states = hidden_states
        self._rewards = rewards
        self.step_tag = step_tag
        self._prompt_logprob = prompt_logprob
        self.scored_requests: list[Request] = []
        """Every prompt-scoring request received, in order."""
        self.reward_requests: list[Request] = []
        """Every process-reward request received, in order."""
        self._name = name
        self.model = model
        self.requests: list[Request] = []
        """Every request received, in order."""
        self.hidden_requests: list[Request] = []
        """Every hidden-states request received, in order."""
        self.cancelled: int = 0
        """Requests closed before all their samples finished."""
        self.decoded_tokens: int = 0
        """Tokens streamed in total."""
        self.streaming: int = 0
        """Requests streaming right now."""
        self.peak_streaming: int = 0
        """Most requests that were ever streaming at once (1: they never overlapped)."""
        self.prefix_resets: int = 0
        """Times the prefix cache was emptied (`reset_prefix_cache`)."""
        self._samples = 0
        self._seen: list[list[str]] = []

    @property
    def name(self) -> str:
        """Backend name."""
        return self._name

    @classmethod
    def repeat(cls, text: str, **kwargs: object) -> ScriptedBackend:
        """A backend that always answers `text`."""
        return cls([text], **kwargs)  # type: ignore[arg-type]

    async def hidden_states(
        self, request: Request, layers: Sequence[int], positions: Sequence[int] = (-1,)
    ) -> np.ndarray:
        """Scripted hidden states ``[positions, layers, hidden]`` (see ``hidden_states=``)."""
        if self._hidden_states is None:
            raise CapabilityError(
                "hidden states (this ScriptedBackend has no hidden_states= function)",
                self._name,
                HIDDEN_STATES_OFFERED_BY,
            )
        self.hidden_requests.append(request)
        values = np.asarray(self._hidden_states(request, layers, positions), dtype=np.float32)
        if values.ndim != 3 or values.shape[:2] != (len(positions), len(layers)):
            raise ValueError(
                f"scripted hidden states have shape {values.shape}, "
                f"expected ({len(positions)}, {len(layers)}, hidden)"
            )
        return values

    async def step_rewards(self, request: Request) -> np.ndarray:
        """Scripted step rewards as ``[steps, 2]`` class probabilities (see ``rewards=``)."""
        if self._rewards is None:
            raise CapabilityError(
                "process rewards (this ScriptedBackend has no rewards= function)",
                self._name,
                REWARDS_OFFERED_BY,
            )
        self.reward_requests.append(request)
        good = np.asarray(self._rewards(request), dtype=np.float32)
        tags = request.messages[-1].content.count(self.step_tag) if request.messages else 0
        if good.shape != (tags,):
            raise ValueError(f"scripted rewards gave {good.size} values for {tags} step tags")
        return np.stack([1.0 - good, good], axis=1)

    async def prompt_logprobs(self, request: Request) -> tuple[TokenLogprob, ...]:
        """Scripted log-probabilities of the prompt's tokens after the first (see ``prompt_logprob=``)."""
        if self._prompt_logprob is None:
            raise CapabilityError(
                "prompt log-probabilities (this ScriptedBackend has no prompt_logprob= function)",
                self._name,
                PROMPT_LOGPROBS_OFFERED_BY,
            )
        self.scored_requests.append(request)
        await asyncio.sleep(0)
        tokens = self._prompt(request)
        return tuple(
            TokenLogprob(token, float(self._prompt_logprob(request, i, token)))
            for i, token in enumerate(tokens)
            if i > 0
        )

    def prompt_tokens(self, request: Request) -> int:
        """Fake prompt length: the number of words of the messages plus prefix."""
        return len(self._prompt(request))

    def _prompt(self, request: Request) -> list[str]:
        text = "".join(f"<{m.role}> {m.content}\n" for m in request.messages) + "<assistant> "
        return tokenize(text + request.prefix)

    def _text(self, request: Request, number: int) -> str:
        if callable(self._script):
            return self._script(request, number)
        return self._script[number % len(self._script)]

    def _speed(self, number: int) -> float:
        if isinstance(self._speeds, int | float):
            return float(self._speeds)
        return float(self._speeds[number % len(self._speeds)])

    async def reset_prefix_cache(self) -> None:
        """Forget every prompt seen: later requests report no cached tokens."""
        self._seen.clear()
        self.prefix_resets += 1

    def _cached(self, prompt: list[str]) -> int:
        best = 0
        for seen in self._seen:
            n = 0
            for a, b in zip(seen, prompt, strict=False):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        self._seen.append(prompt)
        return best

    async def stream(self, request: Request) -> AsyncGenerator[Chunk, None]:
        """Stream the scripted samples of `request`, interleaved token by token."""
        self.requests.append(request)
        sampling = request.sampling
        prompt = self._prompt(request)
        cached = self._cached(prompt)
        plans = []
        for _ in range(sampling.n):
            number = self._samples
            self._samples += 1
            plans.append((*self._plan(self._text(request, number), request), self._speed(number), number))
        clocks = [0.0] * sampling.n
        positions = [0] * sampling.n
        finished = [False] * sampling.n
        elapsed = 0.0
        self.streaming += 1
        self.peak_streaming = max(self.peak_streaming, self.streaming)
        try:
            while not all(finished):
                # The next token comes from the sample whose next token is due first.
                due = [(clocks[i] + plans[i][3], i) for i in range(sampling.n) if not finished[i]]
                when, i = min(due)
                if when > elapsed:
                    await asyncio.sleep(when - elapsed)
                    elapsed = when
                else:
                    await asyncio.sleep(0)
                clocks[i] = when
                tokens, reason, stopped, _, number = plans[i]
                if positions[i] < len(tokens):
                    token = tokens[positions[i]]
                    positions[i] += 1
                    done = positions[i] == len(tokens)
                    self.decoded_tokens += 1
                    yield Chunk(
                        index=i,
                        text=token,
                        tokens=1,
                        prompt_tokens=len(prompt),
                        cached_tokens=cached,
                        logprobs=self._logprobs(token, sampling.logprobs, number, positions[i] - 1),
                        finish_reason=reason if done else None,
                        stop_string=stopped if done else None,
                    )
                    finished[i] = done
                else:
                    finished[i] = True
                    yield Chunk(i, "", 0, len(prompt), cached, finish_reason=reason, stop_string=stopped)
        finally:
            self.streaming -= 1
            if not all(finished):
                self.cancelled += 1

    @staticmethod
    def _plan(text: str, request: Request) -> tuple[list[str], FinishReason, str | None]:
        """Tokens of a scripted sample, why it ends, and the stop string that ends it (if any)."""
        reason: FinishReason = "stop"
        stopped: str | None = None
        for stop in request.sampling.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, stopped = text[:cut], stop
        tokens = tokenize(text)
        if len(tokens) > request.sampling.max_tokens:
            tokens, reason, stopped = tokens[: request.sampling.max_tokens], "length", None
        return tokens, reason, stopped

    def _logprobs(self, token: str, k: int | None, number: int, position: int) -> tuple[TokenLogprob, ...]:
        if k is None:
            return ()
        value = self._token_logprob
        logprob = float(value(number, position) if callable(value) else value)
        top = ((token, logprob), *((f"<alt{j}>", logprob) for j in range(1, max(k, 1))))
        return (TokenLogprob(token, logprob, top),)
