"""``tfcam serve`` (issue 17, acceptance 1): every API route through werkzeug's test client, the
error cases, the path-traversal list, uploads, the token, concurrent requests, and the command.

The run is a copy of the session's ``shapes_tiny`` run whose predictions point at a copy of its
images, so the tests may put symlinks into its data folder."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_cli
from PIL import Image

from tfcam.serve.app import Explorer
from tfcam.serve.runs import RunSet


@pytest.fixture(scope="module")
def served(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    run = root / "runs" / "tiny"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("*.lock", ".lock"))
    data = root / "data"
    for split in ("val", "test"):
        p = run / f"predictions_{split}.csv"
        df = pd.read_csv(p)
        new = []
        for old in df["path"]:
            rel = Path(*Path(old).parts[-3:])  # split/class/file
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(old, data / rel)
            new.append(str(data / rel))
        df["path"] = new
        df.to_csv(p, index=False)
    (root / "secret.txt").write_text("outside the run's data")
    runs = RunSet.at(run)
    yield runs, run, data, root
    runs.close()


@pytest.fixture(scope="module")
def client(served):
    from werkzeug.test import Client

    return Client(Explorer(served[0]))


def _val(run):
    return pd.read_csv(run / "predictions_val.csv")


def test_runs_lists_the_run_with_its_classes_splits_and_accuracy(client, served):
    _, run, _, _ = served
    r = client.get("/api/runs")
    assert r.status_code == 200 and r.mimetype == "application/json"
    (entry,) = r.json["runs"]
    assert entry["name"] == "tiny"
    assert entry["classes"] == json.loads((run / "class_names.json").read_text())
    assert entry["splits"] == {
        "val": len(_val(run)),
        "test": len(pd.read_csv(run / "predictions_test.csv")),
    }
    metrics = json.loads((run / "metrics.json").read_text())
    assert entry["accuracy"]["val"] == pytest.approx(metrics["val"]["accuracy"])
    assert entry["backbone"] == "simple_cnn" and entry["epochs"] == []


def test_images_filters_sorting_paging_and_confusions_match_the_predictions(client, served):
    _, run, data, _ = served
    df = _val(run)
    r = client.get("/api/images?run=tiny&split=val&limit=500")
    assert r.json["total"] == len(df)
    first = r.json["images"][0]
    assert first == {
        "id": "val-0",
        "path": Path(df["path"][0]).relative_to(data).as_posix(),
        "true": df["label"][0],
        "predicted": df["predicted"][0],
        "probability": pytest.approx(df["confidence"][0]),
    }
    wrong = df[df["label"] != df["predicted"]]
    r = client.get("/api/images?run=tiny&filter=misclassified&limit=500")
    assert [im["id"] for im in r.json["images"]] == [f"val-{i}" for i in wrong.index]
    r = client.get("/api/images?run=tiny&filter=correct&limit=500")
    assert r.json["total"] == len(df) - len(wrong)
    r = client.get("/api/images?run=tiny&filter=confident_wrong&limit=500")
    probs = [im["probability"] for im in r.json["images"]]
    assert probs == sorted(probs, reverse=True) and r.json["total"] == len(wrong)
    counts = wrong.groupby(["label", "predicted"]).size().sort_values(ascending=False)
    got = {(c["true"], c["predicted"]): c["count"] for c in r.json["confusions"]}
    assert got == {k: int(v) for k, v in counts.items()}
    cls = df["label"][0]
    r = client.get(f"/api/images?run=tiny&true={cls}&sort=confidence&limit=500")
    sub = df[df["label"] == cls]
    assert r.json["total"] == len(sub)
    probs = [im["probability"] for im in r.json["images"]]
    assert probs == sorted(probs)
    r = client.get("/api/images?run=tiny&min_p=0.9&limit=500")
    assert r.json["total"] == int((df["confidence"] >= 0.9).sum())
    # Paging: two pages of 5 are the first 10.
    a = client.get("/api/images?run=tiny&limit=5").json["images"]
    b = client.get("/api/images?run=tiny&limit=5&offset=5").json["images"]
    assert [im["id"] for im in a + b] == [f"val-{i}" for i in range(min(10, len(df)))]


def test_heatmap_json_equals_the_python_api_and_the_png_is_its_colour_map(client, served):
    from tfcam.data.pipeline import read_images
    from tfcam.explain.api import explain
    from tfcam.explain.engine import Explainer
    from tfcam.explain.files import from_run

    runs, run, _, _ = served
    df = _val(run)
    src = from_run(run)
    ex = Explainer(src.model, class_names=src.class_names)
    x = read_images([df["path"][2]], src.image_size[0])
    other = src.class_names[1]
    want = explain(ex, x, "gradcam", targets=[other])
    r = client.get(f"/api/heatmap?run=tiny&image=val-2&method=gradcam&target={other}&format=json")
    assert r.status_code == 200, r.json
    j = r.json
    got = np.asarray(j["heatmap"], np.float32)
    np.testing.assert_allclose(got, want.heatmap[0], atol=2e-6)
    assert j["target"] == other and j["layer"] == ex.resolve_layers(None)[0]
    assert j["score"] == pytest.approx(float(want.scores[0]), rel=1e-5)
    assert list(j["probabilities"]) == src.class_names
    np.testing.assert_allclose(list(j["probabilities"].values()), want.probabilities[0], atol=1e-6)
    # style=map: the map placed in the photo's frame and coloured as tfcam explain colours it.
    from tfcam.data.display import input_window
    from tfcam.viz.overlay import colorize, place

    stored = np.asarray(Image.open(df["path"][2]).convert("RGB"))
    r = client.get(f"/api/heatmap?run=tiny&image=val-2&method=gradcam&target={other}&style=map")
    assert r.mimetype == "image/png" and r.headers["X-Target"] == other
    png = np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB"))
    assert png.shape == stored.shape  # a small image is shown at its own size
    window = input_window(stored.shape[:2], src.image_size, src.resize)
    heat, _ = place(want.heatmap[0], window.input_box, window.image_box, stored.shape[:2])
    assert (np.abs(png.astype(int) - colorize(heat).astype(int)) <= 1).all()
    # The overlay blends it over the photo, half and half.
    r = client.get(f"/api/heatmap?run=tiny&image=val-2&method=gradcam&target={other}")
    overlay = np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB")).astype(float)
    blend = 0.5 * stored + 0.5 * colorize(heat)
    assert np.abs(overlay - blend).max() <= 1.01
    # Another layer and the probability score are honoured.
    layer = runs.get("tiny").layers()["layers"][0]
    assert layer != "preprocess"
    r = client.get(f"/api/heatmap?run=tiny&image=val-2&layer={layer}&score=probability&format=json")
    assert r.json["layer"] == layer and 0 <= r.json["score"] <= 1


def test_heatmaps_are_cached_and_gradient_methods_work(client, served, monkeypatch):
    run = served[0].get("tiny")
    calls = []
    real = run._explain

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "_explain", counting)
    for _ in range(3):
        r = client.get("/api/heatmap?run=tiny&image=val-3&method=guided_backprop")
        assert r.status_code == 200
    assert calls == ["guided_backprop"]
    r = client.get("/api/heatmap?run=tiny&image=val-3&method=saliency&format=json")
    assert np.asarray(r.json["heatmap"]).shape == tuple(r.json["shape"])


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("/api/images?run=nope", 404, "Unknown run 'nope'. Choose from: tiny"),
        ("/api/images?run=tiny&split=train", 404, "Unknown split of run 'tiny' 'train'"),
        ("/api/images?run=tiny&filter=odd", 400, "Unknown filter 'odd'"),
        ("/api/images?run=tiny&true=dog", 400, "Unknown class (true) 'dog'"),
        ("/api/images?run=tiny&min_p=x", 400, "Invalid min_p 'x' (a number)"),
        ("/api/heatmap?run=tiny", 400, "Missing parameter 'image'"),
        ("/api/heatmap?run=tiny&image=val-9999", 404, "Unknown image 'val-9999' in run 'tiny'"),
        ("/api/heatmap?run=tiny&image=../x", 404, "Unknown image '../x'"),
        ("/api/heatmap?run=tiny&image=val-0&method=gradcm", 400, "Unknown method 'gradcm'. Did you mean 'gradcam'"),
        ("/api/heatmap?run=tiny&image=val-0&target=dog", 400, "Unknown class 'dog'. Choose from: circle"),
        ("/api/heatmap?run=tiny&image=val-0&layer=nope", 400, "Unknown layer 'nope'. Received: layer='nope'"),
        ("/api/heatmap?run=tiny&image=val-0&epoch=3", 400, "kept no checkpoint of epoch 3"),
        ("/api/heatmap?run=tiny&image=val-0&score=odds", 400, "Unknown score 'odds'. Choose from: logit, probability"),
        ("/api/heatmap?run=tiny&image=val-0&method=attention_rollout", 400, "reads the attention of transformer blocks"),
        ("/api/nothing", 404, "Nothing at /api/nothing"),
        ("/static/app.py", 404, "No file 'app.py' in the explorer's static files"),
    ],
)  # fmt: skip
def test_errors_are_json_with_the_clis_one_line(client, query, status, message):
    r = client.get(query)
    assert r.status_code == status, r.data
    assert r.mimetype == "application/json"
    (key,) = r.json
    assert key == "error" and message in r.json["error"] and "\n" not in r.json["error"]
    assert "Traceback" not in r.get_data(as_text=True)


def test_the_cli_gives_the_same_message_for_an_unknown_layer(client, served):
    _, run, _, _ = served
    image = _val(run)["path"][0]
    cli = run_cli("explain", run, image, "--layer", "nope", "--out", served[3] / "x")
    assert cli.exit_code == 2
    api = client.get("/api/heatmap?run=tiny&image=val-0&layer=nope").json["error"]
    assert api in cli.output


def test_post_only_where_it_belongs(client):
    r = client.post("/api/runs")
    assert r.status_code == 405 and "Method POST is not allowed" in r.json["error"]
    r = client.get("/api/upload?run=tiny")
    assert r.status_code == 405


TRAVERSAL = [
    "../secret.txt",
    "../../serve/secret.txt",
    "val/../../secret.txt",
    "%2e%2e/secret.txt",
    "..%2fsecret.txt",
    "%2E%2E%2Fsecret.txt",
    "..%5csecret.txt",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "//etc/passwd",
    "C:/Windows/win.ini",
    "val/%00../secret.txt",
    "\uff0e\uff0e/secret.txt",  # fullwidth full stops
    "..\u2215secret.txt",  # division slash
    "%c0%ae%c0%ae/secret.txt",  # overlong UTF-8 dots
    "link_out.txt",
    "linked_dir/secret.txt",
]


@pytest.mark.parametrize("path", TRAVERSAL)
def test_files_outside_the_runs_data_are_not_found(client, served, path):
    _, _, data, root = served
    if not (data / "link_out.txt").exists():
        os.symlink(root / "secret.txt", data / "link_out.txt")
        os.symlink(root, data / "linked_dir")
    r = client.get(f"/api/file?run=tiny&path={path}")
    assert r.status_code == 404, (path, r.data[:200])
    assert b"outside the run" not in r.data and r.json["error"].startswith("No file")


def test_files_inside_the_runs_data_are_served(client, served):
    _, run, data, _ = served
    rel = Path(_val(run)["path"][0]).relative_to(data).as_posix()
    r = client.get(f"/api/file?run=tiny&path={rel}")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert r.data == (data / rel).read_bytes()
    r = client.get("/api/photo?run=tiny&image=val-0")
    assert r.status_code == 200
    photo = Image.open(io.BytesIO(r.data))
    assert photo.size == Image.open(data / rel).size  # small images are not enlarged


def test_upload_a_photo_then_explain_it(client, shared):
    photo = sorted((shared / "cam-examples").glob("*.jp*g"))[0]
    r = client.post("/api/upload?run=tiny", data={"file": (photo.open("rb"), photo.name)})
    assert r.status_code == 200, r.json
    j = r.json
    assert j["id"].startswith("upload-") and j["predicted"] in j["probabilities"]
    assert sum(j["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    r = client.get(f"/api/heatmap?run=tiny&image={j['id']}&method=gradcam&format=json")
    assert r.status_code == 200 and r.json["target"] == j["predicted"]
    r2 = client.post("/api/upload?run=tiny", data={"file": (photo.open("rb"), "again.jpg")})
    assert r2.json["id"] == j["id"]  # the same bytes, the same id
    # The page lays the map over the photo: both at the photo's own size and aspect.
    shown = Image.open(io.BytesIO(client.get(f"/api/photo?run=tiny&image={j['id']}").data))
    heat = client.get(f"/api/heatmap?run=tiny&image={j['id']}&method=gradcam&style=map")
    stored = Image.open(photo)
    assert Image.open(io.BytesIO(heat.data)).size == shown.size
    assert max(shown.size) == min(512, max(stored.size))
    assert abs(shown.size[0] / shown.size[1] - stored.size[0] / stored.size[1]) < 0.01


@pytest.mark.parametrize(
    ("payload", "name", "message"),
    [
        (
            b"this is not an image",
            "notes.txt",
            "The upload 'notes.txt' is not an image tfcam reads",
        ),
        (
            b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
            "broken.png",
            "The upload 'broken.png' is not an image",
        ),
        (b"", "empty.png", "Empty upload"),
    ],
)
def test_uploads_that_are_not_images_are_one_line_400s(client, payload, name, message):
    r = client.post("/api/upload?run=tiny", data={"file": (io.BytesIO(payload), name)})
    assert r.status_code == 400 and message in r.json["error"], r.json
    assert (
        str(Path(os.sep, "tmp")) not in r.json["error"]
    )  # the server's temporary path stays private


def test_upload_errors_size_and_missing_file(served):
    from werkzeug.test import Client

    c = Client(Explorer(served[0], max_upload=1000))
    r = c.post("/api/upload?run=tiny", data={"file": (io.BytesIO(b"x" * 5000), "big.png")})
    assert r.status_code == 413 and "over the limit" in r.json["error"]
    r = c.post("/api/upload?run=tiny", data={"other": "x"})
    assert r.status_code == 400 and "No file in the upload" in r.json["error"]


def test_a_token_is_required_when_set_and_kept_in_a_cookie(served):
    from werkzeug.test import Client

    c = Client(Explorer(served[0], token="s3cret"))
    r = c.get("/api/runs")
    assert r.status_code == 403 and "needs its token" in r.json["error"]
    assert c.get("/api/runs?token=wrong").status_code == 403
    r = c.get("/?token=s3cret")
    assert r.status_code == 200 and "tfcam_token=s3cret" in r.headers["Set-Cookie"]
    assert c.get("/api/runs").status_code == 200  # the cookie
    fresh = Client(Explorer(served[0], token="s3cret"))
    assert fresh.get("/api/runs", headers={"Authorization": "token s3cret"}).status_code == 200


def test_concurrent_requests_all_succeed_and_equal_single_answers(served):
    from werkzeug.test import Client

    app = Explorer(served[0])
    ids = [f"val-{i}" for i in range(6)]
    single = {
        i: Client(app).get(f"/api/heatmap?run=tiny&image={i}&method=layercam&format=json").json
        for i in ids
    }
    app.runs.get("tiny")._cache.data.clear()  # every request below computes or races for it
    errors, answers = [], []

    def worker(k):
        c = Client(app)
        for n in range(12):
            image = ids[(k + n) % len(ids)]
            r = c.get(f"/api/heatmap?run=tiny&image={image}&method=layercam&format=json")
            if r.status_code != 200:
                errors.append(r.json)
            answers.append((image, r.json))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(answers) == 96
    for image, j in answers:
        assert j["heatmap"] == single[image]["heatmap"]


# --------------------------------------------------------------------------------------------
# The command


def test_serve_bad_paths_and_busy_ports_are_one_line_exit_2(served, tmp_path):
    r = run_cli("serve", tmp_path / "missing")
    assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output
    r = run_cli("serve", tmp_path)
    assert r.exit_code == 2 and "No finished run in" in r.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli("serve", served[1], "--port", port)
    assert r.exit_code == 2 and f"Cannot listen on 127.0.0.1:{port}" in r.output


def _start(args, env=None):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfcam.cli", "serve", *map(str, args), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    line = proc.stdout.readline()
    assert line.startswith("tfcam explorer: http://"), (line, proc.stderr.read()[-2000:])
    return proc, line.split()[2]


@pytest.mark.slow
def test_serve_answers_on_the_loopback_and_stops_on_ctrl_c(served):
    import signal

    proc, address = _start([served[1]])
    try:
        assert address.startswith("http://127.0.0.1:") and "token" not in address
        with urllib.request.urlopen(address + "api/runs", timeout=60) as r:
            assert json.loads(r.read())["runs"][0]["name"] == "tiny"
        with urllib.request.urlopen(address + "api/heatmap?image=val-0", timeout=120) as r:
            assert r.headers["Content-Type"] == "image/png"
        with urllib.request.urlopen(address, timeout=60) as r:
            assert b"tfcam explorer" in r.read()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped" in out, err[-2000:]


@pytest.mark.slow
def test_serve_on_another_host_warns_and_needs_the_token(served):
    proc, address = _start([served[1], "--host", "0.0.0.0"])
    try:
        assert "?token=" in address
        port = address.split(":")[2].split("/")[0]
        base = f"http://127.0.0.1:{port}/"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "api/runs", timeout=60)
        assert err.value.code == 403
        token = address.split("token=")[1]
        with urllib.request.urlopen(f"{base}api/runs?token={token}", timeout=60) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "Listening on 0.0.0.0" in err
    time.sleep(0)


# --------------------------------------------------------------------------------------------
# Over the epochs


def test_kept_epoch_checkpoints_give_each_epochs_heatmap(tmp_path):
    from werkzeug.test import Client

    from tfcam.config import load_experiment
    from tfcam.explain.api import explain
    from tfcam.explain.engine import Explainer
    from tfcam.explain.files import from_run
    from tfcam.train.fit import fit

    run = tmp_path / "run"
    sets = ["train.keep_epoch_checkpoints=true", "train.fine_tune.epochs=1"]
    fit(load_experiment("shapes_tiny", sets), run, verbose=0, report=False)
    history = pd.read_csv(run / "history.csv")
    kept = sorted(run.glob("checkpoints/epoch_*.weights.h5"))
    assert len(kept) == len(history) == 3
    c = Client(Explorer(RunSet.at(run)))
    assert c.get("/api/runs").json["runs"][0]["epochs"] == [1, 2, 3]
    final = c.get("/api/heatmap?image=val-0&format=json").json
    first = c.get("/api/heatmap?image=val-0&epoch=1&format=json").json
    # Independently: the run's model with epoch 1's weights.
    src = from_run(run)
    src.model.load_weights(run / "checkpoints" / "epoch_1.weights.h5")
    from tfcam.data.pipeline import read_images

    x = read_images([pd.read_csv(run / "predictions_val.csv")["path"][0]], 32)
    want = explain(Explainer(src.model, class_names=src.class_names), x, "gradcam")
    np.testing.assert_allclose(np.asarray(first["heatmap"]), want.heatmap[0], atol=2e-6)
    assert first["score"] == pytest.approx(float(want.scores[0]), rel=1e-5)
    assert first["score"] != pytest.approx(final["score"])
    # The run's model is back to its final weights afterwards.
    again = c.get("/api/heatmap?image=val-0&method=gradcam&target=circle&format=json").json
    direct = from_run(run)
    want = explain(Explainer(direct.model, class_names=direct.class_names), x, "gradcam",
                   targets=["circle"])  # fmt: skip
    np.testing.assert_allclose(np.asarray(again["heatmap"]), want.heatmap[0], atol=2e-6)


def test_boxes_energy_in_the_box_and_the_evaluate_cams_table(client, served):
    from tfcam.data.pipeline import stored_size
    from tfcam.explain.metrics import (
        box_to_input,
        energy_pointing_game,
        pointing_game,
        read_boxes_csv,
    )

    runs, run, _, _ = served
    served_run = runs.get("tiny")
    df = _val(run)
    root = Path(json.loads((run / "data_report.json").read_text())["root"])
    boxes = read_boxes_csv(root / "boxes.csv")
    # The copied images keep their names: the box is the original's.
    original = next(k for k in boxes if k.endswith(Path(df["path"][1]).name))
    served_run._boxes = {str(Path(df["path"][1]).resolve()): boxes[original]}
    j = client.get("/api/heatmap?run=tiny&image=val-1&method=gradcam&format=json").json
    x0, y0, x1, y1 = boxes[original]
    h, w = stored_size(df["path"][1])
    assert j["box"] == {"pixels": [x0, y0, x1, y1], "fraction": [x0 / w, y0 / h, x1 / w, y1 / h]}
    b = np.array([box_to_input(boxes[original], (h, w), (32, 32), "stretch")])
    maps = np.asarray(j["heatmap"], np.float32)[None]
    assert j["quality"]["energy_in_box"] == pytest.approx(float(energy_pointing_game(maps, b)[0]))
    assert j["quality"]["pointing_hit"] == bool(pointing_game(maps, b)[0])
    # No box for an image the box table does not list, nor for uploads.
    j = client.get("/api/heatmap?run=tiny&image=val-2&method=gradcam&format=json").json
    assert j["box"] is None and j["quality"] is None
    # The evaluate-cams table, once it has run.
    assert client.get("/api/methods?run=tiny").json["evaluate_cams"] is None
    r = run_cli("evaluate-cams", run, "-m", "gradcam", "--n", "6", "--no-road",
                "--sanity-images", "2")  # fmt: skip
    assert r.exit_code == 0, r.output
    ev = client.get("/api/methods?run=tiny").json["evaluate_cams"]
    table = json.loads((run / "evaluate_cams" / "metrics.json").read_text())
    assert ev["n"] == table["n"] == 6 and ev["layer"] == table["layer"]
    row = next(r for r in table["table"] if r["method"] == "gradcam")
    assert ev["methods"]["gradcam"] == row and "center" in ev["methods"]


# --------------------------------------------------------------------------------------------
# Runs side by side


def test_runs_side_by_side_explain_the_same_file(served, tmp_path):
    """Ids are rows of each run's predictions: ``of=RUN`` finds the other run's row of the file."""
    from werkzeug.test import Client

    _, run, _, _ = served
    other = tmp_path / "runs" / "other"
    shutil.copytree(run, other)
    p = other / "predictions_val.csv"
    df = pd.read_csv(p)
    df.iloc[::-1].to_csv(p, index=False)  # the same files in the opposite order
    runs = RunSet([run, other])
    c = Client(Explorer(runs))
    assert [r["name"] for r in c.get("/api/runs").json["runs"]] == ["tiny", "other"]
    n = len(df)
    side = c.get("/api/heatmap?run=other&image=val-0&of=tiny&format=json").json
    own = c.get(f"/api/heatmap?run=other&image=val-{n - 1}&format=json").json
    assert side["image"] == f"val-{n - 1}" and side["heatmap"] == own["heatmap"]
    r = c.get("/api/heatmap?run=other&image=val-0&of=nope")
    assert r.status_code == 404 and "Unknown run 'nope'" in r.json["error"]
    (other / "predictions_val.csv").write_text(df.iloc[1:].to_csv(index=False))
    runs = RunSet([run, other])
    r = Client(Explorer(runs)).get("/api/heatmap?run=other&image=val-0&of=tiny")
    assert r.status_code == 404 and "has no image" in r.json["error"]
    runs.close()
