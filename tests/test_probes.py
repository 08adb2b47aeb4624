"""Probe pipeline, artefacts and probe-driven strategies on scripted backends."""

import json
import math

import numpy as np
import pytest

from reasoning import Controller, Problem, Request, ScriptedBackend
from reasoning.backends.scripted import tokenize
from reasoning.engine.models import fingerprint
from reasoning.errors import CapabilityError, ConfigError, DatasetError
from reasoning.evals.probing import collect_traces, compute_features
from reasoning.probes.conformal import GUARANTEE
from reasoning.probes.cues import CueSet
from reasoning.probes.data import DecisionPoints
from reasoning.probes.exit import EXIT_PHRASE
from reasoning.probes.probe import (
    Probe,
    ProbeCard,
    ProbeMismatch,
    _split,
    auroc,
    calibrate,
    load_probe,
    platt_scaling,
    problem_of_trace,
    quality,
    train_probe,
)
from reasoning.strategies.difficulty import DifficultyRouter
from reasoning.strategies.early_exit import EarlyExit

SCRIPTED = fingerprint("scripted")
HIDDEN = 4
LAYERS = [1, 2]

# A trace of three blank-line steps; the state says "solved" once "DONE" has been written.
TRACE = "Let us add.\n\nTwo plus two DONE so\n\nchecking again and again\n\nThe answer is \\boxed{4}"


def states(request: Request, layers, positions) -> np.ndarray:
    """Fake hidden states at each position: feature 0 is 1 once DONE has been written, feature 2
    is 1 for "easy" prompts, feature 1 = length of the text so far. Causal, like a real model:
    a position sees only what precedes it."""
    words = tokenize(
        "".join(f"<{m.role}> {m.content}\n" for m in request.messages) + "<assistant> " + request.prefix
    )
    rows = []
    for position in positions:
        text = "".join(words[: (position % len(words)) + 1])
        easy = 1.0 if "easy" in request.messages[-1].content else 0.0
        rows.append([1.0 if "DONE" in text else 0.0, len(text) / 100, easy, 1.0])
    return np.tile(np.asarray(rows, dtype=np.float32)[:, None, :], (1, len(layers), 1))


def reply(request: Request, number: int) -> str:
    """The trace, or a forced answer: right (4) once DONE was written, wrong (9) before."""
    if request.prefix.endswith(EXIT_PHRASE):
        return "4} and more words" if "DONE" in request.prefix else "9} and more"
    return TRACE


def hand_probe(tmp_path, kind="exit", alpha=0.1, q_pos=0.2, q_neg=0.5) -> str:
    """A logistic probe on feature 0 (exit) or 2 (difficulty), calibrated by hand."""
    w = np.zeros((1, HIDDEN * len(LAYERS)), dtype=np.float32)
    w[0, 0 if kind == "exit" else 2] = 10.0
    card = ProbeCard(
        kind=kind,
        model={"name": SCRIPTED.name, "sha256": SCRIPTED.sha256},
        layers=LAYERS,
        hidden_size=HIDDEN,
        position="decision-point" if kind == "exit" else "prompt",
        cues={"words": [], "step_boundary": True, "every": 0, "skip_first": 0, "max_events": None},
        exit_phrase=EXIT_PHRASE,
        hidden=[],
        training_data_sha256="0" * 64,
        calibration={
            "alpha": alpha,
            "q_pos": q_pos,
            "q_neg": q_neg,
            "n_pos": 50,
            "n_neg": 50,
            "strict": True,
            "guarantee": GUARANTEE,
            "exit_threshold": 0.8,
            "calibration_exit_rate_unsafe": 0.0,
            "calibration_exit_rate_safe": 1.0,
        },
    )
    arrays = {
        "mean": np.zeros(HIDDEN * len(LAYERS)),
        "scale": np.ones(HIDDEN * len(LAYERS)),
        "w0": w,
        "b0": np.array([-5.0]),
    }
    return str(Probe(card, arrays).save(tmp_path / f"{kind}-probe"))


