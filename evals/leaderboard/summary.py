"""What a leaderboard's store says about each cell, and the frontiers over cells.

Accuracy with its interval, the paired test against the baseline, pass@k and maj@k, tokens, calls,
latency, cost and E^3.

Accuracy is over every row (problem x seed). Its 95% interval is Wilson's with one seed; with
repeats, rows of one problem are not independent, so the interval is a bootstrap over problems.
A cell is compared with its baseline on the problems both solved without error: with one seed
and 0/1 outcomes by the exact McNemar test on the discordant pairs, with repeats by a paired
bootstrap of the per-problem mean. pass@k (Chen et al. 2021, unbiased) and maj@k are defined
only for cells whose candidates are independent samples of the prompt (`CellRow.iid_samples`),
for k = 1, 2, 4, ... up to the samples per problem.

Cost per problem: output tokens at the output price, uncached and cached prompt tokens at
theirs, and device time at the hourly price, where a problem's device time is its output tokens
at its engine session's measured throughput (the problems in flight share the engine; decoding
dominates its time). Cost-of-pass (Erol et al. 2025) is the total cost over the correct answers.
E^3 (Lin et al. 2025, `reasoning.evals.leaderboard.stats.e3`) is the accuracy in percent squared
over the mean output tokens per problem.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from reasoning.evals.leaderboard.spec import Price
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
from reasoning.evals.leaderboard.store import CellRow, ResultRow, SessionRow, Store

__all__ = ["CellStats", "Comparison", "frontier", "summarize"]


@dataclass(frozen=True)
class Comparison:
    """A cell against its baseline on the problems both solved."""

    baseline: str
    """The baseline cell's label."""
    problems: int
    """Problems compared (solved by both, without error)."""
    delta: float
    """Accuracy difference (this minus the baseline) on those problems."""
    low: float
    """95% interval of `delta` (bootstrap percentile), low end."""
    high: float
    """High end."""
    p_value: float
    """Two-sided p-value of no difference."""
    test: str
    """``mcnemar`` (exact, one seed) or ``bootstrap`` (paired, over problems)."""
    wins: int = 0
    """Problems only this cell solved (one seed; with repeats: problems where its mean is higher)."""
    losses: int = 0
    """Problems only the baseline solved."""


@dataclass(frozen=True)
class CellStats:
    """One cell's results (see the module docstring for definitions)."""

    cell: CellRow
    runs: int
    """Rows without error (problems x seeds)."""
    problems: int
    """Distinct problems among them."""
    errors: int
    """Rows that failed (retried by the next run)."""
    correct: int
    """Correct rows."""
    accuracy: float
    low: float
    high: float
    comparison: Comparison | None
    pass_at: dict[int, float] = field(default_factory=dict)
    """pass@k by k (independent samples only)."""
    maj_at: dict[int, float] = field(default_factory=dict)
    """maj@k by k (independent samples only)."""
    oracle: float | None = None
    """Share of rows where some candidate is right (pass@all)."""
    output_tokens: float = 0.0
    """Mean output tokens per problem."""
    prompt_tokens: float = 0.0
    cached_tokens: float = 0.0
    calls: float = 0.0
    sequential_tokens: float | None = None
    """Mean critical-path output tokens (None when the rows do not record them)."""
    seconds_p50: float = 0.0
    """Median wall time of a problem (while sharing the engine with the others in flight)."""
    seconds_p95: float = 0.0
    device_seconds: float = 0.0
    """Mean device time per problem (see the module docstring)."""
    cost: float = 0.0
    """Mean cost per problem."""
    cost_of_pass: float = math.inf
    """Cost per correct answer."""
    budget_stops: int = 0
    """Rows stopped by a budget line."""
    e3: float = math.nan
    """Efficiency-aware effectiveness: (100 x accuracy)^2 / mean output tokens (`stats.e3`)."""
    matched: Comparison | None = None
    """Against the self-consistency cell (same model and dataset) nearest in mean output tokens:
    the matched-compute comparison (None for self-consistency cells themselves)."""

    @property
    def label(self) -> str:
        """The cell's label."""
        return self.cell.label


