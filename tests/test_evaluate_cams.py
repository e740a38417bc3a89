"""``evaluate_cams`` called as a library (:mod:`tfcam.explain.evaluate_cams`): the table, its
files, its numbers against an independent computation, and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from tfcam.errors import UserError
from tfcam.explain.evaluate_cams import COLUMNS, evaluate_cams


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate_cams")
    report = (tiny_run / "report" / "index.html").read_text()
    result = evaluate_cams(
        tiny_run, ["gradcam", "saliency"], n=8, road=False, sanity_images=0, out_dir=out
    )
    # Written elsewhere than RUN/evaluate_cams, so the run and its report are left alone.
    assert not (tiny_run / "evaluate_cams").exists()
    assert (tiny_run / "report" / "index.html").read_text() == report
    return result, out


def _picked_val_images(tiny_run):
    """The 8 validation images evaluate_cams promises: spread evenly over the split."""
    from tfcam.data.pipeline import read_images

    names = json.loads((tiny_run / "class_names.json").read_text())
    val = pd.read_csv(tiny_run / "splits.csv").query("split == 'val'")
    idx = np.linspace(0, len(val) - 1, 8).round().astype(int)
    files = val["path"].iloc[idx].tolist()
    labels = np.array([names.index(c) for c in val["label"].iloc[idx]])
    return read_images(files, 32), labels


def test_rows_are_the_methods_then_the_references(evaluated):
    result, _out = evaluated
    assert [row["method"] for row in result["table"]] == ["gradcam", "saliency", "random", "center"]
    assert result["methods"] == ["gradcam", "saliency"] and result["n"] == 8
    assert result["layer"] == "block4_relu" and result["split"] == "val"
    for row in result["table"]:
        assert row["images"] == 8
        # shapes runs have boxes, so the pointing games are there; ROAD and sanity were skipped.
        assert {"pointing_game", "deletion_auc", "insertion_auc", "average_drop_pct"} <= set(row)
        assert not {"road_morf", "road_gap", "sanity_mean_spearman"} & set(row)
        assert 0 <= row["pointing_game"] <= 1 and 0 <= row["deletion_auc"] <= 1
    assert list(result["columns"]) == [c for c in COLUMNS if c in result["table"][0]]
    assert result["sanity"] is None


def test_files_agree_with_the_returned_table(evaluated):
    result, out = evaluated
    assert result["files"]["csv"] == str(out / "metrics.csv")
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))
    csv = pd.read_csv(out / "metrics.csv", index_col="method")
    assert list(csv.index) == [row["method"] for row in result["table"]]
    md = (out / "metrics.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[0] == "method" and header[1:] == [
        f"{c} {'↑' if d == 'higher' else '↓'}" for c, d in result["columns"].items()
    ]
    for row, line in zip(result["table"], lines[1:], strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["method"]
        for col, cell in zip(result["columns"], cells[1:], strict=True):
            assert csv.loc[row["method"], col] == pytest.approx(row[col], abs=5e-5)
            digits = 1 if col.endswith("pct") or col == "seconds" else 3
            assert cell == f"{row[col]:.{digits}f}", (row["method"], col)
    assert (out / "deletion_insertion.png").stat().st_size > 1000


def test_numbers_match_an_independent_computation(tiny_run, evaluated):
    import keras

    from tfcam.explain import metrics as M
    from tfcam.explain.api import explain
    from tfcam.explain.engine import Explainer

    result, _out = evaluated
    rows = {row["method"]: row for row in result["table"]}
    images, labels = _picked_val_images(tiny_run)
    model = keras.saving.load_model(tiny_run / "model.keras")
    probs = model.predict(images, verbose=0)
    assert result["accuracy_on_these_images"] == pytest.approx((probs.argmax(1) == labels).mean())

    def score(x):
        return model.predict(x, verbose=0)

    with warnings.catch_warnings():  # some maps of this barely trained model may be flat
        warnings.simplefilter("ignore")
        cam = explain(Explainer(model), images, "gradcam", targets=labels).heatmap
    # The "center" reference: a Gaussian on the image centre, sigma a quarter of the side.
    r = (np.arange(32) + 0.5 - 16) / 8
    center = np.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2))
    maps = {"gradcam": cam, "center": np.repeat(center[None], 8, axis=0)}
    for method, m in maps.items():
        dele = M.deletion_insertion(score, images, m, labels, mode="deletion")
        assert rows[method]["deletion_auc"] == pytest.approx(dele.auc.mean(), abs=1e-4), method
        drop, _inc = M.drop_and_increase(score, images, m, labels)
        assert rows[method]["average_drop_pct"] == pytest.approx(100 * drop.mean(), abs=1e-3)


def test_bad_method_or_split_is_a_user_error(tiny_run, tmp_path):
    with pytest.raises(UserError) as info:
        evaluate_cams(tiny_run, ["gradcam,gradcm"], n=2, road=False, out_dir=tmp_path / "o")
    message = str(info.value)
    assert message.startswith("Unknown method 'gradcm'. Did you mean 'gradcam'")
    assert "Choose from: gradcam, gradcam++" in message and "integrated_gradients" in message
    with pytest.raises(UserError, match="Give at least one method"):
        evaluate_cams(tiny_run, [" , "], out_dir=tmp_path / "o")
    with pytest.raises(UserError, match="has no 'train2' split. Splits it has: train, val, test"):
        evaluate_cams(tiny_run, ["gradcam"], split="train2", out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing written before the checks
