"""Training callbacks: history with phases, atomic backups for ``--resume``, best checkpoint, NaN stop."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
import pandas as pd

from tfcam.errors import UserError, damaged
from tfcam.io import atomic_path, read_json, write_json
from tfcam.report.safe import markdown_code
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
    """Training loss per batch (Keras's running mean within the epoch) → ``batch_history.csv``.

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

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.rows = [r for r in self.rows if r["epoch"] < epoch]  # a re-run epoch replaces itself

    def on_train_batch_end(self, batch, logs=None):
        if logs and "loss" in logs:
            step = (self.rows[-1]["step"] + 1) if self.rows else 0
            self.rows.append({"step": step, "epoch": self.epoch, "loss": float(logs["loss"])})

    def on_epoch_end(self, epoch, logs=None):
        import pandas as pd

        from tfcam.io import write_text

        write_text(
            self.path,
            pd.DataFrame(self.rows, columns=["step", "epoch", "loss"]).to_csv(index=False),
        )


class TensorBoardPanels(keras.callbacks.Callback):
    """Per-epoch image panels and run information for TensorBoard.

    Writes into ``log_dir/panels``: at the start the resolved config as text; after each epoch a
    Grad-CAM panel for a fixed set of validation images (compiled once, reused every epoch) and
    the confusion matrix on a fixed sample of validation images. HParams go to ``log_dir`` itself,
    beside the ``train``/``validation`` runs of Keras's TensorBoard callback.

    Args:
        log_dir: The run's ``tensorboard/`` folder.
        images: Fixed validation images ``[K, H, W, 3]`` for the CAM panel (K small).
        sample: Validation images ``[M, H, W, 3]`` (or a function that loads them when first
            needed) and ``labels`` ``[M]`` for the confusion matrix.
        class_names: Label order.
        config_text: The resolved config (YAML).
        hparams: Flat ``{name: value}`` for the HParams plugin.
    """

    def __init__(
        self,
        log_dir: str | Path,
        *,
        images,
        sample,
        labels,
        class_names: list[str],
        config_text: str,
        hparams: dict,
        cams: bool = True,
        enabled: bool = True,
    ):
        super().__init__()
        #: False on workers other than the chief of a multi-worker run: nothing is written.
        self.enabled = enabled
        self.log_dir = Path(log_dir)
        self.images = images
        self.sample = sample
        self.labels = labels
        self.class_names = class_names
        self.config_text = config_text
        self.hparams = hparams
        self.cams = cams
        self._explainer = None
        self._writer = None
        self._forward = None
        #: The model to draw, when the one being trained is only part of it (the cached head).
        self.target = None
        #: ``(features, labels)`` of the validation set when the head trains on cached features:
        #: the confusion matrix then comes from the head alone, without a pass of the backbone.
        self.cached = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        if not self.enabled:
            return
        self._writer = tf.summary.create_file_writer(str(self.log_dir / "panels"))
        with self._writer.as_default():
            tf.summary.text("config", markdown_code(self.config_text), step=0)
        self._writer.flush()
        try:
            from tensorboard.plugins.hparams import api as hp

            with tf.summary.create_file_writer(str(self.log_dir)).as_default():
                hp.hparams(self.hparams, trial_id=self.log_dir.parent.name)
        except ImportError:  # tensorboard comes with tensorflow; be quiet if it does not
            pass

    def _panel(self, epoch: int):
        import numpy as np

        from tfcam.explain.api import explain
        from tfcam.explain.engine import Explainer
        from tfcam.viz.overlay import overlay

        if self._explainer is None:
            self._explainer = Explainer(
                self.target or self.model,
                class_names=self.class_names,
                input_size=tuple(self.images.shape[1:3]),
            )
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = explain(self._explainer, self.images, "gradcam")
        tiles = [overlay(self.images[i], e.heatmap[i]) for i in range(len(self.images))]
        top = np.concatenate(
            [np.clip(self.images, 0, 255).astype("uint8")[i] for i in range(len(tiles))], axis=1
        )
        return np.concatenate([top, np.concatenate(tiles, axis=1)], axis=0)

    def _confusion(self):
        import numpy as np
        import tensorflow as tf

        if self.cached is not None:
            features, labels = self.cached
            probs = np.asarray(self.model(features, training=False))
            return self._confusion_image(
                probs,
                np.asarray(labels).argmax(axis=1)
                if np.ndim(labels) == 2 and np.shape(labels)[1] > 1
                else np.asarray(labels).reshape(-1).astype(int),
            )
        if self._forward is None:
            model = self.target or self.model

            @tf.function(reduce_retracing=True)
            def forward(x):
                return model(x, training=False)

            self._forward = forward
        sample = self.sample() if callable(self.sample) else self.sample
        self.sample = sample  # loaded on first use (a cached-feature run never needs it)
        probs = np.concatenate(
            [
                np.asarray(self._forward(tf.constant(sample[i : i + 64], tf.float32)))
                for i in range(0, len(sample), 64)
            ]
        )
        return self._confusion_image(probs, np.asarray(self.labels))

    def _confusion_image(self, probs, labels):
        import numpy as np

        from tfcam.viz.plots import confusion_matrix_image

        pred = (probs[:, 0] > 0.5).astype(int) if probs.shape[-1] == 1 else probs.argmax(axis=1)
        n = len(self.class_names)
        cm = np.zeros((n, n), int)
        np.add.at(cm, (labels, pred), 1)
        return confusion_matrix_image(cm, self.class_names)

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        if not self.enabled:
            return
        with self._writer.as_default():
            if self.cams and len(self.images):
                tf.summary.image("gradcam", self._panel(epoch)[None], step=epoch)
            if len(self.labels):
                tf.summary.image("confusion_matrix", self._confusion()[None], step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()


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
