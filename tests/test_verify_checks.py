"""Independent checks of issues #21–#23 that found a defect (the verifier's regressions)."""

from __future__ import annotations

from click.testing import CliRunner

from evalrun.cli import cli


def test_validate_offers_the_nearest_model_for_a_mistyped_name(write_spec, monkeypatch, tmp_path) -> None:
    # #21.2: a typo in a model name (the API would answer 404) is pointed at the model it meant.
    monkeypatch.chdir(tmp_path)
    spec = write_spec("models: [claude-sonet-4-6]\n")
    result = CliRunner().invoke(cli, ["validate", str(spec), "--sim"], catch_exceptions=False)
    assert "claude-sonet-4-6: not in the model table (did you mean 'claude-sonnet-4-6'?)" in result.output


def test_a_model_unlike_any_in_the_table_gets_no_suggestion(write_spec, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    spec = write_spec("models: [my-local-llama]\n")
    result = CliRunner().invoke(cli, ["validate", str(spec), "--sim"], catch_exceptions=False)
    assert "my-local-llama: not in the model table;" in result.output
    assert "did you mean" not in result.output
