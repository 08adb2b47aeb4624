"""Compute-optimal advice from stored results: which entry to run under a token budget.

Per dataset, the entries whose mean output tokens per problem fit the budget are candidates;
the advice is the most accurate, with its interval and the paired test against the runner-up.
Because picking the best of many noisy entries flatters it, the pick is also made on a random
half of the problems (the *selection* half) and scored on the other half (the *held-out* half):
that held-out accuracy is what to expect.

With a per-problem difficulty score (a difficulty probe's P(a sample is right), any external
score, or the question's length as a free proxy), the problems are split into bins by the
score's quantiles on the selection half, and each bin gets its own entry: the assignment that
maximises accuracy with the mean tokens within the budget (compute-optimal allocation, Snell
et al. 2024, "Scaling LLM Test-Time Compute Optimally"). Its held-out accuracy and tokens are
reported beside those of the best single fixed entry chosen on the same selection half, with
a paired bootstrap of the gain. Allocation needs every candidate's outcome on every problem, so
it uses the problems all candidates solved.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reasoning import Problem
from reasoning.errors import ConfigError, DatasetError
from reasoning.evals.leaderboard.stats import paired_bootstrap
from reasoning.evals.leaderboard.store import ResultRow
from reasoning.evals.leaderboard.summary import CellStats
from reasoning.record import jsonl_lines

__all__ = ["Advice", "Allocation", "advise", "difficulty_scores", "split"]

MAX_ASSIGNMENTS = 200_000
"""Most bin-to-entry assignments searched exhaustively (beyond it: the best per bin greedily)."""


@dataclass(frozen=True)
class Allocation:
    """Per-difficulty-bin entries chosen on the selection half, scored on the held-out half."""

    bins: list[tuple[float, float]]
    """Each bin's score range (low, high]."""
    chosen: list[str]
    """The entry chosen for each bin."""
    problems: int
    """Held-out problems scored."""
    accuracy: float
    """Held-out accuracy of the allocation."""
    tokens: float
    """Its held-out mean output tokens per problem."""
    fixed: str
    """The best single entry within the budget on the selection half."""
    fixed_accuracy: float
    """Its held-out accuracy."""
    fixed_tokens: float
    """Its held-out mean output tokens."""
    gain: float
    """Allocation minus fixed, held-out accuracy."""
    low: float
    """95% interval of the gain (paired bootstrap over held-out problems)."""
    high: float
    p_value: float


@dataclass(frozen=True)
class Advice:
    """The advice for one dataset under one budget."""

    dataset: str
    budget_tokens: float
    best: CellStats | None
    """The most accurate entry within the budget (None: none fits)."""
    runner_up: CellStats | None
    """The next one."""
    p_value: float | None
    """Paired test of best vs runner-up on their shared problems (None without a runner-up)."""
    held_out: tuple[str, float, int] | None
    """The entry picked on the selection half, its accuracy on the held-out half, that half's size."""
    allocation: Allocation | None = None
    """Per-difficulty-bin allocation (when a difficulty score is given)."""
    candidates: list[str] = field(default_factory=list)
    """Every entry within the budget."""


def split(problem_id: str, seed: int = 0) -> bool:
    """True for the selection half, False for the held-out half (a stable hash of the id).

    Example:
        >>> sum(split(str(i)) for i in range(1000)) in range(450, 551)
        True
    """
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return digest[0] % 2 == 0


