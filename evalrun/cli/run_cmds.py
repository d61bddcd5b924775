"""`validate`, `estimate` and `run`: from a spec to a plan, a price, a stored run."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import click

from evalrun.cli._app import cli, common_options, duration, echo_warnings, positive_finite, spent
from evalrun.errors import EvalrunError, RunFailed, RunInterrupted


@cli.command()
@common_options
@click.option("--batch", "batch", flag_value=True, default=None, help="As `run --batch` would send it.")
def validate(spec: Path, limit: int | None, sim: bool, out: Path | None, batch: bool | None) -> None:
    """Check a spec: schema, dataset columns, modes and parameters, first request body."""
    from evalrun.engine.prepare import prepare

    prepared = prepare(spec, out=out, limit=limit, sim=sim, batch=batch)
    plan = prepared.plan
    experiment = prepared.experiment
    click.echo(
        f"{spec}: ok — {prepared.dataset.count} rows × {len(prepared.models)} models × "
        f"{len(experiment.prompts)} prompts × {experiment.repeats} repeats = {plan.total_cells} cells"
    )
    for model in prepared.models:
        info = model.info
        known = "in the model table" if info.known else "NOT in the model table"
        nearest = None if info.known else prepared.table.nearest(model.spec.name)
        if nearest is not None:
            known += f"; did you mean {nearest!r}?"
        click.echo(f"\nmodel {model.label} ({model.spec.name}, {known}; API version {model.api_version})")
        for prompt in experiment.prompts:
            params = plan.params[(model.label, prompt)]
            shown = {k: v for k, v in params.items() if k != "output_config"}
            if (params.get("output_config") or {}).get("effort"):  # the rest is the answer format
                shown["effort"] = params["output_config"]["effort"]
            click.echo(f"  {prompt}: answer_mode={plan.modes[(model.label, prompt)]} params={json.dumps(shown)}")
    echo_warnings(plan.warnings)
    body = plan.first_body()
    if body is not None:
        click.echo("\nfirst request body:")
        click.echo(json.dumps(body, indent=2, ensure_ascii=False)[:20000])
    judge = prepared.judge_plan(None)
    first_row = next(prepared.dataset.iter_rows(), None)
    if judge is not None and first_row is not None:
        echo_warnings([f"{judge.model.label}: {note}" for note in judge.notes])
        click.echo(f"\ngrader {judge.model.label} ({judge.model.spec.name}; answer_mode={judge.mode_name}); "
                   "first grading request body:")  # fmt: skip
        stand_in = "<the reply of the graded model>"
        click.echo(json.dumps(judge.body(first_row.values, stand_in), indent=2, ensure_ascii=False)[:20000])
    click.echo(f"\nrun folder: {prepared.folder}{_owner_note(prepared)}")
    if not sim:
        _note_missing_key(prepared)


def _owner_note(prepared: Any) -> str:
    """A note when the run folder holds another experiment (`run` would refuse it)."""
    from evalrun.store.ownership import experiment_in

    try:
        owner = experiment_in(prepared.folder)
    except EvalrunError:
        return " (its store cannot be read)"
    if owner is None or owner == prepared.experiment.name:
        return ""
    return f" (holds experiment {owner!r}: `run` will refuse it; add --fresh to set that store aside)"


def _note_missing_key(prepared: Any) -> None:
    """validate checks the spec, not the environment: a missing or unusable key is said, not fatal."""
    import os

    from evalrun.engine.prepare import api_keys
    from evalrun.errors import SpecError

    try:
        api_keys(prepared, os.environ)
    except SpecError as exc:
        click.echo(f"note: `run` will need a usable API key: {exc}", err=True)


@cli.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--local", is_flag=True, help="Count tokens locally; do not ask the endpoint.")
@click.option("--rpm", type=float, callback=positive_finite, help="Requests per minute allowed (for the wall time).")
@click.option("--itpm", type=float, callback=positive_finite, help="Input tokens per minute allowed.")
@click.option("--otpm", type=float, callback=positive_finite, help="Output tokens per minute allowed.")
@click.option("--detect", type=click.FloatRange(min=0, max=1, min_open=True), help="An accuracy difference "
              "(e.g. 0.03): how many rows a paired comparison needs to detect it.")  # fmt: skip
@click.option("--batch", "batch", flag_value=True, default=None, help="Price the run as `run --batch` sends it.")
@click.option("--pilot", type=click.IntRange(min=2), help="Send N sampled rows per configuration for real (paid, "
              "stored for the run) and forecast the cost from what they spent.")  # fmt: skip
@click.option("--budget", type=float, callback=positive_finite, help="Spend cap in USD for the pilot (exit code 3).")
def estimate(
    spec: Path,
    limit: int | None,
    sim: bool,
    out: Path | None,
    as_json: bool,
    local: bool,
    rpm: float | None,
    itpm: float | None,
    otpm: float | None,
    detect: float | None,
    batch: bool | None,
    pilot: int | None,
    budget: float | None,
) -> None:
    """Requests, tokens, USD, wall time and statistical power, before spending anything (but a --pilot)."""
    import anyio

    from evalrun.engine.estimating import estimate_prepared
    from evalrun.engine.prepare import prepare

    prepared = prepare(spec, out=out, limit=limit, sim=sim, batch=batch)
    result = anyio.run(
        lambda: estimate_prepared(prepared, rpm=rpm, itpm=itpm, otpm=otpm, local=local, detect=detect)
    )
    from evalrun.pilot import forecast_lines, pilot_estimate, pilot_json

    forecast = anyio.run(lambda: pilot_estimate(prepared, result, rows=pilot, budget_usd=budget)) if pilot else None
    echo_warnings(prepared.plan.warnings)  # on stderr: the JSON on stdout stays parseable
    if as_json:
        click.echo(json.dumps({**result.to_json(), **pilot_json(forecast)}, indent=2))
        return
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
    click.echo(f"\ncells: {result.cells:,}; requests: {result.requests:,} (identical requests are sent once)")
    click.echo(f"input tokens: {result.input_tokens:,}{error} ({result.input_source})")
    click.echo(f"output tokens: {result.output_tokens:,} expected, {result.output_tokens_max:,} at most (max_tokens)")
    if result.cache_write_tokens or result.cache_read_tokens:
        click.echo(
            f"prompt caching: {result.cache_write_tokens:,} tokens written, {result.cache_read_tokens:,} read from the "
            "cache (part of the input above)"
        )
    if result.unpriced:
        click.echo(f"cost: unknown — no price for {', '.join(result.unpriced)}")
    else:
        sent = "with --batch" if result.sent_as == "batch" else "in real time"
        click.echo(f"cost {sent}: ${result.cost_usd:.4f} expected, ${result.cost_usd_max:.4f} at most")
        click.echo(
            f"  real time ${result.cost_usd_realtime:.4f} · batch ${result.cost_usd_batch:.4f} · "
            f"real time without caching ${result.cost_usd_uncached:.4f}"
        )
    if result.wall_time_s is not None:
        click.echo(f"wall time: about {result.wall_time_s:,.0f} s at {result.limits}")
    else:
        click.echo("wall time: give --rpm (and --itpm/--otpm) for an estimate under your rate limits")
    for line in forecast_lines(result, forecast):
        click.echo(line)
    power = result.power
    if power:
        click.echo(
            f"\npower ({power['power']:.0%} power, α {power['alpha']:g}, paired over {power['rows']:,} rows): "
            "the smallest accuracy difference each comparison could detect"
        )
        for pair in power["pairs"]:
            line = (
                f"  {pair['group']}: {pair['a']} vs {pair['b']}: ±{pair['min_detectable_difference'] * 100:.1f} pp"
                f" ({pair['source']})"
            )
            if "rows_needed" in pair:
                line += f"; {pair['detect'] * 100:g} pp needs {pair['rows_needed']:,} rows"
            if "min_detectable_difference_worst" in pair:
                line += f"; ±{pair['min_detectable_difference_worst'] * 100:.1f} pp if clusters go together"
                if "rows_needed_worst" in pair:
                    line += f" ({pair['rows_needed_worst']:,} rows)"
            click.echo(line)
        click.echo(f"  {power['assumption']}")


class _ProgressLine:
    """A rich progress bar fed by the run loop's counters."""

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
        self.task = self.progress.add_task("requests", total=None, detail="")
        self._last = 0.0
        self._started = False

    def __enter__(self) -> _ProgressLine:
        # Shown from the run loop's first report on: a mistake found before sending (a missing
        # key, a locked folder) is one line, with no empty bar above it.
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self.progress.stop()

    def update(self, stats: Any) -> None:
        if not self._started:
            self._started = True
            self.progress.start()
        now = time.monotonic()
        if now - self._last < 0.2 and stats.done < stats.total:
            return
        self._last = now
        detail = f"{stats.rate:.1f}/s  retries {stats.retries}  429s {stats.rate_limited}  errors {stats.errors}"
        if stats.from_cache:
            detail += f"  cached {stats.from_cache}"
        if stats.spent_usd:
            detail += f"  ${stats.spent_usd:.4f}"
        if stats.planning:
            detail += "  [dim]planning…"
        if stats.oldest_wait_s > 30:
            detail += f"  [yellow]a request has waited {stats.oldest_wait_s:.0f}s"
        if stats.pacing:
            detail += f"  [dim]{stats.pacing}"
        self.progress.update(self.task, total=None if stats.planning else stats.total, completed=stats.done, detail=detail)


