"""The uint8 transpose used to turn photos upright and to resize thin images width-first:
bit-exact for every byte value, and no oneDNN notice in a process that reads images."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, write_image

from tfcam.data.headers import transpose_pixels


def _every_byte_everywhere() -> np.ndarray:
    """256×256 pixels: each (R, G) pair once, B running the other way; every byte value in
    every channel position."""
    r, g = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    return np.stack([r, g, 255 - r], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("perm", [[1, 0, 2], [0, 1, 2]])
@pytest.mark.parametrize("compiled", [False, True])
def test_bit_exact_against_numpy(perm, compiled):
    x = _every_byte_everywhere()[:97, :131]
    fn = tf.function(transpose_pixels) if compiled else transpose_pixels
    out = fn(tf.constant(x), tf.constant(perm)).numpy()
    np.testing.assert_array_equal(out, np.transpose(x, perm))


def test_all_bytes_and_other_types():
    x = _every_byte_everywhere()
    np.testing.assert_array_equal(
        transpose_pixels(tf.constant(x), tf.constant([1, 0, 2])).numpy(), x.transpose(1, 0, 2)
    )
    grey = x[..., :1].copy()  # not RGB: an ordinary transpose
    np.testing.assert_array_equal(
        transpose_pixels(tf.constant(grey), tf.constant([1, 0, 2])).numpy(),
        grey.transpose(1, 0, 2),
    )
    f = x.astype(np.float32)
    np.testing.assert_array_equal(
        transpose_pixels(tf.constant(f), tf.constant([1, 0, 2])).numpy(), f.transpose(1, 0, 2)
    )


def test_reading_a_rotated_photo_prints_no_onednn_notice(tmp_path):
    """Before: the compiled loader's uint8 transposes (EXIF rotation, width-first resizing)
    printed "oneDNN supports DT_UINT8 only on platforms with AVX-512" on CPUs without AVX-512
    (where oneDNN does not print it, the test passes either way)."""
    from PIL import Image

    photo = write_image(tmp_path / "wide.png", _every_byte_everywhere()[:40, :200])
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(photo).save(tmp_path / "turned.jpg", exif=exif)
    code = (
        "from tfcam.data.pipeline import read_images\n"
        f"x = read_images([{str(photo)!r}, {str(tmp_path / 'turned.jpg')!r}], 32)\n"
        f"y = read_images([{str(photo)!r}], (4, 200))\n"
        "print(x.shape, y.shape)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(2, 32, 32, 3) (1, 4, 200, 3)"
    assert "only on platforms with AVX-512" not in done.stderr, done.stderr[-2000:]
