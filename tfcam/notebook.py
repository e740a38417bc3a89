"""The notebook face: a trained run in one line, predictions and explanations in one more.

::

    import tfcam

    run = tfcam.load_run("runs/shapes-20261123-101500")
    run.predict(["cat.jpg", "dog.png"])             # a DataFrame: path, predicted, probability, top_k
    e = run.explain(["cat.jpg", "dog.png"], "gradcam")
    e.heatmap.shape                                  # (2, H, W), float32 in [0, 1]
    e.show()                                         # a matplotlib grid of overlays

Any Keras classifier works the same way through :class:`Explainer`. Images may be paths, folders,
Pillow images, NumPy arrays or tensors (:func:`tfcam.explain.images.to_batch`), read at the run's
size and resize mode exactly as training read them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from tfcam.config import ExperimentConfig
from tfcam.errors import UserError
from tfcam.explain import engine
from tfcam.explain.api import explain as _explain
from tfcam.explain.explanation import Explanation
from tfcam.explain.images import Batch, to_batch
from tfcam.runs import Run, read_history, read_table


class Explainer(engine.Explainer):
    """Explains and predicts any Keras image classifier from whatever images a notebook holds.

    Args:
        model: A Keras 3 classifier taking ``[N, H, W, 3]`` pixels.
        class_names: Names of its classes (default ``"0"``, ``"1"``, …).
        image_size: ``(H, W)`` or one side; inferred from the model's input when it is fixed.
        resize: How images of another size are brought to it: ``stretch`` (default), ``pad``,
            ``crop`` or ``native``.
        **kwargs: The engine's options: ``score``, ``batch_size``, ``align_corners``.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        class_names: Sequence[str] | None = None,
        image_size: int | Sequence[int] | None = None,
        resize: str = "stretch",
        **kwargs,
    ):
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        super().__init__(model, class_names=class_names, input_size=image_size, **kwargs)
        self.resize = resize

    def batch(self, images) -> Batch:
        """The images as this model takes them (see :func:`tfcam.explain.images.to_batch`)."""
        return to_batch(images, self.input_size, self.resize)

    def explain(
        self,
        images,
        method: str = "gradcam",
        *,
        layer: str | Sequence[str] | None = None,
        target=None,
        **options,
    ) -> Explanation:
        """Heatmaps of ``method`` for the images.

        Args:
            images: Paths, a folder, Pillow images, NumPy arrays or a ``tf.Tensor``.
            method: Any method of ``tfcam explain --list-methods`` (default ``gradcam``).
            layer: A layer name, or several (``.heatmaps`` then holds one map set per layer);
                default: the backbone's last convolutional block.
            target: The class to explain: None (the predicted one), a name or index, or one per
                image.
            **options: The method's options (``max_n``, ``samples``, ``aug_smooth`` …).

        Returns:
            An :class:`~tfcam.explain.explanation.Explanation`: ``.heatmap`` ``[N, H, W]`` in
            [0, 1], ``.overlays()``, ``.show()``.
        """
        batch = self.batch(images)
        arrays = _explain(self, batch.images, method, layers=layer, targets=target, **options)
        return Explanation.of(arrays, batch, self.class_names)

    def predict(self, images, top_k: int = 3) -> pd.DataFrame:
        """The top classes of each image.

        Returns:
            One row per image: ``path`` (None for an image given in memory), ``predicted``,
            ``probability`` and ``top_k`` (a list of ``{"class", "probability"}``).

        Raises:
            UserError: Unreadable images, or ``top_k`` below 1.
        """
        if int(top_k) < 1:
            raise UserError(f"Invalid value for top_k: {top_k} (must be at least 1)")
        batch = self.batch(images)
        logits = self.forward_logits(batch.images)
        probs = engine.probabilities_from_logits(logits).numpy().astype(np.float64)
        names = self.class_names or [str(i) for i in range(probs.shape[1])]
        rows = []
        for path, p in zip(batch.paths, probs, strict=True):
            order = np.argsort(-p, kind="stable")[: int(top_k)]
            rows.append(
                {
                    "path": path,
                    "predicted": names[order[0]],
                    "probability": float(p[order[0]]),
                    "top_k": [{"class": names[i], "probability": float(p[i])} for i in order],
                }
            )
        return pd.DataFrame(rows, columns=["path", "predicted", "probability", "top_k"])


