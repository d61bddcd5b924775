"""What `diff` and `gate` write: diff.csv, diff.md, a terminal table, a JUnit XML file and a
Markdown summary fit for a pull-request comment."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evalrun.across.diff import DIFF_COLUMNS, DiffResult
from evalrun.across.gate import GateResult

__all__ = ["diff_csv", "diff_markdown", "diff_table", "gate_lines", "gate_markdown", "junit_xml", "write_diff"]

_TABLE = ["model", "prompt", "n", "acc_base", "acc_cand", "diff", "diff_ci_low", "diff_ci_high", "p_value", "test",
          "flipped_up", "flipped_down", "prompt_changed"]  # fmt: skip
_SIMULATED = "Simulated: at least one of the runs talked to evalrun's simulator; these are not a model's scores."


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value.is_integer() and abs(value) >= 1:
            return f"{value:,.0f}"
        return f"{value:.4f}"
    return str(value)


def _csv_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


def diff_csv(result: DiffResult) -> str:
    """diff.csv: one row per model × prompt, every column of `DIFF_COLUMNS`."""
    handle = io.StringIO()
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(DIFF_COLUMNS)
    for row in result.rows:
        writer.writerow([_csv_value(row.get(c)) for c in DIFF_COLUMNS])
    return handle.getvalue()


def _markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(row.get(c)).replace("|", "\\|") for c in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def _rests_on(result: DiffResult) -> str:
    p = result.pairing
    return (
        f"Rows paired on (model, prompt, dataset row id, repeat): {len(p.row_ids):,} rows in both runs with the same "
        f"content; {p.changed_rows:,} left out because their content changed (changed_rows); "
        f"{p.only_base_rows:,} in the baseline only, {p.only_cand_rows:,} in the candidate only."
    )


def diff_markdown(result: DiffResult) -> str:
    """diff.md: the table, what it rests on, the notes."""
    lines = [
        f"# {result.candidate_name}: compared with the baseline",
        "",
        f"baseline `{result.baseline}` · candidate `{result.candidate}`",
        "",
    ]
    if result.simulated:
        lines += [f"> {_SIMULATED}", ""]
    lines += [
        _markdown(result.rows, _TABLE),
        "",
        "diff = acc_cand − acc_base over the rows answered in both runs (n rows), each run's repeats of a row "
        "reduced first (its reducer); 95 % paired interval (bootstrap over rows or clusters, or the t interval "
        "beyond 5,000 units); the test is exact McNemar where each row is one 0/1 answer, a paired t-test "
        "otherwise (cluster-robust with clusters). flipped_up / flipped_down: rows right in the candidate only / "
        "the baseline only (rows whose value rose / fell, with repeats). prompt_changed: a request body of a "
        "paired cell differs (the model id left aside).",
        "",
        _rests_on(result),
    ]
    notes = [f"* {r['model']} · {r['prompt']}: {r['note']}" for r in result.rows if r.get("note")]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def diff_table(result: DiffResult) -> str:
    """The table for the terminal."""
    columns = _TABLE
    cells = [[_cell(row.get(c)) for c in columns] for row in result.rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    out.append(_rests_on(result))
    out += [f"note: {r['model']} · {r['prompt']}: {r['note']}" for r in result.rows if r.get("note")]
    if result.simulated:
        out.append(_SIMULATED)
    return "\n".join(out)


def write_diff(result: DiffResult, folder: Path) -> tuple[Path, Path]:
    """diff.csv and diff.md into `folder` (each written beside its name, then renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (("diff.csv", diff_csv(result)), ("diff.md", diff_markdown(result))):
        path = folder / name
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        paths.append(path)
    return paths[0], paths[1]


def gate_lines(result: GateResult) -> list[str]:
    """One line per check: PASS/FAIL, model · prompt, the criterion, its rule and its figures."""
    lines = []
    for check in result.checks:
        mark = "PASS" if check.passed else "FAIL"
        lines.append(f"{mark}  {check.model} · {check.prompt}  {check.criterion}: {check.figures} (rule: {check.rule})")
    failed = len(result.failures)
    lines.append(f"gate: {'passed' if result.passed else 'FAILED'} — {len(result.checks) - failed} of "
                 f"{len(result.checks)} checks passed")  # fmt: skip
    if result.simulated:
        lines.append(_SIMULATED)
    return lines


def gate_markdown(result: GateResult) -> str:
    """A short summary for a pull-request comment."""
    verdict = "✅ **evalrun gate passed**" if result.passed else "❌ **evalrun gate failed**"
    against = f" against `{result.baseline}`" if result.baseline else ""
    lines = [f"{verdict}: {len(result.checks) - len(result.failures)} of {len(result.checks)} checks passed"
             f" for `{result.candidate}`{against}.", ""]  # fmt: skip
    if result.simulated:
        lines += [f"> {_SIMULATED}", ""]
    lines += ["| | model · prompt | criterion | figures |", "|---|---|---|---|"]
    for check in result.checks:
        mark = "✅" if check.passed else "❌"
        figures = check.figures.replace("|", "\\|")
        lines.append(f"| {mark} | {check.model} · {check.prompt} | {check.criterion} | {figures} |")
    rules = dict.fromkeys(f"* {c.criterion}: {c.rule}" for c in result.checks)
    lines += ["", "Rules:", "", *rules]
    return "\n".join(lines) + "\n"


def junit_xml(result: GateResult) -> str:
    """JUnit XML: one testcase per model × prompt × criterion, a failure for each that failed."""
    import xml.etree.ElementTree as ET

    suite = ET.Element("testsuite", {
        "name": "evalrun gate", "tests": str(len(result.checks)), "failures": str(len(result.failures)),
        "errors": "0", "skipped": "0",
    })  # fmt: skip
    for check in result.checks:
        case = ET.SubElement(suite, "testcase", {"classname": f"{check.model}.{check.prompt}", "name": check.criterion})
        if not check.passed:
            failure = ET.SubElement(case, "failure", {"message": check.figures, "type": check.criterion})
            failure.text = f"{check.model} · {check.prompt}: {check.figures}\nrule: {check.rule}"
        else:
            out = ET.SubElement(case, "system-out")
            out.text = check.figures
    root = ET.Element("testsuites", {"name": "evalrun", "tests": suite.get("tests", "0"),
                                      "failures": suite.get("failures", "0")})  # fmt: skip
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
