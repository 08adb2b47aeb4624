"""A leaderboard's report: a Markdown page, a static HTML page and PNG plots, from its store.

`render` writes into one folder ``README.md`` (tables per dataset, the Pareto frontiers, maj@k and
pass@k curves, how to read them, the machine and versions), ``index.html`` (the same, with tables
sorted by a click; CSS and script inline, nothing fetched, so it opens offline) and per dataset
three plots drawn by matplotlib's Agg backend (see `reasoning.evals.leaderboard.plots`):
``frontier-<dataset>.png`` (accuracy against mean output tokens, with 95% intervals and the Pareto
frontier), ``latency-<dataset>.png`` (against median wall time) and ``scaling-<dataset>.png``
(maj@k and pass@k against the tokens k samples cost, and each parameter sweep). Each cell with
results also gets ``records/<dataset>-<model>-<entry>.html``: a ``reasoning view`` page
(`reasoning.evals.view`) of every record the store holds for it, all seeds, in dataset order; the
cell's entry links to it from ``index.html`` and ``README.md``. Every figure is the one
`summarize` computes, and the output depends on the store alone (the only date is that of its
newest row), so a report can be committed next to the results it reads::

    reasoning leaderboard report leaderboards/gsm8k-default.yaml --out docs/leaderboard
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasoning import Run
from reasoning.evals.leaderboard.spec import Cell, LeaderboardSpec, Price
from reasoning.evals.leaderboard.store import SessionRow, Store
from reasoning.evals.leaderboard.summary import CellStats, frontier, summarize
from reasoning.evals.view import Records
from reasoning.evals.view import html_page as records_page

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "Column",
    "DatasetReport",
    "Report",
    "collect",
    "columns",
    "html_page",
    "markdown",
    "render",
    "rich_tables",
    "write",
]

_TESTS = {"mcnemar": "McNemar", "bootstrap": "bootstrap"}
_FRONTIERS = (
    ("output_tokens", "mean output tokens", "frontier"),
    ("seconds_p50", "median wall time (s)", "latency"),
)


@dataclass(frozen=True)
class DatasetReport:
    """One dataset's part of a report."""

    name: str
    """The dataset's name in the leaderboard."""
    slug: str
    """Its name made safe for file names and HTML ids."""
    stats: list[CellStats]
    """Cells with results, by model, then by accuracy (best first)."""
    missing: list[Cell]
    """Cells without results yet."""
    targets: dict[str, int | None]
    """Problems each cell is to solve (its limit or the dataset's; None: the whole dataset), by key."""
    samples: dict[str, float]
    """Mean candidates per problem, by cell key."""
    sweeps: list[list[CellStats]]
    """The cells of each swept entry on one model, in sweep order (two or more)."""
    baselines: frozenset[str] = frozenset()
    """Keys of the cells the others are compared with."""
    plots: list[tuple[str, str]] = field(default_factory=list)
    """The plots `write` draws: file name and description."""
    pages: dict[str, str] = field(default_factory=dict)
    """Each cell's records page, relative to the report (``records/<slug>.html``), by cell key."""
    records: dict[str, list[Run]] = field(default_factory=dict)
    """Each cell's records as stored (every seed, in dataset order), by cell key."""

    def where(self, stats: CellStats) -> str:
        """The cell's label, with its model when the dataset has cells of several models."""
        many = len({s.cell.model for s in self.stats}) > 1
        return f"{stats.label} [{stats.cell.model}]" if many else stats.label


@dataclass(frozen=True)
class Report:
    """Everything a report shows, computed once from the store."""

    spec: LeaderboardSpec
    datasets: list[DatasetReport]
    sessions: list[SessionRow]
    versions: dict[str, str]
    """Library versions of the newest row's record."""
    newest: str | None
    """When the newest row finished (ISO, UTC); None for an empty store."""
    models: dict[str, str]
    """The model each leaderboard model name serves."""
    store: str = ""
    """The store's file name (its records pages name it as their source)."""


@dataclass(frozen=True)
class Column:
    """One column of a leaderboard table: its header, a cell's text and its sort value."""

    header: str
    text: Callable[[CellStats], str]
    value: Callable[[CellStats], float | str | None]
    numeric: bool = True


