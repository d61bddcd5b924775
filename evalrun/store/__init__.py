"""The run store (one SQLite file per run folder) and the response cache shared by run folders."""

from evalrun.store.records import Outcome
from evalrun.store.run_store import STORE_NAME, Store

__all__ = ["STORE_NAME", "Outcome", "Store"]
