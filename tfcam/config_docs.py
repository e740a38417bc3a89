"""An experiment's resolved config as YAML with a comment on each field (``tfcam config NAME``).

The comments are the ``#:`` field comments of the dataclasses in :mod:`tfcam.config` (read from
its source, so they are written once), with a short table for the fields that have none. The YAML
loads back as an experiment file: ``tfcam config shapes > my.yaml`` then ``tfcam fit -e my.yaml``.

This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
from typing import Any

import yaml

from tfcam import config as config_mod

#: Comments for fields that have no ``#:`` comment in :mod:`tfcam.config`.
EXTRA_DOCS = {
    "name": "The experiment's name (runs are called runs/<name>-<time>).",
    "data.source": "shapes (synthetic, generated once), folder (your images) or cifar10.",
    "data.data_dir": "The image folder (--data-dir): class folders, or train/ val/ test/ of them.",
    "data.batch_size": "Images per training step (--batch-size).",
    "data.val_fraction": "Share of each class held out for validation when there is no val/.",
    "data.test_fraction": "Share held out for testing when there are no split folders at all.",
    "data.cache": "Keep decoded images in memory after the first epoch.",
    "data.augment": "Augmentation name: probability (tfcam augment-preview shows them).",
    "model.backbone": "A registered backbone (--backbone): resnet50, mobilenet_v2, simple_cnn …",
    "model.weights": "imagenet, none (random initialisation) or a weights file (--weights); "
    "for vit_*/dinov2_* also hub:PRESET (keras-hub downloads it) or a preset directory.",
    "model.options": "Constructor options of the backbone, e.g. {alpha: 0.35} for MobileNetV2.",
    "model.hidden_units": "A dense layer before the classifier (0: none).",
    "model.binary": "One sigmoid output for two classes instead of a softmax.",
    "train.epochs": "Phase 1 epochs (--epochs).",
    "train.learning_rate": "Phase 1 learning rate (--lr).",
    "train.schedule": "constant, step (times gamma every step_every epochs) or cosine decay.",
    "train.freeze_backbone": "Phase 1 trains only the head (false: the whole network).",
    "train.monitor": "What picks the best epoch (and early stopping watches).",
    "train.restore_best": "The final model is the best epoch's, not the last one's.",
    "train.early_stopping_patience": "Stop after this many epochs without improvement (0: never).",
    "train.fine_tune.epochs": "Phase 2 epochs (0: no fine-tuning).",
    "train.fine_tune.unfreeze_top": "Or: unfreeze this many backbone layers from the top.",
    "train.fine_tune.train_batchnorm": "Let batch normalisation train too (keep false for small "
    "batches).",
}

_FIELD = re.compile(r"^\s+(\w+)\s*:")


def _class_comments(cls: type) -> dict[str, str]:
    """``{field: text}`` from the ``#:`` lines just above each field of a dataclass."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source shipped: the table alone
        return {}
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = _FIELD.match(line)
        if match and pending:
            out[match.group(1)] = " ".join(pending)
        pending = []
    return out


def field_docs(cls: type = config_mod.ExperimentConfig, prefix: str = "") -> dict[str, str]:
    """``{dotted key: comment}`` for every field that has one."""
    comments = _class_comments(cls)
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = config_mod.__dict__.get(str(f.type)) if isinstance(f.type, str) else f.type
        if dataclasses.is_dataclass(hint):
            out.update(field_docs(hint, f"{key}."))
        elif f.name in comments:
            out[key] = comments[f.name]
        elif key in EXTRA_DOCS:
            out[key] = EXTRA_DOCS[key]
    return out


def _dump(name: str, value: Any) -> str:
    """``name: value`` as YAML: a mapping as an indented block, anything else on one line."""
    plain = config_mod.to_dict(value)  # tuples become lists
    if isinstance(plain, dict) and plain:
        return yaml.safe_dump({name: plain}, sort_keys=False, allow_unicode=True, width=10**6)
    style = '"' if isinstance(plain, str) and "\n" in plain else None
    text = yaml.safe_dump(
        plain, default_flow_style=True, default_style=style, allow_unicode=True, width=10**6
    )
    return f"{name}: {text.removesuffix(chr(10)).removesuffix('...').strip()}"


def commented_yaml(cfg: config_mod.ExperimentConfig, *, width: int = 100) -> str:
    """The config as YAML, each field under its comment, each section under its summary.

    ``yaml.safe_load`` of the result equals :func:`tfcam.config.to_dict` of ``cfg``.
    """
    docs = field_docs()
    lines: list[str] = []

    def comment(text: str, pad: str) -> None:
        for line in textwrap.wrap(text.replace("``", ""), max(40, width - len(pad) - 2)):
            lines.append(f"{pad}# {line}")

    def walk(obj: Any, pad: str, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value, key = getattr(obj, f.name), f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                summary = (type(value).__doc__ or "").strip().splitlines()
                if summary:
                    comment(summary[0], pad)
                lines.append(f"{pad}{f.name}:")
                walk(value, pad + "  ", f"{key}.")
                continue
            if key in docs:
                comment(docs[key], pad)
            lines.extend(pad + line for line in _dump(f.name, value).splitlines())

    walk(cfg, "", "")
    return "\n".join(lines) + "\n"
