"""Training callbacks: history with phases, loss per batch, atomic backups for ``--resume``, best
checkpoint, NaN stop (the TensorBoard panels are in :mod:`tfcam.train.panels`)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
import pandas as pd

from tfcam.errors import UserError, damaged
from tfcam.io import atomic_path, read_json, write_json
from tfcam.runs import HISTORY_COLUMNS, read_history, read_table


class HistoryCSV(keras.callbacks.Callback):
    """Writes ``history.csv`` after every epoch (whole file, atomically).

    Epochs are numbered from 1 across both phases. When an epoch is run again after a resume, its
    old row is replaced, so every epoch appears exactly once.

    Args:
        path: The CSV file.
        phase: Phase number written in the ``phase`` column.
    """

    def __init__(self, path: str | Path, phase: int):
        super().__init__()
        self.path = Path(path)
        self.phase = phase
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        row = {"epoch": epoch + 1, "phase": self.phase}
        for key, value in logs.items():
            row[key] = float(value)
        if "learning_rate" not in row and self.model is not None:
            try:
                row["learning_rate"] = float(
                    keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
                )
            except (AttributeError, TypeError, ValueError):
                pass
        row["seconds"] = round(time.perf_counter() - self._start, 3)
        df = read_history(self.path)
        df = df[df["epoch"] < epoch + 1] if len(df) else df
        df = (
            pd.concat([df, pd.DataFrame([row])], ignore_index=True)
            if len(df)
            else pd.DataFrame([row])
        )
        cols = [c for c in HISTORY_COLUMNS if c in df.columns] + [
            c for c in df.columns if c not in HISTORY_COLUMNS
        ]
        with atomic_path(self.path) as tmp:
            df[cols].to_csv(tmp, index=False)


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite, and remembers where."""

    def __init__(self):
        super().__init__()
        self.tripped_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.tripped_at is None:
            self.tripped_at = (self._epoch + 1, batch + 1)
            self.model.stop_training = True


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose files are written atomically and that never backs up NaN weights.

    Keras writes the weights and then the epoch counter in place; a kill between or during the two
    writes could leave a backup that does not load. Here both are written to temporary files and
    renamed, weights first, so the counter never points past the saved weights.

    Args:
        backup_dir: Folder of the backup (one per training phase).
        guard: The run's :class:`NaNGuard`; once it trips, backups stop.
    """

    def __init__(self, backup_dir: str | Path, guard: NaNGuard | None = None):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.guard = guard

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError, KeyError) as e:
            if isinstance(e, OSError) and e.errno is not None:
                raise  # a file-system error (permissions…), reported as such
            # A backup that does not load is named, not a traceback (h5py says "OSError: Unable
            # to synchronously open file" without the file's name).
            which = self._weights_path
            if isinstance(e, (json.JSONDecodeError, KeyError)):
                which = self._training_metadata_path
            raise UserError(
                f"{damaged(which, e, 'resume backup')}; delete the folder '{self.backup_dir}' "
                "to resume from the start of this phase instead"
            ) from None

    def _save_model(self):
        if self.guard is not None and self.guard.tripped_at is not None:
            return
        Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
        with atomic_path(self._weights_path, suffix=".weights.h5") as tmp:
            self.model.save_weights(str(tmp), overwrite=True)
        meta = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        with atomic_path(self._training_metadata_path) as tmp:
            tmp.write_text(json.dumps(meta))


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the best model so far as ``best.keras`` (atomically), with ``best.json`` beside it.

    The best value survives a resume: it is read back from ``best.json``.

    Args:
        folder: The checkpoints folder.
        monitor: ``val_accuracy`` (higher is better) or ``val_loss`` (lower is better).
        guard: The run's :class:`NaNGuard`; nothing is saved once it trips.
    """

    def __init__(
        self, folder: str | Path, monitor: str = "val_accuracy", guard: NaNGuard | None = None
    ):
        super().__init__()
        self.folder = Path(folder)
        self.monitor = monitor
        self.guard = guard
        self.higher_is_better = not monitor.endswith("loss")
        #: The model to save, when the one being trained is only part of it (the cached head).
        self.target: keras.Model | None = None
        info = self.info()
        self.best = info.get("value") if info else None

    @property
    def model_path(self) -> Path:
        return self.folder / "best.keras"

    @property
    def info_path(self) -> Path:
        return self.folder / "best.json"

    def info(self) -> dict:
        return read_json(self.info_path) if self.info_path.is_file() else {}

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.tripped_at is not None:
            return
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        better = self.best is None or (
            value > self.best if self.higher_is_better else value < self.best
        )
        if better:
            self.best = value
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.model_path) as tmp:
                (self.target or self.model).save(tmp)
            write_json(
                self.info_path, {"epoch": epoch + 1, "monitor": self.monitor, "value": value}
            )


class EpochCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of every epoch as ``epoch_<E>.weights.h5`` (``train.keep_epoch_checkpoints``;
    ``E`` counts from 1 across both phases), for the explorer's heatmaps over the epochs.

    Args:
        folder: The checkpoints folder.
        model: The whole classifier (while phase 1 trains a head on cached features, the
            head's weights are copied into it before this callback runs).
        guard: The run's :class:`NaNGuard`; nothing is saved once it trips.
    """

    def __init__(self, folder: str | Path, model: keras.Model, guard: NaNGuard | None = None):
        super().__init__()
        self.folder = Path(folder)
        self.whole = model
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.tripped_at is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"epoch_{epoch + 1}.weights.h5"
        with atomic_path(path, suffix=".weights.h5") as tmp:
            self.whole.save_weights(str(tmp), overwrite=True)


def step_or_cosine_schedule(
    kind: str, base_lr: float, epochs: int, *, step_every: int = 10, gamma: float = 0.1
):
    """Per-epoch learning rate within a phase: ``f(epoch_in_phase) -> lr``.

    ``constant``: ``base_lr``; ``step``: multiplied by ``gamma`` every ``step_every`` epochs;
    ``cosine``: from ``base_lr`` down towards 0 over the phase (half a cosine period).
    """

    def f(e: int) -> float:
        if kind == "step":
            return base_lr * gamma ** (e // step_every)
        if kind == "cosine":
            return 0.5 * base_lr * (1 + math.cos(math.pi * e / max(epochs, 1)))
        return base_lr

    return f


class BatchHistoryCSV(keras.callbacks.Callback):
    """Training loss of each batch → ``batch_history.csv`` (columns ``step``, ``epoch``, ``loss``).

    Keras reports in ``logs["loss"]`` the running mean of the epoch so far, weighted by batch
    size, which draws a smooth curve with a sawtooth at every epoch boundary. Each batch's own
    loss is recovered from the model's loss tracker (a ``Mean`` metric, ``total`` and ``count``):
    ``loss_k = (total_k - total_{k-1}) / (count_k - count_{k-1})``. Without a tracker, the same
    difference is taken of the running means, weighting each batch equally:
    ``loss_k = k·mean_k - (k-1)·mean_{k-1}``.

    Rows are kept in memory and the file is rewritten atomically at each epoch's end, so a killed
    run keeps every finished epoch. A resumed run appends to what is there.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict] = []
        if self.path.is_file():
            self.rows = read_table(self.path).to_dict("records")
        self.epoch = 0
        self._previous = (0.0, 0.0)  # (total, count) of the epoch so far

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.rows = [r for r in self.rows if r["epoch"] < epoch]  # a re-run epoch replaces itself
        self._previous = (0.0, 0.0)

    def _sums(self, batch: int, mean: float) -> tuple[float, float]:
        """``(total, count)`` of the loss so far this epoch."""
        tracker = getattr(self.model, "_loss_tracker", None)
        try:
            total = float(keras.ops.convert_to_numpy(tracker.total))
            count = float(keras.ops.convert_to_numpy(tracker.count))
        except (AttributeError, TypeError, ValueError):
            return mean * (batch + 1), float(batch + 1)
        if count > 0 and math.isclose(total / count, mean, rel_tol=1e-4, abs_tol=1e-6):
            return total, count
        return mean * (batch + 1), float(batch + 1)  # the tracker is not what logs report

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "loss" not in logs:
            return
        mean = float(logs["loss"])
        total, count = self._sums(batch, mean)
        before_total, before_count = self._previous
        if batch == 0 or count <= before_count:
            own = mean
        else:
            own = (total - before_total) / (count - before_count)
        self._previous = (total, count)
        step = (self.rows[-1]["step"] + 1) if self.rows else 0
        self.rows.append({"step": step, "epoch": self.epoch, "loss": own})

    def on_epoch_end(self, epoch, logs=None):
        import pandas as pd

        from tfcam.io import write_text

        write_text(
            self.path,
            pd.DataFrame(self.rows, columns=["step", "epoch", "loss"]).to_csv(index=False),
        )


class BestHead(keras.callbacks.Callback):
    """Early stopping for the head phase: stops once ``monitor`` has not improved for
    ``patience`` epochs, and at the end of training (stopped or not) puts back the weights of the
    best epoch, so the next phase starts from the best head rather than the last.

    Unlike Keras's ``EarlyStopping(restore_best_weights=True)``, the best weights are restored
    also when the phase runs out of epochs, and the epochs are recorded for ``state.json``. The
    count starts again on a resumed phase (the best weights are held in memory only).

    Args:
        patience: Epochs without improvement before stopping; 0 never stops early (the best
            epoch's weights are still restored).
        monitor: A loss (lower is better), ``val_loss`` by default.
    """

    def __init__(self, patience: int, monitor: str = "val_loss"):
        super().__init__()
        self.patience = patience
        self.monitor = monitor
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.last_epoch: int | None = None
        self.stopped_early = False
        self._weights = None
        self._wait = 0

    def on_train_begin(self, logs=None):
        self.best = self.best_epoch = self.last_epoch = self._weights = None
        self.stopped_early, self._wait = False, 0

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch + 1
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        if self.best is None or float(value) < self.best:
            self.best, self.best_epoch, self._wait = float(value), epoch + 1, 0
            self._weights = self.model.get_weights()
            return
        self._wait += 1
        if self.patience and self._wait >= self.patience:
            self.stopped_early = True
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self._weights is not None and self.best_epoch != self.last_epoch:
            self.model.set_weights(self._weights)

    def describe(self) -> str:
        """One line for the log: where the phase stopped and which epoch's weights it kept."""
        if self.best_epoch is None:
            return f"no finite {self.monitor}; the last epoch's weights are kept"
        why = (
            f"stopped at epoch {self.last_epoch}, {self.monitor} no better for {self.patience} epochs"
            if self.stopped_early
            else f"ran to epoch {self.last_epoch}"
        )
        return (
            f"{why}; kept the weights of epoch {self.best_epoch} ({self.monitor} {self.best:.4f})"
        )

    def summary(self) -> dict:
        """``{last_epoch, best_epoch, best_<monitor>, stopped_early}`` (1-based epochs)."""
        return {
            "last_epoch": self.last_epoch,
            "best_epoch": self.best_epoch,
            f"best_{self.monitor}": None if self.best is None else round(self.best, 6),
            "stopped_early": self.stopped_early,
        }
