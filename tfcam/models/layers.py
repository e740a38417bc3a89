"""Custom Keras layers of tfcam models (registered for ``.keras`` loading under ``tfcam>``)."""

from __future__ import annotations

import keras
from keras import ops

from tfcam.models.registry import PREPROCESS_MODES

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2023, 0.1994, 0.2010)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="tfcam")
class Preprocess(keras.layers.Layer):
    """Maps raw RGB pixels in [0, 255] to what a backbone expects, inside the model.

    The modes reproduce the ``preprocess_input`` functions of ``keras.applications``: ``tf``
    (scale to [-1, 1]), ``caffe`` (RGB→BGR, subtract the ImageNet mean), ``torch`` (scale to [0, 1],
    normalise with ImageNet mean and std); plus ``cifar`` (CIFAR-10 mean and std), ``unit``
    (scale to [0, 1]) and ``none``.

    Args:
        mode: One of ``PREPROCESS_MODES``.
    """

    def __init__(self, mode: str = "none", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(
                f"Unknown preprocess mode {mode!r}. Choose from: {', '.join(PREPROCESS_MODES)}"
            )
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
        if self.mode in ("torch", "cifar"):
            mean, std = (
                (_IMAGENET_MEAN, _IMAGENET_STD)
                if self.mode == "torch"
                else (_CIFAR_MEAN, _CIFAR_STD)
            )
            mean = ops.convert_to_tensor(mean, dtype=x.dtype)
            std = ops.convert_to_tensor(std, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "unit":
            return x / 255.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


#: Padding value of native-size batches (``tfcam.data.pipeline.PAD_VALUE``): real pixels are 0–255.
PAD_VALUE = -1.0


def _valid_extent(image, features):
    """Per image, the rows and columns of the feature map that cover real (unpadded) pixels.

    Padding sits at the bottom and right (``padded_batch``), so the real part of image ``b`` is
    ``[0, h_b) × [0, w_b)``; on a feature map of stride ``s`` it covers ``ceil(h_b / s)`` rows.
    Returns float tensors ``[B]`` (at least 1, at most the map's size).
    """
    valid = ops.cast(image[..., 0] > PAD_VALUE / 2, "float32")  # [B, H, W]
    h_in = ops.cast(ops.shape(image)[1], "float32")
    w_in = ops.cast(ops.shape(image)[2], "float32")
    h_f = ops.cast(ops.shape(features)[1], "float32")
    w_f = ops.cast(ops.shape(features)[2], "float32")
    rows = ops.sum(ops.max(valid, axis=2), axis=1)
    cols = ops.sum(ops.max(valid, axis=1), axis=1)
    fh = ops.clip(ops.ceil(rows * h_f / h_in), 1.0, h_f)
    fw = ops.clip(ops.ceil(cols * w_f / w_in), 1.0, w_f)
    return fh, fw


def _bin_mask(extent, n_cells, i, n):
    """``[B, n_cells]`` mask of bin ``i`` of ``n`` along one axis of a map whose real part is
    ``extent`` cells long: cells ``floor(i·e/n) … ceil((i+1)·e/n) - 1`` (never empty)."""
    pos = ops.cast(ops.arange(n_cells), "float32")[None, :]
    start = ops.floor(extent * i / n)[:, None]
    end = ops.ceil(extent * (i + 1) / n)[:, None]
    return ops.logical_and(pos >= start, pos < end)


def _masked_max(features, mask):
    """Max over height and width of ``features [B,H,W,C]`` where ``mask [B,H,W]`` holds."""
    low = ops.cast(-6.0e4 if features.dtype == "float16" else -3.0e38, features.dtype)
    return ops.max(ops.where(mask[..., None], features, low), axis=(1, 2))


def _masked_mean(features, mask):
    m = ops.cast(mask[..., None], features.dtype)
    return ops.sum(features * m, axis=(1, 2)) / ops.maximum(ops.sum(m, axis=(1, 2)), 1.0)


@keras.saving.register_keras_serializable(package="tfcam")
class FillPadding(keras.layers.Layer):
    """Sets the padding of native-size batches to zero after preprocessing: called on
    ``[preprocessed, raw image]``, it zeroes the pixels where the raw image holds ``PAD_VALUE``,
    which is what a convolution's own zero padding shows it at an image's border; real pixels
    pass unchanged."""

    def call(self, inputs):
        x, raw = inputs
        pad = raw[..., :1] <= PAD_VALUE / 2
        return ops.where(pad, ops.zeros((), x.dtype), x)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package="tfcam")
class GlobalPool(keras.layers.Layer):
    """Global pooling of a feature map: ``avg``, ``max`` or ``avgmax`` (both, concatenated).

    Called on ``[features, image]``, the padding of native-size batches is left out: only the
    feature cells over real pixels are pooled.
    """

    def __init__(self, mode: str = "avg", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("avg", "max", "avgmax"):
            raise ValueError(f"Unknown pooling mode {mode!r}. Choose from: avg, max, avgmax")
        self.mode = mode

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            features, image = inputs
            fh, fw = _valid_extent(image, features)
            rows = _bin_mask(fh, ops.shape(features)[1], 0, 1)
            cols = _bin_mask(fw, ops.shape(features)[2], 0, 1)
            mask = ops.logical_and(rows[:, :, None], cols[:, None, :])
        else:
            features = inputs
            mask = ops.ones(ops.shape(features)[:3], dtype="bool")
        parts = []
        if self.mode in ("avg", "avgmax"):
            parts.append(_masked_mean(features, mask))
        if self.mode in ("max", "avgmax"):
            parts.append(_masked_max(features, mask))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        shape = (
            input_shape[0]
            if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple))
            else input_shape
        )
        c = shape[-1] * (2 if self.mode == "avgmax" else 1)
        return (shape[0], c)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="tfcam")
