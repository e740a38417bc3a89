"""Learning-rate range test: the rates applied per batch, the recovered per-batch losses, the stop
on divergence, the suggestion, and the command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from conftest import run_cli

from tfcam.config import load_experiment
from tfcam.train.lr_finder import _Sweep, find_lr, suggest


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lr = np.logspace(-5, 0, 11)
    smoothed = np.array([2.0, 2.0, 1.95, 1.9, 1.5, 0.8, 0.6, 0.55, 0.5, 1.0, 4.0])
    # Per decade of rate, the loss falls fastest between 1e-3 and 1e-2 (indices 4-5).
    assert suggest(pd.DataFrame({"lr": lr, "loss": smoothed, "smoothed": smoothed})) in lr[4:6]


def test_sweep_rates_are_geometric():
    s = _Sweep(1e-4, 1e-1, 4, 0.98, 4.0)
    np.testing.assert_allclose([s.rate(i) for i in range(4)], [1e-4, 1e-3, 1e-2, 1e-1])


def test_find_lr_on_shapes_tiny(tmp_path):
    cfg = load_experiment("shapes_tiny")
    res = find_lr(cfg, tmp_path / "lr", start=1e-5, end=10.0, steps=30)
    t = pd.read_csv(tmp_path / "lr" / "lr_finder.csv")
    assert list(t.columns) == ["lr", "loss", "smoothed"] and 5 <= len(t) <= 30
    ratios = t["lr"].to_numpy()[1:] / t["lr"].to_numpy()[:-1]
    np.testing.assert_allclose(ratios, (10.0 / 1e-5) ** (1 / 29), rtol=1e-6)
    # The smoothed column is the bias-corrected moving average of the loss column.
    avg, want = 0.0, []
    for i, loss in enumerate(t["loss"]):
        avg = 0.98 * avg + 0.02 * loss
        want.append(avg / (1 - 0.98 ** (i + 1)))
    np.testing.assert_allclose(t["smoothed"], want, rtol=1e-6)
    assert 1e-5 <= res.suggestion <= 10.0
    saved = json.loads((tmp_path / "lr" / "lr_finder.json").read_text())
    assert saved["suggestion"] == res.suggestion and saved["steps_run"] == len(t)
    assert (tmp_path / "lr" / "lr_finder.png").read_bytes()[:4] == b"\x89PNG"


def test_lr_find_command_and_bad_range(tmp_path):
    r = run_cli(
        "lr-find",
        "--experiment",
        "shapes_tiny",
        "--steps",
        "8",
        "--out",
        str(tmp_path / "o"),
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)  # progress logging goes to stderr
    assert out["steps_run"] <= 8 and out["suggestion"] > 0
    r = run_cli("lr-find", "--experiment", "shapes_tiny", "--start", "1", "--end", "0.1")
    assert r.exit_code == 2 and "0 < --start < --end" in r.stderr
    r = run_cli("lr-find", "--experiment", "nope")
    assert r.exit_code == 2 and "Unknown experiment 'nope'" in r.stderr
