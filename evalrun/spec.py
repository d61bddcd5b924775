"""The experiment spec: pydantic models of the YAML (`extra="forbid"`) and `load_spec(path)`."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evalrun.errors import SpecError
from evalrun.messages_api import SPEC_PARAMS
from evalrun.sweeps import check_sweep
from evalrun.yamlio import load_yaml

__all__ = [
    "AnswerMode",
    "CacheMode",
    "DatasetSpec",
    "Experiment",
    "FieldSpec",
    "ImageBlock",
    "JudgeModelSpec",
    "ModelSpec",
    "PromptSpec",
    "ScorerSpec",
    "TextBlock",
    "Turn",
    "load_spec",
    "parse_spec",
]

AnswerMode = Literal["auto", "prefill", "structured", "instruction"]
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextBlock(_Strict):
    """A text content block; `text` is a template."""

    type: Literal["text"]
    text: str
    cache_control: dict[str, Any] | None = None


class ImageBlock(_Strict):
    """An image block: `path` (a file, sent as base64) or `url`; both are templates."""

    type: Literal["image"]
    path: str | None = None
    url: str | None = None
    cache_control: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ImageBlock:
        if (self.path is None) == (self.url is None):
            raise ValueError("an image block needs exactly one of `path` or `url`")
        return self


Block = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class Turn(_Strict):
    """One conversation turn; few-shot examples are user/assistant pairs."""

    role: Literal["user", "assistant"]
    content: str | list[Block]


class PromptSpec(_Strict):
    """A named prompt variant."""

    system: str | list[TextBlock] | None = None
    messages: list[Turn] = Field(min_length=1)
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

    @model_validator(mode="after")
    def _turns_in_order(self) -> PromptSpec:
        if self.messages[0].role != "user":
            raise ValueError("messages: the first turn must have role `user`")
        last = self.messages[-1]
        if last.role == "assistant" and isinstance(last.content, str) and last.content != last.content.rstrip():
            raise ValueError("messages: a final assistant turn cannot end with whitespace")
        if last.role == "assistant" and self.prefill is not None:
            raise ValueError("messages end with an assistant turn and `prefill` is set: use one of them")
        return self


class DatasetSpec(_Strict):
    """The CSV file, relative to the spec file."""

    path: str
    id: str | None = None
    cluster: str | None = None
    limit: int | None = Field(default=None, gt=0)
    sample: int | None = Field(default=None, gt=0)
    seed: int = 0
    encoding: str = "utf-8"


class _ModelEntry(_Strict):
    """A model and where and how to ask it: what a graded model and a grader share."""

    name: str = Field(min_length=1)
    label: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    api_version: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(_ModelEntry):
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


class FieldSpec(_Strict):
    """One field of a `fields` scorer: the dataset column with its gold value, and how to compare."""

    column: str
    tolerance: float = Field(default=0.0, ge=0, allow_inf_nan=False)  # relative, for numbers
    case_sensitive: bool | None = None


class JudgeModelSpec(_ModelEntry):
    """The grader model of a `judge` scorer, with the same overrides a graded model may have
    (its answer mode is the grading stage's own)."""

    @property
    def display(self) -> str:
        return self.label or f"judge:{self.name}"


_SCORER_KEYS = {
    "choice": {"target", "choices", "case_sensitive"},
    "exact": {"target", "case_sensitive"},
    "contains": {"target", "case_sensitive"},
    "regex": {"target", "pattern", "case_sensitive"},
    "fields": {"from_", "tool", "fields", "case_sensitive"},
    "judge": {"model", "rubric", "target", "grades", "scale", "human", "pass_grade", "answer_mode"},
}


class ScorerSpec(_Strict):
    """How a reply is scored: against the dataset's `target` column (choice, exact, contains,
    regex), field by field against several columns (fields), or by a grader model (judge)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True)

    type: Literal["choice", "exact", "contains", "regex", "fields", "judge"]
    target: str | None = None
    choices: list[str] | None = None
    pattern: str | None = None
    case_sensitive: bool = False
    # fields
    from_: Literal["tool", "json", "text"] | None = Field(default=None, alias="from")
    tool: str | None = None
    fields: dict[str, str | FieldSpec] | None = None
    # judge
    model: str | JudgeModelSpec | None = None
    rubric: str | None = None
    grades: list[str] | None = None
    scale: int | None = Field(default=None, ge=2, le=100)
    human: str | None = None
    pass_grade: str | None = None
    answer_mode: Literal["auto", "prefill", "structured", "instruction"] | None = None

    @model_validator(mode="after")
    def _check(self) -> ScorerSpec:
        allowed = _SCORER_KEYS[self.type] | {"type"}
        for name in sorted(self.model_fields_set - allowed):
            if getattr(self, name) == type(self).model_fields[name].default:
                continue  # a full dump (the stored settings) names every key
            shown = "from" if name == "from_" else name
            raise ValueError(f"`{shown}` does not apply to a {self.type} scorer (it takes {', '.join(sorted(k.rstrip('_') for k in allowed))})")
        if self.type in ("choice", "exact", "contains", "regex") and not self.target:
            raise ValueError(f"a {self.type} scorer needs `target`: the column with the right answer")
        if self.type == "choice":
            choices = self.choices or ["A", "B", "C", "D"]
            if len(set(choices)) != len(choices) or any(not c.strip() for c in choices):
                raise ValueError("choices must be distinct, non-empty labels")
            object.__setattr__(self, "choices", choices)
        if self.type == "regex":
            if not self.pattern:
                raise ValueError("a regex scorer needs `pattern` (its first group, or the match, is the answer)")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from exc
        if self.type == "fields":
            if not self.fields:
                raise ValueError("a fields scorer needs `fields`: answer path → dataset column")
            for path in self.fields:
                if not path or any(not part for part in path.split(".")):
                    raise ValueError(f"fields: {path!r} is not a path (names joined by dots, e.g. address.zip)")
            if self.from_ is None:
                object.__setattr__(self, "from_", "tool" if self.tool else "json")
            if self.from_ != "tool" and self.tool:
                raise ValueError("`tool` applies only with `from: tool`")
        if self.type == "judge":
            if self.model is None or not self.rubric:
                raise ValueError("a judge scorer needs `model` (the grader) and `rubric`")
            if self.grades is not None and self.scale is not None:
                raise ValueError("give `grades` (labels, best first) or `scale` (1–N), not both")
            if self.grades is not None and (
                len(self.grades) < 2 or len(set(self.grades)) != len(self.grades) or any(not g.strip() for g in self.grades)
            ):
                raise ValueError("grades must be two or more distinct labels, best first")
            if self.grades is None and self.scale is None:
                object.__setattr__(self, "grades", ["pass", "fail"])
            if self.pass_grade is not None and self.pass_grade not in self.grade_labels:
                raise ValueError(f"pass_grade {self.pass_grade!r} is not one of the grades {', '.join(self.grade_labels)}")
        return self

    @property
    def grade_labels(self) -> list[str]:
        """A judge's grades, best first (a scale of N is N, N−1, …, 1)."""
        if self.scale is not None:
            return [str(g) for g in range(self.scale, 0, -1)]
        return list(self.grades or ())

    @property
    def field_specs(self) -> dict[str, FieldSpec]:
        return {
            path: spec if isinstance(spec, FieldSpec) else FieldSpec(column=spec)
            for path, spec in (self.fields or {}).items()
        }

    @property
    def judge_model(self) -> JudgeModelSpec | None:
        if self.model is None:
            return None
        return self.model if isinstance(self.model, JudgeModelSpec) else JudgeModelSpec(name=self.model)

    def columns(self) -> list[tuple[str, str]]:
        """(dataset column, what needs it) for every column this scorer reads."""
        found = [(self.target, "scorer.target")] if self.target else []
        found += [(spec.column, f"scorer.fields.{path}") for path, spec in self.field_specs.items()]
        if self.human:
            found.append((self.human, "scorer.human"))
        return found


class Experiment(_Strict):
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

    source: str = Field(default="<spec>", exclude=True)
    base_dir: str = Field(default=".", exclude=True)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("must be letters, digits, `.`, `_` or `-` (it names the report folder)")
        return value

    _cache = field_validator("cache", mode="before")(classmethod(lambda cls, v: _cache_word(v)))

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
        return self

    @property
    def dataset_path(self) -> Path:
        return (Path(self.base_dir) / self.dataset.path).resolve()

    def params_for(self, prompt: PromptSpec, model: ModelSpec) -> dict[str, Any]:
        """The parameters a model × prompt is sent with: the experiment's, then the prompt's,
        then the model's (later wins)."""
        return {**self.params, **prompt.params, **model.params}


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_BRANCH_MARKERS = ("list[", "dict[", "tagged-union[", "function-after[", "function-before[", "union[")


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union-branch markers ('str', 'list[...]', block tags) from an error location."""
    out: list[Any] = []
    for part in loc:
        if isinstance(part, str) and (part == "str" or part.startswith(_BRANCH_MARKERS)):
            continue
        if part in ("text", "image") and out and isinstance(out[-1], int):
            continue  # the discriminator tag of a content block
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
    elif names[:1] == ["scorer"]:
        model = ScorerSpec
    elif names[:1] == ["prompts"] and len(parent) == 2:
        model = PromptSpec
    elif "content" in names or "system" in names:
        model = ImageBlock if "image" in raw_loc else TextBlock
    elif "messages" in names:
        model = Turn
    return sorted(model.model_fields)


def _describe(error: Mapping[str, Any], source: str) -> str:
    loc = _clean_loc(tuple(error["loc"]))
    path = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        fields = [f for f in _fields_at(loc[:-1], tuple(error["loc"])) if f not in ("source", "base_dir")]
        return f"{source}: {path}: unknown key{_suggest(str(loc[-1]), fields)}"
    if error["type"] == "missing":
        return f"{source}: {path}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{source}: {path}: {message}"


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
        others = [e for e in errors[1:] if _clean_loc(tuple(e["loc"])) != top[: len(_clean_loc(tuple(e["loc"])))]]
        more = f" (and {len(others)} more problem{'s' if len(others) > 1 else ''})" if others else ""
        raise SpecError(first + more) from None
    for where, params in _all_params(experiment):
        for key in params:
            if key not in MESSAGES_PARAMS:
                raise SpecError(
                    f"{source}: {where}.{key}: not a Messages API parameter{_suggest(key, sorted(MESSAGES_PARAMS))}"
                )
        max_tokens = params.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
            raise SpecError(f"{source}: {where}.max_tokens: must be a whole number ≥ 1, got {max_tokens!r}")
    _check_answer_source(experiment, source)
    return experiment


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
