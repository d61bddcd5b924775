"""Commands over run folders and the shared cache: `report`, `compare`, `runs`, `cache`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from evalrun.cli._app import cli


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
def report(folder: Path) -> None:
    """Rebuild the report files of a run folder from its store."""
    from evalrun.reports.build import build_reports

    build_reports(folder)
    for line in _retired_lines(folder):
        click.echo(line)
    click.echo(f"report: {folder}")


def _retired_lines(folder: Path) -> list[str]:
    """The cells an edited spec took out of the folder's plan, by model × prompt: still stored."""
    from collections import Counter

    from evalrun.store.run_store import Store

    with Store.open(folder, create=False) as store:
        retired = store.retired_cells()
    if not retired:
        return []
    cells = Counter((c["model"], c["prompt"]) for c in retired)
    answered = Counter((c["model"], c["prompt"]) for c in retired if c["status"] == "ok")
    lines = [f"{len(retired):,} cells of an earlier plan of this experiment are no longer in its plan (not in the "
             "reports; their answers stay in the store and are used again if the spec plans them again):"]  # fmt: skip
    lines += [f"  {model} · {prompt}: {n:,} cells, {answered[(model, prompt)]:,} answered"
              for (model, prompt), n in sorted(cells.items())]  # fmt: skip
    return lines


@cli.command(name="compare")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--by", type=click.Choice(["prompt", "model"]), default="prompt", show_default=True)
@click.option("--baseline", help="Compare every variant against this one instead of every pair.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
def compare_command(folder: Path, by: str, baseline: str | None, seed: int) -> None:
    """Paired comparison of prompts or models on the rows both answered (writes comparison.csv)."""
    from evalrun.api import comparison_rows
    from evalrun.errors import SpecError
    from evalrun.reports.build import writable
    from evalrun.reports.markdown import COMPARISON_TABLE_COLUMNS, markdown_table
    from evalrun.reports.writers import write_csv
    from evalrun.results.summary import COMPARISON_COLUMNS

    try:
        table = comparison_rows(folder, by=by, baseline=baseline, seed=seed, write=False)
    except SpecError as exc:
        raise click.BadParameter(str(exc).removeprefix("baseline: "), param_hint="--baseline") from None
    if not table:
        other = "models" if by == "prompt" else "prompts"
        click.echo(f"nothing to compare: the run has fewer than two {by}s within any of its {other}")
        return
    click.echo(markdown_table(table, COMPARISON_TABLE_COLUMNS))
    if any(row["modes_differ"] for row in table):
        click.echo("warning: some pairs were asked in different answer modes (modes_differ)", err=True)
    path = folder / "comparison.csv"
    if not writable(folder):
        click.echo(f"comparison.csv not written: {folder} is read-only", err=True)
        return
    with path.open("w", encoding="utf-8", newline="") as handle:
        write_csv(handle, COMPARISON_COLUMNS, table)
    click.echo(f"comparison: {path}")


@cli.group(name="cache")
def cache_group() -> None:
    """The response cache shared by run folders."""


@cache_group.command(name="info")
def cache_info() -> None:
    """Where the shared response cache is and what it holds."""
    from evalrun.store.cache import ResponseCache

    cache = ResponseCache.open()
    info = cache.info()
    cache.close()
    click.echo(f"path: {info.path}")
    click.echo(f"answers: {info.responses:,} ({info.bytes / 1e6:.1f} MB), worth ${info.cost_usd:.4f}")
    if info.oldest:
        click.echo(f"from {info.oldest} to {info.newest}")


@cache_group.command(name="clear")
def cache_clear() -> None:
    """Forget every answer in the shared response cache (run folders keep theirs)."""
    from evalrun.store.cache import ResponseCache

    cache = ResponseCache.open()
    removed = cache.clear()
    cache.close()
    if cache.problem:  # it could not be read: the file itself is gone
        click.echo(cache.problem)
        return
    click.echo(f"removed {removed:,} answers from {cache.path}")


@cli.command(name="runs")
@click.argument("folder", required=False, default="reports", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run folder, newest first.")
@click.option("--name", help="One experiment's history: its runs oldest first, with the paired change from the run before.")
def runs_command(folder: Path, as_json: bool, name: str | None) -> None:
    """The run folders under FOLDER (default reports): date, name, endpoint, cells done, cost and
    accuracy per model × prompt, newest first."""
    from evalrun.reports.runs import format_runs, list_runs

    if not folder.is_dir():
        raise click.BadParameter(f"{folder} is not a folder", param_hint="FOLDER")
    if name is not None:
        from evalrun.reports.history import format_history, history

        runs = history(folder, name)
        click.echo(json.dumps([run.as_json() for run in runs], indent=2) if as_json else format_history(runs, name))
        return
    found = list_runs(folder)
    if as_json:
        click.echo(json.dumps([info.as_json() for info in found], indent=2))
    else:
        click.echo(format_runs(found, folder))
