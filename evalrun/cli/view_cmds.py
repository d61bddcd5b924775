"""`evalrun view` (the local web app over run folders) and `evalrun reviews` (the human reviews
of a run folder)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from evalrun.cli._app import cli

__all__ = ["reviews_command", "view_command"]


@cli.command(name="view")
@click.argument("folder", required=False, default="reports", type=click.Path(path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (the default answers this machine only).")
@click.option("--reviewer", help="The name recorded with your reviews (default: your login name).")
def view_command(folder: Path, port: int, host: str, reviewer: str | None) -> None:
    """Serve a web app over the run folders under FOLDER (default reports): every run, live
    progress, each run's report and cells, and human verdicts on any cell."""
    from evalrun.view.reviewing import default_reviewer
    from evalrun.view.server import serve

    if not folder.is_dir():
        raise click.BadParameter(f"{folder} is not a folder", param_hint="FOLDER")

    def announce(url: str) -> None:
        click.echo(f"evalrun view: {folder} at {url}")
        click.echo("(a review needs that token; Ctrl-C stops the viewer)")
        sys.stdout.flush()

    serve(folder, host=host, port=port, reviewer=reviewer or default_reviewer(), announce=announce)


@cli.command(name="reviews")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), help="Write every review to this CSV file.")
def reviews_command(folder: Path, csv_path: Path | None) -> None:
    """The human reviews of a run folder, oldest first (the latest of a cell is the one that counts)."""
    import csv

    from evalrun.reports.build import open_run

    store, _ = open_run(folder, readonly=True)
    with store:
        history = store.reviews()
        latest = {review.id for review in store.latest_reviews().values()}
    columns = ["id", "model", "prompt", "row_id", "repeat", "verdict", "grade", "note", "reviewer", "created_at", "counts"]
    if csv_path is not None:
        try:
            with csv_path.open("w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                for review in history:
                    writer.writerow({**review.as_json(), "counts": review.id in latest})
        except OSError as exc:
            raise click.ClickException(f"{csv_path}: cannot write ({exc.strerror or exc})") from None
        click.echo(f"{len(history)} reviews written to {csv_path}")
        return
    if not history:
        click.echo(f"no reviews in {folder}")
        return
    for review in history:
        given = review.verdict or f"grade {review.grade}"
        mark = "" if review.id in latest else "  (superseded)"
        note = f" — {review.note}" if review.note else ""
        click.echo(f"{review.created_at}  {review.reviewer}  {review.model} · {review.prompt} · row {review.row_id} "
                   f"#{review.repeat}: {given}{note}{mark}")  # fmt: skip
    click.echo(f"{len(history)} reviews of {len(latest)} cells")
