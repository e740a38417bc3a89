"""``tfcam fit --resume``: what a run directory says about where its training stopped.

``state.json`` is one witness among several, and the easiest to lose (a kill, a full disk, a
hand edit). The decision reads all of them:

- ``model.keras`` is written only after the last phase, so a run that has one has finished
  training, whatever its state file says; it is never trained again without ``force``.
- ``checkpoints/phase<N>_end.weights.h5`` marks each finished phase.
- ``checkpoints/backup_phase<N>/training_metadata.json`` counts the finished epochs of the phase
  in progress (written after that epoch's weights).
- ``history.csv`` may hold an epoch more than the backup (a kill between the two writes); rows
  past the backup are dropped, since those epochs will be trained again, so that every epoch
  appears once and its row describes the weights that were kept.

This module does not import TensorFlow.
"""

from __future__ import annotations

import json
import logging
import shutil
from typing import Any

import pandas as pd

from tfcam.config import ExperimentConfig
from tfcam.errors import UserError
from tfcam.io import atomic_path
from tfcam.runs import Run, read_table

log = logging.getLogger("tfcam")

#: Files and folders a retraining (``force``) replaces; model, metrics and report stay until the
#: new ones are written over them.
RETRAIN_REMOVES = ("checkpoints", "history.csv", "batch_history.csv", "tensorboard")


def phase2_start(cfg: ExperimentConfig, history: pd.DataFrame | None) -> int:
    """The epoch phase 2 starts after (0-based): phase 1's last epoch in ``history.csv``, which
    is before ``train.epochs`` when the head stopped early; ``train.epochs`` without a history."""
    if history is not None and len(history) and "phase" in history.columns:
        epochs = pd.to_numeric(history.loc[history["phase"] == 1, "epoch"], errors="coerce")
        if epochs.notna().any():
            return int(epochs.max())
    return cfg.train.epochs


def planned_phases(
    cfg: ExperimentConfig, history: pd.DataFrame | None = None
) -> list[tuple[int, int, int]]:
    """``[(phase, first_epoch, n_epochs), …]`` as :func:`tfcam.train.fit.fit` runs them (phase 2
    starts after phase 1's last epoch in ``history``, see :func:`phase2_start`)."""
    t = cfg.train
    phases = []
    if t.epochs > 0:
        phases.append((1, 0, t.epochs))
    if t.fine_tune.epochs > 0:
        phases.append((2, phase2_start(cfg, history), t.fine_tune.epochs))
    return phases


def read_history_checked(run: Run) -> pd.DataFrame | None:
    """The run's history, or None if it has none yet.

    Raises:
        UserError: ``history.csv`` exists but is not a readable history table.
    """
    path = run.history_path
    if not path.is_file() or not path.stat().st_size:
        return None
    try:
        return read_table(path, numeric=("epoch", "phase"))
    except UserError as e:
        raise UserError(
            f"{e}. Nothing was changed: move it aside to resume without it, or start a new run"
        ) from None


def _backup_epoch(run: Run, phase: int) -> int | None:
    meta = run.checkpoints / f"backup_phase{phase}" / "training_metadata.json"
    try:
        return int(json.loads(meta.read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _finished_reason(run: Run, state: dict[str, Any], state_note: str) -> str | None:
    """Why the run counts as finished, or None."""
    status = state.get("status")
    if status == "completed":
        return "state.json says completed"
    if run.model_path.is_file() and not (state.get("retrain") and status != "completed"):
        return f"its final model.keras is there; {state_note}"
    return None


def prepare_resume(run: Run, cfg: ExperimentConfig, *, force: bool = False) -> dict[str, Any]:
    """Checks that ``run`` can be resumed and brings its files into agreement; returns the state
    to continue from (``phase_done``, and ``retrain`` when ``force`` starts it again).

    Args:
        run: The run directory (its writer's lock held by the caller).
        cfg: The run's own configuration.
        force: Train a finished run again from its first epoch (its checkpoints, history and
            TensorBoard logs are removed; the old model is replaced when the new one is saved).

    Raises:
        UserError: The run already finished (without ``force``), or its history is unreadable.
    """
    state_file = run.state_path
    state = run.state()
    if not state_file.is_file():
        note = "state.json is missing"
    elif not state:
        note = "state.json is unreadable"
    else:
        note = f"state.json says {state.get('status', 'nothing')}"
    reason = _finished_reason(run, state, note)
    if reason and not force:
        raise UserError(
            f"Run '{run.path}' is already complete ({reason}); nothing to resume. "
            "Add --force to train it again, replacing its model"
        )
    if reason:
        log.warning("Training %s again from its first epoch (--force)", run.path)
        for name in RETRAIN_REMOVES:
            path = run.path / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        return {"phase_done": 0, "retrain": True}
    history = read_history_checked(run)

    phase_done = 0
    current = None
    for phase, first, _n in planned_phases(cfg, history):
        if current is None and (run.checkpoints / f"phase{phase}_end.weights.h5").is_file():
            phase_done = phase
        elif current is None:
            current = (phase, first)
    if history is not None and current is not None:
        phase, first = current
        covered = _backup_epoch(run, phase)
        covered = first if covered is None else covered
        keep = (history["phase"] < phase) | (
            (history["phase"] == phase) & (history["epoch"] <= covered)
        )
        if not keep.all():
            log.info(
                "history.csv has epochs past the last checkpoint (epoch %d); they are trained again",
                covered,
            )
            with atomic_path(run.history_path) as tmp:
                history[keep].to_csv(tmp, index=False)
    if state.get("phase_done", phase_done) != phase_done:
        log.info("Finished phases from the checkpoints: %d", phase_done)
    out: dict[str, Any] = {"phase_done": phase_done}
    if state.get("retrain"):
        out["retrain"] = True
    return out