def synthetic(n_traces=125, events=5, seed=0, sha="") -> DecisionPoints:
    """Decision points whose label is readable from feature 0 (plus noise)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n_traces * events)
    features = rng.normal(size=(len(labels), HIDDEN * len(LAYERS))).astype(np.float32)
    features[:, 0] += 2.5 * labels
    correct = rng.integers(0, 2, size=n_traces)
    prompts = rng.normal(size=(n_traces, HIDDEN * len(LAYERS))).astype(np.float32)
    prompts[:, 2] += 2.5 * correct
    return DecisionPoints(
        features=features,
        labels=labels.astype(np.int8),
        trace=np.repeat(np.arange(n_traces), events).astype(np.int32),
        position=np.tile(np.arange(1, events + 1), n_traces).astype(np.int32),
        prompt_features=prompts,
        trace_correct=correct.astype(np.int8),
        meta={
            "model": {"name": SCRIPTED.name, "sha256": SCRIPTED.sha256},
            "layers": LAYERS,
            "cues": {"words": [], "step_boundary": True},
            "exit_phrase": EXIT_PHRASE,
            "dataset": f"synthetic-{seed}",
        },
    )


# -- artefacts -----------------------------------------------------------------------------------


def test_auroc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(1)
    s, y = rng.normal(size=40).round(1), rng.integers(0, 2, size=40)
    pos, neg = s[y == 1], s[y == 0]
    pairs = [(a > b) + 0.5 * (a == b) for a in pos for b in neg]
    assert auroc(s, y) == pytest.approx(np.mean(pairs))
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))


def test_decision_points_round_trip_and_detect_tampering(tmp_path) -> None:
    data = synthetic()
    data.save(tmp_path / "d")
    back = DecisionPoints.load(tmp_path / "d.json")
    assert back.features.dtype == np.float16 and np.array_equal(back.labels, data.labels)
    assert back.meta["events"] == len(data) and back.meta["arrays_sha256"]
    raw = bytearray((tmp_path / "d.safetensors").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "d.safetensors").write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="sha256"):
        DecisionPoints.load(tmp_path / "d")
    with pytest.raises(DatasetError, match="does not exist"):
        DecisionPoints.load(tmp_path / "nothing")


@pytest.mark.usefixtures("one_torch_thread")
def test_train_reports_held_out_auroc_and_saves_a_self_describing_artefact(tmp_path) -> None:
    train = synthetic(seed=0)
    train.save(tmp_path / "train")
    probe = train_probe(train, "exit", hidden=(16,), seed=0)
    assert probe.card.metrics["auroc_val"] > 0.85
    assert (
        probe.card.training["val_traces"] > 0
        and probe.card.training_data_sha256 == train.meta["arrays_sha256"]
    )
    calib = synthetic(seed=1)
    calib.save(tmp_path / "calib")
    calibrated = calibrate(probe, calib, alpha=0.1)
    path = calibrated.save(tmp_path / "probe")
    card = json.loads(path.read_text())
    for key in (
        "model",
        "layers",
        "cues",
        "exit_phrase",
        "training_data_sha256",
        "metrics",
        "weights_sha256",
    ):
        assert key in card
    c = card["calibration"]
    assert (
        c["alpha"] == 0.1
        and c["n_pos"] + c["n_neg"] == len(calib)
        and "not a per-trace bound" in c["guarantee"]
    )
    assert c["calibration_exit_rate_unsafe"] <= 0.1 + 0.05
    loaded = Probe.load(path, SCRIPTED)
    x = calib.features[:7].astype(np.float32)
    assert np.allclose(loaded.predict(x), calibrated.predict(x))
    assert not (tmp_path / "probe.pkl").exists() and (tmp_path / "probe.safetensors").exists()


def test_a_probe_for_another_model_is_refused(tmp_path) -> None:
    path = hand_probe(tmp_path)
    with pytest.raises(ProbeMismatch, match="qwen2.5-coder-0.5b-instruct"):
        Probe.load(path, fingerprint("0.5b"))
    EarlyExit(probe=path)  # constructing is fine; using it on another model is not
    with pytest.raises(ProbeMismatch):
        load_probe(path, "0.5b", "exit")
    with pytest.raises(ConfigError, match="difficulty probe is needed"):
        load_probe(path, "scripted", "difficulty")


@pytest.mark.usefixtures("one_torch_thread")
def test_calibration_refuses_the_training_data(tmp_path) -> None:
    train = synthetic()
    train.save(tmp_path / "train")
    probe = train_probe(train, "exit", hidden=())
    with pytest.raises(ConfigError, match="disjoint"):
        calibrate(probe, train, 0.1)


def test_train_needs_both_labels() -> None:
    data = synthetic()
    data.labels[:] = 0
    with pytest.raises(ConfigError, match="both labels"):
        train_probe(data)


# -- collection ------------------------------------------------------------------------------------


async def test_collect_labels_decision_points_by_forced_exits() -> None:
    backend = ScriptedBackend(reply, hidden_states=states)
    problems = [Problem("a", "2+2?", answer="4"), Problem("b", "easy 2+2?", answer="4")]
    traces = await collect_traces(backend, problems, cues=CueSet((), True), max_tokens=64)
    assert [e["label"] for e in traces[0]["events"]] == [0, 1, 1]  # DONE is in the 2nd step
    assert traces[0]["correct"] == 1 and traces[0]["collection"]["model"]["sha256"] == SCRIPTED.sha256
    # Forced exits are cut at the closing brace: "4}" is 1 scripted token.
    assert all(e["tokens"] == 1 for e in traces[0]["events"])
    data = await compute_features(backend, traces, LAYERS)
    # One read per trace serves its prompt, its decision points and its last token.
    assert len(backend.hidden_requests) == len(traces)
    assert all(data.prompt_features[:, 1] < data.features[[0, 3], 1])  # the prompt's end, before the trace
    assert all(data.final_features[:, 1] > data.features[[2, 5], 1])  # the trace's end, after its last point
    assert data.features.shape == (6, HIDDEN * len(LAYERS)) and list(data.labels) == [0, 1, 1, 0, 1, 1]
    assert list(data.prompt_features[:, 2]) == [0.0, 1.0] and list(data.trace)[:3] == [0, 0, 0]
    assert data.features[1, 0] == 1.0 and data.features[0, 0] == 0.0  # the point's own token is read


async def test_feature_cache_resumes_reads_and_never_serves_another_layer_choice(tmp_path) -> None:
    backend = ScriptedBackend(reply, hidden_states=states)
    problems = [Problem("a", "2+2?", answer="4"), Problem("b", "easy 2+2?", answer="4")]
    traces = await collect_traces(backend, problems, cues=CueSet((), True), max_tokens=64)
    cache = tmp_path / "features"
    first = await compute_features(backend, traces[:1], LAYERS, cache=cache)  # stopped after one trace
    assert len(backend.hidden_requests) == 1 and len(list(cache.glob("*.npz"))) == 1
    whole = await compute_features(backend, traces, LAYERS, cache=cache)
    assert len(backend.hidden_requests) == 2  # only the trace not read before
    uncached = await compute_features(backend, traces, LAYERS)
    assert np.array_equal(whole.features, uncached.features)
    assert np.array_equal(first.features, whole.features[:3])
    assert np.array_equal(whole.final_features, uncached.final_features)
    reads = len(backend.hidden_requests)
    await compute_features(backend, traces, LAYERS[:1], cache=cache)
    assert len(backend.hidden_requests) == reads + 2  # another layer choice is read again


async def test_features_need_hidden_states() -> None:
    backend = ScriptedBackend(reply)
    traces = await collect_traces(backend, [Problem("a", "2+2?", answer="4")], cues=CueSet((), True))
    with pytest.raises(CapabilityError, match="hidden states"):
        await compute_features(backend, traces, LAYERS)


# -- strategies ------------------------------------------------------------------------------------


async def test_early_exit_stops_at_the_first_safe_decision_point(tmp_path) -> None:
    backend = ScriptedBackend(reply, hidden_states=states, seconds_per_token=0.002)
    result = await Controller(backend).run(Problem("p", "2+2?", "4"), EarlyExit(probe=hand_probe(tmp_path)))
    [candidate] = result.candidates
    assert result.answer == "4" and candidate.finish_reason == "exit"
    assert candidate.scores["decision_points"] == 2 and candidate.scores["exit_tokens"] == 1
    assert backend.cancelled >= 1  # the trace was cancelled in the engine at the exit
    full = len(TRACE.split())
    assert result.usage["output_tokens"] < full
    assert candidate.text.endswith(EXIT_PHRASE + "4}") and "checking" not in candidate.text
    assert candidate.started > 0 and candidate.seconds > 0  # on the run's clock: a timeline bar


async def test_early_exit_runs_to_the_end_when_the_rule_never_fires(tmp_path) -> None:
    backend = ScriptedBackend(reply, hidden_states=states)
    path = hand_probe(tmp_path, q_pos=0.0, q_neg=1.0)  # the prediction set always holds "unsafe"
    result = await Controller(backend).run(Problem("p", "2+2?", "4"), EarlyExit(probe=path))
    [candidate] = result.candidates
    assert candidate.finish_reason == "stop" and candidate.scores["exit_token"] == 0
    assert candidate.scores["decision_points"] == 3 and backend.cancelled == 0
    no_points = await Controller(ScriptedBackend(["\\boxed{4}"], hidden_states=states)).run(
        Problem("q", "2+2?", "4"), EarlyExit(probe=path)
    )
    assert no_points.answer == "4" and "probe" not in no_points.candidates[0].scores
    type(no_points).model_validate_json(no_points.model_dump_json())  # the record reads back


async def test_self_consistency_over_early_exited_traces(tmp_path) -> None:
    backend = ScriptedBackend(reply, hidden_states=states)
    result = await Controller(backend).run(
        Problem("p", "2+2?", "4"), EarlyExit(probe=hand_probe(tmp_path), n=3)
    )
    assert result.answer == "4" and len(result.candidates) == 3
    assert all(c.finish_reason == "exit" for c in result.candidates)
    seeds = {r.sampling.seed for r in backend.requests if not r.prefix}
    assert len(seeds) == 3  # three separately seeded traces, issued together


async def test_difficulty_router_picks_the_route_from_the_prompt(tmp_path) -> None:
    path = hand_probe(tmp_path, kind="difficulty")
    router = DifficultyRouter(
        probe=path, easy="single:max_tokens=64", hard="self-consistency:n=3,max_tokens=64"
    )
    backend = ScriptedBackend(reply, hidden_states=states)
    easy = await Controller(backend).run(Problem("e", "easy 2+2?", "4"), router)
    hard = await Controller(backend).run(Problem("h", "2+2?", "4"), router)
    assert len(easy.candidates) == 1 and easy.candidates[0].scores["route"] == 1.0
    assert len(hard.candidates) == 3 and hard.candidates[0].scores["route"] == 0.0
    assert hard.candidates[0].scores["p_easy"] < 0.5 < easy.candidates[0].scores["p_easy"]


async def test_router_and_early_exit_reject_bad_parameters(tmp_path) -> None:
    EarlyExit()  # no probe given: the one shipped for the model, which a scripted model lacks
    with pytest.raises(ConfigError, match="no exit probe ships for 'scripted'"):
        await Controller(ScriptedBackend(reply, hidden_states=states)).run(Problem("a", "2+2?"), EarlyExit())
    with pytest.raises(ConfigError, match="unknown strategy|no strategy"):
        DifficultyRouter(probe="x", easy="nonsense")
    with pytest.raises(ConfigError, match="param=value"):
        DifficultyRouter(probe="x", hard="single:max_tokens")


def test_a_file_of_another_kind_given_as_an_artefact_says_what_it_is(tmp_path) -> None:
    from reasoning.probes.atts_calibration import AttsCalibration, ChunkSettings

    data = synthetic()
    training = data.save(tmp_path / "train")
    with pytest.raises(ConfigError, match=r"is decision-point training data .*not a probe: train one"):
        Probe.load(training)
    with pytest.raises(ConfigError, match="is decision-point training data"):
        load_probe(str(training), "scripted", "exit")
    card = hand_probe(tmp_path)
    with pytest.raises(DatasetError, match=r"is a probe artefact \(an exit probe.*not decision-point data"):
        DecisionPoints.load(card)
    with pytest.raises(ConfigError, match="is a probe artefact .*not an ATTS calibration"):
        AttsCalibration.load(card)
    calibration = AttsCalibration(
        draft=(SCRIPTED.name, SCRIPTED.sha256),
        target=(SCRIPTED.name, SCRIPTED.sha256),
        chunk=ChunkSettings(),
        samples=1,
        scores={"p": (2.0,)},
    ).save(tmp_path / "atts.json")
    (tmp_path / "atts.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="is an ATTS calibration .*not a probe artefact"):
        Probe.load(calibration)


# -- a value model's Platt scaling ------------------------------------------------------------------


def value_data(problems: int, samples: int = 2, events: int = 4, seed: int = 0) -> DecisionPoints:
    """Traces of `problems` problems whose correctness shows (noisily) in feature 0 of every point
    and of each trace's last token: a value model can only be partly sure."""
    rng = np.random.default_rng(seed)
    traces = problems * samples
    correct = (rng.random(traces) < 0.3).astype(int)
    trace = np.repeat(np.arange(traces), events)
    features = rng.normal(size=(len(trace), HIDDEN * len(LAYERS))).astype(np.float32)
    features[:, 0] += 1.0 * correct[trace]
    final = rng.normal(size=(traces, HIDDEN * len(LAYERS))).astype(np.float32)
    final[:, 0] += 1.0 * correct
    return DecisionPoints(
        features=features,
        labels=correct[trace].astype(np.int8),
        trace=trace.astype(np.int32),
        position=np.tile(np.arange(1, events + 1), traces).astype(np.int32),
        prompt_features=rng.normal(size=(traces, HIDDEN * len(LAYERS))).astype(np.float32),
        trace_correct=correct.astype(np.int8),
        final_features=final,
        meta={
            "model": {"name": SCRIPTED.name, "sha256": SCRIPTED.sha256},
            "layers": LAYERS,
            "dataset": f"synthetic-{seed}",
            "traces": [
                {"problem_id": f"q{seed}-{t // samples}", "sample": t % samples, "correct": int(correct[t])}
                for t in range(traces)
            ],
        },
    )


