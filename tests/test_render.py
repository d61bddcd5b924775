from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evalrun.errors import DatasetError, TemplateError
from evalrun.plan.render import Template, detect_media_type, key_view, materialize, render_turns
from evalrun.spec import Turn

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def test_placeholders_and_literal_braces() -> None:
    template = Template.parse('{question} -> {{"answer": "{letter}"}}', where="t")
    assert template.columns == ("question", "letter")
    assert template.fill({"question": "Q?", "letter": "C"}) == 'Q? -> {"answer": "C"}'


@pytest.mark.parametrize("source", ["{open", "close}", "{}"])
def test_malformed_templates_say_where(source: str) -> None:
    with pytest.raises(TemplateError, match=r"prompts\.p\.messages\.0\.content"):
        Template.parse(source, where="prompts.p.messages.0.content")


@given(st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=30), st.text(max_size=30))
def test_filling_is_plain_substitution(literal: str, value: str) -> None:
    template = Template.parse(literal + "{col}" + literal, where="t")
    assert template.fill({"col": value}) == literal + value + literal


def test_image_from_a_file_is_base64_with_the_type_from_its_bytes(tmp_path: Path) -> None:
    (tmp_path / "pic.jpg").write_bytes(PNG)  # the name lies; the bytes say PNG
    turns = [Turn(role="user", content=[{"type": "image", "path": "{img}"}, {"type": "text", "text": "What?"}])]
    messages = render_turns(turns, {"img": "pic.jpg"}, base_dir=tmp_path, where="prompts.p", row_where="d.csv: line 2")
    planned = {"model": "m", "max_tokens": 1, "messages": messages}
    # Planned bodies refer to the file (read only when sent); the key sees its content, not its path.
    assert messages[0]["content"][0]["source"]["type"] == "evalrun_file"
    assert "path" not in json.dumps(key_view(planned)) and "sha256" in json.dumps(key_view(planned))
    source = materialize(planned)["messages"][0]["content"][0]["source"]
    assert source == {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()}


def test_a_changed_image_is_caught_when_sent(tmp_path: Path) -> None:
    (tmp_path / "pic.png").write_bytes(PNG)
    turns = [Turn(role="user", content=[{"type": "image", "path": "pic.png"}])]
    planned = {"messages": render_turns(turns, {}, base_dir=tmp_path, where="p", row_where="r")}
    (tmp_path / "pic.png").write_bytes(PNG + b"changed")
    with pytest.raises(DatasetError, match="changed since the run was planned"):
        materialize(planned)


def test_image_url_and_image_errors(tmp_path: Path) -> None:
    turns = [Turn(role="user", content=[{"type": "image", "url": "{u}"}])]
    messages = render_turns(turns, {"u": "https://x.test/a.png"}, base_dir=tmp_path, where="p", row_where="r")
    assert messages[0]["content"][0]["source"] == {"type": "url", "url": "https://x.test/a.png"}
    files = [Turn(role="user", content=[{"type": "image", "path": "{img}"}])]
    with pytest.raises(DatasetError, match=r"d.csv: line 4.*not found"):
        render_turns(files, {"img": "missing.png"}, base_dir=tmp_path, where="p", row_where="d.csv: line 4")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="not a JPEG, PNG, GIF or WebP"):
        render_turns(files, {"img": "notes.txt"}, base_dir=tmp_path, where="p", row_where="r")


@pytest.mark.parametrize(
    ("head", "kind"),
    [(b"\xff\xd8\xff\xe0", "image/jpeg"), (PNG[:8], "image/png"), (b"GIF89a", "image/gif"), (b"RIFF\0\0\0\0WEBP", "image/webp")],
)
def test_media_types(head: bytes, kind: str) -> None:
    assert detect_media_type(head + b"\0" * 8) == kind
