"""``reasoning view``: records of scripted runs as one HTML page, its tree of a beam search, bad
input named by file and line, a thousand records embedded once, and the page as a browser draws it."""

from __future__ import annotations

import asyncio
import doctest
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke

from reasoning import Candidate, Controller, Problem, Request, Run, ScriptedBackend
from reasoning.errors import ConfigError, DatasetError
from reasoning.evals import view
from reasoning.evals.run import solve
from reasoning.evals.view import (
    Records,
    call_tree,
    has_timeline,
    html_page,
    read_records,
    status_of,
    untimed,
    write_page,
)
from reasoning.strategies.beam_search import BeamSearch
from reasoning.strategies.spec_reason import SpecReason
from reasoning.verifiers.process import ScriptedScorer

PROBLEMS = [
    Problem("right", "What is 6 times 7?", answer="42"),
    Problem("wrong", "What is 40 plus 2?", answer="42"),
    Problem("error", "Fail on purpose.", answer="1"),
]
NODES = 12
"""Beam search n=4, width=2, three steps deep: 4 first steps, 2 kept x 2 children, twice."""


def script(request: Request, number: int) -> str:
    """Three steps, ``s<sample number>`` each; the last answers 42 on "right", 41 on "wrong"."""
    question = request.messages[-1].content
    if "Fail" in question:
        raise ConfigError("scripted failure")
    if request.prefix.count("\n\n") < 2:
        return f"s{number}\n\nmore"  # the delimiter ends the step
    return f"s{number} \\boxed{{{42 if '6 times' in question else 41}}}"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results file of a scripted beam search: one problem right, one wrong, one failed."""
    path = tmp_path_factory.mktemp("view") / "beam.jsonl"
    scorer = ScriptedScorer(lambda steps: (int(steps[-1].split()[0][1:]) % 7) / 7)
    controller = Controller(ScriptedBackend(script), verifier=scorer)
    strategy = BeamSearch(n=4, width=2, scorer="verifier")
    asyncio.run(solve(PROBLEMS, controller, strategy, output=path, concurrency=1))
    return path


def speculative_script(request: Request, number: int) -> str:
    """A draft or target step (two steps, the second answers), or the target judge's digit."""
    if request.sampling.logprobs is not None:
        return "3" if number % 2 else "8"  # the target rejects every other draft step
    return "so \\boxed{42}" if request.prefix.count("\n\n") >= 1 else f"step {number}\n\n"


