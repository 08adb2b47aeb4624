"""Process scores: how good a partial solution is, step by step, and how step scores combine.

A `ProcessScorer` scores the newest step of many partial solutions in one concurrent batch.
Three ship here: `GenerativeScorer` (the model itself judges the partial solution; P(Yes) is read
from the first token's top log-probabilities, one token decoded), `RewardModelScorer` (a process
reward model served by a backend with the `RewardReader` capability) and `ScriptedScorer` (a
function of the steps, for tests); `reasoning.probes.value` adds a hidden-state value probe. A
search keeps each node's score history and aggregates it (`aggregate`): ``last``, ``min``,
``product``, or ``model`` (the scorer sees the whole partial solution as one step: a PRM then acts
as an outcome model on it, the best setting of the particle-filtering paper, Puri et al., arXiv
2502.01618, section 4.2). The searches themselves, their steps and trees, live in
`reasoning.strategies.step_tree`.

INFERRED (documented): the generative scorer's prompt (`PROCESS_PROMPT`) asks about correctness
"so far" and reads 0.5 when neither Yes nor No is among the top tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from reasoning import Context, Message, Problem, Request, Sampling
from reasoning.errors import VerifierError
from reasoning.verifier import ExtractAnswer, ProcessScorer, Verdict
from reasoning.verifiers.judge import yes_probability

__all__ = [
    "PROCESS_PROMPT",
    "QWEN_PRM_SYSTEM",
    "Aggregation",
    "GenerativeScorer",
    "ProcessScorer",
    "RewardModelScorer",
    "ScriptedScorer",
    "aggregate",
]

Aggregation = Literal["last", "min", "product", "model"]
"""How step scores make a path's score (Puri et al., arXiv 2502.01618, section 4.2)."""


def aggregate(how: Aggregation, previous: float | None, score: float) -> float:
    """A path's score after a new step scored `score`, given its score before (None at the root).

    ``last`` and ``model`` take the new score (for ``model`` it already scores the whole path).

    Example:
        >>> aggregate("min", 0.5, 0.9), aggregate("product", 0.5, 0.5), aggregate("last", 0.5, 0.9)
        (0.5, 0.25, 0.9)
    """
    if previous is None or how in ("last", "model"):
        return score
    return min(previous, score) if how == "min" else previous * score


PROCESS_PROMPT = (
    "Question:\n{question}\n\nPartial solution:\n{solution}\n\n"
    "Is this partial solution correct so far? Answer with Yes or No only."
)
"""The generative scorer's prompt (a user message); the shared question comes first for the cache."""


@dataclass(frozen=True)
class GenerativeScorer:
    """The model judges each partial solution: P(Yes) / (P(Yes) + P(No)) of its first answer token."""

    backend: str | None = None
    """Named backend that judges (None: the run's default, i.e. the policy itself)."""
    delimiter: str = "\n\n"
    """Joins the steps shown to the judge."""

    async def score(self, ctx: Context, paths: Sequence[Sequence[str]]) -> list[float]:
        """One greedy token with top-20 log-probabilities per path, all requests at once."""
        sampling = Sampling(temperature=0.0, max_tokens=1, logprobs=20)
        question = ctx.problem.question
        prompts = [PROCESS_PROMPT.format(question=question, solution=self.delimiter.join(p)) for p in paths]
        requests = [Request((Message("user", prompt),), sampling) for prompt in prompts]
        results = await ctx.generate_all(requests, self.backend)
        return [yes_probability(r[0].logprobs[0]) if r[0].logprobs else 0.5 for r in results]


QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
"""The system message Qwen2.5-Math-PRM was trained with."""


@dataclass(frozen=True)
class RewardModelScorer:
    """A process reward model served by a backend with the `RewardReader` capability.

    The PRM sees system + question + the partial solution with the backend's step tag after every
    step (Qwen2.5-Math-PRM's format), in one forward pass; the newest step's row gives the score.
    Paths are sent concurrently (the engine batches them; siblings share their prefix).
    """

    backend: str | None = "prm"
    """Named backend serving the PRM (None: the run's default backend)."""
    system: str | None = QWEN_PRM_SYSTEM
    """System message of the PRM's input (None: none)."""
    positive: int = 1
    """Column of P(step correct) in the PRM's output."""

    async def score(self, ctx: Context, paths: Sequence[Sequence[str]]) -> list[float]:
        """P(newest step correct) of each path, one PRM request per path, all at once."""
        tag = str(getattr(ctx.backend_named(self.backend), "step_tag", "<extra_0>"))
        head = ((Message("system", self.system),) if self.system else ()) + (
            Message("user", ctx.problem.question),
        )
        conversations = [(*head, Message("assistant", "".join(s + tag for s in path))) for path in paths]
        rows = await ctx.run_all(*(ctx.step_rewards(c, self.backend) for c in conversations))
        out = []
        for path, row in zip(paths, rows, strict=True):
            if row.ndim != 2 or row.shape[0] != len(path) or row.shape[1] <= self.positive:
                raise VerifierError(
                    f"the process reward model returned {row.shape} for {len(path)} steps; expected "
                    f"({len(path)}, >{self.positive}): is its step tag {tag!r} one token of its tokenizer?"
                )
            out.append(float(row[-1, self.positive]))
        return out


class ScriptedScorer:
    """Deterministic process scores for tests: ``score = function(steps)``.

    It is also a `Verifier` (it extracts answers), so a test passes it as the run's verifier
    and a strategy uses it with ``scorer="verifier"``.
    """

    def __init__(self, function: Callable[[tuple[str, ...]], float]) -> None:
        self.function = function
        self.batches: list[list[tuple[str, ...]]] = []
        """The paths of every `score` call, in order."""

    async def __call__(self, problem: Problem, texts: Sequence[str]) -> list[Verdict]:
        """Extract each text's answer (the default verifier's rule)."""
        return await ExtractAnswer()(problem, texts)

    async def score(self, ctx: Context, paths: Sequence[Sequence[str]]) -> list[float]:
        """The scripted score of each path."""
        batch = [tuple(path) for path in paths]
        self.batches.append(batch)
        return [float(self.function(path)) for path in batch]
