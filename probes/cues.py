"""Decision points in a generation: where a probe may decide to stop (LYNX, arXiv 2512.05325).

A decision point ("cue event") is identified by the generated token at which it completes. Three
kinds, combinable:

* cue words, LYNX-style: lowercase substring search over the decoded text, no word boundary
  ("Wait", "wait," and "awaiting" all match); the event is the first token whose cumulative text
  covers the end of the pattern;
* step boundaries: every blank line (``"\\n\\n"``), where instruction-tuned models end a step;
* every k generated tokens.

`LYNX_CUES` are the published cue words for long-CoT reasoning models (R1-distill style);
instruction-tuned models such as the embedded Qwen2.5-Coder rarely write them, so `DEFAULT_CUES`
adds step boundaries.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reasoning.errors import ConfigError

__all__ = ["DEFAULT_CUES", "LYNX_CUES", "CueSet"]


@dataclass(frozen=True)
class CueSet:
    """Which positions of a generation are decision points."""

    words: tuple[str, ...] = ("hmm", "wait", "alternatively")
    """Cue patterns, matched as lowercase substrings of the decoded text."""
    step_boundary: bool = True
    """Every blank line is a decision point."""
    every: int = 0
    """Also every `every` generated tokens (0: off)."""
    skip_first: int = 0
    """Ignore the first events of a trace."""
    max_events: int | None = None
    """Keep at most this many events per trace."""

    def __post_init__(self) -> None:
        if self.every < 0 or self.skip_first < 0 or (self.max_events is not None and self.max_events < 1):
            raise ConfigError("cue set: every and skip_first must be >= 0, max_events >= 1")
        if any(not w for w in self.words):
            raise ConfigError("cue set: empty cue word")
        if not (self.words or self.step_boundary or self.every):
            raise ConfigError("cue set: no kind of decision point is enabled")

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> CueSet:
        """A cue set from its JSON form (as stored in probe artefacts)."""
        max_events = spec.get("max_events")
        return cls(
            words=tuple(str(w) for w in spec.get("words", ())),
            step_boundary=bool(spec.get("step_boundary", True)),
            every=int(spec.get("every", 0)),
            skip_first=int(spec.get("skip_first", 0)),
            max_events=None if max_events is None else int(max_events),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "words": list(self.words),
            "step_boundary": self.step_boundary,
            "every": self.every,
            "skip_first": self.skip_first,
            "max_events": self.max_events,
        }

    def events(self, tokens: Sequence[str]) -> list[int]:
        """1-based indices of the generated tokens at which a decision point completes, in order.

        Example:
            >>> LYNX_CUES.events(["So", " x=2.", " Wa", "it,", " no"])
            [4]
        """
        ends = list(itertools.accumulate(len(t) for t in tokens))
        text = "".join(tokens).lower()
        found: set[int] = set()
        patterns = [w.lower() for w in self.words] + (["\n\n"] if self.step_boundary else [])
        for pattern in patterns:
            start = text.find(pattern)
            while start >= 0:
                end = start + len(pattern)
                found.add(bisect.bisect_left(ends, end) + 1)
                start = text.find(pattern, start + 1)
        if self.every:
            found.update(range(self.every, len(tokens) + 1, self.every))
        ordered = sorted(found)[self.skip_first :]
        return ordered[: self.max_events] if self.max_events is not None else ordered


LYNX_CUES = CueSet(step_boundary=False)
"""The published LYNX cue words, unchanged (for reasoning models)."""

DEFAULT_CUES = CueSet()
"""Cue words plus blank-line step boundaries: enough decision points for instruction-tuned models."""
