"""The experiment spec: pydantic models of the YAML (`extra="forbid"`) and `load_spec(path)`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from evalrun.content import (
    AnyTurn,
    DocumentBlock,
    ImageBlock,
    RowTurns,
    TextBlock,
    Turn,
    options_fields,
)
from evalrun.errors import SpecError
from evalrun.messages_api import SPEC_PARAMS
from evalrun.spec_dataset import DatasetSpec
from evalrun.spec_scorers import (
    SCORER_TYPES,
    AnswerMode,
    FieldSpec,
    JudgeModelSpec,
    ModelEntry,
    ScorerSpec,
    Strict,
    api_version_text,
    check_api_version,
    parse_scorer,
)
from evalrun.sweeps import check_sweep, suggest
from evalrun.yamlio import load_yaml

__all__ = [
    "AnswerMode",
    "CacheMode",
    "DatasetSpec",
    "DocumentBlock",
    "Experiment",
    "FieldSpec",
    "ImageBlock",
    "JudgeModelSpec",
    "ModelSpec",
    "PromptSpec",
    "RowTurns",
    "ScorerSpec",
    "TextBlock",
    "Turn",
    "load_spec",
    "parse_scorer",
    "parse_spec",
]

CacheMode = Literal["auto", "off", "5m", "1h"]


def _cache_word(value: Any) -> Any:
    """YAML reads a bare `off` as false (and `on` as true): take them as the words meant."""
    if value is False:
        return "off"
    if value is True:
        return "auto"
    return value

# Top-level Messages body fields a spec may set under `params` (`evalrun.messages_api`).
MESSAGES_PARAMS = SPEC_PARAMS
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_REPEATS = 1000
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def parse_duration(value: str | float) -> float:
    """Seconds from `90`, `90s`, `30m`, `2h` or `1d`; ValueError when it is none of those."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration (e.g. 90s, 30m, 2h)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{value!r} must be a positive duration")
    return seconds


