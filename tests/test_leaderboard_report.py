"""The leaderboard report: Markdown, HTML and plots from a store filled on the scripted backend,
its figures those of `summarize`, the ``report`` command, and the page as a browser draws it."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke
from rich.console import Console

import reasoning.strategies  # noqa: F401
from reasoning import ScriptedBackend
from reasoning.evals.datasets import load_dataset
from reasoning.evals.leaderboard.report import _slugs, render
from reasoning.evals.leaderboard.runner import run_leaderboard
from reasoning.evals.leaderboard.spec import LeaderboardSpec
from reasoning.evals.leaderboard.store import Store
from reasoning.evals.leaderboard.summary import CellStats, summarize

PROBLEMS = load_dataset("gsm8k", limit=6)
PLOTS = ["frontier-gsm8k.png", "latency-gsm8k.png", "scaling-gsm8k.png"]
RECORDS = ["records/gsm8k-s-single.html", "records/gsm8k-s-sc-n-2.html", "records/gsm8k-s-sc-n-4.html"]
"""A records page per cell, in the spec's cell order."""
SPEC: dict[str, Any] = {
    "name": "tiny",
    "models": {"s": {"kind": "scripted", "script": "so \\boxed{18}"}},
    "datasets": {"gsm8k": {"name": "gsm8k", "limit": 6}},
    "entries": [
        {"name": "single", "strategy": "single"},
        {"name": "sc", "strategy": "self-consistency", "params": {"n": [2, 4]}},
    ],
}


def scripted() -> ScriptedBackend:
    """Single: right on problems 0-2. sc n=2: its samples split on 2-3. sc n=4: three of four
    samples right on 0-4 (the vote is right, pass@4 too). Longer answers on later samples."""
    drawn: dict[int, int] = {}

    def reply(request: Any, sample: int) -> str:
        text = request.messages[-1].content
        i = next(k for k, p in enumerate(PROBLEMS) if p.question in text)
        j = drawn[id(request)] = drawn.get(id(request), -1) + 1  # the backend keeps requests alive
        n = request.sampling.n
        right = i < 3 if n == 1 else (i < 4 if j == 0 else i < 2) if n == 2 else (i < 5 and j < 3)
        words = " ".join(["step"] * (3 + i + 2 * j))
        return f"{words} so \\boxed{{{PROBLEMS[i].answer if right else '-1'}}}"

    return ScriptedBackend(reply)


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> tuple[LeaderboardSpec, Path, Path, list[Path]]:
    """The tiny leaderboard run into a store, and its report rendered: spec, store, folder, paths."""
    root = tmp_path_factory.mktemp("report")
    spec = LeaderboardSpec.model_validate(SPEC)
    with Store.open(root / "tiny.sqlite") as store:
        solved = run_leaderboard(
            spec, store, start=lambda model, hidden: scripted(), console=Console(file=io.StringIO())
        )
        assert solved == 18
        paths = render(spec, store, root / "out")
    return spec, root / "tiny.sqlite", root / "out", paths


def view_data(page: str) -> dict[str, Any]:
    """A records page's embedded data."""
    found = re.search(r'<script id="records" type="application/json">(.*?)</script>', page, re.DOTALL)
    assert found is not None
    data: dict[str, Any] = json.loads(found[1])
    return data


def expected(spec: LeaderboardSpec, path: Path) -> list[CellStats]:
    cells = spec.cells()
    baselines = {c.key: (b.key if (b := spec.baseline_of(cells, c)) else None) for c in cells}
    with Store.open(path, create=False) as store:
        return summarize(store, store.cells([c.key for c in cells]), baselines, spec.price)


