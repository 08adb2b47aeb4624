"""Forced exits: stop reasoning at a decision point and make the model state its answer.

LYNX ("LYNX: Learning Dynamic Exits for Confidence-Controlled Reasoning", Akgül et al.,
arXiv 2512.05325) appends an exit phrase ending in ``\\boxed{`` to the text before the decision
point's token and decodes greedily (its released code: ``</think> Final Answer: \\boxed{``, at
most 64 greedy tokens). The answer is complete when the braces opened
by the phrase close, so `read_answer` cancels the decoding right there instead of spending the
rest of the 64-token cap (INFERRED: the paper always decodes up to the cap).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from reasoning.backend import Chunk

__all__ = ["EXIT_PHRASE", "LYNX_EXIT_PHRASE", "default_layers", "read_answer"]

EXIT_PHRASE = "\n\nFinal Answer: \\boxed{"
"""Exit phrase for instruction-tuned models (no thinking segment to close)."""

LYNX_EXIT_PHRASE = "</think> Final Answer: \\boxed{"
"""The published exit phrase for reasoning models with a ``<think>`` segment."""


def default_layers(num_layers: int) -> list[int]:
    """LYNX's rule of thumb for a model of `num_layers` blocks: about L/4, L/2, 3L/4 and L.

    Example:
        >>> default_layers(24)
        [6, 12, 18, 24]
        >>> default_layers(28)
        [7, 14, 21, 28]
    """
    return sorted({max(1, round(num_layers * q / 4)) for q in (1, 2, 3, 4)})


async def read_answer(chunks: AsyncIterator[Chunk], open_braces: int = 1) -> tuple[str, int]:
    """Read a forced-exit completion until the phrase's braces close; cancel the rest.

    Returns:
        The text up to and including the closing brace (or all of it when the cap came first)
        and the number of tokens decoded.

    Example:
        >>> import anyio
        >>> async def pieces():
        ...     for text in ["\\\\frac{1", "}{2", "}} and", " more"]:
        ...         yield Chunk(index=0, text=text, tokens=1)
        >>> anyio.run(read_answer, pieces())
        ('\\\\frac{1}{2}}', 3)
    """
    text: list[str] = []
    tokens = 0
    depth = open_braces
    async with contextlib.aclosing(chunks) as stream:  # type: ignore[type-var]
        async for chunk in stream:
            tokens += chunk.tokens
            for i, char in enumerate(chunk.text):
                depth += 1 if char == "{" else -1 if char == "}" else 0
                if depth == 0:
                    text.append(chunk.text[: i + 1])
                    return "".join(text), tokens
            text.append(chunk.text)
    return "".join(text), tokens
