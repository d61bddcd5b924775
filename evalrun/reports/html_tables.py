"""report.html's tables: the summary, the comparisons, the answer letters and the outcomes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from evalrun.reports.html_kit import (
    Cell,
    esc,
    explore_link,
    fmt,
    frame_table,
    grid,
    is_missing,
    pct,
    unreliable,
)
from evalrun.results.diagnostics import letter_distribution, outcome_rates

__all__ = ["comparison_section", "letters_section", "outcomes_section", "summary_section"]


# -- summary -----------------------------------------------------------------------------------
def _accuracy_cell(withheld: bool) -> Cell:
    def render(row: Mapping[str, Any]) -> str:
        acc = row.get("accuracy")
        if withheld and not is_missing(acc):
            return '<span class="bad">withheld</span><span class="sub">the run failed</span>'
        if is_missing(acc):
            sent = row.get("answered", row.get("n"))
            return "—" + ('<span class="sub">nothing answered</span>' if not sent else "")
        text = f"<strong>{pct(acc)}</strong>"
        low, high = row.get("ci_low"), row.get("ci_high")
        if not (is_missing(low) or is_missing(high)):
            method = row.get("ci_method") or "95 % interval"
            text += f'<span class="sub" title="{esc(method)}">{pct(low)}–{pct(high)}</span>'
        if unreliable(row):
            text = f'<span class="bad" title="more than 5 % of its requests failed">⚠ {text} unreliable</span>'
        return text
    return render


def _errors_cell(row: Mapping[str, Any]) -> str:
    errors = row.get("errors")
    if is_missing(errors):
        return "—"
    text = f"{int(errors):,}"  # type: ignore[arg-type]
    rate = row.get("error_rate")
    if not is_missing(rate) and errors:
        text += f'<span class="sub">{pct(rate)} of sent</span>'
    if errors and unreliable(row):
        return f'<span class="bad">{text}</span>'
    return text


def _answered_cell(row: Mapping[str, Any]) -> str:
    answered, cells = row.get("answered"), row.get("cells")
    if is_missing(answered):
        return "—"
    return f"{int(answered):,}" + (f" / {int(cells):,}" if not is_missing(cells) else "")  # type: ignore[arg-type]


def _latency_cell(row: Mapping[str, Any]) -> str:
    p50, p95 = row.get("latency_p50_s"), row.get("latency_p95_s")
    if is_missing(p50):
        return "—"
    return f"{float(p50):.2f}" + (f" / {float(p95):.2f}" if not is_missing(p95) else "") + " s"  # type: ignore[arg-type]


def _read_cell(row: Mapping[str, Any]) -> str:
    href = explore_link(model=str(row.get("model", "")), prompt=str(row.get("prompt", "")))
    return f'<a href="{esc(href)}">read rows</a>'


_SECONDARY = [
    ("ci_method", "interval method"), ("clusters", "clusters"), ("pending", "not sent"),
    ("input_tokens", "input tokens"), ("output_tokens", "output tokens"),
    ("cache_creation_input_tokens", "cache write tokens"), ("cache_read_input_tokens", "cache read tokens"),
    ("paid_usd", "paid by this folder (answers and grading)"), ("from_cache", "from shared cache"),
    ("cost_per_1k_rows_usd", "cost per 1k rows"),
]  # fmt: skip
_JUDGE_MAIN = {"judge_agreement", "judge_agreement_low", "judge_agreement_high", "judge_agreement_n", "judge_kappa",
               "judge_kappa_low", "judge_kappa_high", "judge_cost_usd"}  # fmt: skip
_MAIN = {"model", "prompt", "answer_mode", "n", "cells", "answered", "unparsed", "errors", "error_rate", "correct",
         "accuracy", "ci_low", "ci_high", "reliable", "cost_usd", "cost_per_correct_usd", "latency_p50_s",
         "latency_p95_s", *_JUDGE_MAIN}  # fmt: skip


def _interval_cell(key: str, *, share: bool) -> Cell:
    """A figure with its interval under it (`key_low`–`key_high`), and how many it rests on (`key_n`)."""
    def render(row: Mapping[str, Any]) -> str:
        value = row.get(key)
        if is_missing(value):
            return "—"
        def show(v: Any) -> str:
            return pct(v) if share else f"{float(v):.2f}"

        text = f"<strong>{show(value)}</strong>"
        low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
        if not (is_missing(low) or is_missing(high)):
            text += f'<span class="sub">{show(low)}–{show(high)}</span>'
        n = row.get(f"{key}_n", row.get("judge_agreement_n"))
        if not is_missing(n):
            text += f'<span class="sub">{int(n):,} rows graded by both</span>'
        return text
    return render


def _abbr(text: str, title: str) -> str:
    return f'<abbr title="{esc(title)}">{esc(text)}</abbr>'


# (the column it needs, header HTML, kind, key or renderer), in the order shown
_MAIN_COLUMNS: list[tuple[str, str, str, str | Cell]] = [
    ("answer_mode", "answer mode", "text", "answer_mode"),
    ("", _abbr("rows", "dataset rows with at least one answer: the unit of evidence"), "num", "n"),
    ("", 'accuracy<span class="sub">95 % interval</span>', "num", _accuracy_cell(False)),
    ("correct", _abbr("correct cells", "answered cells scored right (a row × repeat is a cell): not rows"), "num",
     "correct"),
    ("answered", "answered / cells", "num", _answered_cell),
    ("unparsed", _abbr("unparsed", "replied, but no answer could be read from the reply: counted wrong"), "num",
     "unparsed"),
    ("errors", _abbr("errors", "requests that got no reply (or no usable grade); never counted as wrong answers"),
     "num", _errors_cell),
    ("judge_agreement", _abbr("judge agrees with people", "share of rows where the grader gave the human grade")
     + '<span class="sub">95 % interval</span>', "num", _interval_cell("judge_agreement", share=True)),
    ("judge_kappa", _abbr("κ", "Cohen's kappa: the grader's agreement with people beyond chance")
     + '<span class="sub">95 % interval</span>', "num", _interval_cell("judge_kappa", share=False)),
    ("cost_usd", "cost of the answers", "num", "cost_usd"),
    ("judge_cost_usd", "cost of the grading", "num", "judge_cost_usd"),
    ("cost_per_correct_usd", "cost per correct", "num", "cost_per_correct_usd"),
    ("latency_p50_s", "latency p50 / p95", "num", _latency_cell),
]  # fmt: skip


def _main_columns(summary: Sequence[Mapping[str, Any]], *, withheld: bool,
                  explorer: bool) -> list[tuple[str, str, str | Cell]]:  # fmt: skip
    def has(column: str) -> bool:
        return any(column in row and not is_missing(row[column]) for row in summary)

    columns: list[tuple[str, str, str | Cell]] = [("model", "text", "model"), ("prompt", "text", "prompt")]
    for needs, title, kind, how in _MAIN_COLUMNS:
        if needs and not has(needs):
            continue
        columns.append((title, kind, _accuracy_cell(withheld) if title.startswith("accuracy<") else how))
        if title.startswith("accuracy<"):  # per-field accuracy right after the overall one
            fields = [c for c in dict.fromkeys(c for row in summary for c in row) if c.startswith("accuracy_")]
            columns += [(f"{esc(c.removeprefix('accuracy_'))} accuracy", "num", c) for c in fields]
    if explorer:
        columns.append(("", "text", _read_cell))
    return columns


def summary_section(summary: Sequence[Mapping[str, Any]], *, withheld: bool, explorer: bool) -> str:
    """The summary table (every figure a reader needs), with the rest under "More columns"."""
    def has(column: str) -> bool:
        return any(column in row and not is_missing(row[column]) for row in summary)

    columns = _main_columns(summary, withheld=withheld, explorer=explorer)

    def row_class(row: Mapping[str, Any]) -> str:
        return "bad" if unreliable(row) or (is_missing(row.get("accuracy")) and row.get("errors")) else ""

    parts = [grid(summary, columns, row_class=row_class)]
    secondary = [(key, title) for key, title in _SECONDARY if has(key)]
    extra = [c for row in summary for c in row
             if c not in _MAIN and c not in dict(_SECONDARY) and not c.startswith("accuracy_")]  # fmt: skip
    secondary += [(c, c.replace("_", " ")) for c in dict.fromkeys(extra)]
    if secondary:
        more: list[tuple[str, str, str | Cell]] = [("model", "text", "model"), ("prompt", "text", "prompt")]
        more += [(esc(title), "text" if key == "ci_method" else "num", key) for key, title in secondary]
        parts.append(f'<details class="more"><summary>More columns ({esc(", ".join(t for _, t in secondary))})</summary>'
                     f"{grid(summary, more)}</details>")  # fmt: skip
    return "".join(parts)


# -- comparisons -------------------------------------------------------------------------------
def comparison_section(comparison: Sequence[Mapping[str, Any]], *, explorer: bool) -> str:
    def link(row: Mapping[str, Any], right: str = "") -> str:
        by = str(row.get("by") or "prompt")
        scope = {"model": str(row["group"])} if by == "prompt" else {"prompt": str(row["group"])}
        return explore_link(by=by, **scope, disagree=(str(row["a"]), str(row["b"])), right=right)

    def count(key: str, side: str) -> Cell:
        def render(row: Mapping[str, Any]) -> str:
            value = row.get(key)
            text = esc(fmt(key, value))
            if explorer and not is_missing(value) and value:
                return f'<a href="{esc(link(row, str(row[side])))}" title="read these rows">{text}</a>'
            return text
        return render

    def diff(row: Mapping[str, Any]) -> str:
        text = f"<strong>{esc(fmt('diff', row.get('diff')))}</strong>"
        low, high = row.get("diff_ci_low"), row.get("diff_ci_high")
        if not (is_missing(low) or is_missing(high)):
            text += f'<span class="sub">[{esc(fmt("diff", low))}, {esc(fmt("diff", high))}]</span>'
        return text

    def p_value(row: Mapping[str, Any]) -> str:
        p = row.get("p_value", row.get("p_mcnemar"))
        test = row.get("test") or ("mcnemar-exact" if "p_mcnemar" in row else "")
        return esc(fmt("p_value", p)) + (f'<span class="sub">{esc(test)}</span>' if test else "")

    def p_holm(row: Mapping[str, Any]) -> str:
        p = row.get("p_holm")
        text = esc(fmt("p_holm", p))
        return f"<strong>{text}</strong>" if not is_missing(p) and float(p) < 0.05 else text  # type: ignore[arg-type]

    def modes(row: Mapping[str, Any]) -> str:
        a, b = row.get("mode_a"), row.get("mode_b")
        if is_missing(a) or is_missing(b):
            return "—"
        if row.get("modes_differ"):
            return f'<span class="flag">⚠ {esc(a)} → {esc(b)}</span>'
        return esc(a)

    def read(row: Mapping[str, Any]) -> str:
        return f'<a href="{esc(link(row))}">read disagreements</a>'

    by = str(comparison[0].get("by") or "prompt")
    columns: list[tuple[str, str, str | Cell]] = [
        ("within" if by == "prompt" else "prompt", "text", "group"), ("a", "text", "a"), ("b", "text", "b"),
        ('<abbr title="dataset rows both answered">rows</abbr>', "num", "n"),
        ("acc a", "num", "acc_a"), ("acc b", "num", "acc_b"),
        ("diff b − a<span class=\"sub\">95 % interval</span>", "num", diff),
        ("p", "num", p_value), ("p holm", "num", p_holm),
        ('<abbr title="rows only a got right (b wrong)">only a right</abbr>', "num", count("only_a_correct", "a")),
        ('<abbr title="rows only b got right (a wrong)">only b right</abbr>', "num", count("only_b_correct", "b")),
        ("answer mode", "text", modes),
    ]  # fmt: skip
    if explorer:
        columns.append(("", "text", read))
    if any(row.get("note") for row in comparison):
        columns.append(("note", "text", lambda row: esc(row.get("note") or "")))
    note = (
        '<p class="note">Paired on the rows both sides answered, so acc a / acc b can differ from the summary. '
        "diff = accuracy of b − accuracy of a (positive: b scored higher) with a paired 95 % interval; p is the "
        "paired test named under it and p holm adjusts it for the number of comparisons (bold when below 0.05). "
        "⚠ marks pairs asked in different answer modes, so the prompt or model is not the only thing that changed."
        + (" The counts of rows only one side got right open those rows in the explorer." if explorer else "")
        + "</p>"
    )

    def row_class(row: Mapping[str, Any]) -> str:
        return "warn" if row.get("modes_differ") else ""

    return note + grid(comparison, columns, row_class=row_class)


# -- diagnostics -------------------------------------------------------------------------------
def letters_section(results: pd.DataFrame, choices: Sequence[str]) -> str:
    dist = letter_distribution(results, choices)
    if dist.empty:
        return '<p class="note">No answered cells.</p>'
    wide = dist.assign(
        cell=[f"{pct(p, 0)} / {pct(g, 0)}" for p, g in zip(dist["predicted_share"], dist["gold_share"], strict=True)]
    ).pivot(index=["model", "prompt"], columns="letter", values="cell")
    wide = wide[list(dict.fromkeys(dist["letter"]))].reset_index()
    wide.columns.name = None
    note = ('<p class="note">Share of answered cells predicting each letter / share whose gold answer is '
            "that letter. A predicted share well above the gold share suggests position bias.</p>")
    return note + frame_table(wide)


def outcomes_section(outcomes: pd.DataFrame, modes: Mapping[tuple[str, str], str], *, explorer: bool) -> str:
    rates = outcome_rates(outcomes)
    if rates.empty:
        return '<p class="note">No sent cells.</p>'

    def rate(count: str, share: str, status: str = "") -> Cell:
        def render(row: Mapping[str, Any]) -> str:
            n = int(row[count])
            text = f"{pct(row[share])}<span class=\"sub\">{n:,} of {int(row['n']):,}</span>"
            if n and explorer and status:
                href = explore_link(model=str(row["model"]), prompt=str(row["prompt"]), status=status)
                text = f'<a href="{esc(href)}" title="read them">{text}</a>'
            return text
        return render

    def reading(row: Mapping[str, Any]) -> str:
        mode = modes.get((str(row["model"]), str(row["prompt"])), "")
        said = []
        if row["max_tokens"]:
            if "prefill" in mode and row["max_tokens_rate"] > 0.5:
                said.append("Stopping at max_tokens is expected here: a prefill answer is a few tokens long and "
                            "max_tokens is set to end the reply right after the letter.")
            else:
                said.append(f'<span class="flag">{pct(row["max_tokens_rate"])} of replies were cut off at max_tokens</span>: '
                            "if answers are missing, raise max_tokens.")  # fmt: skip
        if row["unparsed"]:
            said.append(f"{int(row['unparsed']):,} replies had no answer the scorer could read (counted wrong).")
        if row["refusals"]:
            said.append(f'<span class="flag">{int(row["refusals"]):,} refusals</span>.')
        if row["errors"]:
            cls = "bad" if row["error_rate"] > 0.05 else "flag"
            said.append(f'<span class="{cls}">{int(row["errors"]):,} requests failed</span> (no reply; the next run '
                        "of the same command sends them again).")  # fmt: skip
        return " ".join(said) or '<span class="ok">Every reply ended normally.</span>'

    columns: list[tuple[str, str, str | Cell]] = [
        ("model", "text", "model"), ("prompt", "text", "prompt"),
        ("answer mode", "text", lambda row: esc(modes.get((str(row["model"]), str(row["prompt"])), "—"))),
        ("sent", "num", "n"),
        ("unparsed", "num", rate("unparsed", "unparsed_rate", "unparsed")),
        ("refusals", "num", rate("refusals", "refusal_rate")),
        ("stopped at max_tokens", "num", rate("max_tokens", "max_tokens_rate")),
        ("errors", "num", rate("errors", "error_rate", "error")),
        ("what it means", "text", reading),
    ]  # fmt: skip
    note = ('<p class="note">How the sent cells ended, as a share of all sent cells: replies with no readable '
            "answer, refusals, replies that stopped at max_tokens, and requests with no reply at all.</p>")
    return note + grid(rates.to_dict("records"), columns)
