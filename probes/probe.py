"""Probes: small classifiers on hidden states, trained, calibrated and saved as artefacts.

A probe maps the hidden states of chosen layers at one position to a probability: for an exit
probe (LYNX, arXiv 2512.05325), "forcing the final answer here gives the right answer"; for a
difficulty probe (DiffAdapt, Liu et al., arXiv 2510.19669), "one sample of this prompt is right";
for an advantage router (Arbitrage, Maheswaran et al., arXiv 2512.05033), "the target model's step
from here would be clearly better than the draft's step just written" (`reasoning.probes.advantage`).
Architecture from LYNX: standardise, then an MLP (256, 64) with ReLU, or logistic regression
(``hidden=()``); trained in torch (imported lazily) with class-balanced weights and early stopping
on a validation split of whole traces; scored in numpy, so using a probe needs no torch.

A value model (``kind="value"``) is read as P(right): value-weighted votes, self-eval's value
predictor and the value-scored tree searches (beam, dvts, a-star, particle filtering's weights)
all take its output as a probability. Trained without class reweighting but early stopped after
a few epochs of Adam (17 for the shipped 0.5B one), its head alone is miscalibrated: the 0.5B's
predicted 0.45-0.55 where 0.15-0.29 came out right (ECE 0.28), mostly a bias (its scaling: a
0.98, b -1.20). So it is
Platt-scaled after training (INFERRED: the OVM paper, arXiv 2311.09724, does not calibrate; Platt
1999, "Probabilistic Outputs for Support Vector Machines"): ``P = sigmoid(a * logit + b)``, with
``a > 0`` and ``b`` fitted by maximum likelihood (Platt's smoothed targets, so a separable set
cannot drive ``a`` to infinity) on the early-stopping problems, an inner 15% of the training
problems that the weights are never fitted on (they only choose the epoch), and stored in the
card (`PlattScaling`); `Probe.predict` applies it, so every consumer reads calibrated
probabilities. The map is strictly increasing: AUROC, the value argmax and any ranking are
unchanged. A card without it (every exit, difficulty and advantage probe, and value models made
before it) scores with the head's own sigmoid. Exit probes and advantage routers stay
class-balanced and uncalibrated this way (their conformal threshold, or escalation threshold, is
chosen on their own outputs); so does the difficulty probe, trained class-balanced like
DiffAdapt's: `difficulty` routes by comparing its output with a threshold (0.5 by default,
the balanced decision point), which a monotone map would only move, not improve.

An artefact is ``NAME.safetensors`` (weights) + ``NAME.json`` (its card: format version, kind,
model fingerprint, layers, position, cue set, exit phrase, training-data hash, metrics, and the
calibrated conformal rule with alpha, thresholds, calibration size and the guarantee in words, or
for a router its escalation threshold with the rank correlation and AUROC it was calibrated at,
for a value model its Platt scaling). Loading it for another model raises `ProbeMismatch`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict

from reasoning.engine.models import ModelFingerprint, fingerprint
from reasoning.errors import ConfigError
from reasoning.probes.conformal import ClassConditional
from reasoning.probes.data import DecisionPoints, _a, file_sha256, what_artefact
from reasoning.problem import Problem, question_sha
from reasoning.strategy import Context

__all__ = [
    "MINIMUM",
    "SHIPPED",
    "ArtefactOverlap",
    "Calibration",
    "FittedOn",
    "Kind",
    "PlattScaling",
    "Probe",
    "ProbeCard",
    "ProbeMismatch",
    "Quality",
    "RouterCalibration",
    "Underpowered",
    "auroc",
    "calibrate",
    "evaluate",
    "examples",
    "fitted_on",
    "load_probe",
    "model_of",
    "overlap",
    "platt_scaling",
    "problem_of_trace",
    "quality",
    "refuse_overlap",
    "resolve",
    "shipped",
    "spearman",
    "train_probe",
]

Kind = Literal["exit", "difficulty", "advantage", "value"]
"""What a probe predicts: see `ProbeCard.kind`."""

MINIMUM = {
    "problems": 100,
    "examples_per_class": 50,
    "held_out_problems": 20,
    "held_out_per_class": 20,
    "calibration_per_class": 50,
}
"""Least data an artefact is made from (`train_probe`, `calibrate` refuse less unless forced):
training problems and examples of each label; held-out problems and examples of each label
behind the quality it reports (whose AUROC interval must also clear 0.5); decision points of
each label a conformal exit rule is calibrated on. Below them a held-out AUROC is noise (the
issue behind them: 8 held-out traces gave 0.485) and a conformal quantile rests on a handful
of points."""


class Underpowered(ConfigError):
    """The data cannot support the artefact (too few examples, or quality no better than chance)."""


FORMAT = 3
"""Version of the artefact format (3: a value model's Platt scaling, `ProbeCard.platt`; 2: sealed
cards with provenance; 1 still loads). A card is written at the lowest version that holds it: 3
only with a Platt scaling (an older reader refuses it rather than score without it), else 2, so
a rebuilt exit or difficulty card is byte-identical to one made before version 3."""

_SEALED = (2, 3)
"""Versions whose cards carry their seal (``card_sha256``)."""


class ProbeMismatch(ConfigError):
    """A probe artefact was made for another model (or another layer layout)."""


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties sharing their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    average = np.cumsum(counts) - (counts - 1) / 2
    return np.asarray(average[inverse.reshape(-1)], dtype=float)


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN with a single class.

    Example:
        >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    rank_of = _ranks(np.concatenate([pos, neg]))
    u = rank_of[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation (Pearson on average ranks); NaN when either side is constant.

    Arbitrage selects routers by rho(router output, advantage), a threshold-free metric.

    Example:
        >>> round(spearman([0.1, 0.2, 0.3, 0.4], [1, 3, 2, 9]), 6), spearman([1, 2, 3], [3, 2, 1])
        (0.8, -1.0)
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


class Calibration(BaseModel):
    """A calibrated class-conditional conformal exit rule, as stored in the card."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    alpha: float
    q_pos: float
    q_neg: float
    n_pos: int
    n_neg: int
    strict: bool
    guarantee: str
    data_sha256: str = ""
    """Hash of the calibration data (disjoint from the training data)."""
    exit_threshold: float
    """Smallest probe probability that exits: max(1 - q_pos, just above q_neg)."""
    calibration_exit_rate_unsafe: float
    """Fraction of unsafe calibration points the rule would exit at (in-sample, <= alpha-ish)."""
    calibration_exit_rate_safe: float

    def rule(self) -> ClassConditional:
        """The exit rule."""
        return ClassConditional(self.alpha, self.q_pos, self.q_neg, self.n_pos, self.n_neg, self.guarantee)


