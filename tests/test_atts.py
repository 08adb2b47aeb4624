"""ATTS: conformal p-values, rejection rate vs alpha, the strategy on scripted draft/target, the artefact."""

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke

from reasoning import STRATEGIES, Budget, ConfigError, Controller, Problem, Request, ScriptedBackend
from reasoning.engine.models import fingerprint
from reasoning.evals.leaderboard.stats import wilson
from reasoning.probes.atts_calibration import (
    AttsCalibration,
    CalibrationMismatch,
    ChunkSettings,
    collect_calibration,
    load_calibration,
    p_value,
)
from reasoning.probes.conformal import conformal_p_value
from reasoning.strategies import ATTS
from reasoning.strategy import request_seed

DRAFT, TARGET = "draft-model", "target-model"


def save_calibration(path: Path, scores: dict[str, list[float]]) -> Path:
    d, t = fingerprint(DRAFT), fingerprint(TARGET)
    frozen = {k: tuple(sorted(v)) for k, v in scores.items()}
    calibration = AttsCalibration((d.name, d.sha256), (t.name, t.sha256), ChunkSettings(), 4, frozen, "test")
    return calibration.save(path)


# Target log-probabilities by word: the chunk "good start" has PPL e^0.6, "bad step" e^1.2; all
# other words (the prompt) -5, so a PPL that took in any token before the chunk would move.
WORDS = {"good": -0.6, "start": -0.6, "bad": -1.4, "step": -1.0}


def by_word(request: Request, position: int, token: str) -> float:
    return WORDS.get(token.strip(), -5.0)


def pair(
    draft: Callable[[Request, int], str],
    target: str = "so \\boxed{4}\n\nmore",
    logprob: Callable[[Request, int, str], float] = by_word,
    **draft_options: object,
) -> tuple[ScriptedBackend, ScriptedBackend]:
    return (
        ScriptedBackend(draft, model=DRAFT, **draft_options),  # type: ignore[arg-type]
        ScriptedBackend([target], model=TARGET, prompt_logprob=logprob),
    )


# ---- the p-value and the rule ---------------------------------------------------------------------


def test_rank_formulation_equals_the_counting_p_value() -> None:
    rng = np.random.default_rng(7)
    for n in (1, 4, 17, 200):
        calibration = np.sort(rng.integers(0, 12, n).astype(float))  # ties on purpose
        for ppl in [*rng.integers(-1, 14, 50).astype(float), *calibration]:
            assert p_value(ppl, calibration) == pytest.approx(conformal_p_value(ppl, calibration))


def test_exact_rejection_rate_is_at_most_alpha_unlike_the_code_percentile_rule() -> None:
    # A test PPL exchangeable with n distinct calibration PPLs has rank r = #{cal < ppl} uniform on
    # 0..n, so a rule's rejection rate is exactly its share of ranks.
    for n in (4, 10, 16, 99, 1000):
        calibration = np.arange(1.0, n + 1)
        for alpha in (0.05, 0.2, 0.4, 0.5, 0.6):
            conformal = {r for r in range(n + 1) if p_value(r + 0.5, calibration) <= alpha}
            code = {r for r in range(n + 1) if r / n >= 1 - alpha}  # authors' threshold 1 - alpha
            assert len(conformal) / (n + 1) == math.floor((n + 1) * alpha + 1e-9) / (n + 1) <= alpha
            assert conformal <= code and len(code - conformal) <= 1  # agree up to one rank
    # Where they differ: n = 10, alpha = 0.4, the code rejects 5/11 > alpha, the p-value 4/11.
    calibration = np.arange(1.0, 11)
    assert p_value(6.5, calibration) > 0.4 and 6 / 10 >= 0.6


