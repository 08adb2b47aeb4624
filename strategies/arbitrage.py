"""Arbitrage: advantage-aware step routing between a draft and a target model; RSD as baseline.

"Arbitrage: Efficient Reasoning via Advantage-Aware Speculation" (Maheswaran et al., arXiv
2512.05033), inference as in its Algorithm 1 (ALGORITHMS.md section 6.4); ``router="judge"`` is
the reward-guided speculative decoding baseline it compares with (RSD, section 6.3):

    steps = []
    until an answer / end of text / max_steps / token budget:
        z_d = draft.step(steps)                                  # until the delimiter or EOS
        probe: y = router(draft hidden states at steps + z_d + delimiter); escalate iff y > tau
        judge: s = judge score (0-9) of z_d by the target;       escalate iff s <= tau (RSD)
        z = target.step(steps) if escalate else z_d              # regenerated from the same prefix
        steps.append(z)
    answer = the trace's answer (n = 1) or the majority vote over n concurrent traces

The router is a hidden-state probe (``reasoning probe collect-advantage``, ``train --kind
advantage``, ``calibrate --escalate-rate``; `reasoning.probes.advantage`), refused for any other
model than the draft; ``tau`` overrides its calibrated threshold. The judge is SpecReason's 0-9
step judgement (`reasoning.verifiers.step_judge`) standing in for RSD's PRM; a step it cannot read
a digit for scores 0 (SpecReason's rule for a non-digit) and is escalated. Every call names its
backend (``draft``, ``target``), so the run's ``usage_by_backend`` holds each model's cost.

INFERRED (documented): ``max_tokens`` budgets the kept steps (SpecReason: rejected draft tokens do
not count); a step cut at ``step_tokens`` is kept as a whole step; a step with ``\\boxed{}`` or an
``Answer:`` line, an empty step or the end of text finishes the trace (Algorithm 1: EOS only);
judge-mode tau 7.0 (SpecReason's acceptance threshold). Candidates record ``steps``,
``escalated``, ``escalation_rate``, ``router_mean`` (mean router output or judge score),
``draft_tokens`` and ``target_tokens`` (decoded, discarded draft steps included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from reasoning import STRATEGIES, Candidate, Completion, Context, Problem, Result
from reasoning.errors import ArtefactRequired, ConfigError
from reasoning.probes.advantage import router_prefix
from reasoning.probes.probe import Probe, load_probe, model_of
from reasoning.steps import Steps
from reasoning.strategies.step_tree import StepSampling, is_final_step, step_prefix
from reasoning.verifiers.step_judge import judge_steps

__all__ = ["DRAFT", "TARGET", "Arbitrage", "DraftSteps", "ends_solution", "sample_step"]

DRAFT, TARGET = "draft", "target"
"""Names of the two backends the run must have."""
JUDGE_TAU = 7.0
"""Judge-mode default: accept a draft step scoring above this (SpecReason's threshold)."""


async def sample_step(
    ctx: Context, decoding: StepSampling, steps: Sequence[str], backend: str, max_tokens: int
) -> Completion:
    """One next step after `steps`, decoded by `backend` until the delimiter (or `max_tokens`)."""
    request = ctx.request(decoding.sampling(1, max_tokens), step_prefix(steps, decoding.delimiter))
    [completion] = await ctx.generate(request, backend)
    return completion


def ends_solution(step: Completion) -> bool:
    """The model ended its text, stated its answer, or wrote an empty step."""
    eos = step.finish_reason == "stop" and step.stop_string is None
    return eos or is_final_step(step.text) or not step.text.strip()


@dataclass(frozen=True, kw_only=True)
class DraftSteps(Steps):
    """The steps of a draft/target pair: SpecReason's sampling, a token budget per trace.

    Arbitrage runs with these and the advantage router's collector (`reasoning.evals.router_data`)
    labels steps with these: one declaration, so the two cannot drift apart.
    """

    max_steps: int = 20
    """Most steps per trace."""
    max_tokens: int = 512
    """Token budget of a trace's kept steps (discarded draft steps do not count)."""
    temperature: float = 0.6
    """Sampling temperature of both models' steps (SpecReason's)."""
    top_p: float = 0.95
    """Nucleus mass."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        super().__post_init__()
        self.decoding()

    def decoding(self) -> StepSampling:
        """How steps are cut and sampled (raises ConfigError on bad values)."""
        return StepSampling(
            delimiter=self.delimiter,
            step_tokens=self.step_tokens,
            max_steps=self.max_steps,
            temperature=self.temperature,
            top_p=self.top_p,
        )


@STRATEGIES.register("arbitrage", "advantage-routing")
@dataclass(frozen=True, kw_only=True)
class Arbitrage(DraftSteps):
    """The draft writes each step; a router sends the steps the target would improve to the target."""

    probe: str = ""
    """Advantage-router artefact for the draft model (``router="probe"``)."""
    router: Literal["probe", "judge"] = "probe"
    """probe: Arbitrage's learned router; judge: RSD, a threshold on the target's score of the step."""
    tau: float | None = None
    """probe: escalate iff output > tau (None: the card's calibrated tau); judge: iff score <= tau
    (None: 7.0 on the 0-9 scale)."""
    judge: str = TARGET
    """Named backend that judges draft steps (``router="judge"``)."""
    n: int = 1
    """Independent traces (concurrent); more than one = a majority vote over them."""

    def __post_init__(self) -> None:
        if self.router not in ("probe", "judge"):
            raise ConfigError(f"arbitrage: router must be probe or judge, got {self.router!r}")
        if self.router == "probe" and not self.probe:
            raise ArtefactRequired("arbitrage", "probe", "probes/gsm8k-router.json", "the router artefact")
        if self.n < 1 or self.step_tokens < 1 or self.max_tokens < 1:
            raise ConfigError("arbitrage: n, step_tokens and max_tokens must be >= 1")
        super().__post_init__()

    @property
    def needs_hidden_states(self) -> bool:
        """The probe router reads the draft's hidden states (the CLI then starts engines with them)."""
        return self.router == "probe"

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Run n routed traces concurrently, then vote."""
        missing = [name for name in (DRAFT, TARGET) if name not in ctx.backends]
        if missing:
            have = ", ".join(ctx.backends) or "(one unnamed backend)"
            raise ConfigError(
                f"arbitrage needs backends named draft and target (--model draft=... --model target=...); "
                f"missing {', '.join(missing)}; this run has {have}"
            )
        probe, tau = None, JUDGE_TAU if self.tau is None else self.tau
        if self.router == "probe":
            probe = load_probe(
                self.probe,
                model_of(ctx, DRAFT),
                "advantage",
                calibrated=self.tau is None,
                problem=ctx.problem,
            )
            if self.tau is None and probe.card.router is not None:
                tau = probe.card.router.threshold
        done: list[Candidate] = []

        async def best_so_far() -> Result:  # a budget stop: vote over the traces finished so far
            return Result.vote(done) if done else Result(answer=None)

        ctx.on_stop(best_so_far)
        return Result.vote(await ctx.run_all(*(self.trace(ctx, probe, tau, done) for _ in range(self.n))))

    async def route(self, ctx: Context, probe: Probe | None, steps: Sequence[str], step: str) -> float:
        """The router's output for the draft's new `step` (probe: P(target better); judge: 0-9)."""
        if probe is None:
            [score] = await judge_steps(ctx, [[*steps, step]], self.judge, self.delimiter)
            return 0.0 if score is None else score
        prefix = router_prefix(steps, step, self.delimiter)
        states = await ctx.hidden_states(probe.card.layers, prefix, backend=DRAFT)
        return float(probe.predict(states.reshape(1, -1))[0])

    async def trace(self, ctx: Context, probe: Probe | None, tau: float, done: list[Candidate]) -> Candidate:
        """One trace, each step routed to the draft or the target (Algorithm 1)."""
        decoding = self.decoding()
        at = ctx.meter.elapsed  # when the trace started, on the run's clock
        steps: list[str] = []
        outputs: list[float] = []
        escalated = kept = draft_tokens = target_tokens = 0
        chosen: Completion | None = None
        finished = False
        while len(steps) < self.max_steps and kept < self.max_tokens:
            cap = min(self.step_tokens, self.max_tokens - kept)
            draft = await sample_step(ctx, decoding, steps, DRAFT, cap)
            draft_tokens += draft.output_tokens
            y = await self.route(ctx, probe, steps, draft.text)
            outputs.append(y)
            chosen = draft
            if (y > tau) if probe is not None else (y <= tau):
                escalated += 1
                chosen = await sample_step(ctx, decoding, steps, TARGET, cap)
                target_tokens += chosen.output_tokens
            steps.append(chosen.text)
            kept += chosen.output_tokens
            finished = ends_solution(chosen)
            if finished:
                break
        text = self.delimiter.join(steps)
        [verdict] = await ctx.verify([text])
        candidate = Candidate(
            text=text,
            answer=verdict.answer,
            score=verdict.score,
            output_tokens=kept,
            finish_reason=chosen.finish_reason if finished and chosen is not None else "length",
            seconds=ctx.meter.elapsed - at,
            started=at,
            scores={
                "steps": float(len(steps)),
                "escalated": float(escalated),
                "escalation_rate": escalated / len(steps) if steps else 0.0,
                "router_mean": sum(outputs) / len(outputs) if outputs else 0.0,
                "draft_tokens": float(draft_tokens),
                "target_tokens": float(target_tokens),
            },
        )
        done.append(candidate)
        return candidate
