"""The row explorer's data: what report.html embeds agrees with results.csv, stays within its caps,
carries no unescaped user text, and is collected in memory bounded whatever the number of cells."""

from __future__ import annotations

import json
import math
import re
import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from evalrun.cli import cli
from evalrun.reports import explorer, explorer_bodies, explorer_sink
from evalrun.reports.build import analyze, open_run
from evalrun.reports.explorer import ExplorerSink, clip, decode, render_request
from evalrun.reports.html import render_report

EVIL = "<script>alert(1)</script>"


def png(rgb: tuple[int, int, int]) -> bytes:
    """A valid 2×2 PNG of one colour."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(rgb) * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A simulated run: two models × a text prompt and an image prompt × 24 rows × 2 repeats."""
    root = tmp_path_factory.mktemp("explorer")
    (root / "red.png").write_bytes(png((255, 0, 0)))
    (root / "blue.png").write_bytes(png((0, 0, 255)))
    rows = ["id,question,A,B,C,D,answer,image"]
    for i in range(24):
        question = EVIL if i == 3 else f"Question {i} & more?"
        rows.append(f"r{i},{question},a{i},b{i},c{i},d{i},{'ABCD'[i % 4]},{'red' if i % 2 else 'blue'}.png")
    (root / "mc.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "spec.yaml").write_text(
        "name: explorer\ndataset: {path: mc.csv, id: id}\nmodels: [claude-haiku-4-5, claude-sonnet-4-6]\n"
        "params: {max_tokens: 1, temperature: 0}\nrepeats: 2\n"
        "prompts:\n"
        "  text:\n    system: Answer with the letter.\n"
        "    messages: [{role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
        "    prefill: \"The answer is (\"\n"
        "  picture:\n"
        "    messages:\n      - role: user\n        content:\n          - {type: image, path: \"{image}\"}\n"
        "          - {type: text, text: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}\n"
        "    prefill: \"The answer is (\"\n"
        "scorer: {type: choice, target: answer}\n",
        encoding="utf-8",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVALRUN_CACHE_DIR", str(root / "cache"))
        result = CliRunner().invoke(cli, ["run", str(root / "spec.yaml"), "--sim", "--out", str(root / "out")],
                                    catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    yield root / "out"


def embedded(folder: Path) -> dict[str, Any]:
    page = (folder / "report.html").read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', page, re.S)
    assert found is not None
    payload = json.loads(found.group(1))
    assert payload["version"] == explorer.FORMAT
    return decode(payload)


def payload_of(sink: ExplorerSink) -> dict[str, Any]:
    text = sink.json()
    assert not re.search(r"[<>&]", text)
    return decode(json.loads(text))


def cells_of(payload: dict[str, Any]) -> pd.DataFrame:
    """The embedded cells as a frame, strings resolved."""
    c, s = payload["cells"], payload["strings"]
    return pd.DataFrame({
        "model": [payload["models"][m] for m in c["m"]], "prompt": [payload["prompts"][p] for p in c["p"]],
        "row_id": [s[i] for i in c["r"]], "repeat": c["k"], "outcome": [payload["outcomes"][o] for o in c["o"]],
        "answer": [s[i] for i in c["a"]], "target": [s[i] for i in c["t"]], "reply": [s[i] for i in c["y"]],
        "input_tokens": c["it"], "request": c["q"],
    })  # fmt: skip


def test_every_cell_is_embedded_as_results_csv_has_it(run: Path) -> None:
    payload = embedded(run)
    results = pd.read_csv(run / "results.csv", keep_default_na=False, dtype=str)
    cells = cells_of(payload)
    assert payload["count"] == len(results) == 2 * 2 * 24 * 2 and not payload["sampled"]
    keys = ["model", "prompt", "row_id", "repeat"]
    merged = results.assign(repeat=results["repeat"].astype(int)).merge(cells, on=keys, validate="one_to_one")
    assert len(merged) == len(results)
    expected = [
        ("correct" if c == "True" else "wrong") if s == "ok" else s for s, c in zip(merged["status"], merged["correct"], strict=True)
    ]
    assert merged["outcome"].tolist() == expected
    assert (merged["answer_x"] == merged["answer_y"]).all()
    assert (merged["target_x"] == merged["target_y"]).all()
    assert (merged["response_text"] == merged["reply"]).all()
    assert (merged["input_tokens_x"].astype(int) == merged["input_tokens_y"]).all()
    # Reading order: by dataset row, then repeat, then the variants.
    order = [int(r[1:]) for r in cells["row_id"]]
    assert order == sorted(order)


def test_requests_are_rendered_and_shared(run: Path) -> None:
    payload = embedded(run)
    s, turns, requests = payload["strings"], payload["turns"], payload["requests"]
    cells = cells_of(payload)
    one = cells[(cells["prompt"] == "text") & (cells["row_id"] == "r5")].iloc[0]
    rendered = [(role, [s[p] if isinstance(p, int) else p for p in parts])
                for role, parts in (turns[t] for t in requests[one["request"]])]  # fmt: skip
    assert rendered[0] == ("s", ["Answer with the letter."])
    assert rendered[1][0] == "u" and rendered[1][1][0].startswith("Question 5 & more? (A) a5")
    assert rendered[2] == ("p", ["The answer is ("])
    assert rendered[3][0] == "n" and "max_tokens=1" in rendered[3][1][0]
    # The two repeats of a cell share its request, and the system turn is stored once for all.
    both = cells[(cells["prompt"] == "text") & (cells["row_id"] == "r5") & (cells["model"] == one["model"])]
    assert both["request"].nunique() == 1
    assert sum(1 for role, _ in turns if role == "s") == 1


def test_images_are_embedded_once_each(run: Path) -> None:
    payload = embedded(run)
    parts = [p for _, ps in payload["turns"] for p in ps if isinstance(p, dict)]
    shas = {p["img"] for p in parts}
    assert len(shas) == 2  # red and blue, whatever the number of requests showing them
    assert set(payload["images"]) == shas
    assert all(url.startswith("data:image/png;base64,") for url in payload["images"].values())
    assert {Path(payload["strings"][p["path"]]).name for p in parts} == {"red.png", "blue.png"}


def test_user_text_never_reaches_the_page_unescaped(run: Path) -> None:
    page = (run / "report.html").read_text(encoding="utf-8")
    assert EVIL not in page and "alert(1)</script>" not in page
    assert page.count("</script>") == 2  # the data and the explorer's code
    data = page[page.index('id="explorer-data">'):]
    data = data[: data.index("</script>")]
    assert not re.search(r"[<>&]", data.split(">", 1)[1])
    assert any(EVIL in text for text in embedded(run)["strings"])  # the data still holds it, as data
    # No network reference anywhere: no URL the browser would fetch.
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)


def collect(run: Path, **caps: int) -> ExplorerSink:
    store, settings = open_run(run)
    sink = ExplorerSink(**caps)
    with store:
        sink.begin([])
        analyze(store, settings, folder=run, sink=sink, with_requests=True)
    sink.close()
    return sink


def test_above_the_caps_a_seeded_sample_of_whole_rows(run: Path) -> None:
    sink = collect(run, max_cells=40)
    payload = payload_of(sink)
    assert payload["sampled"] and 0 < payload["count"] <= 40
    assert payload["seen_cells"] == 192
    cells = cells_of(payload)
    # Every kept row keeps all its cells: 2 models × 2 prompts × 2 repeats.
    assert (cells.groupby("row_id").size() == 8).all()
    again = payload_of(collect(run, max_cells=40))
    assert again["cells"]["r"] == payload["cells"]["r"]  # reproducible
    page = render_report(_report(run), explorer=sink)
    assert "This page holds a sample" in page and f"{payload['rows']:,} dataset rows" in page


def test_a_sample_embeds_only_what_its_cells_use(run: Path) -> None:
    """The spill holds the texts, turns and requests of rows dropped later; the page does not."""
    whole, sample = payload_of(collect(run)), payload_of(collect(run, max_cells=40))
    assert not whole["sampled"] and sample["sampled"]
    assert len(sample["strings"]) < len(whole["strings"]) and len(sample["requests"]) < len(whole["requests"])
    used_turns = {t for request in sample["requests"] for t in request}
    assert used_turns == set(range(len(sample["turns"])))
    assert set(sample["cells"]["q"]) == set(range(len(sample["requests"])))
    used = {0}
    for name in ("r", "a", "t", "g", "y", "e", "s", "d", "x", "f", "u"):
        used.update(sample["cells"][name])
    for _, parts in sample["turns"]:
        used.update(p if isinstance(p, int) else p.get("path", p.get("url")) for p in parts)
    strings = sample["strings"]
    assert used == set(range(len(strings))) - {i for i, s in enumerate(strings) if len(s) == 64 and s.isalnum()}
    # The same cells read the same either way: the kept rows, their requests as they were.
    def view(p: dict[str, Any]) -> dict[tuple[str, str, str, int], tuple[Any, ...]]:
        out = {}
        for i in range(p["count"]):
            c, s = p["cells"], p["strings"]
            turns = [(role, [s[x] if isinstance(x, int) else x["img"] for x in parts])
                     for role, parts in (p["turns"][t] for t in p["requests"][c["q"][i]])]  # fmt: skip
            out[(p["models"][c["m"][i]], p["prompts"][c["p"][i]], s[c["r"][i]], c["k"][i])] = (
                s[c["y"][i]], s[c["a"][i]], s[c["t"][i]], c["o"][i], repr(turns))
        return out

    whole_view, sample_view = view(whole), view(sample)
    assert sample_view and all(whole_view[key] == value for key, value in sample_view.items())


def test_the_text_cap_samples_too(run: Path) -> None:
    total = sum(len(s) for s in payload_of(collect(run))["strings"])
    payload = payload_of(collect(run, max_text_chars=total // 2))
    assert payload["sampled"] and 0 < payload["count"] < 192
    assert sum(len(s) for s in payload["strings"]) <= total // 2
    assert (cells_of(payload).groupby("row_id").size() == 8).all()


def _report(folder: Path) -> Any:
    store, settings = open_run(folder)
    with store:
        return analyze(store, settings, folder=folder)


def _chunks(cells: int, *, reply: int = 3000, size: int = 500) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """`cells` distinct cells (own row, reply and request each), a chunk at a time."""
    for start in range(0, cells, size):
        records, stored = [], []
        for n in range(start, min(cells, start + size)):
            records.append({"model": "m", "prompt": "p", "row_id": f"row{n}", "repeat": 0, "status": "ok",
                            "correct": n % 3 == 0, "answer": "A", "target": "A", "response_text": f"{n} " + "x" * reply,
                            "stop_reason": "end_turn", "answer_mode": "plain", "cost_usd": 0.001, "latency_s": 0.5,
                            "input_tokens": 10, "output_tokens": 700, "attempts": 1, "score": 1.0, "source": "realtime"})  # fmt: skip
            body = {"model": "m", "max_tokens": 5, "system": "Be brief.", "messages": [{"role": "user", "content": f"Q{n}?"}]}
            stored.append({"seq": n, "row_seq": n, "request_key": f"k{n}", "request_json": json.dumps(body)})
        yield records, stored


def test_the_caps_hold_while_cells_stream() -> None:
    sink = ExplorerSink(max_cells=10_000, max_text_chars=200_000)
    sink.begin([])
    for records, cells in _chunks(10_000):
        sink.write(records, cells)
        assert sink.bucket_cells[: sink.top].sum() <= 10_000 and sink.bucket_chars[: sink.top].sum() <= 200_000
    payload = payload_of(sink)
    assert payload["sampled"] and payload["truncated"] == 0 and payload["seen_cells"] == 10_000
    assert 0 < sum(len(s) for s in payload["strings"]) <= 200_000


@pytest.mark.parametrize("expected", [None, 20_000])
def test_a_text_heavy_run_is_sampled_to_the_text_cap(expected: int | None) -> None:
    """Long replies: the text cap decides the sample. Told how many cells will come, the sink
    lowers its share early and spills little more than it keeps."""
    sink = ExplorerSink(max_text_chars=2_000_000, expected_cells=expected)
    sink.begin([])
    for records, cells in _chunks(20_000, reply=1000):
        sink.write(records, cells)
    payload = payload_of(sink)
    text = sum(len(s) for s in payload["strings"])
    assert payload["sampled"] and text == payload["text_chars"] <= 2_000_000
    assert payload["count"] > 0.8 * 2_000_000 / 1010  # not shrunk much below what fits
    if expected:
        assert sink.spilled_cells < 1.5 * payload["count"]


def test_memory_does_not_grow_with_the_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the sink holds is bounded: small indexes (shrunk here so the test is quick) and one
    chunk; everything else is spilled to files."""
    monkeypatch.setattr(explorer_sink, "INDEX_ENTRIES", 2_000)
    monkeypatch.setattr(explorer_sink, "INDEX_CHARS", 200_000)

    def peak(cells: int) -> int:
        sink = ExplorerSink(max_cells=10**9, max_text_chars=10**12)
        sink.begin([])
        tracemalloc.start()
        try:
            for records, stored in _chunks(cells, reply=200):
                sink.write(records, stored)
                del records, stored
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            sink.discard()

    small, large = peak(10_000), peak(40_000)
    assert large < small * 1.25, (small, large)


def test_long_texts_keep_head_and_tail() -> None:
    text = "start " + "y" * 10_000 + " end"
    short, cut = clip(text, 1000)
    assert cut and short.startswith("start ") and short.endswith(" end") and len(short) < 1200
    assert f"{len(text) - 1000:,} characters left out" in short
    assert clip("short", 1000) == ("short", False)


def test_request_rendering_covers_every_block() -> None:
    body = {
        "model": "m", "max_tokens": 8, "temperature": 0.5,
        "system": [{"type": "text", "text": "sys"}],
        "messages": [
            {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://e.x/a.png"}},
                                         {"type": "text", "text": "what?"}]},
            {"role": "assistant", "content": "it is"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}]},
        ],
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        "tools": [{"name": "lookup", "input_schema": {}}], "tool_choice": {"type": "any"},
    }  # fmt: skip
    turns = render_request(body)
    assert turns[0] == ("system", ("sys",))
    assert turns[1] == ("user", (("url", "https://e.x/a.png"), "what?"))
    assert turns[2] == ("assistant", ("it is",))  # not the last turn: not a prefill
    assert turns[3][0] == "user" and turns[3][1][0].startswith("[tool_result]")
    note = turns[4][1][0]
    assert turns[4][0] == "note" and "max_tokens=8" in note and "temperature=0.5" in note
    assert "output format:" in note and "tools: lookup" in note


def test_payload_json_is_safe_and_round_trips() -> None:
    sink = ExplorerSink()
    sink.begin(["correct_city"])
    sink.write([{"model": "<m>", "prompt": "p&q", "row_id": "r", "repeat": 0, "status": "error", "correct": False,
                 "answer": "", "target": "</script>", "response_text": "", "cost_usd": math.nan, "latency_s": math.nan,
                 "input_tokens": math.nan, "output_tokens": math.nan, "attempts": 3, "error": "boom \u2028",
                 "score": math.nan, "grade": "<b>", "grade_explanation": "because & so", "correct_city": True}],
               [{"seq": 0, "row_seq": 0, "request_key": "k", "http_status": 500, "error_type": "api_error"}])  # fmt: skip
    back = payload_of(sink)
    assert back["models"] == ["<m>"] and back["prompts"] == ["p&q"]
    assert back["cells"]["c"] == [None] and back["cells"]["it"] == [-1] and back["cells"]["o"] == [3]
    assert back["strings"][back["cells"]["e"][0]] == "500 api_error: boom \u2028"
    assert back["strings"][back["cells"]["t"][0]] == "</script>"
    assert back["strings"][back["cells"]["g"][0]] == "<b>"
    assert back["strings"][back["cells"]["x"][0]] == "because & so"
    assert back["strings"][back["cells"]["f"][0]] == "city:1"


def test_large_images_are_left_as_paths(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(explorer_sink, "IMAGE_BYTES", 10)
    payload = payload_of(collect(run))
    assert payload["images"] == {}
    assert any(isinstance(p, dict) and "img" in p for _, parts in payload["turns"] for p in parts)


def test_request_bodies_are_read_in_order_or_looked_up(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report reads the bodies page by page in the order they were written; a key out of that
    order is looked up alone. Either way each cell gets its own body, and the page is the one the
    pass would give joining every body to its cell."""
    monkeypatch.setattr(explorer_bodies.RequestBodies, "PAGE", 7)
    monkeypatch.setattr(explorer_bodies.RequestBodies, "AHEAD", 2)
    monkeypatch.setattr(explorer_bodies.RequestBodies, "KEEP", 10)
    store, _ = open_run(run)
    with store:
        keys = [k for (k,) in store.query("SELECT request_key FROM cells ORDER BY seq")]
        expected = {k: store.request_body(k) for k in keys}
    for order in (keys, keys[::-1]):
        bodies = explorer_bodies.RequestBodies.of(run)
        assert bodies is not None and bodies.cells == len(keys)
        assert all(bodies.get(k) == expected[k] for k in order)
        assert (bodies.lookups == 0) == (order is keys)
        bodies.close()
    result = CliRunner().invoke(cli, ["report", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    page, joined = embedded(run), payload_of(collect(run))
    assert page["requests"] == joined["requests"] and page["turns"] == joined["turns"]
    assert page["strings"] == joined["strings"] and page["cells"] == joined["cells"]


def test_the_spill_is_removed_with_the_reports(run: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not [p.name for p in run.iterdir() if p.name.startswith(".") and "tmp" in p.name]
    assert embedded(run)["count"] == 192


def test_the_explorer_built_in_a_second_process_is_the_same(run: Path) -> None:
    from evalrun.reports.build import build_reports
    from evalrun.reports.explorer_process import ExplorerProcess

    build_reports(run, parallel_cells=10**9)  # one process
    alone = (run / "report.html").read_bytes()
    results: list[Any] = []

    class Watched(ExplorerProcess):
        def result(self) -> Any:
            results.append(super().result())
            return results[-1]

    def spawn(folder: Path, scratch: Path) -> Watched:
        started = ExplorerProcess.start(folder, scratch)
        assert started is not None
        return Watched(started.process, scratch)

    build_reports(run, parallel_cells=1, spawn_explorer=spawn)  # the explorer's pass in a child process
    assert len(results) == 1 and results[0] is not None  # the child did the work (no fallback)
    assert (run / "report.html").read_bytes() == alone
    assert not [p.name for p in run.iterdir() if p.name.startswith(".") and "tmp" in p.name]


def test_a_failed_explorer_process_is_made_up_for_in_process(run: Path, tmp_path: Path) -> None:
    from evalrun.reports import explorer_process
    from evalrun.reports.build import build_reports

    build_reports(run, parallel_cells=10**9)
    alone = (run / "report.html").read_bytes()

    class Failing(explorer_process.ExplorerProcess):
        def result(self) -> None:
            self.stop()  # killed: as a child that crashed
            return None

    def spawn(folder: Path, scratch: Path) -> Failing:
        started = explorer_process.ExplorerProcess.start(folder, scratch)
        assert started is not None
        return Failing(started.process, scratch)

    build_reports(run, parallel_cells=1, spawn_explorer=spawn)
    assert (run / "report.html").read_bytes() == alone


def test_a_failed_build_leaves_no_spill(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evalrun.reports import html

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    before = (run / "report.html").read_bytes()
    monkeypatch.setattr(html, "write_report", boom)
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code != 0
    assert not [p.name for p in run.iterdir() if p.name.startswith(".") and "tmp" in p.name]
    assert (run / "report.html").read_bytes() == before


@pytest.mark.parametrize("experiment", ["definitions", "cities-json"])
def test_grades_explanations_and_fields_are_embedded(experiment: str, tmp_path: Path) -> None:
    """A judge's grade and explanation, and a fields scorer's per-field correctness, as results.csv has them."""
    repo = Path(__file__).resolve().parents[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVALRUN_CACHE_DIR", str(tmp_path / "cache"))
        result = CliRunner().invoke(cli, ["run", str(repo / "experiments" / f"{experiment}.yaml"), "--sim", "--out",
                                          str(tmp_path / "out")], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = embedded(tmp_path / "out")
    results = pd.read_csv(tmp_path / "out" / "results.csv", keep_default_na=False, dtype=str)
    s, c = payload["strings"], payload["cells"]
    shown = {(payload["models"][c["m"][i]], payload["prompts"][c["p"][i]], s[c["r"][i]]): i for i in range(payload["count"])}
    fields = [k for k in results.columns if k.startswith("correct_") and k != "correct_auto"]  # correct_auto: not a field
    assert len(shown) == len(results)
    for row in results.itertuples(index=False):
        i = shown[(row.model, row.prompt, row.row_id)]
        if experiment == "definitions":
            assert s[c["g"][i]] == row.grade and s[c["x"][i]] == row.grade_explanation
            assert any(row.grade_explanation for row in results.itertuples())
        else:
            expected = ",".join(f"{k[len('correct_'):]}:{int(getattr(row, k) == 'True')}" for k in fields
                                if getattr(row, k) != "")  # fmt: skip
            assert fields and s[c["f"][i]] == expected
