"""The leaderboard report's plots: PNG files drawn by matplotlib's Agg backend, per dataset.

``frontier-<dataset>.png`` plots accuracy (with its 95% interval) against mean output tokens per
problem, ``latency-<dataset>.png`` against median wall time, each with the Pareto frontier as a
dashed step and the cells on it edged in black; ``scaling-<dataset>.png`` plots maj@k and pass@k
against the tokens k samples cost, and accuracy along each parameter sweep. Each point is labelled,
away from the other labels and points where one of the offsets tried allows. `report.collect` names
a dataset's plots (`plot_names`) and `report.write` draws them (`draw`); matplotlib is imported only
when drawing. The files carry no date or software version, so with one matplotlib the same store
draws the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasoning.evals.leaderboard.report import _FRONTIERS, DatasetReport, Report, _k
from reasoning.evals.leaderboard.summary import CellStats, frontier

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["draw", "plot_names"]


def plot_names(d: DatasetReport) -> list[tuple[str, str]]:
    """The plots `draw` draws for `d`: file name and description (none when no cell has an accuracy)."""
    if not [s for s in d.stats if not math.isnan(s.accuracy)]:
        return []
    names = [
        (f"frontier-{d.slug}.png", f"accuracy vs mean output tokens on {d.name}, with the Pareto frontier"),
        (f"latency-{d.slug}.png", f"accuracy vs median wall time on {d.name}, with the Pareto frontier"),
    ]
    if any(_k(s) for s in d.stats) or d.sweeps:
        names.append((f"scaling-{d.slug}.png", f"maj@k and pass@k vs tokens, and the sweeps, on {d.name}"))
    return names


def draw(report: Report, d: DatasetReport, out: Path) -> list[Path]:
    """Draw `d`'s plots (those `plot_names` names) into the folder `out`; returns their paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = []
    models = list(report.spec.models)
    for name, _ in d.plots:
        wide = name.startswith("scaling") and any(_k(s) for s in d.stats) and bool(d.sweeps)
        fig = Figure(figsize=(12 if wide else 7, 5.5 if wide else 5), dpi=110, layout="constrained")
        FigureCanvasAgg(fig)
        if name.startswith("scaling"):
            _scaling(fig, d)
        else:
            attr, label, _ = next(f for f in _FRONTIERS if name.startswith(f[2]))
            _frontier_plot(fig.add_subplot(), d, attr, label, models)
        fig.savefig(out / name, format="png", metadata={"Software": None})
        paths.append(out / name)
    return paths


def _frontier_plot(ax: Axes, d: DatasetReport, attr: str, label: str, models: list[str]) -> None:
    from matplotlib.lines import Line2D

    points = [s for s in d.stats if not math.isnan(s.accuracy) and not math.isnan(getattr(s, attr))]
    colours = _colours(len(models))
    front = {s.cell.key for s in frontier(points, attr)}
    for s in points:
        x, colour = float(getattr(s, attr)), colours[models.index(s.cell.model)]
        ax.errorbar(
            [x], [s.accuracy], yerr=[[s.accuracy - s.low], [s.high - s.accuracy]], fmt="o", color=colour,
            ecolor=colour, elinewidth=1, capsize=3, markersize=6, alpha=0.9,
            markeredgecolor="black" if s.cell.key in front else colour,
        )  # fmt: skip
    ordered = sorted(frontier(points, attr), key=lambda s: float(getattr(s, attr)))
    ax.step(
        [float(getattr(s, attr)) for s in ordered], [s.accuracy for s in ordered], where="post",
        color="0.3", linestyle="--", linewidth=1.2, zorder=1,
    )  # fmt: skip
    _axes(
        ax,
        [float(getattr(s, attr)) for s in points],
        f"{label} per problem",
        f"{d.name}: accuracy vs {label}",
    )
    ax.set_ylabel("accuracy (95% interval)")
    used = [m for m in models if any(s.cell.model == m for s in points)]
    handles = [
        Line2D([], [], marker="o", linestyle="", color=colours[models.index(m)], label=m) for m in used
    ] + [Line2D([], [], color="0.3", linestyle="--", label="Pareto frontier (black edge: on it)")]
    ax.legend(handles=handles, fontsize=8, loc="best")
    _labels(ax, [(float(getattr(s, attr)), s.accuracy, d.where(s)) for s in points])


