"""The grid: models × prompts × rows × repeats → cells, each one Messages request body and a key.

This is also where each model's answer mode and parameters are decided (from the model table
and from what earlier responses taught us), so that nothing a model refuses is ever sent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalrun.errors import DatasetError, SpecError, TemplateError
from evalrun.models import SAMPLING_PARAMS, ModelInfo, ModelTable, builtin_table, load_table_file
from evalrun.plan.dataset import Dataset, Row
from evalrun.plan.render import fill_template, prompt_placeholders, render_system, render_turns
from evalrun.results.scoring import normalize_choice_target
from evalrun.spec import Experiment, ModelSpec, PromptSpec

__all__ = [
    "Cell",
    "Learned",
    "ModelPlan",
    "Plan",
    "cell_key",
    "experiment_table",
    "make_plan",
    "resolve_models",
]

DEFAULT_BASE_URL = "https://api.anthropic.com"
SIMULATOR = "simulator"
# max_tokens floors per answer mode: enough room for the answer the mode asks for.
STRUCTURED_MIN_TOKENS = 32
INSTRUCTION_MIN_TOKENS = 8
DEFAULT_MAX_TOKENS = {
    "prefill": 5,
    "structured": STRUCTURED_MIN_TOKENS,
    "instruction": INSTRUCTION_MIN_TOKENS,
}
PLAIN_MAX_TOKENS = 1024
# Always-on thinking spends output tokens before the answer, so tiny budgets cannot work.
THINKING_MIN_TOKENS = 2048


@dataclass(frozen=True)
class Learned:
    """What responses taught us about a model that the table did not say."""

    prefill_refused: bool = False
    refused_params: frozenset[str] = frozenset()


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


@dataclass(frozen=True)
class Cell:
    """One request of the grid."""

    key: str
    model: str
    model_id: str
    prompt: str
    row_id: str
    repeat: int
    answer_mode: str
    target: str
    body: dict[str, Any]
    endpoint: str

    @property
    def max_tokens(self) -> int:
        return int(self.body["max_tokens"])


@dataclass(frozen=True)
class Plan:
    """Every cell of the experiment, in send order, and per-model decisions."""

    cells: tuple[Cell, ...]
    models: tuple[ModelPlan, ...]
    modes: Mapping[tuple[str, str], str]  # (model label, prompt) → answer mode
    params: Mapping[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        """Names the run folder: the same cells always land in the same folder."""
        digest = hashlib.sha256()
        for cell in self.cells:
            digest.update(cell.key.encode())
        return digest.hexdigest()[:12]


def cell_key(body: Mapping[str, Any], *, repeat: int, endpoint: str, api_version: str) -> str:
    """A content hash: the same request to the same endpoint is the same cell, whatever its row."""
    canonical = json.dumps(
        {"body": body, "repeat": repeat, "endpoint": endpoint, "api_version": api_version},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def experiment_table(experiment: Experiment) -> ModelTable:
    """The built-in model table with the experiment's `model_table` merged over it."""
    table = builtin_table()
    extra = experiment.model_table
    if extra is None:
        return table
    if isinstance(extra, str):
        path = (Path(experiment.base_dir) / extra).resolve()
        return table.extended(load_table_file(path), source=str(path))
    return table.extended(extra, source=f"{experiment.source}: model_table")


