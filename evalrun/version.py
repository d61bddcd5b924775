"""The version of evalrun (a module of its own so that any module may read it without importing
the package root, which imports the public API)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.3.0"
