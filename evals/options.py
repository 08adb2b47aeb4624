"""Command-line options shared by several commands (a module of its own: no command imports another)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["TrustRemoteCodeOption"]

TrustRemoteCodeOption = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Let a local model folder run the Python code its config names (auto_map); "
        "refused without this flag.",
    ),
]
"""The ``--trust-remote-code`` flag of every command that starts an engine (solve, serve, proxy)."""
