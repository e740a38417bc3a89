"""Decoding real-world files, resizing, batching, and the pre-flight scan."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import write_image
from PIL import Image

from tfcam.data import pipeline as P
from tfcam.errors import UserError


def decode(path, size=32):
    img, hw = P.decode_image(tf.io.read_file(str(path)), size)
    return img.numpy(), tuple(hw.numpy())


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_png_and_bmp_are_exact(tmp_path, rgb):
    for name in ("x.png", "x.bmp"):
        img, hw = decode(write_image(tmp_path / name, rgb))
        assert hw == (20, 30)
        np.testing.assert_array_equal(img, rgb)


def test_jpeg_matches_pillow(tmp_path, rgb):
    p = write_image(tmp_path / "x.jpg", rgb, quality=95)
    img, _ = decode(p)
    ref = np.asarray(Image.open(p).convert("RGB")).astype(int)
    assert np.abs(img.astype(int) - ref).mean() < 2.0


def test_greyscale_becomes_three_equal_channels(tmp_path, rgb):
    grey = rgb[..., 0]
    img, _ = decode(write_image(tmp_path / "g.png", grey))
    np.testing.assert_array_equal(img, np.repeat(grey[..., None], 3, axis=2))
    img, _ = decode(write_image(tmp_path / "g.jpg", grey, quality=95))
    assert np.all(img[..., 0] == img[..., 1]) and np.all(img[..., 1] == img[..., 2])


def test_cmyk_jpeg_decodes_to_rgb(tmp_path, rgb):
    p = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(p, quality=95)
    img, _ = decode(p)
    ref = np.asarray(Image.open(p).convert("RGB")).astype(int)
    assert np.abs(img.astype(int) - ref).mean() < 3.0


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path):
    a16 = (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 109 % 65536).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(a16).save(p)
    assert Image.open(p).mode.startswith("I;16")
    img, _ = decode(p)
    np.testing.assert_allclose(img[..., 0], np.round(a16 / 257.0), atol=1)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red under everything
    rgba[:2, :, 3] = 255  # top half opaque
    rgba[2:, :, 3] = 0  # bottom half transparent
    img, _ = decode(write_image(tmp_path / "a.png", rgba))
    np.testing.assert_array_equal(img[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(img[3, 3], [255, 255, 255])


def test_gif_gives_its_first_frame(tmp_path):
    frames = [np.full((10, 12, 3), v, np.uint8) for v in (10, 120, 240)]
    p = tmp_path / "anim.gif"
    Image.fromarray(frames[0]).save(
        p, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]]
    )
    img, hw = decode(p)
    assert hw == (10, 12)
    assert abs(int(img.mean()) - 10) <= 2


def test_big_jpeg_is_decoded_at_reduced_scale(tmp_path):
    # 4000×3000: decoded at 1/8 for a 224 target (375 ≥ 224), at 1/4 for a 500 target.
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:, ::8] = 255
    p = write_image(tmp_path / "big.jpg", big, quality=70)
    img, hw = decode(p, 224)
    assert hw == (3000, 4000)
    assert img.shape == (375, 500, 3)
    img, _ = decode(p, 500)
    assert img.shape == (750, 1000, 3)
    # Never below the target: a 300 px image is decoded at full size for 224.
    small = write_image(tmp_path / "s.jpg", big[:300, :400], quality=70)
    assert decode(small, 224)[0].shape == (300, 400, 3)


@pytest.mark.parametrize(("mode", "expect"), [("stretch", None), ("pad", "pad"), ("crop", "crop")])
def test_resize_modes(mode, expect):
    # A 20×40 image: left half black, right half white.
    img = np.zeros((20, 40, 3), np.float32)
    img[:, 20:] = 255
    out = P.resize_image(tf.constant(img), 20, mode).numpy()
    assert out.shape == (20, 20, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    if mode == "stretch":  # both halves kept, squeezed
        assert out[:, :8].max() < 1 and out[:, 12:].min() > 254
    elif mode == "pad":  # 10 rows of image, 5 black rows above and below
        assert out[:5].max() < 1e-3 and out[15:].max() < 1e-3
        assert out[6:14, 12:].min() > 254
    else:  # the centre 20 columns: 10 black then 10 white
        assert out[:, :9].max() < 1 and out[:, 11:].min() > 254


def test_scan_skips_exactly_the_broken_files(tmp_path, rgb):
    good = [
        write_image(tmp_path / "ok.jpg", rgb),
        write_image(tmp_path / "ok.png", rgb),
        write_image(tmp_path / "one.png", rgb[:1, :1]),
    ]
    broken = {
        tmp_path / "empty.jpg": "empty file",
        tmp_path / "text.jpg": "not an image",
        tmp_path / "trunc.jpg": "corrupt or truncated",
        tmp_path / "x.tif": "unsupported image format TIFF",
    }
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is a text file, not a JPEG")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    Image.fromarray(rgb).save(tmp_path / "x.tif")
    result = P.scan_files([str(p) for p in [*good, *broken]], image_size=32)
    assert set(result.bad) == {str(p) for p in broken}
    for p, words in broken.items():
        assert words in result.bad[str(p)]
        assert "{{" not in result.bad[str(p)]
    assert set(result.sizes) == {str(p) for p in good}
    assert result.sizes[str(tmp_path / "one.png")] == (1, 1)
    assert "very small (1×1 px)" in result.suspicious[str(tmp_path / "one.png")]
    assert str(tmp_path / "ok.png") not in result.suspicious


def test_dataset_batches_targets_and_order(tmp_path):
    files, labels = [], []
    for i in range(5):
        files.append(str(write_image(tmp_path / f"{i}.png", np.full((8, 8, 3), i * 50, np.uint8))))
        labels.append(i % 2)
    ds = P.make_dataset(
        files=files, labels=labels, num_classes=2, mode="eval", image_size=4, batch_size=2
    )
    batches = list(ds.as_numpy_iterator())
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), [0, 50, 100, 150, 200], atol=1e-3)
    np.testing.assert_array_equal(y, np.eye(2)[labels])
    # Training mode: shuffled names, every file once per epoch; binary targets are [N, 1].
    ds = P.make_dataset(
        files=files,
        labels=labels,
        num_classes=2,
        mode="train",
        image_size=4,
        batch_size=5,
        binary=True,
        seed=3,
    )
    x, y = next(iter(ds.as_numpy_iterator()))
    assert y.shape == (5, 1)
    assert sorted(np.round(x.mean(axis=(1, 2, 3))).tolist()) == [0, 50, 100, 150, 200]
    for xi, yi in zip(x.mean(axis=(1, 2, 3)), y[:, 0], strict=True):
        assert yi == (round(xi / 50) % 2)


def test_cached_training_dataset_reshuffles(tmp_path):
    files = [
        str(write_image(tmp_path / f"{i}.png", np.full((4, 4, 3), i * 10, np.uint8)))
        for i in range(12)
    ]
    ds = P.make_dataset(
        files=files,
        labels=[0] * 12,
        num_classes=2,
        mode="train",
        image_size=4,
        batch_size=12,
        cache=True,
        seed=0,
    )
    orders = [tuple(np.round(next(iter(ds))[0].numpy().mean(axis=(1, 2, 3)))) for _ in range(3)]
    assert all(sorted(o) == [i * 10 for i in range(12)] for o in orders)
    assert len(set(orders)) > 1


def test_augment_flips_with_probability_one():
    img = tf.constant(np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3))
    out = P.augment_image(img, {"hflip": 1.0, "vflip": 1.0}).numpy()
    np.testing.assert_array_equal(out, img.numpy()[::-1, ::-1])
    np.testing.assert_array_equal(P.augment_image(img, {"hflip": 0.0}).numpy(), img.numpy())


def test_read_images_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="Image not found: '.*nope.png'"):
        P.read_images([str(tmp_path / "nope.png")], 8)
    (tmp_path / "t.jpg").write_text("text")
    with pytest.raises(UserError, match=r"Cannot use image '.*t.jpg': not an image"):
        P.read_images([str(tmp_path / "t.jpg")], 8)
