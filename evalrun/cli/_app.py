"""The command group, its one error handler and the option helpers every command shares.

Start-up is kept instant: this module imports click and the standard library only; each command
imports what it needs when it runs.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from evalrun import __version__
from evalrun.errors import EvalrunError

__all__ = ["cli", "common_options", "duration", "echo_warnings", "fail", "main", "positive_finite", "probability", "spent"]

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def spent(usd: float, unpriced: int) -> str:
    """What the folder has paid, never a plain $0 when some answers have no known price."""
    if unpriced and not usd:
        return f"spent in this folder: unknown ({unpriced} answers of models without a price)"
    unknown = f" plus {unpriced} answers of models without a price" if unpriced else ""
    return f"${usd:.4f} spent in this folder in total{unknown}"


def echo_warnings(warnings: Sequence[str]) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


def _first_evalrun_error(group: BaseExceptionGroup) -> EvalrunError | None:
    for exc in group.exceptions:
        if isinstance(exc, EvalrunError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_evalrun_error(exc)
            if found is not None:
                return found
    return None


class _Group(click.Group):
    """Turns every EvalrunError, usage mistake and Ctrl-C into one line and its exit code:
    tracebacks are for bugs."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:  # fmt: skip
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            fail(f"{exc.format_message()}{hint}", 2)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            fail("interrupted", 130)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EvalrunError as exc:
            fail(_with_notes(exc), exc.exit_code)
        except BaseExceptionGroup as group:
            # Task groups wrap what their tasks raised; a user's mistake is still one line.
            known = _first_evalrun_error(group)
            if known is None:
                raise
            fail(_with_notes(known), known.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)


def _with_notes(exc: BaseException) -> str:
    notes = getattr(exc, "__notes__", None) or []
    return "; ".join([str(exc), *notes])


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="evalrun")
def cli() -> None:
    """Batch evaluations and prompt experiments on the Anthropic Messages API."""


def common_options(f: F) -> F:
    f = click.option("--sim", is_flag=True, help="Send to the built-in Messages API simulator.")(f)
    f = click.option("--limit", type=click.IntRange(min=1), help="Use only the first N dataset rows.")(f)
    f = click.option("--out", type=click.Path(path_type=Path), help="Run folder (default reports/<name>/<run-id>/).")(f)
    return click.argument("spec", type=click.Path(path_type=Path))(f)


def positive_finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise click.BadParameter(f"{value!r} is not a positive number", ctx=ctx, param=param)
    return value


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    from evalrun.spec import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def probability(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not (0.0 <= value <= 1.0):
        raise click.BadParameter(f"{value!r} is not a probability between 0 and 1", ctx=ctx, param=param)
    return value


def main() -> None:
    try:
        cli(prog_name="evalrun")
    except KeyboardInterrupt:
        fail("interrupted", 130)
