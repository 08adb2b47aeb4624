"""`Trace`: one request's samples as they stream, assembled, closed and recorded exactly once.

A strategy that watches its samples while they decode (to stop one early, read hidden states at
a decision point, race them) takes a trace from its context, ``ctx.trace(request)``, instead of
pairing a stream with an `Assembler` and recording by hand::

    async with ctx.trace(request) as trace:
        async for chunk in trace:          # each chunk already assembled into its sample
            if should_stop(trace.tokens()):
                break                       # leaving the block cancels the sample in the engine
    [completion] = trace.completions       # unfinished samples are cancelled, with their tokens

Leaving the block, however it is left (a ``break``, an error, a budget stop, a cancellation),
closes the stream, which cancels the samples still decoding in the engine and settles what
they cost on the budget. Each sample is recorded once: when it finishes, in finishing order,
and the unfinished ones (as cancelled) when the trace closes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from types import TracebackType

from reasoning.backend import Assembler, Chunk, Completion, Request

__all__ = ["Trace"]

Record = Callable[[list[Completion]], list[Completion]]
"""Records samples and returns them as recorded (a `Context` stamps the backend's name)."""


class Trace:
    """A request's samples as they stream (see the module docstring).

    Example:
        >>> import anyio
        >>> from reasoning import Message, Sampling, ScriptedBackend
        >>> backend = ScriptedBackend(["a b", "c d e"], seconds_per_token=0.001)
        >>> request = Request((Message("user", "hi"),), Sampling(n=2, logprobs=0))
        >>> async def first_to_finish():
        ...     async with Trace(request, backend.stream(request)) as trace:
        ...         async for chunk in trace:
        ...             if trace.ended is not None:
        ...                 break
        ...     return [(c.text, c.finish_reason) for c in trace.completions]
        >>> anyio.run(first_to_finish)
        [('a b', 'stop'), ('c ', 'cancelled')]
    """

    def __init__(
        self,
        request: Request,
        chunks: AsyncGenerator[Chunk, None],
        record: Record | None = None,
        started: float = 0.0,
    ):
        self.request = request
        """The request streamed."""
        self.finished: list[Completion] = []
        """The samples that finished, in finishing order (as recorded)."""
        self.ended: Completion | None = None
        """The sample the latest chunk finished, if it finished one."""
        self.decoded = 0
        """Tokens decoded so far, over all samples."""
        self.completions: list[Completion] = []
        """Every sample by index once the trace is closed; unfinished ones cancelled."""
        self._chunks = chunks
        self._record = record
        self._assembler = Assembler(request, started)
        self._tokens: list[list[str]] = [[] for _ in range(request.sampling.n)]
        self._closed = False

    def tokens(self, index: int = 0) -> list[str]:
        """The decoded token strings of sample `index` so far (needs ``logprobs`` in the sampling).

        The list grows as chunks arrive; read it, do not change it.
        """
        return self._tokens[index]

    def __aiter__(self) -> Trace:
        return self

    async def __anext__(self) -> Chunk:
        """The next chunk, added to its sample (and `ended` set) before it is returned."""
        chunk = await anext(self._chunks)
        self.decoded += chunk.tokens
        self._tokens[chunk.index].extend(t.token for t in chunk.logprobs)
        self.ended = self._assembler.add(chunk)
        if self.ended is not None:
            self.ended = self._recorded([self.ended])[0]
            self.finished.append(self.ended)
        return chunk

    async def close(self) -> list[Completion]:
        """Close the stream (cancelling what still decodes), record the unfinished; the samples."""
        if not self._closed:
            self._closed = True
            try:
                await self._chunks.aclose()
            finally:
                unfinished = self._recorded(self._assembler.unfinished())
                by_index = {c.index: c for c in (*self.finished, *unfinished)}
                self.completions = [by_index[i] for i in sorted(by_index)]
        return self.completions

    def _recorded(self, completions: list[Completion]) -> list[Completion]:
        return self._record(completions) if self._record is not None and completions else completions

    async def __aenter__(self) -> Trace:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()