class RouterCalibration(BaseModel):
    """An advantage router's escalation threshold, chosen on held-out steps (`calibrate_router`)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    escalate_rate: float
    """Fraction of steps the threshold was chosen to escalate to the target."""
    threshold: float
    """tau: escalate a step iff the router's output is above it."""
    calibration_escalation_rate: float
    """Fraction of the calibration steps it does escalate (ties can make it differ)."""
    spearman: float
    """rho(router output, advantage) on the calibration steps (Arbitrage's selection metric)."""
    auroc: float
    """AUROC of the router output against the labels on the calibration steps."""
    steps: int
    """Calibration steps."""
    margin: float | None = None
    """Label margin of the calibration data: a step is positive iff advantage > margin."""
    mean_advantage_escalated: float = math.nan
    """Mean advantage of the steps it escalates (what each target call buys)."""
    mean_advantage_oracle: float = math.nan
    """Mean advantage of the same number of steps with the largest advantage (the oracle)."""
    mean_advantage_all: float = math.nan
    """Mean advantage of all calibration steps (what random escalation buys per call)."""
    data_sha256: str = ""
    """Hash of the calibration data (disjoint from the training data)."""


class PlattScaling(BaseModel):
    """A value model's post-hoc calibration: ``P(right) = sigmoid(a * logit + b)`` (`platt_scaling`).

    Fitted on the early-stopping problems of training (never used to fit the weights, only to
    choose the epoch), disjoint from the validation problems its reported quality is measured on.
    """

    model_config = ConfigDict(ser_json_inf_nan="constants")

    a: float
    """Slope on the head's logit (> 0: a strictly increasing map; rankings are unchanged)."""
    b: float
    """Intercept."""
    split: Literal["early-stopping"] = "early-stopping"
    """Which examples it was fitted on."""
    problem_ids: list[str] = []
    """The problems fitted on (every example of their traces)."""
    examples: int
    positives: int
    log_loss_head: float
    """Mean log loss of the head's own output on those examples (the labels, not Platt's targets)."""
    log_loss_scaled: float
    """The same after the scaling."""


class FittedOn(BaseModel):
    """Problems an artefact was fitted on (trained or calibrated): evaluation must avoid them."""

    role: Literal["training", "calibration"]
    dataset: str
    """Where they came from, e.g. ``gsm8k-train[0:300]``."""
    problem_ids: list[str]
    question_sha: list[str] = []
    """First 16 hex digits of the sha256 of each whitespace-normalised question (`question_sha`):
    overlap is found by the question itself, whatever id or file it comes under."""


