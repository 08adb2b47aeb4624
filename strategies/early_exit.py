"""LYNX early exit, online on the engine; with n > 1, self-consistency over it.

"LYNX: Learning Dynamic Exits for Confidence-Controlled Reasoning" (Akgül et al., arXiv 2512.05325):

    for each of n traces (concurrent requests, so the engine batches them):
        stream tokens; at each decision point of the probe's cue set (token t):
            p = probe(hidden states of prompt + tokens[:t])      # read while decoding goes on
            if conformal prediction set of p == {safe}: cancel the trace in the engine; break
        if exited: answer = greedy(prompt + tokens[:t-1] + exit phrase), cut when `}` closes
    answer = the trace's answer (n = 1) or the majority vote over the traces' answers

The probe artefact fixes the cue set, layers, exit phrase and calibrated rule (alpha); it is
refused for any other model than the one it was trained on. While a probe reads hidden states
the engine keeps decoding, so a few tokens past the exit point are decoded and charged. Each
candidate records where it stopped: ``scores`` has ``exit_token`` (0: ran to the end),
``probe`` (last probe output), ``decision_points`` (points scored) and ``exit_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from reasoning import STRATEGIES, Candidate, Context, Problem, Result, Sampling
from reasoning.errors import ConfigError
from reasoning.probes.cues import CueSet
from reasoning.probes.exit import read_answer
from reasoning.probes.heads import ProbeHead
from reasoning.probes.probe import Probe, load_probe, model_of
from reasoning.strategies.sampled import Sampled


@STRATEGIES.register("early-exit", "lynx", "early_exit")
@dataclass(frozen=True, kw_only=True)
class EarlyExit(Sampled):
    """Stop each trace at the first decision point where the calibrated probe says it is safe."""

    needs_hidden_states: ClassVar[bool] = True

    probe: str = ""
    """Path of a calibrated exit-probe artefact (``reasoning probe calibrate``); empty: the one
    shipped for the model (`reasoning.probes.probe.shipped`)."""
    n: int = 1
    """Traces; more than one = self-consistency whose traces each stop early."""
    exit_tokens: int = 32
    """Most tokens of the forced answer."""

    def __post_init__(self) -> None:
        if self.n < 1 or self.exit_tokens < 1:
            raise ConfigError("early-exit: n and exit_tokens must be >= 1")
        super().__post_init__()

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        """Run n traces concurrently, each exiting early on its own, then vote."""
        probe = load_probe(self.probe, model_of(ctx), "exit", problem=ctx.problem)
        return Result.vote(await ctx.run_all(*(self.trace(ctx, probe) for _ in range(self.n))))

    async def trace(self, ctx: Context, probe: Probe) -> Candidate:
        """One trace with online exits."""
        rule, card, head = probe.rule, probe.card, ProbeHead(probe)
        if rule is None:  # load_probe refuses uncalibrated exit probes; a probe changed since?
            raise ConfigError(f"early-exit: probe {self.probe} has no calibrated exit rule")
        cues = CueSet.from_dict(card.cues)
        scored, p, exit_at = 0, float("nan"), 0
        # Not recorded as it streams: an exited trace lives on in the forced answer's candidate.
        async with ctx.trace(ctx.request(self.sampling(logprobs=0)), record=False) as live:
            tokens = live.tokens()
            async for _ in live:
                for position in cues.events(tokens)[scored:]:
                    scored += 1
                    # The probe runs where the states are read (on a replica pool: beside its engine).
                    p = await ctx.mapped_hidden_states(head, card.layers, "".join(tokens[:position]))
                    if rule.exit(p):
                        exit_at = position
                        break
                if exit_at:
                    break  # leaving the trace cancels it in the engine
        [trace] = live.completions
        scores = {"decision_points": float(scored), "exit_token": float(exit_at)}
        if scored:  # records hold no NaN (JSON null would not read back as a float)
            scores["probe"] = p
        if not exit_at:
            ctx.record([trace])
            [candidate] = await ctx.candidates([trace])
            return candidate.with_scores(**scores, exit_tokens=0.0)
        prefix = "".join(tokens[: exit_at - 1]) + card.exit_phrase
        forced = ctx.request(Sampling(temperature=0.0, max_tokens=self.exit_tokens), prefix)
        answer, spent = await read_answer(ctx.stream(forced))
        text = prefix + answer
        [verdict] = await ctx.verify([text])
        return Candidate(
            text=text,
            answer=verdict.answer,
            score=verdict.score,
            output_tokens=trace.output_tokens + spent,
            finish_reason="exit",
            prompt_tokens=trace.prompt_tokens,
            cached_tokens=trace.cached_tokens,
            seconds=ctx.meter.elapsed - trace.started,  # the trace and its forced answer
            started=trace.started,
            backend=trace.backend,
            scores={**scores, "exit_tokens": float(spent), "decoded_past_exit": float(len(tokens) - exit_at)},
        )