def collect(spec: LeaderboardSpec, store: Store) -> Report:
    """Compute a report's figures: `summarize` over the spec's cells found in the store.

    Each cell is compared with ``spec.baseline_of`` its cells, on the problems both solved.
    """
    from reasoning.evals.leaderboard.plots import plot_names  # plots imports this module

    cells = spec.cells()
    stored = store.cells([c.key for c in cells])
    baselines = {c.key: (b.key if (b := spec.baseline_of(cells, c)) is not None else None) for c in cells}
    stats = {s.cell.key: s for s in summarize(store, stored, baselines, spec.price)}
    slugs = _slugs(list(spec.datasets))
    pages = _page_names(spec, cells, slugs, stats)
    datasets = []
    for name, data in spec.datasets.items():
        mine = [c for c in cells if c.dataset == name]
        found = [stats[c.key] for c in mine if c.key in stats]
        found.sort(key=lambda s: (list(spec.models).index(s.cell.model), -_finite(s.accuracy), s.label))
        rows = {s.cell.key: store.results(s.cell.key) for s in found}
        samples = {k: _mean([len(r.samples) for r in got if r.error is None]) for k, got in rows.items()}
        records = {k: [store.record(k, r.problem_id, r.seed) for r in got] for k, got in rows.items()}
        limits = {c.key: [x for x in (c.limit, data.limit) if x is not None] for c in mine}
        sweeps: dict[tuple[str, str], list[CellStats]] = {}
        for c in mine:
            if c.swept and c.key in stats:
                sweeps.setdefault((c.entry, c.model), []).append(stats[c.key])
        report = DatasetReport(
            name=name,
            slug=slugs[name],
            stats=found,
            missing=[c for c in mine if c.key not in stats],
            targets={k: min(v) if v else None for k, v in limits.items()},
            samples=samples,
            sweeps=[s for s in sweeps.values() if len(s) > 1],
            baselines=frozenset(c.key for c in mine if baselines[c.key] == c.key),
            pages={c.key: pages[c.key] for c in mine if c.key in pages},
            records=records,
        )
        datasets.append(dataclasses.replace(report, plots=plot_names(report)))
    newest = _newest(store, [c.key for c in stored])
    versions = store.record(*newest[:3]).versions if newest else {}
    models = {c.model: _served_model(c.identity(spec)["model"], c.model) for c in cells}
    return Report(
        spec, datasets, store.sessions(), versions, newest[3] if newest else None, models, store.path.name
    )


def _page_names(
    spec: LeaderboardSpec, cells: Sequence[Cell], slugs: dict[str, str], stats: dict[str, CellStats]
) -> dict[str, str]:
    """Each cell with results: its records page, ``records/<dataset>-<model>-<entry>.html``.

    Named in the spec's cell order, so a name does not move with the results.
    """
    found = [c for c in cells if c.key in stats]
    names = _slugs([f"{slugs[c.dataset]}-{c.model}-{c.label}" for c in found])
    return {c.key: f"records/{names[f'{slugs[c.dataset]}-{c.model}-{c.label}']}.html" for c in found}


def render(spec: LeaderboardSpec, store: Store, out: Path) -> list[Path]:
    """Write the report of `spec` from `store` into the folder `out` (see the module docstring).

    Returns:
        The files written: ``README.md``, ``index.html``, the plots, then the records pages.
    """
    return write(collect(spec, store), out)


def write(report: Report, out: Path) -> list[Path]:
    """Write a collected report into the folder `out`; returns the files written."""
    from reasoning.evals.leaderboard.plots import draw  # plots imports this module

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "README.md", out / "index.html"]
    paths[0].write_text(markdown(report), encoding="utf-8")
    paths[1].write_text(html_page(report), encoding="utf-8")
    for dataset in report.datasets:
        paths += draw(report, dataset, out)
    for dataset in report.datasets:
        paths += _write_records(report, dataset, out)
    return paths


def _write_records(report: Report, dataset: DatasetReport, out: Path) -> list[Path]:
    """Write `dataset`'s records pages (one per cell with results, in the spec's cell order)."""
    stats = {s.cell.key: s for s in dataset.stats}
    paths = []
    for key, name in dataset.pages.items():
        s = stats[key]
        title = f"{s.label} [{s.cell.model}] on {dataset.name}: leaderboard {report.spec.name}"
        page = out / name
        page.parent.mkdir(parents=True, exist_ok=True)
        source = Path(report.store or f"{report.spec.name}.sqlite")
        page.write_text(records_page(Records(source, dataset.records.get(key, [])), title), encoding="utf-8")
        paths.append(page)
    return paths


