"""Issue 16, acceptance 3 (slow): the ``shapes_vit`` experiment, trained as a user trains it
(``tfcam fit -e experiments/shapes_vit.yaml``), reaches 0.9 validation accuracy, and its attention
rollout, gradient-weighted attention and LayerCAM maps put more of their energy into the target
shape's box than the ``center`` reference map does (Wang et al. 2020's energy-based pointing game,
as ``evaluate-cams`` scores it). Grad-CAM does not, on this model: a strict xfail holds the figure.

Run as a script to see the numbers: ``python tests/test_vit_shapes_slow.py [RUN_DIR]``
(trains into RUN_DIR unless it already holds a finished run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "experiments" / "shapes_vit.yaml"
METHODS = ("gradcam", "layercam", "attention_rollout", "gradient_attention")


def train(run_dir: Path) -> tuple[float, str]:
    """``tfcam fit`` of the experiment in a child process: (seconds, stderr)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "tfcam.cli", "fit", "-e", str(EXPERIMENT), "--run-dir",
         str(run_dir), "--no-report"],
        capture_output=True,
        text=True,
        timeout=3000,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    return time.perf_counter() - t0, out.stderr


def measure(run_dir: Path) -> dict:
    """Validation accuracy, and energy pointing per method on the validation images."""
    import pandas as pd

    from tfcam.data.pipeline import read_images
    from tfcam.data.shapes import read_boxes
    from tfcam.explain.api import explain
    from tfcam.explain.engine import Explainer
    from tfcam.explain.evaluate_cams import reference_maps
    from tfcam.explain.metrics import energy_pointing_game
    from tfcam.models.build import load_model

    metrics = json.loads((run_dir / "metrics.json").read_text())
    names = json.loads((run_dir / "class_names.json").read_text())
    val = pd.read_csv(run_dir / "splits.csv").query("split == 'val'")
    paths = val["path"].tolist()
    boxes_of = read_boxes(Path(paths[0]).parents[2])
    boxes = np.array([boxes_of[p] for p in paths], "float64")
    targets = [names.index(v) if isinstance(v, str) else int(v) for v in val["label"]]
    x = read_images(paths, 32)
    ex = Explainer(load_model(run_dir / "model.keras"), class_names=names)
    energy = {}
    for method in METHODS:
        maps = explain(ex, x, method, targets=targets).heatmap
        energy[method] = float(energy_pointing_game(maps, boxes).mean())
    energy["center"] = float(
        energy_pointing_game(reference_maps("center", len(x), 32, 32), boxes).mean()
    )
    return {
        "val_accuracy": metrics["val"]["accuracy"],
        "energy_pointing": energy,
        "layer": ex.resolve_layers(None)[0],
        "n": len(x),
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("keras_hub")
    run_dir = tmp_path_factory.mktemp("shapes_vit") / "run"
    seconds, stderr = train(run_dir)
    result = measure(run_dir)
    print({**result, "train_seconds": round(seconds)})
    return result, stderr


def test_shapes_vit_reaches_090_and_attention_maps_beat_center_on_energy_pointing(trained):
    result, stderr = trained
    # A ViT's position ids are int32: oneDNN's "supports DT_INT32 only on platforms with
    # AVX-512" notice used to reach the terminal once per run.
    assert "oneDNN" not in stderr, [line for line in stderr.splitlines() if "oneDNN" in line]
    assert result["n"] == 500 and result["layer"] == "block_3"  # the last block's input
    assert result["val_accuracy"] >= 0.9, result
    energy = result["energy_pointing"]
    for method in ("attention_rollout", "gradient_attention", "layercam"):
        assert energy[method] > energy["center"] + 0.1, (method, result)


@pytest.mark.xfail(
    strict=True,
    reason="issue 16 acceptance 3, not met: on this ViT Grad-CAM puts 0.47 of its energy in the "
    "box, the same as the center reference (0.47); its channel weights average the gradient over "
    "every token, and after global attention every token carries the class (LayerCAM, which "
    "keeps the gradient per token, reaches 0.77). Also measured: 2 blocks 0.36, a 16x16 grid "
    "0.44, a pooled head 0.24-0.39, the last block's norm1 0.44, 4 register tokens 0.59 with "
    "one seed and 0.47 with another",
)
def test_grad_cam_on_the_shapes_vit_beats_center_on_energy_pointing(trained):
    energy = trained[0]["energy_pointing"]
    assert energy["gradcam"] > energy["center"], energy


if __name__ == "__main__":
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "run"
    took = None if (run / "model.keras").is_file() else train(run)[0]
    print({**measure(run), "train_seconds": took})
