"""The viewer's HTML pages. A run's page is report.html's own sections (summary, accuracy,
comparisons, outcomes, settings: `evalrun.reports.html.render_report` over the run's `Report`,
built by the same `analyze` as the report files) with the viewer's live box and its paged cells
around them. Every value is escaped here; the scripts put texts in with `textContent`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["diff_page", "list_page", "run_page"]

_HEAD = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
         '<meta name="viewport" content="width=device-width, initial-scale=1">'
         '<title>{title}</title><link rel="stylesheet" href="/static/view.css"></head>\n<body>\n')  # fmt: skip


def list_page() -> str:
    """The run list: a shell the script fills from `GET /api/runs`."""
    return (
        _HEAD.format(title="evalrun runs")
        + '<header class="top"><h1>Runs</h1><p class="meta" id="root"></p></header>'
        + '<div id="runs-app" data-page="list"><p class="note">Loading the run list…</p></div>'
        + '<noscript><p class="note">The viewer needs JavaScript; <code>evalrun runs</code> lists the same.</p></noscript>'
        + '<script src="/static/view.js"></script></body></html>\n'
    )


def _report_state(folder: Path) -> str:
    """The store's report state: the cached sections are rebuilt when it changes."""
    from evalrun.reports.build import open_run, report_state

    store, _ = open_run(folder, readonly=True)
    with store:
        return report_state(store)


def _build_report(folder: Path) -> str:
    from evalrun.reports.build import analyze, open_run
    from evalrun.reports.html import render_report

    store, settings = open_run(folder, readonly=True)
    with store:
        report = analyze(store, settings, folder=folder)
    page = render_report(report, explorer=None)
    start = page.find("<body>")
    end = page.rfind("</body>")
    style_at = page.find("<style>")
    style = page[style_at : page.find("</style>", style_at) + len("</style>")] if style_at >= 0 else ""
    return style + (page[start + len("<body>") : end] if start >= 0 and end > start else "")


def run_page(folder: Path, name: str, cached: Callable[[tuple[Path, str], Callable[[], str]], str]) -> str:
    """A run's page: the live box, the report's sections (cached by the store's report state)
    and the cells section with review controls, filled by the script from the API."""
    from evalrun.errors import EvalrunError
    from evalrun.reports.build import open_run

    try:
        body = cached((folder, _report_state(folder)), lambda: _build_report(folder))
        store, settings = open_run(folder, readonly=True)
        store.close()
    except EvalrunError as exc:
        body, settings = f'<p class="banner failed">Cannot read this run: {escape(str(exc))}</p>', {}
    scorer: dict[str, Any] = dict(settings.get("scorer") or {})
    grades: list[str] = []
    if scorer.get("type") == "judge":
        from evalrun.spec import parse_scorer

        grades = parse_scorer(scorer).grade_labels
    attrs = f'data-page="run" data-run="{escape(name)}" data-grades="{escape(json.dumps(grades))}"'
    return (
        _HEAD.format(title=escape(f"{settings.get('name') or name} · evalrun"))
        + f'<div class="viewer-bar"><a href="/">← all runs</a> <span class="run-name">{escape(name)}</span>'
        + (f' · <a href="/runs/{quote(name)}/report.html">report.html with its row explorer</a>'
           if (folder / "report.html").is_file() else "")
        + "</div>"
        + f'<div id="view-app" {attrs}><section id="live"><h2>Progress</h2><div id="live-box">'
        + '<p class="note">Loading…</p></div></section></div>'
        + f'<div class="report">{body}</div>'
        + '<section id="cells"><h2>Cells and reviews</h2><p class="note">Every cell, read from the store a page '
        + "at a time. A verdict or grade you give is stored in the run folder (the latest counts; the history "
        + "is kept) and used by the reports from then on: the cell scores by your verdict.</p>"
        + '<div id="cells-app"></div></section>'
        + '<script src="/static/view.js"></script></body></html>\n'
    )


def diff_page(name_a: str, name_b: str, a: Path, b: Path) -> str:
    """Two runs side by side (`evalrun diff`): the rows both answered, and the rows that flipped."""
    from evalrun.errors import EvalrunError
    from evalrun.view.pairing import pair_runs

    head = _HEAD.format(title="side by side · evalrun") + '<div class="viewer-bar"><a href="/">← all runs</a></div>'
    head += f"<h1>Side by side</h1><p class=\"meta\">A: {escape(name_a)} · B: {escape(name_b)}</p>"
    try:
        paired = pair_runs(a, b)
    except EvalrunError as exc:
        return head + f'<p class="banner failed">{escape(str(exc))}</p></body></html>\n'

    def pct(value: Any) -> str:
        return "—" if value is None else f"{100 * value:.1f}%"

    def pts(value: Any) -> str:
        return "—" if value is None else f"{100 * value:+.1f}"

    rows = "".join(
        f"<tr><td>{escape(v['model'])}</td><td>{escape(v['prompt'])}</td><td>{v['n']:,}</td>"
        f"<td>{pct(v['acc_a'])}</td><td>{pct(v['acc_b'])}</td>"
        f"<td>{pts(v['diff'])} pts ({pts(v['diff_ci_low'])} to {pts(v['diff_ci_high'])})</td>"
        f"<td>{v['a_only']:,}</td><td>{v['b_only']:,}</td><td>{escape(v['note'])}</td></tr>"
        for v in paired["variants"]
    )
    flips = "".join(
        f"<tr><td>{escape(f['model'])}</td><td>{escape(f['prompt'])}</td><td>{escape(f['row_id'])}</td>"
        f"<td>{'A' if f['right'] == 'a' else 'B'}</td></tr>"
        for f in paired["flips"]
    )
    return (
        head
        + '<p class="note">What <code>evalrun diff A B</code> computes: the rows both runs answered, paired on '
        + "(model, prompt, row id, repeat) and reduced per row; B − A with its 95 % interval. A row whose "
        + "content changed between the runs is left out and counted in the note.</p>"
        + "<table><thead><tr><th>model</th><th>prompt</th><th>rows</th><th>A</th><th>B</th><th>B − A</th>"
        + f"<th>only A right</th><th>only B right</th><th>note</th></tr></thead><tbody>{rows}</tbody></table>"
        + f"<h2>Rows that flipped</h2><p class=\"note\">{paired['flips_shown']:,} of {paired['flips_total']:,} shown.</p>"
        + "<table><thead><tr><th>model</th><th>prompt</th><th>row</th><th>right in</th></tr></thead>"
        + f"<tbody>{flips}</tbody></table>"
        + "</body></html>\n"
    )
