"""The augmentation preview: training images of an experiment beside augmented copies, drawn as
``tfcam augment-preview`` writes them, so a user sees what ``data.augment`` does before training."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfcam.data.augment import apply
from tfcam.data.pipeline import letterbox, load_image, read_images
from tfcam.data.sources import load_splits
from tfcam.io import atomic_path


def augmented_samples(cfg, n_images: int = 4, n_variants: int = 5, seed: int = 0):
    """Training images of an experiment and augmented copies, for a preview.

    Args:
        cfg: An ``ExperimentConfig`` (its data source, size and ``data.augment``).
        n_images: How many training images (spread over the classes).
        n_variants: Augmented copies of each.
        seed: Random seed for the choice and the augmentations.

    Returns:
        ``(names, originals [n, H, W, 3], variants [n, n_variants, H, W, 3])``.
    """
    splits = load_splits(cfg.data)
    files, labels = splits.files["train"], splits.labels["train"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    chosen, seen = [], set()
    for i in order:  # one per class first, then any
        if labels[i] not in seen:
            chosen.append(int(i))
            seen.add(labels[i])
        if len(chosen) == n_images:
            break
    chosen += [int(i) for i in order if int(i) not in chosen][: n_images - len(chosen)]
    paths = [files[i] for i in chosen]
    tf.random.set_seed(seed)
    aug = dict(cfg.data.augment)
    size = cfg.data.image_size
    if cfg.data.resize == "native":
        # Augment each image at its own size (as training does), then pad it to the preview cell.
        natives = [load_image(tf.constant(p), size, "native") for p in paths]
        images = np.stack([letterbox(img, size).numpy() for img in natives])
        fn = tf.function(
            lambda x: letterbox(apply(x, aug), size),
            input_signature=[tf.TensorSpec([None, None, 3], tf.float32)],
        )
        variants = np.stack(
            [np.stack([fn(img).numpy() for _ in range(n_variants)]) for img in natives]
        )
        return _names(splits, files, labels, chosen), images, variants
    images = read_images(paths, size, cfg.data.resize)
    fn = tf.function(lambda x: apply(x, aug))
    variants = np.stack(
        [np.stack([fn(tf.constant(img)).numpy() for _ in range(n_variants)]) for img in images]
    )
    return _names(splits, files, labels, chosen), images, variants


def _names(splits, files, labels, chosen) -> list[str]:
    return [f"{splits.class_names[labels[i]]}: {files[i].rsplit('/', 1)[-1]}" for i in chosen]


def write_augment_preview(
    cfg, out_path: str | os.PathLike, n_images: int = 4, n_variants: int = 5, seed: int = 0
) -> Path:
    """Draws :func:`augmented_samples` as one grid (a row per image) and writes it as a PNG.

    Returns:
        The path written.
    """
    from tfcam.viz.gallery import image_grid
    from tfcam.viz.plots import to_png

    names, images, augmented = augmented_samples(cfg, n_images, n_variants, seed)
    tiles, titles = [], []
    for name, img, row in zip(names, images, augmented, strict=True):
        tiles += [img, *row]
        titles += [name[:28]] + [f"augmented {j + 1}" for j in range(len(row))]
    aug = ", ".join(f"{k} {v:g}" for k, v in cfg.data.augment.items() if v > 0) or "none"
    fig = image_grid(tiles, titles, cols=1 + n_variants, suptitle=f"{cfg.name}: {aug}")
    path = Path(out_path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(to_png(fig))
    return path
