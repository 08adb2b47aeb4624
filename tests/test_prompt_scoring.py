"""The PromptScorer capability through the Context: scored, metered, refused where absent."""

from dataclasses import dataclass, field

import pytest

from reasoning import CapabilityError, Controller, Problem, Result, ScriptedBackend, TokenLogprob
from reasoning.strategy import Context


@dataclass(frozen=True)
class ScorePrefix:
    prefix: str
    backend: str | None = None
    seen: list[tuple[TokenLogprob, ...]] = field(default_factory=list)

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        self.seen.append(await ctx.prompt_logprobs(self.prefix, self.backend))
        return Result(None)


async def test_prompt_logprobs_scores_every_token_after_the_first(problem: Problem) -> None:
    target = ScriptedBackend(["x"], prompt_logprob=lambda r, i, tok: -2.0 if tok.startswith("odd") else -0.5)
    draft = ScriptedBackend(["y"])
    strategy = ScorePrefix("step one odd step", backend="target")
    run = await Controller({"draft": draft, "target": target}).run(problem, strategy)
    [scored] = strategy.seen
    prompt = target.prompt_tokens(target.scored_requests[0])
    assert len(scored) == prompt - 1
    assert [t.token for t in scored[-4:]] == ["step ", "one ", "odd ", "step"]
    assert [t.logprob for t in scored[-4:]] == [-0.5, -0.5, -2.0, -0.5]
    # Metered on the target: one call, its prompt, one decoded token; the draft is untouched.
    assert run.usage_by_backend["target"]["calls"] == 1
    assert run.usage_by_backend["target"]["prompt_tokens"] == prompt
    assert run.usage_by_backend["target"]["output_tokens"] == 1
    assert run.usage_by_backend["draft"]["calls"] == 0


async def test_a_backend_without_scoring_is_refused_by_name(problem: Problem) -> None:
    with pytest.raises(CapabilityError, match="cannot give prompt log-probabilities.*backends that can"):
        await Controller(ScriptedBackend(["x"])).run(problem, ScorePrefix("a b"))
