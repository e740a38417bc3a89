"""Image augmentations in TensorFlow ops, so they run inside ``tf.data`` (graph mode, parallel).

Each takes and returns one float32 image ``[H, W, 3]`` in [0, 255] of fixed size; the experiment
gives each a probability (``data.augment: {hflip: 0.5, shift_scale_rotate: 0.5}``). Magnitudes
follow albumentations' defaults, which the seed projects used:

* ``hflip``, ``vflip``: mirror.
* ``shift_scale_rotate``: shift up to 6.25% of the side, scale ±10%, rotate ±45°, reflected border
  (albumentations ``ShiftScaleRotate``).
* ``pad_crop``: pad by 1/8 of the side (reflect) and crop back at a random place (the CIFAR
  recipe: 4 px on 32).
* ``coarse_dropout``: up to 8 holes, each up to 1/8 of the side, filled with zeros
  (``CoarseDropout``; DeVries & Taylor's cutout, 2017).
* ``brightness_contrast``: brightness ±20% of the range, contrast ×[0.8, 1.2]
  (``RandomBrightnessContrast``).
* ``hue_saturation_value``: hue ±20/180 of the circle, saturation ±30/255, value ±20/255
  (``HueSaturationValue``).
* ``grid_distortion``: a 5×5 grid whose cells stretch or shrink by up to 30% (``GridDistortion``).
* ``rotate90``: 90°, 180° or 270° (square images).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import tensorflow as tf

from tfcam.errors import UserError

SHIFT, SCALE, ROTATE = 0.0625, 0.1, 45.0
PAD_FRACTION = 1 / 8
HOLES, HOLE_FRACTION = 8, 1 / 8
BRIGHTNESS, CONTRAST = 0.2, 0.2
HUE, SATURATION, VALUE = 20 / 180, 30 / 255, 20 / 255
GRID_STEPS, GRID_LIMIT = 5, 0.3


def _uniform(lo, hi, shape=()):
    return tf.random.uniform(shape, lo, hi)


def hflip(img: tf.Tensor) -> tf.Tensor:
    return tf.image.flip_left_right(img)


def vflip(img: tf.Tensor) -> tf.Tensor:
    return tf.image.flip_up_down(img)


def affine(img: tf.Tensor, dx, dy, scale, angle_deg) -> tf.Tensor:
    """Shift (fractions of the side), scale and rotate about the centre, reflecting the border."""
    h = tf.cast(tf.shape(img)[0], tf.float32)
    w = tf.cast(tf.shape(img)[1], tf.float32)
    # Positive angles turn the content counter-clockwise (as OpenCV and albumentations do).
    a = -angle_deg * math.pi / 180.0
    cos, sin = tf.cos(a) / scale, tf.sin(a) / scale
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # Output pixel (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2): the inverse map.
    tx, ty = dx * w, dy * h
    a2 = cx - cos * (cx + tx) - sin * (cy + ty)
    b2 = cy + sin * (cx + tx) - cos * (cy + ty)
    transform = tf.stack([cos, sin, a2, -sin, cos, b2, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=img[None],
        transforms=transform,
        output_shape=tf.shape(img)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    return out[0]


def shift_scale_rotate(img: tf.Tensor) -> tf.Tensor:
    return affine(
        img,
        _uniform(-SHIFT, SHIFT),
        _uniform(-SHIFT, SHIFT),
        1.0 + _uniform(-SCALE, SCALE),
        _uniform(-ROTATE, ROTATE),
    )


def pad_crop(img: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(img)
    h, w = shape[0], shape[1]
    ph = tf.maximum(1, tf.cast(tf.round(tf.cast(h, tf.float32) * PAD_FRACTION), tf.int32))
    pw = tf.maximum(1, tf.cast(tf.round(tf.cast(w, tf.float32) * PAD_FRACTION), tf.int32))
    padded = tf.pad(img, [[ph, ph], [pw, pw], [0, 0]], mode="REFLECT")
    return tf.image.random_crop(padded, shape)


def coarse_dropout(img: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(img)
    h, w = shape[0], shape[1]
    n = tf.random.uniform([], 1, HOLES + 1, tf.int32)
    max_h = tf.maximum(1, tf.cast(tf.cast(h, tf.float32) * HOLE_FRACTION, tf.int32))
    max_w = tf.maximum(1, tf.cast(tf.cast(w, tf.float32) * HOLE_FRACTION, tf.int32))
    ys = tf.range(h)[:, None]
    xs = tf.range(w)[None, :]
    keep = tf.ones([h, w], tf.bool)
    for i in range(HOLES):
        hh = tf.random.uniform([], 1, max_h + 1, tf.int32)
        ww = tf.random.uniform([], 1, max_w + 1, tf.int32)
        y0 = tf.random.uniform([], 0, h - hh + 1, tf.int32)
        x0 = tf.random.uniform([], 0, w - ww + 1, tf.int32)
        hole = (ys >= y0) & (ys < y0 + hh) & (xs >= x0) & (xs < x0 + ww)
        keep &= ~(hole & (i < n))
    return img * tf.cast(keep, img.dtype)[..., None]


def brightness_contrast(img: tf.Tensor) -> tf.Tensor:
    alpha = 1.0 + _uniform(-CONTRAST, CONTRAST)
    beta = _uniform(-BRIGHTNESS, BRIGHTNESS) * 255.0
    return tf.clip_by_value(img * alpha + beta, 0.0, 255.0)


def hue_saturation_value(img: tf.Tensor) -> tf.Tensor:
    hsv = tf.image.rgb_to_hsv(tf.clip_by_value(img / 255.0, 0.0, 1.0))
    hue = tf.math.floormod(hsv[..., 0] + _uniform(-HUE, HUE), 1.0)
    sat = tf.clip_by_value(hsv[..., 1] + _uniform(-SATURATION, SATURATION), 0.0, 1.0)
    val = tf.clip_by_value(hsv[..., 2] + _uniform(-VALUE, VALUE), 0.0, 1.0)
    return tf.image.hsv_to_rgb(tf.stack([hue, sat, val], axis=-1)) * 255.0


def _grid_coords(n: tf.Tensor) -> tf.Tensor:
    """Source coordinates for an axis of length n: a piecewise-linear, monotonic warp."""
    steps = 1.0 + _uniform(-GRID_LIMIT, GRID_LIMIT, [GRID_STEPS])
    edges = tf.concat([[0.0], tf.cumsum(steps)], 0)
    edges = edges / edges[-1] * tf.cast(n - 1, tf.float32)  # warped positions of the grid lines
    even = tf.linspace(0.0, tf.cast(n - 1, tf.float32), GRID_STEPS + 1)
    pos = tf.cast(tf.range(n), tf.float32)
    # Output position pos lies between even[k] and even[k+1]; it reads the matching warped place.
    k = tf.clip_by_value(tf.searchsorted(even, pos, side="right") - 1, 0, GRID_STEPS - 1)
    t = (pos - tf.gather(even, k)) / (tf.gather(even, k + 1) - tf.gather(even, k))
    return tf.gather(edges, k) + t * (tf.gather(edges, k + 1) - tf.gather(edges, k))


def _resample_axis(img: tf.Tensor, coords: tf.Tensor, axis: int) -> tf.Tensor:
    n = tf.shape(img)[axis]
    lo = tf.clip_by_value(tf.cast(tf.floor(coords), tf.int32), 0, n - 1)
    hi = tf.minimum(lo + 1, n - 1)
    frac = coords - tf.cast(lo, tf.float32)
    shape = [-1, 1, 1] if axis == 0 else [1, -1, 1]
    frac = tf.reshape(frac, shape)
    return tf.gather(img, lo, axis=axis) * (1 - frac) + tf.gather(img, hi, axis=axis) * frac


def grid_distortion(img: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(img)
    out = _resample_axis(img, _grid_coords(shape[0]), 0)
    return _resample_axis(out, _grid_coords(shape[1]), 1)


def rotate90(img: tf.Tensor) -> tf.Tensor:
    return tf.image.rot90(img, tf.random.uniform([], 1, 4, tf.int32))


AUGMENTATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "hflip": hflip,
    "vflip": vflip,
    "shift_scale_rotate": shift_scale_rotate,
    "pad_crop": pad_crop,
    "coarse_dropout": coarse_dropout,
    "brightness_contrast": brightness_contrast,
    "hue_saturation_value": hue_saturation_value,
    "grid_distortion": grid_distortion,
    "rotate90": rotate90,
}


def apply(image: tf.Tensor, augment: Mapping[str, float]) -> tf.Tensor:
    """Applies each augmentation with its probability, in the order given.

    Raises:
        UserError: An unknown augmentation name, or ``rotate90`` on a non-square image.
    """
    from tfcam.errors import choices_message

    for name, prob in augment.items():
        if prob <= 0:
            continue
        fn = AUGMENTATIONS.get(name)
        if fn is None:
            raise UserError(choices_message("augmentation", name, AUGMENTATIONS))
        if name == "rotate90" and image.shape[0] != image.shape[1]:
            raise UserError(f"rotate90 needs square images, got {image.shape[0]}×{image.shape[1]}")
        image = tf.cond(
            tf.random.uniform([]) < prob, lambda img=image, f=fn: f(img), lambda img=image: img
        )
        image = tf.ensure_shape(image, [None, None, 3])
    return image