class Quality(BaseModel):
    """How well a probe's outputs predict its labels on examples it was not fitted on."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    split: str
    """Which examples: ``validation`` (held out of training, whole problems) or ``held-out``."""
    examples: int
    positives: int
    problems: int
    auroc: float
    auroc_low: float
    """95% interval of the AUROC: percentile bootstrap over problems (1,000 resamples, seeded)."""
    auroc_high: float
    brier: float
    """Mean squared error of the probability against the label."""
    ece: float
    """Expected calibration error over the ten reliability bins."""
    reliability: list[list[float]]
    """Ten equal-width bins of predicted probability: [low, high, count, mean predicted, observed
    rate] (empty bins left out)."""


class ProbeCard(BaseModel):
    """Everything needed to use a probe correctly and to know where it came from."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    format: int = FORMAT
    kind: Kind
    """exit: P(forced exit at this decision point is right); difficulty: P(a sample is right);
    advantage: P(the target's step would beat the draft's just-written step by the label margin);
    value: P(the trace through this point ends right), read at step boundaries and at a trace's
    end (an outcome-supervised value model, OVM)."""
    model: dict[str, str]
    """Fingerprint of the model whose hidden states it reads: {name, sha256}."""
    layers: list[int]
    """Layers read (transformers numbering: 0 = embeddings, L = final normed output)."""
    hidden_size: int
    position: Literal["decision-point", "prompt", "step-end"]
    """Where states are read: a decision point, the prompt's last token, or the end of a draft
    step (the delimiter after it: `reasoning.probes.advantage.router_prefix`)."""
    cues: dict[str, Any] = {}
    exit_phrase: str = ""
    hidden: list[int]
    """MLP hidden sizes ([] = logistic regression)."""
    training_data_sha256: str
    training: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    calibration: Calibration | None = None
    router: RouterCalibration | None = None
    """Escalation threshold of an advantage router (`reasoning probe calibrate --escalate-rate`)."""
    platt: PlattScaling | None = None
    """A value model's Platt scaling, applied by `Probe.predict` (None: the head's own sigmoid)."""
    fitted_on: list[FittedOn] = []
    """The problems it was trained and calibrated on (`refuse_overlap` keeps evaluation off them)."""
    quality: list[Quality] = []
    """Held-out quality: on the validation problems of training, and on held-out problems."""
    underpowered: list[str] = []
    """Minimums (`MINIMUM`) it was made below, with ``--force``; empty for a sound artefact."""


class Probe:
    """A trained probe: its card and its weights; `predict` needs only numpy."""

    def __init__(self, card: ProbeCard, arrays: dict[str, np.ndarray]) -> None:
        """Wrap weights ``mean``, ``scale``, ``w0``, ``b0``, ``w1``, ... with their card."""
        self.card = card
        self.arrays = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}

    @property
    def rule(self) -> ClassConditional | None:
        """The calibrated exit rule, if calibrated."""
        return self.card.calibration.rule() if self.card.calibration else None

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities for feature rows ``[n, len(layers) * hidden]`` (or one row).

        With a Platt scaling in the card (value models), ``sigmoid(a * logit + b)``.
        """
        z = self.logits(features)
        if self.card.platt is not None:
            z = self.card.platt.a * z + self.card.platt.b
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def logits(self, features: np.ndarray) -> np.ndarray:
        """The head's logits (float64) for feature rows, before any Platt scaling."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float32))
        expected = len(self.card.layers) * self.card.hidden_size
        if x.shape[1] != expected:
            raise ConfigError(f"probe expects {expected} features per row, got {x.shape[1]}")
        h = (x - self.arrays["mean"]) / self.arrays["scale"]
        depth = len(self.card.hidden) + 1
        for i in range(depth):
            h = h @ self.arrays[f"w{i}"].T + self.arrays[f"b{i}"]
            if i < depth - 1:
                h = np.maximum(h, 0.0)
        return np.asarray(h[:, 0], dtype=np.float64)

    def check_model(self, model: ModelFingerprint) -> None:
        """Refuse another model than the one the probe was trained on.

        Raises:
            ProbeMismatch: names both models.
        """
        mine = self.card.model
        if mine.get("sha256") != model.sha256:
            raise ProbeMismatch(
                f"this probe was trained on the hidden states of {mine.get('name')!r} "
                f"(sha256 {mine.get('sha256', '')[:12]}...), not of {model.name!r} "
                f"(sha256 {model.sha256[:12]}...); train one for this model with `reasoning probe`"
            )

    def save(self, path: str | Path) -> Path:
        """Write ``path.safetensors`` and ``path.json`` (the card); return the JSON path."""
        from safetensors.numpy import save_file

        base = Path(path)
        if base.suffix in (".json", ".safetensors"):
            base = base.with_suffix("")
        weights, card = base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")
        weights.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in self.arrays.items()}, str(weights))
        document = json.loads(self.card.model_dump_json())
        if self.card.platt is None:  # a format-2 card, as it was written before version 3
            del document["platt"]
        document["format"] = FORMAT if self.card.platt is not None else 2
        document["weights_sha256"] = file_sha256(weights)
        document["card_sha256"] = _card_sha256(document)
        card.write_text(json.dumps(document, indent=1))
        return card

    @classmethod
    def load(cls, path: str | Path, model: ModelFingerprint | None = None) -> Probe:
        """Read an artefact; with `model`, refuse it unless it was made for that model.

        Raises:
            ConfigError: files missing, unknown format, or weights not matching the card's hash.
            ProbeMismatch: made for another model.
        """
        from safetensors.numpy import load_file

        base = Path(path)
        if base.suffix in (".json", ".safetensors"):
            base = base.with_suffix("")
        weights, card_path = base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")
        for each in (weights, card_path):
            if not each.is_file():
                raise ConfigError(f"probe artefact: {each} does not exist")
        try:
            document = json.loads(card_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"{card_path}: not a probe card (not valid JSON: {exc})") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{card_path}: not a probe card (a JSON {type(document).__name__})")
        if document.get("format") not in (1, *_SEALED):
            what = what_artefact(document)
            if what is not None and what.startswith("decision-point"):
                raise ConfigError(
                    f"{card_path} is {what}, not a probe: train one on it with "
                    f"`reasoning probe train --data {base} --out NAME` and give NAME.json"
                )
            if what is not None:
                raise ConfigError(f"{card_path} is {what}, not a probe artefact")
            raise ConfigError(
                f"{card_path}: probe format {document.get('format')!r}, expected 1 to {FORMAT} "
                "(a newer version of this package made it?)"
            )
        sealed = document.pop("card_sha256", None)
        if document.get("format") in _SEALED and sealed is None:
            raise ConfigError(f"{card_path} has lost its seal (card_sha256): rebuild it rather than edit it")
        if sealed is not None and sealed != _card_sha256(document):
            raise ConfigError(
                f"{card_path} was changed after it was made (its content does not match its card_sha256); "
                "rebuild it rather than edit it"
            )
        recorded = document.pop("weights_sha256", None)
        if recorded is not None and recorded != file_sha256(weights):
            raise ConfigError(f"{weights} does not match the sha256 recorded in {card_path}")
        try:
            card = ProbeCard.model_validate(document)
        except ValueError as exc:  # pydantic's ValidationError
            raise ConfigError(f"{card_path}: not a valid probe card ({exc})") from None
        try:
            arrays = load_file(str(weights))
        except Exception as exc:  # safetensors' own error: truncated or not safetensors
            raise ConfigError(f"{weights}: unreadable probe weights ({exc})") from None
        probe = cls(card, arrays)
        if model is not None:
            probe.check_model(model)
        return probe


