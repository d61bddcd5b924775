"""Fakes for dataset-shape tests: rows in several formats and an API that records every request."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import httpx

# Nested rows: a five-option and a four-option question, answer as a 0-based index, a nested
# topic, and a per-row conversation that ends with the question.
ROWS: list[dict[str, Any]] = [
    {
        "id": "r1",
        "doc": {"title": "Rivers", "year": 2021},
        "question": "Which river is the longest?",
        "choices": ["Danube", "Rhine", "Nile", "Seine", "Volga"],
        "answer_index": 2,
        "messages": [
            {"role": "user", "content": "I have a geography question."},
            {"role": "assistant", "content": "Go ahead."},
            {"role": "user", "content": "Which river is the longest?"},
        ],
    },
    {
        "id": "r2",
        "doc": {"title": "Peaks", "year": 2022},
        "question": "Which mountain is the highest?",
        "choices": ["Everest", "K2", "Kangchenjunga", "Lhotse"],
        "answer_index": 0,
        "messages": [{"role": "user", "content": "Which mountain is the highest?"}],
    },
    {
        "id": "r3",
        "doc": {"title": "Lakes", "year": 2023},
        "question": "Which lake is the deepest?",
        "choices": ["Superior", "Victoria", "Tanganyika", "Titicaca", "Baikal"],
        "answer_index": 4,
        "messages": [
            {"role": "user", "content": "Quiz time."},
            {"role": "assistant", "content": "Ready."},
            {"role": "user", "content": "Which lake is the deepest?"},
        ],
    },
]
# What the fake model answers for each question (r2 wrong on purpose).
REPLIES = {"longest": "C", "highest": "B", "deepest": "E"}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Nested columns as Parquet has them: `doc` a struct, `choices` a list, `messages` a list of structs.
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, path, row_group_size=2)
    return path


class RecordingAPI:
    """An httpx handler that records every request body and answers with a letter per question."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        text_in = json.dumps(body["messages"])
        letter = next((v for k, v in REPLIES.items() if re.search(k, text_in)), "A")
        prefilled = body["messages"][-1]["role"] == "assistant"
        message = {
            "id": f"msg_{len(self.bodies)}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": f"{letter})" if prefilled else f"The answer is ({letter})."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 20, "output_tokens": 2, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }
        return httpx.Response(200, json=message, headers={"request-id": f"req_{len(self.bodies)}"})
