"""The spec's `scorer`: one small pydantic model per scorer type, picked by `type`.

Each model takes only its own keys (`extra="forbid"`); the keys it does not take read as `None`
(class variables from the `_No*` mixins), so code reading any scorer (`scorer.target`,
`scorer.grade_labels`) needs no type test. `ScorerSpec` is the discriminated union;
`parse_scorer` validates a mapping into it (the stored settings use it too).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

__all__ = [
    "SCORER_KEYS",
    "AnswerMode",
    "ChoiceScorer",
    "ContainsScorer",
    "ExactScorer",
    "FieldSpec",
    "FieldsScorer",
    "JudgeModelSpec",
    "JudgeScorer",
    "RegexScorer",
    "ScorerSpec",
    "match_grade",
    "parse_scorer",
]

AnswerMode = Literal["auto", "prefill", "structured", "instruction"]
DEFAULT_CHOICES = ("A", "B", "C", "D")
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Strict(BaseModel):
    """A spec part: unknown keys are errors, values never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def api_version_text(value: Any) -> Any:
    """YAML reads a bare `2023-06-01` as a date: take it as the version string it names."""
    return value.isoformat() if isinstance(value, datetime.date) else value


def check_api_version(value: str | None) -> str | None:
    """An `anthropic-version` is a date, YYYY-MM-DD (whether the table knows it is checked by the plan)."""
    if value is not None and not _VERSION.match(value):
        raise ValueError(f"{value!r} is not an API version (a date such as 2023-06-01)")
    return value


def no_credentials(value: str | None) -> str | None:
    """A base URL may not carry a user name or password: evalrun records the URL in the store and
    the reports, and prints it."""
    if value is None:
        return value
    try:
        parts = urlsplit(value.strip())
        credentials = parts.username is not None or parts.password is not None
    except ValueError:
        return value  # not a URL at all: the plan's check names the problem
    if credentials:
        raise ValueError(
            "holds a user name or password (`user:…@`); evalrun records the base URL in the store and the "
            "reports, so credentials do not belong in it: give the key through api_key_env instead"
        )
    return value


class ModelEntry(Strict):
    """A model and where and how to ask it: what a graded model and a grader share."""

    name: str = Field(min_length=1)
    label: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    api_version: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    _version_text = field_validator("api_version", mode="before")(classmethod(lambda cls, v: api_version_text(v)))
    _version = field_validator("api_version")(classmethod(lambda cls, v: check_api_version(v)))
    _base_url = field_validator("base_url")(classmethod(lambda cls, v: no_credentials(v)))


class FieldSpec(Strict):
    """One field of a `fields` scorer: the dataset column with its gold value, and how to compare."""

    column: str
    tolerance: float = Field(default=0.0, ge=0, allow_inf_nan=False)  # relative, for numbers
    case_sensitive: bool | None = None


class JudgeModelSpec(ModelEntry):
    """The grader model of a `judge` scorer, with the same overrides a graded model may have
    (its answer mode is the grading stage's own)."""

    @property
    def display(self) -> str:
        return self.label or f"judge:{self.name}"


# -- the keys a scorer type does not take read as None ------------------------------------------
class _NoTarget:
    target: ClassVar[str | None] = None


class _NoChoices:
    choices: ClassVar[list[str] | None] = None
    target_index: ClassVar[str | None] = None
    options: ClassVar[str | None] = None


class _NoPattern:
    pattern: ClassVar[str | None] = None


class _NoCase:
    case_sensitive: ClassVar[bool] = False


class _NoFields:
    from_: ClassVar[Literal["tool", "json", "text"] | None] = None
    tool: ClassVar[str | None] = None
    fields: ClassVar[dict[str, str | FieldSpec] | None] = None


class _NoJudge:
    model: ClassVar[str | JudgeModelSpec | None] = None
    rubric: ClassVar[str | None] = None
    grades: ClassVar[list[str] | None] = None
    scale: ClassVar[int | None] = None
    human: ClassVar[str | None] = None
    pass_grade: ClassVar[str | None] = None
    answer_mode: ClassVar[AnswerMode | None] = None


_OLD_DEFAULTS: dict[str, Any] = {"case_sensitive": False}


