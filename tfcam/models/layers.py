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
