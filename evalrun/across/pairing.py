"""Two run folders read side by side: their dataset rows matched by id and content, their cells
scored once and kept as a few bytes each.

A run's cells are streamed from its store in chunks (only the columns scoring needs) and scored
by the run's own results pass, as its reports count them. What is kept per cell is a score (NaN:
no answer), whether it was correct, an interned answer (for the majority reducer) and 8 bytes of
its request key — arrays indexed by (row, repeat), never a frame of every cell. Rows pair on
their id; a row whose content differs between the two runs is left out (`changed_rows`), and
rows in one run only are counted.

Row content is the row's stored values (`rows.values_json`, every column of the dataset row), so
no schema change was needed: when both runs have the same columns the stored JSON is compared
as it is; otherwise the columns both have are compared (a column added to or dropped from the
dataset is named in a note, not counted as a change of every row).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evalrun.errors import NotARunFolder, StoreError
from evalrun.results.scoring import Score
from evalrun.results.tally import ANSWERED, ResultsPass
from evalrun.store.run_store import STORE_NAME, Store

__all__ = ["RowPairing", "RunSide", "VariantCells", "body_digests", "open_side", "pair_rows", "read_cells", "two_runs"]

_CHUNK = 5000


@dataclass
class VariantCells:
    """One model × prompt of one run, cell by cell: arrays indexed by (row_seq, repeat)."""

    model: str
    prompt: str
    score: np.ndarray  # float64, NaN where the cell has no answer (failed, unsent, ungraded)
    correct: np.ndarray  # int8: 1 right, 0 wrong, -1 no answer
    answer: np.ndarray  # int32: the interned answer, -1 none (unparsed or no answer)
    key: np.ndarray  # uint64: the request key's first 8 bytes (never 0), 0 where the cell is not planned
    model_ids: set[str] = field(default_factory=set)
    modes: set[str] = field(default_factory=set)

    @classmethod
    def empty(cls, model: str, prompt: str, rows: int, repeats: int) -> VariantCells:
        shape = (rows, repeats)
        return cls(
            model, prompt, np.full(shape, np.nan), np.full(shape, -1, dtype=np.int8),
            np.full(shape, -1, dtype=np.int32), np.zeros(shape, dtype=np.uint64),
        )  # fmt: skip

    def widen(self, repeats: int) -> None:
        """Room for more repeats than the settings said (a store written by a later spec)."""
        extra = repeats - self.score.shape[1]
        if extra <= 0:
            return
        rows = self.score.shape[0]
        self.score = np.hstack([self.score, np.full((rows, extra), np.nan)])
        self.correct = np.hstack([self.correct, np.full((rows, extra), -1, dtype=np.int8)])
        self.answer = np.hstack([self.answer, np.full((rows, extra), -1, dtype=np.int32)])
        self.key = np.hstack([self.key, np.zeros((rows, extra), dtype=np.uint64)])


@dataclass
class RunSide:
    """One run folder as the comparison needs it."""

    folder: Path
    settings: Mapping[str, Any]
    store: Store
    rows: int = 0
    variants: dict[tuple[str, str], VariantCells] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)
    simulated: bool = False

    @property
    def name(self) -> str:
        return str(self.settings.get("name") or self.folder.name)

    @property
    def reducer(self) -> str:
        return str(self.settings.get("reducer") or "mean")

    @property
    def started_at(self) -> str | None:
        runs = self.store.runs()
        return str(runs[-1]["started_at"]) if runs else None

    def close(self) -> None:
        self.store.close()


def _open(folder: Path, *, readonly: bool) -> tuple[Store, dict[str, Any]]:
    if not folder.is_dir():
        raise NotARunFolder(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    if not (folder / STORE_NAME).exists():
        raise NotARunFolder(f"{folder}: not a run folder: no {STORE_NAME} here (give reports/<name>/<run>/)")
    store = Store.open_readonly(folder) if readonly else Store.open(folder, create=False)
    settings = store.last_settings()
    if not settings:
        store.close()
        raise NotARunFolder(f"{folder}: not a run folder: its store has no run recorded")
    return store, settings


def open_side(folder: Path) -> RunSide:
    """A run folder, read without changing it. A store written by an older evalrun (a schema
    step missing) is brought up to date first, as `evalrun report` would."""
    try:
        store, settings = _open(folder, readonly=True)
    except NotARunFolder:
        raise
    except StoreError as exc:
        if "older evalrun" not in str(exc):
            raise
        store, settings = _open(folder, readonly=False)
    return RunSide(folder=folder, settings=settings, store=store)


def _first_columns(store: Store) -> list[str]:
    for chunk in store.iter_rows(chunk=1):
        values = json.loads(chunk[0][3])
        return list(values) if isinstance(values, dict) else []
    return []


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _row_digests(store: Store, common: list[str] | None) -> Iterator[tuple[int, str, str | None, bytes]]:
    """(row_seq, row_id, cluster, content digest) of every stored row; `common`: compare only
    these columns (None: the stored JSON as it is, both runs having the same columns)."""
    for chunk in store.iter_rows(chunk=_CHUNK):
        for row_seq, row_id, cluster, values_json in chunk:
            if common is None:
                yield row_seq, row_id, cluster, _digest(values_json)
                continue
            values = json.loads(values_json)
            kept = {k: values.get(k) for k in common}
            yield row_seq, row_id, cluster, _digest(json.dumps(kept, sort_keys=True, ensure_ascii=False))


@dataclass
class RowPairing:
    """The dataset rows of two runs matched by id, left out when their content changed."""

    base_seq: np.ndarray  # row_seq in the baseline of each paired row
    cand_seq: np.ndarray  # row_seq in the candidate
    row_ids: list[str]
    clusters: np.ndarray | None  # a code per paired row (the candidate's cluster ids), None without
    changed_rows: int = 0
    only_base_rows: int = 0
    only_cand_rows: int = 0
    note: str = ""


def pair_rows(base: RunSide, cand: RunSide) -> RowPairing:
    """Match the two runs' rows on their id; a row whose content differs is counted, not paired."""
    columns_base, columns_cand = _first_columns(base.store), _first_columns(cand.store)
    same = columns_base == columns_cand
    common = None if same else sorted(set(columns_base) & set(columns_cand))
    notes = []
    if not same:
        gone = [c for c in columns_base if c not in columns_cand]
        new = [c for c in columns_cand if c not in columns_base]
        if gone or new:
            parts = ([f"dropped {', '.join(gone)}"] if gone else []) + ([f"added {', '.join(new)}"] if new else [])
            notes.append("dataset columns " + "; ".join(parts) + ": rows compared on the columns both have")
    known: dict[str, tuple[int, bytes]] = {}
    for row_seq, row_id, _, digest in _row_digests(base.store, common):
        known[row_id] = (row_seq, digest)
    base_seq: list[int] = []
    cand_seq: list[int] = []
    row_ids: list[str] = []
    cluster_ids: list[str | None] = []
    changed = only_cand = 0
    for row_seq, row_id, cluster, digest in _row_digests(cand.store, common):
        found = known.pop(row_id, None)
        if found is None:
            only_cand += 1
        elif found[1] != digest:
            changed += 1
        else:
            base_seq.append(found[0])
            cand_seq.append(row_seq)
            row_ids.append(row_id)
            cluster_ids.append(cluster)
    clusters = None
    if any(c is not None for c in cluster_ids):
        codes: dict[str, int] = {}
        # A row without a cluster id is a cluster of its own.
        clusters = np.fromiter(
            (codes.setdefault(c if c is not None else f"\x00{i}", len(codes)) for i, c in enumerate(cluster_ids)),
            dtype=np.int64, count=len(cluster_ids),
        )  # fmt: skip
    return RowPairing(
        np.asarray(base_seq, dtype=np.int64), np.asarray(cand_seq, dtype=np.int64), row_ids, clusters,
        changed_rows=changed, only_base_rows=len(known), only_cand_rows=only_cand, note="; ".join(notes),
    )  # fmt: skip


