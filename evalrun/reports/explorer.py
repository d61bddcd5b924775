"""The row explorer of report.html: every cell's request, reply and score, embedded compactly.

`ExplorerResults` is a results writer: its sink sees every cell once during the report's
streaming pass and *spills* what the explorer shows to files in a scratch folder of the run
folder (`Staged.scratch`) as it goes; `HtmlReport` picks the sink up with `collected(staged)` and
streams the data into one `<script type="application/json">` of report.html. The scratch folder
goes away with the other temporary files when the reports are committed (or abandoned).

Memory is bounded whatever the size of the run: the sink holds one chunk of cells at a time and
small de-duplication indexes (text → id, turn → id, request → id), each a two-generation map of
at most `INDEX_ENTRIES` entries (and `INDEX_CHARS` characters of text) per generation. A text
seen again after its generation was dropped is written once more: the page grows a little, memory
does not. Writing the page loads the spilled columns one at a time (32 bits a cell each), and the
spill holds little more than the page, so that too is bounded by the caps below.

The page is bounded too:

* a text longer than its cap (`REPLY_CHARS`, `PART_CHARS`) keeps its head and tail with a note
  of how much was left out (results.csv and the store keep every character);
* at most `MAX_CELLS` cells and `MAX_TEXT_CHARS` characters of text are embedded. Above either,
  the page holds a sample of dataset *rows* with every cell of each sampled row (all models,
  prompts and repeats, so disagreements between variants still show): a row is kept when the top
  16 bits of a seeded hash of its id (`SAMPLE_SEED`) are below a threshold. Told how many cells
  will come (`expected_cells`: `ExplorerResults` counts the store's), the sink starts with the
  share that keeps about 95 % of the cell cap, and lowers it after a chunk when the text written
  per kept cell says the text cap will not hold; cells of rows above the threshold are never
  spilled. Whenever the kept cells outgrow a cap anyway (text is counted when first written,
  against the row that first used it), the threshold drops to about 90 % of the caps, and when
  the page is planned the exact text it holds is checked, the threshold lowered until it fits.
  The same store always gives the same sample;
* images are embedded once each (by sha256) as data: URLs, while each is at most
  `IMAGE_BYTES` and all together at most `IMAGES_TOTAL`; beyond that the page shows the path.
  Images given by URL are shown as links and never fetched.

The payload (format `FORMAT`) is documented in `ExplorerSink.write_json`; `decode` reads it back.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import math
import operator
import shutil
import tempfile
import weakref
from array import array
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

__all__ = [
    "FORMAT",
    "IMAGES_TOTAL",
    "IMAGE_BYTES",
    "INDEX_CHARS",
    "INDEX_ENTRIES",
    "MAX_CELLS",
    "MAX_TEXT_CHARS",
    "OUTCOMES",
    "PART_CHARS",
    "REPLY_CHARS",
    "SAMPLE_SEED",
    "ExplorerResults",
    "ExplorerSink",
    "collected",
    "decode",
    "hand_over",
    "render_request",
]

FORMAT = 2
MAX_CELLS = 100_000
MAX_TEXT_CHARS = 16_000_000
REPLY_CHARS = 4_000
PART_CHARS = 6_000
IMAGE_BYTES = 512 * 1024
IMAGES_TOTAL = 4 * 1024 * 1024
SAMPLE_SEED = 0
INDEX_ENTRIES = 8_192
INDEX_CHARS = 1_000_000

# The outcome of a cell, as the explorer filters it (index = code in the payload).
OUTCOMES = ("correct", "wrong", "unparsed", "error", "pending")
_CODE = {name: i for i, name in enumerate(OUTCOMES)}
# Turn roles (index = code in the payload).
ROLES = ("system", "user", "assistant", "prefill", "note")
_ROLE_CODE = {name: i for i, name in enumerate(ROLES)}

# Sampling: a row is kept while the top 16 bits of its hash are below `ExplorerSink.top`.
_BUCKET_SHIFT = 48
_BUCKETS = 1 << 16
_SHRINK_TO = 0.9
_AIM = 0.95  # of the caps, when the number of cells is known

# The payload's cell columns: ints (-1: missing), floats (NaN: missing) and string ids (0 is the
# empty string). `_row` (the dataset row's position) and `_b` (its hash bucket) stay in the spill,
# where every column is 32 bits wide (the bucket 16).
_INTS = ("m", "p", "k", "o", "q", "it", "ot", "cw", "cr", "n")
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


def clip(text: str, cap: int) -> tuple[str, bool]:
    """`text` as embedded: at most about `cap` characters, its head and tail around a note."""
    if len(text) <= cap:
        return text, False
    head = cap * 3 // 4
    tail = cap - head
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[… {omitted:,} characters left out here; results.csv has the whole text …]\n{text[-tail:]}", True


def _row_hash(row_id: str) -> int:
    digest = hashlib.blake2b(f"{SAMPLE_SEED}\x00{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _outcome(record: Mapping[str, Any]) -> int:
    status = record.get("status")
    if status in ("ok", "refused"):  # a refusal is an answer, never a right one
        return 0 if record.get("correct") is True else 1
    return _CODE.get(str(status), 3)


def _script_safe(text: str) -> str:
    """JSON text that can sit inside a `<script>` element: no `<`, `>` or `&` in it."""
    if "<" in text:
        text = text.replace("<", "\\u003c")
    if ">" in text:
        text = text.replace(">", "\\u003e")
    if "&" in text:
        text = text.replace("&", "\\u0026")
    return text


_ENCODE = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str).encode
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_STRING = json.JSONEncoder(ensure_ascii=False).encode


def _json(value: Any) -> str:
    return _script_safe(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False))


# -- requests ----------------------------------------------------------------------------------
# A rendered request is a tuple of turns: (role, parts). Roles: "system", "user", "assistant",
# "prefill" (a final assistant turn: the reply continues it) and "note" (parameters, the output
# format, tools). A part is a text (str) or an image: ("img", sha256, path, media_type) for a file,
# ("url", url) for an image given by URL.
Part = str | tuple[str, ...]
Turn = tuple[str, tuple[Part, ...]]


def _clip(text: str) -> str:
    return text if len(text) <= PART_CHARS else clip(text, PART_CHARS)[0]


def _block_parts(content: Any) -> tuple[Part, ...]:
    if type(content) is str:
        return (content if len(content) <= PART_CHARS else clip(content, PART_CHARS)[0],)
    parts: list[Part] = []
    for block in content if isinstance(content, list) else [content]:
        if not isinstance(block, Mapping):
            parts.append(_clip(_ENCODE(block)))
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(_clip(block["text"]))
        elif kind == "image":
            found = block.get("source")
            source: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
            if source.get("type") == "evalrun_file":
                parts.append(("img", str(source.get("sha256") or ""), str(source.get("path") or ""),
                              str(source.get("media_type") or "")))  # fmt: skip
            elif source.get("type") == "url":
                parts.append(("url", str(source.get("url") or "")))
            else:
                parts.append(f"[image: {source.get('type', 'unknown')} source, not embedded]")
        else:
            parts.append(_clip(f"[{kind}] " + _ENCODE({k: v for k, v in block.items() if k != "type"})))
    return tuple(parts)


_NOTE_PARAMS = ("max_tokens", "temperature", "top_p", "top_k", "stop_sequences", "thinking")  # and in _note_turn's key
_MISSING = object()


def _scalar(value: Any) -> str:
    kind = type(value)
    return repr(value) if kind is int or kind is float else _ENCODE(value)


def _note(body: Mapping[str, Any]) -> str:
    """The parameters, output format and tools of a request, as one line."""
    notes = [f"{k}={_scalar(body[k])}" for k in _NOTE_PARAMS if k in body]
    output = body.get("output_config")
    if isinstance(output, Mapping) and output.get("format") is not None:
        notes.append("output format: " + _ENCODE(output["format"]))
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        names = [str(t.get("name")) for t in tools if isinstance(t, Mapping)]
        notes.append("tools: " + ", ".join(names))
        if body.get("tool_choice") is not None:
            notes.append("tool_choice: " + _ENCODE(body["tool_choice"]))
    return " · ".join(notes)


def render_request(body: Mapping[str, Any]) -> tuple[Turn, ...]:
    """A request body as the explorer shows it (the model id and image data left out)."""
    turns: list[Turn] = []
    system = body.get("system")
    if system:
        turns.append(("system", _block_parts(system)))
    messages = body.get("messages")
    if isinstance(messages, list):
        last = len(messages) - 1
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping):
                continue
            role = str(message.get("role") or "user")
            if i == last and role == "assistant":
                role = "prefill"
            turns.append((role, _block_parts(message.get("content", ""))))
    note = _note(body)
    if note:
        turns.append(("note", (_clip(note),)))
    return tuple(turns)


def _reply(text: Any, message_json: Any, raw: Any) -> str:
    """The reply as a reader wants it (from the record's `response_text` and the cell's stored
    message or raw reply): its text, plus tool calls and thinking when it has them."""
    text = text or ""
    if not message_json or ('"tool_use"' not in message_json and "thinking" not in message_json):
        if not text and raw:
            return "[not a valid message] " + str(raw)
        return text if type(text) is str else str(text)
    try:
        message = json.loads(message_json)
    except ValueError:
        return str(text)
    pieces = []
    for block in message.get("content") or ():
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text":
            pieces.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            pieces.append(f"[tool_use {block.get('name')}] " + json.dumps(block.get("input"), ensure_ascii=False))
        elif block.get("type") in ("thinking", "redacted_thinking"):
            pieces.append(thinking_piece(block))
    return "\n".join(pieces)


# Marks a thinking block inside a reply's text: explorer.js shows it collapsed (never scored).
THINKING_MARK = "\u241e"


def thinking_piece(block: Mapping[str, Any]) -> str:
    """A thinking (or redacted thinking) block as the explorer shows it: between two marks."""
    if block.get("type") == "redacted_thinking":
        return f"{THINKING_MARK}[redacted thinking: encrypted, no text]{THINKING_MARK}"
    return f"{THINKING_MARK}{block.get('thinking') or ''}{THINKING_MARK}"


def _error(status: Any, error: Any, http_status: Any, error_type: Any) -> str:
    """A cell's error as shown: the record's, headed by the HTTP status and error type."""
    if status == "pending":
        return "not sent yet"
    if not error:
        return ""
    error = str(error)
    head = " ".join(str(v) for v in (http_status, error_type) if v)
    return f"{head}: {error}" if head and not error.startswith(head) else error


def _fields(record: Mapping[str, Any], columns: Sequence[str]) -> str:
    """A field scorer's per-field correctness, as "name:1,name:0"."""
    found = []
    for key in columns:
        value = record.get(key)
        if isinstance(value, bool | int | float) and not (isinstance(value, float) and math.isnan(value)):
            found.append(f"{key[len('correct_'):]}:{int(bool(value))}")
    return ",".join(found)