@pytest.mark.parametrize("alpha", [0.2, 0.4, 0.6])
def test_measured_rejection_rate_tracks_alpha_on_held_out_scores(alpha: float) -> None:
    rng = np.random.default_rng(2509_15148)
    rejected = trials = 0
    for _ in range(2000):  # many calibration / test splits of i.i.d. (exchangeable) PPLs
        scores = np.exp(rng.normal(1.0, 0.4, 99 + 5))
        calibration, test = np.sort(scores[:99]), scores[99:]
        rejected += sum(p_value(s, calibration) <= alpha for s in test)
        trials += len(test)
    low, high = wilson(rejected, trials)
    assert low <= alpha <= high, (rejected / trials, low, high)
    assert rejected / trials <= alpha + 2.5 * math.sqrt(alpha * (1 - alpha) / trials)


# ---- the strategy on scripted draft and target ----------------------------------------------------


def two_turns(request: Request, number: int) -> str:
    return {"": "good start\n\nx", "good start\n\n": "bad step\n\ny"}.get(request.prefix, "never")


async def test_chunks_are_accepted_or_taken_over_by_their_p_value(tmp_path: Path, problem: Problem) -> None:
    # Calibration PPLs 1..4, alpha 0.4: "good start" (e^0.6 = 1.82) has p = 4/5, accepted;
    # "bad step" (e^1.2 = 3.32) has p = 2/5 <= alpha, taken over: the target continues after it.
    cal = save_calibration(tmp_path / "cal.json", {"q": [1.0, 2.0, 3.0, 4.0]})
    draft, target = pair(two_turns)
    strategy = ATTS(calibration=str(cal), n=2, alpha=0.4, target_tokens=32, target_temperature=0.5)
    run = await Controller({"draft": draft, "target": target}).run(problem, strategy)
    assert run.answer == "4"
    assert [r.prefix for r in draft.requests] == ["", "", "good start\n\n", "good start\n\n"]
    assert all(r.sampling.stop == ("\n\n",) and r.sampling.max_tokens == 128 for r in draft.requests)
    assert all(r.sampling.temperature == 0.8 for r in draft.requests)
    assert [r.prefix for r in target.scored_requests] == ["good start"] * 2 + ["good start\n\nbad step"] * 2
    # The target continues from the draft prefix (the rejected chunk kept), with its own sampling.
    assert [r.prefix for r in target.requests] == ["good start\n\nbad step\n\n"] * 2
    assert {(r.sampling.max_tokens, r.sampling.temperature) for r in target.requests} == {(32, 0.5)}
    for candidate in run.candidates:
        assert candidate.text == "good start\n\nbad step\n\nso \\boxed{4}\n\n"
        assert candidate.scores == {
            "turns": 2.0,
            "chunks": 2.0,
            "rejected": 1.0,
            "rejection_rate": 0.5,
            "draft_tokens": 4.0,
            "target_tokens": 2.0,
            "mean_p_value": pytest.approx((0.8 + 0.4) / 2),
            "mean_ppl": pytest.approx((math.exp(0.6) + math.exp(1.2)) / 2),
        }
        assert candidate.output_tokens == 6 and candidate.finish_reason == "stop"
    draft_used, target_used = run.usage_by_backend["draft"], run.usage_by_backend["target"]
    assert (draft_used["calls"], draft_used["output_tokens"]) == (4, 8)
    # Per sample: two prefills (one token each, as metered) and one continuation of two tokens.
    assert (target_used["calls"], target_used["output_tokens"]) == (6, 2 * 2 + 2 * 2)
    # Each sample's start, and each draft chunk and target continuation, on the run's clock.
    assert all(c.started > 0 for c in run.candidates)
    assert sorted(c.backend for c in run.calls) == ["draft"] * 4 + ["target"] * 2
    assert min(c.started for c in run.candidates) <= min(c.started for c in run.calls)


async def test_a_lower_alpha_accepts_the_same_chunk(tmp_path: Path, problem: Problem) -> None:
    cal = save_calibration(tmp_path / "cal.json", {"q": [1.0, 2.0, 3.0, 4.0]})
    draft, target = pair(lambda r, i: {"": "good start\n\n"}.get(r.prefix, "bad step"))
    run = await Controller({"draft": draft, "target": target}).run(
        problem, ATTS(calibration=str(cal), n=1, alpha=0.39)
    )
    assert target.requests == [] and run.candidates[0].scores["rejected"] == 0.0