def _key_code(key: str) -> int:
    """A request key (hex SHA-256) as a nonzero 64-bit number (0 marks a cell not planned)."""
    return int(key[:16], 16) | 1


def body_digests(side: RunSide, variant: VariantCells) -> dict[int, int]:
    """Request key code → digest of the body without its model id, for one model label's
    requests: what the request text is, apart from the endpoint, API version and model."""
    ids = [f'"model":{json.dumps(m, ensure_ascii=False)}' for m in variant.model_ids]
    out: dict[int, int] = {}
    for chunk in side.store.iter_request_bodies(variant.model):
        for key, body_json in chunk:
            text = body_json
            for model_id in ids:  # canonical JSON: the body's own model key, spelled exactly so
                text = text.replace(model_id, "", 1)
            out[_key_code(key)] = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
    return out


def read_cells(side: RunSide) -> RunSide:
    """Score every cell of a run once, as its results count it (its scorer, refusals, replies
    cut while thinking), into its `VariantCells`, streaming the store's lean `iter_outcomes`."""
    store, settings = side.store, side.settings
    results = ResultsPass.of_run(settings, store)
    side.rows = results.rows
    repeats = max(int(settings.get("repeats") or 1), 1)
    score = results.reviewed_counted_score
    simulated = 0
    for chunk in store.iter_outcomes(chunk=_CHUNK, values=results.needs_values, judged=results.judged):
        simulated += sum(bool(cell["simulated"]) for cell in chunk)
        groups: dict[tuple[str, str], list[tuple[Mapping[str, Any], Score | None]]] = {}
        for cell in chunk:
            groups.setdefault((cell["model"], cell["prompt"]), []).append((cell, score(cell)))
        for key, scored in groups.items():
            _keep(side, key, scored, repeats)
    side.simulated = settings.get("endpoint") == "simulator" or simulated > 0
    return side


