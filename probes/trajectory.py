"""Latent-Trajectory (LT) signals: how far and how straight hidden states travel.

"Tracing the Traces" (Vilas et al., arXiv 2510.10494, ICLR 2026) averages a trace's hidden states over
consecutive segments of ``k`` tokens and reads three training-free scores off the segment
path, per layer, then averages them over layers with equal weight:

    h̃_l(n) = mean of layer l's states over segment n          n = 1..N (last may be shorter)
    u_l    = h̃_l(N) - h̃_l(1)                                  drift
    v_l(n) = h̃_l(n) - h̃_l(n-1), n = 2..N                      updates
    net_l  = ||u_l|| / (N - 1)          cumulative_l = Σ_n ||v_l(n)||
    aligned_l = mean_n cos(v_l(n), u_l)
    N < 2: every signal is undefined (NaN)

Correct traces move far and directly: higher net and aligned change, *lower* cumulative
change. `confidence` turns a signal into "higher = more likely correct" (cumulative is
negated); ``"combined"`` is a weighted sum of the sign-corrected signals, z-normalised with
statistics that `combine_weights` computes from calibration traces (the paper's LT-Combined)
or that `standardise` computes from the traces at hand.

Choices the paper's code does not settle (INFERRED): the cosine of a zero vector is 0 (what
``torch.nn.functional.cosine_similarity`` gives); without calibration data ``"combined"``
weighs the raw sign-corrected signals 1/3 each; when every calibration correlation is zero
or undefined, `combine_weights` falls back to equal weights.

Example (one layer, two dimensions, one token per segment: the path (0,0) -> (3,0) -> (3,4)):
    >>> states = np.array([[[0.0, 0.0]], [[3.0, 0.0]], [[3.0, 4.0]]])
    >>> lt_signals(states, k=1)
    Signals(net=2.5, cumulative=7.0, aligned=0.7, segments=3)
    >>> net_by_step(states, k=1).tolist(), cumulative_by_step(states, k=1).tolist()
    ([3.0, 2.5], [3.0, 7.0])
    >>> confidence(lt_signals(states, k=1), "cumulative")
    -7.0
    >>> lt_signals(states[:1], k=1).net  # one segment: undefined
    nan
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, get_args

import numpy as np
from pydantic import BeforeValidator

__all__ = [
    "EQUAL",
    "SIGNALS",
    "Combination",
    "Layers",
    "Signal",
    "Signals",
    "combine_weights",
    "confidence",
    "cumulative_by_step",
    "lt_signals",
    "net_by_step",
    "segment_means",
    "standardise",
]

Signal = Literal["net", "cumulative", "aligned", "combined"]
"""Which LT signal ranks traces."""

SIGNALS: tuple[str, ...] = get_args(Signal)
"""The signal names, for validation messages."""


def _layer_list(value: object) -> object:
    """Accept ``"4,8,12"`` (from the command line) as well as a sequence of ints."""
    if isinstance(value, str):
        return tuple(int(part) for part in value.replace(" ", "").split(",") if part)
    return value


Layers = Annotated[tuple[int, ...], BeforeValidator(_layer_list)]
"""A tuple of layer numbers; a comma-separated string is accepted when parameters are parsed."""


@dataclass(frozen=True)
class Signals:
    """The three LT signals of one trace (NaN when it has fewer than two segments)."""

    net: float
    """NetChange: mean over layers of ||last segment - first segment|| / (N - 1)."""
    cumulative: float
    """CumulativeChange: mean over layers of the summed lengths of the segment updates."""
    aligned: float
    """AlignedChange: mean over layers of the mean cosine between updates and the drift."""
    segments: int = 0
    """Number of segments N the trace was cut into."""

    def oriented(self) -> tuple[float, float, float]:
        """The signals with cumulative negated, so that higher always means more likely correct."""
        return (self.net, -self.cumulative, self.aligned)

    @property
    def defined(self) -> bool:
        """Whether the signals are defined (at least two segments)."""
        return all(math.isfinite(x) for x in self.oriented())


@dataclass(frozen=True)
class Combination:
    """How ``"combined"`` adds the sign-corrected signals: ``Σ w_i (s_i - mean_i) / std_i``.

    Order of every triple: net, -cumulative, aligned.
    """

    means: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Means of the sign-corrected signals (z-normalisation)."""
    stds: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Their standard deviations (population; 1 where a signal did not vary)."""
    weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    """Weights, summing to 1 (|Pearson r| with correctness when calibrated)."""

    def score(self, signals: Signals) -> float:
        """The combined confidence of `signals` (NaN when they are undefined)."""
        parts = zip(signals.oriented(), self.means, self.stds, self.weights, strict=True)
        return float(sum(w * (s - m) / sd for s, m, sd, w in parts))


EQUAL = Combination()
"""No normalisation, equal weights 1/3 (INFERRED default when there is no calibration data)."""


def segment_means(states: np.ndarray, k: int) -> np.ndarray:
    """Means of consecutive chunks of `k` tokens: ``[T, layers, hidden] -> [N, layers, hidden]``.

    The last chunk may be shorter; ``N = ceil(T / k)`` (0 for an empty trace).

    Example:
        >>> segment_means(np.arange(5.0).reshape(5, 1, 1), k=2).ravel().tolist()
        [0.5, 2.5, 4.0]
    """
    if k < 1:
        raise ValueError(f"segment length k must be >= 1, got {k}")
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 3:
        raise ValueError(f"states must be [tokens, layers, hidden], got shape {states.shape}")
    chunks = [states[i : i + k].mean(axis=0) for i in range(0, states.shape[0], k)]
    if not chunks:
        return np.zeros((0, *states.shape[1:]))
    return np.stack(chunks)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine along the last axis; 0 where either vector is zero."""
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    dots = np.sum(a * b, axis=-1)
    cosines: np.ndarray = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return cosines


