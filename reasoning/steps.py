"""`Steps`: how a step-wise method cuts and samples its steps, declared once.

Every step-wise strategy (the tree searches, arbitrage) and every collector of step data (the
advantage router's) takes its step settings from this base, so a parameter named
``step_tokens`` means the same thing, is checked the same way and is listed the same way by
``reasoning strategies`` wherever it appears::

    @dataclass(frozen=True, kw_only=True)
    class MySearch(Steps):
        width: int = 4          # the strategy's own parameters come first

A subclass may state other defaults for its method (its paper's), by declaring the field again.

Example:
    >>> Steps().step_sampling(2).stop, Steps(step_tokens=64).step_sampling().max_tokens
    (('\\n\\n',), 64)
    >>> Steps(max_steps=0)
    Traceback (most recent call last):
    ...
    reasoning.errors.ConfigError: max_steps must be >= 1, got 0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reasoning.backend import Sampling
from reasoning.errors import ConfigError

__all__ = ["Steps"]


@dataclass(frozen=True, kw_only=True)
class Steps:
    """Step settings: the delimiter that ends a step, its token cap, the step count, the sampling."""

    delimiter: str = "\n\n"
    """Step separator (and the stop string of step requests)."""
    step_tokens: int = 256
    """Most tokens per step request."""
    max_steps: int = 40
    """Most steps (step requests) per solution."""
    temperature: float = 0.8
    """Sampling temperature of steps."""
    top_p: float = 1.0
    """Nucleus mass."""

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.step_tokens < 1:
            raise ConfigError(f"step_tokens must be >= 1, got {self.step_tokens}")
        self.step_sampling(1)  # the sampling's own checks (temperature, top_p)

    def step_sampling(self, n: int = 1, max_tokens: int | None = None, seed: int | None = None) -> Sampling:
        """Sampling of `n` next steps, each cut at the delimiter or `max_tokens` (default `step_tokens`)."""
        return Sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=max_tokens or self.step_tokens,
            n=n,
            stop=(self.delimiter,) if self.delimiter else (),
            seed=seed,
        )

    def step_prefix(self, steps: Sequence[str]) -> str:
        """The continuation prefix that makes the model write the step after `steps`."""
        return "".join(step + self.delimiter for step in steps)
