"""report.html's settings section: everything recorded for the run, readable, then as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from evalrun.reports.html_kit import esc, fmt

__all__ = ["settings_section"]


# -- settings ----------------------------------------------------------------------------------
_SETTINGS_ORDER = ["name", "description", "endpoint", "spec_path", "dataset", "rows", "cluster", "models", "modes",
                   "api_versions", "prompts", "params", "scorer", "repeats", "reducer", "budget_usd", "concurrency",
                   "max_retries", "prices", "prices_as_of", "evalrun_version", "warnings"]  # fmt: skip
_SETTINGS_LABELS = {"spec_path": "spec", "budget_usd": "budget (USD)", "api_versions": "API versions",
                    "modes": "answer modes", "prices": "prices (USD per million tokens)",
                    "prices_as_of": "prices as of", "evalrun_version": "evalrun", "model_labels": "model labels"}  # fmt: skip


def _value_html(value: Any, depth: int = 0) -> str:
    """A settings value as readable HTML: scalars as text, lists as lists, mappings as nested lists."""
    if value is None:
        return '<span class="note">none</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return f"<pre>{esc(value)}</pre>" if "\n" in value else esc(value)
    if isinstance(value, int | float):
        return esc(fmt("", value)) if not isinstance(value, float) or not value.is_integer() else esc(f"{value:g}")
    if isinstance(value, Mapping):
        return _mapping_html(value, depth)
    if isinstance(value, list | tuple):
        return _list_html(value, depth)
    return esc(value)


def _flat(value: Any) -> bool:
    return not isinstance(value, Mapping | list) or all(not isinstance(x, Mapping | list) for x in value)


def _mapping_html(value: Mapping[str, Any], depth: int) -> str:
    """Up to 8 flat entries on one line; otherwise a nested definition list."""
    if not value:
        return '<span class="note">none</span>'
    shown = {k: v for k, v in value.items() if v is not None}
    if all(_flat(v) for v in shown.values()) and len(shown) <= 8:
        return ", ".join(f"{esc(k)}: {_value_html(v, depth + 1)}" for k, v in shown.items())
    items = "".join(f"<dt>{esc(k)}</dt><dd>{_value_html(v, depth + 1)}</dd>" for k, v in value.items())
    return f'<dl class="settings">{items}</dl>'


def _list_html(value: list[Any] | tuple[Any, ...], depth: int) -> str:
    if not value:
        return '<span class="note">none</span>'
    if all(not isinstance(v, Mapping | list) for v in value):
        return ", ".join(_value_html(v, depth + 1) for v in value)
    return "<ul>" + "".join(f"<li>{_value_html(v, depth + 1)}</li>" for v in value) + "</ul>"


def _prompt_html(prompt: Mapping[str, Any]) -> str:
    parts = []
    system = prompt.get("system")
    if system:
        text = system if isinstance(system, str) else json.dumps(system, ensure_ascii=False, indent=1)
        parts.append(f'<div class="tpl"><span class="role">system</span><pre>{esc(text)}</pre></div>')
    for message in prompt.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, indent=1)
        parts.append(f'<div class="tpl"><span class="role">{esc(message.get("role", ""))}</span><pre>{esc(text)}</pre></div>')
    if prompt.get("prefill"):
        parts.append(f'<div class="tpl"><span class="role">prefill</span><pre>{esc(prompt["prefill"])}</pre></div>')
    rest = {k: v for k, v in prompt.items() if k not in ("system", "messages", "prefill") and v not in (None, {}, [])}
    if rest:
        parts.append(_value_html(rest))
    return "".join(parts)


def settings_section(settings: Mapping[str, Any]) -> str:
    if not settings:
        return '<p class="note">No settings recorded.</p>'
    found = settings.get("spec")
    spec: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    shown: dict[str, Any] = {}
    for key in _SETTINGS_ORDER:
        if key == "description" and spec.get("description"):
            shown[key] = spec["description"]
        elif key == "params" and spec.get("params"):
            shown[key] = spec["params"]
        elif key == "max_retries" and "max_retries" in spec:
            shown[key] = spec["max_retries"]
        elif key in settings:
            shown[key] = settings[key]
    for key, value in settings.items():
        if key not in shown and key != "spec":
            shown[key] = value
    items = []
    found = spec.get("prompts")
    templates: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    for key, value in shown.items():
        label = esc(_SETTINGS_LABELS.get(key, key))
        if key == "prompts" and templates:
            body = "".join(f"<details><summary>{esc(name)}</summary>{_prompt_html(p)}</details>"
                           for name, p in templates.items() if isinstance(p, Mapping))  # fmt: skip
        else:
            body = _value_html(value)
        items.append(f"<dt>{label}</dt><dd>{body}</dd>")
    raw = json.dumps(settings, ensure_ascii=False, indent=2, sort_keys=True, default=str)
    return (f'<dl class="settings">{"".join(items)}</dl>'
            f'<details class="more"><summary>Everything recorded for the run (JSON)</summary>'
            f'<pre class="json">{esc(raw)}</pre></details>')  # fmt: skip
