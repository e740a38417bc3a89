"""Everything around the explanations works on a ViT: ``evaluate-cams``, the report's figures, the
TensorBoard Grad-CAM panel, the receptive-field table (global fields for attention blocks), and
``tfcam explain`` from the command line with attention methods."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("keras_hub")

from conftest import run_cli
from tiny_vit import tiny_vit


@pytest.fixture(scope="module")
def vit_run(tiny_run, tmp_path_factory):
    """The ``shapes_tiny`` run (32 px, 3 classes) with its model replaced by a tiny random ViT."""
    run = tmp_path_factory.mktemp("vit") / "run"
    shutil.copytree(tiny_run, run)
    tiny_vit().save(run / "model.keras")
    return run


def test_evaluate_cams_on_a_vit(vit_run, tmp_path):
    from tfcam.explain.evaluate_cams import evaluate_cams

    methods = ["gradcam", "scorecam", "attention_rollout", "gradient_attention", "saliency"]
    result = evaluate_cams(
        vit_run,
        methods,
        n=6,
        road=False,
        sanity_images=2,
        sanity_steps=2,
        out_dir=tmp_path,
        max_n=8,
    )
    rows = {r["method"]: r for r in result["table"]}
    assert set(methods) | {"random", "center"} <= set(rows)
    assert result["layer"] == "block_1"
    for m in methods:
        for key in ("energy_pointing", "pointing_game", "deletion_auc", "insertion_auc"):
            assert np.isfinite(rows[m][key]), (m, key)
        assert np.isfinite(rows[m]["sanity_mean_spearman"]), m
    assert "| attention_rollout |" in (tmp_path / "metrics.md").read_text()


def test_report_figures_on_a_vit(vit_run):
    from tfcam.explain.report_figures import build_report_figures, stage_layers
    from tfcam.models.build import load_model

    manifest = json.loads(build_report_figures(vit_run).read_text())
    assert manifest["cam_layer"] == "block_1"
    ids = [s["id"] for s in manifest["sections"]]
    assert ids[:4] == ["galleries", "class-cams", "layers", "features"]
    for section in manifest["sections"]:
        for fig in section["figures"]:
            if fig["file"]:
                assert (vit_run / "report" / fig["file"]).stat().st_size > 1000
    model = load_model(vit_run / "model.keras")
    assert stage_layers(model) == ["patch_embedding", "block_1"]


def test_tensorboard_cam_panel_on_a_vit(tmp_path):
    from tfcam.train.panels import TensorBoardPanels

    model = tiny_vit()
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    panels = TensorBoardPanels(
        tmp_path, images=images, image_labels=np.array([0, 1, 2, 0]), sample=images,
        labels=np.array([0, 1, 2, 0]), class_names=["circle", "square", "triangle"],
        config_text="model: vit", hparams={"backbone": "vit"},
    )  # fmt: skip
    panels.set_model(model)
    panel = panels.panel()
    assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[1] >= 4 * 200
    assert panel.std() > 5


@pytest.mark.parametrize("family", ["vit", "dinov2"])
def test_receptive_field_table_reports_global_fields_for_attention_blocks(family):
    from tfcam.explain.receptive_field import describe_table, receptive_fields

    model = tiny_vit(family=family, image_size=(32, 48))
    fields = receptive_fields(model, input_size=(32, 48))
    patch = fields["patch_embedding"]
    assert (patch.kind, patch.size, patch.stride, patch.shape) == ("local", (8, 8), (8, 8), (4, 6))
    for name in ("block_1", "block_2"):
        assert fields[name].kind == "global"
        assert (
            fields[name].reason
            == f"the block's self-attention mixes all tokens by content ('{name}')"
        )
    assert fields["predictions"].kind == "global"
    _, table, _ = describe_table(model, fields, verify=True)
    verified = dict(zip(table["layer"], table["verify"], strict=True))
    assert verified["patch_embedding"] == "ok"


def test_cli_receptive_field_of_a_vit_model_file(tmp_path):
    tiny_vit().save(tmp_path / "vit.keras")
    r = run_cli("receptive-field", "--model", tmp_path / "vit.keras", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["layer"]: row for row in json.loads(r.stdout)}
    assert rows["block_2"]["kind"] == "global" and "attention" in rows["block_2"]["reason"]


def test_cli_explains_a_vit_with_every_kind_of_method(vit_run, tmp_path):
    from tfcam.runs import Run

    image = Run(vit_run).splits_path.read_text().splitlines()[1].split(",")[1]
    out = tmp_path / "out"
    r = run_cli("explain", vit_run, image, "--method",
                "gradcam,rollout,chefer,guided_backprop", "--out", out, "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)[0]
    assert set(record["outputs"]) == {
        "gradcam",
        "attention_rollout",
        "gradient_attention",
        "guided_backprop",
    }
    r = run_cli("explain", vit_run, "--list-layers")
    assert r.exit_code == 0 and "block_1  (default)  (tokens as a 4×4 patch grid)" in r.stdout


def test_evaluate_cams_refuses_attention_methods_on_a_cnn_run_before_any_map(tiny_run, tmp_path):
    from tfcam.errors import UserError
    from tfcam.explain.evaluate_cams import evaluate_cams

    with pytest.raises(UserError, match="reads the attention of transformer blocks"):
        evaluate_cams(tiny_run, ["gradcam", "gradient_attention"], n=4, out_dir=tmp_path)
    assert not (tmp_path / "metrics.csv").exists()
