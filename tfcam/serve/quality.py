"""Boxes and heatmap-quality figures for the explorer's image view.

Where the run's data has target boxes (the ``shapes`` datasets write ``boxes.csv``), the view
draws the box and scores each map against it: the energy-based pointing game (Wang et al. 2020,
"Score-CAM") and the pointing game (Zhang et al. 2018, "Top-down Neural Attention by Excitation
Backprop"), computed as ``tfcam evaluate-cams`` computes them. After ``evaluate-cams`` has run,
its table is shown for the method in view.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tfcam.errors import UserError


def load_boxes(run) -> dict[str, tuple[int, int, int, int]]:
    """``{absolute path: box}`` from the run's dataset ``boxes.csv`` (empty when it has none)."""
    from tfcam.explain.metrics import read_boxes_csv
    from tfcam.io import read_json

    try:
        root = Path(read_json(run.data_report_path).get("root", ""))
        if (root / "boxes.csv").is_file():
            return read_boxes_csv(root / "boxes.csv")
    except (UserError, ValueError, OSError, AttributeError):
        pass
    return {}


def box_info(box, full_hw) -> dict[str, list[float]]:
    """The box in the stored image's ``pixels`` and as a ``fraction`` of its width and height."""
    h, w = full_hw
    x0, y0, x1, y1 = box
    return {"pixels": [x0, y0, x1, y1], "fraction": [x0 / w, y0 / h, x1 / w, y1 / h]}


def scores(heatmap: np.ndarray, box, full_hw, input_size, resize: str) -> dict[str, Any]:
    """Energy in the box and the pointing hit of one map on the model's input."""
    from tfcam.explain.metrics import box_to_input, energy_pointing_game, pointing_game

    b = np.array([box_to_input(box, full_hw, input_size, resize)], np.float64)
    maps = np.asarray(heatmap)[None]
    return {
        "energy_in_box": float(energy_pointing_game(maps, b)[0]),
        "pointing_hit": bool(pointing_game(maps, b)[0]),
    }


def evaluation(run_path: Path) -> dict[str, Any] | None:
    """``RUN/evaluate_cams/metrics.json`` as the view shows it (per method, its scores)."""
    path = Path(run_path) / "evaluate_cams" / "metrics.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return {
            "split": data.get("split"),
            "n": data.get("n"),
            "layer": data.get("layer"),
            "columns": data.get("columns", {}),
            "methods": {row["method"]: row for row in data.get("table", [])},
        }
    except (ValueError, KeyError, TypeError, OSError):
        return None
