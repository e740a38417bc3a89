"""Whatever a notebook holds as images, as the batch a model takes.

Files and folders are read by :func:`tfcam.data.pipeline.read_images`, exactly as training and
``tfcam predict`` read them (EXIF orientation, every PNG bit depth, bounded memory). Images
already in memory (Pillow images, NumPy arrays, ``tf.Tensor``) are resized by the same
:func:`tfcam.data.resize.resize_image` in the run's mode, unless they already have the model's
input size: then they are taken as they are, as pixels the model takes (0–255).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfcam.data.pipeline import letterbox, read_images
from tfcam.data.resize import as_hw, resize_image
from tfcam.errors import UserError
from tfcam.explain.inputs import list_inputs

_ACCEPTED = "image files, folders, PIL images, NumPy arrays [H, W, 3] or [N, H, W, 3], tf.Tensor"


@dataclass
class Batch:
    """Images ready for the model, and where each came from.

    Attributes:
        images: float32 ``[N, H, W, 3]``, pixels 0–255 at the model's input size.
        paths: The file of each image, or None for one given in memory.
    """

    images: np.ndarray
    paths: list[str | None]

    def names(self) -> list[str]:
        """A short label per image: the file name, else ``#i``."""
        return [Path(p).name if p else f"#{i}" for i, p in enumerate(self.paths)]


def _is_pil(x) -> bool:
    return type(x).__module__.startswith("PIL.") and hasattr(x, "convert")


def _pil_to_array(image) -> np.ndarray:
    """A Pillow image as uint8 RGB, upright, transparency over white (as files are decoded)."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"))


def _as_rgb(array: np.ndarray, what: str) -> np.ndarray:
    """``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` as ``[H, W, 3]``."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise UserError(
            f"Cannot use {what} of shape {array.shape}: give [H, W, 3] (RGB), [H, W] (grey) "
            "or [N, H, W, 3]"
        )
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 4:  # RGBA over white, as PNGs are decoded
        rgb = array[..., :3].astype(np.float32)
        alpha = array[..., 3:].astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0)
        return rgb * alpha + 255.0 * (1.0 - alpha)
    return array


def _in_memory(array: np.ndarray, size: tuple[int, int], resize: str, what: str) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.number):
        raise UserError(f"Cannot use {what}: its values are {array.dtype}, not numbers")
    array = _as_rgb(array, what)
    if not np.all(np.isfinite(array)):
        raise UserError(f"Cannot use {what}: it holds NaN or infinite values")
    _warn_unit_range(array)
    if array.shape[:2] == size and resize != "native":
        return array.astype(np.float32)  # already what the model takes
    image = resize_image(tf.convert_to_tensor(array), size, resize)
    if resize == "native":
        image = letterbox(image, size)
    return image.numpy()


def _warn_unit_range(array: np.ndarray) -> None:
    # A float image in [0, 1] (matplotlib's and scikit-image's convention) would be nearly black
    # to a model taking 0–255; say so instead of guessing a scale.
    if (
        np.issubdtype(array.dtype, np.floating)
        and array.size
        and array.min() >= 0.0
        and 0.0 < array.max() <= 1.0
    ):
        warnings.warn(
            "tfcam: these float images lie in [0, 1], but models take pixels in [0, 255]; "
            "multiply them by 255 (or give uint8 arrays)",
            stacklevel=3,
        )


def _items(images) -> list:
    """The input as a list of single items (a path, a PIL image, one ``[H, W, C]`` array)."""
    if isinstance(images, tf.Tensor):
        images = images.numpy()
    if isinstance(images, (str, os.PathLike)) or _is_pil(images):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, Sequence) or hasattr(images, "__iter__"):
        out = []
        for item in images:
            if isinstance(item, tf.Tensor):
                item = item.numpy()
            if isinstance(item, np.ndarray) and item.ndim == 4:
                out.extend(item)
            else:
                out.append(item)
        return out
    raise UserError(f"Cannot use images of type {type(images).__name__}. Give {_ACCEPTED}")


def to_batch(images, image_size: int | Sequence[int], resize: str = "stretch") -> Batch:
    """Reads and resizes any mix of inputs into one batch.

    Args:
        images: A path (file or folder, folders searched recursively, as ``tfcam explain``
            does), a Pillow image, a NumPy array ``[H, W, 3]`` / ``[N, H, W, 3]`` (uint8, or
            float pixels 0–255), a ``tf.Tensor``, or a list of any of these.
        image_size: The model's input ``(H, W)`` (for ``native`` models, the cap on the longer
            side).
        resize: How images of another size are brought to it: ``stretch``, ``pad``, ``crop``
            or ``native`` (the run's ``data.resize``).

    Returns:
        The batch and where each image came from.

    Raises:
        UserError: A missing or unreadable file, a folder without images, an input of another
            type or shape, no images at all.
    """
    size = as_hw(image_size)
    items = _items(images)
    if not items:
        raise UserError(f"No images given. Give {_ACCEPTED}")
    arrays, paths = [], []
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            files = [str(p) for p in list_inputs([item])] if Path(item).is_dir() else [str(item)]
            arrays.extend(read_images(files, size, resize))
            paths.extend(files)
            continue
        if _is_pil(item):
            array = _pil_to_array(item)
        elif isinstance(item, np.ndarray):
            array = item
        else:
            raise UserError(f"Cannot use image {i} of type {type(item).__name__}. Give {_ACCEPTED}")
        arrays.append(_in_memory(array, size, resize, f"image {i}"))
        paths.append(None)
    return Batch(np.stack(arrays).astype(np.float32, copy=False), paths)