@cli.command()
@common_options
@click.option("--concurrency", type=click.IntRange(min=1, max=100_000), help="Most requests in flight at once.")
@click.option("--budget", type=float, callback=positive_finite, help="Spend cap in USD for the run folder (exit code 3).")
@click.option("--deadline", callback=duration, help="Stop sending after this long (e.g. 30m, 2h; exit code 5).")
@click.option("--request-timeout", callback=duration,
              help="Most one attempt may take (default: sized to max_tokens, at most 10 min).")  # fmt: skip
@click.option("--batch", "batch", flag_value=True, default=None,
              help="Send through the Message Batches API (half the price; also `batch: true` in the spec).")
@click.option("--batch-fallback", type=click.Choice(["batch", "realtime"]), default="batch", show_default=True,
              help="Send again what a batch could not answer (errored, expired) in a new batch or in real time.")
@click.option("--cancel-on-exit", is_flag=True, help="Cancel the open batches on Ctrl-C (default: they keep "
              "running and the next run collects them).")
@click.option("--fresh", is_flag=True, help="Forget stored answers and send everything again.")
@click.option("--no-cache", is_flag=True, help="Do not take answers from the shared response cache.")
@click.option("--max-retries", type=click.IntRange(min=0, max=100), help="Retries per request for transient failures.")
@click.option("--baseline", type=click.Path(path_type=Path),
              help="A run folder to compare with: a section in report.md and report.html (also `baseline:`).")