def lt_signals(states: np.ndarray, k: int) -> Signals:
    """Net, cumulative and aligned change of a trace's hidden states ``[T, layers, hidden]``.

    Example (same drift, but the detour wanders more and less aligned):
        >>> straight = np.array([[[0.0, 0.0]], [[1.0, 0.0]], [[2.0, 0.0]]])
        >>> detour = np.array([[[0.0, 0.0]], [[1.0, 1.0]], [[2.0, 0.0]]])
        >>> lt_signals(straight, 1)
        Signals(net=1.0, cumulative=2.0, aligned=1.0, segments=3)
        >>> s = lt_signals(detour, 1)
        >>> round(s.cumulative, 4), round(s.aligned, 4)
        (2.8284, 0.7071)
    """
    means = segment_means(states, k)
    count = means.shape[0]
    if count < 2:
        return Signals(math.nan, math.nan, math.nan, count)
    drift = means[-1] - means[0]  # [layers, hidden]
    updates = np.diff(means, axis=0)  # [N - 1, layers, hidden]
    net = np.linalg.norm(drift, axis=-1) / (count - 1)  # the code's N - 1, not the paper text's N
    cumulative = np.linalg.norm(updates, axis=-1).sum(axis=0)
    aligned = _cosine(updates, drift[None]).mean(axis=0)
    return Signals(float(net.mean()), float(cumulative.mean()), float(aligned.mean()), count)


def net_by_step(states: np.ndarray, k: int) -> np.ndarray:
    """Prefix net change after s = 1..N-1 steps: ``mean_l ||h̃_l(s+1) - h̃_l(1)|| / s``.

    The last value equals ``lt_signals(states, k).net``; early path selection reads the value
    at the horizon.
    """
    means = segment_means(states, k)
    if means.shape[0] < 2:
        return np.zeros(0)
    displacement = np.linalg.norm(means[1:] - means[:1], axis=-1).mean(axis=-1)
    return np.asarray(displacement / np.arange(1, means.shape[0]), dtype=np.float64)


def cumulative_by_step(states: np.ndarray, k: int) -> np.ndarray:
    """Prefix cumulative change after s = 1..N-1 steps: ``Σ_{j<=s} mean_l ||h̃_l(j+1) - h̃_l(j)||``.

    The last value equals ``lt_signals(states, k).cumulative``.
    """
    means = segment_means(states, k)
    if means.shape[0] < 2:
        return np.zeros(0)
    steps = np.linalg.norm(np.diff(means, axis=0), axis=-1).mean(axis=-1)
    return np.asarray(np.cumsum(steps), dtype=np.float64)


