"""Plan-and-Budget: plan sub-questions, split a token budget over them, answer each under its share.

"Plan and Budget: Effective and Efficient Test-Time Scaling on Large Language Model Reasoning"
(Lin, Zeng, Zhu, Wang, Shun, Wu, Zhou; arXiv 2505.16122, ICLR 2026), after its released code
(github.com/junhongmit/P-and-B: ``dataset/break_down_question.py``, ``inference/_4_*``, ``_5_*``)::

    plan = model(PLAN_PROMPT(question))          # "1. <sub-question> (complexity: 3)" lines
    q, c = parse_plan(plan) or ([question], [3])
    b = split_budget(c, budget, schedule)        # b_i = min_tokens + share_i of the rest
    text = ""
    for i: text += header(i, q_i, b_i) + model(prompt, prefix=text, max_tokens=b_i)   # stepwise
    text += "Final Answer: \\boxed{" + model(prompt, prefix=text, greedy, answer_tokens)

`split_budget` is the code's ``allocate_tokens``: weight_i = (c_i / sum c) * decay(i, N), share_i
= floor(weight_i / sum weight * rest), the tokens left one each to the heaviest (ties: earliest);
decays (i from 0): ``weighted`` 1, ``linear`` N - i, ``polynomial`` (N - i)^power, ``cosine``
(1 + cos(pi i / (N - 1))) / 2 + 0.1, ``exponential`` base^i; ``uniform`` is rest // N each,
complexities ignored (``_4_planned_local_uniform_model``). Its sampling is the code's (T=0.1,
top_p=0.9); its 2 to 5 sub-questions are kept (`max_subquestions`); the default schedule is its
README's example run (polynomial).

INFERRED (documented, exposed as options): the code plans in two calls (decompose, then rate each
sub-question's credit out of 100); here one call lists each with a 1-5 complexity (`PLAN_PROMPT`,
on the bare question; a missing score counts 3); a plan with no numbered line falls back to the
question itself (``plan_parsed`` 0). The code's total comes from the problem's rated level
(200-600 by level 1-5); here it is the fixed `budget`. The code then solves in ONE call, each
budget stated in the prompt only ("using up to {b} words"): ``mode="prompted"`` does that, in
tokens (the user message gains the sub-questions, the one call capped at `budget`, the answer
forced only when the text states none). The default ``mode="stepwise"`` enforces each budget: it
continues one growing assistant text (prefix-cache friendly), a header per sub-question (``Step i
(at most b tokens): q`` then ``Answer:``, so that the model answers rather than writing the next
header), ``max_tokens=b_i``, stopped at ``"\\nStep "``; the answer is always asked after the last
step (an earlier box may hold a sub-result). Every share starts at
`min_tokens` (the code has no floor). On a budget stop the result is no answer: a partial trace
is no solution.

Scores: ``subquestions``, ``plan_parsed``, ``plan_tokens``, ``complexity_i``, ``budget_i``,
``used_i`` (stepwise), ``capped`` (sub-answers cut at their budget), ``forced_answer``.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Literal

from reasoning import (
    STRATEGIES,
    Candidate,
    Completion,
    ConfigError,
    Context,
    Message,
    Problem,
    Request,
    Result,
    Sampling,
)
from reasoning.strategies.step_tree import ANSWER_PHRASE, FORCED_ANSWER_TOKENS, is_final_step

__all__ = ["PLAN_PROMPT", "PlanAndBudget", "parse_plan", "split_budget"]

Schedule = Literal["uniform", "weighted", "linear", "polynomial", "cosine", "exponential"]
SCHEDULES = ("uniform", "weighted", "linear", "polynomial", "cosine", "exponential")
PLAN_PROMPT = (
    "Break the following problem into 2 to 5 simple, high-level sub-questions that lead step by step "
    'to its solution. Do not solve them. Write each sub-question on its own numbered line ("1.", '
    '"2.", ...) and end the line with its complexity from 1 (easy) to 5 (hard), written as '
    '"(complexity: k)".\n\nProblem: {question}'
)
DEFAULT_COMPLEXITY = 3.0
_ITEM = re.compile(
    r"^\s*(?:[-*]\s+)?(?:\*\*)?\s*(?:step|sub-?question)?\s*\d{1,2}\s*[.):]\s*(?:\*\*)?\s*(.*)$", re.I
)
_SCORE = re.compile(
    r"[(\[]?\s*(?:complexity|difficulty)\s*[:=]?\s*(\d+(?:\.\d+)?)\s*(?:/\s*5)?\s*[)\]]?", re.I
)


def parse_plan(text: str, limit: int = 5) -> list[tuple[str, float]]:
    """The numbered sub-questions of a plan with their complexities (1-5; missing: 3), at most `limit`.

    Example:
        >>> parse_plan("Plan:\\n1. Find x (complexity: 4)\\n**2)** Add y [Difficulty=9]\\n3. Done")
        [('Find x', 4.0), ('Add y', 5.0), ('Done', 3.0)]
        >>> parse_plan("1. Find x\\n   Complexity: 2/5\\nHint: easy"), parse_plan("no list")
        ([('Find x', 2.0)], [])
    """
    questions: list[str] = []
    scores: list[float | None] = []
    for line in text.splitlines():
        item, score = _ITEM.match(line), _SCORE.search(line)
        if item:
            question = _SCORE.sub("", item.group(1)).strip(" *-–,;:")
            if question and not re.fullmatch(r"<[^>]*>", question):  # not a copied placeholder
                questions.append(question)
                scores.append(float(score.group(1)) if score else None)
        elif scores and score and scores[-1] is None:
            scores[-1] = float(score.group(1))
    found = zip(questions[:limit], scores, strict=False)
    return [(q, min(max(DEFAULT_COMPLEXITY if c is None else c, 1.0), 5.0)) for q, c in found]


def split_budget(
    complexities: list[float],
    budget: int,
    schedule: Schedule,
    min_tokens: int = 0,
    power: float = 2.0,
    base: float = 0.9,
) -> list[int]:
    """Integer budgets, each at least `min_tokens`, summing to at most `budget` (module docstring).

    Example:
        >>> [split_budget([3, 1, 2], 100, s, 16) for s in ("uniform", "weighted", "linear", "polynomial")]
        [[33, 33, 33], [43, 24, 33], [52, 24, 24], [59, 22, 19]]
    """
    n, rest = len(complexities), budget - len(complexities) * min_tokens
    if n == 0 or rest < 0:
        raise ConfigError(
            f"plan-and-budget: budget {budget} cannot give {n} sub-questions {min_tokens} tokens"
        )
    if schedule == "uniform":
        return [min_tokens + rest // n] * n

    def decay(i: int) -> float:
        if schedule == "linear":
            return float(n - i)
        if schedule == "polynomial":
            return math.pow(n - i, power)
        if schedule == "cosine":
            return (1 + math.cos(math.pi * i / (n - 1))) / 2 + 0.1 if n > 1 else 1.0
        return math.pow(base, i) if schedule == "exponential" else 1.0

    weights = [c * decay(i) for i, c in enumerate(complexities)]  # the credits' sum cancels out
    shares = [math.floor(w * rest / sum(weights) + 1e-9) for w in weights]
    for i in sorted(range(n), key=lambda i: -weights[i])[: max(rest - sum(shares), 0)]:
        shares[i] += 1
    return [min_tokens + s for s in shares]


@STRATEGIES.register("plan-and-budget", "plan_and_budget", "pab")
@dataclass(frozen=True, kw_only=True)
class PlanAndBudget:
    """Plan sub-questions with complexities, then answer each under its share of `budget`."""

    budget: int = 256
    """Tokens for the sub-answers, split over the sub-questions (plan and final answer apart)."""
    schedule: Schedule = "polynomial"
    """uniform, weighted (by complexity), or complexity x decay: linear, polynomial, cosine, exponential."""
    mode: Literal["stepwise", "prompted"] = "stepwise"
    """stepwise: each sub-answer capped at its budget; prompted: one call, budgets stated (the code's)."""
    plan_tokens: int = 128
    """Most tokens of the plan."""
    answer_tokens: int = FORCED_ANSWER_TOKENS
    """Most tokens of the final answer after ``Final Answer: \\boxed{`` (0: none asked)."""
    min_tokens: int = 16
    """Floor of every sub-question's budget."""
    max_subquestions: int = 5
    """Sub-questions kept from the plan (the code asks for 2 to 5)."""
    power: float = 2.0
    """Exponent of the polynomial decay."""
    base: float = 0.9
    """Base of the exponential decay."""
    temperature: float = 0.1
    """Sampling temperature of the plan and the sub-answers."""
    top_p: float = 0.9
    """Nucleus mass of the plan and the sub-answers."""

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"plan-and-budget: schedule is one of {', '.join(SCHEDULES)}, not {self.schedule!r}"
            )
        if self.mode not in ("stepwise", "prompted"):
            raise ConfigError(f"plan-and-budget: mode is stepwise or prompted, not {self.mode!r}")
        if min(self.plan_tokens, self.min_tokens, self.max_subquestions) < 1 or self.answer_tokens < 0:
            raise ConfigError(
                "plan-and-budget: plan_tokens, min_tokens, max_subquestions >= 1, answer_tokens >= 0"
            )
        if self.budget < self.max_subquestions * self.min_tokens:
            raise ConfigError(
                f"plan-and-budget: budget must be >= max_subquestions * min_tokens = "
                f"{self.max_subquestions * self.min_tokens}, got {self.budget}"
            )
        if self.power <= 0 or not 0 < self.base <= 1:
            raise ConfigError(
                f"plan-and-budget: power must be > 0 and base in (0, 1], got {self.power}, {self.base}"
            )
        self.sampling(1)

    def sampling(self, max_tokens: int, stop: tuple[str, ...] = ()) -> Sampling:
        """The sampling of the plan and of the sub-answers."""
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=max_tokens, stop=stop)

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Plan, split the budget, answer the sub-questions, then the final answer."""
        started, at, spent = time.monotonic(), ctx.meter.elapsed, list[Completion]()  # at: the run's clock

        async def call(request: Request) -> Completion:
            [completion] = await ctx.generate(request)
            spent.append(completion)
            return completion

        async def no_answer() -> Result:  # a budget stop: a partial trace is no solution
            return Result(answer=None)

        ctx.on_stop(no_answer)
        plan = await call(
            Request(
                (Message("user", PLAN_PROMPT.format(question=problem.question)),),
                self.sampling(self.plan_tokens),
            )
        )
        parsed = parse_plan(plan.text, self.max_subquestions)
        steps = parsed or [(problem.question, DEFAULT_COMPLEXITY)]
        budgets = split_budget(
            [c for _, c in steps], self.budget, self.schedule, self.min_tokens, self.power, self.base
        )
        scores = {
            "subquestions": float(len(steps)),
            "plan_parsed": float(bool(parsed)),
            "plan_tokens": float(plan.output_tokens),
        }
        for i, ((_, c), b) in enumerate(zip(steps, budgets, strict=True), 1):
            scores |= {f"complexity_{i}": c, f"budget_{i}": float(b)}
        text, last, capped, messages = "", plan, 0, ctx.messages
        if self.mode == "stepwise":
            for i, ((question, _), b) in enumerate(zip(steps, budgets, strict=True), 1):
                head = f"{text}Step {i} (at most {b} tokens): {question}\nAnswer: "
                last = await call(ctx.request(self.sampling(b, ("\nStep ",)), head))
                text, capped = f"{head}{last.text}\n\n", capped + (last.finish_reason == "length")
                scores[f"used_{i}"] = float(last.output_tokens)
            text = text.removesuffix("\n\n")
        else:
            hints = "\n".join(
                f"{i}. {q} Please only think a little, and directly solve it using up to {b} tokens."
                for i, ((q, _), b) in enumerate(zip(steps, budgets, strict=True), 1)
            )
            *before, user = ctx.messages
            note = "You may think following these sub-questions, or use any method that works best:"
            messages = (*before, Message(user.role, f"{user.content}\n\n{note}\n{hints}"))
            last = await call(Request(messages, self.sampling(self.budget)))
            text, capped = last.text, int(last.finish_reason == "length")
        forced = self.answer_tokens > 0 and (self.mode == "stepwise" or not is_final_step(text))
        if forced:
            head = text + ANSWER_PHRASE
            request = ctx.request(Sampling(temperature=0.0, max_tokens=self.answer_tokens), head)
            last = await call(
                request if self.mode == "stepwise" else Request(messages, request.sampling, head)
            )
            text = head + last.text
        [verdict] = await ctx.verify([text])
        scores |= {"capped": float(capped), "forced_answer": float(forced)}
        candidate = Candidate(
            text=text,
            answer=verdict.answer,
            score=verdict.score,
            output_tokens=sum(c.output_tokens for c in spent),
            finish_reason=last.finish_reason,
            prompt_tokens=sum(c.prompt_tokens for c in spent),
            cached_tokens=sum(c.cached_tokens for c in spent),
            seconds=time.monotonic() - started,
            started=at,
            scores=scores,
        )
        return Result.pick([candidate], 0)