def run(
    spec: Path,
    limit: int | None,
    sim: bool,
    out: Path | None,
    concurrency: int | None,
    budget: float | None,
    deadline: float | None,
    request_timeout: float | None,
    batch: bool | None,
    batch_fallback: str,
    cancel_on_exit: bool,
    fresh: bool,
    no_cache: bool,
    max_retries: int | None,
    baseline: Path | None,
) -> None:
    """Send, score, report. Resumes if interrupted: run the same command again."""
    import anyio

    from evalrun.engine.options import RunOptions
    from evalrun.engine.prepare import prepare
    from evalrun.engine.run import run_prepared

    prepared = prepare(spec, out=out, limit=limit, sim=sim, batch=batch)
    echo_warnings(prepared.plan.warnings)
    if sim:
        click.echo("endpoint: simulator (scores are simulated, not measured)", err=True)
    holder: dict[str, Any] = {}

    async def main() -> Any:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, holder, tg.cancel_scope)
            try:
                with _ProgressLine() as line:
                    options = RunOptions(
                        fresh=fresh,
                        use_cache=not no_cache,
                        concurrency=concurrency,
                        budget_usd=budget,
                        deadline_s=deadline,
                        request_timeout_s=request_timeout,
                        batch_fallback=batch_fallback,
                        cancel_on_exit=cancel_on_exit,
                        max_retries=max_retries,
                        baseline=baseline,
                        on_progress=line.update,
                        on_runner=lambda runner: holder.__setitem__("runner", runner),
                    )
                    return await run_prepared(prepared, options)
            finally:
                tg.cancel_scope.cancel()

    try:
        result = anyio.run(main)
    except RunFailed as failed:
        done: Any = failed.result
        if done is not None:
            _echo_done(done)
            click.echo(f"report: {done.folder}")
        raise
    if result is None:  # cancelled by a second Ctrl-C
        raise RunInterrupted(
            f"stopped without waiting for the requests in flight; what arrived is stored in {prepared.folder}; "
            f"run the same command again to resume"
        )
    _echo_done(result)
    click.echo(f"report: {result.folder}")


def _echo_done(result: Any) -> None:
    echo_warnings(result.warnings)
    stats, counts = result.stats, result.counts
    # The answers' counters alone: a judged run's grading requests are counted apart.
    answers = result.stages.get("answer", stats)
    cells = sum(counts.get(k, 0) for k in ("answered", "failed", "not_sent"))
    # Answers collected from batches a killed run had submitted were not sent by this one.
    reattached = f"{answers.reattached} from re-attached batches, " if answers.reattached else ""
    line = (
        f"done: {cells} cells ({counts.get('stored_before', 0)} already stored); {counts.get('answered', 0)} cells "
        f"answered from {counts.get('answered_requests', 0)} requests ({answers.answered} sent now, {reattached}"
        f"{answers.from_cache} from the shared cache); {counts.get('failed', 0)} failed; {counts.get('not_sent', 0)} "
        f"not sent; {stats.retries} retries; {spent(stats.spent_usd, counts.get('unpriced', 0))}"
    )
    if counts.get("graded_requests"):
        grading = result.stages.get("judge")
        sent_now = f"{grading.answered} sent now, {grading.from_cache} from the shared cache; " if grading else ""
        line += (
            f"; graded by {counts['graded_requests']} grading requests ({sent_now}"
            f"{counts.get('ungraded', 0)} cells ungraded)"
        )
    click.echo(line, err=True)


async def _watch_signals(holder: dict[str, Any], scope: Any) -> None:
    import anyio

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for _ in signals:
            count += 1
            runner = holder.get("runner")
            if count == 1 and runner is not None:
                waiting = runner.in_flight
                click.echo(
                    f"\nstopping: no new requests; waiting for the {waiting} in flight to be stored "
                    f"(each at most its own timeout; Ctrl-C again to quit now)"
                    if waiting
                    else "\nstopping: no new requests",
                    err=True,
                )
                runner.request_stop()
            else:
                scope.cancel()
                return