def _card_sha256(document: dict[str, Any]) -> str:
    """sha256 of a card's content (every field but ``card_sha256``, keys sorted)."""
    content = {k: v for k, v in document.items() if k != "card_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


_POSITIONS: dict[str, Literal["decision-point", "prompt", "step-end"]] = {
    "exit": "decision-point",
    "difficulty": "prompt",
    "advantage": "step-end",
    "value": "decision-point",
}


def _split(groups: int, fraction: float, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and validation groups, stratified by a per-group label."""
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for value in (0, 1):
        members = np.flatnonzero(labels == value)
        rng.shuffle(members)
        val += list(members[: max(1, round(len(members) * fraction))] if len(members) > 1 else [])
    val_idx = np.array(sorted(val), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(groups), val_idx)
    return train_idx, val_idx


def problem_of_trace(data: DecisionPoints) -> np.ndarray:
    """Each trace's problem index (traces of one problem share it; one trace each: its index)."""
    traces = data.meta.get("traces")
    if not isinstance(traces, list) or len(traces) != data.traces:
        return np.arange(data.traces)
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(str(t.get("problem_id", i)), len(ids)) for i, t in enumerate(traces)])


def examples(data: DecisionPoints, kind: Kind) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and the trace of each example a `kind` probe learns from.

    exit and advantage: the decision points (steps) and their labels; difficulty: each trace's
    prompt and whether the trace was right; value: every decision point and every trace's last
    token, each labelled by whether its trace ended right (outcome supervision, OVM).

    Raises:
        ConfigError: value data without the traces' last-token features (collected before them).
    """
    if kind == "difficulty":
        return data.prompt_features, data.trace_correct, np.arange(data.traces)
    if kind != "value":
        return data.features, data.labels, data.trace
    if data.final_features is None:
        raise ConfigError(
            "a value model needs each trace's last-token features: collect again with this version "
            "(`reasoning probe collect` reads them)"
        )
    outcome = np.asarray(data.trace_correct)
    return (
        np.concatenate([data.features, data.final_features]),
        np.concatenate([outcome[data.trace], outcome]),
        np.concatenate([data.trace, np.arange(data.traces)]),
    )


def quality(
    p: np.ndarray, y: np.ndarray, problem: np.ndarray, split: str, seed: int = 0, resamples: int = 1000
) -> Quality:
    """AUROC with its bootstrap interval over problems, Brier score and reliability of `p`."""
    p, y, problem = np.asarray(p, dtype=float), np.asarray(y).astype(int), np.asarray(problem)
    groups = np.unique(problem)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(problem == g) for g in groups]
    values = []
    for _ in range(resamples if len(groups) > 1 else 0):
        take = np.concatenate([members[i] for i in rng.integers(0, len(groups), len(groups))])
        value = auroc(p[take], y[take])
        if math.isfinite(value):
            values.append(value)
    low, high = (
        (float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975)))
        if values
        else (
            math.nan,
            math.nan,
        )
    )
    bins = []
    ece = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        inside = (p >= lo) & ((p < hi) if b < 9 else (p <= hi))
        if inside.any():
            mean_p, observed = float(p[inside].mean()), float(y[inside].mean())
            bins.append([lo, hi, float(inside.sum()), mean_p, observed])
            ece += inside.sum() / len(p) * abs(mean_p - observed)
    return Quality(
        split=split,
        examples=len(y),
        positives=int(y.sum()),
        problems=len(groups),
        auroc=auroc(p, y),
        auroc_low=low,
        auroc_high=high,
        brier=float(np.mean((p - y) ** 2)) if len(y) else math.nan,
        ece=float(ece),
        reliability=bins,
    )


def evaluate(probe: Probe, data: DecisionPoints, split: str = "held-out", seed: int = 0) -> Quality:
    """`probe`'s quality on `data` (problems it was not fitted on)."""
    x, y, trace = examples(data, probe.card.kind)
    return quality(probe.predict(x), y, problem_of_trace(data)[trace], split, seed)


