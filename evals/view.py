"""A results file (or one record) as one self-contained HTML page: ``reasoning view``.

`read_records` reads the JSONL of `reasoning.Run` rows that ``reasoning solve --output`` and
`reasoning.evals.run.solve` write (or a JSON file holding one record, or a list of them);
`html_page` embeds them as JSON once, with the page's CSS and script inline (``view.html``,
package data), so the page opens offline and renders only the selected problem: a file of
thousands of records opens as fast as its JSON parses.

Per problem the page shows the strategy spec and parameters, answer and gold, right, wrong or
error, the stop reason, the budget lines against what was spent, every candidate (chosen,
cancelled, cut at a token cap, forced, its scores and answer, its text collapsible), its calls
on a timeline, and for a step search (candidates with a ``step`` score: beam search, DVTS,
particle filtering, A*) the tree of its nodes, rebuilt from their texts by `call_tree`.

The timeline draws each sample as a bar from its request (`Candidate.started`, on the run's
clock) to its last token (``started + seconds``), so a race's samples overlap and a round waits
for the one before; a call of ``n`` samples is ``n`` bars. A strategy whose candidates are not
its samples (spec-reason's traces of draft and target calls, budget forcing's answer) has its
samples in `Run.calls`: the timeline draws those. Rows without start times have every
``started`` 0 (`has_timeline` says which rows have them, `untimed` why not); for those the page
lists the samples in the order recorded with their durations, and says why.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from reasoning import Candidate, Run
from reasoning.errors import DatasetError
from reasoning.record import FORMAT_VERSION, jsonl_lines
from reasoning.strategies.step_tree import ANSWER_PHRASE

__all__ = [
    "Records",
    "Status",
    "call_tree",
    "has_timeline",
    "html_page",
    "read_records",
    "status_of",
    "untimed",
    "write_page",
]

Status = Literal["right", "wrong", "error", "ungraded"]


@dataclass(frozen=True)
class Records:
    """The records of a results file, as the page shows them."""

    source: Path
    """The file read."""
    runs: list[Run]
    """One record per problem and configuration (the last row of each), in file order."""
    notes: list[str] = field(default_factory=list)
    """What was read past: a truncated last line, rows a later row replaced."""

    def counts(self) -> dict[Status, int]:
        """Records by status."""
        counts: dict[Status, int] = {"right": 0, "wrong": 0, "error": 0, "ungraded": 0}
        for run in self.runs:
            counts[status_of(run)] += 1
        return counts


def status_of(run: Run) -> Status:
    """``error`` (the problem failed), ``right``, ``wrong`` or ``ungraded`` (no gold answer)."""
    if run.error is not None or run.stop_reason == "error":
        return "error"
    if run.correct is None:
        return "ungraded"
    return "right" if run.correct else "wrong"


def read_records(path: str | Path) -> Records:
    """Read the records of `path`: a results JSONL, or JSON holding one record (or a list).

    A row replaced by a later row of the same problem and configuration (a resumed run retried
    it) is left out; a last line cut short without its newline (a run still writing) is skipped
    with a note. Any other line that is not a record (a JSON object with a ``format_version``
    from 1 to `FORMAT_VERSION`, valid as a `Run`) is an error.

    Raises:
        DatasetError: `path` is missing, unreadable or holds no record; a line is not a record
            (the message names the file, the line and why).
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such results file")
    if path.is_dir():
        raise DatasetError(f"{path} is a directory, not a results file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a results file (not UTF-8 text at byte {exc.start})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    notes: list[str] = []
    rows = _whole(path, text)
    if rows is None:
        rows = []
        lines = jsonl_lines(text)
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                if number == len(lines) and not text.endswith("\n"):
                    notes.append(f"{path}:{number}: skipped a truncated last line (a run still writing?)")
                    continue
                raise DatasetError(f"{path}:{number}: not a run record ({_why(exc)})") from None
            try:
                rows.append(_record(value))
            except (ValueError, TypeError) as exc:
                raise DatasetError(f"{path}:{number}: {_what(exc)}") from None
    if not rows:
        raise DatasetError(f"{path}: holds no run records")
    latest: dict[tuple[str, ...], Run] = {}
    for run in rows:
        latest[_key(run)] = run  # the first row's place, the last row's record
    if len(latest) < len(rows):
        notes.append(f"{len(rows) - len(latest)} rows replaced by a later row of the same problem left out")
    return Records(path, list(latest.values()), notes)


def _whole(path: Path, text: str) -> list[Run] | None:
    """The records of a file that is one JSON value (a record or a list); None for JSONL."""
    if not text.lstrip().startswith(("{", "[")) or sum(1 for line in jsonl_lines(text) if line.strip()) < 2:
        return None  # not JSON, or one line: JSONL, its errors named by line
    try:
        value = json.loads(text)
    except ValueError:
        return None  # several lines of JSON: JSONL
    values = value if isinstance(value, list) else [value]
    runs = []
    for i, item in enumerate(values):
        try:
            runs.append(_record(item))
        except (ValueError, TypeError) as exc:
            where = f"item {i}" if isinstance(value, list) else "its record"
            raise DatasetError(f"{path}: {where}: {_what(exc)}") from None
    return runs


class _Said(ValueError):
    """Why a JSON object is not a readable run record, said in full."""


def _record(value: Any) -> Run:
    """The run record `value`: a JSON object with a known ``format_version`` (every row has one).

    Raises:
        TypeError: `value` is not an object.
        ValueError: It does not validate as a `Run`; `_Said`: it has no ``format_version``, or
            one this version of the library does not know.
    """
    if not isinstance(value, dict):
        raise TypeError(f"a JSON {type(value).__name__}, not an object")
    if "format_version" not in value:
        fields = ", ".join(list(value)[:5]) or "none"
        raise _Said(
            f"not a run record: no format_version field (its fields: {fields}); expected rows as "
            "`reasoning solve --output` writes them (format_version, problem_id, answer, candidates, ...)"
        )
    version = value["format_version"]
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise _Said(
            f"a run record of unknown format_version {version!r}: this version of reasoning reads "
            f"versions 1 to {FORMAT_VERSION} (written by a newer reasoning? upgrade it)"
        )
    return Run.model_validate(value)


def _what(exc: BaseException) -> str:
    """What is wrong with a value that is not a readable run record."""
    return str(exc) if isinstance(exc, _Said) else f"not a run record ({_why(exc)})"


def _why(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the row"
        more = f"; {exc.error_count() - 1} more" if exc.error_count() > 1 else ""
        return f"{where}: {first['msg'].lower()}{more}"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} at column {exc.colno}"
    return str(exc)


def _key(run: Run) -> tuple[str, ...]:
    """What a resumed run's rows of one problem share (a file may hold several configurations)."""
    params = json.dumps(run.params, sort_keys=True, default=str)
    return (run.problem_id, run.strategy, params, run.model, str(run.seed))


def call_tree(run: Run) -> list[int | None] | None:
    """The parent of each candidate in a step search's tree (None: a root), or None for no tree.

    A step search (`reasoning.strategies.step_tree`) records every node as a candidate with a
    ``step`` score; a node's text is its parent's, then the delimiter and its new step (a
    continued open step, ``cut``, has its cut text as its prefix; a forced answer adds
    `ANSWER_PHRASE`). The parent is the latest earlier node of the same inner run (``path``)
    whose text is the longest such prefix. Candidates without a ``step`` score have None.

    Example:
        >>> def node(text, step, **scores):
        ...     return Candidate(text, scores={"step": step, **scores})
        >>> run = Run(problem_id="p", params={"delimiter": "|"}, candidates=[
        ...     node("a", 1), node("b", 1), node("a|c", 2, cut=1.0), node("a|c d", 2), node("b|e", 2)])
        >>> call_tree(run)
        [None, None, 0, 2, 1]
    """
    candidates = run.candidates
    if not any("step" in c.scores for c in candidates):
        return None
    delimiter = run.params.get("delimiter")
    delimiter = delimiter if isinstance(delimiter, str) and delimiter else "\n\n"
    parents: list[int | None] = [None] * len(candidates)
    seen: dict[tuple[float | None, str], int] = {}
    cut: dict[float | None, list[int]] = {}
    for j, c in enumerate(candidates):
        if "step" not in c.scores:
            continue
        group = c.scores.get("path")
        parents[j] = _parent(candidates, c, group, delimiter, seen, cut.get(group, []))
        seen[(group, c.text)] = j
        if c.scores.get("cut"):
            cut.setdefault(group, []).append(j)
    return parents


def _parent(
    candidates: Sequence[Candidate],
    c: Candidate,
    group: float | None,
    delimiter: str,
    seen: dict[tuple[float | None, str], int],
    cut: Sequence[int],
) -> int | None:
    text = c.text
    if c.scores.get("forced") and ANSWER_PHRASE in text:
        text = text[: text.rindex(ANSWER_PHRASE)]
        finished = seen.get((group, text))  # an answer forced onto a node that stayed unfinished
        if finished is not None:
            return finished
    best: int | None = None
    length = -1
    for i in cut:  # a continued open step: the cut text, then more of the same step
        prefix = candidates[i].text
        if len(prefix) > length and len(text) > len(prefix) and text.startswith(prefix):
            best, length = i, len(prefix)
    at = text.find(delimiter, 1)
    while at >= 0:
        found = seen.get((group, text[:at]))
        if found is not None and at > length:
            best, length = found, at
        at = text.find(delimiter, at + 1)
    return best


def has_timeline(run: Run) -> bool:
    """Whether `run`'s samples say when each was requested, so they can be drawn on a timeline.

    The samples are its `Run.calls` when it has them (its candidates are not its samples), else
    its candidates. Rows without start times have ``started`` 0 for every one (`untimed` says
    why): they have no timeline. A row where some call started after 0, or calls started
    apart, has one.

    Example:
        >>> has_timeline(Run(problem_id="p", candidates=[Candidate("a"), Candidate("b")]))
        False
        >>> has_timeline(Run(problem_id="p", candidates=[Candidate("a"), Candidate("b", started=0.4)]))
        True
    """
    starts = {c.started for c in (run.calls or run.candidates)}
    return len(starts) > 1 or any(s > 0 for s in starts)


CALLS_VERSION = 5
"""The format version from which every strategy records its samples' start times (`Run.calls`)."""


def untimed(run: Run) -> str | None:
    """Why `run` has no timeline (None: it has one, or no samples at all).

    Before format version 5 the candidates a strategy assembled itself (spec-reason's and
    spec-thinking's traces, budget forcing's, plan-and-budget's, early exit's, ATTS's and
    arbitrage's) had no start time, and rows older still have none at all: such a row cannot
    say which was the case. From version 5 the only cause is a strategy that did not record them.

    Example:
        >>> untimed(Run(problem_id="p", format_version=4, candidates=[Candidate("a")]))[:46]
        'written by reasoning before format version 5: '
        >>> untimed(Run(problem_id="p", strategy="trimr", candidates=[Candidate("a")]))[:28]
        'its strategy, trimr, assembl'
        >>> untimed(Run(problem_id="p", candidates=[Candidate("a", started=0.1)])) is None
        True
    """
    if has_timeline(run) or not (run.calls or run.candidates):
        return None
    if run.format_version < CALLS_VERSION:
        return (
            f"written by reasoning before format version {CALLS_VERSION}: before start times were "
            "recorded, or by a strategy that assembled its candidates without them"
        )
    return (
        f"its strategy, {run.strategy or 'unnamed'}, assembled its candidates without recording "
        "when their calls started"
    )


def html_page(records: Records, title: str | None = None) -> str:
    """The page: the records as JSON once, the template's CSS and script inline.

    `title` names the page (its tab and its heading); by default the tab says ``records:`` and
    the file's name, and the heading the file.
    """
    rows = ",".join(
        f'{{"status":"{status_of(run)}","parents":{json.dumps(call_tree(run))},'
        f'"timeline":{json.dumps(has_timeline(run))},"untimed":{json.dumps(untimed(run))},'
        f'"run":{run.model_dump_json()}}}'
        for run in records.runs
    )  # pydantic writes a NaN or infinite score as null: the JSON stays valid
    head = json.dumps(
        {"source": str(records.source), "title": title, "notes": records.notes}, ensure_ascii=False
    )
    encoded = f'{head[:-1]},"records":[{rows}]}}'
    # Inside <script>, "</script>" or "<!--" in a model's text would end the block: no "<" at all.
    encoded = encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    template = resources.files("reasoning.evals").joinpath("view.html").read_text(encoding="utf-8")
    before, _, after = template.partition("{{data}}")
    before = before.replace("{{title}}", html.escape(title or f"records: {records.source.name}"))
    return before + encoded + after


def write_page(
    source: str | Path, out: str | Path | None = None, problem: str | None = None
) -> tuple[Path, Records]:
    """Read `source` and write its page to `out` (default: beside it, ``.html``); both returned.

    Raises:
        DatasetError: `source` is not a results file or record (`read_records`), `problem` is
            not in it, or `out` would overwrite `source`.
    """
    records = read_records(source)
    if problem is not None:
        mine = [r for r in records.runs if r.problem_id == problem]
        if not mine:
            ids = [r.problem_id for r in records.runs]
            shown = ", ".join(ids[:5]) + (f", ... ({len(ids)} in all)" if len(ids) > 5 else "")
            raise DatasetError(f"{records.source}: no record of problem {problem!r} (it has {shown})")
        records = Records(records.source, mine, records.notes)
    target = Path(out) if out is not None else records.source.with_suffix(".html")
    if target.resolve() == records.source.resolve():
        raise DatasetError(f"{target}: the page would overwrite the records it shows; name another --output")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html_page(records), encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{target}: cannot write the page ({exc.strerror or exc})") from None
    return target, records
