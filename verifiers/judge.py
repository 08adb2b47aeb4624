"""The model judges its own answer: P(Yes) read from the first token's top log-probabilities.

For each candidate the model sees the question and the candidate solution and is asked whether
the final answer is correct; one greedy token with its top-20 log-probabilities is decoded and
the score is P(Yes) / (P(Yes) + P(No)), summing every top token that reads "yes" / "no" after
stripping spaces and case. When neither appears among the top tokens the judgement is
uninformative and the score is 0.5 (INFERRED choice, documented). All candidates are judged in
one concurrent batch, so the engine prefills and decodes them together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from reasoning import Context, Message, Request, Sampling, TokenLogprob

__all__ = ["JUDGE_PROMPT", "judge_scores", "yes_probability"]

JUDGE_PROMPT = (
    "Question:\n{question}\n\nProposed solution:\n{solution}\n\n"
    "Is the final answer of the proposed solution correct? Answer with Yes or No only."
)
"""The judging prompt (a user message)."""


def yes_probability(token: TokenLogprob) -> float:
    """P(Yes) / (P(Yes) + P(No)) over the top alternatives of one token; 0.5 if neither is there."""
    yes = no = 0.0
    for text, logprob in token.top or ((token.token, token.logprob),):
        word = text.strip().lower()
        if word == "yes":
            yes += math.exp(logprob)
        elif word == "no":
            no += math.exp(logprob)
    return yes / (yes + no) if yes + no > 0 else 0.5


async def judge_scores(ctx: Context, texts: Sequence[str], backend: str | None = None) -> list[float]:
    """Score each candidate text by the model's own judgement (one batched round of requests)."""
    sampling = Sampling(temperature=0.0, max_tokens=1, logprobs=20)
    requests = [
        Request(
            (Message("user", JUDGE_PROMPT.format(question=ctx.problem.question, solution=text)),), sampling
        )
        for text in texts
    ]
    results = await ctx.generate_all(requests, backend)
    return [yes_probability(r[0].logprobs[0]) if r[0].logprobs else 0.5 for r in results]
