"""Experiments as data: YAML files mapped onto frozen dataclasses, with ``--set key=value`` overrides.

An experiment file has four top-level keys besides ``description``: ``data``, ``model`` and
``train`` (each a dataclass below). Every field has a type; values from YAML or from the command
line are checked against it, and a wrong key or value raises :class:`tfcam.errors.UserError` naming
the key, the value and what is allowed.

This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tfcam.errors import UserError, choices_message
from tfcam.paths import experiments_dir

#: Augmentations that the data pipeline knows, mapped to the probability of applying them.
# The names of tfcam.data.augment.AUGMENTATIONS (kept here so config checks need no TensorFlow).
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
    #: ``flatten``.
    head: Literal["gap", "avgmax", "spp", "flatten"] = "gap"
    spp_levels: tuple[int, ...] = (4, 2, 1)
    hidden_units: int = 0
    dropout: float = 0.2
    binary: bool = False


@dataclass(frozen=True)
class FineTuneConfig:
    """Phase 2: unfreeze the top of the backbone and train on at a lower learning rate."""

    epochs: int = 0
    unfreeze_from: str | None = None
    unfreeze_top: int = 0
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
    #: float16 compute with float32 weights (GPUs with tensor cores); ignored, with a warning,
    #: when TensorFlow sees no GPU.
    mixed_precision: bool = False
    #: Compile training steps with XLA (often faster on GPUs, slower on CPUs).
    jit_compile: bool = False
    #: Phase 1 with a frozen backbone and no augmentation trains the head on cached features.
    feature_cache: bool = True
    #: Splits evaluated at the end (metrics.json, the report's accuracy table).
    evaluate_splits: tuple[str, ...] = ("val", "test")
    #: Validation images in the per-epoch TensorBoard Grad-CAM panel (0: no panel).
    tensorboard_cams: int = 8
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
        raw = _read_yaml(path)
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
    extra: Mapping[str, Any] | None = None,
) -> ExperimentConfig:
    """Loads an experiment by name (bundled) or path, applies overrides and checks every field.

    Args:
        name_or_path: ``"shapes"`` or ``"path/to/file.yaml"``.
        overrides: ``"section.key=value"`` strings, as given to ``--set``; applied in order.
        extra: Dotted keys with already-typed values applied after ``overrides``
            (the CLI's ``--data-dir`` and ``--weights``).

    Returns:
        The validated configuration.

    Raises:
        UserError: Unknown experiment, key or value.
    """
    path = resolve_experiment_path(str(name_or_path))
    raw = _read_yaml(path)
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
    for key, value in parsed:
        _set_dotted(raw, key, _RawString(value))
    for key, value in (extra or {}).items():
        _set_dotted(raw, key, value)
    return from_dict(raw)


def from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Builds and validates an :class:`ExperimentConfig` from nested mappings."""
    cfg = _coerce_dataclass(ExperimentConfig, raw, "")
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
        _set_dotted(raw, key, value)
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


def valid_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every settable dotted key, e.g. ``["name", "description", "data.source", …]``."""
    keys = []
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys.extend(valid_keys(hint, f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


# --------------------------------------------------------------------------------------------
# Validation of values that a type alone cannot express


def validate(cfg: ExperimentConfig) -> None:
    """Checks ranges and cross-field rules.

    Raises:
        UserError: The first problem found, naming the key and the value.
    """
    from tfcam.models.registry import get_backbone

    d, m, t = cfg.data, cfg.model, cfg.train

    def need(ok: bool, key: str, value: Any, rule: str) -> None:
        if not ok:
            raise UserError(f"Invalid value for {key}: {value!r} ({rule})")

    need(d.image_size >= 8, "data.image_size", d.image_size, "must be at least 8")
    need(d.batch_size >= 1, "data.batch_size", d.batch_size, "must be at least 1")
    if d.url is not None:
        need(
            d.url.split("://")[0] in ("http", "https", "file"),
            "data.url",
            d.url,
            "an http://, https:// or file:// address",
        )
    if d.checksum:
        from tfcam.data.download import parse_checksum

        parse_checksum(d.checksum)
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
        raise UserError(
            f"Backbone '{bb.name}' has no ImageNet weights. Received: model.weights='imagenet'. "
            "Use --weights none (random initialisation) or a weights file path"
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
    ft = t.fine_tune
    need(ft.epochs >= 0, "train.fine_tune.epochs", ft.epochs, "must be at least 0")
    need(
        ft.learning_rate > 0, "train.fine_tune.learning_rate", ft.learning_rate, "must be positive"
    )
    need(
        ft.unfreeze_top >= 0, "train.fine_tune.unfreeze_top", ft.unfreeze_top, "must be at least 0"
    )
    if ft.epochs > 0 and ft.unfreeze_from is None and ft.unfreeze_top == 0:
        raise UserError(
            "train.fine_tune.epochs > 0 needs train.fine_tune.unfreeze_from (a layer name) "
            "or train.fine_tune.unfreeze_top (a number of layers)"
        )
    if ft.unfreeze_from is not None and ft.unfreeze_top:
        raise UserError(
            "Set only one of train.fine_tune.unfreeze_from and train.fine_tune.unfreeze_top"
        )


# --------------------------------------------------------------------------------------------
# Internals: typed coercion


class _RawString(str):
    """A value typed on the command line: parsed according to the field's type."""


_NONE_WORDS = ("null", "~", "")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"Cannot read experiment file '{path}': {first}") from None
    if not isinstance(raw, dict):
        raise UserError(f"Experiment file '{path}' must hold a mapping at the top level")
    return raw


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


