"""From a spec file to a stored, reported run. The work is done in `evalrun.engine` (its stages
read in order there); this module keeps the names earlier code and tests import."""

from __future__ import annotations

from evalrun.engine.estimating import estimate_prepared
from evalrun.engine.options import DEFAULT_CONCURRENCY, RunOptions
from evalrun.engine.prepare import MAX_CELLS, Prepared, api_keys, lane_names, prepare, simulator
from evalrun.engine.run import RunResult, run_prepared
from evalrun.engine.stages import settings_of

__all__ = [
    "DEFAULT_CONCURRENCY",
    "MAX_CELLS",
    "Prepared",
    "RunOptions",
    "RunResult",
    "api_keys",
    "estimate_prepared",
    "lane_names",
    "prepare",
    "run_prepared",
    "settings_of",
    "simulator",
]
