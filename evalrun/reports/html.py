"""report.html: one self-contained page — summary, charts, comparisons, diagnostics, settings, and
a row explorer to read every cell's request and reply.

The file has no external references (no stylesheet, script, font or image fetched from
anywhere), so it can be mailed or archived and still open offline. Every user-supplied text goes
through ``html.escape`` here, and through ``textContent`` in the explorer's script.

Layout rules: tables fit the page width (secondary columns fold into a "more columns" table),
every rate is a percentage, chart labels sit in a column beside the chart so they cannot overlap,
and a failed run gets a red banner instead of an accuracy. The explorer's data and its
addressable state (``#explore?...``) are described in `evalrun.reports.explorer` and in
``static/explorer.js``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pandas as pd

from evalrun.reports.baseline import baseline_html
from evalrun.reports.frontier import frontier_html
from evalrun.reports.html_charts import accuracy_chart, cost_chart, spread_labels
from evalrun.reports.html_kit import (
    esc,
    explore_link,
    frame_records,
    frame_table,
    is_missing,
    static,
    unreliable,
    variant_label,
)
from evalrun.reports.html_settings import settings_section
from evalrun.reports.html_tables import comparison_section, letters_section, outcomes_section, summary_section
from evalrun.reports.trend import trend_sections
from evalrun.results.tally import diagnostics_frame

__all__ = ["DATA", "SECTIONS", "Page", "Section", "explore_link", "render_html", "render_report", "spread_labels",
           "with_sections", "write_html", "write_report"]


# -- the page ----------------------------------------------------------------------------------
def render_report(report: Any, explorer: Any = None) -> str:
    """The report.html of a `Report` (see `evalrun.reports.build`) as a string; ``explorer`` is
    the explorer sink that saw the cells (`evalrun.reports.explorer.collected`), if any."""
    out = io.StringIO()
    write_report(out, report, explorer=explorer)
    return out.getvalue()


def write_report(out: IO[str], report: Any, explorer: Any = None) -> None:
    """Write the report.html of a `Report` into `out`, the explorer's data streamed from its spill."""
    summary = pd.DataFrame(report.summary)
    comparison = pd.DataFrame(report.comparison) if report.comparison is not None else None
    repeats = _repeat_frame(report)
    write_html(
        out,
        summary=summary,
        comparison=comparison,
        settings=report.settings,
        choices=report.choices or None,
        outcomes=diagnostics_frame(report.tallies),
        repeats=repeats,
        cells=report.totals["cells"],
        failure=report.failure,
        simulated=report.simulated,
        explorer=explorer,
        totals=report.totals,
        sections=_report_sections(report, explorer is not None),
    )


def _report_sections(report: Any, explorer: bool) -> list[Section]:
    """`SECTIONS` with the ones a `Report` brings: the frontier and the history after Accuracy, the
    comparison with the baseline after Comparisons."""
    added = [*frontier_html(report), *trend_sections(getattr(report, "trend", []))]
    sections = with_sections(SECTIONS, after="accuracy", added=added)
    baseline = baseline_html(getattr(report, "baseline", None), explorer=explorer)
    at = next(i for i, s in enumerate(sections) if s.anchor == "comparisons") + 1
    sections.insert(at, Section(lambda page: [baseline] if baseline else [], "baseline", "Baseline"))
    return sections


def _repeat_frame(report: Any) -> pd.DataFrame:
    rows = []
    for tally in report.tallies:
        repeats = report.repeats.get((tally.model, tally.prompt))
        if repeats is None or repeats.repeats < 2:
            continue
        answered, means = tally.row_means()
        majority = repeats.majority_correct[answered] if repeats.majority_correct is not None else np.array([])
        rows.append(
            {
                "model": tally.model,
                "prompt": tally.prompt,
                "rows": repeats.rows,
                "repeats": repeats.repeats,
                "mean_accuracy": float(means.mean()) if means.size else math.nan,
                "majority_accuracy": float(np.nanmean(majority)) if majority.size else math.nan,
                "consistency_rate": repeats.consistent / repeats.multi if repeats.multi else math.nan,
            }
        )
    return pd.DataFrame(rows)


