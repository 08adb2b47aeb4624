"""Governed compute: value models, artefact provenance and overlap refusal, minimum counts,
resumable collection, parallel tempering, and selection over another entry's stored samples."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

import reasoning.strategies  # noqa: F401
from reasoning import Controller, Problem, ScriptedBackend
from reasoning.engine.models import fingerprint
from reasoning.errors import ConfigError
from reasoning.evals.artefacts import check_artefacts
from reasoning.evals.datasets import load_dataset
from reasoning.evals.leaderboard.runner import run_leaderboard
from reasoning.evals.leaderboard.spec import LeaderboardSpec
from reasoning.evals.leaderboard.store import Store
from reasoning.evals.probing import (
    append_trace,
    collect_traces,
    compute_features,
    read_traces,
    selection_check,
    split_by_problem,
)
from reasoning.probes.cues import CueSet
from reasoning.probes.data import DecisionPoints
from reasoning.probes.probe import (
    MINIMUM,
    ArtefactOverlap,
    FittedOn,
    Probe,
    ProbeCard,
    Underpowered,
    load_probe,
    quality,
    train_probe,
)
from reasoning.problem import question_sha
from reasoning.strategies.beam_search import BeamSearch
from reasoning.strategies.best_of_n import BestOfN
from reasoning.strategies.particle_filtering import ParticleFiltering
from reasoning.strategies.step_tree import Node
from reasoning.verifiers.process import ScriptedScorer

SCRIPTED = fingerprint("scripted")
LAYERS = [2, 4]
HIDDEN = 3


def value_model(tmp_path: Path, fitted: list[FittedOn] | None = None, name: str = "value") -> str:
    """A logistic value model reading feature 0 (P = sigmoid(4 x - 2))."""
    width = HIDDEN * len(LAYERS)
    w = np.zeros((1, width), dtype=np.float32)
    w[0, 0] = 4.0
    card = ProbeCard(
        kind="value",
        model={"name": SCRIPTED.name, "sha256": SCRIPTED.sha256},
        layers=LAYERS,
        hidden_size=HIDDEN,
        position="decision-point",
        hidden=[],
        training_data_sha256="0" * 64,
        fitted_on=fitted or [],
    )
    arrays = {"mean": np.zeros(width), "scale": np.ones(width), "w0": w, "b0": np.array([-2.0])}
    return str(Probe(card, arrays).save(tmp_path / name))


def good_states(request: Any, layers: Any, positions: Any) -> np.ndarray:
    """Feature 0 is 1 where the text read ends in a 'good' step or answer, else 0."""
    good = float(request.prefix.rstrip().split("\n\n")[-1].startswith("good"))
    return np.full((len(positions), len(layers), HIDDEN), good, dtype=np.float32)


PROBLEM = Problem("p", "What is 6 times 7?", answer="42")


# -- value models -----------------------------------------------------------------------------------


async def test_best_of_n_value_weights_the_vote_by_reads_that_decode_nothing(tmp_path: Path) -> None:
    texts = ["bad \\boxed{1}", "bad \\boxed{1}", "good \\boxed{42}"]
    backend = ScriptedBackend(texts, hidden_states=good_states)
    strategy = BestOfN(n=3, score="value", selector="weighted", probe=value_model(tmp_path))
    assert strategy.needs_hidden_states
    run = await Controller(backend).run(PROBLEM, strategy)
    # sigmoid(2) = 0.88 for the good one outweighs 2 x sigmoid(-2) = 0.24 for the two bad ones
    assert run.answer == "42"
    assert [r.sampling.n for r in backend.requests] == [3]  # one sampled request; reads decode nothing
    reads = 3  # each read is metered as one call decoding one token (the forward pass)
    assert run.usage["output_tokens"] == sum(c.output_tokens for c in run.candidates) + reads
    assert run.candidates[2].scores["value"] == pytest.approx(1 / (1 + np.exp(-2.0)))
    majority = await Controller(ScriptedBackend(texts)).run(PROBLEM, BestOfN(n=3, selector="majority"))
    assert majority.answer == "1"


async def test_step_search_scorer_value_reads_the_value_model(tmp_path: Path) -> None:
    def policy(request: Any, number: int) -> str:
        done = request.prefix.count("\n\n")
        word = "good" if number in (1, 2) else "bad"
        return word + (" \\boxed{5}" if done else "\n\nmore")

    backend = ScriptedBackend(policy, hidden_states=good_states)
    strategy = BeamSearch(n=2, width=2, scorer="value", probe=value_model(tmp_path))
    assert strategy.needs_hidden_states
    run = await Controller(backend).run(PROBLEM, strategy)
    assert run.candidates[run.chosen].text == "good\n\ngood \\boxed{5}"
    with pytest.raises(ConfigError, match="no value probe ships for 'scripted'"):
        await Controller(ScriptedBackend(policy, hidden_states=good_states)).run(
            PROBLEM, BeamSearch(n=2, width=2, scorer="value")
        )


# -- provenance and overlap --------------------------------------------------------------------------


def test_an_artefact_fitted_on_a_problem_is_refused_for_it(tmp_path: Path) -> None:
    fitted = FittedOn(
        role="training",
        dataset="gsm8k-train[0:2]",
        problem_ids=["x-0"],
        question_sha=[question_sha("Q one?")],
    )
    path = value_model(tmp_path, [fitted])
    other = Problem("b", "Q two?", answer="1")
    load_probe(path, "scripted", "value", calibrated=False, problem=other)
    same = Problem("renamed", "Q  one?\n", answer="1")  # another id, the same question
    with pytest.raises(ArtefactOverlap, match=r"fitted on 1 of the 1 problems.*gsm8k-train\[0:2\]"):
        load_probe(path, "scripted", "value", calibrated=False, problem=same)
    strategy = BestOfN(n=2, score="value", probe=path)
    check_artefacts([strategy], {"": "scripted"}, [other])
    with pytest.raises(ArtefactOverlap, match="strategy best-of-n"):
        check_artefacts([strategy], {"": "scripted"}, [other, same])


def test_the_train_split_ships_with_its_own_ids() -> None:
    train = load_dataset("gsm8k-train")
    test = load_dataset("gsm8k")
    assert [p.id for p in train[:3]] == ["gsm8k-train-0", "gsm8k-train-1", "gsm8k-train-2"]
    assert len(train) == 7473 and len(test) == 1319
    assert not {question_sha(p.question) for p in train} & {question_sha(p.question) for p in test}


# -- minimum counts and quality ----------------------------------------------------------------------


def synthetic(problems: int, samples: int = 2, events: int = 4, seed: int = 0) -> DecisionPoints:
    """Traces whose correctness shows in feature 0 of every point and of the last token."""
    rng = np.random.default_rng(seed)
    traces = problems * samples
    ease = np.repeat(rng.random(problems), samples)  # a problem's chance of a right trace
    correct = (rng.random(traces) < ease).astype(int)
    prompts = rng.normal(size=(traces, HIDDEN * len(LAYERS))).astype(np.float32)
    prompts[:, 0] += 4.0 * ease
    trace = np.repeat(np.arange(traces), events)
    features = rng.normal(size=(len(trace), HIDDEN * len(LAYERS))).astype(np.float32)
    features[:, 0] += 2.0 * correct[trace]
    final = rng.normal(size=(traces, HIDDEN * len(LAYERS))).astype(np.float32)
    final[:, 0] += 3.0 * correct
    return DecisionPoints(
        features=features,
        labels=correct[trace].astype(np.int8),
        trace=trace.astype(np.int32),
        position=np.tile(np.arange(1, events + 1), traces).astype(np.int32),
        prompt_features=prompts,
        trace_correct=correct.astype(np.int8),
        final_features=final,
        meta={
            "model": {"name": SCRIPTED.name, "sha256": SCRIPTED.sha256},
            "layers": LAYERS,
            "dataset": "synthetic",
            "traces": [
                {
                    "problem_id": f"q{t // samples}",
                    "question_sha": question_sha(f"question {t // samples}"),
                    "sample": t % samples,
                    "answer": "42" if correct[t] else str(t),
                    "correct": int(correct[t]),
                }
                for t in range(traces)
            ],
        },
    )


@pytest.mark.usefixtures("one_torch_thread")
def test_too_little_data_is_refused_and_forced_artefacts_say_so() -> None:
    small = synthetic(problems=30)
    with pytest.raises(Underpowered, match=r"problems 30 < 100.*validation problems 6 < 20"):
        train_probe(small, "value", hidden=(), epochs=40, learning_rate=0.05)
    forced = train_probe(small, "value", hidden=(), epochs=40, learning_rate=0.05, force=True)
    assert any("problems 30 < 100" in u for u in forced.card.underpowered)
    assert MINIMUM["problems"] == 100


@pytest.mark.usefixtures("one_torch_thread")
def test_a_value_model_learns_outcomes_with_quality_and_provenance() -> None:
    data = synthetic(problems=130)
    probe = train_probe(data, "value", hidden=(), epochs=80, learning_rate=0.05)
    [held] = probe.card.quality
    assert held.split == "validation" and held.auroc_low <= held.auroc <= held.auroc_high
    assert held.auroc_low > 0.5 and 0 <= held.brier < 0.25 and held.reliability
    assert held.examples == sum(int(b[2]) for b in held.reliability)
    # validation problems hold every trace of a problem: ids never straddle the split
    assert held.problems == probe.card.training["val_problems"]
    [fitted] = probe.card.fitted_on
    assert fitted.role == "training" and len(fitted.problem_ids) == 130 == len(fitted.question_sha)
    fitting, held_out = split_by_problem(data, 100)
    assert fitting.traces == 200 and held_out.traces == 60
    picked = selection_check(probe, held_out)
    assert picked["problems"] == 30 and picked["value_argmax"] >= picked["majority"] - 1e-9
    assert picked["pass_at_k"] >= picked["value_argmax"]


def test_quality_interval_and_reliability_bins() -> None:
    p = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    y = np.array([0, 0, 1, 1, 1, 0])
    q = quality(p, y, np.array([0, 0, 1, 1, 2, 2]), "held-out")
    assert q.auroc == pytest.approx(8 / 9) and q.problems == 3 and q.examples == 6
    assert [b[:3] for b in q.reliability][:2] == [[0.1, 0.2, 1.0], [0.2, 0.3, 1.0]]


# -- collection survives a stop ---------------------------------------------------------------------


def reply(request: Any, number: int) -> str:
    return "first\n\nso \\boxed{4}"


async def test_collection_writes_each_trace_and_resumes_where_it_stopped(tmp_path: Path) -> None:
    states = lambda r, layers, p: np.zeros((len(p), len(layers), HIDDEN))  # noqa: E731
    backend = ScriptedBackend(reply, hidden_states=states)
    problems = [Problem("a", "2+2?", answer="4"), Problem("b", "3+1?", answer="4")]
    path = tmp_path / "c.traces.jsonl"
    first = await collect_traces(
        backend, problems[:1], cues=CueSet((), True), samples=2, on_trace=lambda t: append_trace(path, t)
    )
    assert [t["sample"] for t in first] == [0, 1] and len(read_traces(path)) == 2
    path.write_text(path.read_text() + '{"problem_id": "b", "tok')  # a stop mid-write
    kept = read_traces(path)
    assert len(kept) == 2
    done = {(t["problem_id"], t["sample"]) for t in kept}
    before = len(backend.requests)
    rest = await collect_traces(backend, problems, cues=CueSet((), True), samples=2, done=done)
    assert {(t["problem_id"], t["sample"]) for t in rest} == {("b", 0), ("b", 1)}
    assert len([r for r in backend.requests[before:] if not r.prefix]) == 2  # only b's traces sampled
    seeds = {r.sampling.seed for r in backend.requests if not r.prefix}
    assert len(seeds) == 4  # every (problem, sample) its own seed
    data = await compute_features(backend, [*kept, *rest], LAYERS)
    assert data.final_features is not None and data.final_features.shape == (4, HIDDEN * len(LAYERS))
    assert {t["question_sha"] for t in data.meta["traces"]} == {question_sha("2+2?"), question_sha("3+1?")}
    assert all("answer" in t for t in data.meta["traces"])


# -- parallel tempering ------------------------------------------------------------------------------


def test_tempering_ladder_and_the_exchange_rule() -> None:
    assert ParticleFiltering(chains=3).temperatures() == [4.0, 2.0, 1.0]
    assert ParticleFiltering(softmax_temperature=0.5).temperatures() == [0.5]
    for bad in ({"chains": 2, "ladder": (1.0, 2.0)}, {"chains": 2, "ladder": (2.0,)}, {"chains": 0}):
        with pytest.raises(ConfigError, match="chains|ladder"):
            ParticleFiltering(**bad)  # type: ignore[arg-type]
    pf = ParticleFiltering(chains=2)
    good, bad = Node(scores=(0.99,)), Node(scores=(0.01,))
    rng = np.random.default_rng(0)
    # the better reference in the hot chain always moves to the cold one ...
    assert all(pf.exchange([good, bad], [4.0, 1.0], rng) == [bad, good] for _ in range(20))
    # ... and the reverse swap is rare: exp(-(logit .99 - logit .01) (1 - 1/4)) = 0.001
    swaps = sum(pf.exchange([bad, good], [4.0, 1.0], rng) == [good, bad] for _ in range(2000))
    assert swaps < 20


async def test_tempered_chains_run_side_by_side_and_the_best_particle_wins() -> None:
    def script(request: Any, number: int) -> str:
        return f"s{number} \\boxed{{{number}}}" if request.prefix else f"s{number}\n\nmore"

    scorer = ScriptedScorer(lambda steps: 0.9 if steps[-1].startswith("s9 ") else 0.2)
    backend = ScriptedBackend(script)
    pf = ParticleFiltering(particles=2, chains=3, scorer="verifier", aggregation="last")
    run = await Controller(backend, verifier=scorer).run(PROBLEM, pf)
    assert [r.sampling.n for r in backend.requests if not r.prefix] == [2, 2, 2]  # one run per chain
    assert run.answer == "9" and run.candidates[run.chosen].scores["process"] == pytest.approx(0.9)
    # With Gibbs iterations the references are drawn and exchanged between chains: each chain's
    # second run has N - 1 = 1 fresh particle beside its reference.
    backend = ScriptedBackend(script)
    tempered = ParticleFiltering(particles=2, chains=3, iterations=2, scorer="verifier", aggregation="last")
    swaps: list[int] = []
    exchange = tempered.exchange

    def counted(refs: list[Node], temps: list[float], rng: Any) -> list[Node]:
        out = exchange(refs, temps, rng)
        swaps.append(sum(a is not b for a, b in zip(refs, out, strict=True)))
        return out

    object.__setattr__(tempered, "exchange", counted)
    again = await Controller(backend, verifier=scorer).run(PROBLEM, tempered)
    assert [r.sampling.n for r in backend.requests if not r.prefix] == [2, 2, 2, 1, 1, 1] and len(swaps) == 1
    assert again.answer is not None


# -- selection over another entry's stored samples ---------------------------------------------------


def test_an_entry_selects_over_another_entrys_samples_and_decodes_nothing(tmp_path: Path) -> None:
    gold = [p.answer for p in load_dataset("gsm8k", limit=3)]

    def answers(request: Any, sample: int) -> str:
        right = sample % 3 == 0
        return ("good so " if right else "so ") + f"\\boxed{{{gold[0] if right else '-1'}}}"

    spec = LeaderboardSpec.model_validate(
        {
            "name": "over",
            "store": str(tmp_path / "o.sqlite"),
            "models": {"s": {"kind": "scripted"}},
            "datasets": {"g": {"name": "gsm8k", "limit": 1}},
            "entries": [
                {"name": "sc@3", "strategy": "self-consistency", "params": {"n": 3}},
                {
                    "name": "value-vote",
                    "strategy": "best-of-n",
                    "over": "sc@3",
                    "params": {"n": 3, "score": "value", "probe": value_model(tmp_path)},
                },
            ],
        }
    )
    backends: list[ScriptedBackend] = []

    def start(model: str, hidden: bool) -> ScriptedBackend:
        backends.append(ScriptedBackend(answers, hidden_states=lambda r, la, p: good_states(r, la, p)))
        return backends[-1]

    with Store.open(spec.store_path) as store:
        assert run_leaderboard(spec, store, start, console=Console(file=io.StringIO())) == 2
        sc, value = spec.cells()
        assert value.over == sc.key and value.key != sc.key
        source = store.record(sc.key, "gsm8k-0", 0)
        chosen = store.record(value.key, "gsm8k-0", 0)
    assert [c.text for c in chosen.candidates] == [c.text for c in source.candidates]  # identical samples
    assert [r.sampling.n for r in backends[0].requests if not r.prefix and r.sampling.temperature > 0] == [3]
    assert source.answer == "-1" and chosen.answer == gold[0]  # the vote loses, the value model wins
    assert chosen.usage["output_tokens"] == source.usage["output_tokens"] + 3  # + one token per read
    assert chosen.spec["over"] == "sc@3" and chosen.usage["seconds"] >= source.usage["seconds"]


def test_selections_over_the_same_samples_read_each_hidden_state_once(tmp_path: Path) -> None:
    """The value vote and the value argmax score the same stored samples with the same model: the
    engine reads each sample once, and each entry is still charged its reads."""

    def answers(request: Any, sample: int) -> str:
        return f"s{sample} \\boxed{{{sample}}}"

    probe = value_model(tmp_path)
    entries: list[dict[str, Any]] = [{"name": "sc@3", "strategy": "self-consistency", "params": {"n": 3}}]
    entries += [
        {
            "name": f"value-{selector}",
            "strategy": "best-of-n",
            "over": "sc@3",
            "params": {"n": 3, "score": "value", "probe": probe, "selector": selector},
        }
        for selector in ("weighted", "argmax")
    ]
    spec = LeaderboardSpec.model_validate(
        {
            "name": "memo",
            "store": str(tmp_path / "m.sqlite"),
            "models": {"s": {"kind": "scripted"}},
            "datasets": {"g": {"name": "gsm8k", "limit": 2}},
            "entries": entries,
        }
    )
    reads: list[str] = []

    def states(request: Any, layers: Any, positions: Any) -> Any:
        reads.append(request.prefix)
        return good_states(request, layers, positions)

    def start(model: str, hidden: bool) -> ScriptedBackend:
        return ScriptedBackend(answers, hidden_states=states)

    with Store.open(spec.store_path) as store:
        assert run_leaderboard(spec, store, start, console=Console(file=io.StringIO())) == 6
        _, weighted, argmax = spec.cells()
        runs = [store.record(cell.key, f"gsm8k-{i}", 0) for cell in (weighted, argmax) for i in range(2)]
    assert len(reads) == len(set(reads)) == 6  # 2 problems x 3 samples, each read once (not twice)
    assert [run.usage["calls"] for run in runs] == [4] * 4  # each entry: the replayed sampling + its 3 reads


def test_over_is_checked_when_the_leaderboard_is_read(tmp_path: Path) -> None:
    def spec(over: str, *more: dict[str, Any], **params: Any) -> LeaderboardSpec:
        return LeaderboardSpec.model_validate(
            {
                "name": "o",
                "datasets": {"g": "gsm8k"},
                "models": {"s": {"kind": "scripted"}},
                "entries": [
                    {"name": "sc", "strategy": "self-consistency", "params": {"n": 4}},
                    {"name": "bon", "strategy": "best-of-n", "over": over, "params": {"n": 4, **params}},
                    *more,
                ],
            }
        )

    with pytest.raises(ConfigError, match="over 'nothing' names no entry"):
        spec("nothing").cells()
    with pytest.raises(ConfigError, match="its temperature must be sc's"):
        spec("sc", temperature=1.0).cells()
    with pytest.raises(ConfigError, match="over names the entry itself"):
        spec("bon").cells()
    chained = {"name": "chain", "strategy": "best-of-n", "over": "bon", "params": {"n": 4}}
    with pytest.raises(ConfigError, match="entry chain.*which itself selects over another entry"):
        spec("sc", chained).cells()
    assert json.dumps(spec("sc").cells()[1].identity(spec("sc")))  # serialisable, keyed by its source


def test_an_edited_card_is_refused(tmp_path: Path) -> None:
    path = Path(value_model(tmp_path))
    Probe.load(path, SCRIPTED)
    card = json.loads(path.read_text())
    card["fitted_on"] = [{"role": "training", "dataset": "elsewhere", "problem_ids": ["z"]}]
    path.write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="changed after it was made"):
        Probe.load(path, SCRIPTED)


# -- the build recipe (no engine: its features already collected) -----------------------------------


@pytest.mark.usefixtures("one_torch_thread")
def test_build_fits_calibrates_and_measures_on_disjoint_problems(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from reasoning.cli.probe import probe_app
    from reasoning.probes.cues import DEFAULT_CUES
    from reasoning.probes.exit import EXIT_PHRASE

    problems = load_dataset("gsm8k-train", limit=150)
    data = synthetic(problems=150, samples=3)
    for t in data.meta["traces"]:  # the real problems' ids and question hashes
        p = problems[int(t["problem_id"][1:])]
        t["problem_id"], t["question_sha"] = p.id, question_sha(p.question)
    data.meta |= {
        "cues": DEFAULT_CUES.to_dict(),
        "exit_phrase": EXIT_PHRASE,
        "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512, "seed": 0},
    }
    data.save(tmp_path / "work")
    out = tmp_path / "artefacts"
    args = [
        "build",
        "--model",
        "scripted",
        "--problems",
        "150",
        "--samples",
        "3",
        "--work",
        str(tmp_path / "work"),
    ]
    result = CliRunner().invoke(probe_app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "quality on problems not fitted on" in result.output and "wall time" in result.output
    exit_probe = Probe.load(out / "exit", SCRIPTED)
    roles = {f.role: set(f.problem_ids) for f in exit_probe.card.fitted_on}
    assert len(roles["training"]) == 100 and len(roles["calibration"]) == 50
    assert not roles["training"] & roles["calibration"] and exit_probe.card.calibration is not None
    value = Probe.load(out / "value", SCRIPTED)
    assert [q.split for q in value.card.quality] == ["validation", "held-out"]
    assert value.card.training["selection_held_out"]["problems"] == 50
    assert "reasoning probe build" in value.card.training["recipe"]
    report = (out / "BUILD.md").read_text()
    assert "| value | " in report and "Exit rule: alpha 0.1" in report and "majority vote" in report
    # refused on a problem it was fitted on, accepted on one it only measured
    with pytest.raises(ArtefactOverlap):
        load_probe(str(out / "value"), "scripted", "value", calibrated=False, problem=problems[0])
    load_probe(str(out / "value"), "scripted", "value", calibrated=False, problem=problems[120])


# -- what solve's summary says -----------------------------------------------------------------------


def test_the_summary_says_what_the_governing_did_and_how_each_column_samples() -> None:
    from reasoning import Candidate, Run
    from reasoning.cli.solve import _governing_rows, _sampling, _sampling_params

    exited = Candidate("a", "4", output_tokens=60, scores={"exit_token": 50.0, "decision_points": 2.0})
    ran = Candidate("b", "4", output_tokens=300, scores={"exit_token": 0.0, "decision_points": 5.0})
    pruned = Candidate("c", None, output_tokens=128, scores={"pruned": 1.0})
    kept = Candidate("d", "5", output_tokens=280, scores={"pruned": 0.0})
    routed = Candidate("e", "6", scores={"route": 1.0})
    rows = dict(
        _governing_rows(
            [
                Run(problem_id="1", candidates=[exited, ran]),
                Run(problem_id="2", candidates=[pruned, kept]),
                Run(problem_id="3", candidates=[routed]),
            ]
        )
    )
    assert rows["traces exited early (probe)"] == "1/2, at token 50 on average; those that ran on: 300 tokens"
    assert rows["traces pruned (LT)"].startswith("1/2, 128 tokens decoded before the cut")
    assert rows["routes (difficulty probe)"] == "easy 1, hard 0"
    assert _sampling(EarlyExitLike()) == "T=0.6 top_p=0.95, up to 512 tokens"
    assert _sampling(GreedyLike()) == "greedy, up to 512 tokens"
    assert _sampling_params(EarlyExitLike()) == "temperature=0.6,top_p=0.95,max_tokens=512"


class EarlyExitLike:
    temperature = 0.6
    top_p = 0.95
    max_tokens = 512


class GreedyLike:
    temperature = 0.0
    max_tokens = 512


# -- what a newcomer tripped on ------------------------------------------------------------------------


def test_over_needs_plain_samples_the_same_budget_and_no_more_samples_than_stored() -> None:
    def cells(source: dict[str, Any], **over: Any) -> None:
        LeaderboardSpec.model_validate(
            {
                "name": "o",
                "datasets": {"g": "gsm8k"},
                "models": {"s": {"kind": "scripted"}},
                "entries": [
                    {"name": "src", **source},
                    {"name": "sel", "strategy": "best-of-n", "over": "src", "params": {"n": 4}, **over},
                ],
            }
        ).cells()

    sc = {"strategy": "self-consistency", "params": {"n": 4}}
    cells(sc)
    with pytest.raises(ConfigError, match="not independent samples"):
        cells({"strategy": "self-consistency(n=4, inner=single(temperature=0.3))"})
    with pytest.raises(ConfigError, match="not independent samples"):
        cells({"strategy": "single"}, params={"n": 4, "temperature": 0.0})
    with pytest.raises(ConfigError, match="its budget must be src's"):
        cells({**sc, "budget": {"output_tokens": 10}})
    with pytest.raises(ConfigError, match="asks for n=8 samples; src stores 4"):
        cells(sc, params={"n": 8})
    with pytest.raises(ConfigError, match="have the same settings"):
        LeaderboardSpec.model_validate(
            {
                "name": "d",
                "datasets": {"g": "gsm8k"},
                "models": {"s": {"kind": "scripted"}},
                "entries": [
                    {"name": "a", "strategy": "single"},
                    {"name": "b", "strategy": "single(temperature=0.0)"},
                ],
            }
        ).cells()


def test_an_entry_that_fails_every_problem_fails_the_run_after_storing_the_rest(tmp_path: Path) -> None:
    from reasoning.errors import ReasoningError

    spec = LeaderboardSpec.model_validate(
        {
            "name": "f",
            "store": str(tmp_path / "f.sqlite"),
            "models": {"s": {"kind": "scripted"}},
            "datasets": {"g": {"name": "gsm8k", "limit": 2}},
            "entries": [
                {"name": "greedy", "strategy": "single"},
                {"name": "lt", "strategy": "lt-select", "params": {"n": 2}},  # no hidden states here
            ],
        }
    )
    with Store.open(spec.store_path) as store:
        with pytest.raises(ReasoningError, match=r"lt: 2 of 2 failed \(the first error: .*hidden states"):
            run_leaderboard(
                spec, store, lambda m, h: ScriptedBackend(["\\boxed{1}"]), console=Console(file=io.StringIO())
            )
        greedy = next(c for c in spec.cells() if c.label == "greedy")
        assert len(store.results(greedy.key)) == 2


@pytest.mark.usefixtures("one_torch_thread")
def test_probe_commands_refuse_the_wrong_data_and_bad_sizes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from reasoning.cli.probe import probe_app

    synthetic(problems=130).save(tmp_path / "points")
    runner = CliRunner()
    wrong = runner.invoke(
        probe_app,
        ["train", "--kind", "advantage", "--data", str(tmp_path / "points"), "--out", str(tmp_path / "r")],
    )
    assert wrong.exit_code == 1 and "collect-advantage" in str(wrong.exception)
    sizes = runner.invoke(
        probe_app,
        ["train", "--hidden", "abc", "--data", str(tmp_path / "points"), "--out", str(tmp_path / "r")],
    )
    assert sizes.exit_code == 1 and "--hidden must be comma-separated" in str(sizes.exception)
    trained = runner.invoke(
        probe_app,
        [
            "train",
            "--kind",
            "difficulty",
            "--hidden",
            "",
            "--data",
            str(tmp_path / "points"),
            "--out",
            str(tmp_path / "d"),
            "--force",
        ],
    )
    assert trained.exit_code == 0, trained.output
    calibrated = runner.invoke(
        probe_app,
        ["calibrate", "--probe", str(tmp_path / "d"), "--data", str(tmp_path / "points"), "--alpha", "0.1"],
    )
    assert calibrated.exit_code == 1 and "difficulty probe: it needs no calibration" in str(
        calibrated.exception
    )


@pytest.mark.usefixtures("quick_retries")
def test_probe_collect_against_an_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from reasoning.cli.probe import probe_app

    done = CliRunner().invoke(
        probe_app,
        ["collect", "--limit", "1", "--out", str(tmp_path / "t"), "--base-url", "http://127.0.0.1:1/v1"],
    )
    assert done.exit_code == 1 and "cannot reach the server at http://127.0.0.1:1" in str(done.exception)
    assert not (tmp_path / "t.traces.jsonl").exists()