_HINT_CACHE: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINT_CACHE:
        _HINT_CACHE[cls] = typing.get_type_hints(cls)
    return _HINT_CACHE[cls]


def _coerce_dataclass(cls: type, raw: Any, prefix: str) -> Any:
    if isinstance(raw, _RawString):
        raw = _parse_raw(raw, f"{prefix.rstrip('.')}")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise UserError(
            f"Invalid value for {prefix.rstrip('.') or 'the experiment'}: {raw!r} (expected a mapping)"
        )
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            where = f" under '{prefix.rstrip('.')}'" if prefix else ""
            valid = valid_keys(cls, prefix)
            close = difflib.get_close_matches(f"{prefix}{key}", valid, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserError(
                f"Unknown config key '{prefix}{key}'{where}.{hint} Valid keys: {', '.join(valid)}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def _parse_raw(text: str, key: str) -> Any:
    try:
        return yaml.safe_load(str(text))
    except yaml.YAMLError:
        raise UserError(f"Invalid value for {key}: '{text}' (not valid YAML)") from None


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, key: str) -> Any:
    bad = UserError(f"Invalid value for {key}: {value!r} (expected {_describe(tp)})")
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _coerce_dataclass(tp, value, f"{key}.")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return allowed[allowed.index(value)]  # the plain value, not a command-line string
        raise UserError(
            f"Invalid value for {key}: {value!r}. Choose from: {', '.join(map(str, allowed))}"
        )
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args:
            if value is None or (isinstance(value, _RawString) and value.lower() in _NONE_WORDS):
                return None
            rest = [a for a in args if a is not type(None)]
            return _coerce(value, rest[0], key) if len(rest) == 1 else value
        raise bad
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            if value.lower() in _TRUE_WORDS:
                return True
            if value.lower() in _FALSE_WORDS:
                return False
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if isinstance(value, _RawString):
            parsed = _parse_raw(value, key)
            value = (
                parsed
                if isinstance(parsed, list)
                else [v.strip() for v in value.split(",") if v.strip()]
            )
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
        raise bad
    if origin is dict:
        _key_tp, val_tp = typing.get_args(tp)
        if isinstance(value, _RawString):
            value = _parse_raw(value, key)
        if value is None:
            return {}
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                if isinstance(v, _RawString) and val_tp is Any:
                    v = _parse_raw(v, f"{key}.{k}")
                out[str(k)] = v if val_tp is Any else _coerce(v, val_tp, f"{key}.{k}")
            return out
        raise bad
    if tp is Any:
        return _parse_raw(value, key) if isinstance(value, _RawString) else value
    raise TypeError(f"config field {key}: unsupported type {tp!r}")