def fitted_on(data: DecisionPoints, role: Literal["training", "calibration"]) -> FittedOn:
    """The problems behind `data`, in order, as an artefact records them."""
    traces = data.meta.get("traces") or []
    ids: dict[str, str] = {}
    for t in traces:
        ids.setdefault(str(t.get("problem_id", "")), str(t.get("question_sha", "")))
    return FittedOn(
        role=role,
        dataset=str(data.meta.get("dataset", "")),
        problem_ids=list(ids),
        question_sha=[q for q in ids.values() if q],
    )


def _log_loss(z: np.ndarray, y: np.ndarray) -> float:
    """Mean log loss of ``sigmoid(z)`` against labels (or targets) `y`, computed stably."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z)) if len(z) else math.nan


def platt_scaling(
    logits: np.ndarray, labels: np.ndarray, problem_ids: Sequence[str] = (), iterations: int = 100
) -> PlattScaling | None:
    """Platt scaling of a head's `logits` on held-aside examples: a, b of ``sigmoid(a * z + b)``.

    Maximum likelihood by Newton's method (with step halving; the loss is convex) against
    Platt's smoothed targets, ``(N+ + 1) / (N+ + 2)`` for a right example and ``1 / (N- + 2)``
    for a wrong one, so a separable set gives a finite slope. None (keep the head's output)
    with a single class, or when the fitted slope is not positive: the head then ranks those
    examples no better than chance, and a decreasing map would reverse what it learned.

    Example:
        >>> z = np.array([-4.0, -2.0, 0.0, 2.0, 4.0, 6.0])  # an overconfident head
        >>> s = platt_scaling(z, np.array([0, 0, 1, 0, 1, 1]))
        >>> 0 < s.a < 1 and s.log_loss_scaled < s.log_loss_head
        True
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.float64)
    positives = int(y.sum())
    if len(z) == 0 or positives in (0, len(y)):
        return None
    target = np.where(y > 0.5, (positives + 1) / (positives + 2), 1 / (len(y) - positives + 2))
    design = np.stack([z, np.ones_like(z)], axis=1)
    theta = np.array([1.0, 0.0])
    loss = _log_loss(design @ theta, target)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (p - target)
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        shrink = 1.0
        while shrink > 1e-6:
            trial = theta - shrink * step
            trial_loss = _log_loss(design @ trial, target)
            if trial_loss <= loss:
                break
            shrink /= 2
        else:
            break
        theta, done = trial, loss - trial_loss < 1e-12
        loss = trial_loss
        if done:
            break
    a, b = float(theta[0]), float(theta[1])
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0:
        return None
    return PlattScaling(
        a=a,
        b=b,
        problem_ids=list(problem_ids),
        examples=len(y),
        positives=positives,
        log_loss_head=_log_loss(z, y),
        log_loss_scaled=_log_loss(a * z + b, y),
    )


def _short(shortfalls: list[str], force: bool, what: str) -> list[str]:
    """Raise `Underpowered` listing `shortfalls` unless forced; return them (for the card)."""
    if shortfalls and not force:
        raise Underpowered(
            f"the data cannot support {what}: "
            + "; ".join(shortfalls)
            + ". Collect on more train problems (the shipped recipe: `reasoning probe build`), or "
            "give --force to make it anyway (its card then lists these shortfalls)"
        )
    return shortfalls