DATA = object()  # where the explorer's data goes in the page's parts


def _explorer_section(explorer: Any, cells: int) -> list[Any]:
    from evalrun.reports.explorer import MAX_CELLS, MAX_TEXT_CHARS

    if explorer is None:
        return ['<p class="note">This page was built without the cells, so there is no row explorer; '
                "<code>evalrun report DIR</code> rebuilds it with them. results.csv has every cell.</p>"]  # fmt: skip
    meta = explorer.meta
    notes = []
    if meta.get("sampled"):
        seen = int(meta.get("seen_cells") or cells)
        notes.append(
            f'<p class="banner warn">This page holds a sample: every cell of {int(meta["rows"]):,} dataset rows '
            f"({int(meta['count']):,} of {seen:,} cells), the rows chosen by a seeded hash of their id "
            f"(seed {int(meta.get('sample_seed', 0))}), because the run is larger than a page holds "
            f"({MAX_CELLS:,} cells or {MAX_TEXT_CHARS // 1_000_000} million characters of text). Disagreements "
            "are complete within the sample. results.csv has every cell.</p>"
        )  # fmt: skip
    if meta.get("truncated"):
        notes.append(f'<p class="note">{int(meta["truncated"]):,} long texts are shortened here (their head and '
                     "tail, with a note of what was left out); results.csv has them whole.</p>")  # fmt: skip
    return [
        "".join(notes)
        + '<div id="explore-app"></div>'
        + '<noscript><p class="note">The row explorer needs JavaScript. results.csv has every cell.</p></noscript>'
        + '<script type="application/json" id="explorer-data">',
        DATA,
        "</script>",
    ]


def render_html(**kwargs: Any) -> str:
    """The whole report as one self-contained HTML document (a string; see `write_html`)."""
    out = io.StringIO()
    write_html(out, **kwargs)
    return out.getvalue()


@dataclass(frozen=True)
class Page:
    """What every section of report.html may draw on."""

    summary: pd.DataFrame
    comparison: pd.DataFrame | None
    settings: Mapping[str, object]
    choices: Sequence[str] | None = None
    outcomes: pd.DataFrame | None = None
    repeats: pd.DataFrame | None = None
    cells: int = 0
    failure: str | None = None
    simulated: bool = False
    explorer: Any = None
    totals: Mapping[str, Any] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # the summary's rows

    @property
    def withheld(self) -> bool:
        """A failed run's accuracy is not shown."""
        return self.failure is not None

    @property
    def has_explorer(self) -> bool:
        return self.explorer is not None


@dataclass(frozen=True)
class Section:
    """One part of the page: `render` returns its HTML parts ([] when it has nothing to show; the
    explorer's data is the `DATA` marker); `nav` names it in the table of contents, by `anchor`."""

    render: Callable[[Page], list[Any]]
    anchor: str = ""
    nav: str = ""


def _simulated_banner(page: Page) -> list[Any]:
    if not (page.simulated or page.settings.get("endpoint") == "simulator"):
        return []
    return ['<p class="banner" role="alert">Simulated run: these answers came from the built-in simulator, '
            "not from a real model. The scores below are simulated and say nothing about model quality.</p>"]  # fmt: skip


def _failure_banner(page: Page) -> list[Any]:
    if not page.failure:
        return []
    stopped = page.settings.get("stopped")
    if isinstance(stopped, Mapping) and stopped.get("reason"):  # the cause is in the Stopped banner
        advice = " Fix what stopped the run, then run the same command again: it sends only what is missing."
    else:
        advice = " Run the same command again to retry the failed requests" + (
            "; the Rows section shows each error." if page.has_explorer else "."
        )
    return [
        f'<p class="banner failed" role="alert" id="failed">Failed run: {esc(page.failure)}.'
        + ("" if "no accuracy" in page.failure else " Its accuracy is withheld.")
        + advice
        + "</p>"
    ]


