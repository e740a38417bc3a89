"""Experiments as data: YAML files mapped onto frozen dataclasses, with ``--set key=value`` overrides.

An experiment file has four top-level keys besides ``description``: ``data``, ``model`` and
``train`` (each a dataclass below). Every field has a type; values from YAML or from the command
line are checked against it, and a wrong key or value raises :class:`tfcam.errors.UserError` naming
the key, the value and what is allowed.

This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tfcam.errors import UserError, choices_message
from tfcam.paths import experiments_dir
from tfcam.typed import RawString, coerce_dataclass, field_keys, read_yaml, set_dotted

#: Augmentations that the data pipeline knows, mapped to the probability of applying them.
# The home of these names: tfcam.data.augment.AUGMENTATIONS holds one function per name, in this
# order (tests/test_augment.py ties the two), and config checks need no TensorFlow.
AUGMENTATIONS = (
    "hflip",
    "vflip",
    "shift_scale_rotate",
    "pad_crop",
    "coarse_dropout",
    "brightness_contrast",
    "hue_saturation_value",
    "grid_distortion",
    "rotate90",
)


@dataclass(frozen=True)
class ShapesConfig:
    """The synthetic ``shapes`` dataset (generated on first use, then cached)."""

    classes: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
    train_per_class: int = 600
    val_per_class: int = 100
    test_per_class: int = 100
    resolution: int = 64
    max_distractors: int = 2
    seed: int = 1234


@dataclass(frozen=True)
class DataConfig:
    """Where images come from and how they become tensors."""

    source: Literal["shapes", "folder", "cifar10"] = "folder"
    data_dir: str | None = None
    #: Archive to download (once, into the cache) when no ``data_dir`` is given.
    url: str | None = None
    #: ``md5:<hex>`` or ``sha256:<hex>`` the downloaded archive must have.
    checksum: str | None = None
    #: At most this many gigabytes are unpacked from a download (archives inside it included):
    #: far above any bundled experiment's data (the largest, Imagewoof, is 1.3 GB), yet a stop
    #: before a zip bomb fills the disk.
    unpack_limit_gb: float = 50.0
    #: At most this many times the archive's size is unpacked (checked past 100 MB). Images barely
    #: compress (JPEG/PNG archives unpack to 1.0–1.2 times their size, CIFAR's pickles 1.1), text
    #: a few times; deflate reaches about 1000:1 on zeros and bzip2 far more.
    unpack_max_ratio: float = 200.0
    #: Name of the dataset's folder inside the archive or ``data_dir`` (searched a few levels down).
    root_name: str | None = None
    #: Use only these class folders (all when empty).
    classes: tuple[str, ...] = ()
    #: Readable names for class folders (``{n02093754: Australian terrier}``).
    class_labels: dict[str, str] = field(default_factory=dict)
    #: What ``data_dir`` must hold, for the message when the data is missing.
    layout: str = ""
    #: Side of the model input; with ``resize: native``, the cap on an image's longer side.
    image_size: int = 224
    #: ``native`` keeps each image's own size and aspect (scaled down to fit ``image_size``);
    #: batches are padded to their largest image and the padding is masked out of pooling.
    resize: Literal["stretch", "pad", "crop", "native"] = "stretch"
    batch_size: int = 32
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    split_seed: int = 42
    cache: bool = False
    augment: dict[str, float] = field(default_factory=dict)
    shapes: ShapesConfig = field(default_factory=ShapesConfig)


@dataclass(frozen=True)
class ModelConfig:
    """The transfer model: a registered backbone and a small head named ``predictions``."""

    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    options: dict[str, Any] = field(default_factory=dict)
    #: ``gap`` global average pooling; ``avgmax`` average and max pooling side by side;
    #: ``spp`` spatial pyramid pooling over ``spp_levels`` (any input size, padding masked);
    #: ``flatten``; for transformers ``token`` (the class token) or ``gap`` (the patch tokens'
    #: mean).
    head: Literal["gap", "avgmax", "spp", "flatten", "token"] = "gap"
    spp_levels: tuple[int, ...] = (4, 2, 1)
    hidden_units: int = 0
    dropout: float = 0.2
    binary: bool = False


@dataclass(frozen=True)
class FineTuneConfig:
    """Phase 2: unfreeze the top of the backbone and train on at a lower learning rate."""

    epochs: int = 0
    #: First backbone layer to unfreeze; empty (and no ``unfreeze_top``): the backbone's last
    #: stage, as the registry names it (``tfcam.models.registry.Backbone.last_stage``).
    unfreeze_from: str | None = None
    unfreeze_top: int = 0
    #: Transformers (vit_*, dinov2_*): unfreeze the last N blocks and the final norm (0: the
    #: registry's last stage, the last block).
    last_blocks: int = 0
    learning_rate: float = 1e-5
    train_batchnorm: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """Phase 1 (the head, over a frozen backbone unless ``freeze_backbone`` is false) and phase 2."""

    epochs: int = 10
    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: Literal["constant", "step", "cosine"] = "constant"
    step_every: int = 10
    gamma: float = 0.1
    label_smoothing: float = 0.0
    freeze_backbone: bool = True
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    restore_best: bool = True
    early_stopping_patience: int = 0
    #: Phase 1 over a frozen backbone (the head) stops once the validation loss has not improved
    #: for this many epochs, and keeps the head of its best epoch (0: never stops early).
    head_patience: int = 5
    #: float16 compute with float32 weights (GPUs with tensor cores); ignored, with a warning,
    #: when TensorFlow sees no GPU.
    mixed_precision: bool = False
    #: Compile training steps with XLA (often faster on GPUs, slower on CPUs).
    jit_compile: bool = False
    #: Phase 1 with a frozen backbone trains the head on cached features (of every flipped or
    #: rotated view when ``data.augment`` asks for hflip, vflip or rotate90; other augmentations
    #: turn the cache off).
    feature_cache: bool = True
    #: Splits evaluated at the end (metrics.json, the report's accuracy table).
    evaluate_splits: tuple[str, ...] = ("val", "test")
    #: Validation images in the per-epoch TensorBoard Grad-CAM panel (0: no panel).
    tensorboard_cams: int = 8
    #: Keep the weights of every epoch (checkpoints/epoch_<E>.weights.h5) for the explorer's
    #: heatmaps over the epochs (tfcam serve).
    keep_epoch_checkpoints: bool = False
    seed: int = 42
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: what ``tfcam fit`` runs and saves as ``config.yaml``."""

    name: str = "experiment"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------
