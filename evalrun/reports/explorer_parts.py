"""The row explorer's data format: its caps and codes, how a request is rendered into turns and
parts, the de-duplication index, the packing of columns into the page, and `decode` to read a
payload back (see `evalrun.reports.explorer`)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["FORMAT", "IMAGES_TOTAL", "IMAGE_BYTES", "INDEX_CHARS", "INDEX_ENTRIES", "MAX_CELLS", "MAX_TEXT_CHARS", "OUTCOMES", "PART_CHARS", "REPLY_CHARS", "ROLES", "SAMPLE_SEED", "clip", "decode", "render_request", "review_code"]

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


def review_code(source: Any, correct: Any, auto: Any) -> int:
    """A cell's human review as the explorer filters it: 0 none, 1 reviewed, 2 reviewed and the
    human's score differs from the automatic one (`correct` against `correct_auto`)."""
    if source != "human":
        return 0
    return 1 if bool(correct) == bool(auto) else 2


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
# ("url", url) for an image given by URL, ("doc", label, link) for a document.
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
        elif kind == "document":
            parts.append(document_part(block))
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


def parse_body(raw: Any) -> dict[str, Any] | None:
    """A stored request body as a dict; None when there is none or it is not a JSON object."""
    if not raw or type(raw) is not str:
        return None
    try:
        body, end = _SCAN(raw, 0)  # json.loads without its wrappers: the stored body is compact JSON
        if end != len(raw):
            body = json.loads(raw)
    except (StopIteration, ValueError):
        try:
            body = json.loads(raw)
        except ValueError:
            return None
    return body if type(body) is dict else None


def body_turns(body: Mapping[str, Any]) -> Iterator[tuple[int, Any]]:
    """(role code, content) of a request's system prompt and messages, in order; a final
    assistant turn is a prefill."""
    system = body.get("system")
    if system:
        yield 0, system
    messages = body.get("messages")
    if type(messages) is not list:
        return
    left = len(messages)
    for message in messages:
        left -= 1
        if type(message) is not dict:
            continue
        role = message.get("role")
        if role == "user":
            yield 1, message.get("content", "")
        elif role == "assistant":
            yield (2 if left else 3), message.get("content", "")  # the last turn: a prefill
        else:
            yield _ROLE_CODE.get(str(role or "user"), 4), message.get("content", "")


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


def document_part(block: Mapping[str, Any]) -> tuple[str, str, str]:
    """A document block as the explorer shows it: ("doc", label, link) — the file's name, its
    page count and type (or the URL), and where to open it."""
    from pathlib import Path

    found = block.get("source")
    source: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    cited = " · citations" if isinstance(block.get("citations"), Mapping) else ""
    if source.get("type") == "url":
        url = str(source.get("url") or "")
        return ("doc", f"document by URL (not fetched){cited}", url)
    if source.get("type") == "evalrun_file":
        path = Path(str(source.get("path") or ""))
        pages = source.get("pages")
        size = f"{pages} page{'s' if pages != 1 else ''}" if isinstance(pages, int) and pages else "text"
        return ("doc", f"{path.name} · {size} · {source.get('media_type')}{cited}", path.as_uri() if path.is_absolute() else str(path))
    return ("doc", f"document ({source.get('type', 'unknown')} source, not embedded){cited}", "")


def _citations(block: Mapping[str, Any]) -> str:
    """A reply text block's cited spans, one line each: what was cited and where."""
    lines = []
    for cite in block.get("citations") or ():
        if not isinstance(cite, Mapping):
            continue
        where = [f"document {cite.get('document_index', '?')}"]
        if cite.get("start_page_number") is not None:
            where.append(f"pages {cite.get('start_page_number')}–{int(cite.get('end_page_number') or 0) - 1}")
        elif cite.get("start_char_index") is not None:
            where.append(f"characters {cite.get('start_char_index')}–{cite.get('end_char_index')}")
        lines.append(f"  [cites {', '.join(where)}: \"{cite.get('cited_text', '')}\"]")
    return "\n".join(lines)


def _reply(text: Any, message_json: Any, raw: Any) -> str:
    """The reply as a reader wants it (from the record's `response_text` and the cell's stored
    message or raw reply): its text, plus tool calls and thinking when it has them."""
    text = text or ""
    if not message_json or ('"tool_use"' not in message_json and "thinking" not in message_json and '"citations"' not in message_json):
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
            if block.get("citations"):
                pieces.append(_citations(block))
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


def plan_subset(
    kept: np.ndarray, q: np.ndarray, texts: Sequence[np.ndarray], tables: Mapping[str, np.ndarray],
    counts: Mapping[str, int], lengths: np.ndarray,
) -> _Plan:  # fmt: skip
    """The page's plan when only the `kept` cells are embedded: the texts, turns, requests and
    media they use (`q`: their request ids, `texts`: their string-id columns), renumbered."""
    rq_off, tu_off = _offsets(tables["rq_len"]), _offsets(tables["tu_len"])
    requests_used = np.zeros(counts["requests"], dtype=bool)
    requests_used[q[q >= 0]] = True
    turns_used = np.zeros(counts["turns"], dtype=bool)
    turns_used[tables["rq_turn"][_ranges(rq_off, requests_used)]] = True
    parts = tables["tu_part"][_ranges(tu_off, turns_used)]
    media_used = np.zeros(counts["media"], dtype=bool)
    media_used[-1 - parts[parts < 0]] = True
    strings_used = np.zeros(counts["strings"], dtype=bool)
    strings_used[0] = True
    strings_used[parts[parts >= 0]] = True
    strings_used[tables["md_a"][media_used]] = True
    strings_used[tables["md_b"][media_used & (tables["md_kind"] != 1)]] = True  # an image URL has no md_b
    for column in texts:
        strings_used[column] = True
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
        "md_b": np.where(md_kind != 1, _renumber(md_b, string_map, None), -1),
    }
    return _Plan(kept, renumbered, strings_used, maps, int(lengths[strings_used].sum(dtype=np.int64)))


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
    being a string id, ``{"img": sha256, "path": string id}``, ``{"url": string id}`` or
    ``{"doc": string id, "link": string id}``. For tests
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
        kind = t["md_kind"][m]
        if kind == 2:
            return {"doc": t["md_a"][m], "link": t["md_b"][m]}
        return {"img": strings[t["md_a"][m]], "path": t["md_b"][m]} if kind == 0 else {"url": t["md_a"][m]}

    roles = payload["roles"]
    turns = [(roles[t["tu_role"][i]][0], [part(p) for p in t["tu_part"][t["tu_off"][i]: t["tu_off"][i + 1]]])
             for i in range(len(t["tu_off"]) - 1)]  # fmt: skip
    requests = [t["rq_turn"][t["rq_off"][i]: t["rq_off"][i + 1]] for i in range(len(t["rq_off"]) - 1)]
    return {**payload, "cells": cells, "turns": turns, "requests": requests}
