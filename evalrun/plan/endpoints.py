"""Where and how each model of an experiment is reached: model table entry, base URL, API
version, key variable, and the endpoint a stored answer is tied to."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from evalrun.errors import SpecError
from evalrun.models import ModelInfo, ModelTable, builtin_table, load_table_file
from evalrun.plan.thinking import apply_overrides, check_entry, configurations
from evalrun.spec import Experiment, ModelSpec

__all__ = ["DEFAULT_BASE_URL", "SIMULATOR", "ModelPlan", "experiment_table", "resolve_judge", "resolve_model", "resolve_models"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
SIMULATOR = "simulator"


@dataclass(frozen=True)
class ModelPlan:
    """One model of the experiment with everything needed to send to it."""

    label: str
    spec: ModelSpec
    info: ModelInfo
    base_url: str
    api_version: str
    api_key_env: str | None
    endpoint: str  # what a stored answer is tied to: the base URL, or "simulator"
    warnings: tuple[str, ...] = ()
    # A configuration of a swept model entry: the parameters it sets (dotted paths) over the
    # merged params, and the entry it came from (`models.0`), for errors that name it.
    overrides: tuple[tuple[str, Any], ...] = ()
    entry: str = ""

    def params_for(self, experiment: Experiment, prompt: Any) -> dict[str, Any]:
        """The parameters a prompt is sent to this configuration with: the experiment's, the
        prompt's and the model entry's, then the configuration's own settings."""
        return apply_overrides(experiment.params_for(prompt, self.spec), self.overrides)

    @property
    def request_model(self) -> str:
        """The `model` sent in the body: the name the spec gives, as written — a pinned snapshot
        (`claude-haiku-4-5-20251001`) goes out as that snapshot, never as its alias. The table
        entry (capabilities, price) is still found by alias or dated id."""
        return self.spec.name

    @property
    def key_variable(self) -> str:
        return self.api_key_env or "ANTHROPIC_API_KEY"


def experiment_table(experiment: Experiment) -> ModelTable:
    """The built-in model table with the experiment's `model_table` merged over it."""
    table = builtin_table()
    extra = experiment.model_table
    if extra is None:
        return table
    if isinstance(extra, str):
        path = Path(experiment.base_dir) / extra
        return table.extended(load_table_file(path), source=str(path))
    return table.extended(extra, source=f"{experiment.source}: model_table")


def check_base_url(url: str, *, where: str) -> tuple[str, str | None]:
    """A usable base URL (no trailing slash, no trailing `/v1`) and a warning when it was changed."""
    cleaned = url.strip().rstrip("/")
    try:
        parts = urlsplit(cleaned)
    except ValueError as exc:  # "http://[::1": Invalid IPv6 URL
        raise SpecError(f"{where}: {url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpecError(f"{where}: {url!r} is not an http(s) URL (e.g. http://localhost:4000)")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise SpecError(f"{where}: {url!r} has an invalid port") from None
    if parts.query or parts.fragment:
        raise SpecError(f"{where}: {url!r} must not have a query or fragment")
    if cleaned.endswith("/v1"):
        # evalrun adds /v1/messages itself, as the official SDK does; /v1/v1/messages would
        # answer 404 and look like an unknown model.
        return cleaned.removesuffix("/v1"), f"{where}: base URL ends in /v1; evalrun adds /v1/messages itself, so it uses {cleaned.removesuffix('/v1')}"
    return cleaned, None


def resolve_models(
    experiment: Experiment, table: ModelTable, *, sim: bool = False, environ: Mapping[str, str] | None = None
) -> tuple[ModelPlan, ...]:
    """Where and how each model configuration is reached (a swept entry gives several, one per
    value, see `evalrun.plan.thinking`). `ANTHROPIC_BASE_URL` applies unless a model sets base_url."""
    out: list[ModelPlan] = []
    for index, spec in enumerate(experiment.models):
        where = f"models.{index}"
        plan = resolve_model(spec, table, experiment=experiment, where=where, sim=sim, environ=environ)
        check_entry(spec, plan.info, where=f"{experiment.source}: {where}")
        for config in configurations(spec):
            configured = spec.model_copy(update={"label": config.label, "effort": None, "thinking": None, "vary": None})
            out.append(dataclasses.replace(
                plan, label=config.label, spec=configured, overrides=config.overrides,
                entry=f"{where} ({config.label})",
            ))  # fmt: skip
    labels = [m.label for m in out]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise SpecError(f"{experiment.source}: models: configuration {twice[0]!r} appears twice; give an entry a `label`")
    return tuple(out)


def resolve_judge(
    experiment: Experiment, table: ModelTable, *, sim: bool = False, environ: Mapping[str, str] | None = None
) -> ModelPlan | None:
    """The grader model of a `judge` scorer, resolved like a graded model (None for other scorers)."""
    judge = experiment.scorer.judge_model
    if judge is None:
        return None
    spec = ModelSpec(
        name=judge.name, label=judge.display, base_url=judge.base_url, api_key_env=judge.api_key_env,
        api_version=judge.api_version, params=judge.params,
    )  # fmt: skip
    if spec.display in {m.display for m in experiment.models}:
        raise SpecError(f"{experiment.source}: scorer.model: label {spec.display!r} is also a graded model's label")
    return resolve_model(spec, table, experiment=experiment, where="scorer.model", sim=sim, environ=environ)


def resolve_model(
    spec: ModelSpec,
    table: ModelTable,
    *,
    experiment: Experiment,
    where: str,
    sim: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ModelPlan:
    env = environ or {}
    info = table.get(spec.name)
    api_version = spec.api_version or experiment.api_version or table.default_api_version
    if table.api_versions and api_version not in table.api_versions:  # the API refuses an unknown one
        raise SpecError(f"{experiment.source}: {where}: API version {api_version!r} is not one the model table "
                        f"knows ({', '.join(sorted(table.api_versions))}): every request would be refused")  # fmt: skip
    warnings = []
    if spec.base_url:
        check_base_url(spec.base_url, where=f"{experiment.source}: {where}.base_url")  # a typo fails even with --sim
    if sim:
        base_url, endpoint = "", SIMULATOR
    else:
        if spec.base_url:
            raw, key_where = spec.base_url, f"{experiment.source}: {where}.base_url"
        elif env.get("ANTHROPIC_BASE_URL"):
            raw, key_where = env["ANTHROPIC_BASE_URL"], "ANTHROPIC_BASE_URL"
        else:
            raw, key_where = DEFAULT_BASE_URL, "base URL"
        base_url, note = check_base_url(raw, where=key_where)
        if note:
            warnings.append(note)
        endpoint = base_url
    if not info.known:
        # A typo is far likelier than a new model: name the nearest one (the API would answer 404).
        near = table.nearest(spec.name)
        hint = f" (did you mean {near!r}?)" if near else ""
        warnings.append(
            f"{spec.display}: not in the model table{hint}; its prefill and sampling support will be "
            f"learned from the first response (declare it under `model_table` to skip that)"
        )
    if info.retires:
        warnings.append(f"{spec.display}: retires on {info.retires}")
    if info.price is None:
        warnings.append(f"{spec.display}: no known price; costs will be empty, not $0")
    return ModelPlan(
        label=spec.display,
        spec=spec,
        info=info,
        base_url=base_url,
        api_version=api_version,
        api_key_env=spec.api_key_env,
        endpoint=endpoint,
        warnings=tuple(dict.fromkeys(warnings)),
    )
