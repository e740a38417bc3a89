"""Augmentations: each one's geometry or colour change checked against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli

from tfcam.data import augment as A
from tfcam.errors import UserError


def rand_img(h=24, w=24, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype("float32")


def test_flips():
    img = rand_img(10, 14)
    np.testing.assert_array_equal(A.hflip(tf.constant(img)).numpy(), img[:, ::-1])
    np.testing.assert_array_equal(A.vflip(tf.constant(img)).numpy(), img[::-1])


def test_affine_identity_shift_scale_and_rotation_direction():
    img = rand_img(16, 16)
    t = tf.constant(img)
    np.testing.assert_allclose(A.affine(t, 0.0, 0.0, 1.0, 0.0).numpy(), img, atol=1e-3)
    # A shift of a quarter of the width moves the content 4 px right.
    out = A.affine(t, 0.25, 0.0, 1.0, 0.0).numpy()
    np.testing.assert_allclose(out[:, 4:], img[:, :-4], atol=1e-3)
    # 90 degrees is a counter-clockwise quarter turn, as tf.image.rot90 (and OpenCV).
    out = A.affine(t, 0.0, 0.0, 1.0, 90.0).numpy()
    np.testing.assert_allclose(out, np.rot90(img, 1, axes=(0, 1)), atol=1e-2)
    # Scale 2 about the centre: the pixel 2 px right of the centre shows the one 1 px right.
    img = np.tile(np.arange(17, dtype="float32")[None, :, None], (17, 1, 3))
    out = A.affine(tf.constant(img), 0.0, 0.0, 2.0, 0.0).numpy()
    assert out[8, 10, 0] == pytest.approx(9.0, abs=1e-3)


def test_shift_scale_rotate_keeps_shape_and_range():
    img = tf.constant(rand_img(20, 30))
    out = A.shift_scale_rotate(img).numpy()
    assert out.shape == (20, 30, 3) and out.min() >= -1e-3 and out.max() <= 255 + 1e-3


def test_pad_crop_is_a_window_of_the_reflect_padded_image():
    img = rand_img(16, 16)
    out = A.pad_crop(tf.constant(img)).numpy()
    padded = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode="reflect")
    found = [
        (y, x)
        for y in range(5)
        for x in range(5)
        if np.array_equal(padded[y : y + 16, x : x + 16], out)
    ]
    assert found


def test_coarse_dropout_zeroes_small_rectangles_only():
    img = rand_img(32, 32) + 1.0  # no zero pixels before
    tf.random.set_seed(3)
    for _ in range(5):
        out = A.coarse_dropout(tf.constant(img)).numpy()
        zero = (out == 0).all(axis=-1)
        changed = ~np.isclose(out, img).all(axis=-1)
        assert (zero == changed).all()  # pixels are either kept or zeroed
        assert zero.any() and zero.sum() <= 8 * 4 * 4  # ≤ 8 holes of ≤ 4×4 (32/8)
        from scipy import ndimage

        labels, n = ndimage.label(zero)
        for i in range(1, n + 1):
            ys, xs = np.nonzero(labels == i)
            assert ys.max() - ys.min() < 8 and xs.max() - xs.min() < 8  # union of ≤ 2 holes wide


def test_brightness_contrast_is_an_affine_map_within_limits():
    img = np.random.default_rng(1).uniform(60, 190, (12, 12, 3)).astype("float32")
    out = A.brightness_contrast(tf.constant(img)).numpy()
    inside = (out > 0) & (out < 255)
    alpha, beta = np.polyfit(img[inside], out[inside], 1)
    assert 0.8 - 1e-4 <= alpha <= 1.2 + 1e-4 and abs(beta) <= 0.2 * 255 + 1e-2
    np.testing.assert_allclose(out[inside], alpha * img[inside] + beta, atol=1e-2)


def test_hue_saturation_value_limits():
    img = np.random.default_rng(2).uniform(40, 220, (10, 10, 3)).astype("float32")
    out = A.hue_saturation_value(tf.constant(img)).numpy()
    h0 = tf.image.rgb_to_hsv(img / 255).numpy()
    h1 = tf.image.rgb_to_hsv(out / 255).numpy()
    dv = h1[..., 2] - h0[..., 2]
    assert np.ptp(dv) < 1e-3 and abs(dv.mean()) <= 20 / 255 + 1e-3  # one shift for all pixels
    grey = np.full((4, 4, 3), 120.0, "float32")  # no saturation: only the value can move it
    g = A.hue_saturation_value(tf.constant(grey)).numpy()
    assert np.ptp(g, axis=-1).max() <= 30 / 255 * 255 + 1  # stays nearly grey


def test_grid_distortion_is_a_monotonic_warp_fixing_the_borders():
    ramp = np.tile(np.arange(40, dtype="float32")[None, :, None], (30, 1, 3))
    out = A.grid_distortion(tf.constant(ramp)).numpy()
    assert out.shape == ramp.shape
    assert (np.diff(out[..., 0], axis=1) >= -1e-4).all()  # order along x is kept
    np.testing.assert_allclose(out[:, 0, 0], 0, atol=1e-4)
    np.testing.assert_allclose(out[:, -1, 0], 39, atol=1e-3)
    assert not np.allclose(out, ramp)  # and something moved


def test_rotate90_turns_by_a_quarter_multiple():
    img = rand_img(12, 12)
    out = A.rotate90(tf.constant(img)).numpy()
    assert any(np.array_equal(out, np.rot90(img, k, axes=(0, 1))) for k in (1, 2, 3))


def test_apply_probabilities_and_errors():
    img = tf.constant(rand_img(8, 8))
    np.testing.assert_array_equal(A.apply(img, {"hflip": 0.0}).numpy(), img.numpy())
    np.testing.assert_array_equal(A.apply(img, {"hflip": 1.0}).numpy(), img.numpy()[:, ::-1])
    with pytest.raises(UserError, match="Unknown augmentation 'hflp'"):
        A.apply(img, {"hflp": 0.5})
    with pytest.raises(UserError, match="rotate90 needs square"):
        A.apply(tf.constant(rand_img(8, 10)), {"rotate90": 0.5})


def test_every_augmentation_runs_inside_tf_data(tmp_path):
    from conftest import write_image

    from tfcam.config import AUGMENTATIONS
    from tfcam.data.pipeline import make_dataset

    # One home for the names (config, TensorFlow-free); the pipeline's table follows it in order.
    assert tuple(A.AUGMENTATIONS) == AUGMENTATIONS
    files = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        write_image(p, np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8))
        files.append(str(p))
    ds = make_dataset(
        files=files,
        labels=[0, 1, 0, 1],
        mode="train",
        image_size=32,
        batch_size=4,
        num_classes=2,
        augment={name: 1.0 for name in AUGMENTATIONS},
        seed=0,
    )
    x, _ = next(iter(ds))
    assert x.shape == (4, 32, 32, 3) and float(tf.reduce_min(x)) >= -1e-3
    assert float(tf.reduce_max(x)) <= 255 + 1e-3


def test_augment_preview_command(tmp_path):
    import cv2

    out = tmp_path / "grid.png"
    r = run_cli(
        "augment-preview",
        "--experiment",
        "shapes_tiny",
        "--images",
        "2",
        "--variants",
        "3",
        "--set",
        "data.augment.pad_crop=1",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.stderr
    img = cv2.imread(str(out))
    assert img is not None and img.shape[1] > img.shape[0]  # 4 columns, 2 rows
    from tfcam.config import load_experiment
    from tfcam.data.preview import augmented_samples

    cfg = load_experiment("shapes_tiny", ["data.augment.pad_crop=1"])
    names, images, variants = augmented_samples(cfg, 2, 3)
    assert len(names) == 2 and variants.shape == (2, 3, *images.shape[1:])
    assert not np.allclose(variants[0, 0], images[0])  # pad_crop at p=1 moved something
    r = run_cli("augment-preview", "--experiment", "shapes_tiny", "--set", "data.augment.warp=1")
    assert r.exit_code == 2 and "Unknown augmentation 'warp'" in r.stderr
