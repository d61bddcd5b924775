"""The grid: models × prompts × rows × repeats → a stream of cells and the requests they need.

Everything that is the same for every row is decided once per model × prompt (a `Variant`):
the answer mode and the parameters, from the model table and from what earlier responses
taught us, so that nothing a model refuses is ever sent. Rows are then streamed from the
dataset and each cell's request body is built, keyed and handed on; nothing is held per cell.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from evalrun import __version__
from evalrun.content import placeholder_field
from evalrun.errors import DatasetError, TemplateError
from evalrun.models import SAMPLING_PARAMS, ModelTable
from evalrun.plan.caching import CachePoint, apply_cache_point, cache_note, plan_cache_point
from evalrun.plan.conversation import check_order
from evalrun.plan.dataset import Dataset, Row
from evalrun.plan.endpoints import ModelPlan
from evalrun.plan.files import has_files
from evalrun.plan.gold import check_gold
from evalrun.plan.modes import THINKING_MIN_TOKENS, AnswerMode, choose_mode
from evalrun.plan.paths import FieldMissing, RowValueError, as_list, flatten, letters, lookup, text_of
from evalrun.plan.render import (
    Template,
    fill_template,
    key_view,
    prompt_placeholders,
    prompt_templates,
    render_system,
    render_tools,
    render_turns,
    tools_fields,
)
from evalrun.plan.thinking import check_reasoning, thinking_of
from evalrun.results.scoring import STRIP as _TARGET_STRIP
from evalrun.spec import DocumentBlock, Experiment, ImageBlock, PromptSpec, RowTurns, Turn
from evalrun.store.records import CellRecord, RequestRecord, RowRecord
from evalrun.store.run_store import Learned
from evalrun.tokens import estimate_input_tokens

__all__ = ["Plan", "PlanChunk", "Variant", "adapt_params", "canonical_json", "check_columns", "request_key"]

# The answer key's column for a row's gold answer (as the plan reads it: a choice's letter).
KEY_TARGET = "\x00target"
# Bumped when the way bodies or keys are built changes, so a stored plan is rebuilt.
PLAN_FORMAT = 2


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(body_json: str, *, repeat: int, endpoint: str, api_version: str) -> str:
    """What is paid for: the same body to the same endpoint under the same API version and
    repeat index is the same request, whatever cell asks for it. `body_json` is the canonical
    JSON of the body as the key sees it (image files by content hash)."""
    text = (
        f'{{"api_version":{json.dumps(api_version, ensure_ascii=False)},"body":{body_json},'
        f'"endpoint":{json.dumps(endpoint, ensure_ascii=False)},"repeat":{repeat}}}'
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class PlanChunk:
    """A piece of the plan, written to the store in one transaction."""

    rows: list[RowRecord] = field(default_factory=list)
    cells: list[CellRecord] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    links: list[tuple[int, str]] = field(default_factory=list)  # (cell seq, its grading request)
    last_seq: int = -1


@dataclass(frozen=True)
class Variant:
    """One model × prompt variant: how every row of it is asked."""

    model: ModelPlan
    prompt_name: str
    prompt: PromptSpec
    mode: AnswerMode
    params: dict[str, Any]
    notes: tuple[str, ...] = ()
    cache: CachePoint | None = None

    @property
    def gate(self) -> str:
        """The group whose first request goes alone: the cached prefix, or the prompt (a probe)."""
        return self.cache.key if self.cache is not None else self.prompt_name


def adapt_params(
    params: dict[str, Any], model: ModelPlan, table: ModelTable, learned: Learned, mode: AnswerMode
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
    if "max_tokens" not in params:
        params["max_tokens"] = mode.default_max_tokens
    elif params["max_tokens"] < mode.min_max_tokens:
        params["max_tokens"] = mode.min_max_tokens
    if model.info.thinking == "always" and params["max_tokens"] < THINKING_MIN_TOKENS:
        notes.append(f"thinks before every answer: max_tokens raised to {THINKING_MIN_TOKENS}")
        params["max_tokens"] = THINKING_MIN_TOKENS
    return params, notes


def _normalize_prompt(prompt: PromptSpec) -> PromptSpec:
    """A final assistant turn written in `messages` is the same thing as `prefill`."""
    last = prompt.messages[-1]
    if isinstance(last, Turn) and last.role == "assistant" and isinstance(last.content, str):
        return prompt.model_copy(update={"messages": prompt.messages[:-1], "prefill": last.content})
    return prompt


def _placeholders(experiment: Experiment) -> Iterator[tuple[str, str]]:
    """(field path, where the spec names it) of every placeholder in the prompts and their tools."""
    for name, prompt in experiment.prompts.items():
        yield from ((column, where) for column, where in prompt_placeholders(prompt, where=f"prompts.{name}").items())
        for model in experiment.models:
            tools = experiment.params_for(prompt, model).get("tools")
            yield from ((field, f"prompts.{name}.params.tools") for field in tools_fields(tools))


def check_columns(experiment: Experiment, dataset: Dataset) -> None:
    """Every placeholder and every field the scorer reads must be in the dataset: checked first.
    A nested path (`doc.title`) is checked against the objects the file holds; list items
    (`choices.0`) row by row."""
    for column, where in _placeholders(experiment):
        problem = dataset.missing_field(column)
        if problem is not None:
            raise TemplateError(
                f"{experiment.source}: {where}: placeholder {{{column}}} {problem}; write {{{{ }}}} for literal braces"
            )
    for column, what in experiment.scorer.columns():
        problem = dataset.missing_field(column)
        if problem is not None:
            raise DatasetError(f"{dataset.path}: {what} column {column!r} {problem.replace('is not a column of', 'is not in the file', 1)}")
    if experiment.scorer.type == "judge":
        rubric = Template.parse(experiment.scorer.rubric or "", where=f"{experiment.source}: scorer.rubric")
        for column in rubric.columns:
            if column not in ("response", "target") and dataset.missing_field(column) is not None:
                raise TemplateError(
                    f"{experiment.source}: scorer.rubric: placeholder {{{column}}} is neither {{response}}, "
                    f"{{target}} nor a field of {dataset.path.name} (fields: {', '.join(dataset.columns)})"
                )
    cluster = experiment.dataset.cluster
    if cluster is not None:
        problem = dataset.missing_field(cluster)
        if problem is not None:
            raise DatasetError(f"{dataset.path}: dataset.cluster column {cluster!r} {problem}")


@dataclass
class Plan:
    """Everything decided before the first row; cells and rows are streamed from the dataset."""

    experiment: Experiment
    dataset: Dataset
    models: tuple[ModelPlan, ...]
    table: ModelTable
    learned: Mapping[str, Learned] = field(default_factory=dict)
    batch: bool = False
    variants: tuple[Variant, ...] = field(init=False)
    warnings: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        check_columns(self.experiment, self.dataset)
        self.learned = dict(self.learned)
        self.choices = tuple(self.experiment.scorer.choices or ())
        self._labels = {c.upper(): c for c in self.choices}
        self.image_dir = self.experiment.dataset_path.parent
        self._prompts = {name: _normalize_prompt(p) for name, p in self.experiment.prompts.items()}
        variants: list[Variant] = []
        warnings: list[str] = []
        for model in self.models:
            warnings.extend(model.warnings)
            seen: set[str] = set()
            for name, prompt in self._prompts.items():
                variant = self._variant(model, name, prompt)
                variants.append(variant)
                for note in variant.notes:
                    if note not in seen:
                        seen.add(note)
                        warnings.append(f"{model.label}: {note}")
        first = next(self.dataset.iter_rows(), None)
        if first is not None:
            variants = [self._with_cache(v, first, warnings) for v in variants]
        self.variants = tuple(variants)
        self.warnings = tuple(dict.fromkeys(warnings))  # one endpoint shared by several models: said once

    def _with_cache(self, variant: Variant, first: Row, warnings: list[str]) -> Variant:
        mode = variant.prompt.cache or self.experiment.cache
        body, info = self.body(variant, first), variant.model.info
        point = plan_cache_point(mode, variant.prompt, variant.params, body, min_tokens=info.cache_min_tokens,
                                 batch=self.batch, model=variant.model.label)  # fmt: skip
        note = cache_note(mode, variant.prompt, variant.params, body, min_tokens=info.cache_min_tokens,
                          batch=self.batch, model=variant.model.label)  # fmt: skip
        if note is not None:
            warnings.append(f"{variant.model.label} × {variant.prompt_name}: {note}")
        return dataclasses.replace(variant, cache=point) if point is not None else variant

    # -- decisions per model × prompt ---------------------------------------------------------
    def _variant(self, model: ModelPlan, name: str, prompt: PromptSpec) -> Variant:
        experiment = self.experiment
        knowledge = self.learned.get(model.label, Learned())
        forced = model.spec.answer_mode or prompt.answer_mode or experiment.answer_mode
        params = model.params_for(experiment, prompt)
        thinks = thinking_of(params) is not None
        mode = choose_mode(
            forced=forced,
            has_prefill=prompt.prefill is not None,
            refuses_prefill=model.info.prefill is False or knowledge.prefill_refused,
            multiple_choice=experiment.scorer.type == "choice",
            model_label=model.label,
            source=experiment.source,
            thinking=thinks,
        )
        explicit_max_tokens = "max_tokens" in params
        params, notes = adapt_params(params, model, self.table, knowledge, mode)
        params, more = check_reasoning(
            params, info=model.info, mode=mode, explicit_max_tokens=explicit_max_tokens,
            where=f"{experiment.source}: {model.entry or model.label}",
        )  # fmt: skip
        notes += more
        if prompt.prefill is not None and mode.name == "plain":
            why = "thinks (the API refuses prefill with thinking)" if thinks else "does not accept prefill"
            notes.append(f"{why} and the scorer is not `choice`: the prefill is dropped")
        return Variant(model=model, prompt_name=name, prompt=prompt, mode=mode, params=params, notes=tuple(notes))

    @property
    def modes(self) -> dict[tuple[str, str], str]:
        """(model label, prompt) → answer mode name."""
        return {(v.model.label, v.prompt_name): v.mode.name for v in self.variants}

    @property
    def params(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(v.model.label, v.prompt_name): v.params for v in self.variants}

    @property
    def total_cells(self) -> int:
        return self.dataset.count * len(self.variants) * self.experiment.repeats

    # -- rows ------------------------------------------------------------------------------
    def row_choices(self, row: Row) -> tuple[str, ...]:
        """The choice labels of one row: as many letters as its options list has items when the
        scorer reads `options`, else the scorer's choices."""
        options = self.experiment.scorer.options
        if options is None or self.experiment.scorer.type != "choice":
            return self.choices
        return letters(len(as_list(lookup(row.values, options), path=options)), path=options)

    def target(self, row: Row) -> str:
        """The row's gold answer as scoring reads it (a choice label for a choice scorer)."""
        try:
            return self._target(row)
        except RowValueError as exc:
            raise DatasetError(f"{self.dataset.where(row)}: {exc}") from None

    def _target(self, row: Row) -> str:
        scorer = self.experiment.scorer
        if scorer.type == "fields":
            gold = {path: text_of(lookup(row.values, spec.column)) for path, spec in scorer.field_specs.items()}
            return json.dumps(gold, ensure_ascii=False, sort_keys=True)
        if scorer.type == "choice":
            return self._choice_target(row)
        return text_of(lookup(row.values, scorer.target)) if scorer.target is not None else ""

    def _choice_target(self, row: Row) -> str:
        scorer = self.experiment.scorer
        choices = self.row_choices(row)
        if scorer.target_index is not None:
            raw = lookup(row.values, scorer.target_index)
            index = _index(raw)
            if index is None or not 0 <= index < len(choices):
                raise RowValueError(
                    f"field {scorer.target_index!r} (scorer.target_index) holds {raw!r}, which is not a 0-based "
                    f"index into the {len(choices)} options ({', '.join(choices)})"
                )
            return choices[index]
        assert scorer.target is not None
        raw = text_of(lookup(row.values, scorer.target))
        target = {c.upper(): c for c in choices}.get(raw.strip(_TARGET_STRIP).upper())
        if target is None:
            raise RowValueError(f"column {scorer.target!r} holds {raw!r}, which is not one of the choices {', '.join(choices)}")
        return target

    def cluster(self, row: Row) -> str | None:
        column = self.experiment.dataset.cluster
        if not column:
            return None
        try:
            cluster = text_of(lookup(row.values, column)).strip()
        except FieldMissing as exc:
            raise DatasetError(f"{self.dataset.where(row)}: {exc}") from None
        if not cluster:
            raise DatasetError(f"{self.dataset.where(row)}: column {column!r} (the cluster) is empty")
        return cluster

    def row_record(self, row: Row) -> RowRecord:
        return RowRecord(
            row_seq=row.seq,
            row_id=row.id,
            line=row.line,
            cluster=self.cluster(row),
            target=self.target(row),
            values_json=json.dumps(row.values, ensure_ascii=False, default=str),
        )

    def answer_key_rows(self, keep: set[str]) -> Iterator[dict[str, str]]:
        """Each row as flat text for the simulator's answer key: the leaves of the fields in
        `keep` (a nested field by its dotted path) and the gold answer under `KEY_TARGET`."""
        for row in self.dataset.iter_rows():
            flat = {
                path: text
                for path, text in flatten(row.values)
                if not keep - {""} or any(path == k or path.startswith(k + ".") for k in keep)
            }
            flat[KEY_TARGET] = self.target(row)
            yield flat

    def check(self) -> str:
        """Check every selected row before anything is sent (targets, clusters, fields, row
        conversations, images and documents) and return a digest of the files they use, for
        the fingerprint."""
        digest = hashlib.sha256()
        flat = self.dataset.reader is None or self.dataset.reader.flat
        rendered = [
            (n, p) for n, p in self._prompts.items()
            if not flat or _renders_per_row(p, f"prompts.{n}")
            or any(path not in self.dataset.columns for path in prompt_placeholders(p, where=f"prompts.{n}"))
        ]  # fmt: skip
        tooled = [v for v in self.variants if tools_fields(v.params.get("tools"))]
        for row in self.dataset.iter_rows():
            self.target(row)
            self.cluster(row)
            check_gold(self.experiment, row, self.dataset.where(row))
            for name, prompt in rendered:
                _, turns = self._render(name, prompt, row)
                for message in turns:
                    for block in message["content"] if isinstance(message["content"], list) else ():
                        source = block.get("source") if isinstance(block, dict) else None
                        if isinstance(source, dict) and "sha256" in source:
                            digest.update(source["sha256"].encode())
            for variant in tooled:
                self._tools(variant, row)
        return digest.hexdigest()

    # -- bodies ----------------------------------------------------------------------------
    def _render(self, name: str, prompt: PromptSpec, row: Row) -> tuple[Any, list[dict[str, Any]]]:
        """(system, messages) of one prompt for one row; a row value that does not fit is one
        DatasetError naming the row, the prompt and the field."""
        where = f"prompts.{name}"
        row_where = self.dataset.where(row)
        try:
            system = render_system(prompt, row.values, where=where)
            messages = render_turns(prompt.messages, row.values, base_dir=self.image_dir, where=where, row_where=row_where)
            check_order(messages)
        except RowValueError as exc:
            raise DatasetError(f"{row_where}: {where}: {exc}") from None
        return system, messages

    def _tools(self, variant: Variant, row: Row) -> Any:
        try:
            return render_tools(variant.params.get("tools"), row.values)
        except RowValueError as exc:
            raise DatasetError(f"{self.dataset.where(row)}: prompts.{variant.prompt_name}.params.tools: {exc}") from None

    def body(self, variant: Variant, row: Row) -> dict[str, Any]:
        """The request body for one row of one variant (image and document files as references)."""
        prompt, where = variant.prompt, f"prompts.{variant.prompt_name}"
        body: dict[str, Any] = {"model": variant.model.request_model, "max_tokens": variant.params["max_tokens"]}
        system, messages = self._render(variant.prompt_name, prompt, row)
        if system is not None:
            body["system"] = system
        prefill = None
        try:
            if prompt.prefill is not None:
                prefill = fill_template(prompt.prefill, row.values, where=f"{where}.prefill").rstrip() or None
            choices = self.row_choices(row)
        except RowValueError as exc:
            raise DatasetError(f"{self.dataset.where(row)}: {where}: {exc}") from None
        messages, params = variant.mode.shape(messages, variant.params, prefill=prefill, choices=choices)
        body["messages"] = messages
        for key, value in params.items():
            if key != "max_tokens":
                body[key] = self._tools(variant, row) if key == "tools" else value
        if variant.cache is not None:
            body = apply_cache_point(body, variant.cache)
        return body

    def keyed(self, variant: Variant, body: dict[str, Any], repeat: int) -> tuple[str, str]:
        """(request key, stored body JSON) of a body."""
        body_json = canonical_json(body)
        key_json = canonical_json(key_view(body)) if has_files(body) else body_json
        model = variant.model
        return request_key(key_json, repeat=repeat, endpoint=model.endpoint, api_version=model.api_version), body_json

    def first_body(self) -> dict[str, Any] | None:
        row = next(self.dataset.iter_rows(), None)
        return self.body(self.variants[0], row) if row is not None and self.variants else None

    # -- the stream --------------------------------------------------------------------------
    def rows(self) -> Iterator[RowRecord]:
        for row in self.dataset.iter_rows():
            yield self.row_record(row)

    def cells(self, **options: Any) -> Iterator[tuple[CellRecord, RequestRecord]]:
        """Every cell with its request, one by one (see `chunks` for the options)."""
        for chunk in self.chunks(**options):
            yield from zip(chunk.cells, chunk.requests, strict=True)

    def chunks(
        self,
        *,
        models: set[str] | None = None,
        after_seq: int = -1,
        until_seq: int | None = None,
        size: int = 512,
        first_size: int = 32,
    ) -> Iterator[PlanChunk]:
        """The plan in chunks, row by row across models and prompts, so that a run stopped
        part-way has covered the same rows for every model and prompt.

        `seq` is a cell's position in the whole grid. Only cells of `models`, after `after_seq`
        and up to `until_seq` are built; a chunk also carries the rows it reaches first (with
        the first repeat). The first chunk is small, so that the first request leaves at once.
        """
        variants = self.variants
        width = len(variants)
        rows_count = self.dataset.count
        chunk = PlanChunk()
        limit = first_size
        for repeat in range(self.experiment.repeats):
            if (repeat + 1) * rows_count * width - 1 <= after_seq:
                continue
            for row in self.dataset.iter_rows():
                base = (repeat * rows_count + row.seq) * width
                if until_seq is not None and base > until_seq:
                    if chunk.cells or chunk.rows:
                        yield chunk
                    return
                if base + width - 1 <= after_seq:
                    continue
                if repeat == 0:
                    chunk.rows.append(self.row_record(row))
                for index, variant in enumerate(variants):
                    seq = base + index
                    if seq <= after_seq or (until_seq is not None and seq > until_seq):
                        continue
                    if models is not None and variant.model.label not in models:
                        continue
                    cell, request = self._cell(variant, row, repeat, seq)
                    chunk.cells.append(cell)
                    chunk.requests.append(request)
                    chunk.last_seq = seq
                if len(chunk.cells) >= limit:
                    yield chunk
                    chunk = PlanChunk()
                    limit = size
        if chunk.cells or chunk.rows:
            yield chunk

    def _cell(self, variant: Variant, row: Row, repeat: int, seq: int) -> tuple[CellRecord, RequestRecord]:
        body = self.body(variant, row)
        key, body_json = self.keyed(variant, body, repeat)
        max_tokens = int(body["max_tokens"])
        model = variant.model
        return (
            CellRecord(
                seq=seq,
                model=model.label,
                model_id=model.spec.name,
                prompt=variant.prompt_name,
                row_seq=row.seq,
                row_id=row.id,
                repeat=repeat,
                answer_mode=variant.mode.name,
                request_key=key,
                max_tokens=max_tokens,
            ),
            RequestRecord(
                key=key,
                first_seq=seq,
                model=model.label,
                max_tokens=max_tokens,
                input_tokens=estimate_input_tokens(body),
                body_json=body_json,
                gate=variant.gate,
            ),
        )

    # -- identity ------------------------------------------------------------------------------
    @cached_property
    def inputs_digest(self) -> str:
        """Everything the grid depends on except what was learned: names the run folder, so the
        same command lands in the same folder and resumes."""
        experiment = self.experiment
        digest = hashlib.sha256()
        digest.update(f"plan-format {PLAN_FORMAT}\n".encode())
        digest.update(canonical_json(experiment.model_dump(mode="json")).encode())
        dataset = self.dataset
        digest.update(
            canonical_json(
                {"digest": dataset.digest, "count": dataset.count, "limit": dataset.limit,
                 "chosen": sorted(dataset.chosen) if dataset.chosen is not None else None}
            ).encode()
        )  # fmt: skip
        for model in self.models:
            digest.update(
                canonical_json(
                    {"label": model.label, "id": model.request_model, "endpoint": model.endpoint,
                     "api_version": model.api_version, "info": _canonical(dataclasses.asdict(model.info))}
                ).encode()
            )  # fmt: skip
        digest.update(canonical_json({k: sorted(v) for k, v in self.table.api_versions.items()}).encode())
        digest.update(b"batch" if self.batch else b"realtime")
        return digest.hexdigest()

    def fingerprint(self, images_digest: str) -> str:
        """The stored plan is this plan: same inputs, images, learned capabilities and evalrun."""
        learned = {m: [k.prefill_refused, sorted(k.refused_params)] for m, k in sorted(self.learned.items())}
        text = canonical_json([self.inputs_digest, images_digest, learned, __version__])
        return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """Sets as sorted lists: a set's order (and so its repr) changes with the process's hash seed,
    and the run folder's name must not."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((_canonical(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _index(value: Any) -> int | None:
    """A 0-based index from a number or its text (a CSV cell), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _renders_per_row(prompt: PromptSpec, name: str) -> bool:
    """Whether a variant over a CSV needs each row rendered to be checked: lettered options, a
    row's own turns or system prompt, or files (plain columns were checked with the header)."""
    if any(p.filter for t in prompt_templates(prompt, where=name) for p in t.placeholders):
        return True
    if isinstance(prompt.system, str) and placeholder_field(prompt.system) is not None:
        return True
    return any(
        isinstance(turn, RowTurns)
        or any(isinstance(b, ImageBlock | DocumentBlock) and b.path is not None for b in turn.content)
        for turn in prompt.messages
        if isinstance(turn, RowTurns) or not isinstance(turn.content, str)
    )


def folder_name(plan: Plan) -> str:
    return plan.inputs_digest[:12]
