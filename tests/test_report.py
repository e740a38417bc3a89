"""The run report (HTML, figures, a real browser) and the TensorBoard logs (events and server)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def img_sources(page: str) -> list[str]:
    return re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)


def test_report_sections_and_figures_on_disk(tiny_run):
    r = run_cli("report", str(tiny_run))
    assert r.exit_code == 0, r.stderr
    page = (tiny_run / "report" / "index.html").read_text()
    ids = re.findall(r'<section id="([^"]+)">', page)
    assert ids[:3] == ["metrics", "training", "data"] and ids[-1] == "config"
    for sid in ("galleries", "class-cams", "layers", "features", "receptive-field"):
        assert sid in ids
    # Every image is a file beside the page, and a real PNG.
    srcs = img_sources(page)
    assert len(srcs) >= 10
    for src in srcs:
        data = (tiny_run / "report" / src).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((tiny_run / "report" / "figures.json").read_text())
    listed = [f["file"] for s in manifest["sections"] for f in s["figures"] if f.get("file")]
    assert set(listed) <= set(srcs)
    names = json.loads((tiny_run / "class_names.json").read_text())
    assert all(f"<th>{n}</th>" in page for n in names)  # per-class table rows
    # Small: the page plus its figures.
    total = sum(p.stat().st_size for p in (tiny_run / "report").rglob("*") if p.is_file())
    assert total < 20 * 2**20


def test_report_command_on_a_missing_run(tmp_path):
    r = run_cli("report", str(tmp_path / "nope"))
    assert r.exit_code == 2 and "Run directory not found" in r.stderr


def _events(logdir: Path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    m = EventMultiplexer().AddRunsFromDirectory(str(logdir))
    m.Reload()
    return m


def test_tensorboard_events_have_scalars_panels_and_config(tiny_run):
    import pandas as pd

    epochs = len(pd.read_csv(tiny_run / "history.csv"))
    m = _events(tiny_run / "tensorboard")
    runs = m.Runs()
    train = set(runs["train"]["tensors"])
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= train
    assert {"epoch_loss", "epoch_accuracy"} <= set(runs["validation"]["tensors"])
    panels = runs["panels"]["tensors"]
    assert {"gradcam", "confusion_matrix", "config"} <= set(panels)
    for tag in ("gradcam", "confusion_matrix"):
        steps = [e.step for e in m.Tensors("panels", tag)]
        assert steps == list(range(epochs))  # one image per epoch
    text = m.Tensors("panels", "config")[0].tensor_proto.string_val[0].decode()
    assert "backbone: simple_cnn" in text
    assert "_hparams_/session_start_info" in runs["."]["tensors"]
    # The panel image is a PNG of the right width: K images side by side at the input size.
    png = m.Tensors("panels", "gradcam")[0].tensor_proto.string_val[2]
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[0] == 2 * 32 and img.shape[1] % 32 == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_server_serves_the_tags(tiny_run):
    exe = Path(sys.executable).with_name("tensorboard")
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(exe),
            "--logdir",
            str(tiny_run / "tensorboard"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def get(path):
        with urllib.request.urlopen(base + path, timeout=10) as r:
            return json.loads(r.read())

    try:
        deadline = time.time() + 90
        runs = None
        while time.time() < deadline:
            try:
                runs = get("/data/runs")
                scalars = get("/data/plugin/scalars/tags")
                if "train" in scalars and "panels" in get("/data/plugin/images/tags"):
                    break
            except OSError:
                pass
            time.sleep(1)
        assert runs is not None, "tensorboard did not answer"
        assert {"train", "validation", "panels"} <= set(runs)
        assert "epoch_learning_rate" in get("/data/plugin/scalars/tags")["train"]
        images = get("/data/plugin/images/tags")["panels"]
        assert {"gradcam", "confusion_matrix"} <= set(images)
        assert "config" in get("/data/plugin/text/tags")["panels"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_report_in_headless_chromium(shapes_run):
    """Every image loads, no console errors; a 1280-px screenshot is kept as a test artifact."""
    exe = _chromium()
    if exe is None:
        if os.environ.get("TFCAM_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed but TFCAM_REQUIRE_BROWSER=1 (as in .ci/run)")
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    page_path = shapes_run / "report" / "index.html"
    assert page_path.is_file()
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.resolve().as_uri())
        page.wait_for_load_state("load")
        widths = page.evaluate(
            "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
        )
        headings = page.evaluate(
            "Array.from(document.querySelectorAll('h2')).map(h => h.textContent)"
        )
        page.screenshot(path=str(ARTIFACTS / "report_shapes_1280.png"), full_page=True)
        browser.close()
    assert len(widths) >= 10
    assert all(ok and w > 0 for _, ok, w in widths), widths
    assert errors == []
    assert headings[0] == "Metrics" and "Grad-CAM for every class" in headings
    assert (ARTIFACTS / "report_shapes_1280.png").stat().st_size > 10_000
    assert os.path.getsize(page_path) < 20 * 2**20
