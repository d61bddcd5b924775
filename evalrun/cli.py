"""The command line: the only place that prints, exits, or draws progress."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from evalrun import __version__
from evalrun.errors import EvalrunError, RunInterrupted
from evalrun.execute import prepare, run_prepared
from evalrun.reports.build import build_reports
from evalrun.send.runner import Runner, RunStats

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])
GRACE_SECONDS = 30.0


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _echo_warnings(warnings: list[str] | tuple[str, ...]) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


class _Group(click.Group):
    """Turns every EvalrunError into one line and its exit code: tracebacks are for bugs."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EvalrunError as exc:
            _fail(str(exc), exc.exit_code)
        except BaseExceptionGroup as group:
            # Task groups wrap what their tasks raised; a user's mistake is still one line.
            known = _first_evalrun_error(group)
            if known is None:
                raise
            _fail(str(known), known.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)


def _first_evalrun_error(group: BaseExceptionGroup) -> EvalrunError | None:
    for exc in group.exceptions:
        if isinstance(exc, EvalrunError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_evalrun_error(exc)
            if found is not None:
                return found
    return None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="evalrun")
def cli() -> None:
    """Batch evaluations and prompt experiments on the Anthropic Messages API."""


def _common(f: F) -> F:
    f = click.option("--sim", is_flag=True, help="Send to the built-in Messages API simulator.")(f)
    f = click.option("--limit", type=click.IntRange(min=1), help="Use only the first N dataset rows.")(f)
    return click.argument("spec", type=click.Path(path_type=Path))(f)


@cli.command()
@_common
def validate(spec: Path, limit: int | None, sim: bool) -> None:
    """Check a spec: schema, dataset columns, modes and parameters, first request body."""
    prepared = prepare(spec, limit=limit, sim=sim)
    plan = prepared.plan
    click.echo(
        f"{spec}: ok — {len(prepared.dataset.rows)} rows × {len(prepared.models)} models × "
        f"{len(prepared.experiment.prompts)} prompts × {prepared.experiment.repeats} repeats = {len(plan.cells)} requests"
    )
    for model in prepared.models:
        info = model.info
        known = "in the model table" if info.known else "NOT in the model table"
        click.echo(f"\nmodel {model.label} ({model.spec.name}, {known}; API version {model.api_version})")
        for prompt in prepared.experiment.prompts:
            params = plan.params[(model.label, prompt)]
            shown = {k: v for k, v in params.items() if k != "output_config"}
            click.echo(
                f"  {prompt}: answer_mode={plan.modes[(model.label, prompt)]} params={json.dumps(shown)}"
            )
    _echo_warnings(plan.warnings)
    if plan.cells:
        click.echo("\nfirst request body:")
        click.echo(json.dumps(plan.cells[0].body, indent=2, ensure_ascii=False)[:20000])
    click.echo(f"\nrun folder: {prepared.folder}")


