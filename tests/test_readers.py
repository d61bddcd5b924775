"""Every dataset format yields the same rows, and every check a CSV gets holds for each format,
named by line or record number."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from evalrun.errors import DatasetError
from evalrun.plan.dataset import scan_dataset
from evalrun.plan.readers import format_of
from tests.fakes_datasets import ROWS, write_jsonl, write_parquet

FLAT = [{"id": "a", "q": "café?", "n": 1}, {"id": "b", "q": "two", "n": 2}, {"id": "c", "q": "three", "n": 3}]


def _write(tmp_path: Path, kind: str, rows: list[dict[str, Any]]) -> Path:
    if kind == "csv":
        path = tmp_path / "d.csv"
        lines = ["id,q,n", *(f"{r['id']},{r['q']},{r['n']}" for r in rows)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path
    if kind == "json":
        path = tmp_path / "d.json"
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
        return path
    if kind == "parquet":
        return write_parquet(tmp_path / "d.parquet", rows)
    return write_jsonl(tmp_path / ("d.jsonl.gz" if kind == "jsonl.gz" else "d.jsonl"), rows)


@pytest.mark.parametrize("kind", ["csv", "jsonl", "jsonl.gz", "json", "parquet"])
def test_every_format_yields_the_same_rows_with_limit_and_sample(tmp_path: Path, kind: str) -> None:
    data = scan_dataset(_write(tmp_path, kind, FLAT), id_column="id")
    assert data.count == 3 and data.columns == ("id", "q", "n")
    values = [{k: str(v) for k, v in r.values.items()} for r in data.rows]  # CSV keeps text as text
    assert values == [{k: str(v) for k, v in r.items()} for r in FLAT]
    assert [r.id for r in scan_dataset(data.path, id_column="id", limit=2).rows] == ["a", "b"]
    sampled = [r.id for r in scan_dataset(data.path, id_column="id", sample=2, seed=3).rows]
    csv_sampled = [r.id for r in scan_dataset(_write(tmp_path, "csv", FLAT), id_column="id", sample=2, seed=3).rows]
    assert sampled == csv_sampled  # the same seed picks the same records whatever the format


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet"])
def test_nested_values_stay_nested(tmp_path: Path, kind: str) -> None:
    path = _write(tmp_path, kind, ROWS)
    row = scan_dataset(path, id_column="id").rows[0]
    assert row.values["doc"] == {"title": "Rivers", "year": 2021}
    assert row.values["choices"][4] == "Volga" and row.values["answer_index"] == 2
    assert row.values["messages"][1] == {"role": "assistant", "content": "Go ahead."}


@pytest.mark.parametrize(
    ("kind", "where"),
    [("csv", "line 4"), ("jsonl", "line 3"), ("json", "line 12"), ("parquet", "record 3")],
)
def test_a_repeated_id_names_both_places(tmp_path: Path, kind: str, where: str) -> None:
    rows = [FLAT[0], FLAT[1], {**FLAT[2], "id": "a"}]
    with pytest.raises(DatasetError, match=rf"{where}: id 'a' in column 'id' repeats (line|record) (2|1)"):
        scan_dataset(_write(tmp_path, kind, rows), id_column="id")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": 1}\n{"id": 2,\n', "line 2: not valid JSON"),
        ('{"id": 1}\n\n[1, 2]\n', "line 3: expected a JSON object"),
        ("", "the file has no rows"),
        ('{"id": 1}\n{"q": 2}\n', "line 2: no id field 'id'"),
        ('{"id": 1}\n{"id": ""}\n', "line 2: column 'id' \\(the id\\) is empty"),
    ],
)
def test_jsonl_problems_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "d.jsonl").write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        scan_dataset(tmp_path / "d.jsonl", id_column="id")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": 1}', "line 1: expected a JSON array of objects"),
        ('[\n {"id": 1},\n {"id": 2\n]', "line 4: not valid JSON"),
        ('[\n {"id": 1},\n 7\n]', "line 3: expected a JSON object"),
        ('[{"id": 1} {"id": 2}]', "expected ',' or ']'"),
        ('[{"id": 1}] x', "text after the end of the array"),
        ("[]", "the file has no rows"),
    ],
)
def test_json_array_problems_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "d.json").write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        scan_dataset(tmp_path / "d.json", id_column="id")


def test_a_json_array_streams_records_longer_than_a_read(tmp_path: Path) -> None:
    rows = [{"id": str(i), "text": "x" * 100_000 * (i + 1)} for i in range(3)]
    (tmp_path / "d.json").write_text(json.dumps(rows), encoding="utf-8")
    assert [len(r.values["text"]) for r in scan_dataset(tmp_path / "d.json", id_column="id").rows] == [100_000, 200_000, 300_000]


@pytest.mark.parametrize("name", ["d.csv", "d.jsonl", "d.json"])
def test_an_encoding_error_names_its_line(tmp_path: Path, name: str) -> None:
    good = {"d.csv": b"id,q\n1,a\n2,b\n", "d.jsonl": b'{"id": 1}\n{"id": 2}\n', "d.json": b'[{"id": 1},\n{"id": 2},\n'}[name]
    bad = {"d.csv": b"3,caf\xe9\n", "d.jsonl": b'{"id": "caf\xe9"}\n', "d.json": b'{"id": "caf\xe9"}]\n'}[name]
    (tmp_path / name).write_bytes(good + bad)
    line = 4 if name == "d.csv" else 3  # after the header line
    with pytest.raises(DatasetError, match=rf"line {line}: not valid utf-8 text.*dataset\.encoding"):
        scan_dataset(tmp_path / name, id_column="id")
    assert scan_dataset(tmp_path / name, id_column="id", encoding="latin-1").count == 3


def test_format_from_the_name_and_the_override(tmp_path: Path) -> None:
    assert [format_of(Path(n)) for n in ("a.csv", "a.JSONL", "a.jsonl.gz", "a.json", "a.parquet", "a.txt")] == [
        "csv", "jsonl", "jsonl", "json", "parquet", "csv",
    ]  # fmt: skip
    path = tmp_path / "rows.txt"
    path.write_text('{"id": "x"}\n', encoding="utf-8")
    assert scan_dataset(path, id_column="id", format="jsonl").rows[0].values == {"id": "x"}


def test_a_truncated_gzip_and_a_broken_parquet_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(b'{"id": 1}\n' * 100)[:30])
    with pytest.raises(DatasetError, match=r"d\.jsonl\.gz: the file ends early"):
        scan_dataset(tmp_path / "d.jsonl.gz")
    (tmp_path / "d.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        scan_dataset(tmp_path / "d.parquet")


def test_nested_paths_are_checked_against_the_objects_the_file_holds(tmp_path: Path) -> None:
    data = scan_dataset(write_jsonl(tmp_path / "d.jsonl", ROWS), id_column="id")
    assert data.missing_field("doc.title") is None and data.missing_field("choices.4") is None
    assert data.missing_field("doc.titel") == "is not in d.jsonl: 'doc' has no field 'titel' (it has title, year)"
    assert "is not a column of d.jsonl" in (data.missing_field("questoin") or "")


def test_parquet_without_pyarrow_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_parquet(tmp_path / "d.parquet", FLAT)
    # Simulate an install without the optional extra: the import fails as it would there.
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DatasetError, match=r"needs pyarrow.*pip install 'evalrun\[parquet\]'"):
        scan_dataset(path)


def test_a_saved_hugging_face_dataset_without_the_package_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # as on an install without `datasets`
    with pytest.raises(DatasetError, match=r"needs the `datasets` package.*never downloads"):
        scan_dataset(tmp_path / "saved", format="hf")


def test_a_saved_hugging_face_dataset_is_read_from_disk(tmp_path: Path) -> None:
    hf = pytest.importorskip("datasets", reason="the optional `datasets` package is not installed")
    if not hasattr(hf, "DatasetDict"):
        pytest.skip("the optional `datasets` package is not installed")
    hf.DatasetDict({"test": hf.Dataset.from_list(ROWS), "train": hf.Dataset.from_list(ROWS[:1])}).save_to_disk(str(tmp_path / "saved"))
    data = scan_dataset(tmp_path / "saved", format="hf", split="test", id_column="id")
    assert [r.id for r in data.rows] == ["r1", "r2", "r3"] and data.rows[2].values["choices"][4] == "Baikal"
    with pytest.raises(DatasetError, match=r"split 'dev' is not one of the saved splits \(test, train\)"):
        scan_dataset(tmp_path / "saved", format="hf", split="dev")
