"""SpecReason: the draft writes each step, the target scores it and rewrites the weak ones.

"SpecReason: Fast and Accurate Inference-Time Compute via Speculative Reasoning" (Pan et al.,
arXiv 2504.07891), after its released ``spec_reason.py``::

    steps = [] ; used = 0
    loop:
        if len(steps) < first_n_target: step = target.next_step(steps)
        else:
            step = draft.next_step(steps)                     # one step: stop at a blank line
            if target.judge(steps + [step]) < threshold:      # one token, 0-9
                step = target.next_step(steps)                # rejected: the target writes it
        steps.append(step) ; used += tokens of the kept step  # rejected tokens do not count
        stop when the step states an answer ("boxed", "Answer:", "ANSWER:"), the model ends
        its text, the last two of 3+ steps are equal (repetition guard), or used >= token_budget

``next_step`` continues the run's prompt with the steps so far, each followed by ``"\\n\\n"``,
and stops at ``"\\n\\n"`` (T=0.6, top_p=0.95, at most 512 tokens; a step cut there is kept as a
step). The judge is one target call decoding one greedy token with its top-10 log-probabilities
from: the problem's messages, an assistant message holding the steps (candidate included, each
followed by ``"\\n\\n"``), the user message `STEP_JUDGE_PROMPT` (the paper's, verbatim), and the
assistant prefix `JUDGE_PREFIX` continued (both in `reasoning.verifiers.step_judge`).
`judge_score` reads the score: ``greedy`` takes the decoded digit (0 when it is no digit);
``average`` is the expected digit over the digit tokens among the top-10, their probabilities
renormalised. A step is accepted at ``score >= threshold``.

INFERRED adaptations (documented): the paper's reasoning models open their answer with
``<think>``, and its judge message and score prefix start with it; the instruction-tuned models
here have no thinking section, so both are sent without it (the paper's removal of a stray
``</think>`` from a step without an answer is kept). The prompt is the run's (its messages), not
the paper's own first message, so it compares with the other strategies on one prompt; a digit
token is read with surrounding spaces stripped; a step the model ends with its end of text ends
the trace. The answer of a trace that has none is written by the target (`Speculative`).

Each candidate's ``scores``: ``steps``, ``draft_steps`` (proposed and judged),
``draft_steps_accepted``, ``target_steps`` (written by the target: the first ``first_n_target``
and every rejected one), ``acceptance_rate``, ``mean_judge_score``, ``kept_tokens``, and the
tokens and calls of each model (`Speculative.candidate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from reasoning import STRATEGIES, Candidate, ConfigError, Context, Problem, Result
from reasoning.backend import TokenLogprob
from reasoning.strategies.speculative_steps import Speculative, Tally, ended_text
from reasoning.strategies.step_tree import step_prefix
from reasoning.verifiers.step_judge import digit_score, step_judgement

__all__ = ["SpecReason", "judge_score"]

FINISH_MARKERS = ("boxed", "Answer:", "ANSWER:")
"""A step holding one of these states the final answer: the trace ends."""
_DIGITS = tuple("0123456789")

ScoreMethod = Literal["greedy", "average"]


def judge_score(token: TokenLogprob, method: ScoreMethod) -> float:
    """The 0-9 score in the judge's one decoded token.

    Example:
        >>> token = TokenLogprob("7", -0.4, (("7", -0.4), ("8", -1.1), (" 9", -2.3), ("a", -3.0)))
        >>> judge_score(token, "greedy"), round(judge_score(token, "average"), 2)
        (7.0, 7.48)
        >>> judge_score(TokenLogprob("A", -0.1), "greedy"), judge_score(TokenLogprob("A", -0.1), "average")
        (0.0, 0.0)
    """
    if method == "greedy":
        digit = token.token.strip()
        return float(digit) if len(digit) == 1 and digit in _DIGITS else 0.0
    return digit_score(token) or 0.0


@STRATEGIES.register("spec-reason", "specreason", "spec_reason")
@dataclass(frozen=True, kw_only=True)
class SpecReason(Speculative):
    """Draft steps judged by the target, rejected ones rewritten by it."""

    label: ClassVar[str] = "spec-reason"

    threshold: float = 7.0
    """A draft step is accepted when the target's score is at least this (0-9)."""
    score_method: Literal["greedy", "average"] = "greedy"
    """``greedy``: the decoded digit; ``average``: expected digit over the top-10 digit tokens."""
    token_budget: int = 8192
    """The trace stops once its kept steps hold this many tokens (rejected ones not counted)."""
    first_n_target: int = 0
    """The first this many steps are written by the target, unjudged."""
    step_tokens: int = 512
    """Most tokens per step."""

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 9:
            raise ConfigError(f"spec-reason: threshold must be in [0, 9], got {self.threshold}")
        if self.score_method not in ("greedy", "average"):
            raise ConfigError(f"spec-reason: score_method is greedy or average, not {self.score_method!r}")
        if self.token_budget < 1 or self.step_tokens < 1 or self.first_n_target < 0:
            raise ConfigError("spec-reason: token_budget and step_tokens must be >= 1, first_n_target >= 0")
        super().__post_init__()

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Run n speculative traces concurrently, then vote."""
        return await self.vote(ctx, lambda tally: self.trace(ctx, tally))

    async def trace(self, ctx: Context, tally: Tally) -> Candidate:
        """One trace: steps proposed, judged, kept or rewritten, until it ends."""
        steps: list[str] = []
        judged: list[float] = []
        used = accepted = by_target = 0
        finish = ""
        while not finish:
            request = ctx.request(self.sampling(self.step_tokens, ("\n\n",)), step_prefix(steps))
            if len(steps) < self.first_n_target:
                step = await tally.call(ctx, request, self.target, "target")
                by_target += 1
            else:
                step = await tally.call(ctx, request, self.draft, "draft")
                judged.append(await self.judge(ctx, tally, [*steps, step.text]))
                if judged[-1] >= self.threshold:
                    accepted += 1
                else:
                    step = await tally.call(ctx, request, self.target, "target")
                    by_target += 1
            text = step.text
            if "</think>" in text and not any(m in text for m in FINISH_MARKERS):
                text = text.replace("</think>", "")
            steps.append(text)
            used += step.output_tokens
            if any(m in text for m in FINISH_MARKERS):
                finish = "answer"
            elif ended_text(step):
                finish = "end"
            elif len(steps) > 2 and steps[-1] == steps[-2]:
                finish = "repetition"
            elif used >= self.token_budget:
                finish = "token_budget"
        stats = {
            "steps": float(len(steps)),
            "draft_steps": float(len(judged)),
            "draft_steps_accepted": float(accepted),
            "target_steps": float(by_target),
            "acceptance_rate": accepted / len(judged) if judged else 0.0,
            "mean_judge_score": sum(judged) / len(judged) if judged else 0.0,
            "kept_tokens": float(used),
        }
        return await self.candidate(ctx, tally, "\n\n".join(steps), finish, stats)

    async def judge(self, ctx: Context, tally: Tally, steps: list[str]) -> float:
        """The target's 0-9 score of the last of `steps` (one decoded token, top-10 logprobs)."""
        request = step_judgement(ctx.messages, steps)
        verdict = await tally.call(ctx, request, self.target, "target")
        token = verdict.logprobs[0] if verdict.logprobs else TokenLogprob(verdict.text, 0.0)
        return judge_score(token, self.score_method)
