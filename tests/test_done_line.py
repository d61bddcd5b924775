"""The line a run with failed cells ends with says each reason once."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from evalrun.engine.run import failure_message

REASON = "no answer from http://127.0.0.1:9: timeout: no complete reply within 50 s (3 attempts in a row, none answered)"


def _counts(**extra: Any) -> dict[str, Any]:
    counts: dict[str, Any] = {"failed": 6, "not_sent": 0, "answered": 0, "ungraded": 0}
    counts["errors"] = [("timeout", 6, "timeout: no complete reply within 50 s (the attempt's deadline)")]
    return counts | extra


def test_two_models_stopped_for_one_reason_are_one_clause() -> None:
    stats = SimpleNamespace(stopped_models={"haiku": REASON, "sonnet": REASON})
    line = failure_message(Path("out"), _counts(), stats)  # type: ignore[arg-type]
    assert line.count(REASON) == 1
    assert "haiku, sonnet were stopped: " in line
    assert "timeout: timeout:" not in line


def test_the_most_common_error_is_not_repeated_when_the_stop_says_it() -> None:
    reason = "no complete reply within 50 s (the attempt's deadline)"
    stats = SimpleNamespace(stopped_models={"haiku": f"no answer: {reason}"})
    line = failure_message(Path("out"), _counts(), stats)  # type: ignore[arg-type]
    assert line.count(reason) == 1
    assert "6 × timeout; the reason follows" in line


def test_without_a_stop_the_example_is_given_once_without_its_kind_twice() -> None:
    line = failure_message(Path("out"), _counts(), SimpleNamespace(stopped_models={}))  # type: ignore[arg-type]
    assert "most common: 6 × timeout: no complete reply within 50 s" in line


def test_the_stored_stop_reason_names_every_stopped_model() -> None:
    from evalrun.engine.run import _Progress, _stop_reason

    progress = _Progress()
    progress.stats = SimpleNamespace(stopped_models={"haiku": REASON, "sonnet": "401 authentication_error"})  # type: ignore[assignment]
    reason, model = _stop_reason(progress)
    assert reason == f"haiku was stopped: {REASON}; sonnet was stopped: 401 authentication_error"
    assert model == "haiku"
