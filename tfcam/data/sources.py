"""Where the images of an experiment come from: class folders, splits, the shapes cache.

Everything here is plain Python (no TensorFlow): it produces lists of ``(path, label)`` per split.
Checking that the files decode is the pipeline's job (:func:`tfcam.data.pipeline.scan_files`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfcam.config import DataConfig, check_data_config
from tfcam.data import shapes as shapes_mod
from tfcam.errors import UserError
from tfcam.paths import cache_dir

log = logging.getLogger("tfcam")

SPLITS = ("train", "val", "test")
#: Folder names accepted for each split when a dataset comes already split.
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}


@dataclass
class Splits:
    """Files and integer labels per split, and the class names (label order).

    Attributes:
        class_names: Names in label order.
        files: ``{split: [path, …]}`` for the splits that exist (``train`` always, others maybe).
        labels: ``{split: [label, …]}`` aligned with ``files``.
        root: The dataset folder.
        boxes: ``{path: (x0, y0, x1, y1)}`` target boxes where the source has them (shapes).
        how: How the splits were made, for the data report.
    """

    class_names: list[str]
    files: dict[str, list[str]]
    labels: dict[str, list[int]]
    root: str
    boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    how: str = ""
    #: ``{printable path: reason}`` of files left out before any was opened (names that are not
    #: UTF-8, symbolic links that loop).
    skipped: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{split: {class name: count}}``."""
        out = {}
        for split, labels in self.labels.items():
            c = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(self.class_names))
            out[split] = {name: int(c[i]) for i, name in enumerate(self.class_names)}
        return out

    def drop(self, bad: set[str]) -> Splits:
        """A copy without the files in ``bad``."""
        files, labels = {}, {}
        for split in self.files:
            keep = [i for i, f in enumerate(self.files[split]) if f not in bad]
            files[split] = [self.files[split][i] for i in keep]
            labels[split] = [self.labels[split][i] for i in keep]
        return Splits(
            self.class_names, files, labels, self.root, self.boxes, self.how, self.skipped
        )

    def to_rows(self) -> list[tuple[str, str, str]]:
        """``(split, path, class name)`` rows, for ``splits.csv``."""
        return [
            (split, f, self.class_names[lab])
            for split in self.files
            for f, lab in zip(self.files[split], self.labels[split], strict=True)
        ]

    @classmethod
    def from_rows(
        cls, rows: Sequence[Sequence[str]], class_names: list[str], root: str = ""
    ) -> Splits:
        index = {c: i for i, c in enumerate(class_names)}
        files: dict[str, list[str]] = {}
        labels: dict[str, list[int]] = {}
        for split, path, name in rows:
            files.setdefault(split, []).append(path)
            labels.setdefault(split, []).append(index[name])
        return cls(class_names, files, labels, root, how="read from splits.csv")


def write_splits_csv(path: Path, splits: Splits) -> None:
    from tfcam.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "path", "label"])
        w.writerows(splits.to_rows())


def read_splits_csv(path: Path, class_names: list[str]) -> Splits:
    with open(path, newline="") as f:
        rows = [(r["split"], r["path"], r["label"]) for r in csv.DictReader(f)]
    return Splits.from_rows(rows, class_names)


def dataset_root(cfg: DataConfig, *, progress=None) -> Path:
    """The dataset's folder: ``data_dir``, or the unpacked download of ``url``; then the folder
    named ``root_name`` inside it, when the experiment names one."""
    from tfcam.data.download import fetch_archive, find_root

    if cfg.data_dir:
        base = Path(cfg.data_dir).expanduser()
    elif cfg.source == "cifar10" and _keras_cifar() is not None:
        base = _keras_cifar()  # what keras.datasets.cifar10 already downloaded
    else:
        check_data_config(cfg)
        name = Path(cfg.url.split("?")[0]).name.split(".")[0] or cfg.source
        base = fetch_archive(
            cfg.url,
            name=name,
            checksum=cfg.checksum,
            progress=progress,
            unpack_limit_gb=cfg.unpack_limit_gb,
            unpack_max_ratio=cfg.unpack_max_ratio,
        )
    if cfg.source == "folder":
        return locate_dataset(base, cfg.root_name)
    return find_root(base, cfg.root_name)


