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
from pathlib import Path
from typing import Any

import pandas as pd

from tfcam import config as config_mod
from tfcam.errors import UserError, damaged
from tfcam.io import read_json, write_json, write_text
from tfcam.locks import LOCK_FILE, DirectoryLock
from tfcam.typed import read_yaml

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
    """The history table (empty with the standard columns if the file does not exist).

    Raises:
        UserError: The file is damaged (not UTF-8 CSV, no numeric ``epoch`` column), naming it.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size:
        return read_table(path, numeric=("epoch",))
    return pd.DataFrame(columns=list(HISTORY_COLUMNS))


def read_table(path: str | Path, numeric: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV file that tfcam wrote, read with pandas.

    Args:
        path: The file.
        numeric: Columns that must be there and hold only numbers.

    Raises:
        UserError: The file is not UTF-8 CSV or lacks a numeric column, naming the file.
    """
    try:
        df = pd.read_csv(path, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise damaged(path, e) from None
    for col in numeric:
        if col not in df.columns:
            raise damaged(path, f"no '{col}' column (columns: {', '.join(map(str, df.columns))})")
        if len(df) and not pd.api.types.is_numeric_dtype(df[col]):
            raise damaged(path, f"the '{col}' column holds values that are not numbers")
    return df


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
    def create(self) -> DirectoryLock:
        """Creates the folder and takes its writer's lock; refuses one that already holds files
        (nothing is overwritten). Race-free: of two processes creating the same run at the same
        moment, exactly one gets the lock, and the other fails without touching anything.

        Returns:
            The held lock: release it when the run is written.

        Raises:
            UserError: The folder is not empty, or another process is writing it.
        """
        lock = lock_run(self.path)
        if not is_empty(self.path):
            lock.release()
            raise UserError(
                f"Run directory '{self.path}' already exists and is not empty. "
                f"Use --resume {self.path} to continue it, or choose another --run-dir"
            )
        return lock

    def clear(self) -> None:
        """Removes everything in the folder but its lock (a new run that stopped at a mistake
        before its first epoch leaves nothing behind)."""
        import shutil

        for child in self.path.iterdir():
            if child.name == LOCK_FILE:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

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
    def raw_config(self) -> dict[str, Any]:
        """``config.yaml`` as nested mappings, unchecked.

        Raises:
            UserError: Not a run directory, or its config is not a UTF-8 YAML mapping.
        """
        self.require()
        return read_yaml(self.config_path, "run config")

    def config(self) -> config_mod.ExperimentConfig:
        """The run's experiment, checked field by field.

        Raises:
            UserError: Not a run directory, or a damaged ``config.yaml`` (named in the message).
        """
        raw = self.raw_config()
        try:
            return config_mod.from_dict(raw)
        except UserError as e:
            raise damaged(self.config_path, str(e), "run config") from None

    def write_config(self, cfg: config_mod.ExperimentConfig) -> None:
        write_text(self.config_path, config_mod.to_yaml(cfg))

    def class_names(self) -> list[str]:
        if not self.class_names_path.is_file():
            raise UserError(f"Run '{self.path}' has no class_names.json")
        names = read_json(self.class_names_path)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise damaged(self.class_names_path, "expected a JSON list of class names")
        return names

    def state(self) -> dict[str, Any]:
        if not self.state_path.is_file():
            return {}
        try:
            state = read_json(self.state_path)
        except (UserError, ValueError):  # damaged, not JSON, not UTF-8: says nothing
            return {}
        return state if isinstance(state, dict) else {}

    def update_state(self, **changes: Any) -> dict[str, Any]:
        state = self.state()
        state.update(changes)
        state["updated"] = _dt.datetime.now().isoformat(timespec="seconds")
        write_json(self.state_path, state)
        return state

    def metrics(self) -> dict[str, Any]:
        """``metrics.json`` (empty before the run has any).

        Raises:
            UserError: The file is damaged, naming it.
        """
        if not self.metrics_path.is_file():
            return {}
        metrics = read_json(self.metrics_path)
        if not isinstance(metrics, dict) or not all(isinstance(m, dict) for m in metrics.values()):
            raise damaged(self.metrics_path, "expected {split: {metric: value}}")
        return metrics


def default_run_dir(experiment: str, root: str | Path = "runs") -> Path:
    """``runs/<experiment>-<YYYYmmdd-HHMMSS>``, with a suffix if that exists already."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{experiment}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def lock_run(path: str | Path, what: str = "Run directory") -> DirectoryLock:
    """The exclusive writer's lock of a run directory or sweep folder, taken; release it (or use
    it as a context manager) when done. See :class:`DirectoryLock`."""
    return DirectoryLock(path, what).acquire()


def is_empty(folder: str | Path) -> bool:
    """True if ``folder`` is missing or holds nothing but its lock file."""
    folder = Path(folder)
    return not folder.exists() or all(p.name == LOCK_FILE for p in folder.iterdir())
