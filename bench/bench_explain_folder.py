"""Explaining a folder of photos against predicting it, measured side by side in one process.

``tfcam explain RUN FOLDER`` should cost little more than ``tfcam predict RUN FOLDER``: Grad-CAM
itself is about one forward pass, so what is left is reading each image once more at display size
and writing its pictures (overlay, heatmap, panel) and the index page. This script times both on
the same photos with the same model, after a warm-up of each (tracing and first-call costs), and
prints explain ÷ predict (target ≤ 1.5).

* model: MobileNetV2 1.0 at 224 px with the ImageNet weights from ``../shared/data/weights`` (a
  random two-class head: only time matters), or a run's own model with ``--run``;
* photos: the first ``--n`` of ``hymenoptera/val`` (real photos of many sizes);
* predict: the library call behind ``tfcam predict`` (read every image the run's way, then
  ``model.predict``); explain: :func:`tfcam.explain.files.explain_files` with Grad-CAM into a
  temporary folder.

Each figure is the fastest of ``--repeats`` runs (the one least disturbed by other work on the
machine), predict and explain alternating so that both see the same machine. The CPU time of
the whole process (every thread) is printed too: on a machine shared with other work it moves
much less than the wall-clock time.

    python bench/bench_explain_folder.py [--n 100] [--repeats 2] [--method gradcam] [--run RUN]
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np
import tensorflow as tf

from tfcam.data.pipeline import read_images
from tfcam.explain.files import ModelSource, explain_files, from_run
from tfcam.paths import shared_data_dir

TARGET = 1.5


def photos(n: int) -> list[str]:
    """The first ``n`` photos of hymenoptera's validation split (ants, then bees)."""
    root = shared_data_dir() / "hymenoptera" / "val"
    files = sorted(p for p in root.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(files) < n:
        sys.exit(f"need {n} photos under {root}, found {len(files)} (is TFCAM_SHARED_DATA set?)")
    return [str(f) for f in files[:n]]


def mobilenet_source() -> ModelSource:
    """MobileNetV2 1.0 at 224 px with the shared ImageNet weights and a two-class head."""
    from tfcam.models.build import build_classifier

    path = shared_data_dir() / "weights" / "mobilenet_v2_1.0_224_no_top.weights.h5"
    weights = path if path.is_file() else None
    if weights is None:
        print(f"(no weights at {path}: random weights, the times are the same)")
    model = build_classifier(
        backbone="mobilenet_v2", num_classes=2, image_size=224, weights=weights
    )
    return ModelSource(model, ["ants", "bees"], (224, 224))


def predict(source: ModelSource, files: list[str], batch_size: int = 32) -> np.ndarray:
    """What ``tfcam predict`` does (``tfcam.train.evaluate.predict_images``): read the images the
    run's way, then one ``model.predict``."""
    x = read_images(files, source.image_size, source.resize)
    return np.asarray(source.model.predict(x, verbose=0, batch_size=batch_size))


def explain(source: ModelSource, files: list[str], method: str, out: Path) -> None:
    kw = {}
    if "overlay_size" in inspect.signature(explain_files).parameters:
        kw["overlay_size"] = 448  # the default, named so the figure says what it measured
    explain_files(source, files, [method], out_dir=out, **kw)


def timed(fn) -> tuple[float, float]:
    """``(wall seconds, CPU seconds of the whole process, every thread)``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100, help="photos (default 100)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--method", default="gradcam")
    ap.add_argument("--run", help="a run directory: its model instead of MobileNetV2")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    keras.utils.disable_interactive_logging()
    files = photos(args.n)
    source = from_run(args.run) if args.run else mobilenet_source()
    print(
        f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU(s); {len(files)} photos; "
        f"{source.model.name} at {source.image_size[0]} px; {args.method}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "explain"
        warm = files[:8]  # tracing, first calls, thread pools
        predict(source, warm)
        explain(source, warm, args.method, out)
        t_pred, t_expl = [], []
        for _ in range(args.repeats):
            t_pred.append(timed(lambda: predict(source, files)))
            t_expl.append(timed(lambda: explain(source, files, args.method, out)))
    (p, p_cpu), (e, e_cpu) = min(t_pred), min(t_expl)
    n = len(files)
    print(f"predict {p:7.2f} s  ({p / n * 1000:.0f} ms/image; CPU {p_cpu:.2f} s)")
    print(f"explain {e:7.2f} s  ({e / n * 1000:.0f} ms/image; CPU {e_cpu:.2f} s)")
    ratio = e / p
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"explain / predict = {ratio:.2f}  (target ≤ {TARGET}: {verdict})")
    # On a shared machine the wall-clock ratio moves with the load; the CPU ratio much less.
    print(f"CPU time: explain / predict = {e_cpu / p_cpu:.2f}")


if __name__ == "__main__":
    main()
