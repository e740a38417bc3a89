"""The explorer inside TensorBoard (issue 17, acceptance 3): ``tensorboard --logdir RUN`` lists
the tfcam plugin in ``/data/plugins_listing``, serves a heatmap through its route, and its tab
shows the gallery in headless Chromium."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import chromium

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 120):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


@pytest.fixture(scope="module")
def tensorboard(tiny_run):
    port = _free_port()
    exe = Path(sys.executable).with_name("tensorboard")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tensorboard.main"]
    proc = subprocess.Popen(
        [*cmd, "--logdir", str(tiny_run), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            _get(base + "/data/plugins_listing", timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"tensorboard did not start: {proc.stdout.read()[-3000:]}")
            time.sleep(0.5)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_tensorboard_lists_the_plugin_and_serves_a_heatmap(tensorboard, tiny_run):
    status, _, body = _get(tensorboard + "/data/plugins_listing")
    listing = json.loads(body)
    assert listing["tfcam"]["enabled"] is True
    assert listing["tfcam"]["tab_name"] == "tfcam"
    assert listing["tfcam"]["loading_mechanism"] == {
        "type": "IFRAME",
        "module_path": "/data/plugin/tfcam/index.js",
    }
    status, kind, body = _get(tensorboard + "/data/plugin/tfcam/index.js")
    assert status == 200 and "javascript" in kind and b"export async function render" in body
    status, kind, body = _get(tensorboard + "/data/plugin/tfcam/app/api/runs")
    assert json.loads(body)["runs"][0]["name"] == tiny_run.name
    status, kind, body = _get(
        tensorboard + "/data/plugin/tfcam/app/api/heatmap?image=val-0&method=gradcam"
    )
    assert status == 200 and kind == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"
    status, kind, body = _get(tensorboard + "/data/plugin/tfcam/app")  # redirected to app/
    assert "text/html" in kind and b"tfcam explorer" in body
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(tensorboard + "/data/plugin/tfcam/app/api/file?path=../../etc/passwd")
    assert err.value.code == 404


def test_the_tensorboard_tab_shows_the_gallery(tensorboard):
    exe = chromium()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(tensorboard + "/#tfcam")
        cards = page.frame_locator("iframe").locator(".card")
        cards.first.wait_for(timeout=120_000)
        assert cards.count() > 0
        urls = [f.url for f in page.frames]
        assert any(u.endswith("/data/plugin/tfcam/app/") for u in urls), urls
        page.screenshot(path=str(ARTIFACTS / "serve_tensorboard_tab.png"))
        browser.close()
    assert errors == []
