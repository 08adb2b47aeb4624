"""Budget forcing: bound the reasoning's length at decode time, above and below.

"s1: Simple test-time scaling" (Muennighoff et al., arXiv 2501.19393), after its README's code::

    text = "" ; think = 0 ; waits = 0
    loop:                                          # one segment of thinking
        seg = decode(prompt + text, max_tokens = max_tokens - think, stop = END)
        text += seg ; think += tokens(seg)
        if seg was cut by its max_tokens: forced; break          # upper bound
        if waits < max_waits and think < max_tokens and (think < min_think or waits < extend):
            text += separator + wait ; waits += 1 ; continue        # suppress the end: "Wait"
        break                                                       # the end is accepted
    answer = greedy(prompt + text + ANSWER HEAD), at most answer_tokens, cut where its `}` closes

The thinking bound is `max_tokens` (s1's thinking budget): each segment may decode what the
segments before it left, so the thinking never exceeds it; no other knob means the same. The
thinking samples at `temperature` / `top_p` (s1 decodes greedily: ``-p temperature=0``). Each
continuation repeats the text so far byte for byte, so the prefix cache serves it.

Two modes (INFERRED where marked):

* ``think`` (reasoning models): END is the stop string ``</think>`` (the engine leaves it out
  of the text, as vLLM does). A cut trace gets ``</think>`` + `answer_cue`. An accepted end
  (``</think>``, or the end of text) gets ``</think>`` and the model writes its answer itself, as
  in s1, at most `answer_tokens` tokens (INFERRED: greedy; raise it for models that summarise).
  A push appends `wait` to the text as it is (s1's ``"Wait"``; `separator` ``""``).
* ``answer`` (instruction-tuned models, the default; INFERRED, the paper has no such mode): the
  end of the reasoning is the final answer line, so END is the stop string ``\\boxed{``. A push
  continues from the text before it + ``"\\n\\n"`` + `wait`. An accepted ``\\boxed{`` is put
  back and the answer decoded after it; a cut trace, or one the model ended (end of text)
  without a boxed answer, gets `answer_cue`. An end of text counts as an end: pushed alike.

Answers are decoded greedily and read up to the brace the head opened (`read_answer`; heads
opening none are decoded to `answer_tokens`). One trace, one candidate (n > 1 comes from
composing strategies): its text is everything (segments, pushes, head, answer),
``output_tokens`` every token decoded for it, ``finish_reason`` ``forced`` (cut at the bound)
or ``stop``, and ``scores``: ``think_tokens``, ``waits`` (pushes made), ``forced`` (1.0: cut),
``segments`` (thinking requests), ``answer_tokens`` (decoded for the answer); its prompt and
cached tokens are summed over the thinking requests. Each request is metered once by the
context; a budget stop returns the trace so far, unanswered (its fragments are no answers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Literal

from reasoning import STRATEGIES, Candidate, Context, Problem, Result, Sampling
from reasoning.errors import ConfigError
from reasoning.probes.exit import EXIT_PHRASE, read_answer
from reasoning.strategies.sampled import Sampled

__all__ = ["BudgetForcing"]

THINK_END = "</think>"
"""End-of-thinking delimiter of reasoning models (``think`` mode)."""
BOXED = "\\boxed{"
"""Opening of the final answer line (``answer`` mode's end of reasoning)."""


@STRATEGIES.register("budget-forcing", "s1", "budget_forcing")
@dataclass(frozen=True, kw_only=True)
class BudgetForcing(Sampled):
    """One trace whose thinking is cut at `max_tokens` and pushed on with "Wait" when it ends early."""

    mode: Literal["answer", "think"] = "answer"
    """``think``: the reasoning ends at ``</think>``; ``answer``: at the ``\\boxed{`` answer line."""
    min_think: int = 0
    """An end before this many thinking tokens is refused (a push), while pushes are left."""
    extend: int = 0
    """Refuse the first this many ends whatever the length (s1's "ignore end-of-thinking" count)."""
    max_waits: int = 4
    """Most pushes per trace, so a model that keeps ending cannot loop."""
    wait: str = "Wait"
    """Appended to the reasoning on each push."""
    separator: str | None = None
    """Put between the reasoning and `wait` (None: ``""`` in think mode, ``"\\n\\n"`` in answer mode)."""
    answer_cue: str = EXIT_PHRASE
    """Appended to a cut (or, in answer mode, unanswered) trace to make the model state its answer."""
    answer_tokens: int = 32
    """Most tokens of the answer."""

    def __post_init__(self) -> None:
        super().__post_init__()
        rules = {
            "mode": (self.mode in ("answer", "think"), "answer or think"),
            "min_think": (0 <= self.min_think <= self.max_tokens, f"in [0, max_tokens={self.max_tokens}]"),
            "max_waits": (self.max_waits >= 0, ">= 0"),
            "extend": (0 <= self.extend <= self.max_waits, f"in [0, max_waits={self.max_waits}]"),
            "wait": (bool(self.wait), "not empty"),
            "answer_cue": (bool(self.answer_cue), "not empty"),
            "answer_tokens": (self.answer_tokens >= 1, ">= 1"),
        }
        for name, (ok, rule) in rules.items():
            if not ok:
                raise ConfigError(f"budget-forcing: {name} must be {rule}, got {getattr(self, name)!r}")

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Think in segments, pushed on or cut as the bounds say, then answer."""
        started, at = time.monotonic(), ctx.meter.elapsed  # `at`: on the run's clock
        think_mode = self.mode == "think"
        end = THINK_END if think_mode else BOXED
        separator = self.separator if self.separator is not None else ("" if think_mode else "\n\n")
        text, think, waits, segments, forced = "", 0, 0, 0, False
        prompt_tokens = cached_tokens = 0

        def stats(answered: int) -> dict[str, float]:
            numbers = (think, waits, forced, segments, answered)
            names = ("think_tokens", "waits", "forced", "segments", "answer_tokens")
            return {name: float(value) for name, value in zip(names, numbers, strict=True)}

        async def best_so_far() -> Result:  # a budget stop: the trace so far, without an answer
            partial = Candidate(
                text,
                None,
                output_tokens=think,
                finish_reason="cancelled",
                seconds=time.monotonic() - started,
                started=at,
                scores=stats(0),
            )
            return Result(None, (partial,))

        ctx.on_stop(best_so_far)
        while True:
            sampling = replace(self.sampling(), max_tokens=self.max_tokens - think, stop=(end,))
            [segment] = await ctx.generate(ctx.request(sampling, text))
            text += segment.text
            think += segment.output_tokens
            segments += 1
            prompt_tokens += segment.prompt_tokens
            cached_tokens += segment.cached_tokens
            if segment.finish_reason == "length":
                forced = True
                break
            wanted = think < self.min_think or waits < self.extend
            if not (wanted and waits < self.max_waits and think < self.max_tokens):
                break
            text += separator + self.wait
            waits += 1
        if forced:
            head = text + (THINK_END if think_mode else "") + self.answer_cue
        elif think_mode:
            head = text + THINK_END
        else:
            head = text + (BOXED if segment.stop_string == BOXED else self.answer_cue)
        answer, answered = await self.answer(ctx, head, head[len(text) :])
        [verdict] = await ctx.verify([head + answer])
        return Result.pick(
            [
                Candidate(
                    text=head + answer,
                    answer=verdict.answer,
                    score=verdict.score,
                    output_tokens=think + answered,
                    finish_reason="forced" if forced else "stop",
                    prompt_tokens=prompt_tokens,
                    cached_tokens=cached_tokens,
                    seconds=time.monotonic() - started,
                    started=at,
                    scores=stats(answered),
                )
            ],
            0,
        )

    async def answer(self, ctx: Context, head: str, added: str) -> tuple[str, int]:
        """The greedy answer after `head` and its tokens, read up to the brace `added` opened."""
        request = ctx.request(Sampling(temperature=0.0, max_tokens=self.answer_tokens), head)
        opened = added.count("{") - added.count("}")
        if opened > 0:
            return await read_answer(ctx.stream(request), opened)
        [completion] = await ctx.generate(request)
        return completion.text, completion.output_tokens
