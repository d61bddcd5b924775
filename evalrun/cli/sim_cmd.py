"""`evalrun sim`: the Messages API simulator as a standalone server."""

from __future__ import annotations

from pathlib import Path

import click

from evalrun.cli._app import cli, positive_finite, probability


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-key", help="Require this key (x-api-key or Bearer).")
@click.option("--rpm", type=float, callback=positive_finite, help="Requests per minute per model class.")
@click.option("--itpm", type=float, callback=positive_finite, help="Input tokens per minute per model class.")
@click.option("--otpm", type=float, callback=positive_finite, help="Output tokens per minute per model class.")
@click.option("--burst", type=click.IntRange(min=1), help="Request bucket capacity (token buckets scale with it).")
@click.option("--latency-ms", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Median latency.")
@click.option("--p500", type=float, default=0.0, callback=probability, help="Probability of a 500 api_error.")
@click.option("--p529", type=float, default=0.0, callback=probability, help="Probability of a 529 overloaded_error.")
@click.option("--pdrop", type=float, default=0.0, callback=probability, help="Probability of a dropped connection.")
@click.option("--batch-seconds", type=click.FloatRange(min=0), default=0.2, show_default=True,
              help="How long a message batch takes to process.")  # fmt: skip
@click.option("--batch-error-rate", type=float, default=0.0, callback=probability,
              help="Probability a batch request ends errored.")  # fmt: skip
@click.option("--batch-expire-rate", type=float, default=0.0, callback=probability,
              help="Probability a batch request ends expired.")  # fmt: skip
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
    batch_seconds: float,
    batch_error_rate: float,
    batch_expire_rate: float,
    seed: int,
    answers: str | None,
) -> None:
    """Run the Messages API simulator as a server."""
    import socket

    from evalrun.sim import AnswerKey, SimConfig, serve

    key = None
    if answers:
        path, sep, column = answers.rpartition(":")
        if not sep or not path or not column:
            raise click.BadParameter("expected FILE.csv:COLUMN", param_hint="--answers")
        key = AnswerKey.from_csv(Path(path), column)
    try:
        config = SimConfig(
            api_key=api_key, rpm=rpm, itpm=itpm, otpm=otpm, burst=burst, latency_ms=latency_ms, p500=p500,
            p529=p529, pdrop=pdrop, seed=seed, answers=key, batch_seconds=batch_seconds,
            batch_error_rate=batch_error_rate, batch_expire_rate=batch_expire_rate,
        )  # fmt: skip
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see evalrun.sim.running_server
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = "is already in use" if exc.errno == 98 else f"cannot be used ({exc.strerror})"
        raise click.UsageError(f"{host}:{port} {reason}; choose another --port") from None
    bound = sock.getsockname()[1]
    click.echo(f"evalrun simulator on http://{host}:{bound} (Ctrl-C to stop)", err=True)
    serve(config, host, bound, sock=sock)
