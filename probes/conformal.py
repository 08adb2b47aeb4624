"""Split conformal calibration for stopping rules.

The rules of split conformal prediction (Angelopoulos and Bates, "A Gentle Introduction to
Conformal Prediction and Distribution-Free Uncertainty Quantification", arXiv 2107.07511) and
their class-conditional use for exits in LYNX (Akgül et al., arXiv 2512.05325).

Pure numpy, no model: the statistics that turn a probe's probabilities into a decision with a
finite-sample guarantee.

* `conformal_quantile`: the k-th smallest calibration score with k = ceil((n+1)(1-alpha));
  +inf when k > n (``strict=True``, split conformal proper: no finite threshold can guarantee
  that alpha with so few points) or clamped to the largest score (``strict=False``, LYNX's code).
* `ClassConditional` (Mondrian, as in LYNX): one quantile per class of the binary label
  "exiting here gives the right answer". The exit rule fires only when the prediction set is
  {exit-safe}: p >= 1 - q_pos and p > q_neg.
* `conformal_p_value`: (1 + #{calibration scores >= s}) / (n + 1).

What the guarantee says: for a new decision point exchangeable with the calibration points
(same model, prompt format, decoding and task distribution) whose true label is "not safe",
P(the rule exits) <= alpha, marginally over calibration and test draws. What it does not say:
it is per decision point, not per trace (a trace tests many cue points in sequence), and it
does not survive distribution shift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reasoning.errors import ConfigError

__all__ = ["GUARANTEE", "ClassConditional", "conformal_p_value", "conformal_quantile"]

GUARANTEE = (
    "per decision point, marginal over calibration and test draws: for an exchangeable decision "
    "point whose true label is 'not safe to exit', P(exit) <= alpha; not a per-trace bound, and "
    "void under distribution shift"
)
"""The guarantee in words, stored with every calibrated rule."""


def conformal_quantile(scores: Sequence[float] | np.ndarray, alpha: float, strict: bool = True) -> float:
    """The split-conformal threshold: k-th smallest score, k = ceil((n + 1)(1 - alpha)).

    Example:
        >>> conformal_quantile([0.1 * i for i in range(1, 11)], 0.1)
        1.0
        >>> round(conformal_quantile([0.1 * i for i in range(1, 11)], 0.5), 2)
        0.6
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    values = np.sort(np.asarray(scores, dtype=float))
    n = len(values)
    if n == 0:
        raise ConfigError("conformal calibration needs at least one calibration score")
    k = math.ceil((n + 1) * (1 - alpha) - 1e-12)
    if k > n:
        if strict:
            return math.inf
        k = n
    return float(values[max(k, 1) - 1])


def conformal_p_value(score: float, calibration: Sequence[float] | np.ndarray) -> float:
    """(1 + #{calibration scores >= score}) / (n + 1): super-uniform for an exchangeable score."""
    values = np.asarray(calibration, dtype=float)
    return float((1 + np.count_nonzero(values >= score)) / (len(values) + 1))


@dataclass(frozen=True)
class ClassConditional:
    """A calibrated binary exit rule (LYNX): exit only when the prediction set is {safe}."""

    alpha: float
    """Miscoverage per class: P(exit | not safe) <= alpha."""
    q_pos: float
    """Quantile of 1 - p over calibration points labelled safe."""
    q_neg: float
    """Quantile of p over calibration points labelled not safe."""
    n_pos: int
    """Safe calibration points."""
    n_neg: int
    """Unsafe calibration points."""
    guarantee: str = GUARANTEE
    """What the guarantee says and does not say."""

    @classmethod
    def calibrate(
        cls,
        probabilities: Sequence[float] | np.ndarray,
        labels: Sequence[int | bool] | np.ndarray,
        alpha: float,
        strict: bool = True,
    ) -> ClassConditional:
        """Calibrate on held-out (probe probability, label) pairs never used to train the probe.

        Raises:
            ConfigError: alpha out of range, mismatched lengths, or a class with no points.
        """
        p = np.asarray(probabilities, dtype=float)
        y = np.asarray(labels, dtype=bool)
        if p.shape != y.shape:
            raise ConfigError(f"{len(p)} probabilities but {len(y)} labels")
        if not y.any() or y.all():
            raise ConfigError("calibration needs both safe and unsafe decision points")
        return cls(
            alpha=alpha,
            q_pos=conformal_quantile(1 - p[y], alpha, strict),
            q_neg=conformal_quantile(p[~y], alpha, strict),
            n_pos=int(y.sum()),
            n_neg=int((~y).sum()),
        )

    def prediction_set(self, p: float) -> set[int]:
        """Labels not ruled out at this probability: 1 = safe to exit, 0 = not safe."""
        out = set()
        if 1 - p <= self.q_pos:
            out.add(1)
        if p <= self.q_neg:
            out.add(0)
        return out

    def exit(self, p: float) -> bool:
        """Exit here: the prediction set is exactly {safe}."""
        return self.prediction_set(p) == {1}