_RECORD_FIELDS = ("model", "prompt", "row_id", "status", "correct", "response_text", "error",
                  *(name for _, name in _INT_FIELDS), *(name for _, name in _FLOAT_FIELDS),
                  *(name for _, name, _ in _TEXT_FIELDS))  # fmt: skip
_CELL_FIELDS = ("request_key", "request_json", "sharing", "message_json", "raw", "http_status", "error_type", "row_seq")


def _columns(rows: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Sequence[Any]]:
    """Each of `names` as a column of `rows` (None where a row lacks it), each row read once."""
    present = [name for name in names if name in rows[0]]
    columns: dict[str, Sequence[Any]] = dict.fromkeys(names, [None] * len(rows))
    if len(present) < 2:
        columns.update({name: [row.get(name) for row in rows] for name in present})
        return columns
    try:
        columns.update(zip(present, zip(*map(operator.itemgetter(*present), rows), strict=True), strict=True))
    except KeyError:  # rows unlike the first
        columns.update({name: [row.get(name) for row in rows] for name in names})
    return columns


def _numbers(values: Sequence[Any]) -> np.ndarray:
    """Values as float64, NaN where missing (None, NaN, text that is no number)."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        out = np.full(len(values), math.nan)
        for i, value in enumerate(values):
            if isinstance(value, bool) or value is None or value == "":
                continue
            with contextlib.suppress(TypeError, ValueError):
                out[i] = float(value)
        return out


def _ints(values: Sequence[Any]) -> np.ndarray:
    """Values as int64, -1 where missing."""
    numbers = _numbers(values)
    numbers[~np.isfinite(numbers)] = -1
    return numbers.astype(np.int64)


# -- de-duplication ----------------------------------------------------------------------------
class _Index:
    """key → id, bounded: two generations of at most `entries` keys (and `chars` characters of text
    in the keys, as `add` is told) each; a key found in the old generation moves to the new one.
    `roll()` (between chunks, so that callers may hold `new.get`) drops the old generation when
    the new one is full."""

    def __init__(self, *, entries: int, chars: int = 1 << 62, fixed: Mapping[Any, int] | None = None) -> None:
        self.entries = entries
        self.chars = chars
        self.fixed = dict(fixed or {})
        self.new: dict[Any, int] = dict(self.fixed)
        self.old: dict[Any, int] = {}
        self.new_chars = 0

    def find(self, key: Any, weight: int = 0) -> int | None:
        found = self.new.get(key)
        if found is None:
            found = self.old.get(key)
            if found is not None:
                self.add(key, found, weight)
        return found

    def add(self, key: Any, value: int, weight: int = 0) -> None:
        self.new[key] = value
        self.new_chars += weight

    def roll(self) -> None:
        if len(self.new) > self.entries or self.new_chars > self.chars:
            self.old = self.new
            self.new = dict(self.fixed)
            self.new_chars = 0


# -- the sink ----------------------------------------------------------------------------------
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
        bodies = _Bodies.of(folder)
        sink = cls(directory, expected_cells=bodies.cells if bodies else None, bodies=bodies.get if bodies else None)
        if bodies is not None:
            sink.closers.append(bodies.close)
            weakref.finalize(sink, bodies.close)  # a build that fails before closing the sink
        return sink

    # ResultsSink
    def begin(self, columns: list[str]) -> None:
        self.field_columns = [c for c in columns if c.startswith("correct_")]

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
            names = rec[field]
            if not known.keys() >= set(names):  # new names, numbered in order of appearance
                for name in names:
                    if name not in known:
                        known[name] = len(known)
            columns[field[0]] = [known[name] for name in names]
        columns["o"] = [(0 if right is True else 1) if status == "ok" else _CODE.get(str(status), 3)
                        for status, right in zip(rec["status"], rec["correct"], strict=True)]  # fmt: skip
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
        columns["r"] = texts(rec["row_id"], PART_CHARS)
        for column, name, cap in _TEXT_FIELDS:
            columns[column] = texts(rec[name], cap)
        columns["y"] = texts([_reply(text, message, raw) for text, message, raw
                              in zip(rec["response_text"], cel["message_json"], cel["raw"], strict=True)], REPLY_CHARS)  # fmt: skip
        columns["e"] = texts([_error(status, error, http, kind) for status, error, http, kind
                              in zip(rec["status"], rec["error"], cel["http_status"], cel["error_type"], strict=True)],
                             PART_CHARS)  # fmt: skip
        fields = self.field_columns
        columns["f"] = texts([_fields(r, fields) for r in records], PART_CHARS) if fields else [0] * n
        row_seq = cel["row_seq"]
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
        self.spilled_cells += n

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
        if not raw or type(raw) is not str:
            return -1
        try:
            body, end = _SCAN(raw, 0)  # json.loads without its wrappers: the stored body is compact JSON
            if end != len(raw):
                body = json.loads(raw)
        except (StopIteration, ValueError):
            try:
                body = json.loads(raw)
            except ValueError:
                return -1
        if type(body) is not dict:
            return -1
        # As render_request, but each turn looked up by its content first: most turns of a grid
        # (system prompts, few-shot turns, a row's question asked of several models) come again.
        turn, seen = self._turn, self.contents.new.get
        ids = []
        system = body.get("system")
        if system:
            found = seen((0, system)) if type(system) is str else None
            ids.append(found if found is not None else turn(0, system, j))
        messages = body.get("messages")
        if type(messages) is list:
            left = len(messages)
            for message in messages:
                left -= 1
                if type(message) is not dict:
                    continue
                role = message.get("role")
                if role == "user":
                    code = 1
                elif role == "assistant":
                    code = 2 if left else 3  # the last turn: a prefill
                else:
                    code = _ROLE_CODE.get(str(role or "user"), 4)
                content = message.get("content", "")
                found = seen((code, content)) if type(content) is str else None
                ids.append(found if found is not None else turn(code, content, j))
        note = self._note_turn(body, j)
        if note >= 0:
            ids.append(note)
        rendered = tuple(ids)
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
        if key:
            self.by_key.add(key, found)
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
        rq_off, tu_off = _offsets(tables["rq_len"]), _offsets(tables["tu_len"])
        q = self._load("q")[kept]
        requests_used = np.zeros(self.counts["requests"], dtype=bool)
        requests_used[q[q >= 0]] = True
        turns_used = np.zeros(self.counts["turns"], dtype=bool)
        turns_used[tables["rq_turn"][_ranges(rq_off, requests_used)]] = True
        parts = tables["tu_part"][_ranges(tu_off, turns_used)]
        media_used = np.zeros(self.counts["media"], dtype=bool)
        media_used[-1 - parts[parts < 0]] = True
        strings_used = np.zeros(self.counts["strings"], dtype=bool)
        strings_used[0] = True
        strings_used[parts[parts >= 0]] = True
        strings_used[tables["md_a"][media_used]] = True
        strings_used[tables["md_b"][media_used & (tables["md_kind"] == 0)]] = True
        for name in _STRINGS:
            strings_used[self._load(name)[kept]] = True
        string_map = _numbering(strings_used)
        media_map = _numbering(media_used)
        maps = {"q": _numbering(requests_used), "strings": string_map}
        md_kind = tables["md_kind"][media_used]
        md_b = tables["md_b"][media_used]
        renumbered = {
            "rq_len": tables["rq_len"][requests_used],
            "rq_turn": _numbering(turns_used)[tables["rq_turn"][_ranges(rq_off, requests_used)]],
            "tu_role": tables["tu_role"][turns_used],
            "tu_len": tables["tu_len"][turns_used],
            "tu_part": _renumber(parts, string_map, media_map),
            "md_kind": md_kind,
            "md_a": string_map[tables["md_a"][media_used]],
            "md_b": np.where(md_kind == 0, _renumber(md_b, string_map, None), -1),
        }
        return _Plan(kept, renumbered, strings_used, maps, int(lengths[strings_used].sum(dtype=np.int64)))

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
        (repeat), `o` (outcome code), `q` (request id, -1: none), `it`, `ot`, `cw`, `cr` (tokens,
        -1: unknown), `n` (attempts), floats `c` (cost), `l` (latency), `sc` (partial score; NaN:
        none), and string ids `r` (row id), `a` (answer), `t` (target), `g` (grade), `y` (reply),
        `e` (error), `s` (stop reason), `d` (answer mode), `x` (grader's explanation), `f`
        (per-field correctness, "name:1,name:0"), `u` (source). Tables: request `i`'s turns are
        ``rq_turn[rq_off[i]:rq_off[i+1]]``; turn `t` has role ``roles[tu_role[t]]`` and parts
        ``tu_part[tu_off[t]:tu_off[t+1]]``, a part being a string id (>= 0) or a media part ``-1 - m``:
        an image file (``md_kind[m]`` 0; `md_a` its sha256, `md_b` its path, as string ids) or an
        image URL (1; `md_a` the URL)."""
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