class SpatialPyramidPooling(keras.layers.Layer):
    """Spatial pyramid pooling (He, Zhang, Ren & Sun, "Spatial Pyramid Pooling in Deep
    Convolutional Networks for Visual Recognition", ECCV 2014): max pooling over an ``n×n`` grid
    for each level ``n``, concatenated into a vector of fixed length ``C·Σn²`` for any input size.

    Bins follow adaptive pooling: bin ``i`` of ``n`` spans cells ``floor(i·e/n)`` to
    ``ceil((i+1)·e/n)`` of an extent ``e``, so a map smaller than the grid repeats cells rather
    than leaving bins empty. Called on ``[features, image]``, the grid covers only the cells over
    real pixels of each image (the padding of native-size batches is left out).

    Args:
        levels: Grid sizes, e.g. ``(4, 2, 1)``.
    """

    def __init__(self, levels=(4, 2, 1), **kwargs):
        super().__init__(**kwargs)
        self.levels = tuple(int(n) for n in levels)

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            features, image = inputs
            fh, fw = _valid_extent(image, features)
        else:
            features = inputs
            b = ops.shape(features)[0]
            fh = ops.ones((b,), "float32") * ops.cast(ops.shape(features)[1], "float32")
            fw = ops.ones((b,), "float32") * ops.cast(ops.shape(features)[2], "float32")
        h, w = ops.shape(features)[1], ops.shape(features)[2]
        parts = []
        for n in self.levels:
            rows = [_bin_mask(fh, h, i, n) for i in range(n)]
            cols = [_bin_mask(fw, w, j, n) for j in range(n)]
            for i in range(n):
                for j in range(n):
                    mask = ops.logical_and(rows[i][:, :, None], cols[j][:, None, :])
                    parts.append(_masked_max(features, mask))
        return ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        shape = (
            input_shape[0]
            if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple))
            else input_shape
        )
        return (shape[0], shape[-1] * sum(n * n for n in self.levels))

    def get_config(self):
        return {**super().get_config(), "levels": list(self.levels)}


@keras.saving.register_keras_serializable(package="tfcam")
class TokenPool(keras.layers.Layer):
    """The head's vector from a transformer's token sequence ``[N, T, D]``.

    ``token``: the class token (position 0), the ViT head of Dosovitskiy et al. (ICLR 2021).
    ``mean``: the mean of the patch tokens, the ``prefix`` class and register tokens left out
    (global average pooling, as in Beyer, Zhai & Kolesnikov, "Better plain ViT baselines for
    ImageNet-1k", 2022).

    Args:
        mode: ``token`` or ``mean``.
        prefix: Number of tokens before the patch tokens (class token, then registers).
    """

    def __init__(self, mode: str = "token", prefix: int = 1, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("token", "mean"):
            raise ValueError(f"Unknown token pooling {mode!r}. Choose from: token, mean")
        self.mode = mode
        self.prefix = int(prefix)

    def call(self, x):
        if self.mode == "token":
            return x[:, 0]
        return ops.mean(x[:, self.prefix :], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "prefix": self.prefix}