def table(markdown: str) -> list[dict[str, str]]:
    """The first Markdown table's rows as header -> text."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    header = split[0]
    rows = []
    for cells in split[1:]:
        if cells[0] == "entry":  # the next table
            break
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path.name} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_render_writes_the_pages_and_plots(board: tuple[LeaderboardSpec, Path, Path, list[Path]]) -> None:
    _, _, out, paths = board
    assert [p.relative_to(out).as_posix() for p in paths] == ["README.md", "index.html", *PLOTS, *RECORDS]
    assert all(p.is_file() for p in paths)


def test_each_cell_links_to_a_page_of_exactly_its_records(
    board: tuple[LeaderboardSpec, Path, Path, list[Path]],
) -> None:
    spec, path, out, _ = board

    class Links(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.href: str | None = None
            self.found: dict[str, str] = {}

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "a":
                self.href = dict(attrs).get("href")

        def handle_data(self, data: str) -> None:
            if self.href is not None:
                self.found[data] = self.href
                self.href = None

    links = Links()
    links.feed((out / "index.html").read_text())
    cells = {c.label: c for c in spec.cells()}
    assert sorted(links.found) == sorted(cells) and sorted(links.found.values()) == sorted(RECORDS)
    readme = (out / "README.md").read_text()
    with Store.open(path, create=False) as store:
        for label, href in links.found.items():
            assert f"[{label}]({href})" in readme
            page = (out / href).resolve()
            assert page.is_file() and page.parent == (out / "records").resolve()
            data = view_data(page.read_text())
            rows = store.results(cells[label].key)
            drawn = [(r["run"]["problem_id"], r["run"]["seed"]) for r in data["records"]]
            assert drawn == [(r.problem_id, r.seed) for r in rows] and len(drawn) == len(PROBLEMS)
            assert [r["status"] for r in data["records"]] == ["right" if r.correct else "wrong" for r in rows]
            samples = [len(r["run"]["candidates"]) for r in data["records"]]
            assert samples == [len(r.samples) for r in rows]
            assert data["source"] == "tiny.sqlite" and data["title"].startswith(f"{label} [s] on gsm8k")


def test_markdown_numbers_are_summarize_s(board: tuple[LeaderboardSpec, Path, Path, list[Path]]) -> None:
    spec, path, out, _ = board
    text = (out / "README.md").read_text()
    stats = expected(spec, path)
    by_label = {s.label: s for s in stats}
    assert by_label["single"].accuracy == 0.5 and by_label["sc n=4"].accuracy == 5 / 6
    # single: 3 + i words, "so" and the box on problem i = 0..5: 7.5 tokens; E^3 = 50^2 / 7.5
    assert by_label["single"].output_tokens == 7.5 and by_label["single"].e3 == pytest.approx(2500 / 7.5)
    rows = {row["entry"]: row for row in table(text)}
    assert set(rows) == {"single", "sc n=2", "sc n=4"}
    # sorted by model, then accuracy, best first
    accuracies = [float(row["accuracy [95% CI]"].split()[0]) for row in table(text)]
    assert accuracies == sorted(accuracies, reverse=True)
    for s in stats:
        row = rows[s.label]
        assert row["model"] == "s" and row["problems"] == str(s.problems) == "6"
        assert row["accuracy [95% CI]"] == f"{s.accuracy:.3f} [{s.low:.3f}, {s.high:.3f}]"
        assert row["output tokens"] == f"{s.output_tokens:,.0f}"
        assert s.e3 == pytest.approx((100 * s.accuracy) ** 2 / s.output_tokens)
        assert row["E^3"] == (f"{s.e3:,.0f}" if s.e3 >= 100 else f"{s.e3:.3g}")
        assert row["calls"] == f"{s.calls:.1f}"
        assert row["cost-of-pass"].startswith("$")
        c = s.comparison
        if c is None:
            assert row["vs baseline"] == "baseline"
        else:
            assert row["vs baseline"].startswith(f"{c.delta:+.2f} [{c.low:+.2f}, {c.high:+.2f}] p=")
            assert row["vs baseline"].endswith("McNemar")
        if max(s.maj_at) > 1:
            k = max(s.maj_at)
            assert row["maj@k / pass@k"] == f"{s.maj_at[k]:.3f} / {s.pass_at[k]:.3f} (k={k})"
    for heading in ("## Machine and versions", "## gsm8k", "### Pareto frontiers", "### maj@k and pass@k"):
        assert heading in text
    assert "## How to read this" in text and "above 0.05" in text and "half-width" in text
    assert "E^3 = A²/T (Lin et al. 2025, Plan and Budget, arXiv 2505.16122)" in text
    assert "Versions: python" in text and "cores" in text
    for name in PLOTS:
        assert f"]({name})" in text


def test_the_html_page_is_self_contained_and_sortable(
    board: tuple[LeaderboardSpec, Path, Path, list[Path]],
) -> None:
    _, _, out, _ = board
    page = (out / "index.html").read_text()

    class Page(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tables: list[str | None] = []
            self.values: list[str] = []
            self.images: list[dict[str, str | None]] = []
            self.links: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = dict(attrs)
            if tag == "table":
                self.tables.append(found.get("id"))
            if tag == "td" and "data-value" in found:
                self.values.append(found["data-value"] or "")
            if tag == "img":
                self.images.append(found)
            self.links += [v for k, v in attrs if k in ("src", "href") and v]

    parsed = Page()
    parsed.feed(page)
    parsed.close()
    assert "table-gsm8k" in parsed.tables and sum(t is not None for t in parsed.tables) == 1
    assert len(parsed.values) >= 3 * 10
    assert [i["src"] for i in parsed.images] == PLOTS
    assert all(i["class"] == "plot" and i["alt"] for i in parsed.images)
    assert not [link for link in parsed.links if "//" in link]  # nothing fetched
    assert "<style>" in page and "<script>" in page and 'data-type="num"' in page


def test_plots_are_png_images(board: tuple[LeaderboardSpec, Path, Path, list[Path]]) -> None:
    _, _, out, _ = board
    for name in PLOTS:
        width, height = png_size(out / name)
        assert width >= 600 and height >= 400 and (out / name).stat().st_size > 20_000, name


def test_render_is_deterministic(
    board: tuple[LeaderboardSpec, Path, Path, list[Path]], tmp_path: Path
) -> None:
    spec, path, out, _ = board
    with Store.open(path, create=False) as store:
        again = render(spec, store, tmp_path)
    assert len(again) == len(PLOTS) + len(RECORDS) + 2
    for p in again:
        name = p.relative_to(tmp_path)
        assert p.read_bytes() == (out / name).read_bytes(), name


def test_an_empty_store_reports_no_results(tmp_path: Path) -> None:
    spec = LeaderboardSpec.model_validate(SPEC)
    with Store.open(tmp_path / "empty.sqlite") as store:
        paths = render(spec, store, tmp_path / "out")
    assert [p.name for p in paths] == ["README.md", "index.html"]
    assert "No results yet." in paths[0].read_text()


def test_dataset_names_become_safe_distinct_file_names() -> None:
    slugs = _slugs(["gsm8k", "math 500/x", "math-500-x", "../..", "ü"])
    assert slugs["gsm8k"] == "gsm8k" and slugs["math 500/x"] == "math-500-x"
    assert len(set(slugs.values())) == 5
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", s) and not s.startswith(".") for s in slugs.values())


def test_report_command(board: tuple[LeaderboardSpec, Path, Path, list[Path]], tmp_path: Path) -> None:
    _, path, out, _ = board
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(SPEC))
    code, text = invoke(
        "leaderboard", "report", str(config), "--store", str(path), "--out", str(tmp_path / "r")
    )
    assert code == 0, text
    assert "sc n=4" in text and "single" in text and "index.html" in text
    assert (tmp_path / "r" / "README.md").read_text() == (out / "README.md").read_text()


def test_report_command_without_a_store_fails_clearly(tmp_path: Path) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(SPEC))
    missing = tmp_path / "none.sqlite"
    code, text = invoke("leaderboard", "report", str(config), "--store", str(missing), "--out", str(tmp_path))
    assert code == 1 and "no leaderboard store" in text and str(missing) in text
    assert not missing.exists() and not (tmp_path / "README.md").exists()


@pytest.mark.browser
def test_the_page_renders_in_a_headless_browser(
    board: tuple[LeaderboardSpec, Path, Path, list[Path]], tmp_path: Path
) -> None:
    _, _, out, _ = board
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("the browser test needs Chromium: apt-get install chromium")
    url = (out / "index.html").resolve().as_uri()
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,2000"]
    shot = tmp_path / "page.png"
    done = subprocess.run(
        [*flags, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert png_size(shot) == (1400, 2000) and shot.stat().st_size > 50_000
    dom = subprocess.run(
        [*flags, "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    ).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None, dom[:2000]
    plots = re.search(r'data-plots="(\d+)"', body[0])
    rows = re.search(r'data-rows="(\d+)"', body[0])
    assert plots is not None and rows is not None, f"the page's script did not run: {body[0]}"
    assert int(plots[1]) == len(PLOTS) and int(rows[1]) > 0
    records = subprocess.run(  # a cell's records page, as its link opens it
        [*flags, "--virtual-time-budget=10000", "--dump-dom", (out / RECORDS[0]).resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    ).stdout
    body = re.search(r"<body[^>]*>", records)
    assert body is not None and 'data-ready="1"' in body[0] and 'data-errors="0"' in body[0], records[:2000]
    assert f'data-records="{len(PROBLEMS)}"' in body[0]
