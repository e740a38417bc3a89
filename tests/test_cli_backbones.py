"""`tfcam backbones` and the registry's listings (issue 16): the table, JSON, the README's table,
names that are not registered; and a ConvNeXt and an EfficientNetV2 trained and explained from
the command line (acceptance 2)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import REPO, make_folder, run_cli

from tfcam.errors import UserError
from tfcam.models.registry import BACKBONES, get_backbone, markdown_table

README = REPO / "README.md"
START, END = "<!-- backbones:start -->", "<!-- backbones:end -->"


def test_backbones_lists_every_registered_backbone_in_a_table():
    r = run_cli("backbones")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "family", "source", "params"]
    assert [line.split()[0] for line in lines[1:]] == list(BACKBONES)
    row = next(line for line in lines if line.startswith("mobilenet_v3_large "))
    assert "MobileNetV3" in row and "keras.applications" in row
    assert "alpha=1.0, minimalistic=False" in row and "224 (32)" in row


def test_backbones_json_prints_only_json_with_forty_applications():
    r = run_cli("backbones", "--json")
    assert r.exit_code == 0, r.output
    items = json.loads(r.stdout)
    apps = [i for i in items if i["source"] == "keras.applications"]
    assert len(apps) >= 40
    by_name = {i["name"]: i for i in items}
    tiny = by_name["convnext_tiny"]
    assert tiny["family"] == "ConvNeXt" and tiny["parameters"] == 27_820_128
    assert tiny["explanation_layer"] == "convnext_tiny_layernorm" and tiny["preprocess"] == "torch"
    assert by_name["mobilenet_v2"]["options"] == {"alpha": 1.0}
    assert by_name["simple_cnn"]["source"] == "tfcam"
    assert all(i["parameters"] > 0 and i["last_stage"] for i in items)


@pytest.mark.parametrize(
    ("args", "piece"),
    [(["--bogus"], "No such option"), (["--json", "--markdown"], "not both")],
)
def test_backbones_bad_input_exits_2_with_one_line(args, piece):
    r = run_cli("backbones", *args)
    assert r.exit_code == 2, r.output
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("tfcam: error: ") and piece in line


def test_readme_backbone_table_is_the_generated_one():
    """The README's table is ``tfcam backbones --markdown`` between two markers (regenerate it
    with that command when a row changes)."""
    text = README.read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1
    table = text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    assert table == markdown_table()
    r = run_cli("backbones", "--markdown")
    assert r.exit_code == 0 and r.stdout == markdown_table()


def test_unknown_backbone_names_the_nearest_not_all():
    with pytest.raises(UserError) as info:
        get_backbone("convnext_tinny")
    message = str(info.value)
    assert message.startswith("Unknown backbone 'convnext_tinny'. Did you mean 'convnext_tiny'")
    assert "tfcam backbones" in message and "\n" not in message
    listed = message.split(" backbones: ")[1].split(" (")[0].split(", ")
    assert 1 <= len(listed) <= 8 and listed[0] == "convnext_tiny"
    assert len(message) < 300


# --------------------------------------------------------------------------------------------
# Acceptance 2: trained one epoch and explained from the command line


@pytest.mark.slow  # a few minutes: XLA compiles ConvNeXt's grouped convolutions on CPU
@pytest.mark.parametrize("backbone", ["convnext_tiny", "efficientnet_v2_b0"])
def test_fit_two_phases_and_explain_from_the_cli(backbone, tmp_path):
    data = make_folder(tmp_path / "data", per_class=4, size=32)
    run = tmp_path / "run"
    r = run_cli("fit", data, "--backbone", backbone, "--image-size", "32", "--epochs", "1",
                "--weights", "none", "--batch-size", "4", "--set", "train.fine_tune.epochs=1",
                "--run-dir", run, "--no-report")  # fmt: skip
    assert r.exit_code == 0, r.output
    with open(run / "history.csv", newline="") as f:
        assert [int(row["phase"]) for row in csv.DictReader(f)] == [1, 2]  # head, then last stage
    image = sorted((data / "a").iterdir())[0]
    out = tmp_path / "explained"
    r = run_cli("explain", run, image, "-m", "gradcam", "-m", "guided_backprop", "--out", out,
                "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    (record,) = json.loads(r.stdout)
    assert set(record["outputs"]) == {"gradcam", "guided_backprop"}
    for files in record["outputs"].values():
        assert all(Path(files[k]).is_file() for k in ("overlay", "heatmap", "panel"))
    config = (run / "config.yaml").read_text()
    assert re.search(rf"backbone: {backbone}\b", config)
