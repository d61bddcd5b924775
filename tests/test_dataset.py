from __future__ import annotations

from pathlib import Path

import pytest

from evalrun.errors import DatasetError
from evalrun.plan.dataset import scan_dataset


def write(tmp_path: Path, text: str | bytes, name: str = "d.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_rows_keep_text_as_text(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffid,q,answer\n1,NA,007\n2,\"a, b\",C\n")
    data = scan_dataset(path, id_column="id")
    assert data.columns == ("id", "q", "answer")
    assert [r.values["q"] for r in data.rows] == ["NA", "a, b"]
    assert data.rows[0].values["answer"] == "007"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("id,q\n", "has a header but no data rows"),
        ("id,q\n1,a\n2,b,c\n", "line 3: 3 fields, but the header has 2"),
        ("id,q\n1,a\n1,b\n", "line 3: id '1' in column 'id' repeats line 2"),
        ("id,q,q\n1,a,b\n", "column name 'q' appears twice"),
    ],
)
def test_broken_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        scan_dataset(write(tmp_path, text), id_column="id")


def test_not_utf8_names_the_encoding_option(tmp_path: Path) -> None:
    path = write(tmp_path, "id,q\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"dataset\.encoding"):
        scan_dataset(path)
    assert scan_dataset(path, encoding="latin-1").rows[0].values["q"] == "café"


def test_missing_file_and_missing_id_column(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such dataset file"):
        scan_dataset(tmp_path / "nope.csv")
    with pytest.raises(DatasetError, match="id column 'key'"):
        scan_dataset(write(tmp_path, "id,q\n1,a\n"), id_column="key")


def test_limit_and_sample(tmp_path: Path) -> None:
    path = write(tmp_path, "id,q\n" + "".join(f"{i},x{i}\n" for i in range(1, 21)))
    assert [r.id for r in scan_dataset(path, id_column="id", limit=3).rows] == ["1", "2", "3"]
    sampled = scan_dataset(path, id_column="id", sample=5, seed=1).rows
    assert len(sampled) == 5
    assert sampled == scan_dataset(path, id_column="id", sample=5, seed=1).rows
