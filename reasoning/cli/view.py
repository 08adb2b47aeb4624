"""``reasoning view``: a results file (or one record) as one HTML page to look at, offline.

The page (`reasoning.evals.view`) lists the problems, filterable by right, wrong and error, and
shows the selected one in full: strategy spec, answer and gold, stop reason, budget lines and
spending, every candidate with its scores and text, its calls on a timeline (rows written before
start times were recorded: the samples in the order recorded, with their durations), and a step
search's tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reasoning.cli.common import err, out

__all__ = ["view"]


def view(
    records: Annotated[
        Path,
        typer.Argument(
            help="Results JSONL (written by `reasoning solve --output`), or a JSON file holding one record."
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The page to write (default: beside the file, .html)."),
    ] = None,
    problem: Annotated[
        str | None, typer.Option("--problem", help="Show only the records of this problem id.")
    ] = None,
) -> None:
    """Write one self-contained HTML page of the records: open it in any browser, offline."""
    from rich.markup import escape

    from reasoning.evals.view import write_page

    page, read = write_page(records, output, problem)
    for note in read.notes:
        err.print(f"[yellow]note:[/yellow] {escape(note)}", soft_wrap=True)
    counts = read.counts()
    graded = f", {counts['ungraded']} ungraded" if counts["ungraded"] else ""
    shown, errors = len(read.runs), counts["error"]
    out.print(
        f"wrote {escape(str(page))}: {shown} record{'' if shown == 1 else 's'}, {counts['right']} right, "
        f"{counts['wrong']} wrong, {errors} error{'' if errors == 1 else 's'}{graded}",
        soft_wrap=True,
    )
    out.print(escape(page.resolve().as_uri()), soft_wrap=True)
