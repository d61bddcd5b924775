"""One exception tree. The CLI catches `EvalrunError` and turns it into one line and an exit code."""

from __future__ import annotations

__all__ = [
    "ApiError",
    "AuthError",
    "BudgetExceeded",
    "DatasetError",
    "DeadlineReached",
    "EvalrunError",
    "MalformedReplyError",
    "NoSuchCell",
    "NotARunFolder",
    "NothingInCommon",
    "PermanentApiError",
    "RateLimitError",
    "ReviewError",
    "RunAborted",
    "RunFailed",
    "RunInterrupted",
    "RunStopped",
    "SpecError",
    "StoreError",
    "TemplateError",
    "TransientApiError",
]


class EvalrunError(Exception):
    """Base of every error a user can cause or meet; `exit_code` is what the CLI exits with."""

    exit_code = 1


class SpecError(EvalrunError):
    """The experiment spec is wrong: the message names the file and the key path."""

    exit_code = 2


class DatasetError(EvalrunError):
    """The dataset is wrong: the message names the file, row and column."""

    exit_code = 2


class TemplateError(SpecError):
    """A template names a column the dataset does not have, or is malformed."""


class StoreError(EvalrunError):
    """The run store cannot be opened, written or trusted."""


class NotARunFolder(StoreError):
    """The folder given to `report`, `compare` (or `load_results`) does not exist, is a file, or
    holds no store: bad input (exit 2), unlike a store that cannot be read."""

    exit_code = 2


class NothingInCommon(EvalrunError):
    """Two run folders given to `diff` or `gate` share no model × prompt with a dataset row both
    answered: there is nothing to pair (bad input, exit 2)."""

    exit_code = 2


class ApiError(EvalrunError):
    """The Messages API (or the network on the way to it) failed a request."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [str(self.status)] if self.status else []
        if self.error_type:
            parts.append(self.error_type)
        head = " ".join(parts)
        tail = f" (request {self.request_id})" if self.request_id else ""
        return f"{head}: {self.message}{tail}" if head else f"{self.message}{tail}"


class TransientApiError(ApiError):
    """Worth retrying: timeouts, dropped connections, 408/409/5xx/529.

    `connection` is true when no connection could be made at all (refused, unresolvable, or a
    connect timeout): an endpoint that does that to every first request is unreachable.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, connection: bool = False, **kwargs: object
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after
        self.connection = connection


class RateLimitError(TransientApiError):
    """429: wait `retry_after` seconds (when the server said) before sending again."""


class PermanentApiError(ApiError):
    """Not worth retrying: 400/402/404/413 and a 429 without retry-after (a spend cap)."""


class MalformedReplyError(ApiError):
    """The server answered 200 with something that is not a Messages reply. It may have been
    paid for, so `raw` (the body) is stored with the cell; it is not retried in the same run."""

    def __init__(self, message: str, *, raw: str, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.raw = raw


class AuthError(PermanentApiError):
    """401/403: every request will fail the same way, so the run stops."""


class BudgetExceeded(EvalrunError):
    """The run stopped cleanly at its spend cap; running again with a higher budget resumes."""

    exit_code = 3


class RunStopped(EvalrunError):
    """The run stopped early because an error would hit every remaining cell; `model` is the
    label of the model whose error it was, when one model's was."""

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class RunFailed(EvalrunError):
    """The run finished, but some cells have no answer (their requests failed): run it again
    to retry just those. `result` is what the run did (its folder and counters)."""

    exit_code = 4

    def __init__(self, message: str, *, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class RunAborted(StoreError):
    """The run stopped at once because its store could not be written (a full disk): nothing
    more was sent; what was answered is in the shared cache or was stored at the end."""


class DeadlineReached(EvalrunError):
    """The run stopped at its deadline (`--deadline`); running again resumes."""

    exit_code = 5


class RunInterrupted(EvalrunError):
    """The user interrupted the run; what arrived is stored and the run can resume."""

    exit_code = 130


class ReviewError(EvalrunError):
    """A human review that cannot be stored: no such cell, or a verdict or grade the run's scorer
    does not have."""

    exit_code = 2


class NoSuchCell(ReviewError):
    """A review names a cell (model, prompt, row id, repeat) the run does not have."""
