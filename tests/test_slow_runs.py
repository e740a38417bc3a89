"""Whole runs on real material: the shapes demo and hymenoptera with real ImageNet weights (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def _fit(args, tmp_path):
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "tfcam.cli", "fit", *args, "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_shapes_demo_reaches_095(shapes_run):
    # What `make demo` runs: the embedded default experiment, from scratch, no network.
    run_dir = shapes_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] >= 0.95
    assert metrics["val"]["n"] == 500 and metrics["test"]["n"] == 500
    for name in (
        "config.yaml",
        "history.csv",
        "model.keras",
        "class_names.json",
        "data_report.json",
        "report/index.html",
        "checkpoints/best.keras",
    ):
        assert (run_dir / name).is_file(), name
    assert len(pd.read_csv(run_dir / "history.csv")) == 12


def test_gradcam_points_into_the_target_box_on_shapes(shapes_run):
    from tfcam.data.pipeline import read_images
    from tfcam.data.shapes import read_boxes
    from tfcam.explain.cams import explain_cam
    from tfcam.explain.engine import Explainer
    from tfcam.models.build import load_model

    names = json.loads((shapes_run / "class_names.json").read_text())
    splits = pd.read_csv(shapes_run / "splits.csv")
    val = splits[splits["split"] == "val"]
    from pathlib import Path

    boxes = read_boxes(Path(val["path"].iloc[0]).parents[2])
    x = read_images(val["path"].tolist(), 64)
    e = explain_cam(
        Explainer(load_model(shapes_run / "model.keras"), class_names=names),
        x,
        "gradcam",
        targets=val["label"].tolist(),
    )
    hits = 0
    for heat, path in zip(e.heatmap, val["path"], strict=True):
        y, x_ = np.unravel_index(np.argmax(heat), heat.shape)
        x0, y0, x1, y1 = boxes[path]
        hits += x0 <= x_ < x1 and y0 <= y < y1
    assert hits / len(val) >= 0.90, hits / len(val)


def test_explain_cli_on_photos_with_the_shapes_model(shapes_run, shared, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfcam.cli",
            "explain",
            str(shapes_run),
            str(shared / "cam-examples"),
            "-m",
            "gradcam,gradcam++,scorecam,guided_gradcam",
            "--max-n",
            "32",
            "--out",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    records = json.loads(out.stdout)
    assert len(records) == 7
    assert len(list(tmp_path.rglob("*_overlay.png"))) == 7 * 4


@pytest.fixture(scope="module")
def hymenoptera_run(shared, tmp_path_factory):
    """The folder experiment on hymenoptera with the MobileNetV2 ImageNet weights and nothing
    else: its defaults (flips on, the head on cached features until val_loss stops improving)."""
    weights = shared / "weights" / "mobilenet_v2_1.0_224_no_top.weights.h5"
    return _fit(
        [
            "--experiment",
            "folder",
            "--data-dir",
            str(shared / "hymenoptera"),
            "--weights",
            str(weights),
        ],
        tmp_path_factory.mktemp("hymenoptera"),
    )


def test_hymenoptera_defaults_reach_096_with_flips_on_the_feature_cache(hymenoptera_run):
    """Issue 15, acceptance 7: above a logistic regression on the same frozen features (0.954),
    with the default flip augmentation, phase 1 on cached features of both views."""
    run_dir, metrics = hymenoptera_run
    assert metrics["val"]["n"] == 153
    assert metrics["val"]["accuracy"] >= 0.96
    config = (run_dir / "config.yaml").read_text()
    assert "hflip: 0.5" in config and "backbone: mobilenet_v2" in config
    head = json.loads((run_dir / "state.json").read_text())["phase1"]
    assert head["feature_cache"] is True and head["views"] == ["original", "hflip"], head
    history = pd.read_csv(run_dir / "history.csv")
    assert len(history) == head["last_epoch"] < 100  # stopped on val_loss
    assert head["best_epoch"] == history.loc[history["val_loss"].idxmin(), "epoch"]
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["skipped"] == []
    assert [s["path"].rsplit("/", 1)[-1] for s in report["suspicious"]] == ["imageNotFound.gif"]


def test_randomisation_sanity_check_separates_gradcam_from_guided_backprop(
    hymenoptera_run, tmp_path
):
    """Issue 7, point 3 (Adebayo et al. 2018, on an ImageNet network as in the paper): once every
    layer is re-initialised, Grad-CAM's maps no longer resemble the trained model's; guided
    backprop's stay highly correlated through most of the cascade, and the page says so."""
    from tfcam.explain.evaluate_cams import evaluate_cams

    run_dir, _ = hymenoptera_run
    res = evaluate_cams(
        run_dir, ["gradcam", "guided_backprop"], n=8, road=False, sanity_images=8,
        out_dir=tmp_path,
    )  # fmt: skip
    sanity = res["sanity"]
    gradcam, guided = sanity["spearman"]["gradcam"], sanity["spearman"]["guided_backprop"]
    from tfcam.explain.metrics import weighted_layers
    from tfcam.models.build import load_model

    every = weighted_layers(load_model(run_dir / "model.keras"))
    assert sanity["down_to"][0] == "predictions" and sanity["counts"][-1] == len(every)
    assert sanity["down_to"][-1] == every[-1] == "Conv1"  # the first convolution: all random
    assert gradcam[-1] <= 0.3, gradcam
    assert max(gradcam) <= 0.5, gradcam  # it drops as soon as the top layers are random
    assert np.mean(guided) >= 0.6 and min(guided[:-1]) >= 0.7, guided  # the known failure
    assert "guided_backprop (mean Spearman" in sanity["note"]
    assert "gradcam (mean" not in sanity["note"]
    md = (tmp_path / "metrics.md").read_text()
    assert sanity["note"] in md


def test_gradcam_beats_reference_maps_on_shapes(shapes_run, tmp_path):
    """Issue 7, point 2: on the demo model, over 200 validation images, Grad-CAM points into the
    target box, and deletes and inserts the evidence better than a random or a centred map."""
    from tfcam.explain.evaluate_cams import evaluate_cams

    res = evaluate_cams(
        shapes_run, ["gradcam"], n=200, road=False, sanity_images=0, out_dir=tmp_path
    )
    rows = {r["method"]: r for r in res["table"]}
    assert res["n"] == 200
    assert rows["gradcam"]["pointing_game"] >= 0.9, rows
    for ref in ("random", "center"):
        assert rows["gradcam"]["deletion_auc"] < rows[ref]["deletion_auc"], rows
        assert rows["gradcam"]["insertion_auc"] > rows[ref]["insertion_auc"], rows