# the table


def columns(dataset: DatasetReport, price: Price) -> list[Column]:
    """The columns of `dataset`'s table (stops and errors only when some cell has any)."""
    cols = [
        Column("entry", lambda s: s.label, lambda s: s.label, numeric=False),
        Column("model", lambda s: s.cell.model, lambda s: s.cell.model, numeric=False),
        Column("problems", lambda s: _problems(s, dataset.targets.get(s.cell.key)), lambda s: s.problems),
        Column("accuracy [95% CI]", _accuracy, lambda s: _value(s.accuracy)),
        Column(
            "vs baseline",
            lambda s: _versus(s, dataset),
            lambda s: None if s.comparison is None else s.comparison.delta,
        ),
        Column(
            "vs self-consistency at matched tokens",
            lambda s: _versus_matched(s),
            lambda s: None if s.matched is None else s.matched.delta,
        ),
        Column("maj@k / pass@k", _at_k, lambda s: _value(s.maj_at[max(s.maj_at)]) if _k(s) else None),
        Column("output tokens", lambda s: _count(s.output_tokens), lambda s: _value(s.output_tokens)),
        Column(
            "sequential tokens",
            lambda s: "—" if s.sequential_tokens is None else _count(s.sequential_tokens),
            lambda s: None if s.sequential_tokens is None else _value(s.sequential_tokens),
        ),
        Column("E^3", lambda s: _sig(s.e3), lambda s: _value(s.e3)),
        Column(
            "prompt tokens (cached)",
            lambda s: f"{_count(s.prompt_tokens)} ({_count(s.cached_tokens)})",
            lambda s: _value(s.prompt_tokens),
        ),
        Column("calls", lambda s: f"{s.calls:.1f}", lambda s: _value(s.calls)),
        Column(
            "wall p50 / p95 (s)",
            lambda s: f"{_sig(s.seconds_p50)} / {_sig(s.seconds_p95)}",
            lambda s: _value(s.seconds_p50),
        ),
        Column("cost-of-pass", lambda s: _money(s.cost_of_pass, price), lambda s: _value(s.cost_of_pass)),
    ]
    if any(s.budget_stops or s.errors for s in dataset.stats):
        cols.append(Column("budget stops / errors", _troubles, lambda s: s.budget_stops + s.errors))
    return cols


def _problems(s: CellStats, target: int | None) -> str:
    return f"{s.problems}/{target}" if target is not None and s.problems < target else str(s.problems)


def _accuracy(s: CellStats) -> str:
    if math.isnan(s.accuracy):
        return "—"
    return f"{s.accuracy:.3f} [{s.low:.3f}, {s.high:.3f}]"


def _versus(s: CellStats, dataset: DatasetReport) -> str:
    c = s.comparison
    if c is None:
        return "baseline" if s.cell.key in dataset.baselines else "—"
    p = "p<0.001" if c.p_value < 0.001 else f"p={c.p_value:.2f}" if c.p_value >= 0.1 else f"p={c.p_value:.2g}"
    shared = f" on {c.problems}" if c.problems != s.problems else ""
    return f"{c.delta:+.2f} [{c.low:+.2f}, {c.high:+.2f}] {p} {_TESTS.get(c.test, c.test)}{shared}"


def _versus_matched(s: CellStats) -> str:
    c = s.matched
    if c is None:
        return "—"
    p = "p<0.001" if c.p_value < 0.001 else f"p={c.p_value:.2f}" if c.p_value >= 0.1 else f"p={c.p_value:.2g}"
    shared = f" on {c.problems}" if c.problems != s.problems else ""
    test = _TESTS.get(c.test, c.test)
    return f"{c.delta:+.2f} [{c.low:+.2f}, {c.high:+.2f}] {p} {test}{shared} vs {c.baseline}"


def _k(s: CellStats) -> bool:
    return bool(s.maj_at) and max(s.maj_at) > 1


def _at_k(s: CellStats) -> str:
    if not _k(s):
        return "—"
    k = max(s.maj_at)
    return f"{s.maj_at[k]:.3f} / {s.pass_at[k]:.3f} (k={k})"


