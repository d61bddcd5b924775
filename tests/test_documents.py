"""Document blocks: checked like images before anything is sent, sent as the API takes them,
counted the same way by the plan and the simulator, shown in the explorer with their pages."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from evalrun.errors import DatasetError
from evalrun.plan.files import count_pdf_pages, materialize
from evalrun.plan.render import render_turns
from evalrun.reports.explorer import render_request
from evalrun.reports.explorer_parts import _reply
from evalrun.sim._errors import SimError
from evalrun.sim._validate import validate_request
from evalrun.spec import Turn
from evalrun.tokens import PDF_PAGE_TOKENS, count_request_tokens


def pdf(pages: int) -> bytes:
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode()]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"] * pages
    body = b"".join(f"{i} 0 obj\n".encode() + o + b"\nendobj\n" for i, o in enumerate(objects, 1))
    return b"%PDF-1.4\n" + body + b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"


DOC = [Turn(role="user", content=[{"type": "document", "path": "{file}", "citations": True}, {"type": "text", "text": "Q?"}])]


def _render(tmp_path: Path, name: str) -> dict:
    turns = render_turns(DOC, {"file": name}, base_dir=tmp_path, where="prompts.p", row_where="d.csv: line 2")
    return {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": turns}


def test_pages_are_counted_by_page_objects_not_the_page_tree() -> None:
    assert [count_pdf_pages(pdf(n)) for n in (1, 3, 100)] == [1, 3, 100]


def test_a_pdf_is_sent_as_base64_and_a_text_file_as_a_text_source(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(pdf(2))
    (tmp_path / "b.txt").write_text("The ferry leaves at 6:15.", encoding="utf-8")
    planned = _render(tmp_path, "a.pdf")
    assert planned["messages"][0]["content"][0]["source"]["pages"] == 2  # the plan never holds the data
    sent = materialize(planned)["messages"][0]["content"][0]
    assert sent == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(pdf(2)).decode()},
        "citations": {"enabled": True},
    }
    text = materialize(_render(tmp_path, "b.txt"))["messages"][0]["content"][0]["source"]
    assert text == {"type": "text", "media_type": "text/plain", "data": "The ferry leaves at 6:15."}


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("big.pdf", pdf(101), "101 pages; the API takes PDFs of at most 100 pages"),
        ("pic.bin", b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "neither a PDF"),
        ("missing.pdf", None, "document file 'missing.pdf' not found"),
    ],
)
def test_a_document_that_cannot_be_sent_is_named_with_its_row(tmp_path: Path, name: str, data: bytes | None, message: str) -> None:
    if data is not None:
        (tmp_path / name).write_bytes(data)
    with pytest.raises(DatasetError, match=rf"d.csv: line 2, prompts.p.messages.0.content.0: .*{message}"):
        _render(tmp_path, name)


def test_a_document_over_32_mb_is_refused_before_sending(tmp_path: Path) -> None:
    with (tmp_path / "huge.pdf").open("wb") as f:
        f.write(b"%PDF-1.4\n")
        f.truncate(33 * 1024 * 1024)  # sparse: no 33 MB written
    with pytest.raises(DatasetError, match="the API takes requests of at most 32 MB"):
        _render(tmp_path, "huge.pdf")


def test_the_plans_token_estimate_is_what_the_simulator_counts(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(pdf(3))
    (tmp_path / "b.txt").write_text("one two three four five six seven", encoding="utf-8")
    for name in ("a.pdf", "b.txt"):
        planned = _render(tmp_path, name)
        assert count_request_tokens(planned) == count_request_tokens(materialize(planned))
    assert count_request_tokens(_render(tmp_path, "a.pdf")) > 3 * PDF_PAGE_TOKENS


def test_the_simulator_takes_documents_and_refuses_what_the_api_refuses(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(pdf(1))
    body = materialize(_render(tmp_path, "a.pdf"))
    validate_request(body, removed=frozenset())
    bad = {**body, "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(b"not a pdf").decode()}}]}]}
    with pytest.raises(SimError, match="The PDF specified was not valid"):
        validate_request(bad, removed=frozenset())
    wrong = {**body, "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/html", "data": "x"}}]}]}
    with pytest.raises(SimError, match=r"messages.0.content.0.source.text.media_type: Input should be 'text/plain'"):
        validate_request(wrong, removed=frozenset())


def test_the_explorer_shows_a_document_as_a_link_with_its_pages_and_the_reply_its_citations(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(pdf(2))
    turns = render_request(_render(tmp_path, "a.pdf"))
    doc = next(p for _, parts in turns for p in parts if isinstance(p, tuple) and p[0] == "doc")
    assert doc == ("doc", "a.pdf · 2 pages · application/pdf · citations", (tmp_path / "a.pdf").as_uri())
    message = (
        '{"content": [{"type": "text", "text": "It opened in 1932.", "citations": [{"type": "page_location", '
        '"cited_text": "The bridge opened in 1932.", "document_index": 0, "start_page_number": 1, "end_page_number": 2}]}]}'
    )
    shown = _reply("It opened in 1932.", message, None)
    assert shown == 'It opened in 1932.\n  [cites document 0, pages 1–1: "The bridge opened in 1932."]'


@pytest.mark.parametrize("max_cells", [None, 3])
def test_a_documents_label_and_link_survive_when_the_explorer_embeds_only_some_cells(max_cells: int | None) -> None:
    import json as _json

    from evalrun.reports.explorer import ExplorerSink, decode

    sink = ExplorerSink(max_cells=max_cells)
    sink.begin([])
    records, cells = [], []
    for i in range(12):
        body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "url", "url": f"https://example.com/{i}.pdf"}},
            {"type": "text", "text": f"question {i}"}]}]}  # fmt: skip
        records.append({"model": "m", "prompt": "p", "row_id": f"r{i}", "repeat": 0, "status": "ok", "correct": True,
                        "answer": "A", "target": "A", "response_text": "A", "attempts": 1})  # fmt: skip
        cells.append({"seq": i, "row_seq": i, "request_key": f"k{i}", "request_json": _json.dumps(body)})
    sink.write(records, cells)
    sink.close()
    payload = decode(_json.loads(sink.json()))
    strings = payload["strings"]
    shown = {strings[payload["cells"]["r"][c]]: payload["requests"][payload["cells"]["q"][c]] for c in range(payload["count"])}
    assert (max_cells is None) == (len(shown) == 12)
    for row_id, turns in shown.items():
        docs = [p for t in turns for p in payload["turns"][t][1] if isinstance(p, dict)]
        assert [(strings[d["doc"]], strings[d["link"]]) for d in docs] == [
            ("document by URL (not fetched)", f"https://example.com/{row_id[1:]}.pdf")
        ]
