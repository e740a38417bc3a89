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

    history = pd.read_csv(tiny_run / "history.csv")
    epochs = len(history)
    m = _events(tiny_run / "tensorboard")
    runs = m.Runs()
    train = set(runs["train"]["tensors"])
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= train
    assert {"epoch_loss", "epoch_accuracy"} <= set(runs["validation"]["tensors"])
    panels = set(runs["panels"]["tensors"])
    # Everything tfcam writes is grouped under one tag prefix.
    assert {"tfcam/gradcam", "tfcam/confusion_matrix", "tfcam/config"} <= panels
    assert all(t.startswith(("tfcam/", "_hparams_/")) for t in panels), panels
    for tag in ("tfcam/gradcam", "tfcam/confusion_matrix"):
        steps = [e.step for e in m.Tensors("panels", tag)]
        assert steps == list(range(epochs))  # one image per epoch
    text = m.Tensors("panels", "tfcam/config")[0].tensor_proto.string_val[0].decode()
    assert "backbone: simple_cnn" in text
    # HParams of this single run: its session and the metric columns, with their values.
    assert {"_hparams_/session_start_info", "_hparams_/experiment"} <= panels
    val = [float(tf_value(e)) for e in m.Tensors("panels", "tfcam/val_accuracy")]
    assert val == pytest.approx(history["val_accuracy"].tolist(), abs=1e-6)


def tf_value(event):
    import numpy as np
    from tensorboard.util import tensor_util

    return np.asarray(tensor_util.make_ndarray(event.tensor_proto))


def _decode(event):
    import cv2
    import numpy as np

    png = event.tensor_proto.string_val[2]
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def test_tensorboard_cam_panel_tiles_are_192_px_or_more_under_a_title(tiny_run):
    """Read through EventMultiplexer: the panel holds one tile per fixed image (config
    ``train.tensorboard_cams``, at most the validation images), each at least 192 pixels each way
    (a connected block of non-white pixels: jet-coloured overlays hold no pure white), each with
    text (its title) right above it."""
    import cv2
    import numpy as np
    import yaml

    m = _events(tiny_run / "tensorboard")
    img = _decode(m.Tensors("panels", "tfcam/gradcam")[-1])
    content = (~np.all(img >= 250, axis=2)).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(content, connectivity=4)
    tiles = [s for s in stats[1:] if s[2] >= 192 and s[3] >= 192]
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    n_val = json.loads((tiny_run / "data_report.json").read_text())["totals"]["val"]
    assert len(tiles) == min(cfg["train"]["tensorboard_cams"], n_val), stats
    for x, y, w, h, _ in tiles:
        assert w >= 192 and h >= 192
        title = content[max(0, y - 36) : y - 2, x : x + w]
        assert title.sum() > 30, "no title text above a tile"


def test_tensorboard_confusion_matrix_keeps_full_class_names(tmp_path):
    """The per-epoch confusion matrix widens with the class names (drawn in full), where the
    old raster one cut them to four letters and its width stopped growing at twelve."""
    import numpy as np

    from tfcam.train.panels import TensorBoardPanels

    def image(names):
        cb = TensorBoardPanels(
            tmp_path,
            images=np.zeros((0, 8, 8, 3)),
            sample=None,
            labels=[],
            class_names=names,
            config_text="",
            hparams={},
        )
        return cb.confusion_image(np.eye(3)[[0, 1, 2, 1]], [0, 1, 2, 2])

    base = "a_long_class_name_that_needs_room"
    short = image([base[:15] + str(i) for i in range(3)])
    long = image([base + str(i) for i in range(3)])
    assert long.shape[1] > short.shape[1] + 50 and long.shape[0] > short.shape[0]


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

    def post(path, body):
        req = urllib.request.Request(
            base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
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
        assert {"tfcam/gradcam", "tfcam/confusion_matrix"} <= set(images)
        assert "tfcam/config" in get("/data/plugin/text/tags")["panels"]
        # HParams of a single run: metric columns with this run's last values.
        groups = post(
            "/data/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_RUNNING"],
                "colParams": [],
                "startIndex": 0,
                "sliceSize": 10,
                "aggregationType": "AGGREGATION_AVG",
            },
        )["sessionGroups"]
        values = {v["name"]["tag"]: v["value"] for v in groups[0]["metricValues"]}
        metrics = json.loads((tiny_run / "metrics.json").read_text())
        assert set(values) == {
            f"tfcam/{k}" for k in ("val_accuracy", "val_loss", "accuracy", "loss")
        }
        assert values["tfcam/val_accuracy"] == pytest.approx(metrics["val"]["accuracy"], abs=1e-6)
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


