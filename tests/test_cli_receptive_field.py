"""`tfcam receptive-field`: the JSON contract, tables, bad input, patch overlays checked pixel by pixel."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_image

from tfcam.cli import cli
from tfcam.viz.patches import BOX_COLOURS, draw_boxes, scaled_box


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_vgg16_block5_pool_json_is_exactly_the_published_field():
    r = run("receptive-field", "--backbone", "vgg16", "--layer", "block5_pool", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == {
        "layer": "block5_pool",
        "size": [212, 212],
        "stride": [32, 32],
        "padding": [90, 90],
    }


def test_table_and_json_list_without_layer():
    r = run("receptive-field", "--backbone", "simple_cnn", "--input-size", "32", "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert isinstance(rows, list) and {"layer", "size", "stride", "padding"} <= set(rows[0])
    by_name = {row["layer"]: row for row in rows}
    assert by_name["block1_conv1"]["size"] == [3, 3]
    assert by_name["predictions"]["kind"] == "global"
    r = run("receptive-field", "--backbone", "simple_cnn", "--input-size", "32")
    assert r.exit_code == 0
    header, *lines = r.output.strip().splitlines()
    assert header.split()[:3] == ["layer", "type", "out"]
    assert any(line.split()[0] == "block4_relu" for line in lines)


@pytest.mark.parametrize(
    ("args", "pieces"),
    [
        (
            ["--backbone", "vgg16", "--layer", "block5_pol"],
            ["Unknown layer 'block5_pol'", "block5_pool", "block4_pool"],
        ),
        (["--backbone", "vgg61"], ["Unknown backbone 'vgg61'", "vgg16"]),
        (["--backbone", "vgg16", "--model", "x.keras"], ["exactly one of", "--backbone, --model"]),
        ([], ["exactly one of RUN_DIR, --backbone NAME or --model"]),
        (["--model", "nope.keras"], ["Model file not found: 'nope.keras'"]),
        (["--backbone", "vgg16", "--input-size", "16"], ["at least 32 px"]),
        (
            [
                "--backbone",
                "simple_cnn",
                "--input-size",
                "32",
                "--image",
                "nope.png",
                "--layer",
                "block1_relu",
            ],
            ["Input not found"],
        ),
        (
            ["--backbone", "simple_cnn", "--input-size", "32", "--image", "x.png"],
            ["--image needs --layer"],
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(args, pieces):
    r = run("receptive-field", *args)
    assert r.exit_code == 2, r.output
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("tfcam: error: ") and "Traceback" not in r.stderr
    for piece in pieces:
        assert piece in line


def test_draw_boxes_puts_each_edge_where_the_box_says():
    img = np.zeros((10, 12, 3), np.uint8)
    boxes = [(2, 3, 6, 9), (0, 0, 9, 11)]
    out = draw_boxes(img, boxes, scale=3)
    assert out.shape == (30, 36, 3)
    for rank, box in enumerate(boxes):
        t, left, b, r = scaled_box(box, 3)
        colour = BOX_COLOURS[rank]
        for y in (t, b):
            assert (out[y, left : r + 1] == colour).all()
        for x in (left, r):
            assert (out[t : b + 1, x] == colour).all()
    assert (out[9, 12] == 0).all()  # inside the first box: untouched


def test_patch_overlays_match_the_calculator(tiny_run, tmp_path):
    """One image: the drawn rectangles are the fields the calculator gives for the chosen units."""
    import keras

    from tfcam.explain.receptive_field import layer_activations, receptive_fields, top_units

    rng = np.random.default_rng(1)
    photo = tmp_path / "photo.png"
    write_image(photo, rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    out = tmp_path / "rf"
    r = run(
        "receptive-field",
        tiny_run,
        "--layer",
        "block3_relu",
        "--image",
        photo,
        "--top",
        "4",
        "--out",
        out,
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["layer"] == "block3_relu" and len(rec["patches"]) == 4
    boxes_png = out / "photo_block3_relu_boxes.png"
    assert str(boxes_png) in rec["files"] and (out / "photo_block3_relu_patches.png").is_file()

    # Independent: the calculator's field for the units the activations rank highest.
    model = keras.saving.load_model(tiny_run / "model.keras")
    field = receptive_fields(model)["block3_relu"]
    from tfcam.data.pipeline import read_images

    image = read_images([str(photo)], field.input_shape)
    acts = layer_activations(model, "block3_relu", image)[0]
    want = top_units(acts, field, 4)
    assert [p["box"] for p in rec["patches"]] == [list(p.box) for p in want]
    for p in want:
        y, x = p.unit
        t, left = -field.padding[0] + y * field.stride[0], -field.padding[1] + x * field.stride[1]
        assert p.box == (
            max(t, 0),
            max(left, 0),
            min(t + field.size[0] - 1, 31),
            min(left + field.size[1] - 1, 31),
        )

    # The PNG: each rectangle's edges carry its rank's colour, at the display scale.
    drawn = cv2.cvtColor(cv2.imread(str(boxes_png)), cv2.COLOR_BGR2RGB)
    scale = drawn.shape[0] // 32
    assert scale == 8 and drawn.shape == (256, 256, 3)
    for rank, p in enumerate(want):
        t, left, b, r_ = scaled_box(p.box, scale)
        colour = np.array(BOX_COLOURS[rank])
        # The strongest box is drawn last: check its whole outline; weaker ones at their corners
        # (a stronger box may cross their edges).
        if rank == 0:
            for y in (t, b):
                assert (drawn[y, left : r_ + 1] == colour).all()
            for x in (left, r_):
                assert (drawn[t : b + 1, x] == colour).all()
        covered = any(
            scaled_box(q.box, scale)[0] <= t <= scaled_box(q.box, scale)[2] for q in want[:rank]
        )
        if not covered:
            assert (drawn[t, left] == colour).all()


def test_folder_patches_and_verify_and_plot(tiny_run, tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "imgs"
    for i in range(5):
        write_image(folder / f"im{i}.png", rng.integers(0, 255, (36, 36, 3), dtype=np.uint8))
    out = tmp_path / "rf"
    r = run(
        "receptive-field",
        tiny_run,
        "--layer",
        "block2_relu",
        "--image",
        folder,
        "--top",
        "3",
        "--channel",
        "1",
        "--out",
        out,
        "--verify",
        "--plot",
        tmp_path / "erf.png",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["verify"]["ok"] is True
    assert rec["verify"]["support_box"] == rec["verify"]["analytic_box"]
    assert len(rec["patches"]) == 3 and all(p["channel"] == 1 for p in rec["patches"])
    values = [p["value"] for p in rec["patches"]]
    assert values == sorted(values, reverse=True)
    assert len({p["image"] for p in rec["patches"]}) == 3  # one patch per image
    grid = out / "block2_relu_channel1_top3.png"
    assert grid.is_file() and cv2.imread(str(grid)) is not None
    side = json.loads((out / "block2_relu_channel1_top3.json").read_text())
    assert side["patches"] == rec["patches"]
    erf = rec["effective"]
    assert erf["theoretical_size"] == rec["size"] and 0 <= erf["erf_radius95"] <= rec["size"][0] / 2
    assert Path(tmp_path / "erf.png").stat().st_size > 1000

    r = run(
        "receptive-field",
        tiny_run,
        "--layer",
        "block2_relu",
        "--image",
        folder,
        "--channel",
        "999",
        "--out",
        out,
    )
    assert r.exit_code == 2 and "Channel 999 is out of range" in r.stderr
