"""Two runs side by side: their cells paired on (model label, prompt, row id, repeat).

`evalrun diff` (across runs, with its statistics) is the fuller answer; until the viewer calls it
this small pairing gives the page what it shows: per model × prompt the cells both runs answered,
each run's accuracy on them, and the cells that flipped (right in one run, wrong in the other).
A row whose target changed between the runs is left out and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalrun.reports.build import iter_records

__all__ = ["pair_runs"]

_FLIPS_SHOWN = 200


def _answered(folder: Path) -> Iterator[tuple[tuple[str, str, str, int], bool, str, str]]:
    for record in iter_records(folder):
        if record["status"] in ("ok", "unparsed") and record["correct"] is not None:
            key = (str(record["model"]), str(record["prompt"]), str(record["row_id"]), int(record["repeat"]))
            yield key, bool(record["correct"]), str(record["target"]), str(record.get("answer") or "")


def pair_runs(a: Path, b: Path) -> dict[str, Any]:
    """Per model × prompt: shared answered cells, accuracy of each run on them, and the flips."""
    first = {key: (right, target, answer) for key, right, target, answer in _answered(a)}
    variants: dict[tuple[str, str], dict[str, Any]] = {}
    flips: list[dict[str, Any]] = []
    changed = 0
    for key, right_b, target_b, answer_b in _answered(b):
        found = first.get(key)
        if found is None:
            continue
        right_a, target_a, answer_a = found
        if target_a != target_b:
            changed += 1
            continue
        row = variants.setdefault(key[:2], {"model": key[0], "prompt": key[1], "n": 0, "correct_a": 0,
                                            "correct_b": 0, "a_only": 0, "b_only": 0})  # fmt: skip
        row["n"] += 1
        row["correct_a"] += right_a
        row["correct_b"] += right_b
        if right_a != right_b:
            row["a_only" if right_a else "b_only"] += 1
            if len(flips) < _FLIPS_SHOWN:
                flips.append({"model": key[0], "prompt": key[1], "row_id": key[2], "repeat": key[3],
                              "answer_a": answer_a, "answer_b": answer_b, "target": target_b,
                              "right": "a" if right_a else "b"})  # fmt: skip
    for row in variants.values():
        row["acc_a"] = row["correct_a"] / row["n"]
        row["acc_b"] = row["correct_b"] / row["n"]
        row["diff"] = row["acc_b"] - row["acc_a"]
    return {"variants": list(variants.values()), "flips": flips, "target_changed": changed,
            "flips_shown": len(flips), "pairing": "evalrun.view.pairing (model, prompt, row_id, repeat)"}  # fmt: skip
