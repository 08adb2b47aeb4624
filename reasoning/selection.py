"""Pure selection rules over candidates (no I/O): votes, argmax, confidence, stopping rules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from reasoning.backend import TokenLogprob

__all__ = [
    "TieBreak",
    "argmax",
    "group_confidences",
    "majority_probability",
    "majority_vote",
    "token_confidence",
    "trace_confidence",
]

TieBreak = Literal["first", "shortest", "longest"]
"""How a tied vote is broken: the group seen first, or the one holding the shortest/longest trace."""


def majority_vote(
    answers: Sequence[str | None],
    weights: Sequence[float] | None = None,
    lengths: Sequence[int] | None = None,
    tie: TieBreak = "first",
) -> int | None:
    """Index of a candidate carrying the most-voted answer, or None when no answer exists.

    Candidates without an answer do not vote. `weights` turn it into a weighted vote. Ties
    go to the answer that appeared first (``tie="first"``: the returned index is its first
    occurrence) or to the group holding the shortest / longest trace by `lengths` (the
    returned index is that trace).

    Example:
        >>> majority_vote(["3", None, "4", "4"])
        2
        >>> majority_vote(["3", "4", "4", "3"])  # a tie: the answer seen first
        0
        >>> majority_vote(["3", "4"], lengths=[9, 5], tie="shortest")
        1
    """
    if weights is None:
        weights = [1.0] * len(answers)
    if tie != "first" and lengths is None:
        raise ValueError(f"tie={tie!r} needs lengths")
    tally: dict[str, float] = {}
    members: dict[str, list[int]] = {}
    for i, (answer, weight) in enumerate(zip(answers, weights, strict=True)):
        if answer is None:
            continue
        tally[answer] = tally.get(answer, 0.0) + weight
        members.setdefault(answer, []).append(i)
    if not tally:
        return None
    best = max(tally.values())
    tied = [a for a, votes in tally.items() if math.isclose(votes, best, rel_tol=1e-12, abs_tol=1e-12)]
    if tie == "first" or lengths is None:
        return min(members[a][0] for a in tied)
    pool = [i for a in tied for i in members[a]]
    sign = 1 if tie == "shortest" else -1
    return min(pool, key=lambda i: (sign * lengths[i], i))


def argmax(scores: Sequence[float | None]) -> int | None:
    """Index of the highest score (first on ties); None scores are skipped."""
    best: int | None = None
    for i, score in enumerate(scores):
        if score is not None and (best is None or score > (scores[best] or 0.0)):
            best = i
    return best


def token_confidence(token: TokenLogprob, k: int = 20) -> float:
    """DeepConf token confidence: minus the mean log-probability of the top-k tokens.

    Peaked distributions (one likely token, the rest improbable) score high. Fewer than `k`
    alternatives (a server that returned fewer) average over those present.
    """
    top = token.top[:k] or ((token.token, token.logprob),)
    return -sum(logprob for _, logprob in top) / len(top)


def group_confidences(confidences: Sequence[float], window: int) -> list[float]:
    """Means of every full sliding window of `window` tokens; a shorter trace gives its mean."""
    if not confidences:
        return []
    if len(confidences) <= window:
        return [sum(confidences) / len(confidences)]
    total = sum(confidences[:window])
    out = [total / window]
    for i in range(window, len(confidences)):
        total += confidences[i] - confidences[i - window]
        out.append(total / window)
    return out


def trace_confidence(
    confidences: Sequence[float],
    metric: Literal["mean", "lowest", "bottom10", "tail"] = "lowest",
    window: int = 2048,
) -> float:
    """Trace-level confidence (DeepConf): mean, lowest group, bottom-10% groups, or tail mean."""
    if not confidences:
        return 0.0
    if metric == "mean":
        return sum(confidences) / len(confidences)
    if metric == "tail":
        tail = confidences[-window:]
        return sum(tail) / len(tail)
    groups = group_confidences(confidences, window)
    if metric == "lowest":
        return min(groups)
    bottom = sorted(groups)[: max(1, math.ceil(len(groups) * 0.1))]
    return sum(bottom) / len(bottom)


def majority_probability(leading: int, runner_up: int) -> float:
    """Posterior probability that the leading answer is the true majority (Beta rule).

    With a uniform prior on the leading answer's share p among the two top answers, after
    `leading` and `runner_up` votes p ~ Beta(leading + 1, runner_up + 1); this returns
    P(p > 1/2) = P(Binomial(leading + runner_up + 1, 1/2) <= leading), exactly.

    Example:
        >>> round(majority_probability(4, 0), 3)
        0.969
    """
    n = leading + runner_up + 1
    favourable: int = sum(math.comb(n, j) for j in range(leading + 1))
    return favourable / float(2**n)
