"""Arbitrage (advantage routing), its RSD baseline, and the router's data and calibration (scripted)."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from reasoning import Budget, Controller, Problem, Request, ScriptedBackend
from reasoning.cli.probe import probe_app
from reasoning.engine.models import fingerprint
from reasoning.errors import ConfigError
from reasoning.evals.router_data import AdvantageCollection, collect_advantage
from reasoning.probes.advantage import calibrate_router, router_prefix, threshold_for_rate
from reasoning.probes.data import DecisionPoints
from reasoning.probes.probe import (
    Probe,
    ProbeCard,
    ProbeMismatch,
    calibrate,
    load_probe,
    spearman,
    train_probe,
)
from reasoning.strategies import Arbitrage
from reasoning.verifiers.step_judge import JUDGE_PREFIX, STEP_JUDGE_PROMPT

DRAFT_MODEL, TARGET_MODEL = "small", "large"
SMALL = fingerprint(DRAFT_MODEL)
HIDDEN, LAYERS = 3, [1, 2]
PROBLEM = Problem("p", "What is 2+2?", answer="4")

# The draft gets the sum wrong ("5") at steps 2 and 3; the target gets every step right.
DRAFT_STEPS = ["Let x be 2.", "Then x+x is 5.", "So \\boxed{5}"]
TARGET_STEPS = ["Let x be 2.", "Then x+x is 4.", "So \\boxed{4}"]


def steps_so_far(request: Request) -> int:
    return request.prefix.count("\n\n")


def writer(steps: list[str]):
    """Writes step k (k = steps in the prefix), followed by the delimiter and more text."""

    def script(request: Request, number: int) -> str:
        k = steps_so_far(request)
        return steps[k] if k == len(steps) - 1 else steps[k] + "\n\nand more"

    return script


def judged_last_step(request: Request) -> str:
    return request.messages[-2].content.split("\n\n")[-2]  # each step ends with the delimiter


def target_script(judge=lambda step: "2" if "5" in step else "9"):
    """The target writes its steps, and as judge scores a step with a 5 in it 2, others 9."""
    write = writer(TARGET_STEPS)

    def script(request: Request, number: int) -> str:
        if request.prefix == JUDGE_PREFIX:
            assert request.messages[-1].content == STEP_JUDGE_PROMPT
            return judge(judged_last_step(request))
        return write(request, number)

    return script


def draft_states(request: Request, layers, positions) -> np.ndarray:
    """Feature 0 = +3 when the newest step of the prefix has a 5 in it, -3 otherwise (0: prompt)."""
    steps = [s for s in request.prefix.split("\n\n") if s]
    value = 0.0 if not steps else (3.0 if "5" in steps[-1] else -3.0)
    row = np.array([value, 1.0, 0.0], dtype=np.float32)
    return np.tile(row, (len(positions), len(layers), 1))


def backends(hidden=True) -> dict[str, ScriptedBackend]:
    return {
        "draft": ScriptedBackend(
            writer(DRAFT_STEPS), model=DRAFT_MODEL, hidden_states=draft_states if hidden else None
        ),
        "target": ScriptedBackend(target_script(), model=TARGET_MODEL),
    }


def router(tmp_path, kind="advantage", model=SMALL, threshold: float | None = 0.5, name="router") -> str:
    """A logistic router on feature 0: P(target better) = sigmoid(2 * feature 0)."""
    width = HIDDEN * len(LAYERS)
    w = np.zeros((1, width), dtype=np.float32)
    w[0, 0] = 2.0
    card = ProbeCard(
        kind=kind,
        model={"name": model.name, "sha256": model.sha256},
        layers=LAYERS,
        hidden_size=HIDDEN,
        position="step-end",
        hidden=[],
        training_data_sha256="0" * 64,
        router=None
        if threshold is None
        else {
            "escalate_rate": 0.3,
            "threshold": threshold,
            "calibration_escalation_rate": 0.3,
            "spearman": 0.5,
            "auroc": 0.8,
            "steps": 10,
        },
    )
    arrays = {"mean": np.zeros(width), "scale": np.ones(width), "w0": w, "b0": np.zeros(1)}
    return str(Probe(card, arrays).save(tmp_path / name))


def generation_prefixes(backend: ScriptedBackend) -> list[str]:
    return [r.prefix for r in backend.requests if r.prefix != JUDGE_PREFIX]


# -- the strategy ----------------------------------------------------------------------------------


async def test_the_router_escalates_exactly_the_steps_it_scores_above_tau(tmp_path) -> None:
    pair = backends()
    run = await Controller(pair).run(PROBLEM, Arbitrage(probe=router(tmp_path)))
    [candidate] = run.candidates
    assert run.answer == "4" and candidate.text == "\n\n".join(TARGET_STEPS)
    assert candidate.scores["steps"] == 3 and candidate.scores["escalated"] == 2
    assert candidate.scores["escalation_rate"] == pytest.approx(2 / 3)
    sigmoid = 1 / (1 + math.exp(-6))
    assert candidate.scores["router_mean"] == pytest.approx((1 - sigmoid + 2 * sigmoid) / 3)
    # The router read the draft's states after each draft step (and its delimiter).
    assert [r.prefix for r in pair["draft"].hidden_requests] == [
        router_prefix([], DRAFT_STEPS[0]),
        router_prefix(DRAFT_STEPS[:1], DRAFT_STEPS[1]),
        router_prefix(TARGET_STEPS[:2], DRAFT_STEPS[2]),
    ]
    # Each escalated step is regenerated by the target from the draft step's own prefix.
    draft_prefixes = generation_prefixes(pair["draft"])
    assert draft_prefixes == ["", "Let x be 2.\n\n", "Let x be 2.\n\nThen x+x is 4.\n\n"]
    assert generation_prefixes(pair["target"]) == draft_prefixes[1:]
    assert candidate.scores["target_tokens"] == 6 and candidate.scores["draft_tokens"] == 10


async def test_each_model_is_metered_on_its_own_line(tmp_path) -> None:
    run = await Controller(backends()).run(PROBLEM, Arbitrage(probe=router(tmp_path)))
    draft, target = run.usage_by_backend["draft"], run.usage_by_backend["target"]
    # Draft: 3 steps (4 + 4 + 2 scripted tokens) and 3 router reads (one call, one token each).
    assert draft["calls"] == 6 and draft["output_tokens"] == 13
    assert target["calls"] == 2 and target["output_tokens"] == 6
    assert run.usage["output_tokens"] == 19 and run.backends == {"draft": "small", "target": "large"}
    # The trace's start, and each step it sampled on either model, on the run's clock.
    [candidate] = run.candidates
    assert 0 < candidate.started <= min(c.started for c in run.calls) and candidate.seconds > 0
    assert [c.backend for c in run.calls].count("draft") == 3 and len(run.calls) == 5


async def test_tau_overrides_the_calibrated_threshold(tmp_path) -> None:
    path = router(tmp_path, threshold=0.999)  # the card's tau never escalates
    pair = backends()
    never = await Controller(pair).run(PROBLEM, Arbitrage(probe=path))
    assert never.answer == "5" and never.candidates[0].scores["escalated"] == 0
    assert pair["target"].requests == [] and never.usage_by_backend["target"]["calls"] == 0
    always = await Controller(backends()).run(PROBLEM, Arbitrage(probe=path, tau=0.0))
    assert always.answer == "4" and always.candidates[0].scores["escalation_rate"] == 1.0
    # An uncalibrated router needs tau; given one, it routes.
    bare = router(tmp_path, threshold=None, name="bare")
    with pytest.raises(ConfigError, match="no escalation threshold"):
        await Controller(backends()).run(PROBLEM, Arbitrage(probe=bare))
    run = await Controller(backends()).run(PROBLEM, Arbitrage(probe=bare, tau=0.5))
    assert run.answer == "4"


async def test_rsd_mode_thresholds_the_targets_judgement_of_the_draft_step() -> None:
    pair = backends(hidden=False)  # the judge router needs no hidden states
    strategy = Arbitrage(router="judge")
    assert not strategy.needs_hidden_states and Arbitrage(probe="x").needs_hidden_states
    run = await Controller(pair).run(PROBLEM, strategy)
    [candidate] = run.candidates
    assert run.answer == "4" and candidate.scores["escalated"] == 2
    assert candidate.scores["router_mean"] == pytest.approx((9 + 2 + 2) / 3)
    judged = [r for r in pair["target"].requests if r.prefix == JUDGE_PREFIX]
    assert [judged_last_step(r) for r in judged] == [DRAFT_STEPS[0], DRAFT_STEPS[1], DRAFT_STEPS[2]]
    assert all(r.sampling.max_tokens == 1 and r.sampling.logprobs == 10 for r in judged)
    assert run.usage_by_backend["target"]["calls"] == 5  # 3 judgements + 2 regenerated steps
    lenient = await Controller(backends(hidden=False)).run(PROBLEM, Arbitrage(router="judge", tau=1.0))
    assert lenient.answer == "5" and lenient.candidates[0].scores["escalated"] == 0


async def test_n_traces_run_concurrently_and_vote(tmp_path) -> None:
    pair = backends()
    run = await Controller(pair).run(PROBLEM, Arbitrage(probe=router(tmp_path), n=3))
    assert run.answer == "4" and len(run.candidates) == 3
    assert all(c.scores["escalated"] == 2 for c in run.candidates)
    first_steps = [r for r in pair["draft"].requests if r.prefix == ""]
    assert len({r.sampling.seed for r in first_steps}) == 3


async def test_token_budget_and_max_steps_stop_a_trace(tmp_path) -> None:
    capped = await Controller(backends()).run(PROBLEM, Arbitrage(probe=router(tmp_path), max_steps=2))
    assert capped.candidates[0].scores["steps"] == 2 and capped.candidates[0].finish_reason == "length"
    short = await Controller(backends()).run(PROBLEM, Arbitrage(probe=router(tmp_path), max_tokens=6))
    assert short.candidates[0].output_tokens <= 6 and short.candidates[0].scores["steps"] == 2


async def test_a_budget_stop_never_reads_a_lone_step_as_the_answer(tmp_path) -> None:
    controller = Controller(backends(), budgets={"target": Budget(calls=1)})
    run = await controller.run(PROBLEM, Arbitrage(probe=router(tmp_path)))
    # The second escalation (step 3) is over the target's line; the draft's step 3 says "5".
    assert run.stop_reason == "budget:target.calls" and run.answer is None
    assert run.usage_by_backend["target"]["calls"] == 1


async def test_missing_backends_wrong_model_and_wrong_kind_are_refused(tmp_path) -> None:
    path = router(tmp_path)
    with pytest.raises(ConfigError, match="backends named draft and target.*missing draft, target"):
        await Controller(ScriptedBackend(["x"])).run(PROBLEM, Arbitrage(probe=path))
    with pytest.raises(ConfigError, match="missing target"):
        await Controller({"draft": backends()["draft"]}).run(PROBLEM, Arbitrage(probe=path))
    other = router(tmp_path, model=fingerprint(TARGET_MODEL), name="for-target")
    with pytest.raises(ProbeMismatch, match="'large'"):
        await Controller(backends()).run(PROBLEM, Arbitrage(probe=other))
    exit_probe = router(tmp_path, kind="exit", threshold=None, name="exit")
    with pytest.raises(ConfigError, match="advantage probe is needed"):
        await Controller(backends()).run(PROBLEM, Arbitrage(probe=exit_probe))
    with pytest.raises(ConfigError, match="does not exist"):
        await Controller(backends()).run(PROBLEM, Arbitrage(probe=str(tmp_path / "none.json")))
    with pytest.raises(ConfigError, match="router artefact"):
        Arbitrage()
    with pytest.raises(ConfigError, match="router must be"):
        Arbitrage(router="prm", probe="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n, step_tokens and max_tokens"):
        Arbitrage(probe="x", n=0)


# -- data collection -------------------------------------------------------------------------------


async def test_collection_labels_paired_steps_and_reads_the_drafts_states() -> None:
    pair = backends()
    traces, data = await collect_advantage(pair, [PROBLEM], LAYERS)
    [trace] = traces
    assert [r["advantage"] for r in trace["steps"]] == [0.0, 7.0, 7.0]
    assert [r["label"] for r in trace["steps"]] == [0, 1, 1]
    assert [r["followed"] for r in trace["steps"]] == ["draft"] * 3
    assert trace["answer"] == "5" and trace["correct"] == 0
    assert list(data.labels) == [0, 1, 1] and list(data.advantage) == [0.0, 7.0, 7.0]
    assert list(data.position) == [1, 2, 3] and list(data.trace) == [0, 0, 0]
    assert data.features.shape == (3, HIDDEN * len(LAYERS))
    assert list(data.features[:, 0]) == [-3.0, 3.0, 3.0] and data.prompt_features[0, 0] == 0.0
    assert data.meta["model"]["sha256"] == SMALL.sha256 and data.meta["label"]["margin"] == 1.0
    # Both models decode each step from the same prefix; the states are read after the draft step.
    assert generation_prefixes(pair["draft"]) == generation_prefixes(pair["target"])
    assert [r.prefix for r in pair["draft"].hidden_requests][1:] == [
        router_prefix(DRAFT_STEPS[:k], DRAFT_STEPS[k]) for k in range(3)
    ]
    assert trace["usage_by_backend"]["target"]["calls"] == 9  # 3 steps + 6 judgements


async def test_collection_margin_oracle_following_and_unreadable_scores() -> None:
    _, strict = await collect_advantage(
        backends(), [PROBLEM], LAYERS, settings=AdvantageCollection(margin=7.0)
    )
    assert list(strict.labels) == [0, 0, 0]
    [trace], _ = await collect_advantage(
        backends(), [PROBLEM], LAYERS, settings=AdvantageCollection(follow="oracle")
    )
    assert [r["followed"] for r in trace["steps"]] == ["draft", "target", "target"]
    assert trace["answer"] == "4" and trace["correct"] == 1
    pair = backends()
    pair["target"] = ScriptedBackend(
        target_script(judge=lambda step: "unsure" if "Let" in step else "9"), model=TARGET_MODEL
    )
    [trace, _], data = await collect_advantage(pair, [PROBLEM, Problem("q", "2+2?")], LAYERS)
    assert trace["steps"][0]["label"] is None and list(data.labels) == [0, 0, 0, 0]
    assert list(data.trace) == [0, 0, 1, 1] and list(data.position) == [2, 3, 2, 3]
    with pytest.raises(ConfigError, match="missing"):
        await collect_advantage({"draft": pair["draft"]}, [PROBLEM], LAYERS)
    with pytest.raises(ConfigError, match="follow"):
        AdvantageCollection(follow="best")  # type: ignore[arg-type]


# -- training and calibration ----------------------------------------------------------------------


def synthetic(seed: int, traces=40, steps=6) -> DecisionPoints:
    """Steps whose advantage shows in feature 0 of every layer (plus noise); label = Delta > 1."""
    rng = np.random.default_rng(seed)
    n = traces * steps
    delta = rng.normal(0.5, 2.0, size=n).astype(np.float32)
    features = rng.normal(size=(n, HIDDEN * len(LAYERS))).astype(np.float32)
    features[:, 0] += delta
    features[:, HIDDEN] += delta
    return DecisionPoints(
        features=features,
        labels=(delta > 1.0).astype(np.int8),
        trace=np.repeat(np.arange(traces), steps).astype(np.int32),
        position=np.tile(np.arange(1, steps + 1), traces).astype(np.int32),
        prompt_features=np.zeros((traces, HIDDEN * len(LAYERS)), dtype=np.float32),
        trace_correct=rng.integers(0, 2, size=traces).astype(np.int8),
        advantage=delta,
        meta={
            "model": {"name": SMALL.name, "sha256": SMALL.sha256},
            "layers": LAYERS,
            "label": {"margin": 1.0},
            "dataset": f"synthetic-{seed}",
        },
    )


FAST = {"epochs": 60, "learning_rate": 0.05, "force": True}
"""Logistic training converges in a few dozen full-batch steps at this rate."""


def test_spearman_and_the_threshold_for_a_rate() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=50)
    assert spearman(a, 3 * a + 1) == pytest.approx(1.0) and spearman(a, -np.exp(a)) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    p = rng.random(100)
    for rate in (0.0, 0.1, 0.3, 1.0):
        assert np.mean(p > threshold_for_rate(p, rate)) == pytest.approx(rate)
    with pytest.raises(ConfigError, match="escalate_rate"):
        threshold_for_rate(p, 1.5)


def test_data_with_advantages_round_trips(tmp_path) -> None:
    data = synthetic(0)
    data.save(tmp_path / "d")
    back = DecisionPoints.load(tmp_path / "d")
    assert back.advantage is not None and np.allclose(back.advantage, data.advantage)
    part = back.subset(np.array([1, 3]))
    assert part.advantage is not None and len(part.advantage) == len(part) == 12


@pytest.mark.usefixtures("one_torch_thread")
async def test_trained_and_calibrated_router_routes_the_bad_steps(tmp_path) -> None:
    train, calib = synthetic(0), synthetic(1)
    train.save(tmp_path / "train")
    calib.save(tmp_path / "calib")
    probe = train_probe(train, "advantage", hidden=(), seed=0, **FAST)
    assert probe.card.kind == "advantage" and probe.card.position == "step-end"
    assert probe.card.metrics["auroc_val"] > 0.85 and probe.card.metrics["spearman_val"] > 0.5
    assert probe.card.training["label"] == {"margin": 1.0}
    with pytest.raises(ConfigError, match="escalation rate"):
        calibrate(probe, calib, alpha=0.1)
    with pytest.raises(ConfigError, match="disjoint"):
        calibrate_router(probe, train)
    routed = calibrate_router(probe, calib, escalate_rate=0.3)
    r = routed.card.router
    assert r is not None and r.calibration_escalation_rate == pytest.approx(0.3, abs=0.01)
    assert r.spearman > 0.5 and r.auroc > 0.85 and r.margin == 1.0
    assert r.mean_advantage_oracle >= r.mean_advantage_escalated > r.mean_advantage_all
    path = routed.save(tmp_path / "router")
    assert json.loads(path.read_text())["router"]["threshold"] == r.threshold
    run = await Controller(backends()).run(PROBLEM, Arbitrage(probe=str(path)))
    assert run.answer == "4" and run.candidates[0].scores["escalated"] == 2


@pytest.mark.usefixtures("one_torch_thread")
def test_router_calibration_refuses_other_models_and_kinds(tmp_path) -> None:
    probe = train_probe(synthetic(0), "advantage", hidden=(), **FAST)
    other = synthetic(1)
    other.meta["model"] = {"name": "large", "sha256": fingerprint(TARGET_MODEL).sha256}
    with pytest.raises(ProbeMismatch):
        calibrate_router(probe, other)
    no_delta = synthetic(1)
    no_delta.advantage = None
    with pytest.raises(ConfigError, match="advantage of every step"):
        calibrate_router(probe, no_delta)
    exit_probe = Probe(probe.card.model_copy(update={"kind": "exit"}), probe.arrays)
    with pytest.raises(ConfigError, match="needs an advantage probe"):
        calibrate_router(exit_probe, synthetic(1))
    with pytest.raises(ConfigError, match="probe kind"):
        train_probe(synthetic(0), "verdict", hidden=())  # type: ignore[arg-type]
    path = router(tmp_path)
    assert load_probe(path, DRAFT_MODEL, "advantage").card.router is not None


@pytest.mark.usefixtures("one_torch_thread")
def test_probe_cli_trains_and_calibrates_a_router(tmp_path) -> None:
    synthetic(0).save(tmp_path / "train")
    synthetic(1).save(tmp_path / "calib")
    cli = CliRunner()
    trained = cli.invoke(
        probe_app,
        [
            "train",
            "--kind",
            "advantage",
            "--data",
            str(tmp_path / "train"),
            "--out",
            str(tmp_path / "r"),
            "--force",
        ],
    )
    assert trained.exit_code == 0, trained.output
    calibrated = cli.invoke(
        probe_app,
        [
            "calibrate",
            "--probe",
            str(tmp_path / "r"),
            "--data",
            str(tmp_path / "calib"),
            "--escalate-rate",
            "0.2",
        ],
    )
    assert calibrated.exit_code == 0, calibrated.output
    assert "tau=" in calibrated.output and "spearman" in calibrated.output
    card = json.loads((tmp_path / "r.json").read_text())
    assert card["kind"] == "advantage" and card["router"]["escalate_rate"] == 0.2