def advise(
    stats: Sequence[CellStats],
    rows: Mapping[str, Sequence[ResultRow]],
    budget_tokens: float,
    *,
    difficulty: Mapping[str, float] | None = None,
    bins: int = 3,
    seed: int = 0,
    min_problems: int = 1,
) -> list[Advice]:
    """Advice per dataset (see the module docstring).

    Args:
        stats: Every cell's statistics (`summarize`).
        rows: Each cell key's result rows.
        budget_tokens: Mean output tokens per problem allowed.
        difficulty: A score per problem id (higher: easier, like a probe's P(right)); None: no bins.
        bins: Difficulty bins.
        seed: Seed of the selection/held-out split.
        min_problems: Entries solved on fewer problems are left out of the allocation (it uses
            the problems every entry in it solved).

    Raises:
        ConfigError: The budget is not positive or `bins` < 1.
    """
    if not budget_tokens > 0:
        raise ConfigError(f"--budget-tokens must be > 0, got {budget_tokens}")
    if bins < 1:
        raise ConfigError(f"--bins must be >= 1, got {bins}")
    advice = []
    for dataset in dict.fromkeys(s.cell.dataset for s in stats):
        mine = [s for s in stats if s.cell.dataset == dataset]
        fits = sorted(
            (s for s in mine if s.output_tokens <= budget_tokens and not math.isnan(s.accuracy)),
            key=lambda s: (-s.accuracy, s.output_tokens),
        )
        best = fits[0] if fits else None
        runner_up = fits[1] if len(fits) > 1 else None
        p_value = None
        if best is not None and runner_up is not None:
            from reasoning.evals.leaderboard.summary import compare

            comparison = compare(rows[runner_up.cell.key], rows[best.cell.key], runner_up.label)
            p_value = None if comparison is None else comparison.p_value
        outcomes = {s.cell.key: _outcomes(rows[s.cell.key]) for s in mine}
        held_out = _held_out(fits, outcomes, seed)
        allocation = None
        if difficulty is not None and len(mine) > 1:  # any entry may serve a bin, within the mean budget
            pool = [s for s in mine if s.problems >= min_problems]
            if len(pool) > 1:
                allocation = _allocate(pool, outcomes, difficulty, budget_tokens, bins, seed)
        advice.append(
            Advice(
                dataset,
                budget_tokens,
                best,
                runner_up,
                p_value,
                held_out,
                allocation,
                [f"{s.label} [{s.cell.model}]" for s in fits],
            )
        )
    return advice


def _outcomes(rows: Sequence[ResultRow]) -> dict[str, tuple[float, float]]:
    """Mean correctness and output tokens per problem (over seeds), graded rows only."""
    grouped: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r.error is None and r.correct is not None:
            grouped.setdefault(r.problem_id, []).append((float(r.correct), float(r.output_tokens)))
    return {
        p: (float(np.mean([v[0] for v in vs])), float(np.mean([v[1] for v in vs])))
        for p, vs in grouped.items()
    }


def _held_out(
    fits: Sequence[CellStats], outcomes: Mapping[str, Mapping[str, tuple[float, float]]], seed: int
) -> tuple[str, float, int] | None:
    """Pick the best on the selection half of each entry's problems, score it on its held-out half."""
    if not fits:
        return None

    def accuracy(s: CellStats, half: bool) -> tuple[float, int]:
        values = [v[0] for p, v in outcomes[s.cell.key].items() if split(p, seed) == half]
        return (float(np.mean(values)) if values else math.nan), len(values)

    scored = [(accuracy(s, True)[0], s) for s in fits]
    scored = [(a, s) for a, s in scored if not math.isnan(a)]
    if not scored:
        return None
    _, pick = max(scored, key=lambda t: (t[0], -t[1].output_tokens))
    value, count = accuracy(pick, False)
    return f"{pick.label} [{pick.cell.model}]", value, count


