"""The row explorer of report.html: every cell's request, reply and score, embedded compactly.

`ExplorerResults` is a results writer: its sink sees every cell once during the report's
streaming pass and *spills* what the explorer shows to files in a scratch folder of the run
folder (`Staged.scratch`) as it goes; `HtmlReport` picks the sink up with `collected(staged)` and
streams the data into one `<script type="application/json">` of report.html. The scratch folder
goes away with the other temporary files when the reports are committed (or abandoned).

Memory is bounded whatever the size of the run: the sink holds one chunk of cells at a time and
small de-duplication indexes (text → id, turn → id, request → id), each a two-generation map of
at most `INDEX_ENTRIES` entries (and `INDEX_CHARS` characters of text) per generation. A text
seen again after its generation was dropped is written once more: the page grows a little, memory
does not. Writing the page loads the spilled columns one at a time (32 bits a cell each), and the
spill holds little more than the page, so that too is bounded by the caps below.

The page is bounded too:

* a text longer than its cap (`REPLY_CHARS`, `PART_CHARS`) keeps its head and tail with a note
  of how much was left out (results.csv and the store keep every character);
* at most `MAX_CELLS` cells and `MAX_TEXT_CHARS` characters of text are embedded. Above either,
  the page holds a sample of dataset *rows* with every cell of each sampled row (all models,
  prompts and repeats, so disagreements between variants still show): a row is kept when the top
  16 bits of a seeded hash of its id (`SAMPLE_SEED`) are below a threshold. Told how many cells
  will come (`expected_cells`: `ExplorerResults` counts the store's), the sink starts with the
  share that keeps about 95 % of the cell cap, and lowers it after a chunk when the text written
  per kept cell says the text cap will not hold; cells of rows above the threshold are never
  spilled. Whenever the kept cells outgrow a cap anyway (text is counted when first written,
  against the row that first used it), the threshold drops to about 90 % of the caps, and when
  the page is planned the exact text it holds is checked, the threshold lowered until it fits.
  The same store always gives the same sample;
* images are embedded once each (by sha256) as data: URLs, while each is at most
  `IMAGE_BYTES` and all together at most `IMAGES_TOTAL`; beyond that the page shows the path.
  Images given by URL are shown as links and never fetched.

The payload (format `FORMAT`) is documented in `ExplorerSink.write_json`; `decode` reads it back.
"""

from __future__ import annotations

import weakref
from typing import Any

from evalrun.reports.explorer_parts import (
    FORMAT,
    IMAGE_BYTES,
    IMAGES_TOTAL,
    INDEX_CHARS,
    INDEX_ENTRIES,
    MAX_CELLS,
    MAX_TEXT_CHARS,
    OUTCOMES,
    PART_CHARS,
    REPLY_CHARS,
    SAMPLE_SEED,
    clip,
    decode,
    render_request,
)
from evalrun.reports.explorer_sink import ExplorerSink

__all__ = [
    "FORMAT",
    "IMAGES_TOTAL",
    "IMAGE_BYTES",
    "INDEX_CHARS",
    "INDEX_ENTRIES",
    "MAX_CELLS",
    "MAX_TEXT_CHARS",
    "OUTCOMES",
    "PART_CHARS",
    "REPLY_CHARS",
    "SAMPLE_SEED",
    "ExplorerResults",
    "ExplorerSink",
    "clip",
    "collected",
    "decode",
    "hand_over",
    "render_request",
]

# -- the writer --------------------------------------------------------------------------------
_COLLECTED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def collected(staged: Any) -> Any:
    """The explorer sink that ran while writing into `staged` (closed), if one did, or what a
    child process built in its place (`evalrun.reports.explorer_process.ChildExplorer`)."""
    sink = _COLLECTED.get(staged)
    if sink is None:
        return None
    if isinstance(sink, ExplorerSink):
        sink.close()
    return sink


def hand_over(staged: Any, explorer: Any) -> None:
    """Make `explorer` (built elsewhere) the one `collected(staged)` returns."""
    _COLLECTED[staged] = explorer


class ExplorerResults:
    """The explorer's data for report.html: its sink spills into a scratch folder of the staged
    run folder; `HtmlReport` streams it into the page. The request bodies are read from the store
    by `_Bodies` (in the order they were written: a sequential read, cheaper than the pass joining
    them to every cell)."""

    filename = "report.html"
    needs_requests = False

    def available(self) -> bool:
        return True

    def open(self, staged: Any) -> ExplorerSink:
        sink = ExplorerSink.for_run(staged.folder, staged.scratch("explorer"))
        _COLLECTED[staged] = sink
        return sink