def _troubles(s: CellStats) -> str:
    return f"{s.budget_stops} / {s.errors}" if s.budget_stops or s.errors else ""


# Markdown


def markdown(report: Report) -> str:
    """The report as a Markdown page."""
    spec = report.spec
    lines = [f"# Leaderboard {spec.name}", "", _headline(report), ""]
    lines += ["## Machine and versions", "", *[f"- {line}" for line in _machine_lines(report)], ""]
    for d in report.datasets:
        lines += [f"## {d.name}", ""]
        if not d.stats:
            lines += ["No results yet.", ""]
            continue
        cols = columns(d, spec.price)
        lines += _md_table([c.header for c in cols], [[c.text(s) for c in cols] for s in d.stats])
        if d.pages:
            links = ", ".join(
                f"[{_md_link_text(d.where(s))}]({d.pages[s.cell.key]})"
                for s in d.stats
                if s.cell.key in d.pages
            )
            lines += ["", f"Every record of a cell, one HTML page each (open it in a browser): {links}."]
        if d.missing:
            lines += ["", "Not in the store yet: " + ", ".join(_cell_where(c) for c in d.missing) + "."]
        lines += ["", "### Pareto frontiers", ""]
        lines += [f"- {text}" for text in _frontier_lines(d)]
        lines += [""] + [f"![{alt}]({name})" for name, alt in d.plots if not name.startswith("scaling")]
        curves = _curves(d)
        if curves:
            lines += ["", "### maj@k and pass@k", "", *_md_table(curves[0], curves[1])]
            lines += [""] + [f"![{alt}]({name})" for name, alt in d.plots if name.startswith("scaling")]
        lines.append("")
    lines += ["## How to read this", "", _how_to_read(report), ""]
    return "\n".join(lines)


def _md_link_text(text: str) -> str:
    return re.sub(r"([\\\[\]])", r"\\\1", text)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *[line(r) for r in rows]]


def _headline(report: Report) -> str:
    runs = sum(s.runs for d in report.datasets for s in d.stats)
    cells = sum(len(d.stats) for d in report.datasets)
    when = _date(report.newest) if report.newest else "no results yet"
    return (
        f"Newest result: {when}. {cells} cells, {runs} problem runs, seeds {report.spec.seeds}; "
        f"baseline: {report.spec.baseline or 'the first entry'}.{_deterministic(report)}"
    )


def _deterministic(report: Report) -> str:
    """Which cells' records are all deterministic (`Run.deterministic`), as a sentence ('' if none)."""
    many = len(report.datasets) > 1
    found = [
        f"{d.where(s)} on {d.name}" if many else d.where(s)
        for d in report.datasets
        for s in d.stats
        if (runs := d.records.get(s.cell.key)) and all(r.deterministic for r in runs)
    ]
    if not found:
        return ""
    every = len(found) == sum(len(d.stats) for d in report.datasets)
    return (
        f" Deterministic ({'every cell' if every else ', '.join(found)}): problems solved one at a time, "
        "each from an empty prefix cache, so a re-run on the same engine and machine repeats every "
        "record, timings aside, and a wall time is the problem's alone."
    )


def _frontier_lines(d: DatasetReport) -> list[str]:
    lines = []
    for attr, name, _ in _FRONTIERS:
        front = frontier(d.stats, attr)
        unit = "tokens" if attr == "output_tokens" else "s"
        shown = [f"{d.where(s)} ({_number(getattr(s, attr), attr)} {unit}, {s.accuracy:.3f})" for s in front]
        lines.append(f"accuracy vs {name}: " + (" → ".join(shown) or "—"))
    return lines


def _curves(d: DatasetReport) -> tuple[list[str], list[list[str]]] | None:
    with_k = [s for s in d.stats if _k(s)]
    if not with_k:
        return None
    ks = sorted({k for s in with_k for k in s.maj_at})
    rows = []
    for s in with_k:
        for metric, values in (("maj@k", s.maj_at), ("pass@k", s.pass_at)):
            rows.append([d.where(s), metric, *(f"{values[k]:.3f}" if k in values else "" for k in ks)])
    return ["entry", "metric", *(f"k={k}" for k in ks)], rows