def _stopped_banner(page: Page) -> list[Any]:
    """Why the last run stopped early, when it did (the store adds `stopped` to the settings)."""
    stopped = page.settings.get("stopped")
    if not isinstance(stopped, Mapping) or not stopped.get("reason"):
        return []
    return [f'<p class="banner failed" role="alert" id="stopped">Stopped: {esc(str(stopped["reason"]))}</p>']


def _unreliable_banner(page: Page) -> list[Any]:
    shaky = [variant_label(r) for r in page.rows if unreliable(r) and r.get("n")]
    if not shaky or page.failure:
        return []
    return [f'<p class="banner failed">Unreliable: more than 5 % of the requests of {esc(", ".join(shaky))} '
            "failed, so their accuracy rests on the rows that happened to succeed.</p>"]  # fmt: skip


def _summary(page: Page) -> list[Any]:
    return [
        '<section id="summary"><h2>Summary</h2>',
        summary_section(page.rows, withheld=page.withheld, explorer=page.has_explorer),
        '<p class="note">rows: dataset rows with at least one answer (the unit of evidence). Accuracy is '
        "over answered cells (a failed request is never a wrong answer) with its 95 % interval below it; "
        "“—” means nothing was answered. Latency is per request, cached answers left out.</p></section>",
    ]


def _accuracy(page: Page) -> list[Any]:
    if page.withheld:
        return []
    return [
        '<section id="accuracy"><h2>Accuracy</h2><div class="charts">',
        f"<figure>{accuracy_chart(page.summary)}<figcaption>Accuracy by model and prompt</figcaption></figure>",
        f"<figure>{cost_chart(page.summary)}<figcaption>Accuracy against the total cost of the answers"
        "</figcaption></figure>",
        "</div></section>",
    ]


def _comparisons(page: Page) -> list[Any]:
    if page.comparison is None:
        return []
    parts = ['<section id="comparisons"><h2>Comparisons</h2>']
    rows = frame_records(page.comparison)
    if not rows:
        parts.append('<p class="note">Nothing to compare (fewer than two variants).</p>')
    elif not any(r.get("n") for r in rows):
        parts.append('<p class="note">Nothing to compare: no dataset row was answered by both sides of any pair.</p>')
    else:
        if page.failure:
            parts.append('<p class="banner failed">The run failed: these comparisons rest on the few rows both '
                         "sides happened to answer.</p>")  # fmt: skip
        parts.append(comparison_section(rows, explorer=page.has_explorer))
    return [*parts, "</section>"]


def _rows(page: Page) -> list[Any]:
    if not page.has_explorer:
        return []
    return [
        '<section id="explore"><h2>Rows</h2>',
        '<p class="note">Every cell: what was asked, what came back, the answer read from it and its score. '
        "Filter by model, prompt, outcome or text, or pick two variants to see only the rows where one "
        "was right and the other wrong. The address bar keeps the filter, so a link opens this view.</p>",
        *_explorer_section(page.explorer, page.cells),
        "</section>",
    ]


def _outcomes(page: Page) -> list[Any]:
    outcomes = page.outcomes
    if outcomes is None or outcomes.empty:
        return ['<p class="note">No per-cell results, so no diagnostics.</p>']
    modes = {(str(r.get("model")), str(r.get("prompt"))): str(r.get("answer_mode") or "") for r in page.rows}
    parts = ['<section id="outcomes"><h2>Outcomes</h2>', outcomes_section(outcomes, modes, explorer=page.has_explorer)]
    if page.choices:
        parts += ["<h3>Answer letters</h3>", letters_section(outcomes, page.choices)]
    if page.repeats is not None and not page.repeats.empty:
        parts += [
            "<h3>Repeats</h3>",
            '<p class="note">Majority vote over parsed answers per row (ties go to the answer '
            "seen in the earliest repeat); consistency is the share of rows whose repeats all "
            "gave the same answer.</p>",
            frame_table(page.repeats),
        ]
    return [*parts, "</section>"]


def _settings(page: Page) -> list[Any]:
    return ['<section id="settings"><h2>Run settings</h2>', settings_section(page.settings), "</section>"]


