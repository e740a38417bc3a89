"""Images as a person sees them: read upright at a display size, and where the model's input
sits in them.

The model sees an image resized to its input (stretched, padded, cropped or letterboxed, see
:mod:`tfcam.data.resize`); a heatmap is computed on that input. To draw the heatmap over the photo
at the photo's own aspect, :func:`read_display_image` reads the file with the same decoder as
training and prediction (EXIF orientation applied, every PNG depth, big JPEGs reduced while
decoding) and :func:`input_window` says which part of the model's input shows which part of the
photo, for every resize mode.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfcam.data.pipeline import (
    _decode_error_reason,
    check_image_file,
    compiled_loader,
    decode_image,
)
from tfcam.data.resize import as_hw
from tfcam.errors import UserError


def display_hw(hw: Sequence[int], longer_side: int) -> tuple[int, int]:
    """``(height, width)`` of an image of size ``hw`` scaled so its longer side is
    ``longer_side`` (each side at least one pixel)."""
    h, w = int(hw[0]), int(hw[1])
    scale = longer_side / max(h, w, 1)
    return max(1, round(h * scale)), max(1, round(w * scale))


@functools.lru_cache(maxsize=4)
def _decoder(target: int):
    """The pipeline's decoder compiled for one target size (traced once, one call per file)."""

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def decode(path):
        return decode_image(tf.io.read_file(path), target)

    return decode


def read_display_image(
    path: str | os.PathLike, longer_side: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """The image file upright, resized so its longer side is ``longer_side``.

    Decoded by :func:`tfcam.data.pipeline.decode_image`, the decoder of training and prediction
    (EXIF orientation, every PNG bit depth, big JPEGs reduced while decoding), then resized with
    OpenCV (pixel-area averaging to shrink, bilinear to enlarge).

    Args:
        path: An image file the pipeline can read (check it with ``read_images`` first).
        longer_side: Pixels of the longer side of the result (small images are enlarged).

    Returns:
        ``(image, full_hw)``: uint8 RGB ``[h, w, 3]`` at the image's own aspect, and the
        ``(height, width)`` of the whole image as stored (upright), which places the model's
        input in it (:func:`input_window`).

    Raises:
        tf.errors.OpError: The file cannot be decoded.
    """
    img, hw = _decoder(int(longer_side))(tf.constant(os.fsencode(path)))
    return fit_longer_side(img.numpy(), longer_side), (int(hw[0]), int(hw[1]))


def fit_longer_side(image: np.ndarray, longer_side: int) -> np.ndarray:
    """A uint8 image resized so its longer side is ``longer_side`` (OpenCV: pixel-area
    averaging to shrink, bilinear to enlarge)."""
    import cv2

    h, w = display_hw(image.shape[:2], longer_side)
    if (h, w) == image.shape[:2]:
        return image
    shrink = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def read_for_explanation(
    path: str | os.PathLike,
    image_size: int | Sequence[int],
    resize: str,
    longer_side: int,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """One image as the model sees it and as a person sees it, from one decode.

    The model's input is the very numbers :func:`tfcam.data.pipeline.read_images` gives (the
    same decode, resize and letterbox, in the same order). The photo is the same decoded image
    resized to ``longer_side``; only when decoding reduced a big JPEG below that size is the file
    decoded again at a larger scale.

    Args:
        path: An image file.
        image_size: The model's input size.
        resize: The run's resize mode.
        longer_side: Pixels of the longer side of the photo.

    Returns:
        ``(model_input, photo, full_hw)``: float32 ``[H, W, 3]`` in [0, 255], uint8 RGB at the
        image's own aspect, and the ``(height, width)`` of the whole image as stored (upright).

    Raises:
        UserError: A missing or unreadable file (its name and the reason), as ``read_images``.
    """
    p = os.fspath(path)
    check_image_file(p)
    try:
        x, img, hw = compiled_loader(as_hw(image_size), resize)(tf.constant(os.fsencode(p)))
        x = x.numpy()
    except (tf.errors.OpError, UnicodeDecodeError):  # (TensorFlow may quote the bytes)
        raise UserError(f"Cannot use image '{p}': {_decode_error_reason(p)}") from None
    full_hw = (int(hw[0]), int(hw[1]))
    decoded = img.numpy()
    if max(decoded.shape[:2]) < min(longer_side, max(full_hw)):  # reduced while decoding
        photo, _ = read_display_image(p, longer_side)
    else:
        photo = fit_longer_side(decoded, longer_side)
    return x, photo, full_hw


@dataclass(frozen=True)
class Window:
    """Where the model's input and the photo meet, as two matching boxes ``(y0, x0, y1, x1)``.

    Attributes:
        input_box: The box of the model's input (pixels of the input) that shows the photo.
        image_box: The same box in the photo, as fractions of its height and width.
    """

    input_box: tuple[float, float, float, float]
    image_box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


def input_window(
    image_hw: Sequence[int], input_size: int | Sequence[int], mode: str = "stretch"
) -> Window:
    """Which part of the model's input shows which part of the photo, for a resize ``mode``
    (the arithmetic of :func:`tfcam.data.resize.resize_image` and of the letterbox).

    - ``stretch``: the whole input shows the whole photo;
    - ``pad``: a centred box of the input (the rest is border) shows the whole photo;
    - ``crop``: the whole input shows the photo's centre;
    - ``native``: the top-left box of the letterboxed input shows the whole photo.

    Args:
        image_hw: The photo's ``(height, width)`` as stored (upright).
        input_size: The model's input ``(height, width)`` or side.
        mode: The resize mode of the run.
    """
    h_t, w_t = as_hw(input_size)
    h, w = float(max(1, image_hw[0])), float(max(1, image_hw[1]))
    if mode == "pad":
        ratio = max(w / w_t, h / h_t)
        fh, fw = h / ratio, w / ratio
        sh, sw = max(math.floor(fh), 1), max(math.floor(fw), 1)
        top, left = max(math.floor((h_t - fh) / 2), 0), max(math.floor((w_t - fw) / 2), 0)
        return Window((top, left, top + sh, left + sw))
    if mode == "crop":
        cover = max(h_t / h, w_t / w)
        nh, nw = max(math.ceil(h * cover), h_t), max(math.ceil(w * cover), w_t)
        oy, ox = (nh - h_t) // 2, (nw - w_t) // 2
        return Window((0, 0, h_t, w_t), (oy / nh, ox / nw, (oy + h_t) / nh, (ox + w_t) / nw))
    if mode == "native":
        scale = min(1.0, max(h_t, w_t) / max(h, w))
        nh, nw = max(round(h * scale), 1), max(round(w * scale), 1)
        return Window((0, 0, min(nh, h_t), min(nw, w_t)))
    return Window((0, 0, h_t, w_t))
