"""Everything that can be checked before a request is sent: the spec, the model table, the dataset,
the plan, the run folder, the keys; and the in-process simulator a `--sim` run talks to."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalrun.errors import SpecError
from evalrun.models import ModelTable
from evalrun.plan.dataset import Dataset, scan_dataset
from evalrun.plan.endpoints import ModelPlan, experiment_table, resolve_judge, resolve_models
from evalrun.plan.grid import KEY_TARGET, Plan
from evalrun.plan.judge import JudgePlan
from evalrun.send.client import check_api_key
from evalrun.spec import Experiment, load_spec, parse_spec
from evalrun.store.run_store import Learned, Store

__all__ = ["MAX_CELLS", "Prepared", "SpecInput", "api_keys", "lane_names", "load_experiment", "prepare", "simulator"]

# Total cells above which a spec is refused: a typo in `repeats` must not plan forever.
MAX_CELLS = 50_000_000

SpecInput = str | Path | Mapping[str, Any] | Experiment
"""What names an experiment: a spec file, an already-parsed spec (relative paths from the
current folder), or a validated `Experiment`."""


def load_experiment(spec: SpecInput) -> Experiment:
    """The validated experiment `spec` names (SpecError when it is wrong)."""
    if isinstance(spec, Experiment):
        return spec
    if isinstance(spec, Mapping):
        return parse_spec(dict(spec), source="<spec>", base_dir=Path.cwd())
    return load_spec(spec)


@dataclass(frozen=True)
class Prepared:
    """A validated experiment, its checked dataset, its plan, and where its run folder is."""

    experiment: Experiment
    dataset: Dataset
    table: ModelTable
    models: tuple[ModelPlan, ...]
    plan: Plan
    folder: Path
    sim: bool
    images_digest: str = ""
    judge: ModelPlan | None = None
    batch: bool = False

    @property
    def all_models(self) -> tuple[ModelPlan, ...]:
        """The graded models and the grader, if there is one."""
        return (*self.models, self.judge) if self.judge is not None else self.models

    def judge_plan(self, store: Store | None) -> JudgePlan | None:
        if self.judge is None:
            return None
        return JudgePlan(self.experiment, self.judge, self.table, store)

    def replan(self, learned: Mapping[str, Learned]) -> Plan:
        return Plan(self.experiment, self.dataset, self.models, self.table, learned=learned, batch=self.batch)

    def fingerprint(self, plan: Plan) -> str:
        return plan.fingerprint(self.images_digest)


def prepare(
    spec_path: SpecInput,
    *,
    out: str | Path | None = None,
    limit: int | None = None,
    sim: bool = False,
    environ: Mapping[str, str] | None = None,
    reports_root: Path = Path("reports"),
    check: bool = True,
    batch: bool | None = None,
) -> Prepared:
    """Load and check everything that can be checked without sending a request: the spec, the
    model table, the dataset (every line), every row's target and images, and the first body."""
    experiment = load_experiment(spec_path)
    table = experiment_table(experiment)
    spec = experiment.dataset
    limits = [x for x in (limit, spec.limit) if x is not None]
    dataset = scan_dataset(
        experiment.dataset_path,
        id_column=spec.id,
        limit=min(limits) if limits else None,
        sample=spec.sample,
        seed=spec.seed,
        encoding=spec.encoding,
        format=spec.format,
        split=spec.split,
    )
    env = os.environ if environ is None else environ
    models = resolve_models(experiment, table, sim=sim, environ=env)  # a swept entry is several configurations
    cells = dataset.count * len(models) * len(experiment.prompts) * experiment.repeats
    if cells > MAX_CELLS:
        raise SpecError(
            f"{experiment.source}: {cells:,} cells ({dataset.count:,} rows × {len(models)} model configurations × "
            f"{len(experiment.prompts)} prompts × {experiment.repeats} repeats) is more than evalrun plans "
            f"({MAX_CELLS:,}); check `repeats`, `dataset.limit` and the models' sweeps"
        )
    judge = resolve_judge(experiment, table, sim=sim, environ=env)
    batch = experiment.batch if batch is None else batch
    plan = Plan(experiment, dataset, models, table, batch=batch)
    images = plan.check() if check else ""
    folder = Path(out) if out else reports_root / experiment.name / plan.inputs_digest[:12]
    return Prepared(experiment, dataset, table, models, plan, folder, sim, images, judge, batch)