def _allocate(
    fits: Sequence[CellStats],
    outcomes: Mapping[str, Mapping[str, tuple[float, float]]],
    difficulty: Mapping[str, float],
    budget: float,
    bins: int,
    seed: int,
) -> Allocation | None:
    shared = set.intersection(*(set(outcomes[s.cell.key]) for s in fits)) & set(difficulty)
    select = sorted(p for p in shared if split(p, seed))
    held = sorted(p for p in shared if not split(p, seed))
    if len(select) < 2 * bins or not held:
        return None
    edges = list(np.quantile([difficulty[p] for p in select], np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -math.inf, math.inf

    def bin_of(p: str) -> int:
        return min(bins - 1, max(0, int(np.searchsorted(edges, difficulty[p], side="left")) - 1))

    keys = [s.cell.key for s in fits]
    members = [[p for p in select if bin_of(p) == b] for b in range(bins)]
    share = [len(m) / len(select) for m in members]
    acc = [[_mean([outcomes[k][p][0] for p in m]) for k in keys] for m in members]
    tok = [[_mean([outcomes[k][p][1] for p in m]) for k in keys] for m in members]
    best_total, choice = -1.0, None
    combos: Iterable[tuple[int, ...]]
    if len(keys) ** bins <= MAX_ASSIGNMENTS:
        combos = itertools.product(range(len(keys)), repeat=bins)
    else:  # too many to search: each bin's most accurate entry
        combos = [tuple(int(np.argmax(acc[b])) for b in range(bins))]
    for combo in combos:
        tokens = sum(share[b] * tok[b][i] for b, i in enumerate(combo) if share[b])
        if tokens > budget:
            continue
        total = sum(share[b] * acc[b][i] for b, i in enumerate(combo) if share[b])
        if total > best_total + 1e-12:
            best_total, choice = total, combo
    fixed_scores = [
        (_mean([outcomes[k][p][0] for p in select]), -_mean([outcomes[k][p][1] for p in select]), i)
        for i, k in enumerate(keys)
        if _mean([outcomes[k][p][1] for p in select]) <= budget
    ]
    if choice is None or not fixed_scores:
        return None
    fixed = max(fixed_scores)[2]
    routed = [outcomes[keys[choice[bin_of(p)]]][p] for p in held]
    alone = [outcomes[keys[fixed]][p] for p in held]
    gain, low, high, p_value = paired_bootstrap([v[0] for v in alone], [v[0] for v in routed], seed=seed)
    labels = [f"{s.label} [{s.cell.model}]" for s in fits]
    return Allocation(
        bins=[(edges[b], edges[b + 1]) for b in range(bins)],
        chosen=[labels[i] for i in choice],
        problems=len(held),
        accuracy=_mean([v[0] for v in routed]),
        tokens=_mean([v[1] for v in routed]),
        fixed=labels[fixed],
        fixed_accuracy=_mean([v[0] for v in alone]),
        fixed_tokens=_mean([v[1] for v in alone]),
        gain=gain,
        low=low,
        high=high,
        p_value=p_value,
    )


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def difficulty_scores(source: str, problems: Sequence[Problem]) -> dict[str, float]:
    """Per-problem difficulty scores, higher meaning easier, from `source`.

    ``length``: minus the question's length in words (a free proxy: longer GSM8K questions take
    more steps). A ``.jsonl`` file: rows with ``id`` and ``score`` (e.g. a difficulty probe's
    P(a sample is right), `reasoning.strategies.difficulty`). A ``.csv`` file: ``id,score`` rows.

    Raises:
        ConfigError: An unknown source.
        DatasetError: A file is missing or a row is malformed (file and line named).
    """
    if source == "length":
        return {p.id: -float(len(p.question.split())) for p in problems}
    path = Path(source)
    if path.suffix not in (".jsonl", ".csv"):
        raise ConfigError(
            f"--difficulty {source!r}: give 'length', a .jsonl (id, score) or a .csv (id,score)"
        )
    if not path.is_file():
        raise DatasetError(f"difficulty file {path} does not exist")
    scores: dict[str, float] = {}
    for number, line in enumerate(jsonl_lines(path.read_text(encoding="utf-8")), 1):
        if not line.strip():
            continue
        try:
            if path.suffix == ".jsonl":
                row = json.loads(line)
                scores[str(row["id"])] = float(row["score"])
            else:
                key, _, value = line.rpartition(",")
                if number == 1 and key == "id":
                    continue
                scores[key.strip()] = float(value)
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path}:{number}: expected an id and a numeric score ({exc})") from None
    return scores
