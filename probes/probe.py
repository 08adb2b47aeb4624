"""Probes: small classifiers on hidden states, trained, calibrated and saved as artefacts.

A probe maps the hidden states of chosen layers at one position to a probability: for an exit
probe (LYNX, arXiv 2512.05325), "forcing the final answer here gives the right answer"; for a
difficulty probe (DiffAdapt, Liu et al., arXiv 2510.19669), "one sample of this prompt is right";
for an advantage router (Arbitrage, Maheswaran et al., arXiv 2512.05033), "the target model's step
from here would be clearly better than the draft's step just written" (`reasoning.probes.advantage`).
Architecture from LYNX: standardise, then an MLP (256, 64) with ReLU, or logistic regression
(``hidden=()``); trained in torch (imported lazily) with class-balanced weights and early stopping
on a validation split of whole traces; scored in numpy, so using a probe needs no torch.

An artefact is ``NAME.safetensors`` (weights) + ``NAME.json`` (its card: format version, kind,
model fingerprint, layers, position, cue set, exit phrase, training-data hash, metrics, and the
calibrated conformal rule with alpha, thresholds, calibration size and the guarantee in words, or
for a router its escalation threshold with the rank correlation and AUROC it was calibrated at).
Loading it for another model raises `ProbeMismatch`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict

from reasoning.errors import ConfigError
from reasoning.models import ModelFingerprint, fingerprint
from reasoning.probes.conformal import ClassConditional
from reasoning.probes.data import DecisionPoints, _a, file_sha256, what_artefact
from reasoning.strategy import Context

__all__ = [
    "Calibration",
    "Kind",
    "Probe",
    "ProbeCard",
    "ProbeMismatch",
    "RouterCalibration",
    "auroc",
    "calibrate",
    "load_probe",
    "model_of",
    "spearman",
    "train_probe",
]

Kind = Literal["exit", "difficulty", "advantage"]
"""What a probe predicts: see `ProbeCard.kind`."""

FORMAT = 1
"""Version of the artefact format."""


class ProbeMismatch(ConfigError):
    """A probe artefact was made for another model (or another layer layout)."""


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    ranks = np.empty(len(values))
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and ordered[j + 1] == ordered[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2 + 1
        i = j + 1
    rank_of = np.empty(len(values))
    rank_of[order] = ranks
    return rank_of


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


class ProbeCard(BaseModel):
    """Everything needed to use a probe correctly and to know where it came from."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    format: int = FORMAT
    kind: Kind
    """exit: P(forced exit at this decision point is right); difficulty: P(a sample is right);
    advantage: P(the target's step would beat the draft's just-written step by the label margin)."""
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
        """Probabilities for feature rows ``[n, len(layers) * hidden]`` (or one row)."""
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
        return np.asarray(1.0 / (1.0 + np.exp(-h[:, 0].astype(np.float64))))

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
        document["weights_sha256"] = file_sha256(weights)
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
        if document.get("format") != FORMAT:
            what = what_artefact(document)
            if what is not None and what.startswith("decision-point"):
                raise ConfigError(
                    f"{card_path} is {what}, not a probe: train one on it with "
                    f"`reasoning probe train --data {base} --out NAME` and give NAME.json"
                )
            if what is not None:
                raise ConfigError(f"{card_path} is {what}, not a probe artefact")
            raise ConfigError(f"{card_path}: probe format {document.get('format')!r}, expected {FORMAT}")
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