class _Plan(NamedTuple):
    kept: np.ndarray  # positions in the spill of the embedded cells, in reading order
    tables: dict[str, np.ndarray]
    strings: np.ndarray | None  # which spilled strings the page holds (None: all)
    maps: dict[str, np.ndarray] | None  # old id → new id of requests ("q") and strings
    text_chars: int


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lengths, dtype=np.int64)])


def _numbering(used: np.ndarray) -> np.ndarray:
    """Old id → new id (-1 for the unused), the used ones numbered in order."""
    return (np.cumsum(used, dtype=np.int32) - 1).astype(np.int32)


def _renumber(parts: np.ndarray, strings: np.ndarray, media: np.ndarray | None) -> np.ndarray:
    """Parts (or ids) renumbered: ids >= 0 through `strings`, media parts ``-1 - m`` through `media`
    (-1 stays -1 without)."""
    out = parts.copy()
    ids = parts >= 0
    out[ids] = strings[parts[ids]]
    if media is not None:
        out[~ids] = -1 - media[-1 - parts[~ids]]
    return out


def _ranges(offsets: np.ndarray, used: np.ndarray) -> np.ndarray:
    """The positions ``offsets[i]:offsets[i+1]`` of every `used` i, concatenated."""
    starts = offsets[:-1][used]
    lengths = offsets[1:][used] - starts
    starts, lengths = starts[lengths > 0], lengths[lengths > 0]
    if not lengths.size:
        return np.zeros(0, dtype=np.int32)
    steps = np.ones(int(lengths.sum()), dtype=np.int32)
    steps[0] = starts[0]
    # At the start of each following range, jump from the last position of the previous one.
    steps[np.cumsum(lengths)[:-1]] = starts[1:] - (starts[:-1] + lengths[:-1]) + 1
    return np.cumsum(steps)


