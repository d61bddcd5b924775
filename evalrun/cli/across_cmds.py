"""Commands across run folders: `diff` (the paired change between two runs) and `gate` (pass or
fail a candidate run against a baseline, for CI: exit 0 pass, 6 fail, 2 bad input)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from evalrun.cli._app import cli

GATE_FAILED = 6


def _proportion(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not (0.0 <= value <= 1.0):
        raise click.BadParameter(f"{value!r} is not a proportion between 0 and 1 (0.02 is two points)",
                                 ctx=ctx, param=param)  # fmt: skip
    return value


@cli.command(name="diff")
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Where diff.csv and diff.md go (default: CANDIDATE).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
def diff_command(baseline: Path, candidate: Path, out: Path | None, seed: int) -> None:
    """The paired change of every model × prompt two run folders share (diff = candidate − baseline)."""
    from evalrun.across.diff import diff
    from evalrun.across.render import diff_table, write_diff

    result = diff(baseline, candidate, seed=seed)
    csv_path, _ = write_diff(result, out or candidate)
    click.echo(diff_table(result))
    click.echo(f"diff: {csv_path}")


@cli.command(name="gate")
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path), help="The run folder to compare against.")
@click.option("--max-drop", type=float, default=0.0, show_default=True, callback=_proportion,
              help="Fail when a drop larger than this is established (the whole interval below −D).")
@click.option("--non-inferior", type=float, callback=_proportion,
              help="Pass only when the interval's lower end is at least −D (non-inferiority shown).")
@click.option("--min-accuracy", type=float, callback=_proportion,
              help="Fail when the candidate's accuracy is below A (with or without a baseline).")
@click.option("--junit", type=click.Path(path_type=Path), help="Write JUnit XML here (one testcase per check).")
@click.option("--markdown", type=click.Path(path_type=Path), help="Write a Markdown summary here (a PR comment).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
def gate_command(
    candidate: Path, baseline: Path | None, max_drop: float, non_inferior: float | None, min_accuracy: float | None,
    junit: Path | None, markdown: Path | None, seed: int,
) -> None:  # fmt: skip
    """Pass (exit 0) or fail (exit 6) a candidate run, each criterion printed with its figures."""
    from evalrun.across.gate import gate
    from evalrun.across.render import gate_lines, gate_markdown, junit_xml

    if baseline is None and min_accuracy is None:
        raise click.UsageError("nothing to gate on: give --baseline DIR, or --min-accuracy A")
    result = gate(candidate, baseline, max_drop=max_drop, non_inferior=non_inferior,
                  min_accuracy=min_accuracy, seed=seed)  # fmt: skip
    for line in gate_lines(result):
        click.echo(line)
    for path, text in ((junit, junit_xml(result) if junit else ""), (markdown, gate_markdown(result) if markdown else "")):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if not result.passed:
        sys.exit(GATE_FAILED)