def _keep(side: RunSide, key: tuple[str, str], scored: list[tuple[Mapping[str, Any], Score | None]], repeats: int) -> None:
    """Put one variant's scored cells of a chunk into its arrays (one numpy assignment per array)."""
    variant = side.variants.get(key)
    if variant is None:
        variant = side.variants[key] = VariantCells.empty(key[0], key[1], side.rows, repeats)
    rows = np.fromiter((int(cell["row_seq"]) for cell, _ in scored), dtype=np.int64, count=len(scored))
    reps = np.fromiter((int(cell["repeat"]) for cell, _ in scored), dtype=np.int64, count=len(scored))
    if int(reps.max()) >= variant.score.shape[1]:
        variant.widen(int(reps.max()) + 1)
    variant.model_ids.update({str(cell["model_id"]) for cell, _ in scored})
    variant.modes.update({str(cell["answer_mode"]) for cell, _ in scored})
    variant.key[rows, reps] = np.fromiter((_key_code(str(cell["request_key"])) for cell, _ in scored),
                                          dtype=np.uint64, count=len(scored))  # fmt: skip
    _keep_answers(side, variant, scored, rows, reps)


def _keep_answers(side: RunSide, variant: VariantCells, scored: list[tuple[Mapping[str, Any], Score | None]],
                  rows: np.ndarray, reps: np.ndarray) -> None:  # fmt: skip
    # As the results count it: an answer (ok, unparsed, refused) has a value; a failed request,
    # or a grading that failed or is still to come, has none (never a wrong answer).
    answered = [(i, s) for i, (_, s) in enumerate(scored) if s is not None and s.status in ANSWERED]
    if not answered:
        return
    at = np.fromiter((i for i, _ in answered), dtype=np.int64, count=len(answered))
    variant.score[rows[at], reps[at]] = [s.value if s.status == "ok" else 0.0 for _, s in answered]
    variant.correct[rows[at], reps[at]] = [1 if s.correct else 0 for _, s in answered]
    variant.answer[rows[at], reps[at]] = [
        side.answers.setdefault(str(s.answer), len(side.answers)) if s.status == "ok" and s.answer else -1
        for _, s in answered
    ]


@contextlib.contextmanager
def two_runs(baseline: Path, candidate: Path) -> Iterator[tuple[RunSide, RunSide]]:
    """Both run folders opened (and closed again whatever happens)."""
    base = open_side(Path(baseline))
    try:
        cand = open_side(Path(candidate))
    except BaseException:
        base.close()
        raise
    try:
        yield base, cand
    finally:
        base.close()
        cand.close()
