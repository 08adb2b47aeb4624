"""Advantage routers: a probe on the draft's hidden states decides which steps the target rewrites.

"Arbitrage: Efficient Reasoning via Advantage-Aware Speculation" (Maheswaran et al., arXiv
2512.05033; ALGORITHMS.md section 6.4). Its router predicts, from the context and the draft's new
step, whether the target's step from the same prefix would be better: y = 1[Delta > margin] with
Delta = s_target - s_draft (step scores from a judge or PRM); a step is escalated iff the router's
output exceeds tau. The paper fine-tunes a 1.5B PRM as the router; here the router is a probe
(`reasoning.probes.probe`, kind ``advantage``) on the draft's own hidden states, so routing costs
one forward pass of the draft over text it has just written (INFERRED substitute, documented).

Where the states are read (shared by collection and inference, so they agree byte for byte):
the last token of ``prompt + steps so far + draft step + delimiter`` (`router_prefix`), the step
boundary the draft has just decoded. The paper's "Model 0/Model 1" tags on earlier steps are not
reproduced: the text the draft continues stays the plain solution.

Calibration (`calibrate_router`) picks tau on held-out steps so that a chosen fraction of steps is
escalated (the paper sweeps tau along the accuracy/acceptance curve; a rate is the knob a budget
sets), and records rho(output, Delta) (the paper's threshold-free selection metric), the AUROC,
and the mean Delta of the steps escalated next to the oracle's and random escalation's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from reasoning.engine.models import ModelFingerprint
from reasoning.errors import ConfigError
from reasoning.probes.data import DecisionPoints
from reasoning.probes.probe import Probe, RouterCalibration, auroc, fitted_on, spearman

__all__ = ["ESCALATE_RATE", "calibrate_router", "router_prefix", "threshold_for_rate"]

ESCALATE_RATE = 0.3
"""Default fraction of steps escalated to the target (INFERRED: the paper sweeps it)."""


def router_prefix(steps: Sequence[str], step: str, delimiter: str = "\n\n") -> str:
    """The assistant text whose last token the router reads: earlier steps, the new one, delimiter.

    Example:
        >>> router_prefix(["a", "b"], "c")
        'a\\n\\nb\\n\\nc\\n\\n'
    """
    return "".join(s + delimiter for s in (*steps, step))


def threshold_for_rate(outputs: Sequence[float] | np.ndarray, rate: float) -> float:
    """The tau for which the share of `outputs` above it is as close to `rate` as ties allow.

    With k = round(rate * n) steps to escalate, tau lies midway between the k-th and (k+1)-th
    largest output (at the largest output for k = 0, just below the smallest for k = n).

    Example:
        >>> threshold_for_rate([0.1, 0.9, 0.5, 0.7], 0.5)
        0.6
        >>> threshold_for_rate([0.1, 0.9], 0.0), threshold_for_rate([0.1, 0.9], 1.0) < 0.1
        (0.9, True)

    Raises:
        ConfigError: `rate` outside [0, 1], or no outputs.
    """
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"escalate_rate must be in [0, 1], got {rate}")
    p = np.sort(np.asarray(outputs, dtype=float))[::-1]
    if len(p) == 0:
        raise ConfigError("cannot choose an escalation threshold without calibration steps")
    k = round(rate * len(p))
    if k == 0:
        return float(p[0])
    if k == len(p):
        return float(np.nextafter(p[-1], -math.inf))
    return float((p[k - 1] + p[k]) / 2)


def calibrate_router(probe: Probe, data: DecisionPoints, escalate_rate: float = ESCALATE_RATE) -> Probe:
    """`probe` with an escalation threshold chosen on held-out steps `data` (a new `Probe`).

    Raises:
        ConfigError: not an advantage probe, data of the training set, data without advantages,
            or `escalate_rate` outside [0, 1].
        ProbeMismatch: data read from another model's hidden states.
    """
    if probe.card.kind != "advantage":
        raise ConfigError(f"calibrate_router needs an advantage probe, got a {probe.card.kind} probe")
    model = data.meta.get("model", {})
    probe.check_model(ModelFingerprint(str(model.get("name", "")), str(model.get("sha256", ""))))
    if data.meta.get("arrays_sha256") and data.meta["arrays_sha256"] == probe.card.training_data_sha256:
        raise ConfigError("calibrate on data disjoint from the training data (same data file given)")
    if data.advantage is None:
        raise ConfigError("router calibration needs the advantage of every step (collect-advantage data)")
    p = probe.predict(data.features)
    delta = np.asarray(data.advantage, dtype=float)
    tau = threshold_for_rate(p, escalate_rate)
    escalated = p > tau
    count = int(escalated.sum())
    margin = data.meta.get("label", {}).get("margin")
    calibration = RouterCalibration(
        escalate_rate=escalate_rate,
        threshold=tau,
        calibration_escalation_rate=float(escalated.mean()),
        spearman=spearman(p, delta),
        auroc=auroc(p, data.labels),
        steps=len(p),
        margin=None if margin is None else float(margin),
        mean_advantage_escalated=float(delta[escalated].mean()) if count else math.nan,
        mean_advantage_oracle=float(np.sort(delta)[::-1][:count].mean()) if count else math.nan,
        mean_advantage_all=float(delta.mean()),
        data_sha256=str(data.meta.get("arrays_sha256", "")),
    )
    card = probe.card.model_copy(deep=True)
    card.router = calibration
    card.fitted_on = [f for f in card.fitted_on if f.role != "calibration"] + [fitted_on(data, "calibration")]
    card.metrics = {
        **card.metrics,
        "auroc_calibration": calibration.auroc,
        "spearman_calibration": calibration.spearman,
    }
    return Probe(card, probe.arrays)