_POSITIONS: dict[str, Literal["decision-point", "prompt", "step-end"]] = {
    "exit": "decision-point",
    "difficulty": "prompt",
    "advantage": "step-end",
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
) -> Probe:
    """Train a probe on decision points (kind exit), prompts (difficulty) or draft steps (advantage).

    The validation split holds out whole traces (stratified by whether the trace was right), so
    the reported AUROC is on traces the probe never saw. Early stopping watches validation loss.
    Classes are weighted to balance (Arbitrage downsamples the majority class instead). With an
    ``advantage`` array in the data, ``spearman_val`` reports rho(output, advantage) held out.

    Raises:
        ConfigError: fewer than two traces, or labels of one class only.
    """
    import torch

    if kind not in get_args(Kind):
        raise ConfigError(f"probe kind must be one of {', '.join(get_args(Kind))}, got {kind!r}")
    if kind != "difficulty":
        x, y, groups = data.features, data.labels, data.trace
    else:
        x, y, groups = data.prompt_features, data.trace_correct, np.arange(data.traces)
    y = np.asarray(y, dtype=np.float32)
    if data.traces < 2 or y.min() == y.max():
        raise ConfigError(
            f"cannot train a {kind} probe: {data.traces} traces, {int(y.sum())} of {len(y)} labels positive "
            "(need at least two traces and both labels)"
        )
    train_t, val_t = _split(data.traces, val_fraction, np.asarray(data.trace_correct), seed)
    train, val = np.isin(groups, train_t), np.isin(groups, val_t)
    if not val.any():
        train = val = np.ones(len(y), dtype=bool)
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
    positives = float(y[train].sum())
    n = float(train.sum())
    weight = torch.where(
        yt > 0.5, n / (2 * max(positives, 1.0)), n / (2 * max(n - positives, 1.0))
    )  # class-balanced (LYNX)
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    tr, va = torch.from_numpy(train), torch.from_numpy(val)
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
        cues=dict(meta.get("cues", {})) if kind == "exit" else {},
        exit_phrase=str(meta.get("exit_phrase", "")) if kind == "exit" else "",
        hidden=list(hidden),
        training_data_sha256=str(meta.get("arrays_sha256", "")),
        training={
            "dataset": meta.get("dataset", ""),
            "traces": int(data.traces),
            "examples": len(y),
            "positives": int(y.sum()),
            "train_traces": len(train_t),
            "val_traces": len(val_t),
            "epochs": ran,
            "seed": seed,
            **({"label": meta["label"]} if kind == "advantage" and "label" in meta else {}),
        },
    )
    probe = Probe(card, arrays)
    p = probe.predict(x[val])
    probe.card.metrics = {
        "auroc_val": auroc(p, y[val]),
        "accuracy_val": float(np.mean((p >= 0.5) == (y[val] > 0.5))),
        "auroc_train": auroc(probe.predict(x[train]), y[train]),
    }
    if kind == "advantage" and data.advantage is not None:
        probe.card.metrics["spearman_val"] = spearman(p, np.asarray(data.advantage)[val])
    return probe


def calibrate(probe: Probe, data: DecisionPoints, alpha: float, strict: bool = True) -> Probe:
    """Calibrate `probe`'s exit rule on decision points it was not trained on (new `Probe`).

    Raises:
        ConfigError: alpha out of range, one class missing, data for another model, or an
            advantage router (calibrated by `reasoning.probes.advantage.calibrate_router`).
    """
    if probe.card.kind == "advantage":
        raise ConfigError("an advantage router is calibrated by an escalation rate, not by alpha")
    model = data.meta.get("model", {})
    probe.check_model(ModelFingerprint(str(model.get("name", "")), str(model.get("sha256", ""))))
    if data.meta.get("arrays_sha256") and data.meta["arrays_sha256"] == probe.card.training_data_sha256:
        raise ConfigError("calibrate on data disjoint from the training data (same data file given)")
    x, y = (
        (data.features, data.labels)
        if probe.card.kind == "exit"
        else (data.prompt_features, data.trace_correct)
    )
    p = probe.predict(x)
    labels = np.asarray(y).astype(bool)
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
        calibration_exit_rate_unsafe=float(exits[~labels].mean()),
        calibration_exit_rate_safe=float(exits[labels].mean()),
    )
    card = probe.card.model_copy(deep=True)
    card.calibration = calibration
    card.metrics = {**card.metrics, "auroc_calibration": auroc(p, labels)}
    return Probe(card, probe.arrays)


@functools.lru_cache(maxsize=16)
def _cached(path: str, stamp: float, model: str) -> Probe:
    return Probe.load(path, fingerprint(model))


def model_of(ctx: Context, backend: str | None = None) -> str:
    """The model a context's (named) backend serves, as probe artefacts name it."""
    target = ctx.backend_named(backend)
    return str(getattr(target, "model", target.name))


def load_probe(path: str, model: str, kind: Kind, calibrated: bool = True) -> Probe:
    """Load (once per file version) a `kind` probe for `model`, as strategies do.

    Exit probes and advantage routers must be calibrated unless `calibrated` is False (a value
    probe reads only its probability; a router given its threshold needs none). ``path`` may
    omit the ``.json``.

    Raises:
        ConfigError: no such artefact, the wrong kind, or an uncalibrated exit probe or router.
        ProbeMismatch: made for another model.
    """
    file = Path(path if path.endswith(".json") else path + ".json")
    if not file.is_file():
        raise ConfigError(f"probe artefact {file} does not exist (make one with `reasoning probe`)")
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
    return probe
