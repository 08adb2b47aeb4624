"""GenRM: the model verifies its own solutions, V times each; the best-verified answer wins.

Singhi et al., "When To Solve, When To Verify: Compute-Optimal Problem Solving and Generative
Verification for LLM Reasoning" (arXiv 2504.01005)::

    solutions = generate(question, n=S)                  # one request: the engine batches them
    for each solution s_i with an answer, V times:       # all S*V requests at once
        v_ij = generate(VERIFY_PROMPT(question, s_i))    # step by step, ending "...(Yes/No)? X"
    score(s_i) = mean_j P(Yes | v_ij)                    # the verdict token's P(Yes)
    best: answer(argmax_i score(s_i))    vote: argmax_a sum of score(s_i) over answer(s_i) = a

A problem costs S (1 + lambda V) solutions' worth of tokens (lambda: a verification's length over a
solution's); at a fixed cost the paper finds self-consistency ahead for most practical budgets, and
the best split growing S 1.5-2x faster than V. Every verification prompt starts with the same
instruction and question, byte for byte, and the V prompts of a solution are identical, so the
prefix cache serves them. Temperature 0.7 and top_p 0.95 for both: the paper's code (top_k unset).

Our choices (INFERRED):

* The verdict is the Yes/No right after the last "Is the answer correct (Yes/No)?" (case, ``*``,
  ``:`` ignored); its P(Yes) is P(Yes) / (P(Yes) + P(No)) over that token's top-20 alternatives
  (`yes_probability`, as the judge; the paper's code reads P(Yes) alone). Without log-probabilities
  (or a verdict that is not a token of its own): 1 for Yes, 0 for No, the fraction of Yes verdicts.
* No verdict (malformed, cut by ``verify_max_tokens``, cancelled) is unknown: left out of the mean,
  never read as Yes. A solution with no known verdict has no score (``best`` ranks it last, ``vote``
  weighs it 0); with no score at all (a budget stop before any verdict too) the solutions vote.
* A solution without an answer is not verified (the paper scores it 0): no tokens spent on it.
* S=4, V=2 by default (the paper sweeps both); 512 tokens each (the paper verifies in 1024).
* Verifications are candidates without an answer (scores ``solution``, ``p_yes``); solutions carry
  ``genrm`` (the score) and ``verdicts``. A budget stop selects over the verdicts that finished.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from reasoning import STRATEGIES, Candidate, Completion, Context, Message, Problem, Request, Result, Sampling
from reasoning.backend import TokenLogprob
from reasoning.errors import ConfigError
from reasoning.selection import argmax
from reasoning.strategies.sampled import Sampled
from reasoning.strategy import to_candidate
from reasoning.verifier import Verdict
from reasoning.verifiers.judge import yes_probability

__all__ = ["VERIFY_PROMPT", "GenRM", "p_yes"]

VERIFY_PROMPT = (
    "Verify the proposed solution to the question below. Go through it step by step, checking each "
    "calculation and each reasoning step, and decide whether its final answer is correct. Finish "
    "with the line 'Is the answer correct (Yes/No)? X', where X is either Yes or No.\n\n"
    "Question:\n{question}\n\nProposed solution:\n{solution}"
)
"""The verification prompt (a user message): instruction and question first, the shared prefix."""

VERDICT = re.compile(r"is the answer correct\s*(?:\(yes/no\))?\s*\?(?:[\s*:]*\b(yes|no)\b)?", re.IGNORECASE)
"""The verdict line; the last one counts, and without Yes or No after it the verdict is unknown."""


def p_yes(verification: Completion) -> float | None:
    """P(Yes) of a verification's verdict; None when it has none (unknown, never Yes).

    Example:
        >>> from reasoning import Completion
        >>> [p_yes(Completion(0, t, 9, "stop")) for t in ("Is the answer correct (Yes/No)? **No**", "Yes")]
        [0.0, None]
    """
    last = [*VERDICT.finditer(verification.text)][-1:]
    if not last or last[0].group(1) is None:
        return None
    start, word = last[0].start(1), last[0].group(1).lower()
    token = _token_at(verification.text, verification.logprobs or (), start)
    if token is not None and token.token.strip().lower() == word:
        return yes_probability(token)
    return 1.0 if word == "yes" else 0.0


def _token_at(text: str, tokens: Sequence[TokenLogprob], at: int) -> TokenLogprob | None:
    """The token holding character `at` of `text`, aligned from the end (the verdict is near it)."""
    end = len(text)
    for token in reversed(tokens):
        if not text.endswith(token.token, 0, end):
            if end == len(text):
                continue  # a special token after the text (end of sequence)
            return None  # the tokens no longer spell the text
        begin = end - len(token.token)
        if begin <= at < end:
            return token
        end = begin
    return None


@STRATEGIES.register("genrm", "gen-rm", "generative-verification")
@dataclass(frozen=True, kw_only=True)
class GenRM(Sampled):
    """S solutions, V verifications of each by the model; the best mean P(Yes) wins (or its sum)."""

    solutions: int = 4
    """Solutions sampled in one request (S)."""
    verifications: int = 2
    """Verification chains per solution (V); all S*V are requested at once."""
    select: Literal["best", "vote"] = "best"
    """best: the solution with the highest score; vote: the answer with the highest sum of scores."""
    verify_temperature: float = 0.7
    """Sampling temperature of the verifications."""
    verify_max_tokens: int = 512
    """Most tokens per verification."""
    verify_backend: str | None = None
    """Named backend that verifies (e.g. a fine-tuned GenRM); default: the run's."""
    temperature: float = 0.7
    """Sampling temperature of the solutions."""

    def __post_init__(self) -> None:
        if self.solutions < 1 or self.verifications < 1:
            raise ConfigError(
                f"genrm: need solutions, verifications >= 1; got {self.solutions}, {self.verifications}"
            )
        self.verify_sampling()
        super().__post_init__()

    def verify_sampling(self) -> Sampling:
        """One verification: sampled, with the top-20 log-probabilities its verdict is read from."""
        return Sampling(
            temperature=self.verify_temperature,
            top_p=self.top_p,
            max_tokens=self.verify_max_tokens,
            logprobs=20,
        )

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Solve S times at once, verify each answered solution V times at once, select."""
        solutions = await ctx.candidates(await ctx.generate(ctx.request(self.sampling(self.solutions))))
        checks: dict[int, tuple[int, Completion]] = {}  # by request number: (solution, verification)

        async def verify(number: int, i: int, request: Request) -> None:
            [verification] = await ctx.generate(request, self.verify_backend)
            checks[number] = (i, verification)

        async def best_so_far() -> Result:  # a budget stop: the verifications that finished
            return self.selected(solutions, checks)

        ctx.on_stop(best_so_far)
        prompts = [VERIFY_PROMPT.format(question=problem.question, solution=s.text) for s in solutions]
        answered = [i for i, s in enumerate(solutions) if s.answer is not None]
        requests = [(i, Request((Message("user", prompts[i]),), self.verify_sampling())) for i in answered]
        await ctx.run_all(*(verify(k, *r) for k, r in enumerate(requests * self.verifications)))
        return self.selected(solutions, checks)

    def selected(self, solutions: Sequence[Candidate], checks: dict[int, tuple[int, Completion]]) -> Result:
        """Score each solution by the mean P(Yes) of its known verdicts, and select by `select`."""
        known: list[list[float]] = [[] for _ in solutions]
        records = []
        for i, check in (checks[k] for k in sorted(checks)):
            p = p_yes(check)
            known[i].extend([] if p is None else [p])
            extra = {} if p is None else {"p_yes": p}
            records.append(
                to_candidate(check.text, check, Verdict(None)).with_scores(solution=float(i), **extra)
            )
        scores = [sum(k) / len(k) if k else None for k in known]
        scored = [
            s if x is None else s.with_scores(genrm=x, verdicts=float(len(k)))
            for s, x, k in zip(solutions, scores, known, strict=True)
        ]
        candidates = [*scored, *records]  # verifications have no answer: they never vote
        if all(x is None for x in scores):  # nothing verified: the solutions' vote
            return Result.vote(candidates)
        if self.select == "vote":
            return Result.vote(candidates, weights=[x or 0.0 for x in scores] + [0.0] * len(records))
        return Result.pick(candidates, argmax(scores))
