"""A model grades one reasoning step 0-9, read from one decoded token's top log-probabilities.

The judgement of SpecReason (Pan et al., arXiv 2504.07891; ALGORITHMS.md section 6.1), used by
SpecReason itself, by the Arbitrage router's labels and by its RSD baseline (arXiv 2512.05033;
sections 6.3, 6.4):

    messages = problem prompt, assistant: steps so far + the candidate step (each followed by
               the delimiter), user: STEP_JUDGE_PROMPT; assistant prefix: JUDGE_PREFIX (continued)
    decode 1 greedy token with its top-10 log-probabilities
    score = expected digit: sum d * p(d) over the digit tokens among the top 10, renormalised
            (SpecReason's "average" method; None when no digit is among them)

The prompt is SpecReason's judge prompt, verbatim (prompts are data). The prefix is SpecReason's
without ``<think>``: the models here are instruction-tuned, with no thinking segment. All paths
go out at once, so the engine batches them and its prefix cache serves the shared prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from reasoning import Context, Message, Request, Sampling, TokenLogprob

__all__ = [
    "JUDGE_PREFIX",
    "STEP_JUDGE_PROMPT",
    "TOP_LOGPROBS",
    "digit_score",
    "judge_steps",
    "step_judgement",
]

STEP_JUDGE_PROMPT = (
    "Evaluate the last reasoning step solely based on factual correctness and logical validity. "
    "Ignore style, phrasing, or overall usefulness\u2014only judge whether the step is objectively "
    "correct and logically follows from prior steps. Assign a score from 0 to 9."
)
"""SpecReason's judge prompt (a user message after the partial solution)."""

JUDGE_PREFIX = "I think the quality score is: "
"""The judge's answer starts here; the next token is the score."""

TOP_LOGPROBS = 10
"""Alternatives read at the score token (SpecReason: 10)."""


def digit_score(token: TokenLogprob) -> float | None:
    """Expected digit over the digit tokens among the top alternatives (renormalised); None if none.

    Example:
        >>> top = (("7", math.log(0.6)), (" 8", math.log(0.2)), ("x", -1.0))
        >>> round(digit_score(TokenLogprob("7", math.log(0.6), top)), 6)
        7.25
        >>> digit_score(TokenLogprob("x", -0.1, (("x", -0.1),))) is None
        True
    """
    mass = weighted = 0.0
    for text, logprob in token.top or ((token.token, token.logprob),):
        word = text.strip()
        if len(word) == 1 and word in "0123456789":
            p = math.exp(logprob)
            mass += p
            weighted += int(word) * p
    return weighted / mass if mass > 0 else None


def step_judgement(messages: Sequence[Message], steps: Sequence[str], delimiter: str = "\n\n") -> Request:
    """The judge's request for the newest of `steps`, given the problem's prompt `messages`."""
    conversation = (  # the partial solution as SpecReason sends it: each step ends with the delimiter
        *messages,
        Message("assistant", "".join(step + delimiter for step in steps)),
        Message("user", STEP_JUDGE_PROMPT),
    )
    return Request(conversation, Sampling(temperature=0.0, max_tokens=1, logprobs=TOP_LOGPROBS), JUDGE_PREFIX)


async def judge_steps(
    ctx: Context, paths: Sequence[Sequence[str]], backend: str | None = None, delimiter: str = "\n\n"
) -> list[float | None]:
    """Score (0-9) of each path's newest step by the model of `backend`, all paths at once."""
    requests = [step_judgement(ctx.messages, path, delimiter) for path in paths]
    results = await ctx.generate_all(requests, backend)
    return [digit_score(r[0].logprobs[0]) if r[0].logprobs else None for r in results]
