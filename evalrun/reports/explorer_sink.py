"""The explorer's sink: sees every cell once in the report's streaming pass, spills what the
page shows to a scratch folder, and writes the page's JSON payload (`ExplorerSink.write_json`).
The caps, sampling and memory bounds are described in `evalrun.reports.explorer`."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import shutil
import tempfile
import weakref
from array import array
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from evalrun.reports.explorer_parts import (
    _CODE,
    _INT32,
    _MISSING,
    _STRING,
    FORMAT,
    IMAGE_BYTES,
    IMAGES_TOTAL,
    INDEX_CHARS,
    INDEX_ENTRIES,
    MAX_CELLS,
    MAX_TEXT_CHARS,
    OUTCOMES,
    PART_CHARS,
    REPLY_CHARS,
    ROLES,
    SAMPLE_SEED,
    _block_parts,
    _columns,
    _error,
    _fields,
    _Index,
    _ints,
    _json,
    _note,
    _numbers,
    _offsets,
    _Plan,
    _renumber,
    _reply,
    _row_hash,
    _script_safe,
    _typed,
    body_turns,
    clip,
    parse_body,
    plan_subset,
    review_code,
)

__all__ = ["ExplorerSink"]

ID_CHARS = 1 << 40  # no cap: a row id is a key, and a shortened one matches nothing

_BUCKET_SHIFT = 48
_BUCKETS = 1 << 16
_SHRINK_TO = 0.9
_AIM = 0.95  # of the caps, when the number of cells is known

# The payload's cell columns: ints (-1: missing), floats (NaN: missing) and string ids (0 is the
# empty string). `_row` (the dataset row's position) and `_b` (its hash bucket) stay in the spill,
# where every column is 32 bits wide (the bucket 16).
_INTS = ("m", "p", "k", "o", "h", "q", "it", "ot", "cw", "cr", "n")
_FLOATS = ("c", "l", "sc")
_STRINGS = ("r", "a", "t", "g", "y", "e", "s", "d", "x", "f", "u")
_COLUMNS = (*_INTS, *_FLOATS, *_STRINGS)
# Texts read straight from a results record: (column, record field, cap on its length).
_TEXT_FIELDS = (("a", "answer", PART_CHARS), ("t", "target", PART_CHARS), ("g", "grade", PART_CHARS),
                ("s", "stop_reason", PART_CHARS), ("d", "answer_mode", PART_CHARS),
                ("x", "grade_explanation", REPLY_CHARS), ("u", "source", PART_CHARS))  # fmt: skip
# Numbers read straight from a results record: (column, record field).
_INT_FIELDS = (("k", "repeat"), ("it", "input_tokens"), ("ot", "output_tokens"),
               ("cw", "cache_creation_input_tokens"), ("cr", "cache_read_input_tokens"), ("n", "attempts"))  # fmt: skip
_FLOAT_FIELDS = (("c", "cost_usd"), ("l", "latency_s"), ("sc", "score"))
# The spilled tables besides the cells: requests (their turns), turns (role, parts), media parts.
_TABLES = ("rq_len", "rq_turn", "tu_role", "tu_len", "tu_part", "md_kind", "md_a", "md_b")

_RECORD_FIELDS = ("model", "prompt", "row_id", "status", "correct", "correct_auto", "score_source", "response_text", "error",
                  *(name for _, name in _INT_FIELDS), *(name for _, name in _FLOAT_FIELDS),
                  *(name for _, name, _ in _TEXT_FIELDS))  # fmt: skip
_CELL_FIELDS = ("request_key", "request_json", "sharing", "message_json", "raw", "http_status", "error_type", "row_seq")


# -- the sink ----------------------------------------------------------------------------------
def _number(names: Sequence[Any], known: dict[Any, int]) -> list[int]:
    """`names` as numbers, new names numbered in order of appearance (into `known`)."""
    if not known.keys() >= set(names):
        for name in names:
            if name not in known:
                known[name] = len(known)
    return [known[name] for name in names]


class ExplorerSink:
    """Spills the cells the explorer embeds into `directory` (see the module docstring).

    A results sink: `begin(columns)`, `write(records, cells)` per chunk, `close()`; then
    `write_json(handle)` streams the payload (as often as wanted) and `meta` describes it. Without
    a `directory` the spill goes to a temporary folder removed with the sink."""

    def __init__(self, directory: Path | None = None, *, max_cells: int | None = None,
                 max_text_chars: int | None = None, expected_cells: int | None = None,
                 bodies: Callable[[str], str | None] | None = None) -> None:  # fmt: skip
        self.max_cells = MAX_CELLS if max_cells is None else max_cells
        self.max_text_chars = MAX_TEXT_CHARS if max_text_chars is None else max_text_chars
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="evalrun-explorer-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, directory, True)
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        # Rows whose hash bucket is below `top` are kept. Knowing how many cells will come, start
        # with the share that fits the cell cap (the rows of the others are never spilled).
        self.expected_cells = expected_cells
        self.bodies = bodies  # request_key → body, for cells that do not carry `request_json`
        self.top = _BUCKETS
        if expected_cells and expected_cells * _AIM > self.max_cells:
            self.top = int(_BUCKETS * self.max_cells * _AIM / expected_cells)
        self.bucket_cells = np.zeros(_BUCKETS, dtype=np.int64)
        self.bucket_chars = np.zeros(_BUCKETS, dtype=np.int64)
        self.bucket_truncated = np.zeros(_BUCKETS, dtype=np.int64)
        self.models: dict[str, int] = {}
        self.prompts: dict[str, int] = {}
        self.field_columns: list[str] = []
        self.seen_cells = 0
        self.spilled_cells = 0
        self.counts = {"strings": 1, "turns": 0, "requests": 0, "media": 0}
        self.texts = _Index(entries=INDEX_ENTRIES, chars=INDEX_CHARS, fixed={"": 0, None: 0})
        self.turns = _Index(entries=INDEX_ENTRIES // 2)
        self.requests = _Index(entries=INDEX_ENTRIES // 2)
        self.media = _Index(entries=INDEX_ENTRIES // 2)
        self._notes: list[tuple[Any, int]] = []  # (what a note depends on, its turn), most recent first
        self.contents = _Index(entries=INDEX_ENTRIES // 2, chars=INDEX_CHARS)  # (role, content) → turn id
        self.by_key = _Index(entries=INDEX_ENTRIES // 8)  # request_key → request id (cells sharing a request)
        self.images: dict[str, bool] = {}  # sha256 → embedded (bounded by IMAGES_TOTAL) ...
        self.refused = _Index(entries=INDEX_ENTRIES // 8)  # ... or refused
        self.image_bytes = 0
        self.images_embedded = 0
        self._strings = (directory / "strings.jsonl").open("w", encoding="utf-8", errors="replace", buffering=1 << 20)
        self._images = (directory / "images.jsonl").open("w", encoding="utf-8", buffering=1 << 16)
        self._files = {name: (directory / f"{name}.bin").open("wb")
                       for name in (*_COLUMNS, "_row", "_b", "str_len", *_TABLES)}  # fmt: skip
        self._lengths = array("i", [0])  # of the strings written since the last flush (id 0: "")
        self._tables = {name: array("i") for name in _TABLES}
        self._chars: list[int] = []  # per kept cell of the chunk: characters of text it wrote first
        self._truncated: list[int] = []  # per kept cell of the chunk: texts shortened
        self.closed = False
        self.closers: list[Callable[[], None]] = []  # called when the pass is over
        self.meta: dict[str, Any] = {}

    @classmethod
    def for_run(cls, folder: Path, directory: Path) -> ExplorerSink:
        """A sink for the cells of the run folder `folder`, spilling into `directory`, reading the
        request bodies from the folder's store (in the order they were written)."""
        from evalrun.reports.explorer_bodies import RequestBodies

        bodies = RequestBodies.of(folder)
        sink = cls(directory, expected_cells=bodies.cells if bodies else None, bodies=bodies.get if bodies else None)
        if bodies is not None:
            sink.closers.append(bodies.close)
            weakref.finalize(sink, bodies.close)  # a build that fails before closing the sink
        return sink

    # ResultsSink
    def begin(self, columns: list[str]) -> None:
        self.field_columns = [c for c in columns if c.startswith("correct_") and c != "correct_auto"]  # not a field: the scorer's verdict beside a human one

    def write(self, records: list[dict[str, Any]], cells: list[dict[str, Any]]) -> None:
        if len(records) != len(cells):
            raise ValueError("records and cells differ in length")
        self.seen_cells += len(records)
        row_ids = [r["row_id"] for r in records]
        bucket_of = {row_id: _row_hash(str(row_id)) >> _BUCKET_SHIFT for row_id in dict.fromkeys(row_ids)}
        buckets = [bucket_of[row_id] for row_id in row_ids]
        top = self.top
        if buckets and max(buckets) >= top:
            keep = [i for i, bucket in enumerate(buckets) if bucket < top]
            if not keep:
                return
            records = [records[i] for i in keep]
            cells = [cells[i] for i in keep]
            buckets = [buckets[i] for i in keep]
        if not records:
            return
        self._add(records, cells, buckets)
        where = np.array(buckets, dtype=np.int64)
        self.bucket_cells += np.bincount(where, minlength=_BUCKETS)
        self.bucket_chars += np.bincount(where, weights=self._chars, minlength=_BUCKETS).astype(np.int64)
        if any(self._truncated):
            self.bucket_truncated += np.bincount(where, weights=self._truncated, minlength=_BUCKETS).astype(np.int64)
        for index in (self.texts, self.contents, self.turns, self.requests, self.media, self.by_key, self.refused):
            index.roll()
        self._shrink_if_needed()
        self._project()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for closer in self.closers:
            closer()
        self._shrink_if_needed()
        self._flush_lengths()
        self._strings.close()
        self._images.close()
        for handle in self._files.values():
            handle.close()
        # The text a page holds is known exactly only now (texts shared with dropped rows, texts
        # written twice): lower the threshold until it fits.
        plan = self._plan()
        while plan.text_chars > self.max_text_chars and self.top > 0:
            # As the text counted per bucket says, and at least in proportion of the hash range.
            share = self.max_text_chars / plan.text_chars * _SHRINK_TO
            cumulative = np.cumsum(self.bucket_chars[: self.top])
            estimate = int(np.searchsorted(cumulative, cumulative[-1] * share, side="right"))
            self.top = max(0, min(estimate, int(self.top * share), self.top - 1))
            plan = self._plan()
        kept = plan.kept
        rows = np.unique(self._load("_row")[kept]) if kept.size else kept
        repeats = self._load("k")[kept]
        self.meta = {
            "count": int(kept.size),
            "rows": int(rows.size),
            "repeats": bool(repeats.size and repeats.max() > 0),
            "seen_cells": self.seen_cells,
            "sampled": int(kept.size) < self.seen_cells,
            "sample_seed": SAMPLE_SEED,
            "truncated": int(self.bucket_truncated[: self.top].sum()),
            "text_chars": plan.text_chars,
            "models": list(self.models),
            "prompts": list(self.prompts),
        }

    def discard(self) -> None:
        """Remove the spill (`Staged` does this for the sink of a report build)."""
        if not self.closed:
            self.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- the pass ------------------------------------------------------------------------------
    def _add(self, records: list[dict[str, Any]], cells: list[dict[str, Any]], buckets: list[int]) -> None:
        n = len(records)
        self._chars = [0] * n
        self._truncated = [0] * n
        # Each field as a column, every record (and cell) read once.
        rec = _columns(records, _RECORD_FIELDS)
        cel = _columns(cells, _CELL_FIELDS)
        columns: dict[str, Any] = {}
        for field, known in (("model", self.models), ("prompt", self.prompts)):
            columns[field[0]] = _number(rec[field], known)
        columns["o"] = [(0 if right is True else 1) if status == "ok" else _CODE.get(str(status), 3)
                        for status, right in zip(rec["status"], rec["correct"], strict=True)]  # fmt: skip
        columns["h"] = [review_code(source, right, auto) for source, right, auto
                        in zip(rec["score_source"], rec["correct"], rec["correct_auto"], strict=True)]  # fmt: skip
        request = self._request
        columns["q"] = [request(key, raw, sharing, j) for j, (key, raw, sharing)
                        in enumerate(zip(cel["request_key"], cel["request_json"], cel["sharing"], strict=True))]  # fmt: skip
        for column, name in _INT_FIELDS:
            columns[column] = _ints(rec[name])
        for column, name in _FLOAT_FIELDS:
            columns[column] = _numbers(rec[name])
        score = columns["sc"]
        columns["sc"] = np.where((score > 0) & (score < 1), score, math.nan)  # partial credit only
        texts = self._texts
        columns["r"] = texts(rec["row_id"], ID_CHARS)  # an id is never shortened: links find a row by it
        for column, name, cap in _TEXT_FIELDS:
            columns[column] = texts(rec[name], cap)
        columns["y"] = texts([_reply(text, message, raw) for text, message, raw
                              in zip(rec["response_text"], cel["message_json"], cel["raw"], strict=True)], REPLY_CHARS)  # fmt: skip
        columns["e"] = texts([_error(status, error, http, kind) for status, error, http, kind
                              in zip(rec["status"], rec["error"], cel["http_status"], cel["error_type"], strict=True)],
                             PART_CHARS)  # fmt: skip
        fields = self.field_columns
        columns["f"] = texts([_fields(r, fields) for r in records], PART_CHARS) if fields else [0] * n
        self._spill(columns, cel["row_seq"], buckets)
        self.spilled_cells += n

    def _spill(self, columns: Mapping[str, Any], row_seq: Sequence[Any], buckets: list[int]) -> None:
        """Append a chunk's columns and the tables it grew to the spill files."""
        for name in _COLUMNS:
            spilled = np.asarray(columns[name])
            if name in _FLOATS:
                spilled.astype(np.float32).tofile(self._files[name])
            else:
                np.clip(spilled, _INT32.min, _INT32.max).astype(np.int32).tofile(self._files[name])
        np.clip(_ints(row_seq), -1, _INT32.max).astype(np.int32).tofile(self._files["_row"])
        np.array(buckets, dtype=np.uint16).tofile(self._files["_b"])
        for name, table in self._tables.items():
            if table:
                table.tofile(self._files[name])
                del table[:]
        self._flush_lengths()

    def _flush_lengths(self) -> None:
        self._lengths.tofile(self._files["str_len"])
        del self._lengths[:]

    def _texts(self, values: Sequence[Any], cap: int) -> list[int]:
        """The string ids of a column of texts (one per kept cell of the chunk)."""
        get = self.texts.new.get
        try:
            out: list[Any] = [get(v) for v in values]
        except TypeError:  # an unhashable value: take the slow road for every one
            out = [None] * len(values)
        if None in out:
            for j, found in enumerate(out):
                if found is None:  # new, or in the old generation (and moved on first use: try again)
                    found = get(values[j]) if type(values[j]) is str else None
                    out[j] = found if found is not None else self._text(values[j], cap, j)
        return out

    def _text(self, value: Any, cap: int, j: int) -> int:
        if value is None or value == "" or (type(value) is float and math.isnan(value)):
            return 0
        text = value if type(value) is str else str(value)
        if len(text) > cap:
            text = clip(text, cap)[0]
            self._truncated[j] += 1
        return self._sid(text, j)

    def _sid(self, text: str, j: int) -> int:
        found = self.texts.find(text, len(text))
        if found is None:
            found = self.counts["strings"]
            self.counts["strings"] = found + 1
            self._strings.write(_script_safe(_STRING(text)) + "\n")
            self._lengths.append(len(text))
            self._chars[j] += len(text)
            self.texts.add(text, found, len(text))
        return found

    def _request(self, request_key: Any, raw: Any, sharing: Any, j: int) -> int:
        """The id of a cell's rendered request (see `render_request`), -1 when it has none: its
        body `raw` or, without, the one `bodies` gives for its key."""
        # Cells share a request only when the store says so (`sharing`): only those are remembered.
        key = request_key if sharing and sharing > 1 else None
        if key:
            found = self.by_key.find(key)
            if found is not None:
                return found
        if raw is None and self.bodies is not None and request_key:
            raw = self.bodies(request_key)
        body = parse_body(raw)
        if body is None:
            return -1
        ids = self._turn_ids(body, j)
        note = self._note_turn(body, j)
        if note >= 0:
            ids.append(note)
        found = self._request_id(tuple(ids))
        if key:
            self.by_key.add(key, found)
        return found

    def _turn_ids(self, body: dict[str, Any], j: int) -> list[int]:
        """As render_request, but each turn looked up by its content first: most turns of a grid
        (system prompts, few-shot turns, a row's question asked of several models) come again."""
        turn, seen = self._turn, self.contents.new.get
        ids = []
        for code, content in body_turns(body):
            found = seen((code, content)) if type(content) is str else None
            ids.append(found if found is not None else turn(code, content, j))
        return ids

    def _request_id(self, rendered: tuple[int, ...]) -> int:
        requests = self.requests
        found = requests.new.get(rendered)
        if found is None:
            found = requests.old.get(rendered)
            if found is not None:
                requests.add(rendered, found)
        if found is None:
            found = self.counts["requests"]
            self.counts["requests"] = found + 1
            self.requests.add(rendered, found)
            self._tables["rq_len"].append(len(rendered))
            self._tables["rq_turn"].extend(rendered)
        return found

    def _note_turn(self, body: dict[str, Any], j: int) -> int:
        """The turn id of a request's note (`_note`; -1: none), from a few recent ones when the
        parameters, format and tools are equal (types too: 1 and 1.0 differ in the note)."""
        get = body.get
        output = get("output_config")
        tokens, temperature, top_p, top_k = (get("max_tokens", _MISSING), get("temperature", _MISSING),
                                             get("top_p", _MISSING), get("top_k", _MISSING))  # fmt: skip
        key = (tokens, temperature, top_p, top_k, type(tokens), type(temperature), type(top_p), type(top_k),
               get("stop_sequences", _MISSING), get("thinking", _MISSING),
               output.get("format") if type(output) is dict else output, get("tools"), get("tool_choice"))  # fmt: skip
        recent = self._notes
        for i, (known, found) in enumerate(recent):
            if known == key:
                if i:
                    recent[i], recent[i - 1] = recent[i - 1], recent[i]
                return found
        note = _note(body)
        found = self._turn(4, note, j) if note else -1
        recent.insert(0, (key, found))
        del recent[8:]
        return found

    def _turn(self, code: int, content: Any, j: int) -> int:
        if type(content) is str:
            key = (code, content)
            found = self.contents.find(key, len(content))
            if found is None:
                text = content if len(content) <= PART_CHARS else clip(content, PART_CHARS)[0]
                found = self._turn_id(code, (self._sid(text, j),))
                self.contents.add(key, found, len(content))
            return found
        ids = tuple(self._sid(p, j) if isinstance(p, str) else self._media(p, j) for p in _block_parts(content))
        return self._turn_id(code, ids)

    def _turn_id(self, code: int, ids: tuple[int, ...]) -> int:
        key = (code, *ids)
        found = self.turns.find(key)
        if found is None:
            found = self.counts["turns"]
            self.counts["turns"] = found + 1
            self.turns.add(key, found)
            tables = self._tables
            tables["tu_role"].append(code)
            tables["tu_len"].append(len(ids))
            tables["tu_part"].extend(ids)
        return found

    def _media(self, part: tuple[str, ...], j: int) -> int:
        """A media part's id, as a negative part: -1 - its index in the media table."""
        if part[0] == "img":
            _, sha, path, media_type = part
            self._embed(sha, path, media_type)
            key = (0, self._sid(sha, j), self._sid(path, j))
        elif part[0] == "doc":
            key = (2, self._sid(part[1], j), self._sid(part[2], j))
        else:
            key = (1, self._sid(part[1], j), -1)
        found = self.media.find(key)
        if found is None:
            found = self.counts["media"]
            self.counts["media"] = found + 1
            self.media.add(key, found)
            for name, value in zip(("md_kind", "md_a", "md_b"), key, strict=True):
                self._tables[name].append(value)
        return -1 - found

    def _embed(self, sha: str, path: str, media_type: str) -> None:
        """Embed an image file once, while it fits the caps and still matches its hash."""
        if not sha or sha in self.images or self.refused.find(sha) is not None:
            return
        data = None
        if media_type.startswith("image/") and self.image_bytes < IMAGES_TOTAL:
            try:
                size = Path(path).stat().st_size
                if size <= IMAGE_BYTES and self.image_bytes + size <= IMAGES_TOTAL:
                    data = Path(path).read_bytes()
            except OSError:
                data = None
        if data is None or hashlib.sha256(data).hexdigest() != sha:
            self.refused.add(sha, 1)
            return
        self.images[sha] = True
        self.image_bytes += len(data)
        self.images_embedded += 1
        url = f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
        self._images.write(f"{_json(sha)}:{_json(url)}\n")

    # -- sampling ------------------------------------------------------------------------------
    def _shrink_if_needed(self) -> None:
        top = self.top
        cells = int(self.bucket_cells[:top].sum())
        chars = int(self.bucket_chars[:top].sum())
        if cells <= self.max_cells and chars <= self.max_text_chars:
            return
        # The highest bucket boundary with at most 90 % of each cap below it.
        cum_cells = np.cumsum(self.bucket_cells[:top])
        cum_chars = np.cumsum(self.bucket_chars[:top])
        fits = (cum_cells <= self.max_cells * _SHRINK_TO) & (cum_chars <= self.max_text_chars * _SHRINK_TO)
        # cum_* grow with the bucket, so the buckets that fit are a prefix.
        self.top = int(np.argmin(fits)) if not fits.all() else top

    def _project(self) -> None:
        """Knowing how many cells will come: lower the threshold early when the text written so far
        per kept cell says the text cap will not hold (rather than spilling cells to drop later)."""
        if not self.expected_cells:
            return
        top = self.top
        cells, chars = int(self.bucket_cells[:top].sum()), int(self.bucket_chars[:top].sum())
        if not cells or not chars:
            return
        per_cell = chars / cells
        if per_cell * self.expected_cells * top / _BUCKETS > self.max_text_chars:
            share = self.max_text_chars * _AIM / per_cell / self.expected_cells
            self.top = min(top, int(_BUCKETS * share))

    # -- the page ------------------------------------------------------------------------------
    def _load(self, name: str) -> np.ndarray:
        kind = np.float32 if name in _FLOATS else np.uint16 if name == "_b" else np.int32
        return np.fromfile(self.directory / f"{name}.bin", dtype=kind)

    def _plan(self) -> _Plan:
        """What the page holds at the current threshold: the kept cells (their positions in the
        spill, in reading order: dataset row, repeat, then the variants in the spec's order) and,
        when some spilled cells are left out, only the texts, turns and requests they use,
        renumbered."""
        kept = np.flatnonzero(self._load("_b") < self.top)
        if kept.size:
            kept = kept[np.lexsort([self._load(name)[kept] for name in ("p", "m", "k", "_row")])]
        tables = {name: self._load(name) for name in _TABLES}
        lengths = self._load("str_len")
        if kept.size == self.spilled_cells:
            return _Plan(kept, tables, None, None, int(lengths.sum(dtype=np.int64)))
        texts = [self._load(name)[kept] for name in _STRINGS]
        return plan_subset(kept, self._load("q")[kept], texts, tables, self.counts, lengths)

    def write_json(self, out: IO[str]) -> None:
        """Stream the payload (format 2) into `out`, safe inside a `<script type="application/json">`
        (no `<`, `>` or `&` in it):

        ``{"version": 2, "models": [...], "prompts": [...], "outcomes": [...], "roles": [...],
        "count", "rows", "repeats", "seen_cells", "sampled", "sample_seed", "truncated",
        "text_chars", "caps": {...}, "images": {sha256: data URL}, "strings": [...],
        "tables": {...}, "cells": {...}}``

        `strings` holds every text once (0 is ""). Each column of `cells` (one value per cell, in
        reading order) and of `tables` is a typed array, ``{"t": "u8"|"i8"|"u16"|"i16"|"i32"|"f32",
        "b64": little-endian bytes in base64}``, or (cells only) ``{"t": ..., "const": value}`` when
        every value is the same (null: NaN). Cell columns: `m`, `p` (model, prompt index), `k`
        (repeat), `o` (outcome code), `h` (human review: 0 none, 1 reviewed, 2 reviewed and scored
        otherwise than the automatic scorer), `q` (request id, -1: none), `it`, `ot`, `cw`, `cr` (tokens,
        -1: unknown), `n` (attempts), floats `c` (cost), `l` (latency), `sc` (partial score; NaN:
        none), and string ids `r` (row id), `a` (answer), `t` (target), `g` (grade), `y` (reply),
        `e` (error), `s` (stop reason), `d` (answer mode), `x` (grader's explanation), `f`
        (per-field correctness, "name:1,name:0"), `u` (source). Tables: request `i`'s turns are
        ``rq_turn[rq_off[i]:rq_off[i+1]]``; turn `t` has role ``roles[tu_role[t]]`` and parts
        ``tu_part[tu_off[t]:tu_off[t+1]]``, a part being a string id (>= 0) or a media part ``-1 - m``:
        an image file (``md_kind[m]`` 0; `md_a` its sha256, `md_b` its path, as string ids) or an
        image URL (1; `md_a` the URL) or a document (2; `md_a` its label, `md_b` its link)."""
        if not self.closed:
            self.close()
        plan = self._plan()
        meta = self.meta
        caps = {"cells": self.max_cells, "text_chars": self.max_text_chars, "reply_chars": REPLY_CHARS,
                "part_chars": PART_CHARS, "image_bytes": IMAGE_BYTES, "images_total": IMAGES_TOTAL}  # fmt: skip
        head = {"version": FORMAT, "models": meta["models"], "prompts": meta["prompts"], "outcomes": list(OUTCOMES),
                "roles": list(ROLES), **{k: meta[k] for k in ("count", "rows", "repeats", "seen_cells", "sampled",
                "sample_seed", "truncated", "text_chars")}, "caps": caps}  # fmt: skip
        out.write(_json(head)[:-1])
        out.write(',"images":{')
        with (self.directory / "images.jsonl").open(encoding="utf-8") as handle:
            out.write(",".join(line.rstrip("\n") for line in handle))
        out.write('},"strings":[""')  # id 0, then the spilled texts, id 1 on
        with (self.directory / "strings.jsonl").open(encoding="utf-8") as handle:
            if plan.strings is None:
                while block := handle.readlines(1 << 20):
                    out.write("," + ",".join(line[:-1] for line in block))
            else:
                for used, line in zip(plan.strings[1:], handle, strict=False):
                    if used:
                        out.write("," + line[:-1])
        tables = plan.tables
        shown = {"rq_off": _offsets(tables["rq_len"]), "rq_turn": tables["rq_turn"], "tu_role": tables["tu_role"],
                 "tu_off": _offsets(tables["tu_len"]), "tu_part": tables["tu_part"], "md_kind": tables["md_kind"],
                 "md_a": tables["md_a"], "md_b": tables["md_b"]}  # fmt: skip
        out.write('],"tables":{')
        out.write(",".join(f'"{name}":{_typed(values)}' for name, values in shown.items()))
        out.write('},"cells":{')
        for i, name in enumerate(_COLUMNS):
            values = self._load(name)[plan.kept]
            if plan.maps is not None:
                if name == "q":
                    values = _renumber(values, plan.maps["q"], None)
                elif name in _STRINGS:
                    values = plan.maps["strings"][values]
            out.write(("," if i else "") + f'"{name}":{_typed(values, floating=name in _FLOATS, const=True)}')
        out.write("}}")

    def json(self) -> str:
        """The payload as one string (small runs and tests; the report streams it)."""
        out = io.StringIO()
        self.write_json(out)
        return out.getvalue()