# The page, top to bottom. A new section is a function of the `Page` returning its parts, added
# here (with an anchor and a nav title if it belongs in the table of contents).
SECTIONS: list[Section] = [
    Section(_simulated_banner),
    Section(_failure_banner),
    Section(_stopped_banner),
    Section(_unreliable_banner),
    Section(_summary, "summary", "Summary"),
    Section(_accuracy, "accuracy", "Accuracy"),
    Section(_comparisons, "comparisons", "Comparisons"),
    Section(_outcomes, "outcomes", "Outcomes"),
    Section(_settings, "settings", "Settings"),
    # Last: the explorer renders its rows lazily, so a section below it would move as they come
    # and a link to it would land mid-list.
    Section(_rows, "explore", "Rows"),
]


def with_sections(sections: Sequence[Section], *, after: str, added: Sequence[tuple[str, str, str]]) -> list[Section]:
    """`sections` with ready-made ones, (anchor, title, HTML body) each, after the one at `after`;
    like the charts, they are left out of a failed run's page."""
    def fixed(anchor: str, title: str, body: str) -> Section:
        def render(page: Page) -> list[Any]:
            return [] if page.withheld else [f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>']
        return Section(render, anchor, title)

    out: list[Section] = []
    for section in sections:
        out.append(section)
        if section.anchor == after:
            out += [fixed(*part) for part in added]
    return out


def _header(page: Page) -> str:
    title = str(page.settings.get("name") or "evalrun report")
    endpoint = page.settings.get("endpoint")
    meta = [f"{page.cells:,} cells (model × prompt × row × repeat)"]
    if endpoint:
        meta.insert(0, f"endpoint: {endpoint if isinstance(endpoint, str) else ', '.join(map(str, endpoint))}")  # type: ignore[call-overload]
    if page.totals and not is_missing(page.totals.get("cost_usd")):
        meta.append(f"answers cost ${float(page.totals['cost_usd']):,.4f}")
    return f'<header class="top"><h1>{esc(title)}</h1><p class="meta">{esc(" · ".join(meta))}</p></header>'


def write_html(out: IO[str], *, summary: pd.DataFrame, comparison: pd.DataFrame | None,
               settings: Mapping[str, object], sections: Sequence[Section] | None = None, **rest: Any) -> None:
    """Write the whole report into `out` as one self-contained HTML document.

    The sections (`SECTIONS` unless ``sections`` is given) in order: simulator banner (a
    simulated run), failure banner, summary table, accuracy chart with CI whiskers and cost
    against accuracy (both left out for a failed run), comparisons, outcomes with the letter
    distribution (when ``choices`` is given) and the repeat summary (when any cell was
    repeated), the run settings, and last the row explorer (when ``explorer``, an
    `ExplorerSink`, saw the cells: its data is streamed into the page from its spill). ``rest``
    are the other fields of `Page` (``outcomes`` is the weighted outcome frame of the tallies).
    """
    page = Page(summary=summary, comparison=comparison, settings=settings, rows=frame_records(summary), **rest)
    drawn = [(section, section.render(page)) for section in (SECTIONS if sections is None else sections)]
    # The table of contents links only to the anchors the page has.
    nav = "".join(
        f'<a href="#{s.anchor}">{s.nav}</a>'
        for s, section_parts in drawn
        if s.nav and any(isinstance(p, str) and f'id="{s.anchor}"' in p for p in section_parts)
    )
    parts: list[Any] = [_header(page), f'<nav class="toc">{nav}</nav>']
    parts += [part for _, section_parts in drawn for part in section_parts]
    version = settings.get("evalrun_version")
    parts.append(f"<footer>evalrun{f' {esc(version)}' if version else ''} · rebuilt from the run's store.sqlite by "
                 "<code>evalrun report</code></footer>")  # fmt: skip
    title = str(settings.get("name") or "evalrun report")
    out.write(
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{static('report.css')}</style></head>\n<body>\n"
    )
    for i, part in enumerate(parts):
        if part is DATA:
            page.explorer.write_json(out)
            continue
        if i and parts[i - 1] is not DATA:
            out.write("\n")
        out.write(part)
    script = f"<script>{static('explorer.js')}</script>" if page.has_explorer else ""
    out.write(f"\n{script}</body></html>\n")