def api_keys(prepared: Prepared, environ: Mapping[str, str]) -> dict[str, str | None]:
    """Each model's key, from the environment only (never from a file). A missing key, or one
    that cannot be sent, is one clear error before any request."""
    keys: dict[str, str | None] = {}
    for model in prepared.all_models:
        variable = model.key_variable
        key = (environ.get(variable) or "").strip() or None
        if not model.info.needs_key:
            key = None  # its server takes no key: the one in the environment is not sent to it
        if key is None:
            if model.info.needs_key:
                raise SpecError(
                    f"{variable} is not set: {model.label} at {model.base_url} needs an API key "
                    f"(export {variable}=..., run with --sim to use the simulator, or declare "
                    f"`needs_key: false` for it under model_table if its server takes no key)"
                )
        else:
            problem = check_api_key(key)
            if problem:
                raise SpecError(f"{variable}: the key {problem}; it cannot be sent")
        keys[model.label] = key
    return keys


@contextlib.contextmanager
def simulator(prepared: Prepared, api_key: str) -> Iterator[str]:
    from evalrun.sim import AnswerKey, SimConfig, running_server

    experiment = prepared.experiment
    scorer = experiment.scorer
    fields = {path: spec.column for path, spec in scorer.field_specs.items()} if scorer.type == "fields" else None
    # The simulator finds a request's row by the row's text in the user turns: offer it only the
    # columns every prompt puts in a user turn (an assistant turn or a column some prompt leaves
    # out would hide the match), plus what it answers with.
    asked = _user_turn_columns(experiment)
    keep = asked | set((fields or {}).values()) | {experiment.dataset.id or ""}
    # What only the scorer reads (the target, a reference, an index, human grades) is no question
    # text: left among the row's cells it could become the text the row is matched by (a judge's
    # long reference answer did, and no reply was ever right). The gold answer is `KEY_TARGET`.
    scorer_only = {c for c, _ in scorer.columns()} - asked - set((fields or {}).values())
    # Rows as flat text (nested fields by dotted path), with the gold answer as the plan reads it.
    rows = [
        {k: v for k, v in row.items() if k not in scorer_only}
        for row in prepared.plan.answer_key_rows(keep)
    ]
    answers = AnswerKey.from_rows(rows, KEY_TARGET, id_column=experiment.dataset.id, fields=fields)
    with running_server(SimConfig(api_key=api_key, answers=answers, model_table=prepared.table)) as url:
        yield url


def _user_turn_columns(experiment: Experiment) -> set[str]:
    from evalrun.plan.render import Template
    from evalrun.spec import TextBlock

    per_prompt = []
    for prompt in experiment.prompts.values():
        columns: set[str] = set()
        for turn in prompt.messages:
            if turn.role not in ("user", "row"):  # "row": the row's own turns
                continue
            texts = [turn.content] if isinstance(turn.content, str) else [b.text for b in turn.content if isinstance(b, TextBlock)]
            for text in texts:
                columns.update(Template.parse(text, where="prompt").columns)
        per_prompt.append(columns)
    common = set.intersection(*per_prompt) if per_prompt else set()
    return common or set().union(*per_prompt)


def lane_names(models: tuple[ModelPlan, ...], keys: Mapping[str, str | None]) -> dict[str, str]:
    """Each model's lane: endpoint × key × model class, named as briefly as stays unambiguous."""
    key_numbers: dict[str | None, int] = {}
    idents = {}
    for m in models:
        number = key_numbers.setdefault(keys.get(m.label), len(key_numbers) + 1)
        idents[m.label] = (m.endpoint, number, m.info.family if m.info.known else m.spec.name)
    endpoints = {e for e, _, _ in idents.values()}
    several_keys = len({(e, k) for e, k, _ in idents.values()}) > len(endpoints)
    names = {}
    for label, (endpoint, number, family) in idents.items():
        name = family
        if len(endpoints) > 1:
            name += f"@{endpoint}"
        if several_keys:
            name += f" key{number}"
        names[label] = name
    return names