def _scaling(fig: Figure, d: DatasetReport) -> None:
    """maj@k and pass@k of every cell with samples (left), accuracy along each sweep (right)."""
    from matplotlib.lines import Line2D

    series = [s for s in d.stats if _k(s)]
    panels = fig.subplots(1, int(bool(series)) + int(bool(d.sweeps)), squeeze=False)[0]
    if series:
        ax, colours = panels[0], _colours(len(series))
        xs_all = []
        for s, colour in zip(series, colours, strict=True):
            per_sample = s.output_tokens / max(d.samples.get(s.cell.key, 1.0), 1.0)
            ks = sorted(s.maj_at)
            xs = [k * per_sample for k in ks]
            xs_all += xs
            ax.plot(xs, [s.maj_at[k] for k in ks], "o-", color=colour, label=d.where(s))
            ax.plot(xs, [s.pass_at[k] for k in ks], "s--", color=colour, alpha=0.55, markersize=4)
        styles = [
            Line2D([], [], color="0.3", marker="o", label="maj@k (solid)"),
            Line2D([], [], color="0.3", marker="s", linestyle="--", alpha=0.55, label="pass@k (dashed)"),
        ]
        _axes(
            ax,
            xs_all,
            "tokens per problem at k samples (k x mean per sample)",
            "maj@k and pass@k at k = 1, 2, 4, ...",
        )
        ax.legend(handles=[*styles, *ax.get_legend_handles_labels()[0]], fontsize=7, loc="upper center",
                  bbox_to_anchor=(0.5, -0.14), ncol=2)  # fmt: skip
    if d.sweeps:
        ax, colours = panels[-1], _colours(len(d.sweeps))
        labels = []
        for sweep, colour in zip(d.sweeps, colours, strict=True):
            first = sweep[0]
            model = f" [{first.cell.model}]" if d.where(first) != first.label else ""
            name = f"{first.cell.entry}{model}: {', '.join(first.cell.swept)}"
            xs = [s.output_tokens for s in sweep]
            ax.plot(xs, [s.accuracy for s in sweep], "D-", color=colour, label=name)
            labels += [(s.output_tokens, s.accuracy, _swept(s)) for s in sweep]
        _axes(ax, [x for x, _, _ in labels], "mean output tokens per problem", "sweeps, in sweep order")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
        _labels(ax, labels)
    fig.suptitle(f"{d.name}: accuracy as samples and swept parameters grow")


def _axes(ax: Axes, xs: Sequence[float], xlabel: str, title: str) -> None:
    if xs and min(xs) > 0:
        ax.set_xscale("log")
        xlabel += ", log scale"
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _pad(ax, xs)
    if ax.get_xscale() == "log":
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        low, high = ax.get_xlim()
        if high / low < 100:  # within a decade or two the powers of ten alone are too few labels
            subs = (1.0, 2.0, 5.0) if high / low > 5 else (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())


def _swept(s: CellStats) -> str:
    return " ".join(f"{k}={v}" for k, v in s.cell.swept.items())


def _pad(ax: Axes, xs: Sequence[float]) -> None:
    """Room around the points for their labels: 0..1 on y when the data nears it, margins on x."""
    ax.set_ylim(-0.05, 1.08)
    positive = [x for x in xs if x > 0]
    if positive and ax.get_xscale() == "log":
        low, high = min(positive), max(positive)
        ax.set_xlim(low / 1.6, high * 1.6 if high > low else high * 2)
    elif xs:
        low, high = min(xs), max(xs)
        span = (high - low) or max(abs(high), 1.0)
        ax.set_xlim(low - 0.1 * span, high + 0.25 * span)


def _labels(ax: Axes, points: Sequence[tuple[float, float, str]]) -> None:
    """Label each point where its label overlaps no other label and no point.

    Offsets ever further from the point are tried in turn; a label placed away from its point
    gets a thin line to it.
    """
    fig = ax.get_figure()
    if fig is None or not points:
        return
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    frame = ax.get_window_extent(renderer)
    dots = [tuple(ax.transData.transform((x, y))) for x, y, _ in points]
    taken: list[Any] = []
    offsets = [(dx, dy) for dy in (4, -13, 16, -25, 28, -37, 40, -49, 52) for dx in (6, -6)]
    near = 9.0  # pixels: a label this close to another point would seem to name it
    for x, y, text in sorted(points, key=lambda p: (p[0], -p[1])):
        own = ax.transData.transform((x, y))
        others = [(px, py) for px, py in dots if (px, py) != tuple(own)]
        for dx, dy in offsets:
            far = abs(dy) > 16
            note = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8,
                ha="left" if dx > 0 else "right", va="bottom",
                arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.6} if far else None,
            )  # fmt: skip
            box = note.get_window_extent(renderer)
            clear = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            clear = clear and not any(box.overlaps(b) for b in taken)
            clear = clear and not any(
                box.x0 - near <= px <= box.x1 + near and box.y0 - near <= py <= box.y1 + near
                for px, py in others
            )
            if clear or (dx, dy) == offsets[-1]:
                taken.append(box)
                break
            note.remove()


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]
