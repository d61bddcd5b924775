"""The row explorer of report.html: every cell's request, reply and score, embedded compactly.

`ExplorerResults` is a results writer: its sink sees every cell once during the report's
streaming pass and keeps what the explorer shows, in column lists with every text interned once
(a system prompt shared by 100,000 requests is stored once). `HtmlReport` picks the finished
payload up with `collected(staged)` and embeds it as one `<script type="application/json">`.

Memory and page size are bounded, whatever the size of the run:

* a text longer than its cap (`REPLY_CHARS`, `PART_CHARS`) keeps its head and tail with a note
  of how much was left out (results.csv and the store keep every character);
* at most `MAX_CELLS` cells and `MAX_TEXT_CHARS` characters of distinct text are embedded.
  Above either, the page holds a sample of dataset *rows* with every cell of each sampled row
  (all models, prompts and repeats, so disagreements between variants still show): a row is kept
  when a seeded hash of its id (`SAMPLE_SEED`) is below a threshold, and the threshold is halved
  (in hash order) whenever the kept cells outgrow a cap. The same store always gives the same
  sample;
* images are embedded once each (by sha256) as data: URLs, while each is at most
  `IMAGE_BYTES` and all together at most `IMAGES_TOTAL`; beyond that the page shows the path.
  Images given by URL are shown as links and never fetched.

The payload (format version 1) is documented in `payload()`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import weakref
from array import array
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "IMAGES_TOTAL",
    "IMAGE_BYTES",
    "MAX_CELLS",
    "MAX_TEXT_CHARS",
    "OUTCOMES",
    "PART_CHARS",
    "REPLY_CHARS",
    "SAMPLE_SEED",
    "ExplorerResults",
    "ExplorerSink",
    "collected",
    "payload_json",
]

MAX_CELLS = 100_000
MAX_TEXT_CHARS = 16_000_000
REPLY_CHARS = 4_000
PART_CHARS = 6_000
IMAGE_BYTES = 512 * 1024
IMAGES_TOTAL = 4 * 1024 * 1024
SAMPLE_SEED = 0

# Texts read straight from a results record: (column, record field, cap on its length).
_TEXT_FIELDS = (("a", "answer", PART_CHARS), ("t", "target", PART_CHARS), ("s", "stop_reason", PART_CHARS),
                ("d", "answer_mode", PART_CHARS), ("x", "explanation", REPLY_CHARS), ("u", "source", PART_CHARS))  # fmt: skip

# The outcome of a cell, as the explorer filters it (index = code in the payload).
OUTCOMES = ("correct", "wrong", "unparsed", "error", "pending")
_CODE = {name: i for i, name in enumerate(OUTCOMES)}
_TOP = 1 << 64

# The payload's cell columns: ints (-1: missing), floats (NaN: missing, null in the JSON), and
# string ids (0 is the empty string).
_INTS = ("m", "p", "k", "o", "q", "it", "ot", "cw", "cr", "n")
_FLOATS = ("c", "l", "sc")
_STRINGS = ("r", "a", "t", "y", "e", "s", "d", "x", "f", "u")
_COLUMNS = (*_INTS, *_FLOATS, *_STRINGS)
# Columns read straight from a results record: (column, record field[, cap on its length]).
_INT_FIELDS = (("it", "input_tokens"), ("ot", "output_tokens"), ("cw", "cache_creation_input_tokens"),
               ("cr", "cache_read_input_tokens"), ("n", "attempts"))  # fmt: skip
_FLOAT_FIELDS = (("c", "cost_usd"), ("l", "latency_s"))


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


def _number(value: Any, digits: int | None = None) -> float | int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    if number.is_integer() and digits is None:
        return int(number)
    if digits is None:
        return number
    return float(f"{number:.{digits}g}")


def _outcome(record: Mapping[str, Any]) -> int:
    status = record.get("status")
    if status == "ok":
        return _CODE["correct"] if record.get("correct") is True else _CODE["wrong"]
    return _CODE.get(str(status), _CODE["error"])


# -- requests ----------------------------------------------------------------------------------
# A rendered request is a tuple of turns: (role, parts). Roles: "system", "user", "assistant",
# "prefill" (a final assistant turn: the reply continues it) and "note" (parameters, the output
# format, tools). A part is a text (str) or an image: ("img", sha256, path, media_type) for a file,
# ("url", url) for an image given by URL.
Part = str | tuple[str, ...]
Turn = tuple[str, tuple[Part, ...]]


_ENCODE = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str).encode


def _clip(text: str) -> str:
    return text if len(text) <= PART_CHARS else clip(text, PART_CHARS)[0]


def _block_parts(content: Any) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (_clip(content),)
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


_NOTE_PARAMS = ("max_tokens", "temperature", "top_p", "top_k", "stop_sequences", "thinking")


def _scalar(value: Any) -> str:
    kind = type(value)
    return repr(value) if kind is int or kind is float else _ENCODE(value)


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
    if notes:
        turns.append(("note", (_clip(" · ".join(notes)),)))
    return tuple(turns)


def _reply(record: Mapping[str, Any], cell: Mapping[str, Any]) -> str:
    """The reply as a reader wants it: its text, plus tool calls and thinking when it has them."""
    text = str(record.get("response_text") or "")
    raw = cell.get("message_json")
    if not raw or ('"tool_use"' not in raw and '"thinking"' not in raw):
        if not text and cell.get("raw"):
            return "[not a valid message] " + str(cell["raw"])
        return text
    try:
        message = json.loads(raw)
    except ValueError:
        return text
    pieces = []
    for block in message.get("content") or ():
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text":
            pieces.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            pieces.append(f"[tool_use {block.get('name')}] " + json.dumps(block.get("input"), ensure_ascii=False))
        elif block.get("type") == "thinking":
            pieces.append(f"[thinking] {block.get('thinking') or ''}")
    return "\n".join(pieces)


def _error(record: Mapping[str, Any], cell: Mapping[str, Any]) -> str:
    if record.get("status") == "pending":
        return "not sent yet"
    error = str(record.get("error") or "")
    if not error:
        return ""
    head = " ".join(str(v) for v in (cell.get("http_status"), cell.get("error_type")) if v)
    return f"{head}: {error}" if head and not error.startswith(head) else error


def _fields(record: Mapping[str, Any], columns: Sequence[str]) -> str:
    """A field scorer's per-field correctness, as "name:1,name:0"."""
    found = []
    for key in columns:
        value = record.get(key)
        if isinstance(value, bool | int | float) and not (isinstance(value, float) and math.isnan(value)):
            found.append(f"{key[len('correct_'):]}:{int(bool(value))}")
    return ",".join(found)


