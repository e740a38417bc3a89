"""Whole runs on real material: the shapes demo and hymenoptera with real ImageNet weights (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_shapes_demo_reaches_095(tmp_path):
    # What `make demo` runs: the embedded default experiment, from scratch, no network.
    run_dir, metrics = _fit(["--experiment", "shapes"], tmp_path)
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


def test_hymenoptera_mobilenet_v2_reaches_095(shared, tmp_path):
    weights = shared / "weights" / "mobilenet_v2_1.0_224_no_top.weights.h5"
    run_dir, metrics = _fit(
        [
            "--experiment",
            "folder",
            "--data-dir",
            str(shared / "hymenoptera"),
            "--set",
            "model.backbone=mobilenet_v2",
            "--weights",
            str(weights),
        ],
        tmp_path,
    )
    assert metrics["val"]["n"] == 153
    assert metrics["val"]["accuracy"] >= 0.95
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["skipped"] == []
    assert [s["path"].rsplit("/", 1)[-1] for s in report["suspicious"]] == ["imageNotFound.gif"]
