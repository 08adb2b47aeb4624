"""Statistics for leaderboard comparisons: intervals, paired tests, pass@k, maj@k, Pareto fronts.

Pure functions on plain numbers (numpy only), so every report and piece of advice computes its
figures the same way:

- `wilson`: the Wilson (1927) score interval of an accuracy.
- `mcnemar_exact`: McNemar's (1947) paired test of two strategies on the same problems, in its
  exact binomial form (exact integer arithmetic, so it holds for thousands of problems).
- `paired_bootstrap`: Efron's bootstrap of the mean per-problem difference, for scores that
  are not 0/1 (accuracy averaged over repeats).
- `pass_at_k`: the unbiased pass@k estimator of Chen et al. (2021).
- `maj_at_k`: the expected accuracy of a k-sample majority vote drawn from n samples.
- `pareto_front`: the cost/accuracy frontier.
- `percentile`, `cost_of_pass` (Erol et al. 2025): summaries of cost.
- `e3` (Lin et al. 2025): accuracy and tokens in one efficiency-aware score.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

__all__ = [
    "cost_of_pass",
    "e3",
    "maj_at_k",
    "mcnemar_exact",
    "paired_bootstrap",
    "pareto_front",
    "pass_at_k",
    "percentile",
    "wilson",
]

# Resampled means computed per numpy call in `paired_bootstrap`: bounds the index array's memory
# (rows x problems int64 values) whatever the number of problems.
_BOOTSTRAP_CELLS = 1 << 20


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default).

    E. B. Wilson (1927), "Probable inference, the law of succession, and statistical inference".
    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps its coverage near 0% and
    100% and for small samples.

    Args:
        successes: Number of successes (e.g. problems solved).
        trials: Number of trials; `trials <= 0` gives the uninformative (0.0, 1.0).
        z: Standard normal quantile of the two-sided level (1.96 for 95%).

    Returns:
        The (low, high) bounds, clipped to [0, 1].

    Example:
        >>> [round(v, 3) for v in wilson(8, 20)]
        [0.219, 0.613]
    """
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * ((p * (1 - p) / trials + z * z / (4 * trials * trials)) ** 0.5) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts of a paired comparison.

    Q. McNemar (1947), "Note on the sampling error of the difference between correlated
    proportions or percentages", in its exact binomial form: under H0 (both strategies equally
    accurate) each of the ``b + c`` discordant problems is equally likely to favour either one,
    so ``p = min(1, 2 * P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``. The tail is summed
    with exact integers (binomial coefficients) and divided once as a fraction, so the result is the
    correctly rounded float of the exact value, with no overflow for thousands of problems.

    Args:
        b: Problems the baseline got right and the other strategy wrong.
        c: Problems the other strategy got right and the baseline wrong.

    Returns:
        The p-value in (0, 1]; 1.0 when there are no discordant problems.

    Raises:
        ValueError: A count is negative.

    Example:
        >>> mcnemar_exact(10, 2)
        0.03857421875
        >>> mcnemar_exact(3, 3)
        1.0
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    term = tail = 1  # C(n, 0); each next term by the exact recurrence C(n, i + 1) = C(n, i) (n - i) / (i + 1)
    for i in range(min(b, c)):
        term = term * (n - i) // (i + 1)
        tail += term
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 10000, seed: int = 0
) -> tuple[float, float, float, float]:
    """Paired bootstrap of the mean per-problem difference ``b - a``.

    B. Efron (1979), "Bootstrap methods: another look at the jackknife"; percentile interval as in
    Efron & Tibshirani (1993), "An Introduction to the Bootstrap". Problems (not samples) are
    resampled with replacement, keeping each problem's pair together, so the correlation
    between the two strategies on the same problem is respected. The p-value for H0 (mean
    difference 0) is ``2 * min(share of resampled means <= 0, share >= 0)``, capped at 1.

    Args:
        a: Per-problem scores of the baseline (e.g. accuracy averaged over repeats, in [0, 1]).
        b: Per-problem scores of the other strategy, on the same problems in the same order.
        resamples: Number of bootstrap resamples.
        seed: Seed of numpy's `default_rng`; the result is deterministic for a seed.

    Returns:
        (mean difference b - a, 95% interval low, 95% interval high, two-sided p-value).

    Raises:
        ValueError: The sequences are empty or differ in length, or `resamples < 1`.

    Example:
        >>> baseline = [0, 0, 1, 0, 0, 1, 0, 0]
        >>> other = [1, 1, 1, 0, 1, 1, 1, 1]
        >>> diff, low, high, p = paired_bootstrap(baseline, other, resamples=2000)
        >>> diff, round(low, 3), round(high, 3), p < 0.01
        (0.625, 0.25, 0.875, True)
    """
    if len(a) != len(b) or not a:
        raise ValueError(
            f"paired_bootstrap needs two non-empty score lists of the same length, got {len(a)} and {len(b)}"
        )
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    diffs = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(diffs)
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOTSTRAP_CELLS // n)
    means = np.empty(resamples)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        means[start:stop] = diffs[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return float(diffs.mean()), float(low), float(high), p


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from `n` samples of which `c` are correct.

    Chen et al. (2021), "Evaluating Large Language Models Trained on Code", eq. 1:
    ``1 - C(n - c, k) / C(n, k)``, the probability that at least one of k samples drawn without
    replacement from the n is correct, computed in the paper's numerically stable product form
    ``1 - prod_{i = n-c+1}^{n} (1 - k / i)``.

    Args:
        n: Samples drawn for the problem.
        c: Correct samples among them.
        k: Samples the metric allows.

    Returns:
        The estimate in [0, 1].

    Raises:
        ValueError: `k` is not in 1..n, or `c` is not in 0..n.

    Example:
        >>> round(pass_at_k(10, 3, 2), 4)
        0.5333
        >>> pass_at_k(10, 0, 5), pass_at_k(10, 8, 3)
        (0.0, 1.0)
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n correct samples, got c={c}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _vote(answers: Sequence[str | None], correct: Sequence[bool], subset: Sequence[int]) -> float:
    """Expected correctness of the majority vote of the samples in `subset` (ties split evenly)."""
    votes: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for i in subset:
        answer = answers[i]
        if answer is not None:
            votes[answer] += 1
            right[answer] += bool(correct[i])
    if not votes:
        return 0.0
    top = max(votes.values())
    tied = [answer for answer, count in votes.items() if count == top]
    return sum(right[answer] / votes[answer] for answer in tied) / len(tied)


def maj_at_k(
    answers: Sequence[str | None], correct: Sequence[bool], k: int, *, resamples: int = 200, seed: int = 0
) -> float:
    """Expected accuracy of a majority vote over k of the n samples of one problem.

    The k samples are drawn without replacement from the n given. The vote picks the most
    common non-None answer; a tie is broken uniformly at random, so it counts as the share of
    the tied answers that are correct; a subset with no answer at all is wrong. An answer's
    correctness is the share of its samples (in the subset) marked correct, which is simply its
    grade when the grader is consistent. With ``k == n`` the vote is over all samples; when
    ``C(n, k) <= resamples`` every subset is enumerated (exact); otherwise `resamples` subsets
    are drawn at random from numpy's `default_rng(seed)` (a Monte-Carlo estimate).

    Args:
        answers: Each sample's extracted answer, None when it gave none.
        correct: Whether each sample's answer is right.
        k: Samples per vote.
        resamples: Most subsets enumerated exactly, and the number drawn otherwise.
        seed: Seed of the Monte-Carlo draw.

    Returns:
        The expected accuracy in [0, 1].

    Raises:
        ValueError: The lists differ in length, `k` is not in 1..n, or `resamples < 1`.

    Example:
        >>> answers = ["4", "4", "5", None]
        >>> maj_at_k(answers, [True, True, False, False], 4)
        1.0
        >>> maj_at_k(answers, [True, True, False, False], 1)  # one sample: its own accuracy
        0.5
        >>> round(maj_at_k(answers, [True, True, False, False], 2), 4)  # 6 pairs, exact
        0.6667
    """
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"maj@k needs one grade per answer, got {n} answers and {len(correct)} grades")
    if not 1 <= k <= n:
        raise ValueError(f"maj@k needs 1 <= k <= n, got k={k}, n={n}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if k == n:
        return _vote(answers, correct, range(n))
    if math.comb(n, k) <= resamples:
        subsets = list(itertools.combinations(range(n), k))
        return sum(_vote(answers, correct, s) for s in subsets) / len(subsets)
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(resamples):
        total += _vote(answers, correct, rng.choice(n, size=k, replace=False).tolist())
    return total / resamples


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points on the cost/accuracy Pareto front, by ascending cost.

    Lower x (cost) and higher y (accuracy) are better. A point is dominated when another has
    ``x' <= x`` and ``y' >= y`` with at least one strict; of identical points only the first
    (lowest index) is kept.

    Args:
        points: (cost, accuracy) pairs.

    Returns:
        The indices of the non-dominated points, sorted by x ascending.

    Example:
        >>> pareto_front([(10, 0.5), (5, 0.4), (20, 0.5), (5, 0.4), (30, 0.7), (1, 0.1)])
        [5, 1, 0, 4]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, linearly interpolated as numpy does by default.

    Args:
        values: The sample.
        q: Percentile in [0, 100].

    Returns:
        The percentile, or nan for an empty sample.

    Example:
        >>> percentile([1, 2, 3, 4], 50), percentile([10, 20], 25)
        (2.5, 12.5)
    """
    if len(values) == 0:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=float), q, method="linear"))


def cost_of_pass(total_cost: float, correct: float) -> float:
    """Cost per correct answer: the total cost divided by the number of problems solved.

    Erol et al. (2025), "Cost-of-Pass: An Economic Framework for Evaluating Language Models":
    the expected cost of one correct solution, ``cost / accuracy`` per problem, which over a
    dataset is the total cost over the number correct.

    Args:
        total_cost: Cost spent on all problems (tokens, seconds, dollars).
        correct: Number of problems solved (may be fractional, e.g. averaged over repeats).

    Returns:
        The cost per correct answer; inf when nothing was solved.

    Raises:
        ValueError: `correct` is negative.

    Example:
        >>> cost_of_pass(1200, 8), cost_of_pass(1200, 0)
        (150.0, inf)
    """
    if correct < 0:
        raise ValueError(f"correct must be >= 0, got {correct}")
    if correct == 0:
        return math.inf
    return total_cost / correct


def e3(accuracy: float, mean_tokens: float) -> float:
    """E^3, the efficiency-aware effectiveness of a method: ``A^2 / T``.

    Lin et al. (2025), "Plan and Budget: Effective and Efficient Test-Time Scaling on Large
    Language Model Reasoning" (arXiv 2505.16122, ICLR 2026): E^3 = A * (A / T) = A^2 / T, so
    accuracy weighs more than tokens (twice the accuracy is worth four times the tokens), where
    A / T alone would favour answering cheaply and wrongly. A is the accuracy in percent, as
    the paper's released evaluation (``run/run_eval.py``) scores it; T the mean output tokens
    per problem: that script averages the solving call's completion tokens (its plans were made
    offline), here every token decoded for the problem counts, a plan's included.

    Args:
        accuracy: Share of problems solved, in [0, 1] (NaN: ungraded).
        mean_tokens: Mean output tokens per problem.

    Returns:
        ``(100 * accuracy) ** 2 / mean_tokens``; NaN when ungraded or no token was decoded.

    Example:
        >>> e3(0.5, 250), e3(0.25, 250), e3(0.5, 0)
        (10.0, 2.5, nan)
    """
    if math.isnan(accuracy) or math.isnan(mean_tokens) or mean_tokens <= 0:
        return math.nan
    return (100 * accuracy) ** 2 / mean_tokens
