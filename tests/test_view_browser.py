"""`evalrun view` in headless Chromium: open the list, open a run, set a verdict, reload, see it
and see the accuracy change; a reply holding a script tag is shown as text and never runs.

Skipped when Chromium is not installed (Debian: `apt-get install -y chromium`).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from .chromium import CHROMIUM, chromium
from .fakes_view import make_run, running_viewer

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")

HOSTILE = 'B <script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


def _plant_hostile_reply(folder: Path) -> None:
    """The first cell's stored reply becomes markup (as a model or a dataset could write it)."""
    with sqlite3.connect(folder / "store.sqlite") as db:
        (key,) = db.execute("SELECT request_key FROM cells ORDER BY seq LIMIT 1").fetchone()
        message = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": HOSTILE}],
                   "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}  # fmt: skip
        db.execute("UPDATE responses SET text = ?, message_json = ? WHERE key = ?", (HOSTILE, json.dumps(message), key))


def test_a_verdict_set_in_the_browser_survives_a_reload_and_moves_the_accuracy(tmp_path: Path) -> None:
    root = tmp_path / "reports"
    folder = make_run("capitals", root / "capitals" / "r1")
    _plant_hostile_reply(folder)
    with running_viewer(root) as viewer, chromium(width=1400, height=1000) as browser:
        browser.open(viewer.url)
        browser.wait_for("document.documentElement.getAttribute('data-view') === 'ready'")
        assert "token" not in browser.eval("location.href")  # taken off the address bar, kept for this tab
        href = browser.eval("document.querySelector('tr.run[data-run=\"capitals/r1\"] a.open').getAttribute('href')")
        assert href == "/runs/capitals/r1"

        browser.open(viewer.base + href)
        browser.wait_for("document.documentElement.getAttribute('data-cells') === 'ready'"
                         " && document.querySelector('#live-box .acc-line') !== null")  # fmt: skip
        # The hostile reply is text on the page, and nothing of it ran.
        reply = browser.eval("document.querySelector('#cells-app .cell pre.reply').textContent")
        assert reply == HOSTILE
        assert browser.eval("window.pwned === undefined")
        assert browser.eval("document.querySelectorAll('#cells-app script, #cells-app img').length") == 0

        target = browser.eval(
            "(() => { const c = Array.from(document.querySelectorAll('#cells-app .cell[data-outcome=correct]')).pop();"
            " return {model: c.dataset.model, prompt: c.dataset.prompt, row: c.dataset.rowId}; })()"
        )
        line = f".acc-line[data-model=\"{target['model']}\"][data-prompt=\"{target['prompt']}\"] .acc-value"
        before_text = browser.eval(f"document.querySelector('#live-box {line}').textContent")
        before = next(a["accuracy"] for a in httpx.get(f"{viewer.base}/api/runs/capitals/r1", timeout=30).json()["accuracy"]
                      if (a["model"], a["prompt"]) == (target["model"], target["prompt"]))  # fmt: skip
        assert before_text.startswith(f"{100 * before:.1f}%")
        cell = (f"#cells-app .cell[data-model=\"{target['model']}\"][data-prompt=\"{target['prompt']}\"]"
                f"[data-row-id=\"{target['row']}\"]")  # fmt: skip
        browser.eval(f"document.querySelector('{cell} input.note').value = 'the letter is right but the reasoning is not'")
        browser.eval(f"document.querySelector('{cell} button.verdict[data-verdict=wrong]').click()")
        browser.wait_for(f"(document.querySelector('{cell}') || {{}}).dataset?.source === 'human'")

        browser.open(viewer.base + href)  # reload
        browser.wait_for("document.documentElement.getAttribute('data-cells') === 'ready'"
                         " && document.querySelector('#live-box .acc-line') !== null")  # fmt: skip
        assert browser.eval(f"document.querySelector('{cell}').dataset.source") == "human"
        assert browser.eval(f"document.querySelector('{cell}').dataset.outcome") == "wrong"
        said = browser.eval(f"document.querySelector('{cell} .review-state').textContent")
        assert "reviewed: wrong" in said and "the reasoning is not" in said and "said correct" in said
        after = before - 1 / 40  # one of the variant's 40 rows turned wrong
        browser.wait_for(f"document.querySelector('#live-box {line}').textContent.startsWith('{100 * after:.1f}%')")
