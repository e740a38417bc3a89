"""Learning-rate range test: train briefly while the rate grows geometrically, watch the loss.

Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017 (the range test), as
popularised by fast.ai's ``lr_find``: the rate goes from ``start`` to ``end`` over ``steps``
batches; the loss is smoothed with a bias-corrected exponential moving average; the test stops
when the smoothed loss exceeds ``diverge`` times its minimum. The suggestion is the rate where the
smoothed loss falls fastest (per decade of rate) before its minimum.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from tfcam.config import ExperimentConfig
from tfcam.errors import UserError
from tfcam.io import atomic_path, write_json, write_text
from tfcam.runs import Run

log = logging.getLogger("tfcam")


@dataclass
class LRFinderResult:
    """The sweep (``lr``, ``loss``, ``smoothed`` per batch), the suggested rate and the files."""

    table: pd.DataFrame
    suggestion: float
    out_dir: Path


class _Sweep(keras.callbacks.Callback):
    def __init__(self, start: float, end: float, steps: int, beta: float, diverge: float):
        super().__init__()
        self.start, self.end, self.steps = start, end, steps
        self.beta, self.diverge = beta, diverge
        self.rows: list[dict] = []
        self._avg = 0.0
        self._best = math.inf
        self._prev_mean = 0.0

    def rate(self, i: int) -> float:
        return self.start * (self.end / self.start) ** (i / max(self.steps - 1, 1))

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.rate(batch))

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        # Keras reports the running mean over the epoch; recover this batch's own loss.
        loss = (batch + 1) * mean - batch * self._prev_mean
        self._prev_mean = mean
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smoothed = self._avg / (1 - self.beta ** (batch + 1))
        self.rows.append({"lr": self.rate(batch), "loss": loss, "smoothed": smoothed})
        if not math.isfinite(smoothed) or smoothed > self.diverge * self._best:
            self.model.stop_training = True
        self._best = min(self._best, smoothed)


def suggest(table: pd.DataFrame) -> float:
    """The rate of steepest descent of the smoothed loss (per log-rate) before its minimum."""
    sm = table["smoothed"].to_numpy()
    lr = table["lr"].to_numpy()
    finite = np.isfinite(sm)
    if finite.sum() < 3:
        return float(lr[0])
    stop = int(np.nanargmin(np.where(finite, sm, np.inf)))
    if stop < 2:
        return float(lr[stop] / 10)
    slope = np.gradient(sm[: stop + 1], np.log10(lr[: stop + 1]))
    return float(lr[int(np.argmin(slope))])


def find_lr(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    *,
    start: float = 1e-7,
    end: float = 1.0,
    steps: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
    verbose: int = 0,
) -> LRFinderResult:
    """Runs the range test on an experiment's phase-1 setup (frozen backbone if configured).

    Writes ``lr_finder.csv``, ``lr_finder.png`` and ``lr_finder.json`` (the suggestion) into
    ``out_dir``, beside the data report and config of the folder.

    Raises:
        UserError: Bad range or step count, or the experiment's data problems.
    """
    from tfcam.data.pipeline import make_dataset
    from tfcam.models.build import set_backbone_trainable
    from tfcam.train.fit import _compile, build_model, prepare_data
    from tfcam.viz.plots import lr_finder_curve, to_png

    if not 0 < start < end:
        raise UserError(f"The rate range must satisfy 0 < start < end, got {start} … {end}")
    if steps < 5:
        raise UserError(f"--steps must be at least 5, got {steps}")
    keras.utils.set_random_seed(cfg.train.seed)
    run = Run(out_dir)
    run.create()
    run.write_config(cfg)
    splits = prepare_data(cfg, run)
    d, m = cfg.data, cfg.model
    ds = make_dataset(
        files=splits.files["train"],
        labels=splits.labels["train"],
        mode="train",
        augment=d.augment,
        seed=cfg.train.seed,
        image_size=d.image_size,
        batch_size=d.batch_size,
        num_classes=len(splits.class_names),
        resize=d.resize,
        binary=m.binary,
        cache=d.cache,
    ).repeat()
    model = build_model(cfg, len(splits.class_names))
    if cfg.train.freeze_backbone:
        set_backbone_trainable(model, False)
    _compile(model, cfg, start)
    sweep = _Sweep(start, end, steps, beta, diverge)
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=verbose, callbacks=[sweep])
    table = pd.DataFrame(sweep.rows, columns=["lr", "loss", "smoothed"])
    if table.empty:
        raise UserError("The range test recorded no batch")
    rate = suggest(table)
    out = run.path
    write_text(out / "lr_finder.csv", table.to_csv(index=False))
    with atomic_path(out / "lr_finder.png") as tmp:
        Path(tmp).write_bytes(to_png(lr_finder_curve(table, rate)))
    write_json(
        out / "lr_finder.json",
        {"suggestion": rate, "start": start, "end": end, "steps_run": len(table), "steps": steps},
    )
    return LRFinderResult(table, rate, out)