class PromptSpec(Strict):
    """A named prompt variant."""

    system: str | list[TextBlock] | None = None
    messages: list[AnyTurn] = Field(min_length=1)
    prefill: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    answer_mode: AnswerMode | None = None
    cache: CacheMode | None = None

    _cache = field_validator("cache", mode="before")(classmethod(lambda cls, v: _cache_word(v)))

    @field_validator("prefill")
    @classmethod
    def _no_trailing_whitespace(cls, value: str | None) -> str | None:
        # The API refuses a final assistant turn that ends in whitespace (400 on every row).
        if value is not None and value != value.rstrip():
            raise ValueError(
                f"ends with whitespace ({value!r}); the API refuses a final assistant turn that "
                f"ends in whitespace: use {value.rstrip()!r}"
            )
        if value == "":
            raise ValueError("is empty; leave it out instead")
        return value

    @field_validator("messages", mode="before")
    @classmethod
    def _row_turns(cls, value: Any) -> Any:
        # `messages: "{messages}"` is the row's turns alone; a string item splices them in place.
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [{"turns": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _turns_in_order(self) -> PromptSpec:
        if self.messages[0].role not in ("user", "row"):
            raise ValueError("messages: the first turn must have role `user`")
        last = self.messages[-1]
        if last.role == "assistant" and isinstance(last.content, str) and last.content != last.content.rstrip():
            raise ValueError("messages: a final assistant turn cannot end with whitespace")
        if last.role == "assistant" and self.prefill is not None:
            raise ValueError("messages end with an assistant turn and `prefill` is set: use one of them")
        return self


class ModelSpec(ModelEntry):
    """A model to evaluate, with its per-model overrides.

    `effort`, `thinking` and `vary` make it a sweep: a list expands into one configuration per
    value (several lists: their product), labelled `<label>@effort=high,thinking=2048`; a single
    value sets the parameter without sweeping (see `evalrun.plan.thinking`)."""

    answer_mode: AnswerMode | None = None
    effort: str | list[str] | None = None
    thinking: int | str | list[int | str] | None = None
    vary: dict[str, list[Any]] | None = None

    @field_validator("thinking", mode="before")
    @classmethod
    def _thinking_words(cls, value: Any) -> Any:
        # YAML reads a bare `off` as false.
        if isinstance(value, list):
            return ["off" if v is False else v for v in value]
        return "off" if value is False else value

    @model_validator(mode="after")
    def _sweep_values(self) -> ModelSpec:
        check_sweep(self.effort, self.thinking, self.vary)
        return self

    @property
    def display(self) -> str:
        return self.label or self.name


class Experiment(Strict):
    """A validated experiment spec. `source` and `base_dir` say where it came from."""

    name: str
    description: str | None = None
    dataset: DatasetSpec
    models: list[ModelSpec] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    prompts: dict[str, PromptSpec] = Field(min_length=1)
    scorer: ScorerSpec
    repeats: int = Field(default=1, ge=1, le=MAX_REPEATS)
    reducer: Literal["mean", "majority"] = "mean"
    answer_mode: AnswerMode = "auto"
    cache: CacheMode = "auto"
    batch: bool = False
    api_version: str | None = None
    budget_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    deadline: str | float | None = None
    request_timeout: str | float | None = None
    concurrency: int | None = Field(default=None, gt=0)
    max_retries: int = Field(default=6, ge=0)
    model_table: str | dict[str, Any] | None = None
    # A run folder to compare every report with (relative to this file). Left out of the dump
    # that names the run folder: adding a baseline is not a new experiment.
    baseline: str | None = Field(default=None, exclude=True)

    source: str = Field(default="<spec>", exclude=True)
    base_dir: str = Field(default=".", exclude=True)

    def baseline_folder(self) -> Path | None:
        """The `baseline:` run folder, resolved against the spec's folder."""
        return None if self.baseline is None else Path(self.base_dir) / self.baseline

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("must be letters, digits, `.`, `_` or `-` (it names the report folder)")
        return value

    _cache = field_validator("cache", mode="before")(classmethod(lambda cls, v: _cache_word(v)))
    _version_text = field_validator("api_version", mode="before")(classmethod(lambda cls, v: api_version_text(v)))
    _version = field_validator("api_version")(classmethod(lambda cls, v: check_api_version(v)))

    @field_validator("deadline", "request_timeout")
    @classmethod
    def _duration(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("models", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": m} if isinstance(m, str) else m for m in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        labels = [m.display for m in self.models]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"models: {dupes[0]!r} appears twice; give one a different `label`")
        for name in self.prompts:
            if not _NAME_RE.match(name):
                raise ValueError(f"prompts: {name!r} must be letters, digits, `.`, `_` or `-`")
        self._options_field()
        return self

    def _options_field(self) -> None:
        """A `{field|options}` placeholder letters the row's own list: the choice scorer's
        choices follow it (a row with five options is scored A–E)."""
        named = options_fields(p.model_dump_json() for p in self.prompts.values())
        if len(named) > 1:
            raise ValueError(f"prompts: `|options` names {' and '.join(named)}; the options must be one field")
        if not named or self.scorer.type != "choice" or self.scorer.options is not None:
            return
        scorer = self.scorer.model_copy(update={"options": named[0]})
        object.__setattr__(self, "scorer", scorer)

    @property
    def dataset_path(self) -> Path:
        """The dataset file (or a saved Hugging Face dataset's folder), resolved."""
        return (Path(self.base_dir) / (self.dataset.path or self.dataset.hf or "")).resolve()

    def params_for(self, prompt: PromptSpec, model: ModelSpec) -> dict[str, Any]:
        """The parameters a model × prompt is sent with: the experiment's, then the prompt's,
        then the model's (later wins)."""
        return {**self.params, **prompt.params, **model.params}


_MODEL_BRANCHES = ("JudgeModelSpec", "FieldSpec")
_BRANCH_MARKERS = ("list[", "dict[", "tagged-union[", "function-after[", "function-before[", "union[")


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union-branch markers ('str', 'list[...]', block tags) from an error location."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and (part == "str" or part.startswith(_BRANCH_MARKERS)):
            continue
        if part in ("text", "image", "document", "turn", "row") and out and isinstance(out[-1], int):
            continue  # the discriminator tag of a content block
        if (i == 1 and part in SCORER_TYPES and loc[0] == "scorer") or part in _MODEL_BRANCHES:
            continue  # the scorer's type tag; the model branch of a `str | Model` key
        out.append(part)
    return tuple(out)


def _fields_at(parent: tuple[Any, ...], raw_loc: tuple[Any, ...]) -> list[str]:
    """The keys valid at `parent`, for a did-you-mean suggestion."""
    names = [p for p in parent if isinstance(p, str)]
    model: type[BaseModel] = Experiment
    if names[:1] == ["dataset"]:
        model = DatasetSpec
    elif names[:1] == ["models"]:
        model = ModelSpec
    elif names[:2] == ["scorer", "model"]:
        model = JudgeModelSpec
    elif names[:2] == ["scorer", "fields"]:
        model = FieldSpec
    elif names[:1] == ["scorer"]:
        kind = raw_loc[1] if len(raw_loc) > 1 else ""
        return sorted(SCORER_TYPES[kind].model_fields) if kind in SCORER_TYPES else []
    elif names[:1] == ["prompts"] and len(parent) == 2:
        model = PromptSpec
    elif "content" in names or "system" in names:
        model = ImageBlock if "image" in raw_loc else DocumentBlock if "document" in raw_loc else TextBlock
    elif "messages" in names:
        model = Turn
    return sorted(model.model_fields)


def _describe(error: Mapping[str, Any], source: str) -> str:
    loc = _clean_loc(tuple(error["loc"]))
    path = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        fields = [f for f in _fields_at(loc[:-1], tuple(error["loc"])) if f not in ("source", "base_dir")]
        return f"{source}: {path}: unknown key{suggest(str(loc[-1]), fields)}"
    if error["type"] in ("missing", "union_tag_not_found"):
        return f"{source}: {path}{'.type' if error['type'] == 'union_tag_not_found' else ''}: required key is missing"
    if error["type"] == "union_tag_invalid":
        tags = " or ".join(", ".join(repr(t) for t in SCORER_TYPES).rsplit(", ", 1))
        return f"{source}: {path}.type: Input should be {tags}"
    if error["type"] == "model_attributes_type" and loc == ("scorer",):
        return f"{source}: scorer: expected a mapping with `type` (one of {', '.join(SCORER_TYPES)})"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{source}: {path}: {message}"


def _explained(error: Mapping[str, Any], first: Mapping[str, Any], top: tuple[Any, ...]) -> bool:
    """Whether `error` is the first one seen again: a location above it, or the key a typo missed."""
    loc = _clean_loc(tuple(error["loc"]))
    if loc == top[: len(loc)]:
        return True
    return first["type"] == "extra_forbidden" and error["type"] == "missing" and loc[:-1] == top[:-1]


def parse_spec(raw: Any, *, source: str = "<spec>", base_dir: Path | str = ".") -> Experiment:
    """Validate an already-parsed YAML document."""
    if not isinstance(raw, Mapping):
        raise SpecError(f"{source}: expected a mapping of keys (name, dataset, models, prompts, scorer, ...)")
    try:
        experiment = Experiment.model_validate({**raw, "source": source, "base_dir": str(base_dir)})
    except ValidationError as exc:
        # A typo explains its twin "missing" error, so unknown keys come first; then the deepest
        # location, the most specific (a union reports one error per branch).
        errors = sorted(
            exc.errors(), key=lambda e: (e["type"] != "extra_forbidden", -len(_clean_loc(tuple(e["loc"]))))
        )
        first = _describe(errors[0], source)
        top = _clean_loc(tuple(errors[0]["loc"]))
        others = [e for e in errors[1:] if not _explained(e, errors[0], top)]
        more = f" (and {len(others)} more problem{'s' if len(others) > 1 else ''})" if others else ""
        raise SpecError(first + more) from None
    for where, params in _all_params(experiment):
        for key in params:
            if key not in MESSAGES_PARAMS:
                raise SpecError(
                    f"{source}: {where}.{key}: not a Messages API parameter{suggest(key, sorted(MESSAGES_PARAMS))}"
                )
        _check_param_values(params, f"{source}: {where}")
    _check_answer_source(experiment, source)
    _check_tool_choice(experiment, source)
    return experiment


# Sampling parameters and their range in the Messages API.
_UNIT_RANGE = ("temperature", "top_p")


def _check_param_values(params: Mapping[str, Any], where: str) -> None:
    """The values the API would refuse on every request, caught before anything is sent."""
    max_tokens = params.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise SpecError(f"{where}.max_tokens: must be a whole number ≥ 1, got {max_tokens!r}")
    for key in _UNIT_RANGE:
        value = params.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise SpecError(f"{where}.{key}: must be a number from 0 to 1, got {value!r}")
    top_k = params.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise SpecError(f"{where}.top_k: must be a whole number ≥ 1, got {top_k!r}")


def _check_tool_choice(experiment: Experiment, source: str) -> None:
    """A tool_choice forcing a tool no request sends: the API refuses every request."""
    for model in experiment.models:
        for name, prompt in experiment.prompts.items():
            params = experiment.params_for(prompt, model)
            choice = params.get("tool_choice")
            if not isinstance(choice, Mapping) or choice.get("type") != "tool":
                continue
            tools = params.get("tools")
            names = [str(t.get("name")) for t in tools if isinstance(t, Mapping)] if isinstance(tools, list) else []
            if choice.get("name") not in names:
                scope = f" with prompt {name!r} to model {model.display!r}" if len(experiment.models) > 1 or len(
                    experiment.prompts) > 1 else ""  # fmt: skip
                raise SpecError(
                    f"{source}: tool_choice: forces {choice.get('name')!r}, which is not one of the tools "
                    f"sent{scope} ({', '.join(names) or 'no tools are sent'}): the API would refuse every request"
                )


def _check_answer_source(experiment: Experiment, source: str) -> None:
    """Refuse a `fields` scorer that waits for a tool call no request asks for: no tools sent, not
    the tool it names, or a tool_choice that rules it out. Each would score every cell
    `unparsed`. Every model × prompt is checked with its own params (experiment < prompt <
    model), as the plan merges them. `from: json` (the whole reply as JSON: structured output,
    or a prompt asking for bare JSON) and `from: text` (a JSON object anywhere in the text) can
    always be answered and are not checked."""
    scorer = experiment.scorer
    if scorer.type != "fields" or scorer.from_ in ("text", "json"):
        return
    combos = [
        (model.display, name, experiment.params_for(prompt, model))
        for model in experiment.models
        for name, prompt in experiment.prompts.items()
    ]
    problems: list[tuple[str, str, str, str]] = []  # (model, prompt, key, what is wrong)
    for label, name, params in combos:
        problem = _source_problem(scorer, params)
        if problem is not None:
            problems.append((label, name, *problem))
    if not problems:
        return
    label, name, key, message = problems[0]
    same = [p for p in problems if p[2:] == (key, message)]
    if len(same) == len(combos):
        scope = ""
    elif all((other, name, key, message) in same for other in {m.display for m in experiment.models}):
        scope = f" with prompt {name!r}"
    else:
        scope = f" with prompt {name!r} to model {label!r}"
    raise SpecError(f"{source}: scorer.{key}: {message.replace('{scope}', scope)}")


def _source_problem(scorer: ScorerSpec, params: Mapping[str, Any]) -> tuple[str, str] | None:
    """(the scorer key at fault, why no reply can give the tool call it reads; `{scope}` marks
    where the requests it concerns are named), or None when a reply can."""
    tools = params.get("tools")
    if not tools:
        return "from", (
            "`tool` reads a tool call, but no `tools` are sent{scope}: every reply would be unparsed; add "
            "params.tools (and a tool_choice forcing the tool)"
        )
    names = [str(t["name"]) for t in tools if isinstance(t, Mapping) and "name" in t] if isinstance(tools, list) else []
    choice = params.get("tool_choice")
    forced = choice.get("name") if isinstance(choice, Mapping) and choice.get("type") == "tool" else None
    if isinstance(choice, Mapping) and choice.get("type") == "none":
        return "from", "`tool` reads a tool call, but tool_choice is none{scope}: no reply calls a tool"
    if scorer.tool is not None and isinstance(tools, list) and scorer.tool not in names:
        return "tool", (
            f"{scorer.tool!r} is not one of the tools sent{{scope}} ({', '.join(names) or 'none named'}): "
            "no reply can call it"
        )
    if scorer.tool is not None and forced is not None and forced != scorer.tool:
        return "tool", f"{scorer.tool!r} is never called: tool_choice forces {forced!r}{{scope}}"
    return None


def _all_params(experiment: Experiment) -> list[tuple[str, dict[str, Any]]]:
    found = [("params", experiment.params)]
    found += [(f"prompts.{name}.params", p.params) for name, p in experiment.prompts.items()]
    found += [(f"models.{i}.params", m.params) for i, m in enumerate(experiment.models)]
    return found


def load_spec(path: str | Path) -> Experiment:
    """Read and validate an experiment spec; errors name the file and the key path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder, not a spec file") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    raw = load_yaml(text, source=str(path))
    if raw is None:
        raise SpecError(f"{path}: the spec is empty")
    return parse_spec(raw, source=str(path), base_dir=path.parent)
