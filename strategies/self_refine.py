"""Self-Refine (Madaan et al., "Self-Refine: Iterative Refinement with Self-Feedback", arXiv 2303.17651).

One model writes a solution, reviews it, and rewrites it using its own review::

    y = generate(question)
    for t in 1..rounds:
        feedback = generate(question, y, "review it; end with VERDICT: CORRECT or VERDICT: INCORRECT")
        if feedback's verdict is CORRECT: break
        y = generate(question, y, review request, feedback, "rewrite it using the review")
    answer = y, the last solution

Our choices (INFERRED), each an option:

* The review is a multi-turn prompt: the problem's messages, the solution as the assistant turn,
  then ``feedback_prompt`` as a user turn asking for a review that ends with a fixed verdict line
  (``verdict`` followed by CORRECT or INCORRECT). The refinement continues that conversation with
  the review as the assistant turn and ``refine_prompt``, so the refinement's prompt starts with the
  review's, byte for byte (prefix cache).
* ``history`` (default, as in the paper): the conversation keeps growing, every review and rewrite
  seeing all earlier solutions and reviews; off, each review sees only the problem and the latest
  solution.
* The verdict is the first word after the LAST ``verdict`` marker (case and ``*`` ignored); a review
  without one (e.g. cut by ``feedback_tokens``) counts as INCORRECT.
* Reviews are kept as candidates without an answer (scores ``round``, ``feedback``, ``verdict``);
  solutions carry ``round`` (0: the first) and, once reviewed, ``verdict`` (1 correct, 0 not). On a
  budget stop the latest solution is the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from reasoning import STRATEGIES, Candidate, Context, Message, Problem, Request, Result
from reasoning.errors import ConfigError
from reasoning.strategies.sampled import Sampled
from reasoning.strategy import to_candidate
from reasoning.verifier import Verdict

__all__ = ["FEEDBACK_PROMPT", "REFINE_PROMPT", "SelfRefine", "verdict_of"]

FEEDBACK_PROMPT = (
    "Review your solution above step by step: check every calculation and every reasoning step, and "
    "say exactly what is wrong, if anything. End with one line: {verdict} CORRECT if the solution and "
    "its final answer are right, or {verdict} INCORRECT if they are not."
)
REFINE_PROMPT = (
    "Using your review, write an improved, complete solution to the problem, with the final answer "
    "as asked in the problem."
)


def verdict_of(feedback: str, marker: str = "VERDICT:") -> bool:
    """Whether a review ends with the CORRECT verdict: the first word after the last `marker`.

    Example:
        >>> verdict_of("x is wrong.\\nVERDICT: INCORRECT"), verdict_of("**Verdict: Correct**")
        (False, True)
    """
    at = feedback.upper().rfind(marker.upper())
    if at < 0:
        return False
    word = re.match(r"[\s*_]*([A-Za-z]+)", feedback[at + len(marker) :])
    return word is not None and word.group(1).upper() == "CORRECT"


@STRATEGIES.register("self-refine", "self_refine")
@dataclass(frozen=True, kw_only=True)
class SelfRefine(Sampled):
    """Generate, then review and rewrite until the model's own review says CORRECT."""

    rounds: int = 3
    """Most review-and-rewrite rounds."""
    feedback_tokens: int = 256
    """Most tokens of a review."""
    verdict: str = "VERDICT:"
    """The marker of a review's verdict line (followed by CORRECT or INCORRECT)."""
    history: bool = True
    """Reviews and rewrites see every earlier solution and review (off: only the latest solution)."""
    feedback_prompt: str = FEEDBACK_PROMPT
    """The review request; ``{verdict}`` is replaced by the marker."""
    refine_prompt: str = REFINE_PROMPT
    """The rewrite request, after the review."""

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.feedback_tokens < 1:
            raise ConfigError("self-refine: rounds and feedback_tokens must be >= 1")
        if not self.verdict.strip() or "{verdict}" not in self.feedback_prompt:
            raise ConfigError("self-refine: verdict must be a marker and feedback_prompt must hold {verdict}")
        super().__post_init__()

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """A solution, then rounds of review and rewrite until a review says CORRECT."""
        candidates: list[Candidate] = []
        latest = 0

        async def best_so_far() -> Result:  # a budget stop: the latest solution
            return Result.pick(candidates, latest if candidates else None)

        ctx.on_stop(best_so_far)
        review = self.feedback_prompt.replace("{verdict}", self.verdict)
        feedback = replace(self.sampling(), max_tokens=self.feedback_tokens)
        conversation = ctx.messages
        [solution] = await ctx.generate(ctx.request(self.sampling()))
        [candidate] = await ctx.candidates([solution])
        candidates.append(candidate.with_scores(round=0.0))
        for t in range(1, self.rounds + 1):
            base = conversation if self.history else ctx.messages
            asked = (*base, Message("assistant", solution.text), Message("user", review))
            [said] = await ctx.generate(Request(asked, feedback))
            correct = float(verdict_of(said.text, self.verdict))
            candidates[latest] = candidates[latest].with_scores(verdict=correct)
            reviewed = to_candidate(said.text, said, Verdict(None))
            candidates.append(reviewed.with_scores(round=float(t), feedback=1.0, verdict=correct))
            if correct:
                break
            conversation = (*asked, Message("assistant", said.text), Message("user", self.refine_prompt))
            [solution] = await ctx.generate(Request(conversation, self.sampling()))
            [candidate] = await ctx.candidates([solution])
            latest = len(candidates)
            candidates.append(candidate.with_scores(round=float(t)))
        return Result.pick(candidates, latest)
