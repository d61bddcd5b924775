"""The run store (one SQLite file per run folder) and the response cache shared by run folders."""

from evalrun.store.run_store import STORE_NAME, Outcome, Store

__all__ = ["STORE_NAME", "Outcome", "Store"]
