"""The ``tf.data`` input pipeline: robust decoding, resizing, batching, and a pre-flight file scan.

Decoding copes with what real folders hold: JPEG (RGB, greyscale, CMYK), PNG (every bit depth and
colour type, with or without alpha or a transparent colour, composited over white), BMP, GIF
(first frame) and WebP, each turned upright by its EXIF orientation as Pillow's
``ImageOps.exif_transpose`` does. Large JPEGs are
decoded at 1/2, 1/4 or 1/8 scale directly in the DCT domain when the target size allows, so a
12000×12000 photo costs about as much memory as a 1500×1500 one, and typical photos decode faster;
no image is decoded to more than ``MAX_PIXELS`` (Pillow's limit). Resizing
(:mod:`tfcam.data.resize`) keeps memory near the input plus the output whatever the aspect ratio.

Before training, :func:`scan_files` decodes every file once with the same code the pipeline uses,
so a broken file is found up front (and reported) instead of stopping an epoch half-way; an
image thinner than ``1:MAX_ASPECT`` is listed as suspicious and left out of training.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tfcam.data.augment import apply
from tfcam.data.headers import exif_orientation, orientation_op, png_opaque_op, upright
from tfcam.data.resize import as_hw, resize_image
from tfcam.errors import UserError
from tfcam.progress import task

AUTOTUNE = tf.data.AUTOTUNE
#: Value of the padding around images of ``native`` size in a batch (real pixels are 0–255);
#: the model's masked pooling recognises it. Same value as ``tfcam.models.layers.PAD_VALUE``.
PAD_VALUE = -1.0
#: In ``native`` mode, training batches are formed from runs of this many batches' worth of
#: shuffled images, sorted by shape, so that images in a batch have similar sizes (little padding).
SHAPE_POOL_BATCHES = 16
#: Formats TensorFlow decodes, by the names Pillow gives them.
SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP")
#: No image is decoded to more pixels than this: Pillow's ``MAX_IMAGE_PIXELS`` (its
#: decompression-bomb limit, 1024³ / 4 / 3 ≈ 89.5 million). JPEGs above it are decoded at a
#: reduced scale (1/2 … 1/8, enough for any JPEG); other formats cannot be, and are refused.
MAX_PIXELS = 89_478_485
#: An image whose longer side is more than this many times its shorter side is left out of
#: training (listed as suspicious): at 224 px a 1:20 strip keeps 11 px across in ``pad`` mode,
#: a twentieth of it in ``crop`` mode, and is squeezed twentyfold in ``stretch`` mode. Wider
#: than camera panoramas (about 1:4 to 1:10). Prediction and explanation still read them.
MAX_ASPECT = 20
#: An image whose 32×32 sample has fewer distinct colours than this is flagged (not skipped).
FEW_COLOURS = 48

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decode_image(
    contents: tf.Tensor, image_size: int | Sequence[int]
) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes encoded image bytes to uint8 RGB, upright by their EXIF orientation, reducing big
    JPEGs while decoding.

    Args:
        contents: Scalar string tensor, the file's bytes.
        image_size: The size the image will be resized to afterwards; JPEGs are decoded at the
            largest DCT scale (1/1, 1/2, 1/4, 1/8) that keeps both sides at least this large.

    Returns:
        ``(image, original_hw)``: uint8 ``[h, w, 3]`` and the full size of the image as it is
        seen upright (before any reduced-scale decoding), int32 ``[2]``.
    """
    target = max(as_hw(image_size))
    head = tf.strings.substr(contents, 0, 8)
    orientation = orientation_op(contents)

    def jpeg():
        shape = tf.io.extract_jpeg_shape(contents)
        shorter = tf.reduce_min(shape[:2])
        pixels = tf.cast(shape[0], tf.float64) * tf.cast(shape[1], tf.float64)
        # Index of the ratio in (1, 2, 4, 8): the largest one keeping the shorter side >= target,
        # or a larger one when needed to stay within MAX_PIXELS.
        idx = tf.constant(0)
        for i, r in enumerate((2, 4, 8), start=1):
            fits = (shorter // r >= target) | (pixels / (r // 2) ** 2 > MAX_PIXELS)
            idx = tf.where(fits, tf.constant(i), idx)
        branches = [
            (
                lambda r=r: tf.io.decode_jpeg(
                    contents, channels=3, ratio=r, dct_method="INTEGER_ACCURATE"
                )
            )
            for r in (1, 2, 4, 8)
        ]
        return tf.switch_case(idx, branches), shape[:2]

    def png16():
        rgba = tf.cast(tf.io.decode_png(contents, channels=4, dtype=tf.uint16), tf.float32)
        alpha = tf.where(png_opaque_op(contents), 1.0, rgba[..., 3:] / 65535.0)
        rgb = rgba[..., :3] * alpha + 65535.0 * (1.0 - alpha)  # transparent pixels become white
        return tf.cast(tf.round(rgb / 257.0), tf.uint8)

    def png8():
        # Up to 8 bits a sample: 4 bytes a pixel, and integer compositing only where there is
        # transparency (the 16-bit path holds about 60 bytes a pixel).
        rgba = tf.io.decode_png(contents, channels=4, dtype=tf.uint8)
        opaque = png_opaque_op(contents) | tf.reduce_all(rgba[..., 3] == 255)

        def over_white():
            # round((v·a + 255·(255 − a)) / 255) in uint16: the sum is at most 255², and a
            # multiple of 1/255 is never exactly half-way, so adding 127 then flooring rounds.
            px = tf.cast(rgba, tf.uint16)
            a = px[..., 3:]
            return tf.cast((px[..., :3] * a + 255 * (255 - a) + 127) // 255, tf.uint8)

        return tf.cond(opaque, lambda: rgba[..., :3], over_white)

    def png():
        bit_depth = tf.io.decode_raw(tf.strings.substr(contents, 24, 1), tf.uint8)[0]
        img = tf.cond(bit_depth == 16, png16, png8)
        return img, tf.shape(img, out_type=tf.int32)[:2]

    def other():  # GIF (first frame), BMP, WebP
        img = tf.io.decode_image(contents, channels=3, expand_animations=False)
        return img, tf.shape(img, out_type=tf.int32)[:2]

    is_jpeg = tf.strings.substr(head, 0, 3) == _JPEG_MAGIC
    is_png = head == _PNG_MAGIC
    img, hw = tf.cond(is_jpeg, jpeg, lambda: tf.cond(is_png, png, other))
    img = tf.ensure_shape(img, [None, None, 3])
    hw = tf.cast(hw, tf.int32)
    hw = tf.where(orientation >= 5, tf.reverse(hw, [0]), hw)  # 5–8 swap height and width
    return upright(img, orientation), hw


def load_image(
    path: tf.Tensor, image_size: int | Sequence[int], resize: str = "stretch"
) -> tf.Tensor:
    """Reads, decodes and resizes one file: float32 ``[H, W, 3]`` in [0, 255]."""
    # In native mode image_size is the cap on the longer side; decoding keeps the shorter side at
    # least that large, so the reduced JPEG is never smaller than what the cap allows.
    img, _ = decode_image(tf.io.read_file(path), image_size)
    return resize_image(img, image_size, resize)


def letterbox(image: tf.Tensor, image_size: int | Sequence[int]) -> tf.Tensor:
    """Pads an image of native size at the bottom and right with ``PAD_VALUE`` to ``image_size``
    (how a batch pads it), so native-size images can be stacked for prediction and explanation."""
    h_t, w_t = as_hw(image_size)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    out = tf.pad(image, [[0, h_t - h], [0, w_t - w], [0, 0]], constant_values=PAD_VALUE)
    return tf.ensure_shape(out, [h_t, w_t, 3])


def _pil_header(path: str) -> tuple[str, tuple[int, int]] | None:
    """``(format, (width, height))`` from the file's header, or None when Pillow cannot read it.
    Only the header is read, so Pillow's decompression-bomb guard does not apply."""
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as im:
            return im.format, im.size
    except Exception:
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def stored_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of the image as seen upright (its EXIF orientation applied), from the
    file's header (no decoding); ``(1, 1)`` when unreadable."""
    header = _pil_header(path)
    if header is None:
        return 1, 1
    w, h = header[1]
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    return (w, h) if exif_orientation(head) >= 5 else (h, w)


def plan_native_batches(
    sizes: Sequence[tuple[int, int]], batch_size: int, rng: np.random.Generator, cap: int
) -> list[np.ndarray]:
    """One epoch's batches of indices for images of varying sizes.

    The images are shuffled, then taken in pools of ``SHAPE_POOL_BATCHES`` batches; each pool is
    sorted by aspect ratio and then size (after the cap on the longer side) and cut into batches,
    so that the images in a batch have similar shapes and little padding. The batches are then
    shuffled. Every batch has ``batch_size`` images except possibly the last; a last batch of one
    image is left out of the epoch (a different random image each epoch), so no step runs on a
    single image.
    """
    n = len(sizes)
    order = rng.permutation(n)
    hw = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    scale = np.minimum(1.0, cap / np.maximum(hw.max(axis=1), 1))
    capped = np.maximum(np.round(hw * scale[:, None]), 1)
    aspect = np.round(np.log2(capped[:, 0] / capped[:, 1]) * 4)  # quarter-octave bins
    area = capped[:, 0] * capped[:, 1]
    batches = []
    pool = batch_size * SHAPE_POOL_BATCHES
    for start in range(0, n, pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.lexsort((area[chunk], aspect[chunk]))]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    full = [b for b in batches if len(b) == batch_size]
    rest = np.concatenate([b for b in batches if len(b) < batch_size] or [np.zeros(0, int)])
    tail = [rest[i : i + batch_size] for i in range(0, len(rest), batch_size)]
    drop_single = native_epoch_size(n, batch_size) < n
    out = full + [t for t in tail if len(t) and not (drop_single and len(t) == 1)]
    rng.shuffle(out)
    return out


def native_epoch_size(n: int, batch_size: int) -> int:
    """Images in one epoch of :func:`plan_native_batches`: all of them, except a single image
    left over after the full batches (when there are others to train on)."""
    return n - 1 if batch_size > 1 and n > 1 and n % batch_size == 1 else n


def augment_image(
    image: tf.Tensor, augment: Mapping[str, float], seed: int | None = None
) -> tf.Tensor:
    """Applies each augmentation with its probability (``{"hflip": 0.5}``); see
    :mod:`tfcam.data.augment` for the names."""
    return apply(image, augment)


def encode_labels(labels: Sequence[int], num_classes: int, binary: bool) -> np.ndarray:
    """One-hot float32 ``[N, C]`` (``[N, 1]`` of 0/1 for a binary model)."""
    labels = np.asarray(labels, dtype=np.int64)
    if binary:
        return labels.astype(np.float32)[:, None]
    return np.eye(num_classes, dtype=np.float32)[labels]


def make_dataset(
    *,
    files: Sequence[str],
    labels: Sequence[int] | None,
    mode: str,
    image_size: int | Sequence[int],
    batch_size: int,
    num_classes: int | None = None,
    resize: str = "stretch",
    augment: Mapping[str, float] | None = None,
    cache: bool = False,
    binary: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Builds a batched dataset of ``(images, targets)``, or of images when ``labels`` is None.

    In ``train`` mode the file names are shuffled (again each epoch) before decoding, and
    augmentations apply; in ``eval`` mode the order is the order of ``files``. With ``cache``,
    decoded and resized images are kept in memory after the first pass (then the elements, not
    the names, are shuffled).

    Args:
        files: Image paths.
        labels: Integer labels aligned with ``files``, or None for unlabelled prediction.
        mode: ``"train"`` or ``"eval"``.
        image_size: Output size (one side, or ``(height, width)``).
        batch_size: Batch size; the last batch may be smaller.
        num_classes: Number of classes (for one-hot targets).
        resize: ``stretch``, ``pad`` or ``crop``.
        augment: ``{name: probability}``; training only.
        cache: Keep decoded images in memory.
        binary: Targets of shape ``[N, 1]`` for a single sigmoid output.
        seed: Shuffle seed.

    Returns:
        A ``tf.data.Dataset`` yielding float32 images ``[B, H, W, 3]`` in [0, 255] (and targets).
    """
    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    files = [os.fspath(f) for f in files]
    train = mode == "train"
    if resize == "native":
        return _native_dataset(
            files=files,
            labels=labels,
            train=train,
            cap=max(as_hw(image_size)),
            batch_size=batch_size,
            num_classes=num_classes,
            augment=augment,
            binary=binary,
            seed=seed,
        )
    if labels is None:
        ds = tf.data.Dataset.from_tensor_slices(files)
    else:
        if num_classes is None:
            raise ValueError("num_classes is required with labels")
        targets = encode_labels(labels, num_classes, binary)
        ds = tf.data.Dataset.from_tensor_slices((files, targets))
    if train and not cache:
        ds = ds.shuffle(max(len(files), 1), seed=seed, reshuffle_each_iteration=True)

    def load(path, *rest):
        img = load_image(path, image_size, resize)
        return (img, *rest) if rest else img

    ds = ds.map(load, num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
        if train:
            ds = ds.shuffle(max(len(files), 1), seed=seed, reshuffle_each_iteration=True)
    if train and augment:
        aug = dict(augment)

        def do_augment(img, *rest):
            img = augment_image(img, aug)
            return (img, *rest) if rest else img

        ds = ds.map(do_augment, num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def _native_dataset(
    *, files, labels, train, cap, batch_size, num_classes, augment, binary, seed
) -> tf.data.Dataset:
    """Images at their own size (scaled down to the cap), batches padded with ``PAD_VALUE``.

    Training batches group images of similar shape (:func:`plan_native_batches`, re-planned each
    epoch); evaluation keeps the order of ``files``.
    """
    if labels is not None:
        if num_classes is None:
            raise ValueError("num_classes is required with labels")
        targets = encode_labels(labels, num_classes, binary)
    else:
        targets = None

    if train:
        sizes = [stored_size(f) for f in files]
        rng = np.random.default_rng(seed)
        files_arr = np.asarray(files, dtype=object)

        def order():
            for b in plan_native_batches(sizes, batch_size, rng, cap):
                for i in b:
                    yield (files_arr[i], targets[i]) if targets is not None else files_arr[i]

        spec = tf.TensorSpec([], tf.string)
        sig = (spec, tf.TensorSpec([targets.shape[1]], tf.float32)) if targets is not None else spec
        ds = tf.data.Dataset.from_generator(order, output_signature=sig)
        epoch = native_epoch_size(len(files), batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(epoch))
    else:
        ds = tf.data.Dataset.from_tensor_slices((files, targets) if targets is not None else files)

    def load(path, *rest):
        img = load_image(path, cap, "native")
        if train and augment:
            img = augment_image(img, augment)
        return (img, *rest) if rest else img

    # deterministic: batches are cut from the planned order, so the element order must hold.
    ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    pad = (
        (tf.constant(PAD_VALUE), tf.constant(0.0))
        if targets is not None
        else tf.constant(PAD_VALUE)
    )
    return ds.padded_batch(batch_size, padding_values=pad).prefetch(AUTOTUNE)


# --------------------------------------------------------------------------------------------
# Pre-flight scan


@dataclass
class ScanResult:
    """What the scan found.

    Attributes:
        bad: ``{path: reason}`` for files that cannot be used (they are skipped).
        suspicious: ``{path: reason}`` for files that decode but look odd (kept, except those
            in ``left_out``).
        left_out: The suspicious files training leaves out: an aspect ratio beyond
            ``1:MAX_ASPECT`` (the reason says so).
        sizes: ``{path: (height, width)}`` of every good file as stored.
    """

    bad: dict[str, str] = field(default_factory=dict)
    suspicious: dict[str, str] = field(default_factory=dict)
    left_out: set[str] = field(default_factory=set)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


def _header_check(path: str) -> str | None:
    """Cheap checks before decoding: empty file, unsupported format, huge non-JPEG image."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return f"cannot read the file ({e.strerror})"
    if size == 0:
        return "empty file (0 bytes)"
    header = _pil_header(path)
    if header is None:
        return None
    fmt, (w, h) = header
    if fmt not in SUPPORTED_FORMATS:
        return f"unsupported image format {fmt}; use JPEG, PNG, BMP, GIF or WebP"
    if fmt not in ("JPEG", "MPO") and w * h > MAX_PIXELS:
        return (
            f"too large to decode safely ({w}×{h} {fmt}, {w * h / 1e6:.0f} million pixels; the "
            f"limit is {MAX_PIXELS:,} pixels, Pillow's MAX_IMAGE_PIXELS; JPEGs of any size "
            "are read at reduced scale)"
        )
    return None


def _decode_error_reason(path: str) -> str:
    """Decodes one file eagerly to turn the decoder's error into a short reason."""
    try:
        contents = tf.io.read_file(path)
        decode_image(contents, 32)
    except tf.errors.OpError as e:
        msg = re.sub(r"\{\{.*?\}\}\s*", "", (e.message or str(e)).strip().splitlines()[0])
        if "Unknown image file format" in msg:
            return "not an image (unrecognised content)"
        if "Input is empty" in msg:
            return "empty file (0 bytes)"
        return f"corrupt or truncated image data ({msg.split(' [Op:')[0][:120]})"
    except UnicodeDecodeError:  # TensorFlow quoted the file's bytes in its message
        return "corrupt or truncated image data"
    return "could not be decoded"


def scan_files(
    files: Sequence[str], *, image_size: int | Sequence[int] = 224, progress=None
) -> ScanResult:
    """Decodes every file once, in parallel, with the pipeline's own decoder.

    Args:
        files: Paths to check.
        image_size: The training size (decides the JPEG decoding scale, as in training).
        progress: Unused, kept for callers that pass it; the scan shows its progress as a
            :func:`tfcam.progress.task`.

    Returns:
        The broken files with reasons, the suspicious ones (and which of them training leaves
        out), and every good file's stored size.
    """
    files = [os.fspath(f) for f in files]
    result = ScanResult()
    candidates = []
    for f in files:
        reason = _header_check(f)
        if reason:
            result.bad[f] = reason
        else:
            candidates.append(f)

    def check(i, path):
        img, hw = decode_image(tf.io.read_file(path), image_size)
        thumb = tf.image.resize(img, [32, 32], method="nearest")
        packed = tf.reshape(tf.cast(thumb, tf.int32), [-1, 3]) @ tf.constant([[65536], [256], [1]])
        n_colours = tf.size(tf.unique(tf.reshape(packed, [-1]))[0])
        return i, hw, n_colours

    found: dict[int, tuple[tuple[int, int], int]] = {}
    if candidates:
        ds = tf.data.Dataset.from_tensor_slices((np.arange(len(candidates)), candidates))
        ds = ds.map(check, num_parallel_calls=AUTOTUNE).ignore_errors().batch(64)
        with task("Checking images", total=len(candidates), unit="image") as bar:
            for idx, hw, nc in ds.as_numpy_iterator():
                for i, (h, w), n in zip(idx, hw, nc, strict=True):
                    found[int(i)] = ((int(h), int(w)), int(n))
                bar.advance(int(idx[-1]) + 1 - bar.done)  # in order: failures count too
            bar.advance(len(candidates) - bar.done)  # the failures after the last good one
    for i, f in enumerate(candidates):
        if i not in found:
            result.bad[f] = _decode_error_reason(f)
            continue
        (h, w), n = found[i]
        result.sizes[f] = (h, w)
        notes = []
        if min(h, w) < 8:
            notes.append(f"very small ({w}×{h} px)")
        if max(h, w) > MAX_ASPECT * min(h, w):
            notes.append(
                f"aspect ratio 1:{max(h, w) / max(min(h, w), 1):.0f} beyond 1:{MAX_ASPECT}; "
                "left out of training"
            )
            result.left_out.add(f)
        if n < FEW_COLOURS:
            notes.append(
                f"few distinct colours ({n} in a 32×32 sample): a placeholder, icon or blank?"
            )
        if notes:
            result.suspicious[f] = "; ".join(notes)
    return result


def check_image_file(path: str) -> None:
    """Refuses, before decoding, a file that is missing or whose header rules it out.

    Raises:
        UserError: Naming the file and the reason (not found, unsupported format, too large).
    """
    if not os.path.isfile(path):
        raise UserError(f"Image not found: '{path}'")
    reason = _header_check(path)
    if reason:
        raise UserError(f"Cannot use image '{path}': {reason}")


def read_images(
    paths: Sequence[str], image_size: int | Sequence[int], resize: str = "stretch"
) -> np.ndarray:
    """Loads images for prediction: float32 ``[N, H, W, 3]`` in [0, 255].

    Raises:
        UserError: A file is missing or not a readable image (its name and the reason).
    """
    load = compiled_loader(as_hw(image_size), resize)
    out = []
    for p in paths:
        check_image_file(p)
        try:
            out.append(load(tf.constant(os.fsencode(p)))[0].numpy())
        except (tf.errors.OpError, UnicodeDecodeError):
            raise UserError(f"Cannot use image '{p}': {_decode_error_reason(p)}") from None
    h, w = as_hw(image_size)
    return np.stack(out) if out else np.zeros((0, h, w, 3), np.float32)


@functools.lru_cache(maxsize=8)
def compiled_loader(image_size: tuple[int, int], resize: str):
    """One file path in, ``(model_input, decoded, full_hw)`` out, compiled once per size and mode:
    the model's input as :func:`load_image` (and, in ``native`` mode, :func:`letterbox`) makes it,
    float32 ``[H, W, 3]``; the decoded upright image, uint8 (reduced for big JPEGs); and the
    image's full ``(height, width)``. Run eagerly, the dozens of small operations of decoding cost
    more than the decoding itself (18 ms against 7 ms a photo)."""

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def load(path):
        img, hw = decode_image(tf.io.read_file(path), image_size)
        x = resize_image(img, image_size, resize)
        if resize == "native":
            x = letterbox(x, image_size)
        return x, img, hw

    return load
