"""Speculative Thinking: the draft reasons; at reflective moments the target writes instead.

"Speculative Thinking: Enhancing Small-Model Reasoning with Large Model Guidance at Inference
Time" (Yang, Yue, Chaudhary, Han, arXiv 2504.12329, COLM 2025), after its released
``speculative/speculative_vllm.py`` and configurations::

    text = "" ; negatives = 0 ; recap = 125 ; limit = 15
    while the trace holds fewer than max_tokens tokens:
        text += draft(text, stop "\\n\\n", at most 1024)            # up to a paragraph boundary
        if the draft ended its text: break
        if it stopped at the boundary:
            if negatives >= limit:                                  # too much dithering
                text += "Let me check whether there are some wrong steps:" + target(text, recap)
                negatives = 0 ; recap = min(recap + 25, 200) ; limit = min(limit + 5, 30)
            else:
                peek = draft(text, 20)                              # look ahead, not yet kept
                if sentiment(peek) != 0:                            # a reflective moment
                    big = target(text, 20) ; text += big            # the target writes it
                    if sentiment(big) < 0: negatives += 1
                    if big holds a VERIFY word: text += target(text, 125)
                # else the peek is dropped and the draft writes on
        if the latest kept piece ended the text: break

`sentiment` counts (lowercased) occurrences of the `POSITIVE` words against those of the
`NEGATIVE` and `VERIFY` words: more positive +1, more negative -1, a tie of non-zero counts -1,
none 0. Both models sample with T=0.6, top_k=50, top_p=0.95. Every default is the released
configuration's except ``max_tokens``, which its evaluation harness sets (8192 here, INFERRED,
as SpecReason's budget). The continuation after a VERIFY word always has the first recap's
length (125), as in the released code; only recaps grow. With ``choose_large=False`` the
target's segment replaces the peek only when it turns the sentiment (a negative peek and a
non-negative segment, or a positive peek and a negative segment); otherwise the peek is kept;
negatives and VERIFY words are then read from the piece kept, as the released code does.

INFERRED choices (documented): the paper works on token ids and counts the prompt in its length
limit; here a trace is text continued byte for byte (each request's prefix is the text so far) and
``max_tokens`` counts the decoded tokens it keeps, every call capped at what is left. A trace that
ends without a stated answer gets one from the target (`Speculative`). Calls within a trace are
sequential, as in the paper (the target's segment is only asked for at a flagged boundary); the
``n`` traces run concurrently. The released code's optional ``begin`` mode (the target writes the
first 100 tokens; off in its configurations) is left out.

Each candidate's ``scores``: ``segments`` (draft segments), ``boundaries``, ``flagged`` (peeks
with a sentiment), ``target_segments``, ``verify_continuations``, ``recaps``, ``negatives``,
``kept_tokens``, ``target_share`` (share of the kept tokens the target wrote), and the tokens and
calls of each model (`Speculative.candidate`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from reasoning import STRATEGIES, Candidate, Completion, ConfigError, Context, Problem, Result
from reasoning.strategies.speculative_steps import Speculative, Tally, ended_text

__all__ = ["NEGATIVE", "POSITIVE", "RECAP_PROMPT", "VERIFY", "SpecThinking", "sentiment"]

POSITIVE = ("yeah", "yes", "final answer", "confident")
"""Words of confidence."""
NEGATIVE = ("wait", "alternatively", "hold on", "another")
"""Words of hesitation."""
VERIFY = ("verify", "think again", "recap", "check")
"""Words of verification: count as negative, and the target writes on after them."""
RECAP_PROMPT = "Let me check whether there are some wrong steps:"
"""Appended before the target's recap once the negatives reach the limit."""


def sentiment(text: str) -> int:
    """+1, -1 or 0: positive against negative and verify words, counted in the lowercased text.

    Example:
        >>> [sentiment(t) for t in ("Yes, so x=4.", "Wait, let me verify.", "Yes. Wait.", "So x=4.")]
        [1, -1, -1, 0]
        >>> sentiment("Yes, yeah, I am confident. But let me check.")
        1
    """
    lowered = text.lower()
    positive = sum(lowered.count(word) for word in POSITIVE)
    negative = sum(lowered.count(word) for word in (*NEGATIVE, *VERIFY))
    if positive == negative:
        return -1 if positive else 0
    return 1 if positive > negative else -1


