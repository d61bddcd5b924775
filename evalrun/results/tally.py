"""One streaming pass over a run's cells: score each one, and tally what the reports need.

Nothing here holds the cells: each chunk read from the store is scored, turned into result
records for the writers, and folded into per-variant tallies (counts, tokens, cost, latencies)
and per-row arrays (the sum and count of correct answers per dataset row), which is all the
statistics need. A second pass, grouped by row, runs only when there are repeats (majority
vote and repeat consistency).
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evalrun.cost import cost_usd
from evalrun.models import Price
from evalrun.results.judge import match_grade
from evalrun.results.reasoning import TRUNCATED_NOTE, Reasoning, reasoning_of
from evalrun.results.reviews import cell_key, human_grade, human_score
from evalrun.results.scoring import Grader, Reply, Score, Scorer, make_scorer
from evalrun.spec import ScorerSpec, parse_scorer
from evalrun.store.records import reply_shown
from evalrun.store.reviews import CellKey, Review

__all__ = [
    "RESULT_COLUMNS",
    "ResultsPass",
    "VariantTally",
    "diagnostics_frame",
    "repeat_pass",
    "result_columns",
    "run_variants",
    "stored_rows",
]

RESULT_COLUMNS = [
    "model", "model_id", "prompt", "row_id", "repeat", "cluster", "answer_mode", "response_text", "answer",
    "target", "correct", "correct_auto", "score_source", "score", "status", "stop_reason", "input_tokens",
    "output_tokens", "thinking_tokens", "thinking_tokens_source", "cache_creation_input_tokens",
    "cache_read_input_tokens", "cost_usd", "shared_by", "source", "latency_s", "attempts", "error",
]  # fmt: skip
TOKEN_COLUMNS = ["input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"]
ANSWERED = ("ok", "unparsed", "refused")


def result_columns(scorer: ScorerSpec, extra: Sequence[str] = ()) -> list[str]:
    """The results.csv columns for a scorer (field scorers add one column per field)."""
    columns = list(RESULT_COLUMNS)
    at = columns.index("score") + 1
    return columns[:at] + list(extra) + columns[at:]


@dataclass
class VariantTally:
    """Everything the summary needs about one model × prompt, without holding its cells."""

    model: str
    prompt: str
    rows: int
    modes: set[str] = field(default_factory=set)
    cells: int = 0
    ok: int = 0
    unparsed: int = 0
    refused: int = 0  # stop_reason refusal: answered, never correct
    truncated_thinking: int = 0  # unparsed because max_tokens cut the reply while thinking
    thinking_tokens: int = 0  # summed over answered cells (each cell its request's figure)
    errors: int = 0
    pending: int = 0
    correct: int = 0
    # Tokens and cost of the requests behind the cells; a request shared by k cells counts 1/k
    # in each, so sums over cells or variants add up to what was paid.
    tokens: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TOKEN_COLUMNS, 0.0))
    usage_missing: int = 0
    cost_usd: float = 0.0
    cost_unknown: int = 0
    paid_usd: float = 0.0
    # Priced usage summed by (service tier, sharing): (input, output, cache writes, cache reads,
    # 1 h cache writes). Prices are linear in tokens, so the savings below are priced once at
    # the end instead of twice a cell.
    price: Price | None = None
    priced_usage: dict[tuple[str | None, int], list[int]] = field(default_factory=dict)
    from_cache: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    stop_reasons: Counter[str] = field(default_factory=Counter)
    error_kinds: Counter[str] = field(default_factory=Counter)
    # (status, answer, target, stop_reason) → cells: the diagnostics tables, weighted. Answers and
    # targets are kept for multiple choice only, so the counter stays small.
    outcomes: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    field_correct: Counter[str] = field(default_factory=Counter)
    # A judge scorer: the grader's tokens and cost, and (judge grade, human grade) pairs.
    judge_tokens: dict[str, float] = field(default_factory=lambda: {"input": 0.0, "output": 0.0})
    judge_cost_usd: float = 0.0
    agreement: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Where the human grades of `agreement` came from: "column" (the dataset) or "review" (the viewer).
    agreement_sources: Counter[str] = field(default_factory=Counter)
    # Cells scored by a human review, and how many of them the human scored differently.
    reviewed: int = 0
    overridden: int = 0
    row_sum: np.ndarray = field(init=False)
    row_n: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.row_sum = np.zeros(self.rows, dtype=np.float64)
        self.row_n = np.zeros(self.rows, dtype=np.int32)

    @property
    def answered(self) -> int:
        return self.ok + self.unparsed + self.refused

    @property
    def uncached_usd(self) -> float:
        """The priced usage without prompt caching (every cached token at the input price)."""
        return sum(
            cost_usd(self.price, input_tokens=inp + writes + reads, output_tokens=out, service_tier=tier) / share
            for (tier, share), (inp, out, writes, reads, _) in self.priced_usage.items()
        )

    @property
    def realtime_usd(self) -> float:
        """The priced usage in real time instead of a batch."""
        return sum(
            cost_usd(self.price, input_tokens=inp, output_tokens=out, cache_creation_input_tokens=writes,
                     cache_read_input_tokens=reads, cache_creation_1h_input_tokens=writes_1h) / share
            for (_, share), (inp, out, writes, reads, writes_1h) in self.priced_usage.items()
        )  # fmt: skip

    @property
    def sent(self) -> int:
        return self.answered + self.errors

    def row_means(self) -> tuple[np.ndarray, np.ndarray]:
        """(row indexes with at least one answer, their mean score): the unit of evidence."""
        answered = np.flatnonzero(self.row_n > 0)
        return answered, self.row_sum[answered] / self.row_n[answered]


@dataclass
class RepeatTally:
    """Per-row agreement across repeats (second pass)."""

    rows: int = 0
    repeats: int = 0
    consistent: int = 0
    multi: int = 0
    majority_correct: np.ndarray | None = None  # per row: 1/0, NaN when the row has no parsed answer


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


class ResultsPass:
    """Scores cells chunk by chunk and keeps the tallies (see the module docstring)."""

    def __init__(
        self,
        settings: Mapping[str, Any],
        *,
        rows: int,
        variants: Iterable[tuple[str, str]],
        scorer: Scorer | None = None,
        reviews: Mapping[CellKey, Review] | None = None,
    ) -> None:
        self.settings = settings
        self.reviews = reviews or {}
        self.scorer_spec = parse_scorer(settings["scorer"])
        self.scorer = scorer or make_scorer(self.scorer_spec)
        self.field_names = list(self.scorer_spec.field_specs) if self.scorer_spec.type == "fields" else []
        self.judged = self.scorer_spec.type == "judge"
        self.labels = self.scorer_spec.grade_labels if self.judged else []
        self.human = self.scorer_spec.human
        self.needs_values = self.scorer.needs_message or bool(self.field_names) or bool(self.human)
        self.columns = result_columns(self.scorer_spec, self.scorer.columns)
        self.extra_columns = list(self.scorer.columns)
        self.prices = {
            label: Price(**raw) if raw else None for label, raw in (settings.get("prices") or {}).items()
        }
        self.rows = rows
        self.tallies: dict[tuple[str, str], VariantTally] = {
            key: VariantTally(model=key[0], prompt=key[1], rows=rows, price=self.prices.get(key[0])) for key in variants
        }
        self.choices = list(self.scorer_spec.choices or ()) if self.scorer_spec.type == "choice" else []
        self.simulated = 0
        self.max_repeat = 0

    @classmethod
    def of_run(cls, settings: Mapping[str, Any], store: Any) -> ResultsPass:
        """The pass over a run folder's stored cells: the rows its store holds, every model ×
        prompt its settings name (so a variant with no cell yet still has a tally)."""
        reviews = store.latest_reviews() if hasattr(store, "latest_reviews") else None
        return cls(settings, rows=stored_rows(store), variants=run_variants(settings), reviews=reviews)

    def tally(self, model: str, prompt: str) -> VariantTally:
        key = (model, prompt)
        if key not in self.tallies:
            self.tallies[key] = VariantTally(model=model, prompt=prompt, rows=self.rows, price=self.prices.get(model))
        return self.tallies[key]

    def score(self, cell: Mapping[str, Any]) -> Score | None:
        """The score of one stored cell, or None when it has no answer."""
        if cell["status"] != "ok":
            return None
        message = json.loads(cell["message_json"]) if self.scorer.needs_message and cell["message_json"] else None
        grader = None
        if self.judged:
            grader = Grader(
                status=cell.get("judge_status"),
                text=cell.get("judge_text") or "",
                error=cell.get("judge_error"),
                input_tokens=cell.get("judge_input_tokens"),
                output_tokens=cell.get("judge_output_tokens"),
                # A grading request shared by k cells (identical replies) counts 1/k in each, as
                # the answer's own cost does: results.csv sums to what was paid.
                cost_usd=_share_of(cell.get("judge_cost_usd"), _sharing(cell, "judge_sharing")),
            )
        reply = Reply(text=cell["text"] or "", message=message, answer_mode=cell["answer_mode"], grader=grader)
        values = json.loads(cell["values_json"]) if self.needs_values else {}
        return self.scorer(reply, cell["target"], values)

    def counted_score(self, cell: Mapping[str, Any]) -> Score | None:
        """The score an answered cell counts with in the results (a refusal, a reply cut while
        thinking), or None when it has no answer. Reads only the columns `score` and
        `reasoning_of` need (what `Store.iter_outcomes` gives): `evalrun diff` scores with it."""
        if cell["status"] != "ok":
            return None
        return self._reasoned_score(cell, reasoning_of(cell), {})

    def reviewed_counted_score(self, cell: Mapping[str, Any]) -> Score | None:
        """`counted_score` with the cell's human review applied (what `evalrun diff` compares)."""
        score = self.counted_score(cell)
        review = self._review_of(cell) if score is not None else None
        return score if review is None or score is None else human_score(score, review, self.scorer_spec)

    def _review_of(self, cell: Mapping[str, Any]) -> Review | None:
        """The latest human review of the cell, if it has one."""
        return self.reviews.get(cell_key(cell)) if self.reviews else None

    def records(self, chunk: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
        """Result records (results.csv rows) of a chunk of stored cells, tallied on the way."""
        for cell in chunk:
            yield self._record(cell)

    def _record(self, cell: Mapping[str, Any]) -> dict[str, Any]:
        tally = self.tally(cell["model"], cell["prompt"])
        tally.cells += 1
        tally.modes.add(cell["answer_mode"])
        self.max_repeat = max(self.max_repeat, int(cell["repeat"]))
        status = cell["status"]
        share = _sharing(cell)
        record = self._base_record(cell, share)
        if status is None:
            record["status"] = "pending"
            record["error"] = "not sent yet"
            tally.pending += 1
            return record
        if cell["simulated"]:
            self.simulated += 1
        if status != "ok":
            self._failed(record, tally, cell)
            return record
        reasoning = reasoning_of(cell)
        record["thinking_tokens"] = reasoning.thinking_tokens
        record["thinking_tokens_source"] = reasoning.source
        score = self._reviewed(cell, self._reasoned_score(cell, reasoning, record), record, tally)
        self._apply_score(record, score)
        if self.judged and not (reasoning.truncated or reasoning.refused):
            self._tally_grading(tally, cell, score)
            if score.status in ("error", "pending"):
                self._ungraded(record, tally, cell, score)
                self._tally_usage(tally, cell, share)
                return record
        self._tally_answer(tally, cell, score, record, reasoning)
        self._tally_usage(tally, cell, share)
        return record

    def _base_record(self, cell: Mapping[str, Any], share: int) -> dict[str, Any]:
        """The columns every cell has, whatever became of it."""
        status = cell["status"]
        record: dict[str, Any] = {
            "model": cell["model"],
            "model_id": cell["model_id"],
            "prompt": cell["prompt"],
            "row_id": cell["row_id"],
            "repeat": cell["repeat"],
            "cluster": cell["cluster"] or "",
            "answer_mode": cell["answer_mode"],
            "response_text": reply_shown(cell["text"], cell["message_json"]),
            "answer": "",
            "target": cell["target"],
            "correct": None,  # set only for an answer: a failed or unsent cell is not a wrong one
            "score": None,
            "correct_auto": None,
            "score_source": "",
            "stop_reason": cell["stop_reason"] or "",
            "cost_usd": _share_of(cell["cost_usd"], share),
            "shared_by": share,
            "source": cell["source"] or "",
            "latency_s": _float(cell["latency_s"]),
            "attempts": cell["attempts"] or 0,
            "error": cell["error"] or "",
            "thinking_tokens": None,
            "thinking_tokens_source": "",
        }
        for column in TOKEN_COLUMNS:
            record[column] = cell[column] if cell[column] is not None else (0 if status is None else None)
        for name in self.extra_columns:
            record[name] = None
        return record

    def _failed(self, record: dict[str, Any], tally: VariantTally, cell: Mapping[str, Any]) -> None:
        record["status"] = "error"
        tally.errors += 1
        tally.error_kinds[_error_kind(cell)] += 1
        tally.outcomes[("error", "", cell["target"] if self.choices else "", "")] += 1

    def _reasoned_score(self, cell: Mapping[str, Any], reasoning: Reasoning, record: dict[str, Any]) -> Score:
        """A refusal is not correct whatever its text; a reply cut while thinking has no answer."""
        if reasoning.refused:
            return Score(answer=None, correct=False, status="refused", explanation="the model refused (stop_reason refusal)")
        if reasoning.truncated:
            record["error"] = TRUNCATED_NOTE
            return Score(answer=None, correct=False, status="unparsed", explanation=TRUNCATED_NOTE)
        score = self.score(cell)
        assert score is not None
        return score

    @staticmethod
    def _apply_score(record: dict[str, Any], score: Score) -> None:
        record["answer"] = score.answer or ""
        record["correct"] = score.correct
        record["score"] = score.value if score.status == "ok" else 0.0
        record["status"] = score.status
        for column, value in (score.extra or {}).items():
            record[column] = value

    def _ungraded(self, record: dict[str, Any], tally: VariantTally, cell: Mapping[str, Any], score: Score) -> None:
        """The grader failed or has not graded yet: no score, never a wrong one."""
        record["score"] = None
        record["correct"] = None
        record["error"] = score.explanation or ""
        if score.status == "error":
            tally.errors += 1
            tally.error_kinds["judge: " + (cell.get("judge_error") or "error").split(":")[0][:60]] += 1
        else:
            tally.pending += 1

    def _tally_answer(
        self, tally: VariantTally, cell: Mapping[str, Any], score: Score, record: dict[str, Any], reasoning: Reasoning
    ) -> None:
        if score.fields is not None:
            for name, right in score.fields.items():
                record[f"correct_{name}"] = right
                tally.field_correct[name] += int(right)
        tally.ok += score.status == "ok"
        tally.unparsed += score.status == "unparsed"
        tally.refused += score.status == "refused"
        tally.truncated_thinking += reasoning.truncated
        tally.thinking_tokens += reasoning.thinking_tokens
        tally.correct += int(score.correct)
        row = int(cell["row_seq"])
        tally.row_sum[row] += record["score"]
        tally.row_n[row] += 1
        tally.stop_reasons[cell["stop_reason"] or ""] += 1
        letters = bool(self.choices)
        tally.outcomes[
            (score.status, (score.answer or "") if letters else "", cell["target"] if letters else "", cell["stop_reason"] or "")
        ] += 1

    def _tally_grading(self, tally: VariantTally, cell: Mapping[str, Any], score: Score) -> None:
        share = _sharing(cell, "judge_sharing")
        tally.judge_tokens["input"] += int(cell.get("judge_input_tokens") or 0) / share
        tally.judge_tokens["output"] += int(cell.get("judge_output_tokens") or 0) / share
        tally.judge_cost_usd += float(cell.get("judge_cost_usd") or 0.0) / share
        if cell.get("judge_source") not in (None, "cache"):  # "paid by this folder" counts grading too
            tally.paid_usd += float(cell.get("judge_cost_usd") or 0.0) / share
        review = self._review_of(cell)
        if not score.answer or not (self.human or review) or score.status != "ok":
            return
        # A human grade given in the viewer counts before the dataset's column: it is the later word.
        human = human_grade(review, self.scorer_spec) if review is not None else None
        source = "review"
        if human is None and self.human:
            human, source = match_grade(json.loads(cell["values_json"]).get(self.human), self.labels), "column"
        if human is not None:
            tally.agreement[(score.answer, human)] += 1
            tally.agreement_sources[source] += 1

    def _reviewed(self, cell: Mapping[str, Any], auto: Score, record: dict[str, Any], tally: VariantTally) -> Score:
        """The one place a human review overrides the automatic score (kept as `correct_auto`)."""
        record["correct_auto"] = auto.correct if auto.status in ANSWERED else None
        review = self._review_of(cell)
        record["score_source"] = "human" if review is not None else "auto"
        if review is None:
            return auto
        human = human_score(auto, review, self.scorer_spec)
        tally.reviewed += 1
        tally.overridden += human.correct != record["correct_auto"]
        # The answer stays the automatic one: for a judge, the grader's grade (its side of the agreement).
        return human

    def _tally_usage(self, tally: VariantTally, cell: Mapping[str, Any], share: int) -> None:
        if cell["input_tokens"] is None:
            tally.usage_missing += 1
        for column in TOKEN_COLUMNS:
            tally.tokens[column] += int(cell[column] or 0) / share
        if cell["cost_usd"] is None:
            tally.cost_unknown += 1
        else:
            tally.cost_usd += float(cell["cost_usd"]) / share
            if tally.price is not None:
                sums = tally.priced_usage.setdefault((cell["service_tier"], share), [0, 0, 0, 0, 0])
                sums[0] += cell["input_tokens"] or 0
                sums[1] += cell["output_tokens"] or 0
                sums[2] += cell["cache_creation_input_tokens"] or 0
                sums[3] += cell["cache_read_input_tokens"] or 0
                sums[4] += cell["cache_creation_1h_input_tokens"] or 0
            if cell["source"] != "cache":
                tally.paid_usd += float(cell["cost_usd"]) / share
        if cell["source"] == "cache":
            tally.from_cache += 1
        if cell["latency_s"] is not None and cell["source"] != "cache":
            tally.latencies.append(float(cell["latency_s"]))


def stored_rows(store: Any) -> int:
    """How many dataset rows a run store holds (row positions are 0 … n − 1)."""
    return int(store.count_rows())


def run_variants(settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every model × prompt a run's settings name, in the spec's order."""
    models = settings.get("model_labels") or list(settings.get("models") or {})
    return [(m, p) for m in models for p in settings.get("prompts") or []]


def _share_of(cost: float | None, share: int) -> float | None:
    """A cell's part of a request's cost (None: unknown)."""
    return None if cost is None else float(cost) / share


def _sharing(cell: Mapping[str, Any], column: str = "sharing") -> int:
    """How many cells share the cell's request (`sharing`) or its grading request (`judge_sharing`)."""
    return max(int(cell.get(column) or 1), 1)


def diagnostics_frame(tallies: Iterable[VariantTally]) -> Any:
    """The tallies' outcome counts as a weighted frame for `evalrun.results.diagnostics`."""
    import pandas as pd

    rows = [
        (t.model, t.prompt, status, answer, target, stop, count)
        for t in tallies
        for (status, answer, target, stop), count in t.outcomes.items()
    ]
    return pd.DataFrame(rows, columns=["model", "prompt", "status", "answer", "target", "stop_reason", "count"])


def _error_kind(cell: Mapping[str, Any]) -> str:
    """A short, groupable description of an error: its status and type, or its first words."""
    parts = [str(cell["http_status"])] if cell["http_status"] else []
    if cell["error_type"]:
        parts.append(str(cell["error_type"]))
    if parts:
        return " ".join(parts)
    text = str(cell["error"] or "error")
    return text.split(":")[0][:80]


def repeat_pass(
    cells: Iterator[list[dict[str, Any]]],
    score: Callable[[Mapping[str, Any]], Score | None],
    *,
    rows: int,
) -> dict[tuple[str, str], RepeatTally]:
    """Majority vote and repeat consistency, from cells grouped by model, prompt and row."""
    out: dict[tuple[str, str], RepeatTally] = {}
    group: list[tuple[int, str | None, bool]] = []
    current: tuple[str, str, int] | None = None

    def close() -> None:
        if current is None or not group:
            return
        tally = out.setdefault(current[:2], RepeatTally(majority_correct=np.full(rows, np.nan)))
        tally.rows += 1
        tally.repeats = max(tally.repeats, len(group))
        if len(group) > 1:
            tally.multi += 1
            outcomes = {answer if answer is not None else "\x00unparsed" for _, answer, _ in group}
            tally.consistent += len(outcomes) == 1
        votes: Counter[str] = Counter(answer for _, answer, _ in group if answer is not None)
        assert tally.majority_correct is not None
        if votes:
            # The most votes; ties go to the answer given in the earliest repeat.
            first: dict[str, int] = {}
            for repeat, answer, _ in group:
                if answer is not None:
                    first.setdefault(answer, repeat)
            winner = min(votes, key=lambda a: (-votes[a], first[a]))
            correct = next(c for r, a, c in group if a == winner and r == first[winner])
            tally.majority_correct[current[2]] = float(correct)
        else:
            tally.majority_correct[current[2]] = 0.0  # no parsed answer: the vote is wrong

    for chunk in cells:
        for cell in chunk:
            key = (cell["model"], cell["prompt"], int(cell["row_seq"]))
            if key != current:
                close()
                current, group = key, []
            result = score(cell)
            if result is None:
                continue
            answer = result.answer if result.status == "ok" and result.answer else None
            group.append((int(cell["repeat"]), answer, result.correct))
    close()
    return out
