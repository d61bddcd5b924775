"""The command line: the only place that prints, exits, or draws progress.

Start-up is kept instant: these modules import click and the standard library only; each command
imports what it needs when it runs. A command group lives in a module of its own and registers on
`cli` when this package is imported.
"""

from __future__ import annotations

from evalrun.cli import across_cmds, folder_cmds, run_cmds, sim_cmd, view_cmds  # noqa: F401  (registers the commands)
from evalrun.cli._app import cli, main

__all__ = ["cli", "main"]
