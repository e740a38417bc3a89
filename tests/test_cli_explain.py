"""`tfcam explain`: files written per image and method, their contents, JSON, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from conftest import run_cli, write_image

from tfcam.data.pipeline import read_images


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The Grad-CAM demo photos when ../shared/data is there, else a few generated images."""
    from conftest import shared_data

    folder = shared_data() / "cam-examples"
    if folder.is_dir():
        return folder
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(folder / f"p{i}.png", rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    return folder


def test_explain_writes_overlays_per_image_and_method(tiny_run, photos, tmp_path):
    out = tmp_path / "out"
    r = run_cli(
        "explain",
        tiny_run,
        photos,
        "--method",
        "gradcam,scorecam",
        "-m",
        "saliency",
        "--out",
        out,
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    records = json.loads(r.stdout)
    images = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    assert [Path(rec["image"]).name for rec in records] == [p.name for p in images]
    names = json.loads((tiny_run / "class_names.json").read_text())
    for rec in records:
        assert set(rec["outputs"]) == {"gradcam", "scorecam", "saliency"}
        assert rec["predicted"] in names and rec["target"] == rec["predicted"]
        for files in rec["outputs"].values():
            for kind in ("overlay", "heatmap", "panel"):
                assert Path(files[kind]).is_file()
            # At the photo's own aspect, the longer side 448 px (the default --overlay-size).
            h0, w0 = cv2.imread(rec["image"]).shape[:2]
            s = 448 / max(h0, w0)
            assert cv2.imread(files["overlay"]).shape == (round(h0 * s), round(w0 * s), 3)
    overlays = list(out.rglob("*_overlay.png"))
    assert len(overlays) == 3 * len(images)

    # The heatmap PNG holds the library's Grad-CAM map (8-bit), for the predicted class.
    from tfcam.explain.cams import explain_cam
    from tfcam.explain.engine import Explainer

    model = keras.saving.load_model(tiny_run / "model.keras")
    x = read_images([str(images[0])], 32)
    want = explain_cam(Explainer(model), x, "gradcam").heatmap[0]
    png = cv2.imread(records[0]["outputs"]["gradcam"]["heatmap"], cv2.IMREAD_GRAYSCALE)
    assert np.abs(png.astype(float) - np.round(want * 255)).max() <= 1


def test_explain_target_layers_and_listing(tiny_run, photos, tmp_path):
    r = run_cli(
        "explain",
        tiny_run,
        photos,
        "--target",
        "square",
        "--layer",
        "block2_relu",
        "--layer",
        "block4_relu",
        "--out",
        tmp_path,
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)[0]
    assert rec["target"] == "square"
    assert set(rec["outputs"]) == {"gradcam-block2_relu", "gradcam-block4_relu"}
    r = run_cli("explain", tiny_run, "--list-layers")
    assert r.exit_code == 0 and "block4_relu  (default)" in r.output
    r = run_cli("explain", "--list-methods")  # needs no run or image
    assert r.exit_code == 0
    rows = dict(line.split(None, 1) for line in r.output.strip().splitlines())
    from tfcam.explain.methods import METHODS

    assert list(rows) == list(METHODS)
    assert "Sundararajan et al. 2017" in rows["integrated_gradients"]
    r = run_cli("explain")
    assert r.exit_code == 2 and "Give a run directory" in r.stderr


@pytest.mark.parametrize(
    ("args", "pieces"),
    [
        (
            ["--method", "gradcan"],
            ["Unknown method 'gradcan'", "Did you mean 'gradcam'", "scorecam"],
        ),
        (["--layer", "block9_relu"], ["Unknown layer 'block9_relu'", "block4_relu"]),
        (["--layer", "head_pool"], ["no spatial", "block4_relu"]),
        (["--target", "hexagon"], ["Unknown class 'hexagon'", "circle, square, triangle"]),
        (["--target", "9"], ["out of range"]),
    ],
)
def test_explain_bad_input_exits_2(tiny_run, photos, tmp_path, args, pieces):
    r = run_cli("explain", tiny_run, photos, "--out", tmp_path / "o", *args)
    assert r.exit_code == 2, r.output
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("tfcam: error: ") and "Traceback" not in r.stderr
    for piece in pieces:
        assert piece in line
    assert not (tmp_path / "o").exists()


def test_explain_missing_input_and_run(tiny_run, tmp_path):
    r = run_cli("explain", tiny_run, tmp_path / "nope.jpg")
    assert r.exit_code == 2 and "Input not found" in r.stderr
    r = run_cli("explain", tmp_path / "norun", "x.jpg")
    assert r.exit_code == 2 and "Run directory not found" in r.stderr


def test_explain_any_keras_model_file(tmp_path, photos):
    keras.utils.set_random_seed(0)
    inp = keras.Input((40, 40, 3))
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(h)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    keras.Model(inp, out).save(tmp_path / "m.keras")
    (tmp_path / "names.json").write_text(
        json.dumps({"0": ["n0", "red"], "1": ["n1", "green"], "2": ["n2", "blue"]})
    )
    r = run_cli(
        "explain",
        "--model",
        tmp_path / "m.keras",
        photos,
        "--class-names",
        tmp_path / "names.json",
        "-m",
        "gradcam++",
        "--target",
        "green",
        "--out",
        tmp_path / "o",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    records = json.loads(r.stdout)
    assert all(rec["target"] == "green" for rec in records)
    h0, w0 = cv2.imread(records[0]["image"]).shape[:2]
    shape = cv2.imread(records[0]["outputs"]["gradcam++"]["overlay"]).shape
    assert max(shape[:2]) == 448 and abs(shape[0] / shape[1] - h0 / w0) < 0.01


def test_per_layer_gallery(tiny_run, photos, tmp_path):
    r = run_cli(
        "explain",
        tiny_run,
        photos,
        "--layer",
        "block2_relu",
        "--layer",
        "block4_relu",
        "-m",
        "gradcam,saliency",
        "--out",
        tmp_path,
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    for rec in json.loads(r.stdout):
        assert set(rec["galleries"]) == {"gradcam"}  # saliency has no layer
        gallery = cv2.imread(rec["galleries"]["gradcam"])
        single = cv2.imread(rec["outputs"]["gradcam-block2_relu"]["panel"])
        assert gallery is not None and single is not None
        # The photo and one overlay per layer, side by side at the panels' size.
        assert gallery.shape[1] == single.shape[1] and gallery.shape[0] == single.shape[0]


def test_features_grid_shows_the_most_active_channels(tiny_run, photos, tmp_path):
    r = run_cli(
        "features",
        tiny_run,
        photos,
        "--layer",
        "block1_relu",
        "--count",
        "4",
        "--order",
        "most_active",
        "--out",
        tmp_path,
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    records = json.loads(r.stdout)
    model = keras.saving.load_model(tiny_run / "model.keras")
    sub = keras.Model(model.inputs[0], model.get_layer("block1_relu").output)
    for rec in records:
        x = read_images([rec["image"]], 32)
        a = sub(x).numpy()[0]
        want = np.argsort(-a.reshape(-1, a.shape[-1]).mean(axis=0), kind="stable")[:4]
        assert rec["channels"]["block1_relu"] == [int(c) for c in want]
        assert cv2.imread(rec["outputs"]["block1_relu"]) is not None
    r = run_cli("features", tiny_run, photos, "--layer", "nope", "--out", tmp_path)
    assert r.exit_code == 2 and "Unknown layer 'nope'" in r.stderr
    r = run_cli("features", tiny_run)
    assert r.exit_code == 2 and "at least one image" in r.stderr
