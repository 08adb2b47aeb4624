"""Solve-Detect-Verify: verify where the solver completes a solution; feed a rejection back.

Zhong, Li et al., "Solve-Detect-Verify: Inference-Time Scaling with Flexible Generative
Verifier" (FlexiVe; arXiv 2505.11966)::

    for attempt in 1..attempts:                            # the paper: one refined solution
        stream the solver's trace; it decodes on while a completion point is checked
        at a cue c (a cue word starts, a \\boxed{} closes) whose trace[:c] writes an answer:
            Detect: P(Yes | prompt + trace[:c] + DETECT) >= detect       # one token, prefix cached
            Verify (FlexiVe's flexible budget) trace[:c]:
                k fast checks at once (FAST: verdict first, a sentence at most)
                if the share of the k on the majority verdict >= consensus: it decides
                else the slow chain(s) (SLOW: step by step, verdict last): mean P(Yes) >= 0.5
            accept: cancel the trace, answer trace[:c]
            reject: cancel the trace; the next attempt continues the conversation with
                    (assistant: trace[:c]), (user: FEEDBACK(the rejecting check's text))
        the trace's end is a completion point too (verified without Detect)
    answer: the last attempt's (no answer there: the latest answered, unrejected first)

On instruct models (this framework's embedded ones) the paper's long-CoT solver is replaced
as it is: its traces rarely hesitate, so the answer cue (a closed box) does most detecting and
little is cut off past it; FlexiVe (an RL-trained verifier with a no-thinking fast mode) is
the same model asked two ways. ``verify_backend`` names another backend to verify with.

Our choices (INFERRED):

* Cues: ``wait``, ``hmm``, ``alternatively`` (whole words, any case; the cut is before the
  word) and a closed ``\\boxed{}`` (the cut after it); only a cut whose text writes an answer
  in full (`written_answer`) is probed. One check at a time: cues passed while one runs are
  skipped; an answer already verified in an attempt is not verified again there.
* Detect asks ``DETECT`` in the assistant turn: P(Yes) / (P(Yes) + P(No)) over one greedy
  token's top 20 (`p_no`); neither there: not complete. The paper pauses the solver; here it
  decodes on (the tokens decoded past a stop are charged), as Dynasor's probes.
* Verdicts are Yes/No lines read by GenRM's `p_yes` (the paper's FlexiVe names the first wrong
  step); a fast check votes Yes at P(Yes) >= 0.5, none on a malformed verdict. k=4,
  consensus 0.75, 64 fast tokens, one slow chain of 512 tokens, T=0.7 for both.
* Slow chains with no verdict at all leave the check undecided: the trace decodes on, and an
  attempt that ends undecided is the answer. A rejection on the last attempt cannot be fed
  back: its trace decodes on. The fast and slow prompts share the question and solution prefix.
* Candidates, in production order: Detect probes (``detect``: the cut, ``p_complete``), fast
  and slow checks (``fast`` / ``slow``: their check's number, ``p_yes``), each with ``attempt``;
  solver attempts (``attempt``, ``checks``, ``verified`` 1/0 when checked, ``exit_token``),
  ending ``exit`` (accepted), ``rejected`` or as the trace did. A budget stop answers like the end.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated

from pydantic import BeforeValidator

from reasoning import STRATEGIES, Candidate, Completion, Context, Message, Problem, Request, Result, Sampling
from reasoning.answers import normalize_answer, written_answer
from reasoning.concurrency import task_group
from reasoning.errors import ConfigError
from reasoning.strategies.dynasor import boxed_answer
from reasoning.strategies.genrm import p_yes
from reasoning.strategies.sampled import Sampled
from reasoning.strategies.self_eval import p_no
from reasoning.strategy import to_candidate
from reasoning.trace import Trace
from reasoning.verifier import Verdict

__all__ = ["DETECT", "FAST", "FEEDBACK", "SLOW", "SolveDetectVerify", "completion_points"]

DETECT = '\n\nHave I finished solving the problem? ("Yes." or "No.")\n'
"""The completion probe, appended to the trace so far in the assistant turn."""
_HEAD = "Question:\n{question}\n\nProposed solution:\n{solution}\n\n"
FAST = _HEAD + (
    "Is the final answer of the proposed solution correct? Reply at once: first the line 'Is the "
    "answer correct (Yes/No)? X', where X is Yes or No; if No, then one sentence on the first wrong step."
)
"""A fast check (a user message): verdict first."""
SLOW = _HEAD + (
    "Verify the proposed solution step by step, checking each calculation and each reasoning step, "
    "and name the first wrong step, if any, and why. Finish with the line 'Is the answer correct "
    "(Yes/No)? X', where X is either Yes or No."
)
"""A slow verification chain (a user message): verdict last."""
FEEDBACK = (
    "A verifier checked your solution and found a problem:\n\n{finding}\n\n"
    "Solve the problem again, fixing it. Put the final answer in \\boxed{{}}."
)
"""The next attempt's user message after a rejection."""


