"""The page of ``tfcam explain`` over a folder, ``OUT/index.html``: a table with one row per image
and one column per method, sortable by confidence, linking the full-size pictures; read with an
independent HTML parser and, marked slow, in headless Chromium at 1280 and 420 px."""

from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from conftest import write_image

from tfcam.report.explain_index import SORT_SCRIPT, write_explain_index

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
#: Names a user may have on disk: markup, quotes, an entity, a script, non-ASCII.
NAMES = ['<img src=x onerror="alert(1)">', "bee's & ant", "épaule <b>", "plain"]
CLASSES = ["ants</td>", 'bees"', "wasps"]
PROBABILITIES = [0.61, 0.99, 0.42, 0.87]
METHODS = ["gradcam", "saliency"]


class _Table(HTMLParser):
    """Rows of the ``#explained`` table: each row's attributes, cell texts, links and images."""

    def __init__(self):
        super().__init__()
        self.heads: list[str] = []
        self.rows: list[dict] = []
        self.scripts: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "th":
            self.heads.append("")
            self._in = "th"
        elif tag == "tr" and "data-order" in a:
            self.rows.append({"attrs": a, "cells": [], "links": [], "images": []})
        elif tag == "td" and self.rows:
            self.rows[-1]["cells"].append("")
            self._in = "td"
        elif tag == "a" and self.rows and self._in == "td":
            self.rows[-1]["links"].append(a["href"])
        elif tag == "img" and self.rows:
            self.rows[-1]["images"].append(a["src"])
        elif tag == "script":
            self.scripts.append("")
            self._in = "script"

    def handle_endtag(self, tag):
        if tag in ("th", "td", "script"):
            self._in = None

    def handle_data(self, data):
        if self._in == "th":
            self.heads[-1] += data
        elif self._in == "td":
            self.rows[-1]["cells"][-1] += data
        elif self._in == "script":
            self.scripts[-1] += data


def _explained(out: Path) -> list[dict]:
    """Records as ``explain_files`` makes them, with real PNGs (a wide and a tall overlay)."""
    records = []
    for i, name in enumerate(NAMES):
        folder = out / f"image {i} #?%"
        outputs = {}
        for method in METHODS:
            shape = (60, 160, 3) if i % 2 else (160, 60, 3)
            files = {}
            for kind in ("overlay", "heatmap", "panel"):
                img = np.full(shape, 40 * (i + 1), np.uint8)
                files[kind] = str(write_image(folder / f"{method}_{kind}.png", img))
            outputs[method] = files
        records.append(
            {
                "image": f"/data/{CLASSES[i % 3]}/{name}.jpg",
                "outputs": outputs,
                "predicted": CLASSES[(i + 1) % 3],
                "probability": PROBABILITIES[i],
                "target": CLASSES[(i + 1) % 3],
                "score": 1.0,
            }
        )
    return records


@pytest.fixture()
def explained(tmp_path):
    out = tmp_path / "out <b>"
    records = _explained(out)
    return out, records, write_explain_index(out, records, ["broken.png (not an image)"])


def test_one_row_per_image_one_column_per_method_links_to_existing_files(explained):
    out, records, page = explained
    text = page.read_text(encoding="utf-8")
    table = _Table()
    table.feed(text)
    assert table.heads == ["image", "predicted", "probability", "explained", *METHODS]
    assert len(table.rows) == len(records)
    for i, (row, rec) in enumerate(zip(table.rows, table.rows and records, strict=True)):
        name = Path(rec["image"]).name
        # Names shown as text (the parser unescapes), never as markup.
        assert row["cells"][0] == name + rec["image"]
        assert row["cells"][1:4] == [rec["predicted"], f"{rec['probability']:.3f}", rec["target"]]
        # Numbers only in the attributes the script sorts by.
        assert row["attrs"] == {"data-order": str(i), "data-probability": f"{PROBABILITIES[i]:.6f}"}
        # Each method's cell: the overlay, a link to the panel, and the three full-size files.
        want = []
        for method in METHODS:
            files = rec["outputs"][method]
            want += [files["panel"], files["overlay"], files["heatmap"], files["panel"]]
        assert [str(out / unquote(h)) for h in row["links"]] == want
        assert [str(out / unquote(s)) for s in row["images"]] == [
            rec["outputs"][m]["overlay"] for m in METHODS
        ]
        for target in row["links"] + row["images"]:
            assert urlsplit(target).scheme == "" and (out / unquote(target)).is_file()
    for raw in (*NAMES, *CLASSES, str(out)):
        if set(raw) & set("<>\"'&"):
            assert raw not in text, raw
    # One script, the constant: no user string can reach it.
    assert table.scripts == [SORT_SCRIPT]
    assert "broken.png (not an image)" in text


def test_rows_sort_by_confidence_in_a_browser(explained):
    """Headless Chromium at 1280 and 420 px: every image loads, no console error, no horizontal
    page scroll; the buttons sort the rows by probability and back. Screenshots are kept."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("TFCAM_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed but TFCAM_REQUIRE_BROWSER=1 (as in .ci/run)")
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    _out, records, page_path = explained
    names = [Path(r["image"]).name for r in records]
    by_confidence = [n for _, n in sorted(zip(PROBABILITIES, names, strict=True), reverse=True)]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        for width in (1280, 420):
            errors: list[str] = []
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            page.on(
                "console",
                lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None,
            )
            page.goto(page_path.resolve().as_uri())
            page.wait_for_load_state("load")
            page.evaluate(
                "() => Promise.all(Array.from(document.images).map(i => "
                "(i.loading = 'eager', i.decode().catch(() => null))))"
            )
            images = page.evaluate(
                "() => Array.from(document.images).map(i => [i.complete, i.naturalWidth])"
            )
            assert len(images) == len(records) * len(METHODS)
            assert all(complete and w > 0 for complete, w in images), images
            scroll = page.evaluate("() => document.documentElement.scrollWidth")
            assert scroll <= width, f"page scrolls sideways at {width} px ({scroll} px wide)"

            def order(page=page):
                return page.evaluate(
                    "() => Array.from(document.querySelectorAll('#explained tbody tr'))"
                    ".map(r => r.cells[0].querySelector('b').textContent)"
                )

            assert order() == names
            page.click("text=most confident first")
            assert order() == by_confidence
            page.click("text=least confident first")
            assert order() == by_confidence[::-1]
            page.click("text=input order")
            assert order() == names
            page.screenshot(path=str(ARTIFACTS / f"explain_index_{width}.png"), full_page=True)
            assert errors == [], errors
            page.close()
        browser.close()
    assert (ARTIFACTS / "explain_index_420.png").stat().st_size > 5_000


test_rows_sort_by_confidence_in_a_browser = pytest.mark.slow(
    test_rows_sort_by_confidence_in_a_browser
)