# -- the sink ----------------------------------------------------------------------------------
_ROLE_CODES = {"system": "s", "user": "u", "assistant": "a", "prefill": "p", "note": "n"}


def _int(value: Any) -> int:
    """An int column's value; -1 when missing."""
    if type(value) is int:
        return value
    number = _number(value)
    return int(number) if number is not None else -1


def _float(value: Any) -> float:
    """A float column's value; NaN when missing."""
    if type(value) is float:
        return value
    number = _number(value)
    return float(number) if number is not None else math.nan


class ExplorerSink:
    """Collects the cells the explorer embeds (see the module docstring for the caps).

    Columns are compact arrays (ints, floats, string ids); every distinct text is held once."""

    def __init__(self, *, max_cells: int | None = None, max_text_chars: int | None = None) -> None:
        self.max_cells = MAX_CELLS if max_cells is None else max_cells
        self.max_text_chars = MAX_TEXT_CHARS if max_text_chars is None else max_text_chars
        self.threshold = _TOP
        self.models: dict[str, int] = {}
        self.prompts: dict[str, int] = {}
        self.ints: dict[str, array[int]] = {name: array("q") for name in (*_INTS, *_STRINGS, "_row")}
        self.floats: dict[str, array[float]] = {name: array("d") for name in _FLOATS}
        self.hashes: array[int] = array("Q")
        self.strings: list[str] = [""]
        self._ids: dict[str, int] = {"": 0}
        self.turns: list[tuple[str, tuple[Any, ...]]] = []  # (role code, parts: string ids or media tuples)
        self._turn_ids: dict[tuple[str, tuple[Any, ...]], int] = {}
        self.requests: list[tuple[int, ...]] = []  # turn ids
        self._request_ids: dict[tuple[int, ...], int] = {}
        self._recent: dict[str, int] = {}
        self.field_columns: list[str] = []
        self.text_chars = 0
        self.seen_cells = 0
        self.dropped_cells = 0
        self.truncated = 0
        self.repeats = False
        self.media = False
        self.payload: dict[str, Any] | None = None

    # ResultsSink
    def begin(self, columns: list[str]) -> None:
        self.field_columns = [c for c in columns if c.startswith("correct_")]

    def write(self, records: list[dict[str, Any]], cells: list[dict[str, Any]]) -> None:
        for record, cell in zip(records, cells, strict=True):
            self._add(record, cell)
            if len(self.hashes) > self.max_cells or self.text_chars > self.max_text_chars:
                self._shrink()

    def close(self) -> None:
        self.payload = self._payload()

    # internals
    def _sid(self, text: str) -> int:
        found = self._ids.get(text)
        if found is None:
            found = self._ids[text] = len(self.strings)
            self.strings.append(text)
            self.text_chars += len(text)
        return found

    def _text(self, value: Any, cap: int) -> int:
        if value is None or value == "":
            return 0
        if type(value) is not str:
            if isinstance(value, float) and math.isnan(value):
                return 0
            value = str(value)
        text: str = value
        if len(text) > cap:
            text = clip(text, cap)[0]
            self.truncated += 1
        return self._sid(text)

    def _request(self, cell: Mapping[str, Any]) -> int:
        key = str(cell.get("request_key") or "")
        found = self._recent.get(key)
        if found is not None:
            return found
        raw = cell.get("request_json")
        if not raw:
            return -1
        try:
            body = json.loads(raw)
        except ValueError:
            return -1
        turn_ids = []
        for role, parts in render_request(body) if isinstance(body, Mapping) else ():
            ids: list[Any] = []
            for part in parts:
                if isinstance(part, str):
                    ids.append(self._sid(part))
                else:
                    self.media = True
                    ids.append((part[0], *(self._sid(p) for p in part[1:])))
            turn = (_ROLE_CODES.get(role, "n"), tuple(ids))
            found = self._turn_ids.get(turn)
            if found is None:
                found = self._turn_ids[turn] = len(self.turns)
                self.turns.append(turn)
            turn_ids.append(found)
        rendered = tuple(turn_ids)
        index = self._request_ids.get(rendered)
        if index is None:
            index = self._request_ids[rendered] = len(self.requests)
            self.requests.append(rendered)
        if len(self._recent) > 4096:  # repeats of a request come together: a short memory is enough
            self._recent.clear()
        self._recent[key] = index
        return index

    def _add(self, record: Mapping[str, Any], cell: Mapping[str, Any]) -> None:
        self.seen_cells += 1
        row_id = str(record["row_id"])
        digest = _row_hash(row_id)
        if digest >= self.threshold:
            self.dropped_cells += 1
            return
        ints, floats, get = self.ints, self.floats, record.get
        ids, text = self._ids, self._text
        self.hashes.append(digest)
        ints["_row"].append(_int(cell.get("row_seq")))
        model, prompt = str(record["model"]), str(record["prompt"])
        m = self.models.get(model)
        if m is None:
            m = self.models[model] = len(self.models)
        p = self.prompts.get(prompt)
        if p is None:
            p = self.prompts[prompt] = len(self.prompts)
        ints["m"].append(m)
        ints["p"].append(p)
        repeat = _int(get("repeat"))
        if repeat > 0:
            self.repeats = True
        ints["k"].append(repeat)
        ints["o"].append(_outcome(record))
        ints["q"].append(self._request(cell))
        for column, name in _INT_FIELDS:
            value = get(name)
            ints[column].append(value if type(value) is int else _int(value))
        for column, name in _FLOAT_FIELDS:
            value = get(name)
            floats[column].append(value if type(value) is float else _float(value))
        score = _float(get("score"))
        floats["sc"].append(score if 0 < score < 1 else math.nan)
        ints["r"].append(self._sid(row_id))
        for column, name, cap in _TEXT_FIELDS:
            value = get(name)
            found = ids.get(value) if type(value) is str and len(value) <= cap else None
            ints[column].append(found if found is not None else text(value, cap))
        ints["y"].append(text(_reply(record, cell), REPLY_CHARS))
        ints["e"].append(text(_error(record, cell), PART_CHARS))
        ints["f"].append(text(_fields(record, self.field_columns), PART_CHARS) if self.field_columns else 0)

    def _shrink(self) -> None:
        """Keep the half of the sampled rows with the lowest hashes; drop what only the others used."""
        distinct = sorted(set(self.hashes))
        self.threshold = distinct[len(distinct) // 2] if len(distinct) > 1 else 0
        keep = [i for i, h in enumerate(self.hashes) if h < self.threshold]
        self.dropped_cells += len(self.hashes) - len(keep)
        self.hashes = array("Q", (self.hashes[i] for i in keep))
        for name, ivalues in self.ints.items():
            self.ints[name] = array("q", (ivalues[i] for i in keep))
        for name, fvalues in self.floats.items():
            self.floats[name] = array("d", (fvalues[i] for i in keep))
        used = sorted(set(self.ints["q"]) - {-1})
        renumber = {old: new for new, old in enumerate(used)}
        self.ints["q"] = array("q", (renumber.get(q, -1) for q in self.ints["q"]))
        self._recent = {}
        requests = [self.requests[i] for i in used]
        used_turns = sorted({t for rendered in requests for t in rendered})
        turn_map = {old: new for new, old in enumerate(used_turns)}
        turns = [self.turns[i] for i in used_turns]
        # Keep only the texts still used, renumbered.
        alive = {0}
        for name in _STRINGS:
            alive.update(self.ints[name])
        for _, parts in turns:
            for part in parts:
                if isinstance(part, int):
                    alive.add(part)
                else:
                    alive.update(part[1:])
        order = sorted(alive)
        remap = {old: new for new, old in enumerate(order)}
        self.strings = [self.strings[i] for i in order]
        self._ids = {text: i for i, text in enumerate(self.strings)}
        self.text_chars = sum(len(text) for text in self.strings)
        for name in _STRINGS:
            self.ints[name] = array("q", (remap[i] for i in self.ints[name]))
        self.turns = [
            (role, tuple(remap[x] if isinstance(x, int) else (x[0], *(remap[y] for y in x[1:])) for x in parts))
            for role, parts in turns
        ]
        self._turn_ids = {turn: i for i, turn in enumerate(self.turns)}
        self.requests = [tuple(turn_map[t] for t in rendered) for rendered in requests]
        self._request_ids = {rendered: i for i, rendered in enumerate(self.requests)}

    def _media(self, part: Any, images: dict[str, dict[str, str]]) -> Any:
        if isinstance(part, int):
            return part
        if part[0] == "img":
            _, sha, path, media = part
            images.setdefault(self.strings[sha], {"path": self.strings[path], "media_type": self.strings[media]})
            return {"img": self.strings[sha], "path": path}
        return {"url": part[1]}

    def _payload(self) -> dict[str, Any]:
        import numpy as np

        count = len(self.hashes)
        ints = {name: np.frombuffer(values, dtype=np.int64) if len(values) else np.zeros(0, np.int64)
                for name, values in self.ints.items()}  # fmt: skip
        floats = {name: np.frombuffer(values, dtype=np.float64) if len(values) else np.zeros(0, np.float64)
                  for name, values in self.floats.items()}  # fmt: skip
        # Reading order: dataset row, repeat, then the variants in the spec's order.
        order = np.lexsort((ints["p"], ints["m"], ints["k"], ints["_row"])) if count else np.zeros(0, np.int64)
        cells: dict[str, Any] = {}
        for name in _COLUMNS:
            cells[name] = floats[name][order] if name in self.floats else ints[name][order]
        images: dict[str, dict[str, str]] = {}
        turns: list[Any] = self.turns
        if self.media:
            turns = [(role, tuple(self._media(part, images) for part in parts)) for role, parts in self.turns]
        return {
            "version": 1,
            "models": list(self.models),
            "prompts": list(self.prompts),
            "outcomes": list(OUTCOMES),
            "strings": self.strings,
            "turns": turns,
            "requests": self.requests,
            "images": _embed_images(images),
            "cells": cells,
            "count": count,
            "rows": int(np.unique(ints["_row"]).size),
            "repeats": self.repeats,
            "seen_cells": self.seen_cells,
            "sampled": self.dropped_cells > 0,
            "sample_seed": SAMPLE_SEED,
            "truncated": self.truncated,
            "caps": {"cells": self.max_cells, "text_chars": self.max_text_chars, "reply_chars": REPLY_CHARS,
                     "part_chars": PART_CHARS, "image_bytes": IMAGE_BYTES, "images_total": IMAGES_TOTAL},
        }  # fmt: skip


def _embed_images(images: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """sha256 → data: URL for the images that fit the caps and still match their hash."""
    out: dict[str, str] = {}
    total = 0
    for sha, info in images.items():
        media = info.get("media_type", "")
        if not media.startswith("image/") or not sha:
            continue
        path = Path(info.get("path", ""))
        try:
            size = path.stat().st_size
            if size > IMAGE_BYTES or total + size > IMAGES_TOTAL:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() != sha:
            continue
        total += len(data)
        out[sha] = f"data:{media};base64,{base64.b64encode(data).decode('ascii')}"
    return out


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _float_text(value: float) -> str:
    return "null" if value != value else f"{value:.6g}"


def payload_json(payload: Mapping[str, Any]) -> str:
    """The payload as JSON safe inside a `<script type="application/json">` element (no `<`, `>`
    or `&` in it). The cell columns, most of its size, are written directly: ints as they are,
    floats to six significant digits, NaN as null."""
    pieces = []
    for key, value in payload.items():
        if key == "cells":
            columns = []
            for name, values in value.items():
                items = values.tolist() if hasattr(values, "tolist") else list(values)
                body = ",".join(map(_float_text if name in _FLOATS else str, items))
                columns.append(f'"{name}":[{body}]')
            pieces.append(f'"cells":{{{",".join(columns)}}}')
        else:
            pieces.append(f"{_json(key)}:{_json(value)}")
    text = "{" + ",".join(pieces) + "}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a reply: keep the page writable
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


# -- the writer --------------------------------------------------------------------------------
_COLLECTED: weakref.WeakKeyDictionary[Any, ExplorerSink] = weakref.WeakKeyDictionary()


def collected(staged: Any) -> dict[str, Any] | None:
    """The explorer payload collected while writing into `staged`, if a sink ran for it."""
    sink = _COLLECTED.get(staged)
    return sink.payload if sink is not None else None


class ExplorerResults:
    """The explorer's data for report.html (its sink writes no file; `HtmlReport` embeds it)."""

    filename = "report.html"
    needs_requests = True

    def available(self) -> bool:
        return True

    def open(self, staged: Any) -> ExplorerSink:
        sink = ExplorerSink()
        _COLLECTED[staged] = sink
        return sink


def cell_count(payload: Mapping[str, Any] | None) -> int:
    return int(payload["count"]) if payload else 0


def names(payload: Mapping[str, Any] | None, kind: str) -> Sequence[str]:
    return list(payload[kind]) if payload else []