class LoadedRun:
    """A finished run directory, ready to predict and explain.

    Attributes:
        path: The run directory.
        config: The resolved experiment (:class:`tfcam.config.ExperimentConfig`).
        class_names: Label order of the model's outputs.
        metrics: ``metrics.json``: ``{split: {"accuracy", "loss", …}}`` (empty if not evaluated).
    """

    def __init__(self, path: str | os.PathLike):
        self._run = Run(path).require_model()
        self.path: Path = self._run.path
        self.config: ExperimentConfig = self._run.config()
        self.class_names: list[str] = self._run.class_names()
        self.metrics: dict[str, Any] = self._run.metrics()

    @functools.cached_property
    def model(self) -> keras.Model:
        """The run's ``model.keras`` (loaded on first use)."""
        from tfcam.models.build import load_model

        return load_model(self._run.model_path)

    @functools.cached_property
    def explainer(self) -> Explainer:
        """The model's :class:`Explainer` at the run's image size and resize mode."""
        size = self.config.data.image_size
        return Explainer(
            self.model,
            class_names=self.class_names,
            image_size=(size, size),
            resize=self.config.data.resize,
            batch_size=self.config.data.batch_size,
        )

    @property
    def splits(self) -> pd.DataFrame:
        """``splits.csv``: split, path and label of every image the run used."""
        if not self._run.splits_path.is_file():
            return pd.DataFrame(columns=["split", "path", "label"])
        return read_table(self._run.splits_path)

    @property
    def history(self) -> pd.DataFrame:
        """``history.csv``: one row per epoch of both phases."""
        return read_history(self._run.history_path)

    def predict(self, images, top_k: int = 3) -> pd.DataFrame:
        """Top classes of images, files or folders (see :meth:`Explainer.predict`)."""
        return self.explainer.predict(images, top_k)

    def explain(
        self, images, method: str = "gradcam", *, layer=None, target=None, **options
    ) -> Explanation:
        """Heatmaps of ``method`` for the images (see :meth:`Explainer.explain`)."""
        return self.explainer.explain(images, method, layer=layer, target=target, **options)

    def __repr__(self) -> str:
        val = self.metrics.get("val", {}).get("accuracy")
        acc = f", val_accuracy={val:.4f}" if isinstance(val, (int, float)) else ""
        return (
            f"LoadedRun('{self.path}', backbone={self.config.model.backbone!r}, "
            f"classes={self.class_names}{acc})"
        )


def load_run(path: str | os.PathLike) -> LoadedRun:
    """Opens a finished run directory (``tfcam fit``'s output).

    Raises:
        UserError: Not a run directory, no model yet, or a damaged config or class list.
    """
    return LoadedRun(path)


def fit(
    experiment: str | os.PathLike = "shapes",
    *,
    run_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | Sequence[str] = (),
    report: bool = True,
    verbose: int | str = "auto",
) -> LoadedRun:
    """Trains an experiment as ``tfcam fit`` does and opens the run.

    Args:
        experiment: A bundled experiment name or a YAML file.
        run_dir: Where to write (default ``runs/<experiment>-<time>``).
        data_dir: An image folder (``--data-dir``).
        weights: ``imagenet``, ``none`` or a weights file (``--weights``).
        overrides: ``{"train.epochs": 1}`` (typed values) or ``["train.epochs=1"]`` (``--set``).
        report: Write ``report/index.html``.
        verbose: Keras's progress: 0 silent, 1 bar, 2 one line per epoch.
    """
    from tfcam.config import load_experiment
    from tfcam.train.fit import fit as train

    typed = isinstance(overrides, Mapping)
    cfg = load_experiment(
        experiment,
        () if typed else [str(o) for o in overrides],
        data_dir=data_dir,
        weights=weights,
        extra=dict(overrides) if typed else None,
        check_paths=True,
    )
    result = train(cfg, run_dir, verbose=verbose, report=report)
    return load_run(result.run_dir)