def summarize(
    store: Store, cells: Sequence[CellRow], baselines: Mapping[str, str | None], price: Price
) -> list[CellStats]:
    """The statistics of `cells` (those without rows left out), compared with their baselines.

    Args:
        store: The leaderboard store.
        cells: The cells, in report order.
        baselines: Each cell key's baseline cell key (None: no comparison).
        price: Compute prices.
    """
    sessions = {s.id: s for s in store.sessions()}
    rows = {cell.key: store.results(cell.key) for cell in cells}
    stats = []
    for cell in cells:
        mine = [r for r in rows[cell.key] if r.error is None]
        if not mine:
            continue
        base = baselines.get(cell.key)
        comparison = None
        if base is not None and base != cell.key and base in rows:
            label = next((c.label for c in cells if c.key == base), base)
            comparison = compare(rows[base], rows[cell.key], label)
        stats.append(_cell_stats(cell, rows[cell.key], comparison, sessions, price))
    return [dataclasses.replace(s, matched=_matched(s, stats, rows)) for s in stats]


def _matched(
    mine: CellStats, stats: Sequence[CellStats], rows: Mapping[str, Sequence[ResultRow]]
) -> Comparison | None:
    """`mine` against the self-consistency cell nearest it in mean output tokens (same model, dataset)."""
    if mine.cell.strategy == "self-consistency" and "over" not in mine.cell.identity:
        return None
    pool = [
        s
        for s in stats
        if s.cell.strategy == "self-consistency"
        and "over" not in s.cell.identity
        and (s.cell.model, s.cell.dataset) == (mine.cell.model, mine.cell.dataset)
    ]
    if not pool:
        return None
    source = [s for s in pool if s.cell.key == mine.cell.identity.get("over")]
    # An entry selecting over a self-consistency entry's samples is matched with that entry:
    # the same samples, so the paired test sees the selection rule alone.
    nearest = source[0] if source else min(pool, key=lambda s: abs(s.output_tokens - mine.output_tokens))
    same = bool(source)
    label = f"{nearest.label} ({nearest.output_tokens:.0f} tokens{', the same samples' if same else ''})"
    return compare(rows[nearest.cell.key], rows[mine.cell.key], label)


def compare(baseline: Sequence[ResultRow], other: Sequence[ResultRow], label: str) -> Comparison | None:
    """`other` against `baseline` on the problems (and seeds) both solved without error."""
    a, b = _per_problem(baseline), _per_problem(other)
    shared = [p for p in b if p in a]
    if not shared:
        return None
    x = [float(np.mean(a[p])) for p in shared]
    y = [float(np.mean(b[p])) for p in shared]
    delta, low, high, p_boot = paired_bootstrap(x, y)
    wins = sum(yi > xi for xi, yi in zip(x, y, strict=True))
    losses = sum(xi > yi for xi, yi in zip(x, y, strict=True))
    binary = all(len(a[p]) == 1 and len(b[p]) == 1 for p in shared)
    if binary:
        return Comparison(
            label, len(shared), delta, low, high, mcnemar_exact(losses, wins), "mcnemar", wins, losses
        )
    return Comparison(label, len(shared), delta, low, high, p_boot, "bootstrap", wins, losses)


def _per_problem(rows: Sequence[ResultRow]) -> dict[str, list[float]]:
    """Graded rows' outcomes by problem (over seeds)."""
    outcomes: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r.error is None and r.correct is not None:
            outcomes[r.problem_id].append(float(r.correct))
    return dict(outcomes)