def confidence(signals: Signals, signal: Signal = "cumulative", weights: Combination | None = None) -> float:
    """A signal as a confidence, higher = more likely correct (NaN when undefined).

    ``"cumulative"`` is negated (less wandering is better). ``"combined"`` uses `weights`
    (default `EQUAL`: the raw sign-corrected signals, 1/3 each).

    Example:
        >>> s = Signals(net=2.0, cumulative=5.0, aligned=0.5, segments=4)
        >>> confidence(s, "net"), confidence(s, "cumulative"), confidence(s, "aligned")
        (2.0, -5.0, 0.5)
        >>> round(confidence(s, "combined"), 4)
        -0.8333
    """
    if signal == "net":
        return signals.net
    if signal == "cumulative":
        return -signals.cumulative
    if signal == "aligned":
        return signals.aligned
    if signal == "combined":
        return (weights or EQUAL).score(signals)
    raise ValueError(f"unknown LT signal {signal!r}; choose one of: {', '.join(SIGNALS)}")


def _table(rows: Sequence[Signals]) -> np.ndarray:
    table = np.array([r.oriented() for r in rows], dtype=np.float64).reshape(-1, 3)
    return table


def _stats(table: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    means = table.mean(axis=0) if len(table) else np.zeros(3)
    stds = table.std(axis=0) if len(table) else np.ones(3)  # population std, as the code's ddof=0
    stds = np.where(stds > 0, stds, 1.0)
    m0, m1, m2 = (float(x) for x in means)
    s0, s1, s2 = (float(x) for x in stds)
    return (m0, m1, m2), (s0, s1, s2)


def standardise(rows: Sequence[Signals]) -> Combination:
    """Equal-weight combination z-normalised over `rows` (the traces at hand, no labels).

    The training-free stand-in for calibration (INFERRED): it puts the three signals, whose
    scales differ (norms vs cosines), on one scale. Undefined rows are ignored.

    Example:
        >>> rows = [Signals(1.0, 4.0, 0.2, 3), Signals(3.0, 2.0, 0.6, 3)]
        >>> c = standardise(rows)
        >>> [round(confidence(r, "combined", c), 4) for r in rows]
        [-1.0, 1.0]
    """
    table = _table([r for r in rows if r.defined])
    means, stds = _stats(table)
    return Combination(means, stds)


def combine_weights(rows: Sequence[Signals], correct: Sequence[bool]) -> Combination:
    """LT-Combined from calibration traces: z-normalisation and |Pearson r| weights.

    For each sign-corrected signal: mean and population standard deviation over the defined
    calibration rows, and the absolute Pearson correlation with correctness (0 when it is
    undefined); the weights are normalised to sum 1 (equal when they are all 0).

    Example:
        >>> rows = [Signals(1.0, 4.0, 0.2, 3), Signals(3.0, 2.0, 0.6, 3), Signals(2.0, 3.0, 0.9, 3)]
        >>> c = combine_weights(rows, [False, True, True])
        >>> [round(w, 3) for w in c.weights]
        [0.329, 0.329, 0.343]
    """
    if len(rows) != len(correct):
        raise ValueError(f"{len(rows)} signal rows but {len(correct)} correctness labels")
    keep = [i for i, r in enumerate(rows) if r.defined]
    table = _table([rows[i] for i in keep])
    labels = np.array([float(correct[i]) for i in keep], dtype=np.float64)
    means, stds = _stats(table)
    weights = [0.0, 0.0, 0.0]
    if len(keep) >= 2 and labels.std() > 0:
        for j in range(3):
            if table[:, j].std() > 0:
                r = float(np.corrcoef(table[:, j], labels)[0, 1])
                weights[j] = abs(r) if math.isfinite(r) else 0.0
    total = sum(weights)
    w0, w1, w2 = (w / total for w in weights) if total > 0 else (1 / 3, 1 / 3, 1 / 3)
    return Combination(means, stds, (w0, w1, w2))
