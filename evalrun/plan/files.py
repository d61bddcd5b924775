"""Files a request carries: images and documents (PDF or plain text), by reference until sent.

A planned body never holds a file's data: an image or document block's source is a reference
(`FILE_SOURCE`: path, media type, content hash, and for a PDF its page count), read and encoded
only when the request is sent (`materialize`). The request key covers the file's content hash,
not its path (`key_view`).
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from evalrun.errors import DatasetError
from evalrun.messages_api import detect_image_type
from evalrun.tokens import MAX_PDF_PAGES, count_pdf_pages, count_text_tokens

__all__ = [
    "FILE_SOURCE",
    "MAX_DOCUMENT_BYTES",
    "MAX_IMAGE_BYTES",
    "MAX_PDF_PAGES",
    "count_pdf_pages",
    "document_file_source",
    "has_files",
    "image_file_source",
    "key_view",
    "materialize",
]

FILE_SOURCE = "evalrun_file"
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # the Messages API's limit per base64 image
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024  # the Messages API's limit per request
PDF = "application/pdf"
TEXT = "text/plain"


def _digest(path: Path) -> tuple[str, bytes]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        head = f.read(16)
        digest.update(head)
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest(), head


@lru_cache(maxsize=4096)
def _image_file(path: Path, size: int, mtime_ns: int) -> dict[str, str]:
    sha, head = _digest(path)
    media_type = detect_image_type(head)
    if media_type is None:
        raise ValueError("not a JPEG, PNG, GIF or WebP image")
    if size > MAX_IMAGE_BYTES:
        raise ValueError(f"{size / 1e6:.1f} MB; the API takes images of at most 5 MB")
    return {"type": FILE_SOURCE, "path": str(path), "media_type": media_type, "sha256": sha}


def _stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    if not path.is_file():
        raise IsADirectoryError(21, "is a folder, not a file")
    return stat.st_size, stat.st_mtime_ns


def image_file_source(path: Path) -> dict[str, str]:
    """A reference to an image file, checked (type from its bytes, size) and content-hashed."""
    return dict(_image_file(path, *_stat(path)))


@lru_cache(maxsize=1024)
def _document_file(path: Path, size: int, mtime_ns: int) -> dict[str, Any]:
    if size > MAX_DOCUMENT_BYTES:
        raise ValueError(f"{size / 1e6:.1f} MB; the API takes requests of at most 32 MB")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if data.startswith(b"%PDF-"):
        pages = count_pdf_pages(data)
        if pages > MAX_PDF_PAGES:
            raise ValueError(f"{pages} pages; the API takes PDFs of at most {MAX_PDF_PAGES} pages")
        return {"type": FILE_SOURCE, "path": str(path), "media_type": PDF, "sha256": sha, "pages": pages}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("neither a PDF (it does not start with %PDF-) nor UTF-8 text") from None
    if "\0" in text:
        raise ValueError("neither a PDF (it does not start with %PDF-) nor plain text")
    # Its tokens now, as the text source sent will count: estimates never read the file again.
    tokens = count_text_tokens(text)
    return {"type": FILE_SOURCE, "path": str(path), "media_type": TEXT, "sha256": sha, "tokens": tokens}


def document_file_source(path: Path) -> dict[str, Any]:
    """A reference to a document file (a PDF, or plain UTF-8 text), checked (existence, the API's
    size and page limits) and content-hashed."""
    return dict(_document_file(path, *_stat(path)))


def _file_blocks(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for message in body.get("messages") or ():
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") in ("image", "document"):
                    source = block.get("source")
                    if isinstance(source, dict) and source.get("type") == FILE_SOURCE:
                        yield block


def has_files(body: dict[str, Any]) -> bool:
    """Whether a planned body refers to an image or document file."""
    return next(_file_blocks(body), None) is not None


def key_view(body: dict[str, Any]) -> dict[str, Any]:
    """The body as the request key sees it: files by content hash, not by path."""
    if not has_files(body):
        return body
    view = copy.deepcopy(body)
    for block in _file_blocks(view):
        block["source"] = {k: v for k, v in block["source"].items() if k != "path"}
    return view


def _sent_source(source: dict[str, Any], data: bytes) -> dict[str, Any]:
    if source["media_type"] == TEXT:
        return {"type": "text", "media_type": TEXT, "data": data.decode("utf-8")}
    return {"type": "base64", "media_type": source["media_type"], "data": base64.b64encode(data).decode("ascii")}


def materialize(body: dict[str, Any]) -> dict[str, Any]:
    """The body as sent: file references replaced by their data (base64, or a document's text)."""
    if not has_files(body):
        return body
    sent = copy.deepcopy(body)
    for block in _file_blocks(sent):
        source = block["source"]
        path = Path(source["path"])
        what = "image" if block["type"] == "image" else "document"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{path}: {what} file cannot be read any more ({exc.strerror})") from None
        if hashlib.sha256(data).hexdigest() != source["sha256"]:
            raise DatasetError(f"{path}: {what} file changed since the run was planned; run again to re-plan it")
        block["source"] = _sent_source(source, data)
    return sent