def _how_to_read(report: Report) -> str:
    text = (
        "Accuracy is the share of problems solved; the bracket is its 95% interval (Wilson's with one "
        "seed, a bootstrap over problems with repeats): the true accuracy on problems like these is "
        "likely anywhere in it. Each entry is compared with the baseline on the problems both solved: "
        "the difference, its 95% paired-bootstrap interval, and the p-value of a paired test (exact "
        "McNemar with one seed, a paired bootstrap with repeats). A p-value above 0.05 means the "
        "difference is not established: the two may be equally good, and more problems are needed to "
        "tell. maj@k is the accuracy of a majority vote over k of a cell's samples; pass@k the chance "
        "that one of k samples is right, what a perfect selector would reach. Output tokens are all the "
        "tokens decoded per problem, sequential tokens the longest chain of them one waits for; prompt "
        "tokens are those sent, in brackets those the prefix cache served. E^3 = A²/T (Lin et al. "
        "2025, Plan and Budget, arXiv 2505.16122), A the accuracy in percent and T the mean output "
        "tokens per problem, weighs accuracy above tokens: twice the accuracy is worth four times "
        "the tokens; higher is better. Wall "
        "times are per problem while sharing the engine with every problem in flight, so they compare "
        "entries run together. Cost-of-pass is the cost of one correct answer at the leaderboard's "
        "prices. A model's tokens cost what its size costs: across models, the wall-time frontier is "
        "the fairer one."
    )
    for d in report.datasets:
        sized = sorted((s for s in d.stats if not math.isnan(s.accuracy)), key=lambda s: (s.runs, s.label))
        if not sized:
            continue
        big, small = sized[-1], sized[0]
        half = (big.high - big.low) / 2
        if big.runs == small.runs:
            text += (
                f" On {d.name} every cell has {big.runs} runs: an interval's half-width is about ±{half:.3f}."
            )
        else:
            text += (
                f" On {d.name} an interval's half-width is ±{half:.3f} for {d.where(big)} ({big.runs} runs, "
                f"the most) and ±{(small.high - small.low) / 2:.3f} for {d.where(small)} "
                f"({small.runs}, the fewest)."
            )
    return text


def _machine_lines(report: Report) -> list[str]:
    lines = []
    machines: dict[str, int] = {}
    engines: dict[tuple[str, str], list[SessionRow]] = {}
    for s in report.sessions:
        key = json.dumps(s.machine, sort_keys=True)
        machines[key] = machines.get(key, 0) + 1
        engines.setdefault((s.model, json.dumps(s.engine, sort_keys=True)), []).append(s)
    for key in machines:
        m = json.loads(key)
        flags = ", ".join(m.get("flags") or []) or "none listed"
        gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
        lines.append(
            f"Machine: {m.get('cpu') or 'unknown CPU'}, {m.get('cores', '?')} cores, "
            f"{m.get('memory_gib', '?')} GiB{gpu}; CPU flags: {flags}"
        )
    for (model, key), sessions in engines.items():
        engine = json.loads(key)
        if engine and all(isinstance(v, dict) for v in engine.values()):  # a model group's engines
            settings = "; ".join(f"{name}: {_engine_settings(v)}" for name, v in engine.items())
        else:
            settings = _engine_settings(engine)
        hours = sum(s.seconds for s in sessions) / 3600
        tokens = sum(s.output_tokens for s in sessions)
        lines.append(
            f"Engine {_served(report, model)}: {settings or 'no settings recorded'}; "
            f"{len(sessions)} session(s), {hours:.2f} h, {tokens:,} output tokens"
        )
    if report.versions:
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()))
    return lines or ["No engine session recorded yet."]


def _engine_settings(engine: dict[str, Any]) -> str:
    reason = f" ({engine['dtype_reason']})" if engine.get("dtype_reason") else ""
    first = [f"{k} {engine[k]}{reason if k == 'dtype' else ''}" for k in ("device", "dtype") if k in engine]
    skip = ("device", "dtype", "dtype_reason", "cpu", "cores")
    rest = [f"{k} {v}" for k, v in engine.items() if k not in skip]
    return ", ".join(first + rest)


