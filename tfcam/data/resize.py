"""Resizing decoded images to the model's input with memory bounded whatever their shape.

Every mode resizes with one antialiased bilinear ``ScaleAndTranslate`` (what
``tf.image.resize(..., antialias=True)`` runs), given the decoded image itself (no float copy of
it) and arranged so that no tensor is much larger than the input plus the output:

- ``ScaleAndTranslate`` resizes the height first, keeping an intermediate of
  ``output height × input width``. For a wide strip being made taller (1×40000 to 224×224) that
  is 224×40000 floats, so such an image is resized transposed (``input height × output width``),
  whichever intermediate is not more than 4 times the other.
- ``crop`` used to scale the short side up to the crop size and then cut the centre: a 1×40000
  strip became 224×8960000 floats (24 GB) before the cut. It now slices the input window the
  centre crop samples (plus the filter's reach) and resizes only that, with the same scale and
  an offset, so the result is the same numbers as before for every image.
- ``pad`` keeps at least one pixel on each side (``tf.image.resize_with_pad`` floors a 1×40000
  strip's height to zero pixels and fails).

Reference: the sampling formula of TensorFlow's ``ScaleAndTranslate`` kernel
(``tensorflow/core/kernels/image/scale_and_translate_op.cc``): output pixel ``x`` samples input
coordinate ``(x + 0.5 - translation) / scale``, with a triangle of radius ``max(1, 1 / scale)``
input pixels when antialiasing.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfcam.data.headers import transpose_pixels
from tfcam.errors import UserError

RESIZE_MODES = ("stretch", "pad", "crop", "native")
#: An intermediate up to this many times the alternative order's is accepted (no transpose).
_TRANSPOSE_RATIO = 4


def as_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` from one side or a pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def _scale_and_translate(image, size, scale, translation):
    out = tf.raw_ops.ScaleAndTranslate(
        images=image[None],
        size=size,
        scale=scale,
        translation=translation,
        kernel_type="triangle",
        antialias=True,
    )
    return out[0]


def bounded_resize(
    image: tf.Tensor,
    size: tf.Tensor,
    scale: tf.Tensor | None = None,
    translation: tf.Tensor | None = None,
) -> tf.Tensor:
    """Antialiased bilinear resize (``tf.image.resize(..., antialias=True)``) of ``[h, w, c]``
    to ``size`` (int32 ``[2]``), float32, its intermediate at most about the input plus the output.

    Args:
        image: ``[h, w, c]`` of any type ``ScaleAndTranslate`` takes (uint8 needs no float copy).
        size: Output ``(height, width)``.
        scale: Per-axis scale (output / input, float32 ``[2]``); ``size / input size`` when None,
            as ``tf.image.resize`` computes it.
        translation: Per-axis offset in output pixels (float32 ``[2]``); zeros when None.
    """
    size = tf.cast(size, tf.int32)
    in_hw = tf.shape(image, out_type=tf.int32)[:2]
    if scale is None:
        scale = tf.cast(size, tf.float32) / tf.cast(in_hw, tf.float32)
    if translation is None:
        translation = tf.zeros([2], tf.float32)
    # Height first keeps out_h × in_w values; width first (transposed) keeps in_h × out_w.
    height_first = tf.cast(size[0], tf.float32) * tf.cast(in_hw[1], tf.float32)
    width_first = tf.cast(in_hw[0], tf.float32) * tf.cast(size[1], tf.float32)

    def direct():
        return _scale_and_translate(image, size, scale, translation)

    def transposed():
        flipped = _scale_and_translate(
            transpose_pixels(image, tf.constant([1, 0, 2])),
            tf.reverse(size, [0]),
            tf.reverse(scale, [0]),
            tf.reverse(translation, [0]),
        )
        return tf.transpose(flipped, [1, 0, 2])

    out = tf.cond(height_first > _TRANSPOSE_RATIO * width_first, transposed, direct)
    return tf.ensure_shape(out, [None, None, image.shape[-1]])


def _centre_crop(image: tf.Tensor, h_t: int, w_t: int) -> tf.Tensor:
    """Cover ``(h_t, w_t)`` keeping the aspect ratio, then take the centre: the numbers of
    resizing the whole image to ``ceil(hw * scale)`` and slicing, computed from the input window
    the slice samples."""
    hw = tf.shape(image, out_type=tf.int32)[:2]
    hw_f = tf.cast(hw, tf.float32)
    target = tf.constant([h_t, w_t], tf.int32)
    cover = tf.maximum(h_t / hw_f[0], w_t / hw_f[1])
    new_hw = tf.maximum(tf.cast(tf.math.ceil(hw_f * cover), tf.int32), target)
    scale = tf.cast(new_hw, tf.float32) / hw_f  # per axis, as tf.image.resize has it
    offset = (new_hw - target) // 2  # where the crop starts in the resized image
    # Input window of the output pixels [offset, offset + target): centres (y + 0.5) / scale,
    # each reaching max(1, 1 / scale) input pixels; one pixel more either side for rounding.
    s64 = tf.cast(scale, tf.float64)
    reach = tf.maximum(1.0 / s64, 1.0) + 1.0
    start = tf.cast(tf.math.floor(tf.cast(offset, tf.float64) / s64 - reach), tf.int32)
    stop = tf.cast(tf.math.ceil(tf.cast(offset + target, tf.float64) / s64 + reach), tf.int32)
    start = tf.clip_by_value(start, 0, hw)
    stop = tf.clip_by_value(stop, start, hw)
    window = image[start[0] : stop[0], start[1] : stop[1]]
    # In window coordinates output pixel y samples (y + offset + 0.5) / scale - start.
    translation = tf.cast(
        tf.cast(start, tf.float64) * s64 - tf.cast(offset, tf.float64), tf.float32
    )
    return bounded_resize(window, target, scale, translation)


def _fit_with_pad(image: tf.Tensor, h_t: int, w_t: int) -> tf.Tensor:
    """``tf.image.resize_with_pad`` (same size and offsets), keeping at least one pixel a side."""
    hw_f = tf.cast(tf.shape(image)[:2], tf.float32)
    ratio = tf.maximum(hw_f[1] / w_t, hw_f[0] / h_t)
    fitted = hw_f / ratio
    size = tf.maximum(tf.cast(tf.math.floor(fitted), tf.int32), 1)
    pads = tf.maximum(
        tf.cast(tf.math.floor((tf.constant([h_t, w_t], tf.float32) - fitted) / 2), tf.int32), 0
    )
    out = bounded_resize(image, size)
    return tf.image.pad_to_bounding_box(out, pads[0], pads[1], h_t, w_t)


def resize_image(
    image: tf.Tensor, image_size: int | Sequence[int], mode: str = "stretch"
) -> tf.Tensor:
    """Resizes to ``image_size`` and returns float32 in [0, 255], with memory bounded by about
    the input plus the output whatever the aspect ratio.

    Args:
        image: ``[h, w, 3]`` of any numeric type, 0–255.
        image_size: Target ``(height, width)`` or one side; in ``native`` mode, the cap on the
            longer side.
        mode: ``stretch`` (ignore the aspect ratio), ``pad`` (fit inside, black borders),
            ``crop`` (cover, then cut the centre) or ``native`` (keep the size and aspect ratio,
            only scaling down an image whose longer side exceeds the cap; the result has the
            image's own size).
    """
    h_t, w_t = as_hw(image_size)
    if image.dtype not in (tf.uint8, tf.float32):
        image = tf.cast(image, tf.float32)
    if mode == "native":
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = tf.minimum(1.0, float(max(h_t, w_t)) / tf.reduce_max(hw))
        new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), 1)
        out = tf.cond(
            scale < 1.0,
            lambda: bounded_resize(image, new_hw),
            lambda: tf.cast(image, tf.float32),
        )
        return tf.clip_by_value(tf.ensure_shape(out, [None, None, 3]), 0.0, 255.0)
    if mode == "stretch":
        out = bounded_resize(image, tf.constant([h_t, w_t], tf.int32))
    elif mode == "pad":
        out = _fit_with_pad(image, h_t, w_t)
    elif mode == "crop":
        out = _centre_crop(image, h_t, w_t)
    else:
        raise UserError(f"Unknown resize mode '{mode}'. Choose from: {', '.join(RESIZE_MODES)}")
    out = tf.ensure_shape(out, [h_t, w_t, 3])
    return tf.clip_by_value(out, 0.0, 255.0)
