"""The run directory: one per ``tfcam fit``, the contract between training, explaining and reports.

Layout (every file written atomically)::

    RUN/config.yaml          the fully resolved experiment
    RUN/class_names.json     label order
    RUN/splits.csv           split, path, label of every image used
    RUN/data_report.json     per-class counts, skipped and suspicious files, image sizes
    RUN/history.csv          one row per epoch, both phases, with a ``phase`` column
    RUN/metrics.json         {"val": {"accuracy": …, "loss": …, …}, "test": {…}}
    RUN/predictions_<split>.csv
    RUN/model.keras          the final model
    RUN/state.json           status of the run (running, completed, diverged, failed, interrupted)
    RUN/checkpoints/         best.keras + best.json, end-of-phase weights, backups for --resume
    RUN/tensorboard/         TensorBoard logs
    RUN/report/index.html    the run's report

This module does not import TensorFlow.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tfcam import config as config_mod
from tfcam.errors import UserError
from tfcam.io import read_json, write_json, write_text

HISTORY_COLUMNS = (
    "epoch",
    "phase",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
)


def read_history(path: str | Path) -> pd.DataFrame:
    """The history table (empty with the standard columns if the file does not exist)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size:
        return pd.read_csv(path)
    return pd.DataFrame(columns=list(HISTORY_COLUMNS))


class Run:
    """Paths and small accessors for one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # Paths -----------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def class_names_path(self) -> Path:
        return self.path / "class_names.json"

    @property
    def splits_path(self) -> Path:
        return self.path / "splits.csv"

    @property
    def data_report_path(self) -> Path:
        return self.path / "data_report.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def report_path(self) -> Path:
        return self.path / "report" / "index.html"

    def predictions_path(self, split: str) -> Path:
        return self.path / f"predictions_{split}.csv"

    # Creation and checks ---------------------------------------------------------------------
    def create(self) -> None:
        """Creates the folder; refuses one that already holds files (nothing is overwritten).

        Raises:
            UserError: The folder exists and is not empty.
        """
        if self.path.exists() and any(self.path.iterdir()):
            raise UserError(
                f"Run directory '{self.path}' already exists and is not empty. "
                f"Use --resume {self.path} to continue it, or choose another --run-dir"
            )
        self.path.mkdir(parents=True, exist_ok=True)

    def require(self) -> Run:
        """Checks that this is a run directory (it has a config).

        Raises:
            UserError: Missing folder or not a tfcam run.
        """
        if not self.path.is_dir():
            raise UserError(f"Run directory not found: '{self.path}'")
        if not self.config_path.is_file():
            raise UserError(f"'{self.path}' is not a tfcam run directory (no config.yaml)")
        return self

    def require_model(self) -> Run:
        self.require()
        if not self.model_path.is_file():
            status = self.state().get("status", "unknown")
            raise UserError(
                f"Run '{self.path}' has no model.keras yet (status: {status}). "
                f"Finish it with: tfcam fit --resume {self.path}"
            )
        return self

    # Accessors -------------------------------------------------------------------------------
    def config(self) -> config_mod.ExperimentConfig:
        self.require()
        raw = yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}
        return config_mod.from_dict(raw)

    def write_config(self, cfg: config_mod.ExperimentConfig) -> None:
        write_text(self.config_path, config_mod.to_yaml(cfg))

    def class_names(self) -> list[str]:
        if not self.class_names_path.is_file():
            raise UserError(f"Run '{self.path}' has no class_names.json")
        return list(read_json(self.class_names_path))

    def state(self) -> dict[str, Any]:
        if not self.state_path.is_file():
            return {}
        try:
            return read_json(self.state_path)
        except json.JSONDecodeError:
            return {}

    def update_state(self, **changes: Any) -> dict[str, Any]:
        state = self.state()
        state.update(changes)
        state["updated"] = _dt.datetime.now().isoformat(timespec="seconds")
        write_json(self.state_path, state)
        return state

    def metrics(self) -> dict[str, Any]:
        return read_json(self.metrics_path) if self.metrics_path.is_file() else {}


def default_run_dir(experiment: str, root: str | Path = "runs") -> Path:
    """``runs/<experiment>-<YYYYmmdd-HHMMSS>``, with a suffix if that exists already."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{experiment}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path
