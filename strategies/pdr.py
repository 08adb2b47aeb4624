"""Parallel-Distill-Refine (PDR) and Sequential Refinement (SR).

"Rethinking Thinking Tokens: LLMs as Improvement Operators" (arXiv 2510.01123)::

    W = ""                                            # the workspace: text, |W| <= workspace_tokens
    for r in 1..R:
        drafts = M_r solutions of (question + W)      # one request with n = M_r, or M_r `inner` runs
        if r < R: W = distill(question, drafts)       # a summary, or the top-k / random-k drafts' ends
    answer = the final round's draft (M_R = 1), or a vote over its M_R drafts

SR (`sr`) is PDR with one draft per round: the model rewrites its previous answer, conditioned on
it (by default the whole of it: ``workspace_tokens`` = ``max_tokens``).

Our choices (INFERRED: only the abstract was read), each an option:

* ``distill``: ``summary`` (the model summarises the drafts, read in full: agreement, differences,
  candidate answers; one request, ``max_tokens = workspace_tokens``), ``top-k`` (the `k` best drafts
  by ``score``: ``confidence`` = mean token logprob, ``verifier`` = the verifier's score; ties and
  drafts without a score go last, in draft order) or ``random`` (`k` drafts drawn with ``ctx.rng``).
  Verbatim drafts are listed in draft order, each cut to ``workspace_tokens // k`` tokens keeping its
  END (where the answer is), marked ``...``: token-exact from the tokens the request returns
  (``logprobs=0``); a draft of an `inner` strategy (no tokens) is cut at the same fraction of its
  characters, an approximation.
* Round r > 1's prompt: the problem's messages with ``refine_prompt`` (holding W) appended to the
  last user message, so every draft of a round shares one byte-identical prompt. The summary's
  prompt appends ``summary_prompt`` (holding the drafts) the same way.
* Summaries are kept as candidates without an answer (scores ``round``, ``summary``); drafts carry
  ``round``, ``draft`` and ``workspace_tokens_used`` (the tokens of the workspace they were given).
  With `inner`, every candidate of draft i's run is kept; the run's chosen one (else its last) is
  the draft. On a budget stop the latest finished round's drafts vote.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from reasoning import STRATEGIES, Candidate, Context, Message, Problem, Request, Result
from reasoning.compose import Inner, build_optional, needs_hidden_states
from reasoning.errors import ConfigError
from reasoning.strategies.sampled import Sampled
from reasoning.strategy import to_candidate
from reasoning.verifier import Verdict

__all__ = ["PDR", "REFINE_PROMPT", "SUMMARY_PROMPT", "SequentialRefinement"]

REFINE_PROMPT = (
    "Earlier attempts at this problem (or a summary of them):\n\n{workspace}\n\nCheck them: keep what "
    "is right and fix what is wrong. Then write an improved, complete solution, with the final answer "
    "as asked above."
)
SUMMARY_PROMPT = (
    "Here are {count} attempts at the problem above:\n\n{attempts}\n\nDo not solve the problem again. "
    "Summarize the attempts briefly: what they agree on, where they differ, which steps look wrong, "
    "and each candidate final answer with how many attempts reached it."
)


@dataclass(frozen=True)
class _Draft:
    candidate: Candidate
    tokens: tuple[str, ...] | None
    """Its decoded tokens, when the request returned them."""


@STRATEGIES.register("pdr", "parallel-distill-refine")
@dataclass(frozen=True, kw_only=True)
class PDR(Sampled):
    """Rounds of parallel drafts, each round conditioned on a bounded workspace distilled from the last."""

    rounds: int = 3
    """Rounds R (the last one writes the answer)."""
    drafts: int | tuple[int, ...] = 4
    """Drafts per round before the last: one number, or one per round (R - 1 of them)."""
    final_drafts: int = 1
    """Drafts of the last round; more than one vote."""
    workspace_tokens: int = 256
    """Most tokens of the workspace (the summary, or all verbatim draft ends together)."""
    distill: Literal["summary", "top-k", "random"] = "summary"
    """How the drafts become the workspace."""
    score: Literal["confidence", "verifier"] = "confidence"
    """What ranks drafts for ``top-k``."""
    k: int = 2
    """Drafts kept verbatim by ``top-k`` and ``random``."""
    inner: Inner = None
    """A strategy spec whose runs are the drafts (its chosen candidate each), e.g. first-finish(n=4)."""
    refine_prompt: str = REFINE_PROMPT
    """Appended to the problem in rounds after the first; ``{workspace}`` is replaced by W."""
    summary_prompt: str = SUMMARY_PROMPT
    """Appended to the problem to summarise; ``{attempts}`` and ``{count}`` are replaced."""

    def __post_init__(self) -> None:
        name = STRATEGIES.name_of(self)
        if isinstance(self.drafts, list):
            object.__setattr__(self, "drafts", tuple(self.drafts))
        per_round = (self.drafts,) if isinstance(self.drafts, int) else self.drafts
        if self.rounds < 1 or self.final_drafts < 1 or self.k < 1 or min(per_round, default=1) < 1:
            raise ConfigError(f"{name}: rounds, drafts, final_drafts and k must be >= 1")
        if isinstance(self.drafts, tuple) and len(self.drafts) != self.rounds - 1:
            raise ConfigError(
                f"{name}: drafts lists {len(self.drafts)} rounds, not rounds - 1 = {self.rounds - 1}"
            )
        if self.workspace_tokens < self.k:
            raise ConfigError(f"{name}: workspace_tokens must be >= k (each kept draft gets a share)")
        if self.distill not in ("summary", "top-k", "random") or self.score not in ("confidence", "verifier"):
            raise ConfigError(
                f"{name}: distill must be summary, top-k or random; score confidence or verifier"
            )
        for prompt, slot in ((self.refine_prompt, "{workspace}"), (self.summary_prompt, "{attempts}")):
            if slot not in prompt:
                raise ConfigError(f"{name}: refine_prompt and summary_prompt must hold {slot}")
        object.__setattr__(self, "inner", build_optional(self.inner))
        super().__post_init__()

    @property
    def needs_hidden_states(self) -> bool:
        """Whether the inner strategy reads hidden states."""
        return needs_hidden_states(self.inner)

    def drafts_in(self, r: int) -> int:
        """M_r, the drafts of round `r` (1-based)."""
        if r == self.rounds:
            return self.final_drafts
        return self.drafts if isinstance(self.drafts, int) else self.drafts[r - 1]

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """R rounds of drafts, the workspace distilled between them; the last round answers."""
        candidates: list[Candidate] = []
        latest: set[int] = set()

        async def best_so_far() -> Result:  # a budget stop: the latest finished round votes
            return Result.vote(candidates, voters=latest)

        ctx.on_stop(best_so_far)
        workspace, used = "", 0
        for r in range(1, self.rounds + 1):
            refine = self.refine_prompt.replace("{workspace}", workspace)
            messages = _appended(ctx.messages, refine) if workspace else ctx.messages
            drafts: list[_Draft] = []
            marks = {"round": float(r), "workspace_tokens_used": float(used)}
            finished: set[int] = set()
            for i, (run, chosen, tokens) in enumerate(await self.draft(problem, ctx, r, messages)):
                for j, candidate in enumerate(run):
                    if j == chosen:
                        finished.add(len(candidates))
                        drafts.append(_Draft(candidate, tokens))
                    candidates.append(candidate.with_scores(**marks, draft=float(i)))
            latest = finished
            if r < self.rounds:
                workspace, used, summary = await self.distilled(ctx, drafts)
                if summary is not None:
                    candidates.append(summary.with_scores(round=float(r), summary=1.0))
        if self.final_drafts == 1 and latest:
            return Result.pick(candidates, min(latest))
        return Result.vote(candidates, voters=latest)

    async def draft(
        self, problem: Problem, ctx: Context, r: int, messages: tuple[Message, ...]
    ) -> list[tuple[list[Candidate], int | None, tuple[str, ...] | None]]:
        """Round `r`'s drafts: per draft its candidates, which one is the draft, and its tokens."""
        m = self.drafts_in(r)
        if self.inner is None:
            logprobs = None if self.distill == "summary" else 0  # the tokens, to cut drafts exactly
            completions = await ctx.generate(Request(messages, self.sampling(m, logprobs=logprobs)))
            tokens = [None if c.logprobs is None else tuple(t.token for t in c.logprobs) for c in completions]
            return [([c], 0, t) for c, t in zip(await ctx.candidates(completions), tokens, strict=True)]
        inner = self.inner
        runs = await ctx.run_all(*(inner(problem, ctx.derive(f"r{r}d{i}", messages)) for i in range(m)))
        return [
            (list(run.candidates), run.chosen if run.chosen is not None else len(run.candidates) - 1, None)
            for run in runs
        ]

    async def distilled(self, ctx: Context, drafts: list[_Draft]) -> tuple[str, int, Candidate | None]:
        """The workspace from `drafts`: its text, its tokens, and the summary's candidate (if any)."""
        if not drafts:
            return "", 0, None
        if self.distill == "summary":
            attempts = "\n\n".join(f"Attempt {j + 1}:\n{d.candidate.text}" for j, d in enumerate(drafts))
            prompt = self.summary_prompt.replace("{count}", str(len(drafts))).replace("{attempts}", attempts)
            sampling = replace(self.sampling(), max_tokens=self.workspace_tokens)
            [summary] = await ctx.generate(Request(_appended(ctx.messages, prompt), sampling))
            return summary.text, summary.output_tokens, to_candidate(summary.text, summary, Verdict(None))
        k = min(self.k, len(drafts))
        if self.distill == "random":
            kept = sorted(int(j) for j in ctx.rng.choice(len(drafts), size=k, replace=False))
        else:
            kept = sorted(sorted(range(len(drafts)), key=lambda j: -self.rank(drafts[j].candidate))[:k])
        parts, used = [], 0
        for j in kept:
            text, tokens, cut = _tail(drafts[j], self.workspace_tokens // k)
            parts.append(f"Attempt {j + 1}:\n{'...' if cut else ''}{text}")
            used += tokens
        return "\n\n".join(parts), used, None

    def rank(self, candidate: Candidate) -> float:
        """A draft's ``score`` for ``top-k`` (-inf when it has none)."""
        value = candidate.mean_logprob if self.score == "confidence" else candidate.score
        return float("-inf") if value is None else value


def _appended(messages: tuple[Message, ...], text: str) -> tuple[Message, ...]:
    """`messages` with `text` after the last user message's own text."""
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        return (*messages, Message("user", text))
    at = users[-1]
    return (*messages[:at], Message("user", f"{messages[at].content}\n\n{text}"), *messages[at + 1 :])


def _tail(draft: _Draft, share: int) -> tuple[str, int, bool]:
    """The last `share` tokens of a draft: their text, how many tokens, and whether it was cut."""
    text, tokens = draft.candidate.text, draft.tokens
    if tokens is not None and text.endswith(kept := "".join(tokens[-share:])):  # token-exact
        return kept, min(share, len(tokens)), len(tokens) > share
    count = draft.candidate.output_tokens
    if count <= share:
        return text, count, False
    return text[len(text) - len(text) * share // count :], share, True  # the same fraction of characters


@STRATEGIES.register("sr", "sequential-refinement")
@dataclass(frozen=True, kw_only=True)
class SequentialRefinement(PDR):
    """PDR with one draft per round: each round rewrites the previous round's answer."""

    drafts: int | tuple[int, ...] = field(default=1, init=False)
    """One draft per round."""
    final_drafts: int = field(default=1, init=False)
    """One final draft: the answer."""
    k: int = field(default=1, init=False)
    """The one draft is the workspace."""
    score: Literal["confidence", "verifier"] = field(default="confidence", init=False)
    """Nothing to rank."""
    distill: Literal["summary", "top-k", "random"] = "top-k"
    """``top-k``: the previous answer itself (its end); ``summary``: the model's summary of it."""
    workspace_tokens: int = 512
    """Most tokens of the previous answer kept (its end); the default keeps a whole 512-token answer."""