# Loading


def list_experiments() -> dict[str, str]:
    """Returns ``{name: one-line description}`` for every bundled experiment, sorted by name."""
    out = {}
    for path in sorted(experiments_dir().glob("*.yaml")):
        raw = read_yaml(path)
        desc = str(raw.get("description", "")).strip().splitlines()
        out[path.stem] = desc[0] if desc else ""
    return out


def resolve_experiment_path(name_or_path: str) -> Path:
    """Maps an experiment name or a ``.yaml`` path to a file.

    Raises:
        UserError: Neither a bundled experiment nor an existing YAML file.
    """
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml") or p.parent != Path("."):
        if not p.is_file():
            raise UserError(f"Experiment file not found: '{name_or_path}'")
        return p
    bundled = experiments_dir() / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    raise UserError(choices_message("experiment", name_or_path, list_experiments()))


def load_experiment(
    name_or_path: str | Path,
    overrides: Iterable[str] = (),
    *,
    data_dir: str | Path | None = None,
    weights: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
    check_paths: bool = False,
) -> ExperimentConfig:
    """Loads an experiment by name (bundled) or path, applies overrides and checks every field.

    Args:
        name_or_path: ``"shapes"`` or ``"path/to/file.yaml"``.
        overrides: ``"section.key=value"`` strings, as given to ``--set``; applied in order.
        data_dir: The image folder (``--data-dir``): overrides ``data.data_dir``, made absolute
            when it exists so that a resumed run finds it from anywhere.
        weights: ``imagenet``, ``none`` or a weights file (``--weights``): overrides
            ``model.weights``; a file is made absolute.
        extra: Dotted keys with already-typed values applied after ``overrides``.
        check_paths: Also check what lies on disk: the data folder (or a download address) and
            a weights file. Commands do this before anything is written or TensorFlow loads.

    Returns:
        The validated configuration.

    Raises:
        UserError: Unknown experiment, key or value; with ``check_paths``, a missing folder or
            weights file.
    """
    extra = dict(extra or {})
    if data_dir is not None:
        extra["data.data_dir"] = absolute_path(data_dir)
    if weights is not None:
        extra["model.weights"] = (
            str(weights) if str(weights) in ("imagenet", "none") else absolute_path(weights)
        )
    cfg = _load(name_or_path, overrides, extra)
    if check_paths:
        check_data_config(cfg.data, cfg.name)
        from tfcam.models.hub import check_weights_path

        check_weights_path(cfg.model.backbone, cfg.model.weights)
    return cfg