@pytest.fixture(scope="module")
def speculative(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results file of a scripted spec-reason run: draft steps judged, some rewritten by the target."""
    path = tmp_path_factory.mktemp("view") / "spec.jsonl"
    models = {
        name: ScriptedBackend(speculative_script, name=name, model=name, seconds_per_token=0.002)
        for name in ("draft", "target")
    }
    controller = Controller(models)
    asyncio.run(solve(PROBLEMS[:1], controller, SpecReason(n=2), output=path, concurrency=1))
    return path


def embedded(page: str) -> dict[str, Any]:
    """The page's data block, parsed."""
    found = re.search(r'<script id="records" type="application/json">(.*?)</script>', page, re.DOTALL)
    assert found is not None
    data: dict[str, Any] = json.loads(found[1])
    return data


def raced() -> Run:
    """A hand-made record: a race won by the first sample, the others cancelled or cut short,
    stopped by the calls line of its draft backend's budget."""
    return Run(
        problem_id="race",
        question="Who finishes first?",
        gold="7",
        answer="7",
        correct=True,
        chosen=0,
        candidates=[
            Candidate("so \\boxed{7}", "7", 1.0, output_tokens=3, seconds=0.5, backend="draft"),
            Candidate(
                "partial </script><script>alert(1)</script>",
                output_tokens=2,
                finish_reason="cancelled",
                seconds=0.5,
            ),
            Candidate("cut sho", output_tokens=2, finish_reason="length", seconds=0.4),
        ],
        strategy="first-finish",
        params={"n": 3},
        backends={"draft": "small", "target": "large"},
        budget={"output_tokens": 8.0, "calls": None},
        usage={"output_tokens": 7, "calls": 3, "seconds": 0.6},
        budgets={"draft": {"calls": 2.0}},
        usage_by_backend={"draft": {"calls": 2, "output_tokens": 3}, "target": {"calls": 1}},
        stop_reason="budget:draft.calls",
    )


STARTS = {0: (0.0, 0.5), 1: (0.05, 0.25), 2: (0.6, 0.9), 3: (0.55, 0.75), 4: (1.0, 1.2)}
"""The staggered record's calls: index -> (started, started + seconds)."""


def staggered() -> Run:
    """A hand-made record with start times: two drafts of round 0 racing (the second cancelled
    by the first), a draft and a target call of round 1 overlapping, then a summary."""

    def call(i: int, text: str, backend: str, round_: int, summary: bool = False, **kw: Any) -> Candidate:
        start, end = STARTS[i]
        scores = {"round": float(round_)} | ({"summary": 1.0} if summary else {})
        return Candidate(
            text, started=start, seconds=round(end - start, 6), backend=backend, scores=scores, **kw
        )

    return Run(
        problem_id="timed",
        question="How long?",
        gold="3",
        answer="3",
        correct=True,
        chosen=4,
        candidates=[
            call(0, "a", "draft", 0, output_tokens=5),
            call(1, "b", "draft", 0, output_tokens=2, finish_reason="cancelled"),
            call(2, "c", "target", 1, output_tokens=9, finish_reason="length"),
            call(3, "d", "draft", 1, output_tokens=4),
            call(4, "\\boxed{3}", "target", 1, answer="3", output_tokens=3, summary=True),
        ],
        strategy="pdr",
        backends={"draft": "small", "target": "large"},
        usage={"output_tokens": 23, "calls": 5, "seconds": 1.25},
    )


# -- reading ----------------------------------------------------------------------------------------


def test_a_scripted_beam_search_reads_as_right_wrong_and_error(results: Path) -> None:
    records = read_records(results)
    assert [r.problem_id for r in records.runs] == ["right", "wrong", "error"]
    assert [status_of(r) for r in records.runs] == ["right", "wrong", "error"]
    assert records.counts() == {"right": 1, "wrong": 1, "error": 1, "ungraded": 0}
    assert records.notes == []


def test_the_tree_of_a_beam_search_holds_every_node(results: Path) -> None:
    for run in read_records(results).runs[:2]:
        assert len(run.candidates) == NODES
        parents = call_tree(run)
        assert parents is not None and len(parents) == NODES
        steps = [int(c.scores["step"]) for c in run.candidates]
        for i, parent in enumerate(parents):
            if steps[i] == 1:
                assert parent is None
            else:  # one step deeper than its parent, its text the parent's and one more step
                assert parent is not None and parent < i and steps[parent] == steps[i] - 1
                assert run.candidates[i].text.startswith(run.candidates[parent].text + "\n\n")
        assert sum(p is None for p in parents) == 4
        leaves = [i for i in range(NODES) if i not in parents]
        assert len(leaves) == 2 + 2 + 4  # two dropped at step 1, two at step 2, and the four answers
        path, at = [], run.chosen
        while at is not None:
            path.append(at)
            at = parents[at]
        assert [steps[i] for i in path] == [3, 2, 1]


def test_the_tree_follows_open_steps_forced_answers_and_inner_runs() -> None:
    phrase = "\n\nFinal Answer: \\boxed{"

    def node(text: str, step: int, **scores: float) -> Candidate:
        return Candidate(text, scores={"step": float(step), **scores})

    run = Run(
        problem_id="p",
        candidates=[
            node("a", 1, path=0), node("a\n\nb", 2, path=0, cut=1.0), node("a\n\nb c", 2, path=0),
            node(f"a\n\nb c{phrase}3}}", 2, path=0, forced=1.0),  # forced onto the finished step
            node("a", 1, path=1), node("a\n\nx", 2, path=1),
            node(f"a\n\nx\n\ny{phrase}4}}", 3, path=1, forced=1.0),
            Candidate("not a node"),
        ],
    )  # fmt: skip
    assert call_tree(run) == [None, 0, 1, 2, None, 4, 5, None]
    assert call_tree(Run(problem_id="p", candidates=[Candidate("x")])) is None


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(view).failed == 0


def test_a_file_holding_one_record_reads(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(raced().model_dump_json(indent=2))
    [run] = read_records(path).runs
    assert run.problem_id == "race" and status_of(run) == "right"


def test_a_resumed_run_shows_each_problem_s_last_row(tmp_path: Path) -> None:
    failed = Run(problem_id="a", stop_reason="error", error="boom")
    fixed = Run(problem_id="a", answer="1", correct=True)
    other = Run(problem_id="b", correct=False)
    path = tmp_path / "r.jsonl"
    path.write_text("".join(r.model_dump_json() + "\n" for r in (failed, other, fixed)))
    records = read_records(path)
    assert [(r.problem_id, status_of(r)) for r in records.runs] == [("a", "right"), ("b", "wrong")]
    assert records.notes == ["1 rows replaced by a later row of the same problem left out"]


A = '{"format_version": 4, "problem_id": "a"}'
"""The smallest run record."""


@pytest.mark.parametrize(
    ("content", "where", "why"),
    [
        (f"{A}\nnot json\n{A}\n", ":2:", "invalid JSON"),
        (f'{A}\n{{"format_version": 4, "question": "no id"}}\n', ":2:", "problem_id: field required"),
        (f"{A}\n\n[1, 2]\n", ":3:", "a JSON list, not an object"),
        (f'{A[:-1]}, "candidates": "many"}}\n', ":1:", "candidates: input should be a valid list"),
        (f'{A}\n{{"problem_id": "b"}}\n', ":2:", "no format_version field (its fields: problem_id)"),
    ],
)
def test_a_line_that_is_no_record_is_named_by_file_and_line(
    tmp_path: Path, content: str, where: str, why: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError) as raised:
        read_records(path)
    message = str(raised.value)
    assert message.startswith(f"{path}{where} not a run record") and why in message, message
    code, text = invoke("view", str(path))
    assert code == 1 and f"{path}{where}" in text


def test_missing_empty_and_truncated_files(tmp_path: Path) -> None:
    missing = tmp_path / "none.jsonl"
    with pytest.raises(DatasetError, match=f"{re.escape(str(missing))}: no such results file"):
        read_records(missing)
    code, text = invoke("view", str(missing))
    assert code == 1 and str(missing) in text and not (tmp_path / "none.html").exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DatasetError, match="holds no run records"):
        read_records(empty)
    with pytest.raises(DatasetError, match="is a directory"):
        read_records(tmp_path)
    cut = tmp_path / "cut.jsonl"
    cut.write_text(Run(problem_id="a").model_dump_json() + '\n{"problem_id": "b", "cand')
    records = read_records(cut)
    assert [r.problem_id for r in records.runs] == ["a"]
    assert records.notes == [f"{cut}:2: skipped a truncated last line (a run still writing?)"]


# -- the page ---------------------------------------------------------------------------------------


def test_the_page_embeds_every_record_and_node_once_and_fetches_nothing(results: Path) -> None:
    records = read_records(results)
    page = html_page(Records(records.source, [*records.runs, raced()]))
    data = embedded(page)
    assert data["source"] == str(results)
    assert [r["status"] for r in data["records"]] == ["right", "wrong", "error", "right"]
    right = data["records"][0]
    assert right["parents"] == call_tree(records.runs[0]) and len(right["run"]["candidates"]) == NODES
    assert data["records"][3]["parents"] is None
    assert data["records"][2]["run"]["error"] == "ConfigError: scripted failure"
    assert "</script><script>alert" not in page  # a model's text cannot end the data block
    assert data["records"][3]["run"]["candidates"][1]["text"].startswith("partial </script>")

    class Links(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.found += [f"{tag} {v}" for k, v in attrs if k in ("src", "href") and v]
            if tag == "link":
                self.found.append(tag)

    links = Links()
    links.feed(page)
    assert links.found == [] and page.count("<script") == 2  # the data and the inline script
    assert "<style>" in page


def test_only_records_with_start_times_are_drawn_on_a_timeline() -> None:
    assert has_timeline(staggered()) and not has_timeline(raced())
    assert not has_timeline(Run(problem_id="none"))
    assert has_timeline(Run(problem_id="one", candidates=[Candidate("x", started=0.2)]))
    page = html_page(Records(Path("t.jsonl"), [staggered(), raced()]))
    assert [r["timeline"] for r in embedded(page)["records"]] == [True, False]
    starts = [c["started"] for c in embedded(page)["records"][0]["run"]["candidates"]]
    assert starts == [STARTS[i][0] for i in range(5)]


def test_a_speculative_record_has_its_draft_and_target_calls_on_a_timeline(speculative: Path) -> None:
    [run] = read_records(speculative).runs
    assert run.strategy == "spec-reason" and run.error is None and len(run.candidates) == 2
    assert has_timeline(run) and untimed(run) is None
    assert len(run.calls) == run.usage["calls"]  # every call a sample (n=1 each)
    by_backend = {b: sum(c.backend == b for c in run.calls) for b in ("draft", "target")}
    assert by_backend == {b: run.usage_by_backend[b]["calls"] for b in by_backend}
    assert min(by_backend.values()) > 0
    assert all(c.started > 0 and c.seconds > 0 for c in run.calls)
    assert all(c.started > 0 for c in run.candidates)  # each trace from when it started
    first = min(c.started for c in run.calls)
    assert min(c.started for c in run.candidates) <= first


def test_the_no_start_times_note_says_why() -> None:
    old = raced().model_copy(update={"format_version": 4})
    assert "before format version 5" in (untimed(old) or "")
    assert "first-finish, assembled its candidates without" in (untimed(raced()) or "")
    assert untimed(staggered()) is None and untimed(Run(problem_id="none")) is None
    page = embedded(html_page(Records(Path("t.jsonl"), [staggered(), old])))
    assert [r["untimed"] for r in page["records"]] == [None, untimed(old)]


def test_a_page_can_be_titled() -> None:
    page = html_page(Records(Path("s.sqlite"), [raced()]), title="sc n=4 [s] on gsm8k <board>")
    assert "<title>sc n=4 [s] on gsm8k &lt;board&gt;</title>" in page
    assert embedded(page)["title"] == "sc n=4 [s] on gsm8k <board>"
    assert embedded(html_page(Records(Path("s.jsonl"), [raced()])))["title"] is None


def test_a_thousand_records_are_data_not_markup() -> None:
    """The page is the template plus the JSON: nothing is drawn per record before it opens."""
    runs = [
        Run(problem_id=f"p{i}", question=f"q{i}", correct=i % 3 == 0, candidates=[Candidate("t")])
        for i in range(1000)
    ]
    big = html_page(Records(Path("big.jsonl"), runs))
    small = html_page(Records(Path("big.jsonl"), runs[:1]))
    data = re.search(r'(<script id="records" type="application/json">)(.*?)(</script>)', big, re.DOTALL)
    assert data is not None and len(embedded(big)["records"]) == 1000
    one = re.search(r'(<script id="records" type="application/json">)(.*?)(</script>)', small, re.DOTALL)
    assert one is not None
    assert big.replace(data[2], "") == small.replace(one[2], "")  # the same markup around the data
    assert big.count("p999") == 1


def test_the_view_command_writes_the_page_beside_the_file(results: Path, tmp_path: Path) -> None:
    code, text = invoke("view", str(results))
    page = results.with_suffix(".html")
    assert code == 0, text
    assert f"wrote {page}: 3 records, 1 right, 1 wrong, 1 error" in text and page.as_uri() in text
    assert "1 errors" not in text
    assert len(embedded(page.read_text())["records"]) == 3
    chosen = tmp_path / "sub" / "one.html"
    code, text = invoke("view", str(results), "--problem", "wrong", "-o", str(chosen))
    assert code == 0, text
    assert [r["run"]["problem_id"] for r in embedded(chosen.read_text())["records"]] == ["wrong"]
    assert "1 record, 0 right, 1 wrong, 0 errors" in " ".join(text.split())  # one record, not "1 records"
    code, text = invoke("view", str(results), "--problem", "error", "-o", str(chosen))
    flat = " ".join(text.split())
    assert code == 0 and re.search(r"1 record, 0 right, 0 wrong, 1 error\b(?!s)", flat), text
    code, text = invoke("view", str(results), "--problem", "nope")
    assert code == 1 and "no record of problem 'nope'" in text and "right, wrong, error" in text
    with pytest.raises(DatasetError, match="would overwrite"):
        write_page(results, results)


# -- the page in a browser -------------------------------------------------------------------------


def draw(page: Path, fragment: str = "") -> tuple[str, str, str]:
    """The page as headless Chromium leaves it after its script ran: the body tag, the DOM, the
    console messages (any console output counts)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("the browser test needs Chromium: apt-get install chromium")
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,2000"]
    done = subprocess.run(
        [*flags, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
         page.resolve().as_uri() + fragment],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body is not None, done.stdout[:2000]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert 'data-ready="1"' in body[0], f"the page's script did not run: {body[0]} {console}"
    return body[0], done.stdout, "\n".join(console)


def rows(dom: str) -> list[tuple[str, str]]:
    """The problem list as drawn: each row's status and problem."""
    row = r'<div class="row[^"]*" data-index="\d+" data-status="(\w+)"[^>]*>.*?class="id">([^<]*)<'
    return [(status, name) for status, name in re.findall(row, dom)]


@pytest.mark.browser
def test_the_page_draws_the_tree_and_filters_in_a_headless_browser(results: Path, tmp_path: Path) -> None:
    records = read_records(results)
    page = tmp_path / "view.html"
    page.write_text(html_page(Records(records.source, [*records.runs, raced()])))

    body, dom, console = draw(page, "#p=right")
    assert console == "" and 'data-errors="0"' in body, console
    assert rows(dom) == [("right", "right"), ("wrong", "wrong"), ("error", "error"), ("right", "race")]
    assert 'data-problem="right"' in dom and f'data-nodes="{NODES}"' in dom
    nodes = re.findall(r'<li class="node[^"]*" data-index="(\d+)"', dom)
    assert sorted(map(int, nodes)) == list(range(NODES))  # every node drawn, once
    assert len(re.findall(r'<li class="node on-path"', dom)) == 3  # the chosen answer's three steps
    assert dom.count('<tr class="cand') == NODES  # only the selected problem's candidates

    for status, shown in [("wrong", ["wrong"]), ("error", ["error"]), ("right", ["right", "race"])]:
        body, dom, console = draw(page, f"#filter={status}")
        assert console == "" and 'data-errors="0"' in body, console
        assert rows(dom) == [(status, name) for name in shown]
        assert f'data-problem="{shown[0]}"' in dom and f'data-status="{status}"' in dom
        assert re.search(rf'data-filter="{status}" aria-pressed="true"', dom)
    assert "ConfigError: scripted failure" in draw(page, "#filter=error")[1]
    body, dom, console = draw(page, "#filter=bogus&p=%E0%A4%A")  # a malformed address: ignored
    assert console == "" and 'data-errors="0"' in body and len(rows(dom)) == 4, console

    body, dom, console = draw(page, "#p=race")
    assert console == "" and 'data-errors="0"' in body, console
    assert re.search(r'<td class="text">draft</td><td class="text mono">calls <span[^>]*>stopped here<', dom)
    assert dom.count(">stopped here<") == 1 and "truncated (length)" in dom and ">cancelled<" in dom
    assert "data-nodes" not in dom  # no tree for a race


def detail(dom: str) -> str:
    """The selected problem as drawn (not the script that draws it)."""
    found = re.search(r'<section id="detail".*?</section>', dom, re.DOTALL)
    assert found is not None
    return found[0]


def bars(dom: str) -> dict[int, dict[str, str]]:
    """The timeline's bars as drawn: each call's data attributes, by candidate index."""
    found = {}
    for tag in re.findall(r'<div class="span [^"]*"[^>]*>', dom):
        attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', tag))
        found[int(attrs.pop("index"))] = attrs
    return found


@pytest.mark.browser
def test_calls_with_start_times_are_drawn_on_a_timeline(tmp_path: Path) -> None:
    page = tmp_path / "timed.html"
    page.write_text(html_page(Records(Path("timed.jsonl"), [staggered(), raced()])))

    body, dom, console = draw(page, "#p=timed")
    assert console == "" and 'data-errors="0"' in body, console
    dom = detail(dom)
    assert 'data-axis="1.25"' in dom and "no-timeline" not in dom
    drawn = bars(dom)
    assert sorted(drawn) == list(STARTS)  # every call once
    for i, (start, end) in STARTS.items():
        assert float(drawn[i]["start"]) == pytest.approx(start), i
        assert float(drawn[i]["end"]) == pytest.approx(end), i
    assert [drawn[i]["finish"] for i in range(5)] == ["stop", "cancelled", "length", "stop", "stop"]
    assert [drawn[i]["backend"] for i in range(5)] == ["draft", "draft", "target", "draft", "target"]
    # grouped by round (the summary its own group), each group in order of start
    groups = re.findall(r'<tr class="group-head"><td[^>]*>([^<]*)<', dom)
    assert groups == ["round 0", "round 1", "round 1 · summary"]
    order = [int(i) for i in re.findall(r'<div class="span [^"]*" data-index="(\d+)"', dom)]
    assert order == [0, 1, 3, 2, 4]
    assert "draft · 2 tok · cancelled at 250.0 ms" in dom and "target · 9 tok · truncated (length)" in dom
    assert "Each bar is one sample, on the run's clock" in dom and "one bar for each" in dom
    assert "Grouped by inner run, round and draft, each group in order of start." in dom
    assert "waited on each other" not in dom and "Timeline (5 samples of 5 calls)" in dom

    body, dom, console = draw(page, "#p=race")  # a row written before start times: the old view
    assert console == "" and 'data-errors="0"' in body, console
    dom = detail(dom)
    assert "no-timeline" in dom and "holds no start times (its strategy, first-finish, assembled" in dom
    assert "written before" not in dom and bars(dom) == {}
    assert "Samples in the order recorded" in dom and "data-axis" not in dom


@pytest.mark.browser
def test_a_spec_reason_record_draws_its_draft_and_target_calls(speculative: Path, tmp_path: Path) -> None:
    [run] = read_records(speculative).runs
    page = tmp_path / "spec.html"
    page.write_text(html_page(Records(speculative, [run])))
    body, dom, console = draw(page, "#p=right")
    assert console == "" and 'data-errors="0"' in body, console
    dom = detail(dom)
    assert "no-timeline" not in dom and "holds no start times" not in dom
    assert 'class="note timeline-note" data-of="calls"' in dom
    drawn = bars(dom)
    assert sorted(drawn) == list(range(len(run.calls)))  # every call once
    for i, call in enumerate(run.calls):
        assert drawn[i]["of"] == "call" and drawn[i]["backend"] == call.backend, i
        assert float(drawn[i]["start"]) == pytest.approx(call.started), i
    assert {d["backend"] for d in drawn.values()} == {"draft", "target"}
    assert f"Timeline ({len(run.calls)} samples of {run.usage['calls']} calls)" in dom