def resolve_models(
    experiment: Experiment, table: ModelTable, *, sim: bool = False, environ: Mapping[str, str] | None = None
) -> tuple[ModelPlan, ...]:
    """Where and how each model is reached. `ANTHROPIC_BASE_URL` applies unless a model sets base_url."""
    env = environ or {}
    plans = []
    for spec in experiment.models:
        info = table.get(spec.name)
        api_version = spec.api_version or experiment.api_version or table.default_api_version
        if sim:
            base_url, endpoint = "", SIMULATOR
        else:
            base_url = (spec.base_url or env.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
            endpoint = base_url
        warnings = []
        if not info.known:
            warnings.append(
                f"{spec.display}: not in the model table; its prefill and sampling support will be "
                f"learned from the first response (declare it under `model_table` to skip that)"
            )
        if info.retires:
            warnings.append(f"{spec.display}: retires on {info.retires}")
        if info.price is None:
            warnings.append(f"{spec.display}: no known price; costs will be empty, not $0")
        plans.append(
            ModelPlan(
                label=spec.display,
                spec=spec,
                info=info,
                base_url=base_url,
                api_version=api_version,
                api_key_env=spec.api_key_env,
                endpoint=endpoint,
                warnings=tuple(warnings),
            )
        )
    return tuple(plans)


def _answer_mode(experiment: Experiment, prompt: PromptSpec, model: ModelPlan, learned: Learned) -> str:
    """The mode one model is asked one variant in (see README: answer modes)."""
    forced = model.spec.answer_mode or prompt.answer_mode or experiment.answer_mode
    has_prefill = prompt.prefill is not None
    refuses_prefill = model.info.prefill is False or learned.prefill_refused
    if experiment.scorer.type != "choice":
        if has_prefill and refuses_prefill:
            return "plain"  # no letter enum to constrain; the prefill is dropped (warned)
        return "prefill" if has_prefill else "plain"
    if forced == "auto":
        if not has_prefill:
            return "plain"
        return "structured" if refuses_prefill else "prefill"
    if forced == "prefill":
        if not has_prefill:
            raise SpecError(
                f"{experiment.source}: answer_mode prefill needs a `prefill` in every prompt it applies to"
            )
        if refuses_prefill:
            raise SpecError(
                f"{experiment.source}: answer_mode prefill is forced, but {model.label} does not accept "
                f"prefill; use answer_mode auto, structured or instruction for it"
            )
    return forced


def _merged_params(experiment: Experiment, prompt: PromptSpec, model: ModelPlan) -> dict[str, Any]:
    # Later wins: experiment defaults < prompt variant < model entry.
    return {**experiment.params, **prompt.params, **model.spec.params}


def _adapt_params(
    params: dict[str, Any], model: ModelPlan, table: ModelTable, learned: Learned, mode: str
) -> tuple[dict[str, Any], list[str]]:
    """Drop what the model or API version refuses and size max_tokens for the mode."""
    params = dict(params)
    notes: list[str] = []
    removed = table.removed_params(model.api_version)
    for name in SAMPLING_PARAMS:
        if name not in params:
            continue
        if name in removed:
            notes.append(f"`{name}` does not exist under API version {model.api_version}: not sent")
        elif name in model.info.refuses:
            notes.append(f"refuses `{name}`: not sent")
        elif name in learned.refused_params:
            notes.append(f"refused `{name}` in an earlier response: not sent")
        else:
            continue
        del params[name]
    for group in model.info.exclusive:
        present = [p for p in SAMPLING_PARAMS if p in group and p in params]
        for name in present[1:]:
            notes.append(f"refuses {' and '.join(present)} together: `{name}` not sent")
            del params[name]
    floor = {"structured": STRUCTURED_MIN_TOKENS, "instruction": INSTRUCTION_MIN_TOKENS}.get(mode, 1)
    if "max_tokens" not in params:
        params["max_tokens"] = DEFAULT_MAX_TOKENS.get(mode, PLAIN_MAX_TOKENS)
    elif params["max_tokens"] < floor:
        params["max_tokens"] = floor
    if model.info.thinking == "always" and params["max_tokens"] < THINKING_MIN_TOKENS:
        notes.append(f"thinks before every answer: max_tokens raised to {THINKING_MIN_TOKENS}")
        params["max_tokens"] = THINKING_MIN_TOKENS
    return params, notes


def _choice_schema(choices: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": list(choices)}},
        "required": ["answer"],
        "additionalProperties": False,
    }


def _instruction(choices: list[str]) -> str:
    listed = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
    return f"Answer with only the letter of the correct option ({listed})."


def _append_to_last_user_turn(messages: list[dict[str, Any]], text: str) -> None:
    last = messages[-1]
    if isinstance(last["content"], str):
        last["content"] = f"{last['content']}\n\n{text}"
    else:
        last["content"] = [*last["content"], {"type": "text", "text": text}]


def _body(
    experiment: Experiment,
    name: str,
    prompt: PromptSpec,
    model: ModelPlan,
    row: Row,
    mode: str,
    params: dict[str, Any],
    image_dir: Path,
) -> dict[str, Any]:
    where = f"prompts.{name}"
    row_where = f"{experiment.dataset_path}: line {row.line}"
    body: dict[str, Any] = {"model": model.info.id if model.info.known else model.spec.name}
    body["max_tokens"] = params["max_tokens"]
    system = render_system(prompt, row.values, where=where)
    if system is not None:
        body["system"] = system
    messages = render_turns(prompt.messages, row.values, base_dir=image_dir, where=where, row_where=row_where)
    if mode == "prefill" and prompt.prefill is not None:
        prefill = fill_template(prompt.prefill, row.values, where=f"{where}.prefill").rstrip()
        if prefill:
            messages.append({"role": "assistant", "content": prefill})
    elif mode == "structured":
        schema = _choice_schema(list(experiment.scorer.choices or ()))
        config = dict(params.get("output_config") or {})
        config["format"] = {"type": "json_schema", "schema": schema}
        params = {**params, "output_config": config}
    elif mode == "instruction":
        _append_to_last_user_turn(messages, _instruction(list(experiment.scorer.choices or ())))
    body["messages"] = messages
    for key, value in params.items():
        if key != "max_tokens":
            body[key] = value
    return body


def _normalize_prompt(prompt: PromptSpec) -> PromptSpec:
    """A final assistant turn written in `messages` is the same thing as `prefill`."""
    last = prompt.messages[-1]
    if last.role == "assistant" and isinstance(last.content, str):
        return prompt.model_copy(update={"messages": prompt.messages[:-1], "prefill": last.content})
    return prompt


def check_columns(experiment: Experiment, dataset: Dataset) -> None:
    """Every placeholder and the scorer's target must be dataset columns: checked before sending."""
    for name, prompt in experiment.prompts.items():
        for column, where in prompt_placeholders(prompt, where=f"prompts.{name}").items():
            if column not in dataset.columns:
                raise TemplateError(
                    f"{experiment.source}: {where}: placeholder {{{column}}} is not a column of "
                    f"{dataset.path.name} (columns: {', '.join(dataset.columns)}); write {{{{ }}}} for literal braces"
                )
    if experiment.scorer.target not in dataset.columns:
        raise DatasetError(
            f"{dataset.path}: scorer.target column {experiment.scorer.target!r} is not in the file "
            f"(columns: {', '.join(dataset.columns)})"
        )


def make_plan(
    experiment: Experiment,
    dataset: Dataset,
    models: tuple[ModelPlan, ...],
    table: ModelTable,
    *,
    learned: Mapping[str, Learned] | None = None,
) -> Plan:
    """Expand the grid, row by row across models and prompts, so that a run stopped part-way
    (budget, Ctrl-C) has covered the same rows for every model and prompt."""
    check_columns(experiment, dataset)
    learned = learned or {}
    prompts = {name: _normalize_prompt(p) for name, p in experiment.prompts.items()}
    choices = list(experiment.scorer.choices or ())
    targets: dict[str, str] = {}
    for row in dataset.rows:
        raw = row.values[experiment.scorer.target]
        if experiment.scorer.type == "choice":
            target = normalize_choice_target(raw, choices)
            if target is None:
                raise DatasetError(
                    f"{dataset.path}: line {row.line}: column {experiment.scorer.target!r} holds {raw!r}, "
                    f"which is not one of the choices {', '.join(choices)}"
                )
            targets[row.id] = target
        else:
            targets[row.id] = raw
    modes: dict[tuple[str, str], str] = {}
    params_by: dict[tuple[str, str], dict[str, Any]] = {}
    warnings: list[str] = []
    for model in models:
        warnings.extend(model.warnings)
        notes_seen: set[str] = set()
        knowledge = learned.get(model.label, Learned())
        for name, prompt in prompts.items():
            mode = _answer_mode(experiment, prompt, model, knowledge)
            params, notes = _adapt_params(
                _merged_params(experiment, prompt, model), model, table, knowledge, mode
            )
            if prompt.prefill is not None and mode == "plain":
                notes.append("does not accept prefill and the scorer is not `choice`: the prefill is dropped")
            for note in notes:
                if note not in notes_seen:
                    notes_seen.add(note)
                    warnings.append(f"{model.label}: {note}")
            modes[(model.label, name)] = mode
            params_by[(model.label, name)] = params
    image_dir = experiment.dataset_path.parent
    cells: list[Cell] = []
    for repeat in range(experiment.repeats):
        for row in dataset.rows:
            for model in models:
                for name, prompt in prompts.items():
                    mode, params = modes[(model.label, name)], params_by[(model.label, name)]
                    body = _body(experiment, name, prompt, model, row, mode, params, image_dir)
                    cells.append(
                        Cell(
                            key=cell_key(
                                body, repeat=repeat, endpoint=model.endpoint, api_version=model.api_version
                            ),
                            model=model.label,
                            model_id=model.spec.name,
                            prompt=name,
                            row_id=row.id,
                            repeat=repeat,
                            answer_mode=mode,
                            target=targets[row.id],
                            body=body,
                            endpoint=model.endpoint,
                        )
                    )
    return Plan(cells=tuple(cells), models=models, modes=modes, params=params_by, warnings=tuple(warnings))
