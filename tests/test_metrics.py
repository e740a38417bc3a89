"""Heatmap metrics on cases with a known answer, and `tfcam evaluate-cams` on a tiny run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from tfcam.explain import metrics as M


def test_pointing_game_hits_inside_misses_outside_and_constant():
    maps = np.zeros((4, 20, 30))
    maps[0, 5, 7] = 1.0  # inside box (x 5..10, y 3..8)
    maps[1, 15, 25] = 1.0  # far outside
    maps[3, 5, 12] = 1.0  # two pixels right of the box
    boxes = np.array([[5, 3, 10, 8]] * 4)
    assert M.pointing_game(maps, boxes, tolerance=0).tolist() == [True, False, False, False]
    assert M.pointing_game(maps, boxes, tolerance=3).tolist() == [True, False, False, True]


def test_energy_pointing_game_is_the_share_of_mass_in_the_box():
    maps = np.ones((2, 10, 10))
    maps[1] = 0
    maps[1, 2:4, 2:4] = 5.0
    boxes = np.array([[0, 0, 5, 4], [2, 2, 4, 4]])
    np.testing.assert_allclose(M.energy_pointing_game(maps, boxes), [20 / 100, 1.0])
    # Half-covered pixels count half.
    np.testing.assert_allclose(
        M.energy_pointing_game(np.ones((1, 4, 4)), [[0, 0, 1.5, 4]]), [6 / 16]
    )


def _linear_model(weights: np.ndarray):
    """A 'model' whose probability of class 1 is the w-weighted mean brightness (0–1)."""
    w = weights / weights.sum()

    def score(images):
        p1 = (np.asarray(images, np.float64).mean(axis=-1) / 255.0 * w).sum(axis=(1, 2))
        return np.stack([1 - p1, p1], axis=1)

    return score


def test_deletion_area_of_an_oracle_map_equals_the_hand_computed_value():
    rng = np.random.default_rng(0)
    h, w = 6, 8
    weights = rng.permutation(np.arange(1, h * w + 1)).reshape(h, w).astype(float)
    score = _linear_model(weights)
    image = np.full((1, h, w, 3), 255.0, np.float32)
    step = 5
    curves = M.deletion_insertion(score, image, weights[None], [1], mode="deletion", step=step)
    # By hand: after deleting the k largest weights the score is 1 - (their sum) / total.
    desc = np.sort(weights.ravel())[::-1]
    ks = list(range(0, h * w, step)) + [h * w]
    expected_scores = [1 - desc[:k].sum() / desc.sum() for k in ks]
    xs = [k / (h * w) for k in ks]
    expected_auc = sum(
        (xs[i + 1] - xs[i]) * (expected_scores[i] + expected_scores[i + 1]) / 2
        for i in range(len(xs) - 1)
    )
    np.testing.assert_allclose(curves.fractions, xs)
    np.testing.assert_allclose(curves.scores[0], expected_scores, atol=1e-6)
    assert curves.auc[0] == pytest.approx(expected_auc, abs=1e-6)
    # The reversed map deletes the least important pixels first: a worse (larger) area.
    worse = M.deletion_insertion(score, image, -weights[None], [1], mode="deletion", step=step)
    assert worse.auc[0] > curves.auc[0] + 0.2
    # Insertion from black: the oracle's area is larger than the reversed map's.
    zeros = np.zeros_like(image)
    ins = M.deletion_insertion(
        score, image, weights[None], [1], mode="insertion", step=step, baseline=zeros
    )
    ins_rev = M.deletion_insertion(
        score, image, -weights[None], [1], mode="insertion", step=step, baseline=zeros
    )
    assert ins.auc[0] == pytest.approx(1 - expected_auc, abs=1e-6)  # the mirror image of deletion
    assert ins.auc[0] > ins_rev.auc[0] + 0.2


def test_road_with_an_all_equal_map_scores_both_orders_the_same():
    rng = np.random.default_rng(1)
    h, w = 16, 16
    score = _linear_model(rng.random((h, w)) + 0.1)
    images = rng.uniform(0, 255, (3, h, w, 3)).astype(np.float32)
    flat = np.ones((3, h, w))
    morf = M.road(score, images, flat, [1, 1, 1], order="morf")
    lerf = M.road(score, images, flat, [1, 1, 1], order="lerf")
    np.testing.assert_array_equal(morf, lerf)
    # A map that differs does give different orders different scores.
    peaked = rng.random((3, h, w))
    assert not np.allclose(
        M.road(score, images, peaked, [1, 1, 1], order="morf"),
        M.road(score, images, peaked, [1, 1, 1], order="lerf"),
    )


def test_noisy_linear_imputation_restores_a_linear_ramp_without_noise():
    h, w = 12, 14
    yy, xx = np.mgrid[:h, :w]
    ramp = np.stack([3 * xx + 2 * yy, 100 + xx - yy, 50 + 0 * xx], axis=-1).astype(np.float64)
    removed = np.zeros((h, w), bool)
    removed[3:9, 4:10] = True  # inside: every removed pixel has all eight neighbours
    filled = M.noisy_linear_impute(ramp, removed, noise=0.0)
    np.testing.assert_allclose(filled, ramp, atol=1e-4)
    noisy = M.noisy_linear_impute(ramp, removed, noise=0.01, rng=np.random.default_rng(0))
    diff = (noisy - ramp)[removed]
    assert 1.0 < diff.std() < 4.5  # about 0.01 × 255
    np.testing.assert_array_equal(noisy[~removed], ramp[~removed].astype(np.float32))


def test_average_drop_and_increase_in_confidence():
    score = _linear_model(np.ones((4, 4)))
    images = np.full((2, 4, 4, 3), 200.0, np.float32)
    maps = np.zeros((2, 4, 4))
    maps[0] = 1.0  # constant: scaled to zeros → the image goes black
    maps[1, :2] = 1.0  # top half kept
    drop, inc = M.drop_and_increase(score, images, maps, [1, 1])
    np.testing.assert_allclose(drop, [1.0, 0.5])
    assert inc.tolist() == [False, False]


def test_randomisation_reinitialises_layers_and_the_cascade_reaches_the_bottom(tiny_classifier):
    model = tiny_classifier(num_classes=3, image_size=32, options={"width": 8})
    names = M.weighted_layers(model)
    assert names[0] == "predictions"
    bn = next(n for n in names if n.endswith("_bn"))
    conv = next(n for n in names if not n.endswith("_bn") and n != "predictions")
    rng = np.random.default_rng(0)
    for n in names:  # pretend training moved every weight
        layer = model.get_layer(n)
        layer.set_weights(
            [w + rng.normal(0.5, 0.1, w.shape).astype(w.dtype) for w in layer.get_weights()]
        )
    before = {n: [w.copy() for w in model.get_layer(n).get_weights()] for n in names}
    cut = names.index(conv) + 1
    M.randomize_layers(model, names[:cut], seed=3)
    kernel, bias = model.get_layer("predictions").get_weights()
    fan_in, fan_out = kernel.shape
    limit = np.sqrt(6 / (fan_in + fan_out))  # glorot_uniform, the Dense default
    assert np.abs(kernel).max() <= limit and kernel.std() > limit / 3
    np.testing.assert_array_equal(bias, 0)
    if names.index(bn) < cut:
        gamma, beta, mean, var = model.get_layer(bn).get_weights()
        for got, want in ((gamma, 1), (beta, 0), (mean, 0), (var, 1)):
            np.testing.assert_array_equal(got, want)
    assert not np.allclose(model.get_layer(conv).get_weights()[0], before[conv][0])
    for n in names[cut:]:  # below the cut: untouched
        for a, b in zip(before[n], model.get_layer(n).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    points = M.cascade_points(names, 6)
    assert points[0] == 1 and points[-1] == len(names) and points == sorted(set(points))
    assert M.spearman(np.arange(10), np.arange(10) ** 2) == pytest.approx(1.0)
    assert M.spearman(np.arange(10), -np.arange(10)) == pytest.approx(-1.0)


def test_box_to_input_follows_the_resize_mode():
    box = (100, 50, 300, 150)  # in a 200×400 (h×w) image
    assert M.box_to_input(box, (200, 400), (100, 100), "stretch") == (25, 25, 75, 75)
    # pad: scale 0.25, image 50 high centred → offset 25 in y
    assert M.box_to_input(box, (200, 400), (100, 100), "pad") == (25, 37.5, 75, 62.5)
    # crop: scale 0.5, width 200 cut to 100 → offset -50 in x
    assert M.box_to_input(box, (200, 400), (100, 100), "crop") == (0, 25, 100, 75)


def test_evaluate_cams_command_writes_table_figures_and_report_section(tiny_run, tmp_path):
    r = run_cli(
        "evaluate-cams",
        str(tiny_run),
        "-m",
        "gradcam,saliency",
        "--n",
        "8",
        "--sanity-images",
        "3",
        "--json",
    )
    assert r.exit_code == 0, (r.output, r.exception)
    result = json.loads(r.stdout)
    assert [row["method"] for row in result["table"]] == ["gradcam", "saliency", "random", "center"]
    out = tiny_run / "evaluate_cams"
    table = pd.read_csv(out / "metrics.csv", index_col="method")
    for row in result["table"]:
        for col in ("deletion_auc", "insertion_auc", "road_morf", "pointing_game"):
            assert table.loc[row["method"], col] == pytest.approx(row[col], abs=1e-4)
    # shapes runs carry boxes: the pointing games are there; the centre map's energy share
    # is a fraction, the random map's about the boxes' mean area share.
    assert 0 <= table.loc["center", "energy_pointing"] <= 1
    md = (out / "metrics.md").read_text()
    assert md.count("\n| ") == 5 and "deletion_auc ↓" in md
    assert (out / "deletion_insertion.png").stat().st_size > 5000
    sanity = pd.read_csv(out / "sanity.csv")
    assert sanity["randomised_layers"].iloc[0] == 1 and sanity["down_to"].iloc[0] == "predictions"
    assert set(sanity.columns) >= {"gradcam", "saliency"}
    html = (tiny_run / "report" / "index.html").read_text()
    assert "Heatmap metrics" in html and "../evaluate_cams/deletion_insertion.png" in html

    bad = run_cli("evaluate-cams", str(tiny_run), "-m", "gradcm")
    assert bad.exit_code == 2 and "Did you mean 'gradcam'" in bad.output
    bad = run_cli("evaluate-cams", str(tiny_run), "--boxes", str(tmp_path / "no.csv"))
    assert bad.exit_code == 2 and "Boxes file not found" in bad.output
