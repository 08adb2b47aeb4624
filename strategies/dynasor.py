"""Dynasor-CoT: stop one reasoning trace once periodic answer probes agree with certainty.

"Efficiently Serving LLM Reasoning Programs with Certaindex" (Fu et al., arXiv 2412.20993;
released code hao-ai-lab/Dynasor, ``dynasor/core/cot.py``):

    stream one trace; at every boundary b = chunk, 2 chunk, ... (the trace keeps decoding):
        probe_b = sample(prompt + trace[:b] + SUFFIX, <= 20 tokens, T = 0.6, top_p = 0.95)
        answer_b = probe_b up to where the brace SUFFIX opened closes ("" when it never does)
        if the last `window` answers are equal (normalised) and non-empty and none of those
           probes' texts holds a hesitation word: cancel the trace; stop
    stopped at b: text = trace[:b] + SUFFIX + answer_b + "}"    (the trace's tail is dropped)
    else (the trace ended first): the trace's own text and answer

Presets ``effort`` -> (window, chunk): mild (8, 64), low (5, 64), mid (3, 64), high (2, 64),
crazy (2, 32); ``window``/``chunk`` override them. Choices (INFERRED where marked):
the released code alternates chunk and probe serially; here each probe is sent the moment
its boundary is decoded and the trace keeps decoding meanwhile, so the tokens decoded past
the stop are charged (``decoded_past_exit``). Probes read their whole <= 20 tokens, as
released: a hesitation after the box ("}\\]  Wait, ...") is the signal. Hesitation words
match whole words, case-insensitively (INFERRED: the released code matches substrings, so
"no" hits "not" and "know"). No probe at 0 tokens (INFERRED: the released code also probes
before the first chunk). Answers compare by `normalize_answer` (released: ``math_equal``).
A stopped trace is recorded as cancelled; probes still decoding when the trace stops or ends
are cancelled in the engine and recorded so. The candidate's ``output_tokens`` is everything
it cost (trace and probes); ``scores``: ``probes`` (issued), ``probe_tokens``, ``exit_token``
(0: ran to the end), ``agreement`` (the final run of equal answers), ``decoded_past_exit``.
On a budget stop the latest answered probe stands, as if the trace had stopped there.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, replace
from typing import Annotated, Literal

from pydantic import BeforeValidator

from reasoning import STRATEGIES, Candidate, Completion, Context, Problem, Result, Sampling
from reasoning.answers import normalize_answer
from reasoning.concurrency import task_group
from reasoning.errors import ConfigError
from reasoning.strategies.sampled import Sampled
from reasoning.strategy import to_candidate
from reasoning.trace import Trace

__all__ = ["EFFORTS", "HESITATION", "SUFFIX", "Dynasor", "boxed_answer"]

SUFFIX = "... Oh, I suddenly got the answer to the whole problem, **Final Answer**\n\n\\[ \\boxed{"
"""The released probing suffix."""
EFFORTS = {"mild": (8, 64), "low": (5, 64), "mid": (3, 64), "high": (2, 64), "crazy": (2, 32)}
"""Effort preset -> (window, chunk), as released."""
HESITATION = ("wait", "hold", "but", "okay", "no", "hmm")
"""The released hesitation words."""


def boxed_answer(text: str) -> str:
    """A probe's answer: its text before the brace the suffix opened closes ("" if it never does).

    Example:
        >>> boxed_answer("\\\\frac{1}{2}} \\\\]"), boxed_answer("12 and")
        ('\\\\frac{1}{2}', '')
    """
    depth = 0
    for i, char in enumerate(text):
        if char == "}" and depth == 0:
            return text[:i]
        depth += 1 if char == "{" else -1 if char == "}" else 0
    return ""


def _words(value: object) -> object:
    """Accept ``"wait,hmm"`` (from the command line) as well as a sequence of words."""
    return tuple(w.strip() for w in value.split(",") if w.strip()) if isinstance(value, str) else value


@dataclass
class _Probe:
    boundary: int
    prefix: str
    live: Trace | None = None
    done: bool = False
    answer: str = ""  # as written, up to the closing brace
    key: str = ""  # normalised ("": no answer)
    hesitant: bool = False


@STRATEGIES.register("dynasor", "dynasor-cot", "certaindex")
@dataclass(frozen=True, kw_only=True)
class Dynasor(Sampled):
    """One trace, probed every `chunk` tokens; stopped once `window` probes agree with certainty."""

    effort: Literal["mild", "low", "mid", "high", "crazy"] = "mid"
    """Preset (window, chunk): mild (8, 64), low (5, 64), mid (3, 64), high (2, 64), crazy (2, 32)."""
    window: int = 0
    """Probes that must agree (0: the preset's)."""
    chunk: int = 0
    """Tokens between probes (0: the preset's)."""
    probe_tokens: int = 20
    """Most tokens of a probe."""
    probe_temperature: float = 0.6
    """Sampling temperature of the probes."""
    probe_top_p: float = 0.95
    """Nucleus mass of the probes."""
    hesitation: Annotated[tuple[str, ...], BeforeValidator(_words)] = HESITATION
    """Words that make a probe uncertain (whole words, any case; comma-separated on the command line)."""

    def __post_init__(self) -> None:
        if self.effort not in EFFORTS:
            raise ConfigError(f"dynasor: effort must be one of {', '.join(EFFORTS)}, got {self.effort!r}")
        for name, least in (("window", 0), ("chunk", 0), ("probe_tokens", 1)):
            if getattr(self, name) < least:
                raise ConfigError(f"dynasor: {name} must be >= {least}, got {getattr(self, name)}")
        chunk = self.settings()[1]
        if chunk >= self.max_tokens:
            raise ConfigError(f"dynasor: chunk ({chunk}) must be < max_tokens ({self.max_tokens})")
        try:
            self.probe_sampling()
        except ConfigError as bad:  # "temperature must be ...": name the probe's own parameter
            raise ConfigError(f"dynasor: probe_{bad}") from None
        super().__post_init__()

    def settings(self) -> tuple[int, int]:
        """(window, chunk): the preset's, with the explicit overrides."""
        window, chunk = EFFORTS.get(self.effort, (0, 0))
        return self.window or window, self.chunk or chunk

    def probe_sampling(self) -> Sampling:
        """The sampling of a probe."""
        return Sampling(self.probe_temperature, self.probe_top_p, max_tokens=self.probe_tokens)

    def certain(self, probes: list[_Probe]) -> int | None:
        """The first probe ending `window` finished, agreeing, answered, unhesitant probes."""
        window, done = self.settings()[0], 0
        while done < len(probes) and probes[done].done:
            done += 1
        for j in range(window - 1, done):
            if all(p.key == probes[j].key != "" and not p.hesitant for p in probes[j - window + 1 : j + 1]):
                return j
        return None

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Stream the trace, probe it at each boundary, stop it once the probes are certain."""
        chunk, words = self.settings()[1], "|".join(map(re.escape, self.hesitation))
        probes: list[_Probe] = []
        stop: list[int] = []  # the deciding probe, once there is one

        async def probe(p: _Probe) -> None:
            async with ctx.trace(ctx.request(self.probe_sampling(), p.prefix + SUFFIX)) as p.live:
                async for _ in p.live:
                    pass
            text = p.live.completions[0].text
            p.answer = boxed_answer(text)
            p.key = normalize_answer(p.answer) if p.answer.strip() else ""
            p.hesitant = bool(words) and re.search(rf"\b(?:{words})\b", text, re.IGNORECASE) is not None
            p.done = True
            if not stop and (decided := self.certain(probes)) is not None:
                stop.append(decided)

        async def best_so_far() -> Result:  # a budget stop: the latest answered probe stands
            answered = [i for i, p in enumerate(probes) if p.key]
            return (
                Result.pick([await self.stopped(ctx, probes, answered[-1], main)], 0)
                if answered
                else Result(None)
            )

        ctx.on_stop(best_so_far)
        async with task_group() as group:
            tasks: list[asyncio.Task[None]] = []
            async with ctx.trace(ctx.request(self.sampling(logprobs=0))) as main:
                tokens = main.tokens()
                async for _ in main:
                    if stop:
                        break  # leaving the trace cancels it in the engine
                    while main.ended is None and len(tokens) >= (boundary := chunk * (len(probes) + 1)):
                        probes.append(_Probe(boundary, "".join(tokens[:boundary])))
                        tasks.append(group.create_task(probe(probes[-1])))
            for task in tasks:
                task.cancel()  # probes still decoding are of no use any more
        [trace] = main.completions
        if stop and trace.finish_reason == "cancelled":
            return Result.pick([await self.stopped(ctx, probes, stop[0], main)], 0)
        [candidate] = await ctx.candidates([trace])
        return Result.pick([self.scored(candidate, probes, trace.output_tokens, 0, len(probes))], 0)

    async def stopped(self, ctx: Context, probes: list[_Probe], j: int, main: Trace) -> Candidate:
        """The candidate of the trace stopped at probe `j`: its prefix, the suffix, the answer."""
        p, [trace] = probes[j], main.completions or [Completion(0, "", main.decoded, "cancelled")]
        text = p.prefix + SUFFIX + p.answer + "}"
        [verdict] = await ctx.verify([text])
        candidate = replace(to_candidate(text, trace, verdict), finish_reason="exit")
        scored = self.scored(candidate, probes, trace.output_tokens, p.boundary, j + 1)
        return scored.with_scores(decoded_past_exit=float(trace.output_tokens - p.boundary))

    def scored(self, c: Candidate, probes: list[_Probe], decoded: int, exit_at: int, end: int) -> Candidate:
        """`c` charged with the trace's and the probes' tokens, with the method's statistics."""
        spent = sum(x.output_tokens for p in probes if p.live is not None for x in p.live.completions)
        done = [p for p in probes[:end] if p.done]  # agreement: the final run of equal answers
        run = next((i for i, p in enumerate(reversed(done)) if not p.key or p.key != done[-1].key), len(done))
        return replace(c, output_tokens=decoded + spent).with_scores(
            probes=float(len(probes)),
            probe_tokens=float(spent),
            exit_token=float(exit_at),
            agreement=float(run),
        )
