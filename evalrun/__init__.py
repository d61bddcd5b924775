"""evalrun: batch evaluations and prompt experiments on the Anthropic Messages API."""

from __future__ import annotations

from evalrun.errors import EvalrunError

__all__ = ["EvalrunError"]
__version__ = "0.1.0"