def _has_files(folder: Path) -> bool:
    """Whether any visible file lies below ``folder`` (stops at the first)."""
    for _dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not n.startswith(".") for n in filenames):
            return True
    return False


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def looks_like_dataset(folder: Path) -> bool:
    """A dataset's layout: ``train/`` (maybe with ``val/``, ``test/``) of class folders, or two or
    more class folders with files below them, none of which is itself split into ``train/``…"""
    if "train" in _find_split_dirs(folder):
        return True
    subs = _subfolders(folder)
    if any(_find_split_dirs(s) for s in subs):  # folders of datasets, not of classes
        return False
    return sum(1 for s in subs if _has_files(s)) >= 2


def locate_dataset(base: Path, root_name: str | None = None) -> Path:
    """The dataset's folder in a ``--data-dir`` (or a download), found by its layout, not its name.

    The folder named ``root_name`` when the experiment names one and it is there (a download's
    own layout); else ``base`` itself when it has the layout (:func:`looks_like_dataset`); else
    the one folder directly
    inside ``base`` that has the layout (a wrapper level, as archives have); else ``base`` after
    stepping through folders that hold nothing but one folder, so that the split finds what is
    wrong and names it.
    """
    from tfcam.data.download import find_root

    base = Path(base)
    if not base.is_dir():
        return base
    if root_name:
        with contextlib.suppress(UserError):
            return find_root(base, root_name)
    if looks_like_dataset(base):
        return base
    found = [s for s in _subfolders(base) if looks_like_dataset(s)]
    if len(found) == 1:
        return found[0]
    return find_root(base)


def _keras_cifar() -> Path | None:
    from tfcam.data.cifar import keras_cached_batches

    return keras_cached_batches()


def load_splits(cfg: DataConfig, *, progress=None) -> Splits:
    """Lists the experiment's images and splits them.

    Args:
        cfg: The data section of the experiment.
        progress: Optional callable taking a message, for long steps (dataset generation,
            download, conversion).

    Returns:
        The splits, before any file is opened. Class names are the folder names, or their
        readable names from ``data.class_labels``.

    Raises:
        UserError: Missing or empty data folder, inconsistent class folders, failed download.
    """
    if cfg.source == "shapes":
        return shapes_splits(cfg, progress=progress)
    if cfg.source not in ("folder", "cifar10"):
        raise UserError(f"Unknown data source '{cfg.source}'. Choose from: shapes, folder, cifar10")
    root = dataset_root(cfg, progress=progress)
    class_order = list(cfg.classes) or None
    if cfg.source == "cifar10":
        from tfcam.data.cifar import cifar10_folder

        root, class_order = cifar10_folder(root, progress=progress)
    splits = folder_splits(
        root,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.split_seed,
        class_order=class_order,
        only=bool(cfg.classes),
    )
    if cfg.class_labels:
        splits.class_names = [cfg.class_labels.get(c, c) for c in splits.class_names]
        if len(set(splits.class_names)) != len(splits.class_names):
            raise UserError(
                f"data.class_labels gives two classes the same name: {splits.class_names}"
            )
    return splits


def shapes_splits(cfg: DataConfig, *, progress=None) -> Splits:
    """Generates (once) and lists the synthetic shapes dataset."""
    s = cfg.shapes
    per_split = {"train": s.train_per_class, "val": s.val_per_class}
    if s.test_per_class:
        per_split["test"] = s.test_per_class
    key = shapes_mod.dataset_key(s.classes, per_split, s.resolution, s.max_distractors, s.seed)
    root = Path(cfg.data_dir) if cfg.data_dir else cache_dir() / "datasets" / f"shapes-{key}"
    if not (root / "boxes.csv").is_file():
        if progress:
            n = sum(per_split.values()) * len(s.classes)
            progress(f"Generating the shapes dataset ({n} images) in {root} …")
        shapes_mod.generate(
            root,
            classes=s.classes,
            per_split=per_split,
            resolution=s.resolution,
            max_distractors=s.max_distractors,
            seed=s.seed,
        )
    splits = folder_splits(root, val_fraction=0.0, test_fraction=0.0, seed=0, class_order=s.classes)
    splits.boxes = shapes_mod.read_boxes(root)
    splits.how = "generated shapes dataset with fixed train/val/test folders"
    return splits