@STRATEGIES.register("spec-thinking", "speculative-thinking", "spec_thinking")
@dataclass(frozen=True, kw_only=True)
class SpecThinking(Speculative):
    """The draft reasons; the target writes the reflective segments, verifications and recaps."""

    label: ClassVar[str] = "spec-thinking"

    max_tokens: int = 8192
    """Most tokens a trace keeps (both models' together)."""
    segment_tokens: int = 1024
    """Most tokens of one draft segment (it stops earlier at a blank line)."""
    peek_tokens: int = 20
    """Tokens of the draft's look-ahead at a boundary, and of the target's segment."""
    verify_tokens: int = 125
    """Tokens the target writes on after a segment holding a VERIFY word."""
    recap_tokens: int = 125
    """Tokens of the first recap; each recap after it is longer (`recap_growth`)."""
    recap_growth: int = 25
    """Added to the recap length after each recap."""
    max_recap_tokens: int = 200
    """Longest recap."""
    neg_limit: int = 15
    """Negative segments that trigger a recap; raised after each recap (`neg_growth`)."""
    neg_growth: int = 5
    """Added to the negative limit after each recap."""
    max_neg_limit: int = 30
    """Highest negative limit."""
    choose_large: bool = True
    """Always keep the target's segment at a flagged boundary (else only when it turns the mood)."""
    top_k: int = 50
    """Top-k of both models' sampling."""

    def __post_init__(self) -> None:
        sizes = ("max_tokens", "segment_tokens", "peek_tokens", "verify_tokens", "recap_tokens")
        for name in (*sizes, "max_recap_tokens", "neg_limit", "max_neg_limit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"spec-thinking: {name} must be >= 1, got {getattr(self, name)}")
        if min(self.recap_growth, self.neg_growth, self.top_k) < 0:
            raise ConfigError("spec-thinking: recap_growth, neg_growth and top_k must be >= 0")
        if self.max_recap_tokens < self.recap_tokens or self.max_neg_limit < self.neg_limit:
            raise ConfigError(
                "spec-thinking: max_recap_tokens and max_neg_limit must not be below their start"
            )
        super().__post_init__()

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Run n speculative traces concurrently, then vote."""
        return await self.vote(ctx, lambda tally: self.trace(ctx, tally))

    async def trace(self, ctx: Context, tally: Tally) -> Candidate:
        """One trace, guided by the target at reflective boundaries."""
        text, kept, counts = "", Counter[str](), Counter[str]()
        negatives, limit, recap = 0, self.neg_limit, self.recap_tokens

        def room() -> int:
            return self.max_tokens - sum(kept.values())

        async def ask(backend: str, role: str, tokens: int, stop: tuple[str, ...] = ()) -> Completion:
            request = ctx.request(self.sampling(min(tokens, room()), stop, self.top_k), text)
            return await tally.call(ctx, request, backend, role)

        def keep(piece: Completion, role: str) -> bool:
            nonlocal text
            text += piece.text
            kept[role] += piece.output_tokens
            return ended_text(piece)

        done = False
        while not done and room() > 0:
            segment = await ask(self.draft, "draft", self.segment_tokens, ("\n\n",))
            done = keep(segment, "draft")
            counts["segments"] += 1
            if done or segment.stop_string is None or room() <= 0:
                continue  # the end, a segment cut at its cap (no boundary), or no tokens left
            text += "\n\n"
            counts["boundaries"] += 1
            if negatives >= limit:
                text += RECAP_PROMPT
                done = keep(await ask(self.target, "target", recap), "target")
                counts["recaps"] += 1
                negatives, recap = 0, min(recap + self.recap_growth, self.max_recap_tokens)
                limit = min(limit + self.neg_growth, self.max_neg_limit)
                continue
            peek = await ask(self.draft, "draft", self.peek_tokens)
            mood = sentiment(peek.text)
            if mood == 0:
                continue  # dropped: the draft writes on
            counts["flagged"] += 1
            big = await ask(self.target, "target", self.peek_tokens)
            if self.choose_large or mood < 0 <= sentiment(big.text) or mood > 0 > sentiment(big.text):
                piece, role = big, "target"
                counts["target_segments"] += 1
            else:
                piece, role = peek, "draft"
            done = keep(piece, role)
            if sentiment(piece.text) < 0:
                negatives += 1
                counts["negatives"] += 1
            if not done and room() > 0 and any(word in piece.text.lower() for word in VERIFY):
                done = keep(await ask(self.target, "target", self.verify_tokens), "target")
                counts["verify_continuations"] += 1
        names = ("segments", "boundaries", "flagged", "target_segments", "verify_continuations", "recaps")
        stats = {name: float(counts[name]) for name in (*names, "negatives")}
        total = sum(kept.values())
        stats |= {"kept_tokens": float(total), "target_share": kept["target"] / total if total else 0.0}
        return await self.candidate(ctx, tally, text, "end" if done else "max_tokens", stats)
