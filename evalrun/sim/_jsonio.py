"""JSON encoding for the hot path: orjson when it is installed, the standard library otherwise."""

from __future__ import annotations

import json
from typing import Any

try:  # orjson is optional: several times faster, and the simulator serves benchmarks
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

__all__ = ["dumps", "loads"]


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON bytes."""
    if orjson is not None:
        return bytes(orjson.dumps(value))
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes) -> Any:
    """Parse JSON bytes; raises ValueError on bad input."""
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)