_INT32 = np.iinfo(np.int32)
_KINDS = (("u8", np.uint8), ("i8", np.int8), ("u16", np.uint16), ("i16", np.int16), ("i32", np.int32))


def _typed(values: np.ndarray, *, floating: bool = False, const: bool = False) -> str:
    """A column as the payload writes it: a typed array in base64, or (`const`) a constant."""
    if floating:
        values = values.astype("<f4")
        first = float(values[0]) if values.size else 0.0
        if const and values.size and (np.isnan(values).all() or (math.isfinite(first) and (values == first).all())):
            return f'{{"t":"f32","const":{"null" if math.isnan(first) else repr(first)}}}'
        return f'{{"t":"f32","b64":"{base64.b64encode(values.tobytes()).decode("ascii")}"}}'
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    name, kind = "f64", "<f8"  # beyond 32 bits: exact up to 2**53
    for label, candidate in _KINDS:
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            name, kind = label, np.dtype(candidate).newbyteorder("<").str
            break
    if const and values.size and low == high:
        return f'{{"t":"{name}","const":{low}}}'
    return f'{{"t":"{name}","b64":"{base64.b64encode(values.astype(kind).tobytes()).decode("ascii")}"}}'


# -- reading a payload back --------------------------------------------------------------------
_DTYPES = {"u8": "<u1", "i8": "<i1", "u16": "<u2", "i16": "<i2", "i32": "<i4", "f32": "<f4", "f64": "<f8"}