async def test_a_sample_ends_when_the_model_ends_its_text(tmp_path: Path, problem: Problem) -> None:
    # "good start" ends without the delimiter (end of text): no second turn, though no answer.
    cal = save_calibration(tmp_path / "cal.json", {"q": [1.0, 2.0, 3.0, 4.0]})
    draft, target = pair(lambda r, i: "good start")
    run = await Controller({"draft": draft, "target": target}).run(
        problem, ATTS(calibration=str(cal), n=1, turns=5)
    )
    [candidate] = run.candidates
    assert candidate.scores["turns"] == 1.0 and candidate.finish_reason == "stop"
    assert candidate.text == "good start" and len(draft.requests) == 1


async def test_turns_cap_a_sample_that_never_answers(tmp_path: Path, problem: Problem) -> None:
    cal = save_calibration(tmp_path / "cal.json", {"q": [1.0, 2.0, 3.0, 4.0]})
    draft, target = pair(lambda r, i: "good start\n\n")
    run = await Controller({"draft": draft, "target": target}).run(
        problem, ATTS(calibration=str(cal), n=1, turns=3)
    )
    [candidate] = run.candidates
    assert candidate.scores["turns"] == 3.0 and candidate.finish_reason == "length"
    assert len(draft.requests) == 3 and target.requests == []


async def test_the_answer_is_the_majority_vote_of_the_samples(tmp_path: Path, problem: Problem) -> None:
    cal = save_calibration(tmp_path / "cal.json", {"q": [1.0, 2.0, 3.0, 4.0]})
    answers = iter(["\\boxed{4}", "\\boxed{5}", "\\boxed{5}"])
    draft, target = pair(lambda r, i: next(answers), logprob=lambda r, i, t: -0.1)
    run = await Controller({"draft": draft, "target": target}).run(problem, ATTS(calibration=str(cal), n=3))
    assert [c.answer for c in run.candidates] == ["4", "5", "5"]
    assert (run.answer, run.chosen) == ("5", 1)


async def test_samples_run_without_a_barrier(tmp_path: Path, problem: Problem) -> None:
    # The first sample's first chunk takes 21 tokens at 20 ms; the other needs three one-token
    # chunks. With a barrier per turn the fast one would wait for the slow chunk at every turn.
    cal = save_calibration(tmp_path / "cal.json", {"q": [1.0, 2.0, 3.0, 4.0]})
    first: list[int] = []

    def script(request: Request, number: int) -> str:
        if request.prefix == "" and not first:
            first.append(number)
            return "slow " * 20 + "\\boxed{1}"
        return {"": "fast\n\n", "fast\n\n": "faster\n\n"}.get(request.prefix, "\\boxed{2}")

    draft, target = pair(script, logprob=lambda r, i, t: -0.1, seconds_per_token=0.02)
    run = await Controller({"draft": draft, "target": target}).run(problem, ATTS(calibration=str(cal), n=2))
    slow, fast = run.candidates
    assert slow.text.startswith("slow") and fast.text == "fast\n\nfaster\n\n\\boxed{2}"
    order = [r.prefix.split()[0] for r in target.scored_requests]
    assert order == ["fast", "fast", "fast", "slow"]


async def test_a_budget_stop_votes_over_the_finished_samples(tmp_path: Path, problem: Problem) -> None:
    cal = save_calibration(tmp_path / "cal.json", {"q": [1.0, 2.0, 3.0, 4.0]})
    first: list[int] = []

    def script(request: Request, number: int) -> str:
        if request.prefix == "" and not first:
            first.append(number)
            return "\\boxed{7}"
        return "good start\n\n"

    draft, target = pair(script, logprob=lambda r, i, t: -0.1)
    controller = Controller({"draft": draft, "target": target}, budgets={"draft": Budget(calls=3)})
    run = await controller.run(problem, ATTS(calibration=str(cal), n=2))
    assert run.stop_reason.startswith("budget:") and run.answer == "7"
    assert [c.finish_reason for c in run.candidates] == ["stop", "cancelled"]