def absolute_path(value: str | Path) -> str:
    """An existing path made absolute (so a resumed run finds it from anywhere); else as given."""
    p = Path(value).expanduser()
    return str(p.resolve()) if p.exists() else str(value)


def check_data_config(cfg: DataConfig, experiment: str | None = None) -> None:
    """Cheap checks of the data section before anything is written or TensorFlow is loaded.

    Raises:
        UserError: A source that needs a folder has neither ``--data-dir`` nor a download
            address, or the folder does not exist.
    """
    if cfg.source == "shapes":
        return
    if cfg.data_dir:
        path = Path(cfg.data_dir).expanduser()
        what = cfg.layout or "class-named subfolders of images"
        if path.is_file():
            raise UserError(
                f"Data folder '{cfg.data_dir}' is a file, not a folder. Expected {what}"
            )
        if not path.is_dir():
            raise UserError(f"Data folder not found: '{cfg.data_dir}'. Expected {what}")
        return
    if cfg.url:
        return
    what = (
        cfg.layout or "class-named subfolders of images, optionally inside train/, val/ and test/"
    )
    if experiment and experiment != "folder":
        raise UserError(
            f"The '{experiment}' experiment has no public download: give --data-dir DIR ({what}), "
            "or --set data.url=URL of an archive with that layout"
        )
    raise UserError(f"The '{cfg.source}' source needs --data-dir DIR ({what})")


def parse_checksum(checksum: str | None) -> tuple[str, str] | None:
    """``"md5:abc…"`` or ``"sha256:abc…"`` → ``(algorithm, hex)``; None for no check.

    Raises:
        UserError: Another form.
    """
    if not checksum:
        return None
    algo, _, hexdigest = checksum.partition(":")
    algo = algo.strip().lower()
    if algo not in ("md5", "sha1", "sha256") or not hexdigest.strip():
        raise UserError(
            f"Bad data.checksum '{checksum}'. Use md5:<hex>, sha1:<hex> or sha256:<hex>"
        )
    return algo, hexdigest.strip().lower()


def _load(name_or_path, overrides, extra) -> ExperimentConfig:
    path = resolve_experiment_path(str(name_or_path))
    raw = read_yaml(path)
    raw.setdefault("name", path.stem)
    parsed = [parse_override(item) for item in overrides]
    keys = [k for k, _ in parsed]
    if "model.backbone" in keys:
        # Options belong to the experiment's own backbone (a width for one network means nothing
        # to another): switching backbones on the command line starts from that backbone's defaults,
        # plus any model.options.* given alongside.
        model = raw.get("model")
        if isinstance(model, dict):
            model.pop("options", None)
        # Likewise a fine-tuning layer named for the experiment's backbone: the new backbone's
        # last stage (its registry row) takes its place unless one is given alongside.
        if "train.fine_tune.unfreeze_from" not in keys:
            train = raw.get("train")
            fine_tune = train.get("fine_tune") if isinstance(train, dict) else None
            if isinstance(fine_tune, dict):
                fine_tune.pop("unfreeze_from", None)
        _weights_for_new_backbone(raw, dict(parsed), extra)
    for key, value in parsed:
        set_dotted(raw, key, RawString(value))
    for key, value in extra.items():
        set_dotted(raw, key, value)
    return from_dict(raw)


def _weights_for_new_backbone(raw: dict, given: Mapping[str, str], extra: Mapping) -> None:
    """A backbone chosen on the command line that has no ImageNet weights (``simple_cnn``,
    ``resnet18_cifar``) starts from random weights and trains whole, unless weights or freezing
    are given too: ``tfcam fit DIR --backbone simple_cnn`` trains rather than stopping at
    "no ImageNet weights", and a random backbone is not left frozen."""
    from tfcam.models.registry import BACKBONES

    bb = BACKBONES.get(given["model.backbone"].strip())
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    if bb is None or bb.imagenet or "model.weights" in {*given, *extra}:
        return
    if model.get("weights", "imagenet") != "imagenet":
        return
    set_dotted(raw, "model.weights", "none")
    if "train.freeze_backbone" not in given:
        set_dotted(raw, "train.freeze_backbone", False)


