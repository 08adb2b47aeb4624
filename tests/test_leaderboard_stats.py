import itertools
import math

import pytest

from reasoning.evals.leaderboard.stats import (
    cost_of_pass,
    e3,
    maj_at_k,
    mcnemar_exact,
    paired_bootstrap,
    pareto_front,
    pass_at_k,
    percentile,
    wilson,
)

# --- wilson -----------------------------------------------------------------------------------


def test_wilson_known_interval() -> None:
    low, high = wilson(8, 20)
    assert (round(low, 3), round(high, 3)) == (0.219, 0.613)


def test_wilson_at_zero_successes_has_the_closed_form_upper_bound() -> None:
    # p = 0: low = 0 and high = (z²/n) / (1 + z²/n).
    z2n = 1.96**2 / 10
    assert wilson(0, 10) == (0.0, pytest.approx(z2n / (1 + z2n)))
    low, high = wilson(10, 10)
    assert high == 1.0 and low == pytest.approx(1 - z2n / (1 + z2n))


def test_wilson_without_trials_is_uninformative() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(3, -1) == (0.0, 1.0)


def test_wilson_narrows_with_a_smaller_z() -> None:
    wide, narrow = wilson(8, 20), wilson(8, 20, z=1.0)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


# --- mcnemar_exact ----------------------------------------------------------------------------


def test_mcnemar_hand_computed_values() -> None:
    assert mcnemar_exact(0, 5) == 0.0625  # 2 * 2**-5
    assert mcnemar_exact(5, 0) == 0.0625
    assert mcnemar_exact(10, 2) == 0.03857421875  # 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact(2, 10) == 0.03857421875
    assert mcnemar_exact(1, 3) == 0.625  # 2 * (1 + 4) / 16


def test_mcnemar_matches_the_binomial_tail() -> None:
    for b in range(25):
        for c in range(25):
            if b + c:
                tail = sum(math.comb(b + c, i) for i in range(min(b, c) + 1))
                assert mcnemar_exact(b, c) == min(1.0, 2 * tail / 2 ** (b + c)), (b, c)


def test_mcnemar_is_capped_at_one() -> None:
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 1) == 1.0
    assert mcnemar_exact(0, 0) == 1.0


def test_mcnemar_is_exact_for_thousands_of_problems() -> None:
    p = mcnemar_exact(1400, 1600)
    # Continuity-corrected normal approximation: z = (|b - c| - 1) / sqrt(b + c).
    approx = math.erfc((200 - 1) / math.sqrt(3000) / math.sqrt(2))
    assert 0 < p < 1e-3
    assert p == pytest.approx(approx, rel=0.1)
    assert mcnemar_exact(1500, 1500) == 1.0


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="b=-1, c=2"):
        mcnemar_exact(-1, 2)


# --- paired_bootstrap -------------------------------------------------------------------------

A = [0.0, 0.25, 0.5, 0.0, 1.0, 0.75, 0.0, 0.5, 0.25, 0.0]
B = [0.5, 0.75, 0.5, 0.25, 1.0, 1.0, 0.5, 0.75, 0.25, 0.5]


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    a = [0.13, 0.71, 0.42, 0.05, 0.93, 0.37, 0.58, 0.21, 0.66, 0.09, 0.84, 0.47]
    b = [0.29, 0.62, 0.55, 0.31, 0.88, 0.49, 0.77, 0.18, 0.71, 0.36, 0.81, 0.64]
    first = paired_bootstrap(a, b, resamples=2000, seed=7)
    assert paired_bootstrap(a, b, resamples=2000, seed=7) == first
    second = paired_bootstrap(a, b, resamples=2000, seed=8)
    assert second[0] == first[0]  # the observed difference does not depend on the seed
    assert second[1:3] != first[1:3]


def test_bootstrap_sign_and_interval() -> None:
    diff, low, high, p = paired_bootstrap(A, B, resamples=2000)
    assert diff == pytest.approx(0.275)
    assert 0 < low < diff < high
    assert p < 0.01
    back, back_low, back_high, back_p = paired_bootstrap(B, A, resamples=2000)
    assert back == pytest.approx(-diff)
    assert (back_low, back_high) == (pytest.approx(-high), pytest.approx(-low))
    assert back_p == p


