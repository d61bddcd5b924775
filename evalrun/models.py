"""The model capability and price table (`models.yaml`), extendable from a spec."""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from evalrun.errors import SpecError
from evalrun.messages_api import SAMPLING_PARAMS
from evalrun.yamlio import load_yaml

__all__ = [
    "SAMPLING_PARAMS",
    "ModelInfo",
    "ModelTable",
    "Price",
    "builtin_table",
]

_PRICE_KEYS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_ENTRY_KEYS = {
    "family", "dated_id", "aliases", "prefill", "refuses", "exclusive", "thinking",
    "cache_min_tokens", "context_window", "price", "retires", "price_note", "needs_key",
    "thinking_modes", "effort_levels",
}  # fmt: skip
THINKING_MODES = ("budget", "adaptive")


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float


@dataclass(frozen=True)
class ModelInfo:
    """What evalrun knows about one model. `known=False` means the table has no entry."""

    id: str
    known: bool = True
    family: str = "other"
    dated_id: str | None = None
    aliases: tuple[str, ...] = ()
    prefill: bool | None = None  # None: unknown, find out from the first responses
    refuses: frozenset[str] = frozenset()
    exclusive: tuple[frozenset[str], ...] = ()
    thinking: str = "optional"
    cache_min_tokens: int | None = None
    context_window: int | None = None
    price: Price | None = None
    retires: str | None = None
    price_note: str | None = None
    needs_key: bool = True  # False: its server takes no API key (a local server)
    # The `thinking` types it takes ("budget", "adaptive") and its `output_config.effort` levels;
    # None: not known, so not checked before sending.
    thinking_modes: frozenset[str] | None = None
    effort_levels: tuple[str, ...] | None = None

    @property
    def response_id(self) -> str:
        """The id the API puts in a response's `model` field."""
        return self.dated_id or self.id


@dataclass(frozen=True)
class ModelTable:
    """Models by id, with alias lookup, the API-version rules and the table's `as_of` date."""

    models: Mapping[str, ModelInfo]
    as_of: str
    default_api_version: str = "2023-06-01"
    api_versions: Mapping[str, frozenset[str]] = field(default_factory=dict)
    _index: dict[str, ModelInfo] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, ModelInfo] = {}
        for info in self.models.values():
            for name in (info.id, info.dated_id, *info.aliases):
                if name:
                    index[name] = info
        object.__setattr__(self, "_index", index)

    def get(self, name: str) -> ModelInfo:
        """The entry for `name` (an id, alias or dated id), or an unknown-model placeholder."""
        return self._index.get(name) or ModelInfo(id=name, known=False)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._index

    def nearest(self, name: str) -> str | None:
        """The table's id, dated id or alias closest to a name it does not know (a typo's likely
        intent: `claude-sonet-4-6` → `claude-sonnet-4-6`), or None when nothing is close."""
        close = difflib.get_close_matches(name, sorted(self._index), n=1, cutoff=0.8)
        return close[0] if close else None

    def removed_params(self, api_version: str) -> frozenset[str]:
        """Request parameters that do not exist under this API version."""
        return self.api_versions.get(api_version, frozenset())

    def extended(self, entries: Mapping[str, Any], *, source: str) -> ModelTable:
        """A new table with `entries` (raw YAML mappings) merged over this one's.

        An entry for an existing id overrides only the keys it names; a new id is a new model.
        """
        raw = {mid: _to_raw(info) for mid, info in self.models.items()}
        for mid, entry in entries.items():
            if not isinstance(entry, Mapping):
                raise SpecError(f"{source}: model_table.{mid}: expected a mapping of model properties")
            existing = self.get(mid)
            target_id = existing.id if existing.known else mid  # an alias overrides its model
            merged = copy.deepcopy(raw.get(target_id, {}))
            for key, value in entry.items():
                if key == "price" and isinstance(value, Mapping) and isinstance(merged.get("price"), Mapping):
                    merged["price"] = {**merged["price"], **value}
                else:
                    merged[key] = value
            raw[target_id] = merged
        return _parse_table(
            {
                "as_of": self.as_of,
                "default_api_version": self.default_api_version,
                "api_versions": {v: {"removed_params": sorted(p)} for v, p in self.api_versions.items()},
                "models": raw,
            },
            source=source,
        )


def _to_raw(info: ModelInfo) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "family": info.family,
        "prefill": info.prefill,
        "refuses": sorted(info.refuses),
        "exclusive": [sorted(group) for group in info.exclusive],
        "thinking": info.thinking,
        "aliases": list(info.aliases),
    }
    if not info.needs_key:
        raw["needs_key"] = False
    for key in ("dated_id", "cache_min_tokens", "context_window", "retires", "price_note"):
        if getattr(info, key) is not None:
            raw[key] = getattr(info, key)
    if info.price is not None:
        raw["price"] = {k: getattr(info.price, k) for k in _PRICE_KEYS}
    if info.thinking_modes is not None:
        raw["thinking_modes"] = sorted(info.thinking_modes)
    if info.effort_levels is not None:
        raw["effort_levels"] = list(info.effort_levels)
    return raw


