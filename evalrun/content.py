"""The content of a prompt variant's turns: text, image and document blocks, turns, and the
place where a row's own turns go. Part of the experiment spec (`evalrun.spec` re-exports it)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

__all__ = [
    "AnyTurn",
    "Block",
    "DocumentBlock",
    "ImageBlock",
    "RowTurns",
    "TextBlock",
    "Turn",
    "options_fields",
    "placeholder_field",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextBlock(_Strict):
    """A text content block; `text` is a template."""

    type: Literal["text"]
    text: str
    cache_control: dict[str, Any] | None = None


class ImageBlock(_Strict):
    """An image block: `path` (a file, sent as base64) or `url`; both are templates."""

    type: Literal["image"]
    path: str | None = None
    url: str | None = None
    cache_control: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ImageBlock:
        if (self.path is None) == (self.url is None):
            raise ValueError("an image block needs exactly one of `path` or `url`")
        return self


class DocumentBlock(_Strict):
    """A document block: `path` (a PDF, sent as base64, or a plain text file) or `url`; both are
    templates. `citations: true` asks the reply to cite the document."""

    type: Literal["document"]
    path: str | None = None
    url: str | None = None
    title: str | None = None
    context: str | None = None
    citations: bool = False
    cache_control: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DocumentBlock:
        if (self.path is None) == (self.url is None):
            raise ValueError("a document block needs exactly one of `path` or `url`")
        return self


Block = Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]
_PLACEHOLDER = re.compile(r"^\{\s*([^{}|\s]+)\s*\}$")


_OPTIONS = re.compile(r"(?<!\{)\{\s*([^{}|\s]+)\s*\|\s*options\s*\}")


def options_fields(texts: Iterable[str]) -> list[str]:
    """The fields `{field|options}` placeholders in `texts` letter, sorted."""
    return sorted({field for text in texts for field in _OPTIONS.findall(text)})


def placeholder_field(text: str) -> str | None:
    """The field a string that is one placeholder and nothing else names (`"{messages}"`), or None."""
    match = _PLACEHOLDER.match(text.strip())
    return match.group(1) if match else None


class Turn(_Strict):
    """One conversation turn; few-shot examples are user/assistant pairs."""

    role: Literal["user", "assistant"]
    content: str | list[Block]


class RowTurns(_Strict):
    """Where a row's own conversation goes: `"{messages}"` in a variant's `messages` is replaced
    by the list of turns the row holds in that field."""

    turns: str  # the placeholder, e.g. "{messages}"

    @field_validator("turns")
    @classmethod
    def _one_placeholder(cls, value: str) -> str:
        if placeholder_field(value) is None:
            raise ValueError(
                f"{value!r}: a turn is a mapping with role and content, or a placeholder alone "
                f"(\"{{messages}}\") naming the field that holds the row's turns"
            )
        return value

    @property
    def field(self) -> str:
        """The field holding the row's turns."""
        return placeholder_field(self.turns) or ""

    @property
    def role(self) -> str:
        return "row"

    @property
    def content(self) -> str:
        return self.turns


def _turn_kind(value: Any) -> str:
    return "row" if isinstance(value, str | RowTurns) or (isinstance(value, Mapping) and "turns" in value) else "turn"


AnyTurn = Annotated[
    Annotated[Turn, Tag("turn")] | Annotated[RowTurns, Tag("row")], Discriminator(_turn_kind)
]