def test_bootstrap_p_value_definition() -> None:
    # Diffs [1, 0]: resampled means are 1, 0.5, 0 with chances 1/4, 1/2, 1/4, so
    # share <= 0 is 1/4, share >= 0 is 1, and p = 2 * 1/4.
    _, low, high, p = paired_bootstrap([0, 0], [1, 0], resamples=10000)
    assert p == pytest.approx(0.5, abs=0.04)
    assert (low, high) == (0.0, 1.0)
    # One problem, b better: every resample has mean 1.
    assert paired_bootstrap([0], [1], resamples=50) == (1.0, 1.0, 1.0, 0.0)


def test_bootstrap_of_identical_scores_finds_nothing() -> None:
    assert paired_bootstrap(A, A, resamples=500) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_handles_many_problems() -> None:
    a = [0.0] * 5000
    b = [float(i % 4 == 0) for i in range(5000)]  # 1/4 of the problems gained
    diff, low, high, p = paired_bootstrap(a, b, resamples=1000, seed=3)
    assert diff == 0.25
    assert 0.23 < low < 0.25 < high < 0.27
    assert p == 0.0
    assert paired_bootstrap(a, b, resamples=1000, seed=3) == (diff, low, high, p)


def test_bootstrap_rejects_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError, match="3 and 2"):
        paired_bootstrap([0, 1, 0], [1, 1])
    with pytest.raises(ValueError, match="0 and 0"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap([0], [1], resamples=0)


# --- pass_at_k --------------------------------------------------------------------------------


def test_pass_at_1_is_the_share_correct() -> None:
    for n in range(1, 30):
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)


def test_pass_at_k_extremes() -> None:
    for n in range(1, 15):
        for k in range(1, n + 1):
            assert pass_at_k(n, 0, k) == 0.0
            assert pass_at_k(n, n, k) == 1.0


def test_pass_at_k_matches_the_combinatorial_definition() -> None:
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n() -> None:
    # C(1000, 500) overflows a float; the product form does not.
    value = pass_at_k(1000, 1, 500)
    assert value == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("n", "c", "k", "message"),
    [(5, 2, 6, "k=6, n=5"), (5, 2, 0, "k=0, n=5"), (5, 6, 1, "c=6, n=5"), (5, -1, 1, "c=-1, n=5")],
)
def test_pass_at_k_rejects_bad_arguments(n: int, c: int, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)


# --- maj_at_k ---------------------------------------------------------------------------------


def test_maj_over_all_samples_is_the_plain_vote() -> None:
    assert maj_at_k(["7", "7", "3"], [False, False, True], 3) == 0.0
    assert maj_at_k(["7", "3", "3"], [False, True, True], 3) == 1.0


def test_maj_ties_count_as_the_share_of_tied_answers_correct() -> None:
    assert maj_at_k(["a", "b"], [True, False], 2) == 0.5
    assert maj_at_k(["a", "b", "c"], [False, True, False], 3) == pytest.approx(1 / 3)
    # Tie between the two top answers only; the single "c" is not in the tie.
    assert maj_at_k(["a", "a", "b", "b", "c"], [True, True, False, False, True], 5) == 0.5


def test_maj_ignores_missing_answers() -> None:
    assert maj_at_k(["5", None, None], [True, False, False], 3) == 1.0
    assert maj_at_k([None, None], [False, False], 2) == 0.0
    # k = 1: each sample alone; a None sample is wrong.
    assert maj_at_k(["5", None, None], [True, False, False], 1) == pytest.approx(1 / 3)


def test_maj_enumerates_subsets_exactly() -> None:
    answers = ["a", "a", "b", "b", "b"]
    correct = [True, True, False, False, False]
    # C(5, 3) = 10 subsets; "a" wins only in the 3 that hold both a's.
    assert maj_at_k(answers, correct, 3) == pytest.approx(0.3)
    # Pairs: {a,a} 1, {b,b} 3 pairs -> 0, {a,b} 6 ties -> 0.5 each: (1 + 3) / 10.
    assert maj_at_k(answers, correct, 2) == pytest.approx(0.4)
    assert maj_at_k(answers, correct, 5) == 0.0


