"""Advantage-router data: paired draft and target steps from the same prefix, judged, with features.

Labels for the router of Arbitrage (Maheswaran et al., arXiv 2512.05033; ALGORITHMS.md section
6.4, "Router"), collected on a draft/target pair run under one `Controller`:

    for each problem (all concurrently; the engines batch them), one trajectory:
        steps = []
        until an answer / end of text / max_steps / token budget (as `arbitrage` stops):
            z_d, z_t = draft.step(steps), target.step(steps)          # both at once, same prefix
            s_d, s_t = judge(steps + [z_d]), judge(steps + [z_t])     # 0-9, both at once
            features = draft hidden states at steps + z_d + delimiter  # read alongside the judge
            Delta = s_t - s_d ;  y = 1[Delta > margin]
            steps.append(z_d)     (follow="draft"; follow="oracle": z_t if y else z_d)

Choices (documented): the judge is the target model grading each step 0-9 as in SpecReason
(`reasoning.verifiers.step_judge`: one decoded token, top-10 log-probabilities, expected digit),
not P(Yes), because a graded scale gives a graded advantage to rank (Spearman) and to threshold;
the paper scores steps with a PRM, and optionally averages several target samples (not done). A
step whose score has no digit among the top 10 is kept in the trajectory but gives no example.
``margin`` 1.0 on the 0-9 scale (INFERRED: the paper's labels use Delta > 0; the judge's expected
digit moves by fractions of a point between equivalent steps, and a margin keeps such ties out
of the positive class, "clearly better"). ``follow="draft"`` (default) keeps the states the
router will see at its accepted steps; ``"oracle"`` follows the label, so later contexts hold
target steps as they do after escalations at inference.

Features use the layout of `reasoning.probes.data.DecisionPoints`: one event per usable step
(``position`` = its 1-based step number), ``labels`` = y, ``advantage`` = Delta, and per problem
the draft's prompt states and whether the trajectory's answer was right (when there is a gold
answer; the split of `reasoning probe train` stratifies by it). ``reasoning probe train --kind
advantage`` then trains the router and ``calibrate --escalate-rate`` sets its threshold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from reasoning import Backend, Controller, Problem, Result
from reasoning.concurrency import run_all, task_group
from reasoning.engine.models import fingerprint
from reasoning.errors import ConfigError
from reasoning.probes.advantage import router_prefix
from reasoning.probes.data import DecisionPoints
from reasoning.problem import question_sha
from reasoning.strategies.arbitrage import DRAFT, TARGET, DraftSteps, ends_solution, sample_step
from reasoning.strategy import Context
from reasoning.verifiers.grading import grade_async
from reasoning.verifiers.step_judge import judge_steps

__all__ = ["AdvantageCollection", "collect_advantage"]

JUDGE_NAME = "specreason-0-9-expected-digit"
"""How step scores were read (recorded with the data)."""


@dataclass(frozen=True, kw_only=True)
class AdvantageCollection(DraftSteps):
    """How trajectories are rolled and steps labelled; the steps are arbitrage's (`DraftSteps`)."""

    margin: float = 1.0
    """A step is positive iff s_target - s_draft > margin (0-9 judge scale)."""
    follow: Literal["draft", "oracle"] = "draft"
    """Which step continues the trajectory: always the draft's, or the target's when y = 1."""
    judge: str = TARGET
    """Named backend that judges both steps."""

    def __post_init__(self) -> None:
        if self.follow not in ("draft", "oracle"):
            raise ConfigError(f"follow must be draft or oracle, got {self.follow!r}")
        super().__post_init__()