def test_report_reads_as_a_person_needs(tiny_run):
    """Every figure has a caption and a link to its full-size file and is shown at half its
    pixels (drawn at 2×); every table scrolls in its own box; the per-class table ends with macro
    and weighted averages and the top confusions are listed, both checked against numbers
    computed here from metrics.json; the provenance is shown; a dark palette exists."""
    from html.parser import HTMLParser

    import numpy as np

    from tfcam.report.html import png_size

    r = run_cli("report", str(tiny_run))
    assert r.exit_code == 0, r.stderr
    report = tiny_run / "report"
    page = (report / "index.html").read_text()

    class Walk(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.figures, self.tables = [], [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "figure":
                self.figures.append({"caption": ""})
            if tag == "a" and self.stack and self.stack[-1][0] == "figure":
                self.figures[-1]["href"] = a["href"]
            if tag == "img":
                self.figures[-1].update(src=a["src"], width=a.get("width"), parent=self.stack[-1])
            if tag == "table":
                self.tables.append(self.stack[-1])
            if tag != "img":
                self.stack.append((tag, a.get("class")))

        def handle_endtag(self, tag):
            if tag != "img":
                self.stack.pop()

        def handle_data(self, data):
            if self.stack and self.stack[-1][0] == "figcaption":
                self.figures[-1]["caption"] += data

    walk = Walk()
    walk.feed(page)
    assert len(walk.figures) >= 10
    for fig in walk.figures:
        assert len(fig["caption"].strip()) > 15, fig
        assert fig["parent"] == ("a", None) and fig["href"] == fig["src"], fig
        w, _ = png_size(report / fig["src"])
        assert int(fig["width"]) == round(w / 2), fig
    assert walk.tables and all(t == ("div", "scroll") for t in walk.tables)
    assert "@media (prefers-color-scheme:dark)" in page
    assert "scroll-margin-top" in page

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    names = json.loads((tiny_run / "class_names.json").read_text())
    per = metrics["val"]["per_class"]
    support = np.array([per[c]["support"] for c in names], float)
    f1 = np.array([per[c]["f1"] for c in names])
    macro, weighted = f1[support > 0].mean(), (f1 * support).sum() / support.sum()
    val = page[page.index("<h3>Per class (val)</h3>") :]
    macro_row = val[val.index('<tr class="avg">') :].split("</tr>")[0]
    weighted_row = val[val.index("weighted avg") :].split("</tr>")[0]
    assert "macro avg" in macro_row and f"<td>{macro:.3f}</td>" in macro_row
    assert (
        f"<td>{weighted:.3f}</td>" in weighted_row
        and f"<td>{int(support.sum())}</td>" in weighted_row
    )

    cm = np.array(metrics["val"]["confusion"])
    # The most frequent mistake; ties go to the larger share of the true class, then class order.
    n = len(cm)
    i, j = min(
        ((i, j) for i in range(n) for j in range(n) if i != j),
        key=lambda p: (-cm[p], -cm[p] / cm[p[0]].sum(), p),
    )
    worst = (cm[i, j], names[i], names[j])
    top = page[page.index("<h3>Top confusions (val)</h3>") :]
    first_row = top[top.index("<tbody>") :].split("</tr>")[0]
    assert [f"<td>{worst[1]}</td>", f"<td>{worst[2]}</td>", f"<td>{worst[0]}</td>"] == re.findall(
        r"<td>[^<]*</td>", first_row
    )[:3]

    import keras
    import tensorflow as tf

    prov = page[page.index('<section id="provenance">') :].split("</section>")[0]
    assert f"tensorflow {tf.__version__}" in prov and f"keras {keras.__version__}" in prov
    assert "Command" in prov and "Started" in prov and "completed" in prov


def test_provenance_of_a_run(tiny_run):
    import keras
    import tensorflow as tf

    prov = json.loads((tiny_run / "provenance.json").read_text())
    assert prov["versions"]["tensorflow"] == tf.__version__
    assert prov["versions"]["keras"] == keras.__version__
    assert prov["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert prov["command"] and prov["device"]
    assert prov["started"] <= prov["ended"] and prov["status"] == "completed"
    state = json.loads((tiny_run / "state.json").read_text())
    assert state["status"] == "completed"


def test_provenance_names_the_experiment_file_and_its_commit(tmp_path):
    from tfcam.train import provenance

    path = provenance.experiment_file(["tfcam", "fit", "-e", "shapes_tiny", "--epochs", "1"])
    assert path is not None and path.name == "shapes_tiny.yaml" and path.is_file()
    assert provenance.experiment_file(["tfcam", "fit", "--experiment=nope-not-here"]) is None
    assert provenance.experiment_file(["tfcam", "fit"]) is None
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    want = subprocess.run(
        [git, "-C", str(path.parent), "log", "-1", "--format=%H", "--", path.name],
        capture_output=True,
        text=True,
    ).stdout.strip()
    got = provenance.git_commit(path)
    assert (got or {}).get("commit", "") == want
    # A resume appends a session; the end of the latest one is recorded.
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text(json.dumps({"status": "interrupted"}))
    with provenance.recorded(run):
        pass
    (run / "state.json").write_text(json.dumps({"status": "completed"}))
    with provenance.recorded(run):
        pass
    data = json.loads((run / "provenance.json").read_text())
    assert data["status"] == "interrupted" and data["ended"]
    assert len(data["resumes"]) == 1 and data["resumes"][0]["status"] == "completed"


def _artefacts(tmp_path) -> Path:
    """Where screenshots go: ``$TFCAM_ARTEFACTS`` if set, else the test's own folder (printed)."""
    folder = Path(os.environ.get("TFCAM_ARTEFACTS") or tmp_path / "artefacts")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {folder}")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("width", [1280, 420])
def test_report_and_compare_fit_the_screen_in_headless_chromium(tiny_run, tmp_path, width):
    """At 1280 and 420 px: no horizontal page scroll, every image loaded, no console error,
    section headings visible below the sticky nav when a nav link is followed; light and dark
    screenshots kept."""
    exe = _chromium()
    if exe is None:
        if os.environ.get("TFCAM_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed but TFCAM_REQUIRE_BROWSER=1 (as in .ci/run)")
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    from tfcam.report.compare import write_compare

    r = run_cli("report", str(tiny_run))
    assert r.exit_code == 0, r.stderr
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    cfg = other / "config.yaml"
    cfg.write_text(cfg.read_text().replace("learning_rate: 0.003", "learning_rate: 0.001", 1))
    compare = write_compare([tiny_run, other], tmp_path / "compare")["files"]["html"]
    pages = {"report": tiny_run / "report" / "index.html", "compare": Path(compare)}
    out = _artefacts(tmp_path)
    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        for name, path in pages.items():
            for scheme in ("light", "dark"):
                errors: list[str] = []
                page = browser.new_page(
                    viewport={"width": width, "height": 900}, color_scheme=scheme
                )
                page.on(
                    "console",
                    lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None,
                )
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto(path.resolve().as_uri())
                page.wait_for_load_state("load")
                info = page.evaluate(
                    """() => ({
                      scroll: document.scrollingElement.scrollWidth, inner: innerWidth,
                      images: Array.from(document.images).map(i => [i.src, i.complete, i.naturalWidth]),
                      links: Array.from(document.querySelectorAll('nav a')).map(a => a.hash),
                    })"""
                )
                shot = out / f"{name}_{width}_{scheme}.png"
                page.screenshot(path=str(shot), full_page=True)
                hidden = []
                for h in info["links"]:  # follow each nav link: its heading below the nav
                    page.evaluate(f"location.hash = {json.dumps(h)}")
                    page.wait_for_timeout(50)
                    gap = page.evaluate(
                        f"""() => document.getElementById({json.dumps(h[1:])})
                              .querySelector('h2').getBoundingClientRect().top
                              - document.querySelector('nav').getBoundingClientRect().bottom"""
                    )
                    if gap < 0 and page.evaluate(
                        "document.scrollingElement.scrollTop + innerHeight"
                        " < document.scrollingElement.scrollHeight - 2"
                    ):
                        hidden.append((h, gap))
                page.close()
                seen[(name, scheme)] = (info, errors, shot, hidden)
        browser.close()
    for (name, scheme), (info, errors, shot, hidden) in seen.items():
        where = f"{name} at {width} px ({scheme})"
        assert info["scroll"] <= info["inner"], f"{where}: page scrolls sideways {info}"
        assert info["images"], where
        assert all(ok and w > 0 for _, ok, w in info["images"]), (where, info["images"])
        assert errors == [], (where, errors)
        assert hidden == [], f"{where}: headings under the sticky nav: {hidden}"
        assert shot.stat().st_size > 10_000