def _parse_entry(mid: str, entry: Mapping[str, Any], *, source: str) -> ModelInfo:
    where = f"{source}: models.{mid}"
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise SpecError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_ENTRY_KEYS))})")
    price = _parse_price(entry["price"], f"{where}.price") if entry.get("price") is not None else None
    refuses = frozenset(_strings(entry.get("refuses"), f"{where}.refuses"))
    bad_params = refuses - set(SAMPLING_PARAMS)
    if bad_params:
        raise SpecError(f"{where}.refuses: {sorted(bad_params)[0]!r} is not one of {', '.join(SAMPLING_PARAMS)}")
    thinking = entry.get("thinking", "optional")
    if thinking not in ("none", "optional", "always"):
        raise SpecError(f"{where}.thinking: expected none, optional or always, got {thinking!r}")
    _check_scalars(entry, where)
    exclusive = entry.get("exclusive") or []
    if not isinstance(exclusive, list):
        raise SpecError(f"{where}.exclusive: expected a list of parameter lists, got {exclusive!r}")
    groups = tuple(frozenset(_strings(group, f"{where}.exclusive.{i}")) for i, group in enumerate(exclusive))
    return ModelInfo(
        id=mid,
        family=str(entry.get("family", "other")),
        dated_id=entry.get("dated_id"),
        aliases=tuple(_strings(entry.get("aliases"), f"{where}.aliases")),
        prefill=entry.get("prefill"),
        refuses=refuses,
        exclusive=groups,
        thinking=thinking,
        cache_min_tokens=entry.get("cache_min_tokens"),
        context_window=entry.get("context_window"),
        price=price,
        retires=str(entry["retires"]) if entry.get("retires") else None,
        price_note=entry.get("price_note"),
        needs_key=entry.get("needs_key", True),
        **_reasoning_entry(entry, where),
    )


def _parse_price(p: Any, where: str) -> Price:
    """An entry's `price` (USD per million tokens); the cache prices default to Anthropic's multipliers."""
    if not isinstance(p, Mapping):
        raise SpecError(f"{where}: expected a mapping with {', '.join(_PRICE_KEYS)}")
    missing = [k for k in ("input", "output") if k not in p]
    if missing:
        raise SpecError(f"{where}: missing {missing[0]!r}")
    bad = set(p) - set(_PRICE_KEYS)
    if bad:
        raise SpecError(f"{where}: unknown key {sorted(bad)[0]!r} (known: {', '.join(_PRICE_KEYS)})")
    for key, value in p.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise SpecError(f"{where}.{key}: expected a number ≥ 0 (USD per million tokens), got {value!r}")
    inp, out = float(p["input"]), float(p["output"])
    return Price(
        input=inp,
        output=out,
        # Anthropic's multipliers, used when a custom entry gives only input/output.
        cache_write_5m=float(p.get("cache_write_5m", inp * 1.25)),
        cache_write_1h=float(p.get("cache_write_1h", inp * 2)),
        cache_read=float(p.get("cache_read", inp * 0.1)),
    )


def _check_scalars(entry: Mapping[str, Any], where: str) -> None:
    """The entry's yes/no flags, texts and token counts have their types."""
    for name in ("prefill", "needs_key"):
        value = entry.get(name)
        if (value is not None or (name == "needs_key" and name in entry)) and not isinstance(value, bool):
            raise SpecError(f"{where}.{name}: expected true or false, got {value!r}")
    for name in ("family", "dated_id", "price_note"):
        if entry.get(name) is not None and not isinstance(entry[name], str):
            raise SpecError(f"{where}.{name}: expected text, got {entry[name]!r}")
    for name in ("cache_min_tokens", "context_window"):
        value = entry.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SpecError(f"{where}.{name}: expected a whole number of tokens ≥ 1, got {value!r}")


def _reasoning_entry(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The entry's `thinking_modes` and `effort_levels` (absent: None, not checked)."""
    out: dict[str, Any] = {}
    if entry.get("thinking_modes") is not None:
        modes = _strings(entry["thinking_modes"], f"{where}.thinking_modes")
        bad = [m for m in modes if m not in THINKING_MODES]
        if bad:
            raise SpecError(f"{where}.thinking_modes: {bad[0]!r} is not one of {', '.join(THINKING_MODES)}")
        out["thinking_modes"] = frozenset(modes)
    if entry.get("effort_levels") is not None:
        out["effort_levels"] = tuple(_strings(entry["effort_levels"], f"{where}.effort_levels"))
    return out


def _strings(value: Any, where: str) -> list[str]:
    """A list of strings (None is empty); anything else is a SpecError naming `where`."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where}: expected a list of names, got {value!r}")
    return list(value)


def _parse_table(raw: Mapping[str, Any], *, source: str) -> ModelTable:
    entries = raw.get("models") or {}
    if not isinstance(entries, Mapping):
        raise SpecError(f"{source}: models: expected a mapping of model ids to properties")
    models = {}
    for mid, entry in entries.items():
        if entry is not None and not isinstance(entry, Mapping):
            raise SpecError(f"{source}: models.{mid}: expected a mapping of model properties, got {entry!r}")
        models[str(mid)] = _parse_entry(str(mid), entry or {}, source=source)
    versions = {
        str(v): frozenset((rules or {}).get("removed_params") or ())
        for v, rules in (raw.get("api_versions") or {}).items()
    }
    return ModelTable(
        models=models,
        as_of=str(raw.get("as_of", "unknown")),
        default_api_version=str(raw.get("default_api_version", "2023-06-01")),
        api_versions=versions,
    )


@cache
def builtin_table() -> ModelTable:
    """The table shipped with evalrun."""
    text = resources.files("evalrun").joinpath("models.yaml").read_text(encoding="utf-8")
    return _parse_table(yaml.safe_load(text), source="evalrun/models.yaml")


def load_table_file(path: Path) -> dict[str, Any]:
    """Raw model entries from a user's table file (a `models:` mapping, or the mapping itself)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such model table file (model_table)") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: the model table is not UTF-8 text (model_table)") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read model table ({exc.strerror})") from None
    raw = load_yaml(text, source=str(path))
    if isinstance(raw, Mapping) and "models" in raw:
        raw = raw["models"]
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path}: expected a mapping of model ids to properties")
    return dict(raw)