def _cell_stats(
    cell: CellRow,
    rows: Sequence[ResultRow],
    comparison: Comparison | None,
    sessions: Mapping[int, SessionRow],
    price: Price,
) -> CellStats:
    good = [r for r in rows if r.error is None]
    graded = [r for r in good if r.correct is not None]
    correct = sum(bool(r.correct) for r in graded)
    by_problem = _per_problem(good)
    if len({r.seed for r in good}) > 1 and by_problem:
        means = [float(np.mean(v)) for v in by_problem.values()]
        _, low, high, _ = paired_bootstrap([0.0] * len(means), means)
    else:
        low, high = wilson(correct, len(graded))
    n = len(good)
    pass_at: dict[int, float] = {}
    maj_at: dict[int, float] = {}
    if cell.iid_samples and graded:
        size = min(len(r.samples) for r in graded)
        k = 1
        while size and k <= size:
            pass_at[k] = float(
                np.mean([pass_at_k(len(r.samples), sum(bool(s[1]) for s in r.samples), k) for r in graded])
            )
            maj_at[k] = float(
                np.mean(
                    [maj_at_k([s[0] for s in r.samples], [bool(s[1]) for s in r.samples], k) for r in graded]
                )
            )
            k *= 2
    oracles = [r.oracle_correct for r in graded if r.oracle_correct is not None]
    device = [_device_seconds(r, sessions) for r in good]
    costs = [_cost(r, d, price) for r, d in zip(good, device, strict=True)]
    sequential = [r.sequential_tokens for r in good if r.sequential_tokens is not None]
    seconds = [r.seconds for r in good]
    accuracy = correct / len(graded) if graded else math.nan
    output_tokens = _mean([r.output_tokens for r in good])
    return CellStats(
        cell=cell,
        runs=n,
        problems=len({r.problem_id for r in good}),
        errors=len(rows) - n,
        correct=correct,
        accuracy=accuracy,
        low=low,
        high=high,
        comparison=comparison,
        pass_at=pass_at,
        maj_at=maj_at,
        oracle=float(np.mean(oracles)) if oracles else None,
        output_tokens=output_tokens,
        prompt_tokens=_mean([r.prompt_tokens for r in good]),
        cached_tokens=_mean([r.cached_tokens for r in good]),
        calls=_mean([r.calls for r in good]),
        sequential_tokens=_mean(sequential) if len(sequential) == n else None,
        seconds_p50=percentile(seconds, 50),
        seconds_p95=percentile(seconds, 95),
        device_seconds=_mean(device),
        cost=_mean(costs),
        cost_of_pass=cost_of_pass(sum(costs), correct),
        budget_stops=sum(r.stop_reason.startswith("budget") for r in good),
        e3=e3(accuracy, output_tokens),
    )


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _device_seconds(row: ResultRow, sessions: Mapping[int, SessionRow]) -> float:
    session = sessions.get(row.session) if row.session is not None else None
    if session is None or session.output_tokens <= 0 or session.seconds <= 0:
        return row.seconds
    return row.output_tokens * session.seconds / session.output_tokens


def _cost(row: ResultRow, device_seconds: float, price: Price) -> float:
    cached_price = (
        price.per_million_prompt_tokens
        if price.per_million_cached_tokens is None
        else price.per_million_cached_tokens
    )
    return (
        row.output_tokens * price.per_million_output_tokens
        + (row.prompt_tokens - row.cached_tokens) * price.per_million_prompt_tokens
        + row.cached_tokens * cached_price
    ) / 1e6 + device_seconds * price.per_device_hour / 3600


def frontier(stats: Sequence[CellStats], cost: str = "output_tokens") -> list[CellStats]:
    """The cells on the accuracy-vs-`cost` Pareto frontier (a `CellStats` field; lower is better).

    Example:
        >>> from reasoning.evals.leaderboard.store import CellRow
        >>> def s(label, acc, tokens):
        ...     cell = CellRow(label, "b", label, label, "m", "d", "single", {}, {}, False)
        ...     return CellStats(cell, 10, 10, 0, int(acc * 10), acc, 0, 1, None, output_tokens=tokens)
        >>> [c.label for c in frontier([s("a", 0.3, 100), s("b", 0.2, 200), s("c", 0.5, 400)])]
        ['a', 'c']
    """
    points = [(float(getattr(s, cost)), s.accuracy) for s in stats]
    keep = [i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    front = pareto_front([points[i] for i in keep])
    return [stats[keep[i]] for i in front]
