"""The "Compared with the baseline" section of report.md and report.html.

`evalrun run SPEC --baseline DIR` (or `baseline:` in the spec) remembers the baseline run folder
in the run's store (`meta.baseline`); every report build then compares the run with it — the
same paired comparison as `evalrun diff DIR RUN` — and shows the change per model × prompt, and
the rows that flipped, each a link that opens the row explorer on it. The explorer is also given
the flipped rows, so `#explore?model=M&prompt=P&flipped=down` (or `up`) shows just those.
A baseline that can no longer be read is said in the section; it never fails a report.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from evalrun.errors import EvalrunError, NotARunFolder
from evalrun.store.run_store import STORE_NAME, Store

__all__ = [
    "BaselineComparison",
    "baseline_html",
    "baseline_markdown",
    "baseline_of",
    "checked_baseline",
    "record_baseline",
    "remember_baseline",
]

SHOWN_FLIPS = 40  # flipped rows linked one by one per model × prompt and direction


@dataclass
class BaselineComparison:
    """The run compared with its baseline (`result`, a `DiffResult`), or why it could not be."""

    folder: Path
    result: Any = None
    problem: str | None = None


def checked_baseline(baseline: Path) -> str:
    """`baseline` as it is remembered (its resolved path), checked to be a run folder so that a
    wrong path is bad input before anything is sent."""
    baseline = Path(baseline)
    if not (baseline / STORE_NAME).is_file():
        raise NotARunFolder(f"--baseline {baseline}: not a run folder: no {STORE_NAME} here (give reports/<name>/<run>/)")
    return str(baseline.resolve())


def record_baseline(store: Store, baseline: str) -> None:
    """Remember a checked baseline in the run's store; a new one makes the next report build
    rewrite the reports."""
    if store.meta().get("baseline") != baseline:
        store.set_meta(baseline=baseline, reports_state="")


def remember_baseline(folder: Path, baseline: Path) -> None:
    """Record `baseline` as the run folder's baseline (what a run given one does when it opens
    its folder)."""
    value = checked_baseline(baseline)
    with Store.open(folder) as store:
        record_baseline(store, value)


def baseline_of(folder: Path, store: Store) -> BaselineComparison | None:
    """The comparison with the remembered baseline, None when the run has none."""
    path = store.meta().get("baseline")
    if not path:
        return None
    from evalrun.across.diff import diff

    try:
        return BaselineComparison(Path(path), diff(Path(path), folder))
    except EvalrunError as exc:
        return BaselineComparison(Path(path), problem=str(exc))


def _pt(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:+.1f} pt"


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.1f}%"


def _interval(row: dict[str, Any]) -> str:
    low, high = row["diff_ci_low"], row["diff_ci_high"]
    return "—" if math.isnan(low) else f"[{100 * low:+.1f}, {100 * high:+.1f}]"


def _rests_on(comparison: BaselineComparison) -> str:
    p = comparison.result.pairing
    return (
        f"Paired on (model, prompt, dataset row id, repeat) over {len(p.row_ids):,} rows with the same content in both "
        f"runs; {p.changed_rows:,} rows left out because their content changed, {p.only_base_rows:,} in the baseline "
        f"only, {p.only_cand_rows:,} in this run only. change = this run − the baseline, with its 95 % paired interval "
        "and test (the statistics of the Comparisons); flipped: rows right in one run only."
    )


def baseline_markdown(comparison: BaselineComparison | None) -> list[str]:
    """The section's lines for report.md ([] without a baseline)."""
    if comparison is None:
        return []
    lines = ["## Compared with the baseline", "", f"baseline: `{comparison.folder}`", ""]
    if comparison.result is None:
        return [*lines, f"The baseline could not be compared: {comparison.problem}", ""]
    lines += [
        "| model | prompt | n | baseline | this run | change | 95 % interval | p | test | flipped up | flipped down "
        "| prompt changed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in comparison.result.rows:
        lines.append(
            f"| {row['model']} | {row['prompt']} | {row['n']} | {_pct(row['acc_base'])} | {_pct(row['acc_cand'])} "
            f"| {_pt(row['diff'])} | {_interval(row)} | {row['p_value']:.3g} | {row['test']} | {row['flipped_up']} "
            f"| {row['flipped_down']} | {'yes' if row['prompt_changed'] else 'no'} |"
        )
    return [*lines, "", _rests_on(comparison), ""]


def _link(model: str, prompt: str, **state: str) -> str:
    parts = [f"model={quote(model, safe='')}", f"prompt={quote(prompt, safe='')}"]
    parts += [f"{k}={quote(v, safe='')}" for k, v in state.items()]
    return "#explore?" + "&".join(parts)


def _flip_list(model: str, prompt: str, ids: list[str], direction: str, explorer: bool) -> str:
    if not ids:
        return ""
    esc = html.escape
    shown = ids[:SHOWN_FLIPS]
    items = ", ".join(
        f'<a href="{esc(_link(model, prompt, row=i))}">{esc(i)}</a>' if explorer else esc(i) for i in shown
    )
    more = f" and {len(ids) - len(shown):,} more" if len(ids) > len(shown) else ""
    word = "right now, wrong in the baseline" if direction == "up" else "wrong now, right in the baseline"
    head = (f'<a href="{esc(_link(model, prompt, flipped=direction))}">{len(ids):,} {word}</a>' if explorer
            else f"{len(ids):,} {word}")  # fmt: skip
    return f"<li>{head}: {items}{more}</li>"


def baseline_html(comparison: BaselineComparison | None, *, explorer: bool = True) -> str:
    """The section for report.html ('' without a baseline), and the flipped rows for the explorer."""
    if comparison is None:
        return ""
    esc = html.escape
    parts = ['<section id="baseline"><h2>Compared with the baseline</h2>',
             f'<p class="note">baseline: <code>{esc(str(comparison.folder))}</code></p>']  # fmt: skip
    if comparison.result is None:
        parts.append(f'<p class="banner warn">The baseline could not be compared: {esc(str(comparison.problem))}</p>')
        return "".join([*parts, "</section>"])
    head = ["model", "prompt", "n", "baseline", "this run", "change", "95 % interval", "p", "test", "prompt changed"]
    parts.append("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>")
    flips = []
    for row in comparison.result.rows:
        cells = [row["model"], row["prompt"], f"{row['n']:,}", _pct(row["acc_base"]), _pct(row["acc_cand"]),
                 _pt(row["diff"]), _interval(row), f"{row['p_value']:.3g}", row["test"],
                 "yes" if row["prompt_changed"] else "no"]  # fmt: skip
        parts.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
        up, down = comparison.result.flips.get((row["model"], row["prompt"]), ([], []))
        listed = _flip_list(row["model"], row["prompt"], up, "up", explorer) + _flip_list(
            row["model"], row["prompt"], down, "down", explorer
        )
        if listed:
            flips.append(f"<h3>{esc(row['model'])} · {esc(row['prompt'])}</h3><ul>{listed}</ul>")
    parts.append("</tbody></table>")
    parts.append(f'<p class="note">{esc(_rests_on(comparison))}</p>')
    parts += flips
    data = {f"{m}\u0000{p}": {"up": up, "down": down} for (m, p), (up, down) in comparison.result.flips.items()}
    # The explorer reads the flipped rows from here (its `flipped=up|down` filter); `</` cannot end the script.
    text = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    parts.append(f'<script type="application/json" id="baseline-flips">{text}</script>')
    return "".join([*parts, "</section>"])
