"""Split conformal rules: quantiles, p-values, and the class-conditional guarantee on synthetic data."""

import math

import numpy as np
import pytest

from reasoning import ConfigError
from reasoning.probes.conformal import ClassConditional, conformal_p_value, conformal_quantile

SCORES = [0.1 * i for i in range(1, 11)]


def test_quantile_uses_the_n_plus_1_correction() -> None:
    assert conformal_quantile(SCORES, 0.1) == pytest.approx(1.0)  # k = ceil(11 * 0.9) = 10
    assert conformal_quantile(SCORES, 0.5) == pytest.approx(0.6)  # k = 6
    assert conformal_quantile(SCORES, 0.05) == math.inf  # k = 11 > n: no finite threshold
    assert conformal_quantile(SCORES, 0.05, strict=False) == pytest.approx(1.0)  # LYNX's clamp
    with pytest.raises(ConfigError, match="alpha"):
        conformal_quantile(SCORES, 1.5)
    with pytest.raises(ConfigError, match="at least one"):
        conformal_quantile([], 0.1)


def test_p_value_counts_calibration_scores_at_least_as_large() -> None:
    assert conformal_p_value(0.95, SCORES) == pytest.approx(2 / 11)
    assert conformal_p_value(2.0, SCORES) == pytest.approx(1 / 11)


def test_exit_rule_fires_only_when_the_set_is_safe() -> None:
    rule = ClassConditional(alpha=0.1, q_pos=0.2, q_neg=0.5, n_pos=10, n_neg=10)
    assert rule.exit(0.9) and not rule.exit(0.5) and not rule.exit(0.7)
    assert rule.prediction_set(0.7) == set() and rule.prediction_set(0.3) == {0}


def synthetic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """An informative but imperfect probe: safe points have higher probabilities."""
    labels = rng.random(n) < 0.5
    logits = rng.normal(np.where(labels, 1.5, -1.5), 1.5)
    return 1 / (1 + np.exp(-logits)), labels


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_premature_exit_rate_stays_under_alpha_over_random_splits(alpha: float) -> None:
    rng = np.random.default_rng(0)
    rates, exits = [], []
    for _ in range(400):
        p_cal, y_cal = synthetic(rng, 200)
        p_test, y_test = synthetic(rng, 400)
        rule = ClassConditional.calibrate(p_cal, y_cal, alpha)
        decisions = np.array([rule.exit(p) for p in p_test])
        rates.append(decisions[~y_test].mean())  # exits at points where exiting is wrong
        exits.append(decisions[y_test].mean())
    mean = float(np.mean(rates))
    # Marginal guarantee: E[rate] <= alpha; 400 repetitions put the sampling error near 0.003.
    assert mean <= alpha + 0.01, mean
    assert mean >= alpha / 3, "the rule is not vacuous: it does use its error allowance"
    assert float(np.mean(exits)) > 0.2, "and it exits at a useful share of the safe points"


def test_calibration_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="both safe and unsafe"):
        ClassConditional.calibrate([0.9, 0.8], [1, 1], 0.1)
    with pytest.raises(ConfigError, match="3 probabilities but 2 labels"):
        ClassConditional.calibrate([0.9, 0.8, 0.1], [1, 0], 0.1)
