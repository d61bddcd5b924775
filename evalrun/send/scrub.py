"""Keeping an API key out of everything a server says: reply bodies and error texts.

A server may echo the key back whole, or a piece of it (an error quoting a header line cut
short, a middle piece in a 500's message). Any run of 8 or more characters of the key's secret
part is blanked wherever it appears, before the text is stored, written to a report or printed.
Control characters a server puts in an error text (terminal escapes, a carriage return that
overwrites the line) are taken out of what is shown and stored as well.
"""

from __future__ import annotations

import re

__all__ = ["LEAK_MIN", "REDACTED", "KeyScrubber", "printable"]

REDACTED = "[redacted key]"
LEAK_MIN = 8  # a run of the key this long in a server's text is blanked out
_PUBLIC_PREFIX = re.compile(r"^sk-ant-[a-z]+\d*-")  # the part of a key every key shares
# C0 controls but tab and newline, DEL, C1 controls (ESC starts an escape sequence; \r rewrites
# the line; BEL ends an OSC sequence).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` without control characters: a server's error text reaches the terminal."""
    return _CONTROL.sub("", text) if _CONTROL.search(text) else text


class _Pieces:
    """Finds every run of `LEAK_MIN`+ characters of one secret in a text (str or bytes)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.bsecret = secret.encode()
        self.grams = frozenset(secret[i : i + LEAK_MIN] for i in range(len(secret) - LEAK_MIN + 1))
        self.bgrams = frozenset(g.encode() for g in self.grams)
        alphabet = "".join(re.escape(c) for c in sorted(set(secret)))
        # Runs of the key's own characters, at least LEAK_MIN long: the only places a piece can be.
        self.runs = re.compile(f"[{alphabet}]{{{LEAK_MIN},}}") if alphabet else None
        self.bruns = re.compile(f"[{alphabet}]{{{LEAK_MIN},}}".encode()) if alphabet else None

    def spans(self, run: str | bytes) -> list[tuple[int, int]]:
        grams: frozenset[str] | frozenset[bytes] = self.grams if isinstance(run, str) else self.bgrams
        whole: str | bytes = self.secret if isinstance(run, str) else self.bsecret
        found, start = [], 0
        while start <= len(run) - LEAK_MIN:
            if run[start : start + LEAK_MIN] not in grams:
                start += 1
                continue
            end = start + LEAK_MIN
            while end < len(run) and run[start : end + 1] in whole:  # type: ignore[operator]
                end += 1
            found.append((start, end))
            start = end
        return found


class KeyScrubber:
    """Blanks an API key, whole or any piece of 8+ characters of it, out of a server's text.

    Error texts are searched for pieces of the whole key; reply bodies for pieces of its secret
    part only (after the `sk-ant-api03-` every Anthropic key starts with): an answer that merely
    names that prefix is an answer, not a leak."""

    def __init__(self, key: str | None) -> None:
        self.key = key or ""
        secret = _PUBLIC_PREFIX.sub("", self.key, count=1)
        self._text = _Pieces(self.key) if len(self.key) >= LEAK_MIN else None
        self._body = _Pieces(secret) if len(secret) >= LEAK_MIN else None

    def text(self, text: str) -> str:
        """An error text with the key blanked and control characters taken out."""
        text = printable(text)
        if not self.key:
            return text
        if self.key in text:
            text = text.replace(self.key, REDACTED)
        pieces = self._text
        if pieces is None or pieces.runs is None:
            return text
        return _replace(text, pieces, pieces.runs)

    def body(self, content: bytes) -> bytes:
        """A body as received, with any piece of the key's secret part blanked."""
        pieces = self._body
        if pieces is None or pieces.bruns is None:
            return content
        whole = self.key.encode()
        if whole in content:
            content = content.replace(whole, REDACTED.encode())
        parts: list[bytes] = []
        last = 0
        for match in pieces.bruns.finditer(content):
            for start, end in pieces.spans(match.group()):
                parts += [content[last : match.start() + start], REDACTED.encode()]
                last = match.start() + end
        return content if not parts else b"".join([*parts, content[last:]])


def _replace(text: str, pieces: _Pieces, runs: re.Pattern[str]) -> str:
    parts: list[str] = []
    last = 0
    for match in runs.finditer(text):
        for start, end in pieces.spans(match.group()):
            parts += [text[last : match.start() + start], REDACTED]
            last = match.start() + end
    return text if not parts else "".join([*parts, text[last:]])