async def test_conditional_coverage_compares_with_the_problems_own_chunks(
    tmp_path: Path, problem: Problem
) -> None:
    # "good start" (1.82): among p1's [1, 1.1, 1.2, 1.3] p = 1/5, taken over; pooled with another
    # problem's [10..13], p = 5/9, accepted.
    cal = save_calibration(tmp_path / "cal.json", {"p1": [1.0, 1.1, 1.2, 1.3], "p2": [10, 11, 12, 13]})
    for coverage, rejected in (("conditional", 1.0), ("marginal", 0.0)):
        draft, target = pair(lambda r, i: "good start")
        strategy = ATTS(calibration=str(cal), n=1, coverage=coverage)  # type: ignore[arg-type]
        run = await Controller({"draft": draft, "target": target}).run(problem, strategy)
        assert run.candidates[0].scores["rejected"] == rejected
    with pytest.raises(ConfigError, match="no chunks of problem 'p3'"):
        await Controller(dict(zip(("draft", "target"), pair(lambda r, i: "x"), strict=True))).run(
            Problem("p3", "?"), ATTS(calibration=str(cal), coverage="conditional")
        )


async def test_missing_backends_calibration_or_a_wrong_pair_are_refused(
    tmp_path: Path, problem: Problem
) -> None:
    cal = save_calibration(tmp_path / "cal.json", {"q": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(ConfigError, match="give the calibration artefact"):
        STRATEGIES.create("atts", {})
    draft, target = pair(lambda r, i: "x")
    with pytest.raises(ConfigError, match="needs backends named draft and target.*missing draft, target"):
        await Controller(draft).run(problem, ATTS(calibration=str(cal)))
    with pytest.raises(ConfigError, match="missing target"):
        await Controller({"draft": draft}).run(problem, ATTS(calibration=str(cal)))
    with pytest.raises(CalibrationMismatch, match="draft and target are swapped"):
        await Controller({"draft": target, "target": draft}).run(problem, ATTS(calibration=str(cal)))
    other = ScriptedBackend(["x"], model="another-target", prompt_logprob=by_word)
    with pytest.raises(CalibrationMismatch, match="made with target 'target-model'"):
        await Controller({"draft": draft, "target": other}).run(problem, ATTS(calibration=str(cal)))
    with pytest.raises(CalibrationMismatch, match="same chunk settings"):
        await Controller({"draft": draft, "target": target}).run(
            problem, ATTS(calibration=str(cal), draft_tokens=64)
        )
    with pytest.raises(ConfigError, match="can never reject with 4 calibration scores"):
        await Controller({"draft": draft, "target": target}).run(
            problem, ATTS(calibration=str(cal), alpha=0.1)
        )
    assert draft.requests == []


# ---- the artefact ------------------------------------------------------------------------------


def test_the_artefact_round_trips_and_refuses_damage(tmp_path: Path) -> None:
    path = save_calibration(tmp_path / "cal.json", {"a": [3.0, 1.5], "b": [2.25]})
    loaded = AttsCalibration.load(path)
    assert loaded.scores == {"a": (1.5, 3.0), "b": (2.25,)} and list(loaded.pooled()) == [1.5, 2.25, 3.0]
    assert loaded.draft == (DRAFT, fingerprint(DRAFT).sha256) and loaded.chunk == ChunkSettings()
    assert "alpha" not in path.read_text()
    text = path.read_text()

    path.write_text(text.replace("2.25", "2.5"))
    with pytest.raises(ConfigError, match="does not match the sha256 recorded in it"):
        AttsCalibration.load(path)
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ConfigError, match="not valid JSON"):
        AttsCalibration.load(path)
    document = json.loads(text)
    document["format"] = "reasoning.probe/1"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="expected an ATTS calibration"):
        AttsCalibration.load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        AttsCalibration.load(tmp_path / "none.json")