# HTML


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1300px;
padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{padding:4px 6px;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
td.text,th.text{text-align:left}td.wrap{white-space:normal;min-width:14em}
.wide{overflow-x:auto}
th{background:#f4f4f4;white-space:normal;vertical-align:bottom}
table.sortable th{cursor:pointer;user-select:none}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
tbody tr:nth-child(even){background:#fafafa}tbody tr:hover{background:#eef4ff}
img.plot{max-width:100%;height:auto;display:block;margin:1em 0;border:1px solid #eee}
.plots{display:flex;flex-wrap:wrap;gap:1em}.pair img.plot{max-width:min(100%,640px)}
.note{color:#555}
"""

_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var dir = th.dataset.dir === "asc" ? "desc" : "asc";
      Array.prototype.forEach.call(heads, function (h) { delete h.dataset.dir; });
      th.dataset.dir = dir;
      var numeric = th.dataset.type === "num", sign = dir === "asc" ? 1 : -1;
      var key = function (tr) {
        var v = tr.cells[col].dataset.value;
        return numeric ? (v === "" ? NaN : parseFloat(v)) : v;
      };
      var rows = Array.prototype.slice.call(table.tBodies[0].rows);
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (numeric) {
          if (isNaN(x) || isNaN(y)) { return isNaN(x) - isNaN(y); }
          return sign * (x - y);
        }
        return sign * x.localeCompare(y);
      });
      rows.forEach(function (tr) { table.tBodies[0].appendChild(tr); });
    });
  });
});
window.addEventListener("load", function () {
  var plots = Array.prototype.filter.call(document.querySelectorAll("img.plot"), function (img) {
    return img.complete && img.naturalWidth > 0;
  });
  document.body.dataset.plots = String(plots.length);
  document.body.dataset.rows = String(document.querySelectorAll("table tbody tr").length);
});
"""


def html_page(report: Report) -> str:
    """The report as one self-contained HTML page (plots by relative file name)."""
    spec, e = report.spec, html.escape
    parts = [
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Leaderboard {e(spec.name)}</title>\n<style>{_CSS}</style>\n</head>\n<body>",
        f"<h1>Leaderboard {e(spec.name)}</h1>",
        f"<p>{e(_headline(report))} Click a column header to sort.</p>",
        "<h2>Machine and versions</h2>\n<ul>",
        *[f"<li>{e(line)}</li>" for line in _machine_lines(report)],
        "</ul>",
    ]
    for d in report.datasets:
        parts.append(f'<h2 id="{d.slug}">{e(d.name)}</h2>')
        if not d.stats:
            parts.append("<p>No results yet.</p>")
            continue
        cols = columns(d, spec.price)
        parts.append(_html_table(f"table-{d.slug}", cols, d.stats, d.pages))
        if d.pages:
            parts.append(
                '<p class="note">An entry links to every record of its cell: each problem\'s answer, '
                "candidates, calls and budget, on one page.</p>"
            )
        if d.missing:
            names = ", ".join(_cell_where(c) for c in d.missing)
            parts.append(f'<p class="note">Not in the store yet: {e(names)}.</p>')
        parts.append("<h3>Pareto frontiers</h3><ul>")
        parts += [f"<li>{e(text)}</li>" for text in _frontier_lines(d)]
        parts.append("</ul>")
        parts.append(_html_images([p for p in d.plots if not p[0].startswith("scaling")], "plots pair"))
        curves = _curves(d)
        if curves:
            parts.append("<h3>maj@k and pass@k</h3>")
            header, rows = curves
            head = "".join(f"<th{' class=text' if i < 2 else ''}>{e(h)}</th>" for i, h in enumerate(header))
            body = "\n".join(
                "<tr>"
                + "".join(f"<td{' class=text' if i < 2 else ''}>{e(c)}</td>" for i, c in enumerate(row))
                + "</tr>"
                for row in rows
            )
            parts.append(
                f'<div class="wide"><table class="curves"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n'
                "</tbody></table></div>"
            )
            parts.append(_html_images([p for p in d.plots if p[0].startswith("scaling")], "plots"))
    parts.append(f"<h2>How to read this</h2>\n<p>{e(_how_to_read(report))}</p>")
    parts.append(f"<script>{_SCRIPT}</script>\n</body>\n</html>\n")
    return "\n".join(parts)


def _html_table(
    ident: str, cols: Sequence[Column], stats: Sequence[CellStats], pages: dict[str, str] | None = None
) -> str:
    e = html.escape
    head = "".join(
        f'<th data-type="{"num" if c.numeric else "text"}"{"" if c.numeric else " class=text"}>'
        f"{e(c.header)}</th>"
        for c in cols
    )
    rows = []
    for s in stats:
        tds = []
        for c in cols:
            value = c.value(s)
            shown = "" if value is None else value if isinstance(value, str) else repr(float(value))
            klass = ' class="text"' if not c.numeric else ' class="wrap"' if c.header == "vs baseline" else ""
            text = c.text(s)
            if klass == ' class="wrap"':  # break between the interval and the test only
                text = " p".join(part.replace(" ", "\xa0") for part in text.split(" p", 1))
            inner = e(text)
            page = (pages or {}).get(s.cell.key)
            if c.header == "entry" and page is not None:
                inner = f'<a href="{e(page)}" title="every record of this cell">{inner}</a>'
            tds.append(f'<td data-value="{e(shown)}"{klass}>{inner}</td>')
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return (
        f'<div class="wide"><table class="sortable board" id="{ident}">\n<thead><tr>{head}</tr></thead>\n'
        + "<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody>\n</table></div>"
    )


def _html_images(plots: Sequence[tuple[str, str]], klass: str) -> str:
    images = "".join(f'<img class="plot" src="{html.escape(n)}" alt="{html.escape(a)}">' for n, a in plots)
    return f'<div class="{klass}">{images}</div>'


# the terminal


def rich_tables(report: Report) -> list[Table]:
    """A compact table per dataset for the terminal, 80 columns wide (the pages hold every column)."""
    from rich import box
    from rich.table import Table

    tables = []
    for d in report.datasets:
        table = Table(
            title=f"{report.spec.name}: {d.name}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
        )
        table.add_column("entry", min_width=12, overflow="fold")
        for header in ("n", "accuracy [95% CI]", "vs baseline", "tokens", "cost/pass"):
            table.add_column(header, justify="right", no_wrap=True)
        for s in d.stats:
            c = s.comparison
            versus = f"{c.delta:+.2f} p={c.p_value:.2f}" if c is not None else _versus(s, d)
            accuracy = "—" if math.isnan(s.accuracy) else f"{s.accuracy:.2f} [{s.low:.2f},{s.high:.2f}]"
            cost = _money(s.cost_of_pass, report.spec.price)
            row = [d.where(s), _problems(s, d.targets.get(s.cell.key)), accuracy, versus]
            table.add_row(*row, _count(s.output_tokens), cost)
        tables.append(table)
    return tables


# helpers


def _newest(store: Store, keys: Sequence[str]) -> tuple[str, str, int, str] | None:
    """The newest row among `keys`' cells: its cell, problem, seed and finish time."""
    return store.newest(keys)


def _slugs(names: Sequence[str]) -> dict[str, str]:
    """Names made safe as file names and HTML ids, distinct (``a/b c`` -> ``a-b-c``)."""
    slugs: dict[str, str] = {}
    for name in names:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "dataset"
        base, n = slug, 2
        while slug in slugs.values():
            slug, n = f"{base}-{n}", n + 1
        slugs[name] = slug
    return slugs


def _cell_where(cell: Cell) -> str:
    return f"{cell.label} [{cell.model}]"


def _served_model(identity: dict[str, Any], default: str) -> str:
    """What a leaderboard model serves: its model, or a group's as ``name=model`` pairs.

    Example:
        >>> group = {"kind": "group", "backends": {"draft": {"model": "a"}, "target": {"model": "b"}}}
        >>> _served_model(group, "pair")
        'draft=a, target=b'
    """
    if identity.get("kind") == "group":
        return ", ".join(f"{k}={_served_model(v, k)}" for k, v in identity["backends"].items())
    return str(identity.get("model") or default)


def _served(report: Report, model: str) -> str:
    served = report.models.get(model, model)
    return model if served == model else f"{model} ({served})"


def _date(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _finite(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def _value(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else x


def _number(x: float, attr: str) -> str:
    return _count(x) if attr == "output_tokens" else _sig(x)


def _count(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:,.0f}"


def _sig(x: float) -> str:
    if math.isnan(x):
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _money(x: float, price: Price) -> str:
    if math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞ (none right)"
    if x == 0:
        return f"{price.currency}0"
    decimals = max(2, 1 - math.floor(math.log10(abs(x))))
    return f"{price.currency}{x:.{decimals}f}"
