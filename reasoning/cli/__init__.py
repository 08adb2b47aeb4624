"""The ``reasoning`` command line: one module per command group, what they share in `common`.

``solve`` and ``strategies`` (`solve`), ``serve`` (`serve`), ``proxy`` (`proxy`), ``doctor``
(`doctor`), ``view`` (`view`), ``probe ...`` (`probe`) and ``leaderboard ...`` (`leaderboard`). No
command module imports another.
"""

from __future__ import annotations

import sys

import typer

from reasoning.cli import doctor, leaderboard, probe, proxy, serve, solve, view
from reasoning.cli.common import INTERRUPTED, err
from reasoning.errors import ReasoningError

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Test-time reasoning on local vLLM engines.",
    pretty_exceptions_enable=False,
)
# The command modules stay attributes of the package (``reasoning.cli.solve`` is the module).
app.command()(solve.strategies)
app.command()(solve.solve)
app.command()(serve.serve)
app.command()(doctor.doctor)
app.command()(proxy.proxy)
app.command()(view.view)
app.add_typer(probe.probe_app, name="probe")
app.add_typer(leaderboard.leaderboard_app, name="leaderboard")


def main() -> None:
    """Console entry point: ReasoningErrors print one line and exit 1."""
    from rich.markup import escape

    try:
        app()
    except ReasoningError as exc:  # escaped: "pip install -e '.[model-large]'" is not markup
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}")
        sys.exit(1)
    except KeyboardInterrupt:
        err.print(INTERRUPTED)
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130:  # typer turns a KeyboardInterrupt inside a command into exit 130
            err.print(INTERRUPTED)
        raise