def test_scores_must_be_positive_perplexities(tmp_path: Path) -> None:
    path = save_calibration(tmp_path / "cal.json", {"a": [-1.0]})
    with pytest.raises(ConfigError, match="finite positive perplexities"):
        AttsCalibration.load(path)


def test_loading_checks_the_pair_and_the_chunk_settings(tmp_path: Path) -> None:
    path = save_calibration(tmp_path / "cal.json", {"a": [1.0]})
    assert load_calibration(str(path), DRAFT, TARGET, ChunkSettings()).samples == 4
    with pytest.raises(CalibrationMismatch, match="made with draft 'draft-model'"):
        load_calibration(str(path), "0.5b", TARGET, ChunkSettings())
    with pytest.raises(CalibrationMismatch, match="same chunk settings"):
        load_calibration(str(path), DRAFT, TARGET, ChunkSettings(delimiter=""))


async def test_collection_scores_first_turn_chunks_metered_per_backend() -> None:
    chunks = iter(["good start\n\n", "bad step", "\n\nempty", "bad step", "good start", "good"])
    draft, target = pair(lambda r, i: next(chunks))
    problems = [Problem("p1", "1+1?"), Problem("p2", "2+2?")]
    controller = Controller({"draft": draft, "target": target}, seed=3)
    calibration, runs = await collect_calibration(
        controller, problems, ChunkSettings(), samples=3, concurrency=1
    )
    e = math.exp
    assert calibration.scores["p1"] == pytest.approx((e(0.6), e(1.2)))  # the empty chunk has no score
    assert calibration.scores["p2"] == pytest.approx((e(0.6), e(0.6), e(1.2)))
    assert calibration.target == (TARGET, fingerprint(TARGET).sha256)
    assert all(r.prefix == "" for r in draft.requests)
    assert [r.prefix for r in target.scored_requests[:2]] == ["good start", "bad step"]
    # Seeds under a namespace of their own: a solve run with the same seed draws other chunks.
    seeds = [r.sampling.seed for r in draft.requests[:3]]
    assert sorted(seeds) == sorted(request_seed(3, "atts-calibration:p1", i) for i in (1, 2, 3))
    assert not set(seeds) & {request_seed(3, "p1", i) for i in range(1, 10)}
    assert [r.usage_by_backend["draft"]["calls"] for r in runs] == [3, 3]
    assert [r.usage_by_backend["target"]["calls"] for r in runs] == [2, 3]


def test_the_cli_collects_a_calibration_the_strategy_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: Problem
) -> None:
    draft, target = pair(lambda r, i: "good start\n\n")
    started: list[object] = []
    monkeypatch.setattr(
        "reasoning.cli.probe.launch_all",
        lambda backends, hidden_states=False: started.append(backends) or {"draft": draft, "target": target},
    )
    out = tmp_path / "cal.json"
    code, text = invoke(
        "probe", "atts-calibrate", "--dataset", "gsm8k", "--limit", "2", "--samples", "3",
        "--model", "draft=d", "--model", "target=t", "--out", str(out), "--delimiter", "\\n\\n",
    )  # fmt: skip
    assert code == 0, text
    flat = " ".join(text.split())
    assert "6 chunks of 2 problems" in flat and '"draft": {"calls": 6' in flat
    assert {name: b.model for name, b in started[0].items()} == {"draft": "d", "target": "t"}  # type: ignore[attr-defined]
    calibration = AttsCalibration.load(out)
    assert calibration.chunk == ChunkSettings() and calibration.source == "gsm8k[0:2]"
    assert calibration.pooled() == pytest.approx([math.exp(0.6)] * 6)
    code, text = invoke("probe", "atts-calibrate", "--model", "0.5b", "--out", str(out))
    assert code == 1 and "needs the pair by name" in " ".join(text.split())