@cli.command()
@_common
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--local", is_flag=True, help="Count tokens locally; do not ask the endpoint.")
@click.option("--rpm", type=float, help="Requests per minute allowed (for the wall-time estimate).")
@click.option("--itpm", type=float, help="Input tokens per minute allowed.")
@click.option("--otpm", type=float, help="Output tokens per minute allowed.")
def estimate(
    spec: Path,
    limit: int | None,
    sim: bool,
    as_json: bool,
    local: bool,
    rpm: float | None,
    itpm: float | None,
    otpm: float | None,
) -> None:
    """Requests, tokens, USD and wall time before spending anything."""
    from evalrun.execute import estimate_prepared

    prepared = prepare(spec, limit=limit, sim=sim)
    result = anyio.run(lambda: estimate_prepared(prepared, rpm=rpm, itpm=itpm, otpm=otpm, local=local))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    _echo_warnings(prepared.plan.warnings)
    click.echo(
        f"{'model':<24} {'prompt':<16} {'mode':<11} {'requests':>8} {'input tok':>11} {'output tok':>10} {'USD':>10}"
    )
    for row in result.by_cell:
        cost = "unknown" if row["cost_usd"] != row["cost_usd"] else f"{row['cost_usd']:.4f}"
        click.echo(
            f"{row['model']:<24} {row['prompt']:<16} {row['answer_mode']:<11} {row['requests']:>8} "
            f"{row['input_tokens']:>11,} {row['output_tokens']:>10,} {cost:>10}"
        )
    error = f" ± {result.input_error_tokens:,}" if result.input_error_tokens else ""
    click.echo(f"\nrequests: {result.requests:,}")
    click.echo(f"input tokens: {result.input_tokens:,}{error} ({result.input_source})")
    click.echo(
        f"output tokens: {result.output_tokens:,} expected, {result.output_tokens_max:,} at most (max_tokens)"
    )
    if result.unpriced:
        click.echo(f"cost: unknown — no price for {', '.join(result.unpriced)}")
    else:
        click.echo(f"cost: ${result.cost_usd:.4f} expected, ${result.cost_usd_max:.4f} at most")
    if result.wall_time_s is not None:
        click.echo(f"wall time: about {result.wall_time_s:,.0f} s at {result.limits}")
    else:
        click.echo("wall time: give --rpm (and --itpm/--otpm) for an estimate under your rate limits")


