"""CIFAR-10 from its python pickle batches, turned once into a folder of PNG files.

The archive that ``keras.datasets.cifar10`` downloads (``cifar-10-python.tar.gz``) holds
``cifar-10-batches-py/`` with ``data_batch_1`` … ``data_batch_5``, ``test_batch`` and
``batches.meta``. tfcam's pipeline, reports and explanations work on image files, so the batches
are written out as ``train/<class>/<n>.png`` and ``test/<class>/<n>.png`` in the cache (a few
seconds, once per source folder); the source folder itself is never written to.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np

from tfcam.errors import UserError
from tfcam.paths import cache_dir

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
#: Where Keras keeps the folder after ``keras.datasets.cifar10.load_data()``.
KERAS_CACHE = Path("~/.keras/datasets/cifar-10-batches-py")


def _find_batches(root: Path) -> Path:
    for d in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if (d / "data_batch_1").is_file():
            return d
    raise UserError(
        f"No CIFAR-10 python batches in '{root}': expected data_batch_1 … data_batch_5, "
        "test_batch and batches.meta (the cifar-10-batches-py folder)"
    )


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch: uint8 images ``[N, 32, 32, 3]`` and int labels ``[N]``.

    Raises:
        UserError: Not a CIFAR-10 batch.
    """
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
        raise UserError(f"'{path}' is not a CIFAR-10 python batch ({type(e).__name__})") from None
    if len(images) != len(labels):
        raise UserError(f"'{path}' has {len(images)} images but {len(labels)} labels")
    return images, labels


def class_names(folder: Path) -> list[str]:
    meta = folder / META
    if not meta.is_file():
        return [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
    with open(meta, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in d[b"label_names"]]


def cifar10_folder(root: Path, *, progress=None) -> tuple[Path, list[str]]:
    """Writes (once) the PNG folder for the batches found under ``root``.

    Returns:
        ``(folder with train/ and test/, class names in label order)``.

    Raises:
        UserError: No batches, or a batch that cannot be read.
    """
    import cv2

    src = _find_batches(Path(root))
    names = class_names(src)
    parts = [TRAIN_BATCHES, (TEST_BATCH,)]
    stamp = "|".join(
        f"{n}:{(src / n).stat().st_size}:{int((src / n).stat().st_mtime)}"
        for group in parts
        for n in group
        if (src / n).is_file()
    )
    key = hashlib.sha256(f"{src.resolve()}|{stamp}".encode()).hexdigest()[:10]
    target = cache_dir() / "datasets" / f"cifar10-png-{key}"
    marker = target / ".tfcam-complete"
    if marker.is_file():
        return target, names
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if not (src / n).is_file()]
    if missing:
        raise UserError(f"CIFAR-10 folder '{src}' lacks {', '.join(missing)}")
    if progress:
        progress(f"Writing CIFAR-10 as PNG files into {target} (once) …")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, batches in (("train", TRAIN_BATCHES), ("test", (TEST_BATCH,))):
        for c in names:
            (tmp / split / c).mkdir(parents=True, exist_ok=True)
        n = 0
        for b in batches:
            images, labels = read_batch(src / b)
            if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
                raise UserError(f"'{src / b}' has labels outside 0–{len(names) - 1}")
            for img, lab in zip(images, labels, strict=True):
                cv2.imwrite(str(tmp / split / names[lab] / f"{n:05d}.png"), img[..., ::-1])
                n += 1
    (tmp / ".tfcam-complete").write_text(str(src) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target, names


def keras_cached_batches() -> Path | None:
    """Keras's own copy, when ``keras.datasets.cifar10.load_data()`` ran on this machine before."""
    p = KERAS_CACHE.expanduser()
    return p if (p / "data_batch_1").is_file() else None
