"""Two runs side by side: `evalrun diff` (evalrun.across) as the viewer shows it.

The runs are paired on (model label, prompt, row id, repeat) by `evalrun.across.diff.diff` — the
same per-row reduction, intervals and tests as `evalrun diff`, with human reviews applied — and
turned into what the page and `GET /api/diff` give: per model × prompt the rows both runs
answered, each run's accuracy on them with the change and its interval, and the rows that
flipped (right in one run, wrong in the other).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["pair_runs"]

_FLIPS_SHOWN = 200


def _number(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def pair_runs(a: Path, b: Path) -> dict[str, Any]:
    """`evalrun diff A B` as JSON: `variants` (one per shared model × prompt: `n` rows, `acc_a`,
    `acc_b`, `diff` = b − a with `diff_ci_low/high`, `p_value`, `a_only`/`b_only` rows right in
    one run only, rows left out because their content changed) and the `flips` (row ids)."""
    from evalrun.across.diff import diff

    result = diff(a, b)
    variants = []
    for row in result.rows:
        variants.append({
            "model": row["model"], "prompt": row["prompt"], "n": int(row["n"] or 0),
            "acc_a": _number(row["acc_base"]), "acc_b": _number(row["acc_cand"]), "diff": _number(row["diff"]),
            "diff_ci_low": _number(row["diff_ci_low"]), "diff_ci_high": _number(row["diff_ci_high"]),
            "p_value": _number(row["p_value"]), "test": row["test"],
            "a_only": int(row["flipped_down"] or 0), "b_only": int(row["flipped_up"] or 0),
            "changed_rows": int(row["changed_rows"] or 0), "prompt_changed": bool(row["prompt_changed"]),
            "note": row["note"] or "",
        })  # fmt: skip
    flips: list[dict[str, Any]] = []
    for (model, prompt), (up, down) in result.flips.items():
        for row_id, right in [*((r, "b") for r in up), *((r, "a") for r in down)]:
            if len(flips) < _FLIPS_SHOWN:
                flips.append({"model": model, "prompt": prompt, "row_id": row_id, "right": right})
    total = sum(len(up) + len(down) for up, down in result.flips.values())
    return {"variants": variants, "flips": flips, "flips_shown": len(flips), "flips_total": total,
            "pairing": "evalrun diff (model, prompt, row id, repeat)"}  # fmt: skip
