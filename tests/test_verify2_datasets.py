"""A JSONL record cut short (a truncated export) is named by its line and column, with what is
wrong: an unterminated string, not the line's own newline as an "invalid control character"."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalrun.errors import DatasetError
from evalrun.plan.dataset import scan_dataset


def test_a_record_cut_short_says_unterminated_string_with_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "q": "one"}\n{"id": "b", "q": "tw\n{"id": "c", "q": "three"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"d\.jsonl: line 2: not valid JSON \(Unterminated string starting at column 18\)$"):
        scan_dataset(path, id_column="id")


def test_a_missing_comma_names_its_column(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a" "q": 1}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"line 1: not valid JSON \(Expecting ',' delimiter at column 12\)$"):
        scan_dataset(path, id_column="id")