def from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Builds and validates an :class:`ExperimentConfig` from nested mappings."""
    cfg = coerce_dataclass(ExperimentConfig, raw, "")
    validate(cfg)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts and lists (tuples become lists), ready for YAML."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def replace(cfg: ExperimentConfig, **dotted: Any) -> ExperimentConfig:
    """Returns a copy with dotted keys changed (``replace(cfg, **{"train.epochs": 2})``), validated."""
    raw = to_dict(cfg)
    for key, value in dotted.items():
        set_dotted(raw, key, value)
    return from_dict(raw)


def parse_override(item: str) -> tuple[str, str]:
    """Splits ``"key=value"``.

    Raises:
        UserError: No ``=`` or an empty key.
    """
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"Invalid --set '{item}': expected key=value, e.g. train.epochs=3")
    return key, value.strip()


def fine_tune_start(cfg: ExperimentConfig, layer_names: Sequence[str] = ()) -> str | None:
    """The first backbone layer phase 2 unfreezes: ``train.fine_tune.unfreeze_from``, else the
    first of the ``last_blocks`` last blocks of a transformer (counted in ``layer_names``, the
    built model's: a preset decides how many blocks there are), else the backbone's last stage;
    None when ``unfreeze_top`` counts layers instead."""
    from tfcam.models.hub import last_blocks_start
    from tfcam.models.registry import get_backbone

    ft = cfg.train.fine_tune
    if ft.unfreeze_from or ft.unfreeze_top:
        return ft.unfreeze_from or None
    bb = get_backbone(cfg.model.backbone)
    if bb.transformer and layer_names:
        return last_blocks_start(layer_names, ft.last_blocks or 1)
    return bb.last_stage


def valid_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every settable dotted key, e.g. ``["name", "description", "data.source", …]``."""
    return field_keys(cls, prefix)


# --------------------------------------------------------------------------------------------
# Validation of values that a type alone cannot express


#: Largest ``data.image_size``: one 2048×2048 float image is 50 MB, a batch of 32 is 1.6 GB, and
#: the largest ImageNet backbones train at 600 px; a larger side is a typo (100000 would ask for
#: 120 GB per image).
MAX_IMAGE_SIZE = 2048


def validate(cfg: ExperimentConfig) -> None:
    """Checks ranges and cross-field rules.

    Raises:
        UserError: The first problem found, naming the key and the value.
    """
    from tfcam.models.hub import check_hub_fields
    from tfcam.models.registry import get_backbone

    d, m, t = cfg.data, cfg.model, cfg.train

    def need(ok: bool, key: str, value: Any, rule: str) -> None:
        if not ok:
            raise UserError(f"Invalid value for {key}: {value!r} ({rule})")

    need(
        8 <= d.image_size <= MAX_IMAGE_SIZE,
        "data.image_size",
        d.image_size,
        f"must be from 8 to {MAX_IMAGE_SIZE} pixels",
    )
    need(d.batch_size >= 1, "data.batch_size", d.batch_size, "must be at least 1")
    if d.url is not None:
        need(
            d.url.split("://")[0] in ("http", "https", "file"),
            "data.url",
            d.url,
            "an http://, https:// or file:// address",
        )
    if d.checksum:
        parse_checksum(d.checksum)
    need(d.unpack_limit_gb > 0, "data.unpack_limit_gb", d.unpack_limit_gb, "must be positive")
    need(d.unpack_max_ratio >= 1, "data.unpack_max_ratio", d.unpack_max_ratio, "at least 1")
    need(len(set(d.classes)) == len(d.classes), "data.classes", list(d.classes), "no repeats")
    need(not d.classes or len(d.classes) >= 2, "data.classes", list(d.classes), "at least two")
    need(0.0 <= d.val_fraction < 1.0, "data.val_fraction", d.val_fraction, "must be in [0, 1)")
    need(0.0 <= d.test_fraction < 1.0, "data.test_fraction", d.test_fraction, "must be in [0, 1)")
    need(
        d.val_fraction + d.test_fraction < 1.0,
        "data.val_fraction + data.test_fraction",
        d.val_fraction + d.test_fraction,
        "must leave images for training",
    )
    for name, prob in d.augment.items():
        if name not in AUGMENTATIONS:
            raise UserError(choices_message("augmentation", name, AUGMENTATIONS))
        need(0.0 <= prob <= 1.0, f"data.augment.{name}", prob, "a probability in [0, 1]")
    s = d.shapes
    need(len(s.classes) >= 2, "data.shapes.classes", list(s.classes), "at least two classes")
    from tfcam.data.shapes import SHAPE_CLASSES

    for c in s.classes:
        if c not in SHAPE_CLASSES:
            raise UserError(choices_message("shape class", c, SHAPE_CLASSES))
    need(
        len(set(s.classes)) == len(s.classes), "data.shapes.classes", list(s.classes), "no repeats"
    )
    need(s.train_per_class >= 1, "data.shapes.train_per_class", s.train_per_class, "at least 1")
    need(s.val_per_class >= 1, "data.shapes.val_per_class", s.val_per_class, "at least 1")
    need(s.test_per_class >= 0, "data.shapes.test_per_class", s.test_per_class, "at least 0")
    need(s.resolution >= 16, "data.shapes.resolution", s.resolution, "at least 16")
    need(s.max_distractors >= 0, "data.shapes.max_distractors", s.max_distractors, "at least 0")

    bb = get_backbone(m.backbone)
    bb.resolve_options(m.options)
    need(
        d.image_size >= bb.min_size,
        "data.image_size",
        d.image_size,
        f"backbone {bb.name} needs at least {bb.min_size}",
    )
    if m.weights == "imagenet" and not bb.imagenet:
        other = (
            "hub:PRESET, a keras-hub preset directory" if bb.transformer else "a weights file path"
        )
        raise UserError(
            f"Backbone '{bb.name}' has no ImageNet weights. Received: model.weights='imagenet'. "
            f"Use --weights none (random initialisation) or {other}"
        )
    need(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "must be in [0, 1)")
    need(
        all(n >= 1 for n in m.spp_levels) and len(m.spp_levels) >= 1,
        "model.spp_levels",
        list(m.spp_levels),
        "one or more grid sizes, each at least 1",
    )
    need(
        m.head != "flatten" or d.resize != "native",
        "model.head",
        m.head,
        "flatten needs a fixed input size; with data.resize=native use spp, gap or avgmax",
    )
    need(
        bb.any_size or d.resize != "native",
        "data.resize",
        d.resize,
        f"backbone {bb.name}{' is a transformer: it' if bb.transformer else ''} needs a fixed "
        "input size; use stretch, pad or crop",
    )
    need(
        m.hidden_units >= 0, "model.hidden_units", m.hidden_units, "0 for none, or a positive size"
    )

    need(t.epochs >= 0, "train.epochs", t.epochs, "must be at least 0")
    for split in t.evaluate_splits:
        need(
            split in ("train", "val", "test"), "train.evaluate_splits", split, "train, val or test"
        )
    need(
        t.epochs + t.fine_tune.epochs >= 1,
        "train.epochs",
        t.epochs,
        "need at least one epoch in all",
    )
    need(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "must be positive")
    need(0.0 <= t.momentum < 1.0, "train.momentum", t.momentum, "must be in [0, 1)")
    need(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "must be at least 0")
    need(t.step_every >= 1, "train.step_every", t.step_every, "must be at least 1")
    need(0.0 < t.gamma <= 1.0, "train.gamma", t.gamma, "must be in (0, 1]")
    need(0.0 <= t.label_smoothing < 1.0, "train.label_smoothing", t.label_smoothing, "in [0, 1)")
    need(
        t.early_stopping_patience >= 0,
        "train.early_stopping_patience",
        t.early_stopping_patience,
        ">= 0",
    )
    need(t.head_patience >= 0, "train.head_patience", t.head_patience, ">= 0")
    ft = t.fine_tune
    need(ft.epochs >= 0, "train.fine_tune.epochs", ft.epochs, "must be at least 0")
    need(
        ft.learning_rate > 0, "train.fine_tune.learning_rate", ft.learning_rate, "must be positive"
    )
    need(
        ft.unfreeze_top >= 0, "train.fine_tune.unfreeze_top", ft.unfreeze_top, "must be at least 0"
    )
    check_hub_fields(bb, head=m.head, resize=d.resize, weights=m.weights, ft=ft)
    if sum([ft.unfreeze_from is not None, bool(ft.unfreeze_top), bool(ft.last_blocks)]) > 1:
        raise UserError(
            "Set only one of train.fine_tune.unfreeze_from, unfreeze_top and last_blocks"
        )