def test_maj_monte_carlo_is_deterministic_and_close_to_exact() -> None:
    answers = ["x", "y", "x", "z", "y", "x", None, "y", "x", "z", "x", "y"]
    correct = [a == "x" for a in answers]
    exact = maj_at_k(answers, correct, 6, resamples=1000)  # C(12, 6) = 924 <= 1000: enumerated
    brute = sum(
        _vote_reference([answers[i] for i in s], [correct[i] for i in s])
        for s in itertools.combinations(range(12), 6)
    ) / math.comb(12, 6)
    assert exact == pytest.approx(brute)
    sampled = maj_at_k(answers, correct, 6, resamples=200, seed=1)
    assert sampled == maj_at_k(answers, correct, 6, resamples=200, seed=1)
    assert sampled == pytest.approx(exact, abs=0.1)


def _vote_reference(answers: list[str | None], correct: list[bool]) -> float:
    """An independent spelling of the vote for a subset whose answers are graded consistently."""
    given = [a for a in answers if a is not None]
    if not given:
        return 0.0
    top = max(given.count(a) for a in given)
    tied = sorted({a for a in given if given.count(a) == top})
    right = {a for a, ok in zip(answers, correct, strict=True) if ok}
    return sum(a in right for a in tied) / len(tied)


def test_maj_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="3 answers and 2 grades"):
        maj_at_k(["a", "b", "c"], [True, False], 1)
    with pytest.raises(ValueError, match="k=0, n=2"):
        maj_at_k(["a", "b"], [True, False], 0)
    with pytest.raises(ValueError, match="k=3, n=2"):
        maj_at_k(["a", "b"], [True, False], 3)
    with pytest.raises(ValueError, match="k=1, n=0"):
        maj_at_k([], [], 1)


# --- pareto_front -----------------------------------------------------------------------------


def test_pareto_front_on_crafted_points() -> None:
    points = [(10.0, 0.5), (5.0, 0.4), (20.0, 0.5), (5.0, 0.4), (30.0, 0.7), (1.0, 0.1), (5.0, 0.3)]
    # (20, .5) is dominated by (10, .5); the second (5, .4) is a duplicate; (5, .3) by (5, .4).
    assert pareto_front(points) == [5, 1, 0, 4]


def test_pareto_front_keeps_the_first_of_identical_points() -> None:
    assert pareto_front([(2.0, 0.5), (2.0, 0.5), (2.0, 0.5)]) == [0]
    assert pareto_front([(3.0, 0.9), (1.0, 0.2), (1.0, 0.2)]) == [1, 0]


def test_pareto_front_edge_cases() -> None:
    assert pareto_front([]) == []
    assert pareto_front([(4.0, 0.0)]) == [0]
    # A cheaper, better point dominates everything else.
    assert pareto_front([(9.0, 0.1), (5.0, 0.8), (1.0, 0.9), (7.0, 0.5)]) == [2]


# --- percentile and cost_of_pass --------------------------------------------------------------


def test_percentile_interpolates_linearly() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 25) == 1.75
    assert percentile([7.0], 90) == 7.0
    assert math.isnan(percentile([], 50))


def test_cost_of_pass() -> None:
    assert cost_of_pass(1200, 8) == 150.0
    assert cost_of_pass(10, 2.5) == 4.0
    assert cost_of_pass(1200, 0) == math.inf
    with pytest.raises(ValueError, match="correct must be >= 0"):
        cost_of_pass(10, -1)


def test_e3_is_accuracy_in_percent_squared_over_mean_tokens() -> None:
    assert e3(0.5, 250) == 10.0  # 50^2 / 250
    assert e3(1.0, 400) == 25.0
    assert e3(0.5, 250) == 4 * e3(0.25, 250)  # twice the accuracy is worth four times the tokens
    assert e3(0.0, 100) == 0.0
    assert all(math.isnan(e3(a, t)) for a, t in ((math.nan, 100), (0.5, 0), (0.5, math.nan)))