def completion_points(text: str, cues: Sequence[str]) -> list[int]:
    """Cuts where `text` may hold a whole solution: before each cue word, after each closed box.

    Example:
        >>> completion_points("x is \\\\boxed{4}. Wait, no", ("wait",))
        [14, 16]
    """
    words = "|".join(map(re.escape, cues))
    cuts = [m.start() for m in re.finditer(rf"\b(?:{words})\b(?=\W)", text, re.IGNORECASE)] if words else []
    for box in re.finditer(r"\\boxed\{", text):
        end = box.end() + len(boxed_answer(text[box.end() :]))
        cuts += [end + 1] if text[end : end + 1] == "}" else []
    return sorted(cuts)


def _words(value: object) -> object:
    """Accept ``"wait,hmm"`` (from the command line) as well as a sequence of words."""
    return tuple(w.strip() for w in value.split(",") if w.strip()) if isinstance(value, str) else value


def _key(text: str) -> str | None:
    """The normalised answer `text` writes in full (None: none)."""
    answer = written_answer(text)
    return None if answer is None else normalize_answer(answer)


@dataclass
class _Attempt:
    number: int
    request: Request
    text: str = ""
    seen: int = -1  # the latest cut seen
    checks: int = 0
    verdicts: dict[str, bool | None] = field(default_factory=dict)  # by answer: its verification's
    decision: tuple[int, bool, str] | None = None  # (cut, accepted, finding): the attempt stops there
    exit_token: int = 0  # tokens decoded when the deciding completion point was seen
    live: Trace | None = None
    recorded: bool = False


@dataclass
class _Run:
    ctx: Context
    records: list[Candidate] = field(default_factory=list)
    attempts: list[_Attempt] = field(default_factory=list)

    def record(self, check: Completion, **scores: float | None) -> None:
        """A probe's or a check's candidate: no answer, its known scores."""
        known = {k: float(v) for k, v in scores.items() if v is not None}
        self.records.append(to_candidate(check.text, check, Verdict(None)).with_scores(**known))


