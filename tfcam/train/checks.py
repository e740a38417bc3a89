"""Checks that a run can finish, made before its first epoch, and the check after each phase.

A layer named in a config is looked up when the model is built, not when phase 2 starts: a
fine-tuning layer of another backbone (``conv5_block1_1_conv`` with MobileNetV2) used to stop a
run after its whole first phase.
"""

from __future__ import annotations

import difflib

import keras

from tfcam.config import ExperimentConfig, fine_tune_start
from tfcam.errors import TrainingDiverged, UserError
from tfcam.models.build import backbone_layers
from tfcam.models.registry import get_backbone
from tfcam.train import callbacks as cb


def check_config_layers(cfg: ExperimentConfig, model: keras.Model) -> None:
    """Every layer the config names exists in the built model's backbone.

    Today that is the first layer phase 2 unfreezes (``train.fine_tune.unfreeze_from``, or the
    backbone's last stage from the registry when the experiment names none, or for a transformer
    the first of its ``train.fine_tune.last_blocks`` last blocks).

    Raises:
        UserError: A layer the model does not have: its key, the backbone, at most five nearest
            layer names and the backbone's own last stage.
    """
    if cfg.train.fine_tune.epochs <= 0:
        return
    names = [layer.name for layer in backbone_layers(model)]
    start = fine_tune_start(cfg, names)  # a transformer's last N blocks, counted in the model
    if start is None or start in names:
        return
    bb = get_backbone(cfg.model.backbone)
    close = difflib.get_close_matches(start, names, n=5, cutoff=0.5)
    nearest = f" Nearest: {', '.join(close)}." if close else ""
    given = cfg.train.fine_tune.unfreeze_from
    key = "train.fine_tune.unfreeze_from" if given else f"the registry's last stage of {bb.name}"
    default = (
        f" Leave it unset to fine-tune the backbone's last stage (from '{bb.last_stage}')."
        if given and bb.last_stage in names
        else ""
    )
    raise UserError(
        f"Unknown layer '{start}' ({key}): backbone '{bb.name}' has no layer of that name."
        f"{nearest}{default}"
    )


def check_diverged(guard: cb.NaNGuard, best: cb.BestCheckpoint, lr: float) -> None:
    """Stops a run whose loss became NaN or infinite, naming the checkpoint that is kept.

    Raises:
        TrainingDiverged: The guard tripped during the phase that just ended.
    """
    if guard.tripped_at is None:
        return
    epoch, batch = guard.tripped_at
    info = best.info()
    kept = (
        f"The last good checkpoint is kept: {best.model_path} (epoch {info['epoch']}, "
        f"{info['monitor']} {info['value']:.4f})."
        if info
        else "No epoch finished before that, so there is no checkpoint."
    )
    raise TrainingDiverged(
        f"Training stopped: the loss became NaN or infinite at epoch {epoch}, batch {batch}. {kept} "
        f"Try a lower learning rate (it was {lr:g})."
    )