def value_examples(data: DecisionPoints) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A value model's examples (every point and every last token), with each one's problem index."""
    assert data.final_features is not None
    outcome = data.trace_correct.astype(int)
    x = np.concatenate([data.features, data.final_features]).astype(np.float32)
    trace = np.concatenate([data.trace, np.arange(data.traces)])
    return x, np.concatenate([outcome[data.trace], outcome]), problem_of_trace(data)[trace]


@pytest.mark.usefixtures("one_torch_thread")
def test_a_value_model_is_platt_scaled_on_its_early_stopping_problems_only(tmp_path) -> None:
    data = value_data(problems=200)
    probe = train_probe(data, "value", hidden=(), epochs=60, learning_rate=0.05, seed=42, force=True)
    scaling = probe.card.platt
    assert scaling is not None and scaling.a > 0 and scaling.split == "early-stopping"
    ids = [t["problem_id"] for t in data.meta["traces"]]
    names = list(dict.fromkeys(ids))
    # the early-stopping problems: an inner split of the training problems, apart from validation
    first_right = np.array([data.trace_correct[ids.index(n)] for n in names])
    train_p, val_p = _split(len(names), 0.2, first_right, 42)
    _, stop_p = _split(len(train_p), 0.15, first_right[train_p], 43)
    assert sorted(scaling.problem_ids) == sorted(names[i] for i in train_p[stop_p])
    assert len(scaling.problem_ids) == probe.card.training["early_stopping_problems"] > 0
    assert not set(scaling.problem_ids) & {names[i] for i in val_p}
    # a and b are exactly the fit on every example of those problems, and on nothing else
    x, y, problem = value_examples(data)
    mine = np.isin(problem, [names.index(i) for i in scaling.problem_ids])
    assert scaling.examples == int(mine.sum()) and scaling.positives == int(y[mine].sum())
    again = platt_scaling(probe.logits(x[mine]), y[mine])
    assert again is not None and (again.a, again.b) == (scaling.a, scaling.b)
    everything = platt_scaling(probe.logits(x), y)
    assert everything is not None and (everything.a, everything.b) != (scaling.a, scaling.b)
    # predict applies it; the card keeps it (format 3); the ranking is the head's own
    z = probe.logits(x)
    assert np.allclose(probe.predict(x), 1 / (1 + np.exp(-(scaling.a * z + scaling.b))))
    assert auroc(probe.predict(x), y) == auroc(z, y)
    path = probe.save(tmp_path / "value")
    assert json.loads(path.read_text())["format"] == 3
    assert np.array_equal(Probe.load(path, SCRIPTED).predict(x[:9]), probe.predict(x[:9]))
    # a card without it (an exit probe, a value model made before it) stays format 2 and reads
    # as the head's own sigmoid
    plain = Probe(probe.card.model_copy(update={"platt": None}), probe.arrays)
    back = Probe.load(plain.save(tmp_path / "plain"), SCRIPTED)
    written = json.loads((tmp_path / "plain.json").read_text())
    assert written["format"] == 2 and "platt" not in written and back.card.platt is None
    assert np.array_equal(back.predict(x[:9]), 1 / (1 + np.exp(-z[:9])))


@pytest.mark.usefixtures("one_torch_thread")
def test_platt_scaling_fixes_a_deliberately_overconfident_head() -> None:
    data, fresh = value_data(problems=200, seed=1), value_data(problems=200, seed=2)
    probe = train_probe(data, "value", hidden=(), epochs=60, learning_rate=0.05, seed=42, force=True)
    # overconfident and biased upwards: logits 5x too large, shifted by +3
    arrays = {**probe.arrays, "w0": 5 * probe.arrays["w0"], "b0": 5 * probe.arrays["b0"] + 3}
    loud = Probe(probe.card.model_copy(update={"platt": None}), arrays)
    x, y, _ = value_examples(data)
    xf, yf, problem_f = value_examples(fresh)
    before = quality(loud.predict(xf), yf, problem_f, "held-out")
    scaling = platt_scaling(loud.logits(x), y)
    assert scaling is not None and 0.1 < scaling.a < 0.4 and scaling.b < 0  # shrinks and lowers it
    fixed = Probe(loud.card.model_copy(update={"platt": scaling}), arrays)
    after = quality(fixed.predict(xf), yf, problem_f, "held-out")
    assert before.ece > 0.15 and after.ece < 0.04 and after.brier < before.brier - 0.04
    assert after.auroc == before.auroc  # a strictly increasing map
    assert scaling.log_loss_scaled < scaling.log_loss_head
    # nothing to fit on a single class, and a head that ranks backwards is not flipped
    assert platt_scaling(loud.logits(x[:5]), np.zeros(5)) is None
    assert platt_scaling(-loud.logits(x), y) is None