def train_probe(
    data: DecisionPoints,
    kind: Kind = "exit",
    hidden: Sequence[int] = (256, 64),
    val_fraction: float = 0.2,
    epochs: int = 500,
    patience: int = 10,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 42,
    force: bool = False,
) -> Probe:
    """Train a probe on decision points (exit, value), prompts (difficulty) or draft steps (advantage).

    The validation split holds out whole problems (every trace of a problem on one side,
    stratified by whether its first trace was right), so the reported quality is on problems
    the probe never saw; early stopping watches the loss on an inner 15% of the training
    problems, so nothing tuned touches the validation problems. Exit, difficulty and
    advantage probes weight classes to balance (LYNX; Arbitrage downsamples instead); a value
    model is not reweighted, and is then Platt-scaled on the early-stopping problems
    (`platt_scaling`; none when there are no separate early-stopping problems), so its output
    estimates P(right) itself. With an ``advantage`` array in the data, ``spearman_val``
    reports rho(output, advantage) held out.

    Raises:
        ConfigError: fewer than two traces, or labels of one class only.
        Underpowered: below `MINIMUM`, or a validation AUROC whose interval reaches 0.5
            (unless `force`: the card then lists the shortfalls).
    """
    import torch

    if kind not in get_args(Kind):
        raise ConfigError(f"probe kind must be one of {', '.join(get_args(Kind))}, got {kind!r}")
    x, y, trace_of = examples(data, kind)
    y = np.asarray(y, dtype=np.float32)
    if data.traces < 2 or len(y) == 0 or y.min() == y.max():
        raise ConfigError(
            f"cannot train a {kind} probe: {data.traces} traces, {int(y.sum())} of {len(y)} labels positive "
            "(need at least two traces and both labels)"
        )
    problem_of = problem_of_trace(data)
    problems = int(problem_of.max()) + 1
    first_right = np.zeros(problems, dtype=np.int8)
    for t in range(data.traces - 1, -1, -1):  # each problem's first trace
        first_right[problem_of[t]] = data.trace_correct[t]
    train_p, val_p = _split(problems, val_fraction, first_right, seed)
    train_t, val_t = np.flatnonzero(np.isin(problem_of, train_p)), np.flatnonzero(np.isin(problem_of, val_p))
    train, val = np.isin(trace_of, train_t), np.isin(trace_of, val_t)
    if not val.any():
        train = val = np.ones(len(y), dtype=bool)
    # Early stopping watches an inner split of the training problems, so the validation
    # problems stay untouched for the quality reported and the chance gate.
    _, stop_p = _split(len(train_p), 0.15, first_right[train_p], seed + 1)
    stop = np.isin(trace_of, np.flatnonzero(np.isin(problem_of, train_p[stop_p])))
    fit = train & ~stop
    held_aside = bool(stop.any() and fit.any())  # early-stopping problems apart from the fitted ones
    if not held_aside:
        fit, stop = train, train
    shortfalls = [
        f"{label} {have} < {MINIMUM[key]}"
        for label, key, have in (
            ("problems", "problems", problems),
            ("right (label 1) training examples", "examples_per_class", int(y[train].sum())),
            ("wrong (label 0) training examples", "examples_per_class", int((1 - y[train]).sum())),
            ("validation problems", "held_out_problems", len(val_p)),
            ("right validation examples", "held_out_per_class", int(y[val].sum())),
            ("wrong validation examples", "held_out_per_class", int((1 - y[val]).sum())),
        )
        if have < MINIMUM[key]
    ]
    x = np.asarray(x, dtype=np.float32)
    mean = x[train].mean(axis=0)
    scale = x[train].std(axis=0) + 1e-6
    torch.manual_seed(seed)
    sizes = [x.shape[1], *hidden, 1]
    layers: list[Any] = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    xt = torch.from_numpy((x - mean) / scale)
    yt = torch.from_numpy(y)
    positives = float(y[fit].sum())
    n = float(fit.sum())
    if kind == "value":
        weight = torch.ones_like(yt)
    else:
        weight = torch.where(
            yt > 0.5, n / (2 * max(positives, 1.0)), n / (2 * max(n - positives, 1.0))
        )  # class-balanced (LYNX)
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    tr, va = torch.from_numpy(fit), torch.from_numpy(stop)
    best, best_state, waited, ran = math.inf, None, 0, 0
    for epoch in range(1, epochs + 1):
        ran = epoch
        net.train()
        optimizer.zero_grad()
        loss = (loss_fn(net(xt[tr])[:, 0], yt[tr]) * weight[tr]).mean()
        loss.backward()
        optimizer.step()
        net.eval()
        with torch.no_grad():
            val_loss = float((loss_fn(net(xt[va])[:, 0], yt[va]) * weight[va]).mean())
        if val_loss < best - 1e-5:
            best, waited = val_loss, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    linear = [m for m in net if isinstance(m, torch.nn.Linear)]
    arrays = {"mean": mean, "scale": scale}
    for i, m in enumerate(linear):
        arrays[f"w{i}"] = m.weight.detach().numpy().copy()
        arrays[f"b{i}"] = m.bias.detach().numpy().copy()
    meta = data.meta
    layers_read = [int(v) for v in meta.get("layers", [])]
    hidden_size = x.shape[1] // max(len(layers_read), 1)
    card = ProbeCard(
        kind=kind,
        model=dict(meta.get("model", {"name": "unknown", "sha256": ""})),
        layers=layers_read,
        hidden_size=hidden_size,
        position=_POSITIONS[kind],
        cues=dict(meta.get("cues", {})) if kind in ("exit", "value") else {},
        exit_phrase=str(meta.get("exit_phrase", "")) if kind == "exit" else "",
        hidden=list(hidden),
        training_data_sha256=str(meta.get("arrays_sha256", "")),
        training={
            "dataset": meta.get("dataset", ""),
            "sampling": meta.get("sampling", {}),
            "traces": int(data.traces),
            "problems": problems,
            "examples": len(y),
            "positives": int(y.sum()),
            "train_traces": len(train_t),
            "val_traces": len(val_t),
            "val_problems": len(val_p),
            "early_stopping_problems": len(stop_p),
            "epochs": ran,
            "seed": seed,
            **({"label": meta["label"]} if kind == "advantage" and "label" in meta else {}),
        },
        fitted_on=[fitted_on(data, "training")],
    )
    probe = Probe(card, arrays)
    if kind == "value" and held_aside:
        traces = meta.get("traces") or []
        names = list(dict.fromkeys(str(t.get("problem_id", i)) for i, t in enumerate(traces)))
        stopped = sorted({int(v) for v in problem_of[trace_of[stop]]})
        probe.card.platt = platt_scaling(
            probe.logits(x[stop]), y[stop], [names[i] for i in stopped] if len(names) == problems else []
        )
    p = probe.predict(x[val])
    held = quality(p, y[val], problem_of[trace_of[val]], "validation", seed)
    probe.card.quality = [held]
    probe.card.metrics = {
        "auroc_val": auroc(p, y[val]),
        "accuracy_val": float(np.mean((p >= 0.5) == (y[val] > 0.5))),
        "auroc_train": auroc(probe.predict(x[train]), y[train]),
        "brier_val": held.brier,
    }
    if kind == "advantage" and data.advantage is not None:
        probe.card.metrics["spearman_val"] = spearman(p, np.asarray(data.advantage)[val])
    if not shortfalls and not held.auroc_low > 0.5:
        shortfalls.append(
            f"validation AUROC {held.auroc:.3f} (95% interval {held.auroc_low:.3f}-{held.auroc_high:.3f}) "
            "is not above chance"
        )
    probe.card.underpowered = _short(shortfalls, force, f"{_a(kind)} probe")
    return probe


