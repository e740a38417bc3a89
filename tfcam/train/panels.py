"""TensorBoard panels written during training: labelled Grad-CAM tiles, the confusion matrix with
full class names, the resolved config, and HParams with metrics for a single run.

Everything tfcam writes goes to the run ``panels`` of ``RUN/tensorboard`` under one tag prefix,
``tfcam/``, beside Keras's own ``train`` and ``validation`` runs. The confusion matrix is a
matplotlib figure turned into an image, as TensorFlow's guide "Displaying image data in
TensorBoard" does (https://www.tensorflow.org/tensorboard/image_summaries).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from tfcam.report.safe import markdown_code

#: The tag prefix of everything tfcam writes (TensorBoard groups cards by it).
PREFIX = "tfcam/"
#: Side of a Grad-CAM tile in the panel, in pixels.
TILE_PX = 224
#: Tiles per row of the Grad-CAM panel.
TILE_COLS = 4
#: Epoch metrics repeated in the ``panels`` run, so that its HParams session has metric columns.
HPARAM_METRICS = {
    "val_accuracy": "validation accuracy",
    "val_loss": "validation loss",
    "accuracy": "training accuracy",
    "loss": "training loss",
}


class TensorBoardPanels(keras.callbacks.Callback):
    """Per-epoch image panels and run information for TensorBoard.

    Writes into ``log_dir/panels``: at the start the resolved config as text and the HParams
    session (the config's main fields, with :data:`HPARAM_METRICS` as its metric columns); after
    each epoch a Grad-CAM panel for a fixed set of validation images (``TILE_PX`` pixels a tile,
    titled with the true class, the predicted class and its probability; compiled once, reused
    every epoch), the confusion matrix on a fixed sample of validation images, and the epoch's
    metrics.

    Args:
        log_dir: The run's ``tensorboard/`` folder.
        images: Fixed validation images ``[K, H, W, 3]`` for the CAM panel (K small).
        image_labels: Their true classes ``[K]`` (indices into ``class_names``).
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
        image_labels=None,
        cams: bool = True,
        enabled: bool = True,
    ):
        super().__init__()
        #: False on workers other than the chief of a multi-worker run: nothing is written.
        self.enabled = enabled
        self.log_dir = Path(log_dir)
        self.images = images
        self.image_labels = image_labels
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

        if not self.enabled or self._writer is not None:
            return  # written once, even when both phases train with this callback
        self._writer = tf.summary.create_file_writer(str(self.log_dir / "panels"))
        with self._writer.as_default():
            tf.summary.text(PREFIX + "config", markdown_code(self.config_text), step=0)
            try:
                from tensorboard.plugins.hparams import api as hp
            except ImportError:  # tensorboard comes with tensorflow; be quiet if it does not
                pass
            else:
                # The session lives in the run that holds the metric scalars: the HParams
                # plugin finds a session's metrics only in its own run and the runs below it.
                hp.hparams_config(
                    hparams=[hp.HParam(k, hp.Discrete([v])) for k, v in self.hparams.items()],
                    metrics=[
                        hp.Metric(PREFIX + k, display_name=v) for k, v in HPARAM_METRICS.items()
                    ],
                )
                hp.hparams(self.hparams, trial_id=self.log_dir.parent.name)
        self._writer.flush()

    def panel(self) -> np.ndarray:
        """The Grad-CAM panel of the fixed images as uint8 RGB."""
        import warnings

        import cv2

        from tfcam.explain.api import explain
        from tfcam.explain.engine import Explainer
        from tfcam.viz.gallery import labelled_tiles, shorten
        from tfcam.viz.overlay import overlay, to_uint8

        if self._explainer is None:
            self._explainer = Explainer(
                self.target or self.model,
                class_names=self.class_names,
                input_size=tuple(self.images.shape[1:3]),
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = explain(self._explainer, self.images, "gradcam")
        probs = np.asarray(e.probabilities)
        pred = probs.argmax(axis=1)
        names = [shorten(str(c), 22) for c in self.class_names]
        tiles, titles, colours = [], [], []
        for i, image in enumerate(self.images):
            h, w = image.shape[:2]
            s = TILE_PX / max(h, w)
            # Enlarged first, so the heatmap is blended smoothly at the tile's own size.
            big = cv2.resize(
                to_uint8(image), (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR
            )
            tiles.append(overlay(big, e.heatmap[i]))
            p = int(pred[i])
            line = f"pred: {names[p]} {probs[i, p]:.2f}"
            if self.image_labels is not None:
                y = int(self.image_labels[i])
                titles.append(f"true: {names[y]}\n{line}")
                colours.append("black" if y == p else "crimson")
            else:
                titles.append(line)
                colours.append("black")
        return labelled_tiles(tiles, titles, colours=colours, cols=TILE_COLS, tile_px=TILE_PX)

    # Kept for bench/bench_tensorboard_panels.py, which times the panel per epoch.
    def _panel(self, epoch: int) -> np.ndarray:
        return self.panel()

    def _confusion(self) -> np.ndarray:
        import tensorflow as tf

        if self.cached is not None:
            features, labels = self.cached
            probs = np.asarray(self.model(features, training=False))
            return self.confusion_image(
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
        return self.confusion_image(probs, np.asarray(self.labels))

    def confusion_image(self, probs, labels) -> np.ndarray:
        """The confusion matrix of ``probs`` against ``labels`` drawn with full class names."""
        from tfcam.viz.plots import confusion_matrix_figure, figure_array

        probs = np.asarray(probs)
        pred = (probs[:, 0] > 0.5).astype(int) if probs.shape[-1] == 1 else probs.argmax(axis=1)
        n = len(self.class_names)
        cm = np.zeros((n, n), int)
        np.add.at(cm, (np.asarray(labels, int), pred), 1)
        return figure_array(confusion_matrix_figure(cm, self.class_names), dpi=80)

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        if not self.enabled:
            return
        with self._writer.as_default():
            if self.cams and len(self.images):
                tf.summary.image(PREFIX + "gradcam", self.panel()[None], step=epoch)
            if len(self.labels):
                tf.summary.image(PREFIX + "confusion_matrix", self._confusion()[None], step=epoch)
            for key in HPARAM_METRICS:
                if (logs or {}).get(key) is not None:
                    tf.summary.scalar(PREFIX + key, float(logs[key]), step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()


def tensorboard_panels(cfg, run, splits, *, enabled: bool = True) -> TensorBoardPanels:
    """The TensorBoard panels callback of a run with its fixed validation images, loaded once;
    with ``enabled`` false (workers other than the chief) it writes nothing.

    Args:
        cfg: The experiment (:class:`tfcam.config.ExperimentConfig`).
        run: The :class:`tfcam.runs.Run`.
        splits: The run's :class:`tfcam.data.sources.Splits`.
    """
    from tfcam.config import to_yaml
    from tfcam.data.pipeline import read_images

    files, labels = splits.files.get("val", []), splits.labels.get("val", [])
    k = cfg.train.tensorboard_cams
    # CAM panel: one image per class in turn, so every class shows up.
    by_class: dict[int, list[str]] = {}
    for f, y in zip(files, labels, strict=True):
        by_class.setdefault(y, []).append(f)
    chosen: list[tuple[str, int]] = []
    while len(chosen) < min(k, len(files)):
        for y in sorted(by_class):
            if by_class[y] and len(chosen) < k:
                chosen.append((by_class[y].pop(0), y))
    size, resize = cfg.data.image_size, cfg.data.resize
    images = (
        read_images([f for f, _ in chosen], size, resize)
        if chosen
        else np.zeros((0, size, size, 3), "float32")
    )
    # Confusion matrix: an evenly spread, capped sample (the full set may be large).
    idx = np.linspace(0, len(files) - 1, min(256, len(files))).round().astype(int) if files else []

    def sample() -> np.ndarray:
        if not len(idx):
            return np.zeros((0, size, size, 3), "uint8")
        return read_images([files[i] for i in idx], size, resize).astype("uint8")

    t, d, m = cfg.train, cfg.data, cfg.model
    hparams = {
        "backbone": m.backbone,
        "image_size": d.image_size,
        "batch_size": d.batch_size,
        "optimizer": t.optimizer,
        "learning_rate": t.learning_rate,
        "schedule": t.schedule,
        "epochs": t.epochs,
        "fine_tune_epochs": t.fine_tune.epochs,
        "label_smoothing": t.label_smoothing,
        "freeze_backbone": t.freeze_backbone,
    }
    return TensorBoardPanels(
        run.tensorboard,
        images=images,
        image_labels=[y for _, y in chosen],
        sample=sample,
        labels=[labels[i] for i in idx],
        class_names=list(splits.class_names),
        config_text=to_yaml(cfg),
        hparams=hparams,
        cams=k > 0,
        enabled=enabled,
    )
