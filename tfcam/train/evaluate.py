"""Evaluating a run on a split, and predicting classes of new images."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from tfcam.data.pipeline import make_dataset, read_images
from tfcam.data.sources import read_splits_csv
from tfcam.errors import UserError
from tfcam.io import atomic_path, write_json
from tfcam.models.build import load_model
from tfcam.runs import Run

log = logging.getLogger("tfcam")


def predict_probabilities(model: keras.Model, ds) -> np.ndarray:
    """Class probabilities ``[N, C]``; a single sigmoid output becomes two columns."""
    probs = model.predict(ds, verbose=0)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 2 and probs.shape[1] == 1:
        probs = np.concatenate([1.0 - probs, probs], axis=1)
    return probs


def classification_metrics(
    y_true: Sequence[int], probs: np.ndarray, class_names: Sequence[str]
) -> tuple[dict[str, Any], pd.DataFrame, np.ndarray]:
    """Accuracy, mean cross-entropy, per-class precision/recall/F1 and the confusion matrix.

    Args:
        y_true: True labels ``[N]``.
        probs: Predicted probabilities ``[N, C]``.
        class_names: Names in label order.

    Returns:
        ``(summary, per_class, confusion)``: summary with ``accuracy``, ``loss``, ``n``,
        ``macro_f1``; a DataFrame indexed by class with ``precision``, ``recall``, ``f1``,
        ``support``; the confusion matrix ``[C, C]`` (rows: true, columns: predicted).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    n_classes = len(class_names)
    y_pred = probs.argmax(axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    per_class = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support},
        index=pd.Index(list(class_names), name="class"),
    )
    p_true = (
        np.clip(probs[np.arange(len(y_true)), y_true], 1e-7, 1.0) if len(y_true) else np.zeros(0)
    )
    summary = {
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "loss": float(-np.log(p_true).mean()) if len(y_true) else float("nan"),
        "n": len(y_true),
        "macro_f1": float(f1[support > 0].mean()) if (support > 0).any() else float("nan"),
    }
    return summary, per_class, confusion


def evaluate_model_on_split(
    model: keras.Model, run: Run, split: str, *, write: bool = True
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Evaluates ``model`` on one split of the run and (by default) records the result.

    Writes ``predictions_<split>.csv`` and merges the split's entry into ``metrics.json``.

    Returns:
        ``(summary, per_class)`` as :func:`classification_metrics` gives them (summary also holds
        ``per_class`` and ``confusion`` as plain lists/dicts).

    Raises:
        UserError: The run has no such split.
    """
    cfg = run.config()
    class_names = run.class_names()
    splits = read_splits_csv(run.splits_path, class_names)
    if split not in splits.files or not splits.files[split]:
        have = ", ".join(s for s in splits.files if splits.files[s])
        raise UserError(f"Run '{run.path}' has no '{split}' split. Splits it has: {have}")
    files, labels = splits.files[split], splits.labels[split]
    ds = make_dataset(
        files=files,
        labels=None,
        mode="eval",
        image_size=cfg.data.image_size,
        batch_size=cfg.data.batch_size,
        resize=cfg.data.resize,
    )
    probs = predict_probabilities(model, ds)
    summary, per_class, confusion = classification_metrics(labels, probs, class_names)
    summary["per_class"] = {
        name: {k: (int(v) if k == "support" else float(v)) for k, v in row.items()}
        for name, row in per_class.iterrows()
    }
    summary["confusion"] = confusion.tolist()
    if write:
        pred = probs.argmax(axis=1)
        table = pd.DataFrame(
            {
                "path": files,
                "label": [class_names[i] for i in labels],
                "predicted": [class_names[i] for i in pred],
                "confidence": probs.max(axis=1),
                "p_true": probs[np.arange(len(labels)), labels],
            }
        )
        with atomic_path(run.predictions_path(split)) as tmp:
            table.to_csv(tmp, index=False)
        metrics = run.metrics()
        metrics[split] = summary
        write_json(run.metrics_path, metrics)
    return summary, per_class


def evaluate_run(run_dir: str | Path, split: str = "val") -> tuple[dict[str, Any], pd.DataFrame]:
    """Loads a finished run's model and evaluates it on ``split`` (``val`` or ``test``)."""
    run = Run(run_dir).require_model()
    model = load_model(run.model_path)
    return evaluate_model_on_split(model, run, split)


#: Images decoded at a time by :func:`predict_images` (256 at 224 px: about 150 MB of floats).
_PREDICT_CHUNK = 256


def predict_images(
    run_dir: str | Path, images: Sequence[str], top_k: int = 3
) -> list[dict[str, Any]]:
    """Top-k classes for each image file, with the run's own preprocessing.

    Returns:
        One dict per image: ``{"image", "predicted", "confidence", "top_k": [{"class", "probability"}]}``.

    Raises:
        UserError: Missing or unreadable images, a bad ``top_k``.
    """
    run = Run(run_dir).require_model()
    cfg = run.config()
    class_names = run.class_names()
    if top_k < 1:
        raise UserError(f"Invalid value for --top-k: {top_k} (must be at least 1)")
    top_k = min(top_k, len(class_names))
    paths = [str(p) for p in images]
    model = load_model(run.model_path)
    chunks = []
    for start in range(0, len(paths), _PREDICT_CHUNK):  # a folder of any size, bounded memory
        x = read_images(paths[start : start + _PREDICT_CHUNK], cfg.data.image_size,
                        cfg.data.resize)  # fmt: skip
        chunks.append(model.predict(x, verbose=0, batch_size=cfg.data.batch_size))
    probs = np.asarray(np.concatenate(chunks), dtype=np.float64)
    if probs.shape[1] == 1:
        probs = np.concatenate([1.0 - probs, probs], axis=1)
    out = []
    for path, p in zip(images, probs, strict=True):
        order = np.argsort(-p)[:top_k]
        out.append(
            {
                "image": str(path),
                "predicted": class_names[order[0]],
                "confidence": float(p[order[0]]),
                "top_k": [{"class": class_names[i], "probability": float(p[i])} for i in order],
            }
        )
    return out
