"""The synthetic shapes dataset: deterministic, the right layout, boxes that hold the target."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from tfcam.data import shapes

CLASSES = ["circle", "square", "triangle", "star", "cross"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "ds"
    shapes.generate(
        root,
        classes=CLASSES,
        per_split={"train": 6, "val": 3},
        resolution=48,
        max_distractors=2,
        seed=3,
    )
    return root


def test_layout_and_counts(small):
    for split, n in (("train", 6), ("val", 3)):
        for c in CLASSES:
            files = sorted((small / split / c).glob("*.png"))
            assert len(files) == n
            img = cv2.imread(str(files[0]))
            assert img.shape == (48, 48, 3)
    with open(small / "boxes.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 * len(CLASSES)
    assert {r["label"] for r in rows} == set(CLASSES)


def test_generation_is_deterministic(small, tmp_path):
    again = tmp_path / "again"
    shapes.generate(
        again,
        classes=CLASSES,
        per_split={"train": 6, "val": 3},
        resolution=48,
        max_distractors=2,
        seed=3,
    )
    for p in sorted(small.rglob("*.png"))[:10]:
        assert p.read_bytes() == (again / p.relative_to(small)).read_bytes()
    assert (small / "boxes.csv").read_text() == (again / "boxes.csv").read_text()
    other = tmp_path / "other"
    shapes.generate(
        other,
        classes=CLASSES,
        per_split={"train": 1, "val": 1},
        resolution=48,
        max_distractors=2,
        seed=4,
    )
    first = sorted(small.rglob("train_circle_00000.png"))[0]
    assert first.read_bytes() != (other / first.relative_to(small)).read_bytes()


@pytest.mark.parametrize("kind", shapes.SHAPE_CLASSES)
def test_box_is_the_tight_box_of_the_target(kind):
    # Render the target alone on a flat background (no distractors) and find it independently:
    # the pixels that differ from the background colour.
    size = 64
    rng = np.random.default_rng(11)
    img, box = shapes.render_image(rng, kind, [], size, max_distractors=0)
    x0, y0, x1, y1 = box
    assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
    extent = max(x1 - x0, y1 - y0)
    assert 0.25 * size <= extent <= 0.70 * size  # radii are drawn in [0.22, 0.34] × size

    # The shape's own colour: the median pixel at the box centre region vs outside the box.
    inside = img[y0:y1, x0:x1].reshape(-1, 3).astype(float)
    outside = np.concatenate(
        [
            img[:, :x0].reshape(-1, 3),
            img[:, x1:].reshape(-1, 3),
            img[:y0].reshape(-1, 3),
            img[y1:].reshape(-1, 3),
        ]
    ).astype(float)
    assert len(outside) > 0
    # A shape pixel is far from every background pixel colour statistic; the box must contain
    # every such pixel of the image.
    bg_mean = np.median(outside, axis=0)
    target_colour = inside[np.argmax(np.linalg.norm(inside - bg_mean, axis=1))]
    far = np.linalg.norm(img.astype(float) - target_colour, axis=2) < 30
    ys, xs = np.nonzero(far)
    assert xs.min() >= x0 - 1 and xs.max() <= x1 and ys.min() >= y0 - 1 and ys.max() <= y1


def test_target_is_larger_than_every_distractor():
    # Distractors are drawn at radii 0.09–0.14 × size, the target at 0.22–0.34 × size.
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, box = shapes.render_image(rng, "star", ["circle", "cross"], 64, max_distractors=2)
        assert min(box[2] - box[0], box[3] - box[1]) >= 0.2 * 64


def test_dataset_key_changes_with_settings():
    a = shapes.dataset_key(CLASSES, {"train": 1}, 64, 2, 0)
    assert a == shapes.dataset_key(CLASSES, {"train": 1}, 64, 2, 0)
    assert a != shapes.dataset_key(CLASSES, {"train": 1}, 64, 2, 1)
    assert a != shapes.dataset_key(CLASSES, {"train": 2}, 64, 2, 0)


def test_read_boxes_maps_absolute_paths(small):
    boxes = shapes.read_boxes(small)
    some = next(iter(boxes))
    assert some.startswith(str(small.resolve()))
    assert len(boxes) == 9 * len(CLASSES)
