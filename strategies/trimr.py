"""TrimR: a small verifier watches the solver's thoughts and trims redundant thinking.

"TrimR: Verifier-based Training-Free Thinking Compression for Efficient Test-Time Scaling" (Lin et
al., arXiv 2505.17155). The solver (backend ``target``, the 1.5B) streams one trace; a small
instruction-tuned verifier (backend ``draft``, the 0.5B) reads each finished thought while the
solver decodes on, as the paper's asynchronous online system does::

    stream the solver's trace, cut into thoughts at boundaries (a blank line opening a cue)
    when thought i ends:                                    # a check; the solver decodes on
        r_i = P(Yes | REACHED: "does thought i reach a definite answer?")
        s_i = P(Yes | SAME: "do thoughts i-1 and i reach the same answer?")    # i >= 1, at once
    in thought order, each once checked:
        overthinking  if r_{i-1}, r_i, s_i >= yes_threshold       # an answer reached, confirmed again
        underthinking if r_i <= no_threshold and thought i+1 opens with a switch cue,
                      for the `switches`-th time                  # lines abandoned before an answer
        else continue                                             # unsure (in between) or no
    on a decision after thought i: cancel the solver; continue, greedily, <= answer_tokens:
        trace[:end of thought i] + GUIDES[why] + ANSWER_PHRASE     # on the solver
    the solver ends first: its own text and answer (checks in flight are cancelled)

INFERRED (the paper's prompts, cue list and thresholds were not available here; each an option):
a boundary is a blank line whose next paragraph opens (markdown aside) with a cue word:
`RECHECK` (wait, hmm, let me check, ...: re-checking) or `SWITCH` (alternatively, let me try,
...: a new line of attack), as Dynasor's hesitation words; ``segment=paragraph`` makes every
blank line one (instruction-tuned models rarely write the cues). Verifier prompts: `REACHED`,
`SAME` (instruction and question first, byte-identical across checks, for the prefix cache), one
greedy token with top-20 log-probabilities, P(Yes) by `yes_probability` (0.5, unsure, without
them). SAME is skipped when r_{i-1} is already known below yes_threshold (it could not decide).
Thresholds 0.7 / 0.3, two switches. Instruct models have no ``</think>``: a reason's
guide sentence and `ANSWER_PHRASE` close the thinking instead; the answer request keeps the run's
messages and the trace's text byte for byte (the prefix cache serves them). The paper's third
trimming, of token-level repetition loops, is left out. A decision cancels the solver at its next
token; what it decoded after the cut thought's end was seen is charged (``decoded_past_cut``). A
budget stop answers with what the trace so far writes out in full.

Candidates: the answer (``finish_reason`` overthinking / underthinking, or the solver's own),
then every thought (its text, why it ended: switch / recheck / paragraph, the decision after it,
or the solver's finish; ``thought``, ``p_reached``, ``p_same``), then every check (the verifier's
token; ``thought``, ``check`` 0 REACHED / 1 SAME, ``p_yes``). The answer's ``scores``:
``thoughts``, ``checks``, ``switches``, ``cut_thought`` (-1: none), ``decoded_past_cut``,
``solver_tokens``, ``verifier_tokens``, ``forced_answer``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field, replace
from typing import Literal

from reasoning import STRATEGIES, Candidate, ConfigError, Context, Problem, Result
from reasoning.answers import written_answer
from reasoning.backend import Completion, Message, Request, Sampling
from reasoning.concurrency import task_group
from reasoning.strategies.sampled import Sampled
from reasoning.strategies.step_tree import ANSWER_PHRASE, FORCED_ANSWER_TOKENS
from reasoning.strategy import to_candidate
from reasoning.trace import Trace
from reasoning.verifier import Verdict
from reasoning.verifiers.judge import yes_probability

__all__ = ["GUIDES", "REACHED", "RECHECK", "SAME", "SWITCH", "TrimR", "boundaries"]

RECHECK = ("wait", "hmm", "hold on", "but", "let me check", "let me verify", "let me double-check",
           "let's check", "let's verify", "double-check", "verify", "check")  # fmt: skip
"""Cues of a re-check: a thought that opens with one looks again at the line before."""
SWITCH = ("alternatively", "instead", "another approach", "another way", "let me try", "let's try")
"""Cues of a switch: a thought that opens with one abandons the line before."""
REACHED = (
    "Question:\n{question}\n\nAn excerpt of a solver's reasoning:\n{thought}\n\n"
    "Does this excerpt reach a definite final answer to the question? Answer with Yes or No only."
)
SAME = (
    "Question:\n{question}\n\nFirst excerpt:\n{first}\n\nSecond excerpt:\n{second}\n\n"
    "Do both excerpts reach the same final answer? Answer with Yes or No only."
)
GUIDES = {
    "overthinking": "\n\nThis answer is reached and confirmed; no more checking is needed.",
    "underthinking": "\n\nSwitching approaches again will not help; I commit to the best line so far.",
}
"""The sentence closing the thinking, by why it was cut; `ANSWER_PHRASE` follows."""
_BLANK = r"\n[ \t]*\n\s*(?=[^\w\s]*({})\W)"  # a blank line, then the next paragraph's first word
_CUES = re.compile(_BLANK.format("|".join(map(re.escape, SWITCH + RECHECK))), re.IGNORECASE)
_KINDS = {**dict.fromkeys(RECHECK, "recheck"), **dict.fromkeys(SWITCH, "switch")}
_CHECK = Sampling(temperature=0.0, max_tokens=1, logprobs=20)


def boundaries(text: str, segment: str = "cue", start: int = 0) -> list[tuple[int, int, str]]:
    """(where a thought ends, where to scan on, what the next one opens with), from `start` on.

    Example:
        >>> boundaries("x = 4.\\n\\nWait, 4? \\n\\nSo \\n\\nAlternatively, y")
        [(6, 8, 'recheck'), (22, 24, 'switch')]
        >>> boundaries("x = 4.\\n\\n\\nSo 4.\\n\\nWai", "paragraph")
        [(6, 9, 'paragraph')]
    """
    found = (_CUES if segment == "cue" else re.compile(_BLANK.format(r"\w+"))).finditer(text, start)
    return [(m.start(), m.end(), _KINDS.get(m.group(1).lower(), "paragraph")) for m in found]


def _p_yes(check: Completion) -> float | None:
    """P(Yes) of a finished check (0.5, unsure, without log-probabilities); None if cancelled."""
    if check.finish_reason == "cancelled":
        return None
    return yes_probability(check.logprobs[0]) if check.logprobs else 0.5


def _known(**scores: float | None) -> dict[str, float]:
    return {name: value for name, value in scores.items() if value is not None}


@dataclass
class _Thought:
    end: int  # where it ends in the trace (the next one starts there)
    opens: str  # what the next thought opens with: switch, recheck or paragraph
    seen: int  # solver tokens decoded when its end was seen
    reached: float | None = None
    same: float | None = None
    checked: bool = False


@STRATEGIES.register("trimr", "trim-r")
@dataclass(frozen=True, kw_only=True)
class TrimR(Sampled):
    """One solver trace; a small verifier cuts it once an answer is confirmed or lines keep switching."""

    solver_backend: str = "target"
    """Named backend that reasons (the large model)."""
    verifier_backend: str = "draft"
    """Named backend that checks thoughts (the small instruction-tuned model)."""
    segment: Literal["cue", "paragraph"] = "cue"
    """Thought boundaries: blank lines opening a cue word (the paper's), or every blank line."""
    yes_threshold: float = 0.7
    """P(Yes) at or above which the verifier says yes."""
    no_threshold: float = 0.3
    """P(Yes) at or below which it says no (between the two: unsure, the solver decodes on)."""
    switches: int = 2
    """Switches away from thoughts without an answer that make underthinking."""
    answer_tokens: int = FORCED_ANSWER_TOKENS
    """Most tokens of the forced answer after a cut."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.no_threshold < self.yes_threshold <= 1.0:
            raise ConfigError("trimr: need 0 <= no_threshold < yes_threshold <= 1")
        if min(self.switches, self.answer_tokens) < 1 or not (self.solver_backend and self.verifier_backend):
            raise ConfigError("trimr: switches and answer_tokens must be >= 1, and both backends named")
        super().__post_init__()

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Stream the solver, check each thought as it ends, cut where the verifier decides."""
        for name in (self.solver_backend, self.verifier_backend):
            ctx.backend_named(name)  # a ConfigError naming the run's backends
        watch = _Watch(self, ctx)
        ctx.on_stop(watch.best_so_far)
        async with task_group() as group:
            tasks: list[asyncio.Task[None]] = []
            async with ctx.trace(ctx.request(self.sampling()), self.solver_backend) as solver:
                async for chunk in solver:
                    if watch.cut:
                        break  # leaving the trace cancels the solver in the engine
                    watch.text += chunk.text
                    found = boundaries(watch.text, self.segment, watch.scan) if not solver.ended else []
                    for end, watch.scan, opens in found:
                        watch.thoughts.append(_Thought(end, opens, solver.decoded))
                        tasks.append(group.create_task(watch.check(len(watch.thoughts) - 1)))
            for task in tasks:
                task.cancel()  # checks in flight are of no use any more
        [trace] = solver.completions
        if not watch.cut or trace.finish_reason != "cancelled":  # the solver ended first
            [main] = await ctx.candidates([trace])
            return watch.result(main, trace, None)
        i, why = watch.cut
        head = watch.text[: watch.thoughts[i].end] + GUIDES[why] + ANSWER_PHRASE
        sampling = Sampling(temperature=0.0, max_tokens=self.answer_tokens)
        [forced] = await ctx.generate(ctx.request(sampling, head), self.solver_backend)
        [verdict] = await ctx.verify([head + forced.text])
        main = to_candidate(head + forced.text, trace, verdict)
        tokens = trace.output_tokens + forced.output_tokens
        return watch.result(replace(main, output_tokens=tokens, finish_reason=why), trace, forced)


@dataclass
class _Watch:
    """What the verifier has seen of one trace: its thoughts, checks, and the first decision."""

    strategy: TrimR
    ctx: Context
    text: str = ""
    scan: int = 0  # where the next boundary may start
    thoughts: list[_Thought] = field(default_factory=list)
    asked: list[tuple[int, int, Trace]] = field(default_factory=list)  # (thought, check kind, trace)
    cut: tuple[int, str] | None = None  # (thought, why)
    decided: int = 0
    switches: int = 0

    async def check(self, i: int) -> None:
        """Ask REACHED of thought i and, at once, SAME of it and the one before; then decide."""
        t, prev, question = self.thoughts[i], self.thoughts[i - 1] if i else None, self.ctx.problem.question
        prompts = [REACHED.format(question=question, thought=self.said(i))]
        if prev is not None and (prev.reached is None or prev.reached >= self.strategy.yes_threshold):
            prompts.append(SAME.format(question=question, first=self.said(i - 1), second=self.said(i)))
        p = await self.ctx.run_all(*(self.ask(i, kind, prompt) for kind, prompt in enumerate(prompts)))
        t.reached, t.same, t.checked = p[0], p[1] if len(p) > 1 else None, True
        self.decide()

    def said(self, i: int) -> str:
        """The text of thought i."""
        return self.text[self.thoughts[i - 1].end if i else 0 : self.thoughts[i].end].strip()

    async def ask(self, i: int, kind: int, prompt: str) -> float:
        """One check: the verifier's P(Yes) to `prompt` (0.5: unsure)."""
        live = self.ctx.trace(Request((Message("user", prompt),), _CHECK), self.strategy.verifier_backend)
        self.asked.append((i, kind, live))
        async with live:
            async for _ in live:
                pass
        p = _p_yes(live.completions[0])
        return 0.5 if p is None else p

    def decide(self) -> None:
        """Judge the checked thoughts in order, whatever order their checks finished in."""
        yes, no = self.strategy.yes_threshold, self.strategy.no_threshold
        while self.cut is None and self.decided < len(self.thoughts) and self.thoughts[self.decided].checked:
            i, t = self.decided, self.thoughts[self.decided]
            self.decided += 1
            known = [self.thoughts[i - 1].reached, t.reached, t.same] if i else [None]
            if min(0.0 if x is None else x for x in known) >= yes:
                self.cut = (i, "overthinking")
            elif t.opens == "switch" and t.reached is not None and t.reached <= no:
                self.switches += 1
                self.cut = (i, "underthinking") if self.switches >= self.strategy.switches else None

    async def best_so_far(self) -> Result:
        """A budget stop: the answer the trace so far writes out in full, if any."""
        if written_answer(self.text) is None:
            return Result(None)
        [verdict] = await self.ctx.verify([self.text])
        return Result.pick([Candidate(self.text, verdict.answer, verdict.score, finish_reason="budget")], 0)

    def result(self, main: Candidate, trace: Completion, forced: Completion | None) -> Result:
        """The answer, then every thought and every check, each with why it ended."""
        cut = self.cut if forced is not None else None
        bounds = [0, *(t.end for t in self.thoughts), len(trace.text)]
        whys = [cut[1] if cut and cut[0] == j else t.opens for j, t in enumerate(self.thoughts)]
        segments = [
            Candidate(
                trace.text[bounds[j] : bounds[j + 1]],
                finish_reason=why,
                backend=trace.backend,
                scores={"thought": j, **({} if t is None else _known(p_reached=t.reached, p_same=t.same))},
            )
            for j, (t, why) in enumerate(
                zip([*self.thoughts, None], [*whys, trace.finish_reason], strict=True)
            )
        ]
        checks = [
            to_candidate(c.text, c, Verdict(None)).with_scores(
                thought=i, check=kind, **_known(p_yes=_p_yes(c))
            )
            for i, kind, live in self.asked
            for c in live.completions
        ]
        main = main.with_scores(
            thoughts=len(self.thoughts),
            checks=len(checks),
            switches=self.switches,
            cut_thought=-1 if cut is None else cut[0],
            decoded_past_cut=0 if cut is None else trace.output_tokens - self.thoughts[cut[0]].seen,
            solver_tokens=trace.output_tokens + (0 if forced is None else forced.output_tokens),
            verifier_tokens=sum(c.output_tokens for c in checks),
            forced_answer=float(forced is not None),
        )
        return Result.pick([main, *segments, *checks], 0)