class _Scorer(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True)
    # (key, the error when it is missing or empty), checked before the keys' own types
    required: ClassVar[tuple[tuple[str, str], ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _keys_of_this_type(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        kind = str(data.get("type"))
        own = set(SCORER_KEYS.get(kind, ())) | set(cls.model_fields)
        # The stored settings of earlier runs dump every scorer key, unset ones as null (or
        # case_sensitive: false): a key another type takes, left at its default, means nothing.
        data = {k: v for k, v in data.items() if k in own or v != _OLD_DEFAULTS.get(k)}
        strangers = sorted(set(data) - own)
        for key in strangers:
            if key in _ANY_SCORER_KEY:  # a key of another type; a typo is left to "unknown key"
                raise ValueError(f"`{key}` does not apply to a {kind} scorer (it takes {', '.join(SCORER_KEYS[kind])})")
        if strangers:
            return data  # a typo explains a missing key better than "needs `target`" would
        for key, message in cls.required:
            if not data.get(key) and not data.get(key.rstrip("_")):
                raise ValueError(message)
        return data

    @property
    def grade_labels(self) -> list[str]:
        """A judge's grades, best first; no other scorer has grades."""
        return []

    @property
    def field_specs(self) -> dict[str, FieldSpec]:
        """A fields scorer's fields by answer path; no other scorer has fields."""
        return {}

    @property
    def judge_model(self) -> JudgeModelSpec | None:
        """A judge's grader model; no other scorer has one."""
        return None

    def columns(self) -> list[tuple[str, str]]:
        """(dataset column, what needs it) for every column this scorer reads."""
        target = getattr(self, "target", None)
        return [(target, "scorer.target")] if target else []


class ChoiceScorer(_Scorer, _NoPattern, _NoFields, _NoJudge):
    """The reply names one of `choices` (A–D by default); right when it is the target's."""

    type: Literal["choice"]
    target: str | None = Field(default=None, min_length=1)
    # the field holding a 0-based index into the options (2 → C), instead of `target`
    target_index: str | None = Field(default=None, min_length=1)
    # the field holding each row's list of options (set from a `{field|options}` placeholder);
    # a row's choices are then as many letters as its list has items
    options: str | None = Field(default=None, min_length=1)
    choices: list[str] = Field(default_factory=lambda: list(DEFAULT_CHOICES))
    case_sensitive: bool = False

    @model_validator(mode="after")
    def _distinct(self) -> ChoiceScorer:
        if not self.choices:
            raise ValueError("choices is empty: list the labels a reply may pick (or leave it out for A, B, C, D)")
        if len(set(self.choices)) != len(self.choices) or any(not c.strip() for c in self.choices):
            raise ValueError("choices must be distinct, non-empty labels")
        return self

    @model_validator(mode="after")
    def _one_target(self) -> ChoiceScorer:
        if not self.target and not self.target_index:
            raise ValueError("a choice scorer needs `target`: the column with the right answer")
        if self.target and self.target_index:
            raise ValueError("give `target` (the right letter) or `target_index` (its 0-based index), not both")
        return self

    def columns(self) -> list[tuple[str, str]]:
        found = super().columns()
        found += [(self.target_index, "scorer.target_index")] if self.target_index else []
        return found + ([(self.options, "scorer.options")] if self.options else [])


class ExactScorer(_Scorer, _NoChoices, _NoPattern, _NoFields, _NoJudge):
    """The reply equals the target (whitespace and, unless case_sensitive, case aside)."""

    required = (("target", "a exact scorer needs `target`: the column with the right answer"),)
    type: Literal["exact"]
    target: str = Field(min_length=1)
    case_sensitive: bool = False


class ContainsScorer(_Scorer, _NoChoices, _NoPattern, _NoFields, _NoJudge):
    """The reply contains the target."""

    required = (("target", "a contains scorer needs `target`: the column with the right answer"),)
    type: Literal["contains"]
    target: str = Field(min_length=1)
    case_sensitive: bool = False


class RegexScorer(_Scorer, _NoChoices, _NoFields, _NoJudge):
    """`pattern`'s first group (or the whole match) in the reply is the answer, compared with the target."""

    required = (
        ("target", "a regex scorer needs `target`: the column with the right answer"),
        ("pattern", "a regex scorer needs `pattern` (its first group, or the match, is the answer)"),
    )
    type: Literal["regex"]
    target: str = Field(min_length=1)
    pattern: str = Field(min_length=1)
    case_sensitive: bool = False

    @model_validator(mode="after")
    def _compiles(self) -> RegexScorer:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"pattern is not a valid regular expression: {exc}") from exc
        return self


class FieldsScorer(_Scorer, _NoTarget, _NoChoices, _NoPattern, _NoJudge):
    """An answer object (a tool call, the reply as JSON, or a JSON object in the text) compared
    field by field with dataset columns."""

    required = (("fields", "a fields scorer needs `fields`: answer path → dataset column"),)
    type: Literal["fields"]
    from_: Literal["tool", "json", "text"] | None = Field(default=None, alias="from")
    tool: str | None = None
    fields: dict[str, str | FieldSpec]
    case_sensitive: bool = False

    @model_validator(mode="after")
    def _paths(self) -> FieldsScorer:
        if not self.fields:
            raise ValueError("a fields scorer needs `fields`: answer path → dataset column")
        for path in self.fields:
            if not path or any(not part for part in path.split(".")):
                raise ValueError(f"fields: {path!r} is not a path (names joined by dots, e.g. address.zip)")
        if self.from_ is None:
            object.__setattr__(self, "from_", "tool" if self.tool else "json")
        if self.from_ != "tool" and self.tool:
            raise ValueError("`tool` applies only with `from: tool`")
        return self

    @property
    def field_specs(self) -> dict[str, FieldSpec]:
        return {path: spec if isinstance(spec, FieldSpec) else FieldSpec(column=spec) for path, spec in self.fields.items()}

    def columns(self) -> list[tuple[str, str]]:
        return [(spec.column, f"scorer.fields.{path}") for path, spec in self.field_specs.items()]


class JudgeScorer(_Scorer, _NoChoices, _NoPattern, _NoCase, _NoFields):
    """A grader model grades the reply with `rubric` on `grades` (best first) or a 1–`scale`."""

    required = (
        ("model", "a judge scorer needs `model` (the grader) and `rubric`"),
        ("rubric", "a judge scorer needs `model` (the grader) and `rubric`"),
    )
    type: Literal["judge"]
    model: str | JudgeModelSpec
    rubric: str = Field(min_length=1)
    target: str | None = None
    grades: list[str] | None = None
    scale: int | None = Field(default=None, ge=2, le=100)
    human: str | None = None
    pass_grade: str | None = None
    answer_mode: AnswerMode | None = None

    @model_validator(mode="after")
    def _scale(self) -> JudgeScorer:
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
        """The grades, best first (a scale of N is N, N−1, …, 1)."""
        if self.scale is not None:
            return [str(g) for g in range(self.scale, 0, -1)]
        return list(self.grades or ())

    @property
    def judge_model(self) -> JudgeModelSpec:
        return self.model if isinstance(self.model, JudgeModelSpec) else JudgeModelSpec(name=self.model)

    def columns(self) -> list[tuple[str, str]]:
        found = super().columns()
        return [*found, (self.human, "scorer.human")] if self.human else found


def match_grade(value: Any, labels: Sequence[str]) -> str | None:
    """The label of `labels` a grader (or a human) gave, however it was written ("Pass", 4.0);
    None when it is none of them."""
    if value is None:
        return None
    text = str(value).strip().strip("\"'*").strip()
    folded = {label.casefold(): label for label in labels}
    if text.casefold() in folded:
        return folded[text.casefold()]
    try:
        number = float(text)
    except ValueError:
        return None
    for label in labels:
        try:
            if float(label) == number:
                return label
        except ValueError:
            continue
    return None


ScorerSpec = Annotated[
    ChoiceScorer | ExactScorer | ContainsScorer | RegexScorer | FieldsScorer | JudgeScorer,
    Field(discriminator="type"),
]
SCORER_TYPES: dict[str, type[_Scorer]] = {
    "choice": ChoiceScorer, "exact": ExactScorer, "contains": ContainsScorer,
    "regex": RegexScorer, "fields": FieldsScorer, "judge": JudgeScorer,
}  # fmt: skip
# The keys each type takes, as a user writes them (for "does not apply" messages).
SCORER_KEYS: dict[str, list[str]] = {
    name: sorted((f.alias or key) for key, f in model.model_fields.items()) for name, model in SCORER_TYPES.items()
}
_ANY_SCORER_KEY = {key for keys in SCORER_KEYS.values() for key in keys}
_ADAPTER: TypeAdapter[ScorerSpec] = TypeAdapter(ScorerSpec)


def parse_scorer(data: Any) -> ScorerSpec:
    """A scorer from a mapping (a spec's `scorer`, or the stored settings); pydantic's
    ValidationError when it is not one."""
    return _ADAPTER.validate_python(data)