def _find_split_dirs(root: Path) -> dict[str, Path]:
    found = {}
    for split, aliases in SPLIT_ALIASES.items():
        for a in aliases:
            if (root / a).is_dir():
                found[split] = root / a
                break
    return found


def printable_path(path: str | os.PathLike) -> str:
    """A path as text that any UTF-8 file, page or terminal takes: bytes of a name that are not
    UTF-8 (held by Python as lone surrogates, PEP 383) are shown as ``\\xff`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _name_problem(path: str) -> str | None:
    """Why a listed file cannot be used by name, or None: names must be UTF-8 (they are written
    to splits.csv, JSON and HTML, and handed to TensorFlow as strings)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8; rename it"
    return None


def _resolve(path: Path) -> tuple[str | None, str | None]:
    """``(absolute path, None)``, or ``(None, reason)`` for a symbolic link that loops."""
    try:
        return str(path.resolve()), None
    except RuntimeError:  # Python < 3.13: "Symlink loop from …"
        return None, "a symbolic link that loops"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None, "a symbolic link that loops"
        raise


def _list_class_dir(folder: Path, skipped: dict[str, str]) -> list[str]:
    """Every non-hidden file below a class folder (recursively), sorted; decoding decides later.
    Files that cannot be used by name go to ``skipped`` (printable path → reason)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name in ("Thumbs.db", "desktop.ini"):
                continue
            path, reason = _resolve(Path(dirpath, name))
            reason = reason or _name_problem(path)
            if reason:
                skipped[printable_path(Path(dirpath, name))] = reason
            else:
                out.append(path)
    return out


def _class_folders(folder: Path, skipped: dict[str, str]) -> dict[str, list[str]]:
    out = {}
    for d in sorted(folder.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        reason = _name_problem(d.name)
        if reason:  # a class name must be written everywhere the class is named
            skipped[printable_path(d)] = f"a class folder: {reason}"
            continue
        out[d.name] = _list_class_dir(d, skipped)
    return out


def _loose_files(folder: Path) -> int:
    """How many non-hidden files lie directly in a folder (images where class folders belong)."""
    return sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _no_classes_message(where: Path) -> str:
    loose = _loose_files(where)
    if loose:
        # The usual slip: --data-dir pointing at one class's folder instead of the dataset's.
        return (
            f"Found {loose} files but no class subfolders in '{where}': it looks like a single "
            f"class's folder. Point --data-dir at the folder that holds one subfolder per class, "
            f"probably '{where.resolve().parent}'"
        )
    return f"No class folders with files in '{where}'. Expected <class>/<image> files"


def folder_splits(
    root: Path,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    class_order: Sequence[str] | None = None,
    only: bool = False,
) -> Splits:
    """Class-named subfolders, with ``train/``, ``val/``, ``test/`` used when present.

    Without split folders, every class is split on its own (stratified) with a fixed seed: each
    class keeps at least one training image, and gets at least one validation image when it has
    two or more and ``val_fraction > 0``. With only ``train/`` (and maybe ``test/``), validation
    images are split off ``train/`` the same way.

    Args:
        root: The dataset folder.
        val_fraction: Share of each class held out for validation, when splitting.
        test_fraction: Share held out for testing, when splitting and no ``test/`` exists.
        seed: Seed of the split.
        class_order: Label order; defaults to sorted folder names.
        only: Use only the folders in ``class_order`` and ignore the others.

    Raises:
        UserError: The folder is missing, has no class folders, or classes have no files.
    """
    root = Path(root).expanduser()
    if root.is_file():
        raise UserError(
            f"Data folder '{root}' is a file, not a folder. Expected class-named subfolders of images"
        )
    if not root.is_dir():
        raise UserError(
            f"Data folder not found: '{root}'. Expected class-named subfolders of images"
        )
    if _name_problem(str(root)):
        raise UserError(
            f"Data folder path '{printable_path(root)}' is not valid UTF-8; rename it or move the "
            "images to a folder with a UTF-8 name"
        )
    split_dirs = _find_split_dirs(root)
    if split_dirs and "train" not in split_dirs:
        names = ", ".join(p.name for p in split_dirs.values())
        raise UserError(f"Data folder '{root}' has {names}/ but no train/ folder")

    skipped: dict[str, str] = {}
    if split_dirs:
        per_split = {split: _class_folders(d, skipped) for split, d in split_dirs.items()}
        how = "split folders " + ", ".join(f"{p.name}/" for p in split_dirs.values())
    else:
        per_split = {"train": _class_folders(root, skipped)}
        how = "class folders without split folders"
    if skipped:
        shown = "; ".join(f"{p} ({r})" for p, r in list(skipped.items())[:10])
        more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        log.warning("Skipped %d file(s) of the data folder: %s%s", len(skipped), shown, more)

    if only and class_order is not None:
        per_split = {
            split: {c: f for c, f in classes.items() if c in class_order}
            for split, classes in per_split.items()
        }
    train_classes = [c for c, files in per_split["train"].items() if files]
    if not train_classes:
        raise UserError(_no_classes_message(split_dirs.get("train", root)))
    if class_order is not None:
        missing = [c for c in class_order if c not in train_classes]
        if missing:
            raise UserError(f"Class folders missing in '{root}': {', '.join(missing)}")
        class_names = list(class_order)
    else:
        class_names = sorted(train_classes)
    if len(class_names) < 2:
        raise UserError(
            f"Need at least two classes, found one ('{class_names[0]}') in '{split_dirs.get('train', root)}'"
        )
    for split, classes in per_split.items():
        extra = sorted(c for c, f in classes.items() if f and c not in class_names)
        if extra:
            raise UserError(
                f"Split '{split}' has classes that train/ does not: {', '.join(extra)}. "
                f"Classes: {', '.join(class_names)}"
            )

    index = {c: i for i, c in enumerate(class_names)}
    files: dict[str, list[str]] = {}
    labels: dict[str, list[int]] = {}
    for split, classes in per_split.items():
        files[split] = [f for c in class_names for f in classes.get(c, [])]
        labels[split] = [index[c] for c in class_names for _ in classes.get(c, [])]

    fractions = {}
    if "val" not in files and val_fraction > 0:
        fractions["val"] = val_fraction
    if not split_dirs and test_fraction > 0:
        fractions["test"] = test_fraction
    if fractions:
        files, labels = _stratified_split(
            files["train"], labels["train"], fractions, seed, files, labels
        )
        how += f"; held out {', '.join(f'{k} {v:g}' for k, v in fractions.items())} of train, seed {seed}"
    return Splits(class_names, files, labels, str(root), how=how, skipped=skipped)


def _stratified_split(
    train_files: list[str],
    train_labels: list[int],
    fractions: Mapping[str, float],
    seed: int,
    files: dict[str, list[str]],
    labels: dict[str, list[int]],
) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    rng = np.random.default_rng(seed)
    out_files = {k: v for k, v in files.items() if k != "train"}
    out_labels = {k: v for k, v in labels.items() if k != "train"}
    new = {"train": ([], [])} | {k: ([], []) for k in fractions}
    tl = np.asarray(train_labels)
    for lab in np.unique(tl):
        idx = np.flatnonzero(tl == lab)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        start = 0
        for split, frac in fractions.items():
            k = round(frac * n)
            if frac > 0 and k == 0 and n - start >= 2:
                k = 1
            k = min(k, n - start - 1)  # always keep one for training
            for i in idx[start : start + k]:
                new[split][0].append(train_files[i])
                new[split][1].append(int(lab))
            start += k
        for i in sorted(idx[start:]):
            new["train"][0].append(train_files[i])
            new["train"][1].append(int(lab))
    for split, (f, lab) in new.items():
        out_files[split], out_labels[split] = f, lab
    order = [s for s in ("train", "val", "test") if s in out_files]
    return {s: out_files[s] for s in order}, {s: out_labels[s] for s in order}