@STRATEGIES.register("solve-detect-verify", "sdv", "flexive")
@dataclass(frozen=True, kw_only=True)
class SolveDetectVerify(Sampled):
    """Verify at detected completion points, fast checks first; a rejection feeds a new attempt."""

    attempts: int = 2
    """Solver attempts: the first, then one per rejection fed back."""
    detect: float = 0.5
    """P(Yes) to DETECT at which a completion point is verified (0: every one, no probe)."""
    fast: int = 4
    """Fast checks per verification, all in one request (0: the slow chains only)."""
    consensus: float = 0.75
    """Share of the fast checks on one verdict that decides without the slow chains."""
    fast_tokens: int = 64
    """Most tokens of a fast check."""
    slow: int = 1
    """Slow chains when the fast checks do not agree, in one request (0: undecided)."""
    slow_tokens: int = 512
    """Most tokens of a slow chain."""
    verify_temperature: float = 0.7
    """Sampling temperature of the checks."""
    verify_backend: str | None = None
    """Named backend that verifies (e.g. a trained FlexiVe); default: the run's."""
    cues: Annotated[tuple[str, ...], BeforeValidator(_words)] = ("wait", "hmm", "alternatively")
    """Words before which a completion point is probed (comma-separated on the command line)."""

    def __post_init__(self) -> None:
        for bad, need in (
            (self.attempts < 1, "attempts >= 1"),
            (min(self.fast, self.slow) < 0 or self.fast + self.slow < 1, "fast, slow >= 0, fast + slow >= 1"),
            (min(self.fast_tokens, self.slow_tokens) < 1, "fast_tokens, slow_tokens >= 1"),
            (
                not (0 <= self.detect <= 1 and 0.5 < self.consensus <= 1),
                "0 <= detect <= 1, 0.5 < consensus <= 1",
            ),
        ):
            if bad:
                raise ConfigError(f"solve-detect-verify: need {need}")
        try:
            self.check_sampling(1, 1)
        except ConfigError as bad:  # "temperature must be ...": name the checks' own parameter
            raise ConfigError(f"solve-detect-verify: verify_{bad}") from None
        super().__post_init__()

    def check_sampling(self, n: int, tokens: int) -> Sampling:
        """`n` checks of at most `tokens`, with the top-20 log-probabilities P(Yes) is read from."""
        return Sampling(self.verify_temperature, self.top_p, max_tokens=tokens, n=n, logprobs=20)

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Attempt, check at completion points, feed a rejection back; the last attempt answers."""
        run, messages = _Run(ctx), ctx.messages

        async def best_so_far() -> Result:  # a budget stop: the running attempt ends where it is
            if run.attempts and not run.attempts[-1].recorded:
                run.attempts[-1].decision = (len(run.attempts[-1].text), False, "")
                run.records.append(await self.attempted(run, "budget"))
            return self.chosen(run.records)

        ctx.on_stop(best_so_far)
        for number in range(self.attempts):
            run.attempts.append(attempt := _Attempt(number, Request(messages, self.sampling())))
            await self.solve(run, attempt)
            cut, accepted, finding = attempt.decision or (0, None, "")
            run.records.append(await self.attempted(run, "rejected" if accepted is False else "exit"))
            if accepted is not False:  # accepted, or ended undecided: nothing to feed back
                break
            feedback = Message("user", FEEDBACK.format(finding=finding.strip()))
            messages = (*messages, Message("assistant", attempt.text[:cut]), feedback)
        return self.chosen(run.records)

    async def solve(self, run: _Run, a: _Attempt) -> None:
        """Stream an attempt, checking one completion point at a time; stop at a decision."""
        checking: asyncio.Task[None] | None = None
        async with task_group() as group, run.ctx.trace(a.request) as a.live:
            async for chunk in a.live:
                a.text += chunk.text
                if a.decision is not None:
                    break  # leaving the trace cancels it in the engine
                cuts = [c for c in completion_points(a.text, self.cues) if c > a.seen]
                a.seen = max([a.seen, *cuts])
                fresh = [c for c in cuts if _key(a.text[:c]) not in (None, *a.verdicts)]
                if fresh and a.live.ended is None and (checking is None or checking.done()):
                    a.exit_token = a.live.decoded
                    checking = group.create_task(self.check(run, a, fresh[-1]))
        [trace] = a.live.completions
        ended = a.decision is None and trace.finish_reason != "cancelled"
        if ended and _key(a.text) not in (None, *a.verdicts):  # the end: a completion point
            a.exit_token = trace.output_tokens
            await self.check(run, a, len(a.text), detect=False)

    async def check(self, run: _Run, a: _Attempt, cut: int, *, detect: bool = True) -> None:
        """Detect (unless at the end), then verify trace[:cut]; a verdict that acts stops the attempt."""
        partial, number, a.checks = a.text[:cut], a.checks, a.checks + 1
        if detect and self.detect > 0:
            ask = Sampling(temperature=0.0, max_tokens=1, logprobs=20)
            [reply] = await run.ctx.generate(replace(a.request, sampling=ask, prefix=partial + DETECT))
            no = p_no(reply)
            run.record(reply, attempt=a.number, detect=cut, p_complete=None if no is None else 1 - no)
            if no is None or 1 - no < self.detect:
                return
        accepted, finding = await self.verify(run, partial, a.number, number)
        a.verdicts[_key(partial) or ""] = accepted
        if accepted or (accepted is False and a.number < self.attempts - 1):
            a.decision = (cut, accepted, finding)

    async def verify(self, run: _Run, solution: str, attempt: int, number: int) -> tuple[bool | None, str]:
        """FlexiVe: the fast checks at once; the slow chains only when they do not agree."""
        head = {"question": run.ctx.problem.question, "solution": solution}
        for mode, prompt, n, tokens in (
            ("fast", FAST, self.fast, self.fast_tokens),
            ("slow", SLOW, self.slow, self.slow_tokens),
        ):
            if n == 0:
                continue
            request = Request((Message("user", prompt.format(**head)),), self.check_sampling(n, tokens))
            checks = await run.ctx.generate(request, self.verify_backend)
            ps = [p_yes(c) for c in checks]
            for c, p in zip(checks, ps, strict=True):
                run.record(c, attempt=attempt, **{mode: number}, p_yes=p)
            known = [p for p in ps if p is not None]
            finding = next((c.text for c, p in zip(checks, ps, strict=True) if p is not None and p < 0.5), "")
            if mode == "slow":
                return (sum(known) / len(known) >= 0.5 if known else None), finding
            yes, no = sum(p >= 0.5 for p in known), sum(p < 0.5 for p in known)
            if max(yes, no) / n >= self.consensus:
                return yes > no, finding
        return None, ""

    async def attempted(self, run: _Run, reason: str) -> Candidate:
        """The record of the latest attempt: its text up to the decision (or all of it), its answer."""
        a = run.attempts[-1]
        a.recorded = True
        [trace] = (a.live.completions if a.live else []) or [Completion(0, a.text, 0, "cancelled")]
        text = a.text[: a.decision[0]] if a.decision else a.text
        if a.decision is None:  # it ran to its end undecided: the trace's own text and answer
            [candidate] = await run.ctx.candidates([trace])
        else:
            [verdict] = await run.ctx.verify([text]) if written_answer(text) else [Verdict(None)]
            candidate = replace(to_candidate(text, trace, verdict), finish_reason=reason)
        known = a.verdicts.get(_key(text) or "")
        scores = {"attempt": a.number, "checks": a.checks} | ({} if known is None else {"verified": known})
        exit_at = {"exit_token": a.exit_token} if a.decision and reason != "budget" else {}
        return candidate.with_scores(**{k: float(v) for k, v in (scores | exit_at).items()})

    @staticmethod
    def chosen(records: list[Candidate]) -> Result:
        """The latest attempt with an answer that was not rejected, else the latest with one."""
        tried = [i for i, c in enumerate(records) if "checks" in c.scores]
        rank = {i: (records[i].answer is not None, records[i].scores.get("verified") != 0, i) for i in tried}
        return (
            Result.pick(records, max(tried, key=rank.__getitem__)) if tried else Result(None, tuple(records))
        )
