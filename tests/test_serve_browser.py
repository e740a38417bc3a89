"""``tfcam serve`` in headless Chromium (issue 17, acceptance 2): the `shapes` demo run's gallery,
the misclassified filter, an image, another method and class, the opacity slider, an uploaded
photo, keyboard navigation and a 420 px screen; a screenshot of each step is kept in
``test-artifacts/``; no console errors."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest
from conftest import chromium

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def server(shapes_run, tmp_path_factory):
    """The demo run and a copy of it ("again"), as ``tfcam serve`` serves a folder of runs."""
    from werkzeug.serving import make_server

    from tfcam.serve.app import Explorer
    from tfcam.serve.runs import RunSet

    again = tmp_path_factory.mktemp("second") / "again"
    shutil.copytree(shapes_run, again, ignore=shutil.ignore_patterns(".lock", "report"))
    runs = RunSet([shapes_run, again])
    srv = make_server("127.0.0.1", 0, Explorer(runs), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}/"
    srv.shutdown()
    runs.close()


def _heatmaps_loaded(page) -> bool:
    return page.evaluate(
        "() => { const h = [...document.querySelectorAll('#panels img')];"
        " return h.length > 0 && h.every(i => i.complete && i.naturalWidth > 0); }"
    )


def _wait_heatmaps(page) -> None:
    page.wait_for_function(
        "() => { const h = [...document.querySelectorAll('#panels img')];"
        " return h.length > 0 && h.every(i => i.complete && i.naturalWidth > 0); }",
        timeout=120_000,
    )


def test_explorer_walkthrough_in_headless_chromium(server, shapes_run, shared):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    val = pd.read_csv(shapes_run / "predictions_val.csv")
    wrong = int((val["label"] != val["predicted"]).sum())
    assert wrong > 0  # the demo model makes a few mistakes to look at
    photo = sorted((shared / "cam-examples").glob("*.jp*g"))[0]
    errors: list[str] = []
    shots = []

    def shot(page, name):
        path = ARTIFACTS / f"serve_{name}.png"
        page.screenshot(path=str(path))
        shots.append(path)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server)
        page.wait_for_function("document.querySelectorAll('.card').length === 60")
        page.wait_for_function(
            "[...document.querySelectorAll('.card img')].slice(0, 8)"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        assert page.text_content("#count") == f"1–60 of {len(val)}"
        shot(page, "1_gallery")
        # Misclassified only: exactly the wrong predictions, each caption true → predicted.
        page.select_option("#filter", "misclassified")
        page.wait_for_function(f"document.querySelectorAll('.card').length === {min(wrong, 60)}")
        captions = page.eval_on_selector_all(".card .cap", "els => els.map(e => e.textContent)")
        assert all(c.split(" → ")[0] != c.split(" → ")[1].rsplit(" ", 1)[0] for c in captions)
        shot(page, "2_misclassified")
        # Open the first one; its Grad-CAM for the predicted class loads.
        page.click(".card")
        _wait_heatmaps(page)
        first = val[val["label"] != val["predicted"]].iloc[0]
        assert page.text_content("#title").endswith(Path(first["path"]).name)
        page.wait_for_function(
            "document.querySelector('#status').textContent.includes('gradcam for')"
        )
        assert f"gradcam for {first['predicted']}" in page.text_content("#status")
        # shapes has boxes: the target's box is drawn, the map scored against it.
        page.wait_for_selector("#panels .box")
        assert "energy in the box" in page.text_content("#status")
        shot(page, "3_image")
        # Another method from the keyboard, then the true class from the switcher.
        page.keyboard.press("m")
        assert page.input_value("#method") == "gradcam++"
        page.wait_for_function(
            "document.querySelector('#status').textContent.includes('gradcam++ for')"
        )
        _wait_heatmaps(page)
        page.select_option("#target", first["label"])
        page.wait_for_function(
            f"document.querySelector('#status').textContent.includes('gradcam++ for {first['label']}')"
        )
        _wait_heatmaps(page)
        shot(page, "4_method_and_class")
        # The opacity slider changes the heatmap layer's opacity.
        page.fill("#opacity", "0.9")
        assert page.eval_on_selector(".heat", "e => e.style.opacity") == "0.9"
        shot(page, "5_opacity")
        # Side by side: four methods and the other class.
        page.check("#compare")
        page.wait_for_function("document.querySelectorAll('.panel').length === 5")
        _wait_heatmaps(page)
        labels = page.eval_on_selector_all(".panel .label", "els => els.map(e => e.textContent)")
        assert labels[0].startswith("gradcam++") and any("layercam" in x for x in labels)
        shot(page, "6_side_by_side")
        page.uncheck("#compare")
        # Runs side by side: the same image explained by the other run (a copy: the same map).
        page.select_option("#other", "again")
        page.wait_for_function("document.querySelectorAll('.panel').length === 2")
        _wait_heatmaps(page)
        labels = page.eval_on_selector_all(".panel .label", "els => els.map(e => e.textContent)")
        assert labels[1].startswith("again · gradcam++")
        shot(page, "6b_two_runs")
        page.select_option("#other", "")
        page.keyboard.press("Escape")
        # Upload a photo: predicted and explained like a gallery image.
        page.set_input_files("#file", str(photo))
        page.wait_for_function("document.querySelector('#view').open")
        _wait_heatmaps(page)
        page.wait_for_function("document.querySelector('#status').textContent.includes(' for ')")
        assert page.text_content("#title") == photo.name
        shot(page, "7_upload")
        page.keyboard.press("Escape")
        # Keyboard: arrows move the selection through the gallery, Enter opens it.
        page.select_option("#filter", "all")
        page.wait_for_function("document.querySelectorAll('.card').length === 60")
        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        assert page.eval_on_selector(".card.sel", "e => e.dataset.id") == "val-1"
        page.keyboard.press("Enter")
        _wait_heatmaps(page)
        assert page.text_content("#title").endswith(Path(val["path"][1]).name)
        page.keyboard.press("Escape")
        errors_before_narrow = list(errors)
        # 420 px: nothing wider than the screen.
        narrow = browser.new_page(viewport={"width": 420, "height": 900})
        narrow.on("pageerror", lambda e: errors.append(str(e)))
        narrow.goto(server)
        narrow.wait_for_function("document.querySelectorAll('.card').length === 60")
        assert narrow.evaluate("document.documentElement.scrollWidth") <= 420
        narrow.click(".card")
        _wait_heatmaps(narrow)
        assert narrow.evaluate("document.documentElement.scrollWidth") <= 420
        shot(narrow, "8_narrow")
        narrow.keyboard.press("Escape")
        # A file that is not an image: one line on the page (its 400 is the only console error).
        bad = ARTIFACTS / "not_an_image.txt"
        bad.write_text("hello")
        narrow.set_input_files("#file", str(bad))
        narrow.wait_for_function("document.querySelector('#message').textContent.length > 0")
        assert "is not an image tfcam reads" in narrow.text_content("#message")
        browser.close()
    assert errors_before_narrow == [] and errors == [], errors
    assert all(p.stat().st_size > 5_000 for p in shots)