class _ProgressLine:
    """A rich progress bar fed by the runner's counters."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}"),
            console=self.console,
            refresh_per_second=4,
            transient=False,
        )
        self.task = self.progress.add_task("run", total=None, detail="")
        self._last = 0.0

    def __enter__(self) -> _ProgressLine:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, stats: RunStats) -> None:
        now = time.monotonic()
        if now - self._last < 0.2 and stats.done < stats.total:
            return
        self._last = now
        detail = (
            f"{stats.rate:.1f}/s  retries {stats.retries}  429s {stats.rate_limited}  errors {stats.errors}"
        )
        if stats.spent_usd:
            detail += f"  ${stats.spent_usd:.4f}"
        if stats.backing_off_s > 0:
            detail += f"  [yellow]backing off {stats.backing_off_s:.1f}s"
        if stats.pacing:
            detail += f"  [dim]{stats.pacing}"
        self.progress.update(self.task, total=stats.total, completed=stats.done, detail=detail)


@cli.command()
@_common
@click.option("--out", type=click.Path(path_type=Path), help="Run folder (default reports/<name>/<run-id>/).")
@click.option("--concurrency", type=click.IntRange(min=1), help="Most requests in flight at once.")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), help="Spend cap in USD (exit code 3).")
@click.option("--fresh", is_flag=True, help="Forget stored answers and send everything again.")
@click.option("--max-retries", type=click.IntRange(min=0), help="Retries per request for transient failures.")
def run(
    spec: Path,
    limit: int | None,
    sim: bool,
    out: Path | None,
    concurrency: int | None,
    budget: float | None,
    fresh: bool,
    max_retries: int | None,
) -> None:
    """Send, score, report. Resumes if interrupted: run the same command again."""
    prepared = prepare(spec, out=out, limit=limit, sim=sim)
    _echo_warnings(prepared.plan.warnings)
    if sim:
        click.echo("endpoint: simulator (scores are simulated, not measured)", err=True)
    holder: dict[str, Runner] = {}

    async def main() -> Any:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, holder, tg.cancel_scope)
            try:
                with _ProgressLine() as line:
                    return await run_prepared(
                        prepared,
                        fresh=fresh,
                        concurrency=concurrency,
                        budget_usd=budget,
                        max_retries=max_retries,
                        on_progress=line.update,
                        on_runner=lambda runner: holder.__setitem__("runner", runner),
                    )
            finally:
                tg.cancel_scope.cancel()

    result = anyio.run(main)
    if result is None:  # cancelled by a second Ctrl-C
        raise RunInterrupted(
            f"stopped at once; what arrived is stored in {prepared.folder}; run again to resume"
        )
    stats = result.stats
    click.echo(
        f"done: {stats.total} cells ({stats.skipped} already stored), {stats.errors} errors, "
        f"{stats.retries} retries, ${stats.spent_usd:.4f} spent in total",
        err=True,
    )
    click.echo(f"report: {result.folder}")


async def _watch_signals(holder: dict[str, Runner], scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for _ in signals:
            count += 1
            runner = holder.get("runner")
            if count == 1 and runner is not None:
                click.echo(
                    "\nstopping: waiting for requests in flight to be stored (Ctrl-C again to quit now)",
                    err=True,
                )
                runner.request_stop()
                scope.deadline = min(scope.deadline, anyio.current_time() + GRACE_SECONDS)
            else:
                scope.cancel()
                return


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
def report(folder: Path) -> None:
    """Rebuild the report files of a run folder from its store."""
    build_reports(folder)
    click.echo(f"report: {folder}")


@cli.command(name="compare")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--by", type=click.Choice(["prompt", "model"]), default="prompt", show_default=True)
@click.option("--baseline", help="Compare every variant against this one instead of every pair.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
def compare_command(folder: Path, by: str, baseline: str | None, seed: int) -> None:
    """Paired comparison of prompts or models on the rows both answered (writes comparison.csv)."""
    from evalrun.reports.build import COMPARISON_TABLE_COLUMNS, load_results, markdown_table, write_comparison
    from evalrun.results.compare import compare

    results = load_results(folder)
    results = results[results["status"] != "pending"]
    try:
        table = compare(results, by=by, baseline=baseline, seed=seed)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--baseline") from None
    path = write_comparison(folder, table)
    click.echo(markdown_table(table, COMPARISON_TABLE_COLUMNS))
    if table["modes_differ"].any():
        click.echo("warning: some pairs were asked in different answer modes (modes_differ)", err=True)
    click.echo(f"comparison: {path}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--api-key", help="Require this key (x-api-key or Bearer).")
@click.option("--rpm", type=float, help="Requests per minute per model class.")
@click.option("--itpm", type=float, help="Input tokens per minute per model class.")
@click.option("--otpm", type=float, help="Output tokens per minute per model class.")
@click.option("--burst", type=int, help="Request bucket capacity (token buckets scale with it).")
@click.option("--latency-ms", type=float, default=0.0, show_default=True, help="Median latency.")
@click.option("--p500", type=float, default=0.0, help="Probability of a 500 api_error.")
@click.option("--p529", type=float, default=0.0, help="Probability of a 529 overloaded_error.")
@click.option("--pdrop", type=float, default=0.0, help="Probability of a dropped connection.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--answers", help="Answer key: FILE.csv:COLUMN.")
def sim(
    host: str,
    port: int,
    api_key: str | None,
    rpm: float | None,
    itpm: float | None,
    otpm: float | None,
    burst: int | None,
    latency_ms: float,
    p500: float,
    p529: float,
    pdrop: float,
    seed: int,
    answers: str | None,
) -> None:
    """Run the Messages API simulator as a server."""
    from evalrun.sim import AnswerKey, SimConfig, serve

    key = None
    if answers:
        path, sep, column = answers.rpartition(":")
        if not sep or not path or not column:
            raise click.BadParameter("expected FILE.csv:COLUMN", param_hint="--answers")
        key = AnswerKey.from_csv(Path(path), column)
    config = SimConfig(
        api_key=api_key,
        rpm=rpm,
        itpm=itpm,
        otpm=otpm,
        burst=burst,
        latency_ms=latency_ms,
        p500=p500,
        p529=p529,
        pdrop=pdrop,
        seed=seed,
        answers=key,
    )
    click.echo(f"evalrun simulator on http://{host}:{port} (Ctrl-C to stop)", err=True)
    serve(config, host, port)


def main() -> None:
    cli(prog_name="evalrun")