def _column(spec: Mapping[str, Any], count: int) -> np.ndarray:
    kind = np.dtype(_DTYPES[spec["t"]])
    if "const" in spec:
        value = spec["const"]
        return np.full(count, math.nan if value is None else value, dtype=kind)
    return np.frombuffer(base64.b64decode(spec["b64"]), dtype=kind)


def decode(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A payload (as parsed from the page) in plain Python: `cells` as lists per column (None where
    a float is missing), `requests` as lists of turn ids, `turns` as (role letter, parts), a part
    being a string id, ``{"img": sha256, "path": string id}`` or ``{"url": string id}``. For tests
    and anyone reading a page's data."""
    count = int(payload["count"])
    cells: dict[str, list[Any]] = {}
    for name, spec in payload["cells"].items():
        values = _column(spec, count).tolist()
        cells[name] = [None if isinstance(v, float) and math.isnan(v) else v for v in values]
    t = {name: _column(spec, 0).tolist() for name, spec in payload["tables"].items()}
    strings = payload["strings"]

    def part(p: int) -> Any:
        if p >= 0:
            return p
        m = -1 - p
        return {"img": strings[t["md_a"][m]], "path": t["md_b"][m]} if t["md_kind"][m] == 0 else {"url": t["md_a"][m]}

    roles = payload["roles"]
    turns = [(roles[t["tu_role"][i]][0], [part(p) for p in t["tu_part"][t["tu_off"][i]: t["tu_off"][i + 1]]])
             for i in range(len(t["tu_off"]) - 1)]  # fmt: skip
    requests = [t["rq_turn"][t["rq_off"][i]: t["rq_off"][i + 1]] for i in range(len(t["rq_off"]) - 1)]
    return {**payload, "cells": cells, "turns": turns, "requests": requests}


# -- the writer --------------------------------------------------------------------------------
_COLLECTED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def collected(staged: Any) -> Any:
    """The explorer sink that ran while writing into `staged` (closed), if one did, or what a
    child process built in its place (`evalrun.reports.explorer_process.ChildExplorer`)."""
    sink = _COLLECTED.get(staged)
    if sink is None:
        return None
    if isinstance(sink, ExplorerSink):
        sink.close()
    return sink


def hand_over(staged: Any, explorer: Any) -> None:
    """Make `explorer` (built elsewhere) the one `collected(staged)` returns."""
    _COLLECTED[staged] = explorer


class ExplorerResults:
    """The explorer's data for report.html: its sink spills into a scratch folder of the staged
    run folder; `HtmlReport` streams it into the page. The request bodies are read from the store
    by `_Bodies` (in the order they were written: a sequential read, cheaper than the pass joining
    them to every cell)."""

    filename = "report.html"
    needs_requests = False

    def available(self) -> bool:
        return True

    def open(self, staged: Any) -> ExplorerSink:
        sink = ExplorerSink.for_run(staged.folder, staged.scratch("explorer"))
        _COLLECTED[staged] = sink
        return sink


class _Bodies:
    """The request bodies of a run folder's store, by key, on a read-only connection of their own.

    The pass meets the cells in plan order, and the requests were written in that order: so the
    bodies are read a page at a time in the order they were written, and a key is looked for in
    the pages read so far and the next few (`AHEAD`) before it is looked up alone (a plan changed
    halfway, a request shared). Pages read and not yet asked for wait, at most `KEEP` of them."""

    PAGE = 512
    AHEAD = 4
    KEEP = 8 * 512

    def __init__(self, store: Any) -> None:
        self.store = store
        (self.cells,) = store.query("SELECT count(*) FROM cells")[0]
        self.after = 0  # the last rowid read
        self.page: list[tuple[int, str, str]] = []  # (rowid, key, body) of the page being met in order
        self.at = 0
        self.waiting: dict[str, str] = {}  # read, met out of order, not asked for yet
        self.done = False
        self.lookups = 0

    @classmethod
    def of(cls, folder: Path) -> _Bodies | None:
        from evalrun.errors import StoreError
        from evalrun.store.run_store import Store

        try:
            return cls(Store.open_readonly(folder))
        except (StoreError, OSError):
            return None

    def get(self, key: str) -> str | None:
        page, at = self.page, self.at
        if at < len(page):
            if page[at][1] == key:  # the usual case: the next one
                self.at = at + 1
                return page[at][2]
            self._wait(page[at:])
            self.page, self.at = [], 0
        body = self.waiting.pop(key, None)
        if body is not None:
            return body
        for _ in range(self.AHEAD):
            rows = self._read()
            if not rows:
                break
            if not self.waiting and rows[0][1] == key:  # in order again
                self.page, self.at = rows, 1
                return rows[0][2]
            self._wait(rows)
            body = self.waiting.pop(key, None)
            if body is not None:
                return body
        self.lookups += 1
        return self.store.request_body(key)  # type: ignore[no-any-return]

    def _read(self) -> list[tuple[int, str, str]]:
        if self.done:
            return []
        rows: list[tuple[int, str, str]] = self.store.query(
            "SELECT rowid, key, body_json FROM requests WHERE rowid > ? ORDER BY rowid LIMIT ?", (self.after, self.PAGE))
        if len(rows) < self.PAGE:
            self.done = True
        if rows:
            self.after = rows[-1][0]
        return rows

    def _wait(self, rows: list[tuple[int, str, str]]) -> None:
        waiting = self.waiting
        for _, key, body in rows:
            waiting[key] = body
        while len(waiting) > self.KEEP:
            del waiting[next(iter(waiting))]

    def close(self) -> None:
        self.store.close()
