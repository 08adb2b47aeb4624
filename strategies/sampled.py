"""`Sampled`: how a strategy that samples whole solutions declares its sampling, once.

Its three fields are the strategy's public parameters (``-p temperature=0.8`` on the command
line, listed by ``reasoning strategies``, recorded with the run); `Sampled.sampling` turns them
into the `Sampling` of a request. The defaults are those of reasoning models in the papers
(temperature 0.6, top_p 0.95), with traces capped at this framework's 512 tokens. A strategy
with other defaults redeclares only the field that differs, with its own docstring::

    @STRATEGIES.register("self-consistency")
    @dataclass(frozen=True, kw_only=True)
    class SelfConsistency(Sampled):
        n: int = 8
        temperature: float = 0.7

Strategies are keyword-only dataclasses (``kw_only=True``): a redeclared field then keeps its
keyword, and no parameter can be passed by position by mistake. A subclass with its own
``__post_init__`` calls ``super().__post_init__()``, which validates the sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

from reasoning import Sampling
from reasoning.backend import DEFAULT_TEMPERATURE, DEFAULT_TOP_P

__all__ = ["Sampled"]


@dataclass(frozen=True, kw_only=True)
class Sampled:
    """Base of the strategies that sample whole solutions: temperature, top_p, max_tokens.

    Example:
        >>> Sampled().sampling(4, logprobs=20)
        Sampling(temperature=0.6, top_p=0.95, top_k=0, max_tokens=512, n=4, stop=(), logprobs=20, seed=None)
    """

    temperature: float = DEFAULT_TEMPERATURE
    """Sampling temperature (the sampling default, `reasoning.backend.DEFAULT_TEMPERATURE`)."""
    top_p: float = DEFAULT_TOP_P
    """Nucleus mass."""
    max_tokens: int = 512
    """Most tokens per sample."""

    def __post_init__(self) -> None:
        self.sampling()

    def sampling(self, n: int = 1, *, logprobs: int | None = None) -> Sampling:
        """The sampling of a request for `n` samples (with top-`logprobs` log-probabilities).

        Raises:
            ConfigError: A field is out of range (checked when the strategy is built).
        """
        return Sampling(
            temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, n=n, logprobs=logprobs
        )