class _Pairs:
    """Rolls one problem's trajectory through a `Context`, keeping labelled steps and features."""

    def __init__(self, settings: AdvantageCollection, layers: Sequence[int]) -> None:
        self.settings = settings
        self.layers = list(layers)
        self.records: list[dict[str, Any]] = []
        self.rows: list[np.ndarray] = []
        self.prompt = np.zeros(0, dtype=np.float32)
        self.text = ""

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        s, decoding = self.settings, self.settings.decoding()
        self.prompt = (await ctx.hidden_states(self.layers, backend=DRAFT)).reshape(-1)
        steps: list[str] = []
        kept = 0
        while len(steps) < s.max_steps and kept < s.max_tokens:
            cap = min(s.step_tokens, s.max_tokens - kept)
            draft, target = await run_all(
                sample_step(ctx, decoding, steps, DRAFT, cap), sample_step(ctx, decoding, steps, TARGET, cap)
            )
            async with task_group() as group:
                judging = group.create_task(
                    judge_steps(ctx, [[*steps, draft.text], [*steps, target.text]], s.judge, s.delimiter)
                )
                prefix = router_prefix(steps, draft.text, s.delimiter)
                reading = group.create_task(ctx.hidden_states(self.layers, prefix, backend=DRAFT))
            (s_d, s_t), state = judging.result(), reading.result()
            advantage = None if s_d is None or s_t is None else s_t - s_d
            label = None if advantage is None else int(advantage > s.margin)
            chosen = target if s.follow == "oracle" and label == 1 else draft
            if label is not None:
                self.rows.append(state.reshape(-1))
            self.records.append(
                {
                    "step": len(steps) + 1,
                    "draft": draft.text,
                    "target": target.text,
                    "draft_score": s_d,
                    "target_score": s_t,
                    "advantage": advantage,
                    "label": label,
                    "followed": DRAFT if chosen is draft else TARGET,
                    "draft_tokens": draft.output_tokens,
                    "target_tokens": target.output_tokens,
                }
            )
            steps.append(chosen.text)
            kept += chosen.output_tokens
            if ends_solution(chosen):
                break
        self.text = s.delimiter.join(steps)
        [verdict] = await ctx.verify([self.text])
        return Result(answer=verdict.answer)


async def collect_advantage(
    backends: Mapping[str, Backend],
    problems: Sequence[Problem],
    layers: Sequence[int],
    *,
    settings: AdvantageCollection = AdvantageCollection(),
    dataset: str = "",
    seed: int = 0,
    concurrency: int = 32,
    on_trace: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], DecisionPoints]:
    """Roll, judge and label every problem's trajectory (see module doc); traces and features.

    Raises:
        ConfigError: the backends lack ``draft`` or ``target`` (or the judge), or no layers.
    """
    missing = [n for n in (DRAFT, TARGET, settings.judge) if n not in backends]
    if missing:
        raise ConfigError(f"collect-advantage needs backends named draft and target; missing {missing}")
    if not layers:
        raise ConfigError("collect-advantage needs the draft's layers to read")
    controller = Controller(dict(backends), seed=seed)
    models = {name: str(getattr(b, "model", "") or b.name) for name, b in backends.items()}
    header = {
        "model": asdict(fingerprint(models[DRAFT])),
        "target": asdict(fingerprint(models[TARGET])),
        "judge": {"backend": settings.judge, "model": models[settings.judge], "score": JUDGE_NAME},
        "label": {"margin": settings.margin, "rule": "advantage > margin", "scale": [0, 9]},
        "settings": asdict(settings),
        "layers": list(layers),
        "seed": seed,
    }
    gate = asyncio.Semaphore(concurrency)

    async def one(problem: Problem) -> tuple[dict[str, Any], _Pairs]:
        pairs = _Pairs(settings, layers)
        async with gate:
            run = await controller.run(problem, pairs)
        trace = {
            "problem_id": problem.id,
            "question": problem.question,
            "gold": problem.answer,
            "kind": problem.kind,
            "text": pairs.text,
            "answer": run.answer,
            "correct": int(bool((await grade_async(problem, run.answer)).correct)),
            "steps": pairs.records,
            "usage_by_backend": run.usage_by_backend,
            "collection": header,
        }
        if on_trace is not None:
            on_trace(trace)
        return trace, pairs

    results = await run_all(*(one(p) for p in problems))
    traces = [t for t, _ in results]
    usable = [[r for r in t["steps"] if r["label"] is not None] for t in traces]
    width = len(results[0][1].prompt) if results else 0
    rows = [row for _, pairs in results for row in pairs.rows]
    data = DecisionPoints(
        features=(np.stack(rows) if rows else np.zeros((0, width))).astype(np.float16),
        labels=np.array([r["label"] for steps in usable for r in steps], dtype=np.int8),
        trace=np.array([i for i, steps in enumerate(usable) for _ in steps], dtype=np.int32),
        position=np.array([r["step"] for steps in usable for r in steps], dtype=np.int32),
        prompt_features=np.stack([p.prompt for _, p in results]).astype(np.float16)
        if results
        else np.zeros((0, width), dtype=np.float16),
        trace_correct=np.array([t["correct"] for t in traces], dtype=np.int8),
        advantage=np.array([r["advantage"] for steps in usable for r in steps], dtype=np.float32),
        meta={
            **{k: header[k] for k in ("model", "target", "judge", "label", "layers")},
            "position": "step-end",
            "sampling": asdict(settings),
            "dataset": dataset,
            "traces": [
                {
                    "problem_id": t["problem_id"],
                    "question_sha": question_sha(t["question"]),
                    "correct": t["correct"],
                    "events": len(u),
                }
                for t, u in zip(traces, usable, strict=True)
            ],
        },
    )
    return traces, data