def calibrate(
    probe: Probe, data: DecisionPoints, alpha: float, strict: bool = True, force: bool = False
) -> Probe:
    """Calibrate `probe`'s exit rule on decision points it was not trained on (new `Probe`).

    Raises:
        ConfigError: alpha out of range, one class missing, data for another model or from the
            training problems, or an advantage router (calibrated by
            `reasoning.probes.advantage.calibrate_router`).
        Underpowered: fewer decision points of a label than ``MINIMUM["calibration_per_class"]``
            (unless `force`: the card then lists the shortfall).
    """
    if probe.card.kind in ("advantage", "value"):
        raise ConfigError(
            f"{_a(probe.card.kind)} probe is not calibrated by alpha"
            + (" (a router by an escalation rate)" if probe.card.kind == "advantage" else "")
        )
    model = data.meta.get("model", {})
    probe.check_model(ModelFingerprint(str(model.get("name", "")), str(model.get("sha256", ""))))
    if data.meta.get("arrays_sha256") and data.meta["arrays_sha256"] == probe.card.training_data_sha256:
        raise ConfigError("calibrate on data disjoint from the training data (same data file given)")
    used = fitted_on(data, "calibration")
    training = [f for f in probe.card.fitted_on if f.role == "training"]
    trained = {q for f in training for q in f.question_sha}
    trained_ids = {i for f in training if not f.question_sha for i in f.problem_ids}
    shas = (
        used.question_sha if len(used.question_sha) == len(used.problem_ids) else [""] * len(used.problem_ids)
    )
    shared = [
        i for i, q in zip(used.problem_ids, shas, strict=True) if (q and q in trained) or i in trained_ids
    ]
    if shared:
        raise ConfigError(
            f"calibrate on problems the probe was not trained on: {len(shared)} of the calibration "
            f"problems were in its training data (e.g. {', '.join(shared[:3])})"
        )
    x, y = (
        (data.features, data.labels)
        if probe.card.kind == "exit"
        else (data.prompt_features, data.trace_correct)
    )
    p = probe.predict(x)
    labels = np.asarray(y).astype(bool)
    least = MINIMUM["calibration_per_class"]
    shortfalls = [
        f"{name} calibration points {have} < {least}"
        for name, have in (("safe (label 1)", int(labels.sum())), ("unsafe (label 0)", int((~labels).sum())))
        if have < least
    ]
    rule = ClassConditional.calibrate(p, labels, alpha, strict)
    exits = np.array([rule.exit(float(v)) for v in p])
    threshold = (
        max(1 - rule.q_pos, np.nextafter(rule.q_neg, math.inf)) if math.isfinite(rule.q_neg) else math.inf
    )
    calibration = Calibration(
        **{
            k: v
            for k, v in asdict(rule).items()
            if k in ("alpha", "q_pos", "q_neg", "n_pos", "n_neg", "guarantee")
        },
        strict=strict,
        data_sha256=str(data.meta.get("arrays_sha256", "")),
        exit_threshold=float(threshold),
        calibration_exit_rate_unsafe=float(exits[~labels].mean()) if (~labels).any() else 0.0,
        calibration_exit_rate_safe=float(exits[labels].mean()) if labels.any() else 0.0,
    )
    card = probe.card.model_copy(deep=True)
    card.calibration = calibration
    card.metrics = {**card.metrics, "auroc_calibration": auroc(p, labels)}
    card.fitted_on = [f for f in card.fitted_on if f.role != "calibration"] + [used]
    card.quality = [q for q in card.quality if q.split != "calibration"] + [
        evaluate(probe, data, "calibration")
    ]
    card.underpowered = [u for u in card.underpowered if "calibration" not in u] + _short(
        shortfalls, force, "a conformal exit rule"
    )
    return Probe(card, probe.arrays)


@functools.lru_cache(maxsize=16)
def _cached(path: str, stamp: float, model: str) -> Probe:
    return Probe.load(path, fingerprint(model))


def model_of(ctx: Context, backend: str | None = None) -> str:
    """The model a context's (named) backend serves, as probe artefacts name it."""
    target = ctx.backend_named(backend)
    return str(getattr(target, "model", target.name))


SHIPPED = Path(__file__).parent / "artefacts"
"""Artefacts that ship with the package: ``artefacts/<model name>/<kind>.json`` (+ weights)."""


class ArtefactOverlap(ConfigError):
    """An artefact was fitted on problems that are being evaluated."""


def shipped(kind: Kind, model: str) -> Path | None:
    """The shipped `kind` artefact for `model` (an embedded name, its folder), if one ships."""
    file = SHIPPED / fingerprint(model).name / f"{kind}.json"
    return file if file.is_file() else None


def overlap(fitted: Sequence[FittedOn], problems: Sequence[Problem]) -> list[str]:
    """Ids of `problems` whose question an artefact was fitted on (by question, else by id)."""
    shas = {q for f in fitted for q in f.question_sha}
    ids = {i for f in fitted if not f.question_sha for i in f.problem_ids}
    return [p.id for p in problems if p.id in ids or question_sha(p.question) in shas]


def refuse_overlap(file: str | Path, fitted: Sequence[FittedOn], problems: Sequence[Problem]) -> None:
    """Raise `ArtefactOverlap` when `problems` include any the artefact at `file` was fitted on."""
    shared = overlap(fitted, problems)
    if shared:
        where = ", ".join(sorted({f.dataset for f in fitted if f.dataset})) or "its data"
        raise ArtefactOverlap(
            f"{file} was fitted on {len(shared)} of the {len(problems)} problems being evaluated "
            f"(e.g. {', '.join(shared[:3])}; it was fitted on {where}): evaluate on other problems "
            "(the shipped artefacts are fitted on GSM8K train problems: evaluate on gsm8k, the test split)"
        )


def resolve(path: str, model: str, kind: Kind) -> Path:
    """The artefact file: `path` (``.json`` optional), or when empty the one shipped for `model`.

    Raises:
        ConfigError: no such file, or none given and none ships for the model.
    """
    if not path:
        found = shipped(kind, model)
        if found is None:
            from reasoning.engine.models import embedded

            how = (
                f"make one with `reasoning probe build --model {model} --out DIR`"
                if embedded(model) is not None or Path(model).is_dir()
                else "train one on this model's hidden states with `reasoning probe` (docs/usage.md)"
            )
            raise ConfigError(
                f"no {kind} probe ships for {model!r} (only the embedded models have them); {how} and give "
                "its path (-p probe=FILE.json)"
            )
        return found
    file = Path(path if path.endswith(".json") else path + ".json")
    if not file.is_file():
        raise ConfigError(f"probe artefact {file} does not exist (make one with `reasoning probe`)")
    return file


def load_probe(
    path: str, model: str, kind: Kind, calibrated: bool = True, problem: Problem | None = None
) -> Probe:
    """Load (once per file version) a `kind` probe for `model`, as strategies do.

    An empty `path` is the artefact shipped for `model`. Exit probes and advantage routers must
    be calibrated unless `calibrated` is False (a value probe reads only its probability; a
    router given its threshold needs none). ``path`` may omit the ``.json``. With `problem`,
    an artefact fitted on that problem is refused.

    Raises:
        ConfigError: no such artefact, the wrong kind, or an uncalibrated exit probe or router.
        ProbeMismatch: made for another model.
        ArtefactOverlap: fitted on `problem`.
    """
    file = resolve(path, model, kind)
    probe = _cached(str(file), file.stat().st_mtime, model)
    if probe.card.kind != kind:
        raise ConfigError(f"{file} is {_a(probe.card.kind)} probe; {_a(kind)} probe is needed here")
    if kind == "exit" and calibrated and probe.rule is None:
        raise ConfigError(f"{file} is not calibrated: run `reasoning probe calibrate` on it first")
    if kind == "advantage" and calibrated and probe.card.router is None:
        raise ConfigError(
            f"{file} has no escalation threshold: run `reasoning probe calibrate --escalate-rate` "
            "on it, or give the threshold"
        )
    if problem is not None:
        refuse_overlap(file, probe.card.fitted_on, [problem])
    return probe
