"""Training speed on hymenoptera with MobileNetV2 at 224 px, measured side by side in one process.

1. Head-only training (frozen backbone, no augmentation) for 20 epochs, with the feature cache
   and without it (``train.feature_cache``): wall time of ``fit`` each way and their ratio.
   Target: cached ≤ 0.15× uncached.
2. The ``tf.data`` input pipeline alone (read, decode, resize, augment, batch) against the
   training step alone (the same model and batch size on batches already in memory), in images
   per second. Target: the pipeline ≥ 3× the step, so input is never the bottleneck.

Uses ../shared/data (or $TFCAM_SHARED_DATA): the hymenoptera photos and the MobileNetV2 weights.

    python bench/bench_train.py [--epochs 20] [--batches 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import tensorflow as tf

from tfcam.config import load_experiment
from tfcam.data.pipeline import make_dataset
from tfcam.data.sources import load_splits
from tfcam.models.build import build_classifier, set_backbone_trainable
from tfcam.paths import shared_data_dir
from tfcam.train.fit import _compile, fit


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batches", type=int, default=30, help="batches timed for part 2")
    args = ap.parse_args()
    root = shared_data_dir()
    weights = root / "weights" / "mobilenet_v2_1.0_224_no_top.weights.h5"
    data = root / "hymenoptera"
    if not weights.is_file() or not data.is_dir():
        sys.exit(f"needs {weights} and {data}")
    base = [
        f"data.data_dir={data}",
        "model.backbone=mobilenet_v2",
        f"model.weights={weights}",
        "data.augment.hflip=0",
        f"train.epochs={args.epochs}",
        "train.head_patience=0",  # the same number of epochs in both arms
        "train.tensorboard_cams=0",
    ]
    print(
        f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU(s); hymenoptera, MobileNetV2 224 px\n"
    )

    # 1. Feature cache ------------------------------------------------------------------------
    times = {}
    accs = {}
    with tempfile.TemporaryDirectory() as tmp:
        # One-time process costs (TensorFlow start-up, first graph builds) go to a warm-up run,
        # not to whichever arm happens to run first.
        fit(
            load_experiment("shapes_tiny", ["train.epochs=1"]),
            Path(tmp) / "warm",
            verbose=0,
            report=False,
        )
        for cached in (True, False):
            cfg = load_experiment("folder", [*base, f"train.feature_cache={str(cached).lower()}"])
            keras.backend.clear_session()
            t0 = time.perf_counter()
            res = fit(cfg, Path(tmp) / f"run_{cached}", verbose=0, report=False)
            times[cached] = time.perf_counter() - t0
            accs[cached] = res.metrics["val"]["accuracy"]
            print(
                f"{args.epochs} head-only epochs, feature cache {'on ' if cached else 'off'}: "
                f"{times[cached]:7.1f} s   (val accuracy {accs[cached]:.4f})",
                flush=True,
            )
    ratio = times[True] / times[False]
    print(f"cached / uncached: {ratio:.3f}  (target ≤ 0.15)\n")

    # 2. Pipeline vs training step -------------------------------------------------------------
    cfg = load_experiment("folder", [*base, "data.augment.hflip=0.5"])
    splits = load_splits(cfg.data)
    n = cfg.data.batch_size
    ds = make_dataset(
        files=splits.files["train"],
        labels=splits.labels["train"],
        mode="train",
        image_size=224,
        batch_size=n,
        num_classes=2,
        augment=cfg.data.augment,
        resize=cfg.data.resize,
        seed=0,
    ).repeat()
    it = iter(ds)
    next(it)
    t0 = time.perf_counter()
    batches = [next(it) for _ in range(args.batches)]
    pipe = args.batches * n / (time.perf_counter() - t0)

    model = build_classifier(
        backbone="mobilenet_v2", num_classes=2, image_size=224, weights=str(weights)
    )
    set_backbone_trainable(model, False)
    _compile(model, cfg, 1e-3)
    mem = (
        tf.data.Dataset.from_tensor_slices(
            (tf.concat([b[0] for b in batches], 0), tf.concat([b[1] for b in batches], 0))
        )
        .batch(n)
        .cache()
    )
    model.fit(mem.take(2), epochs=1, verbose=0)  # trace
    t0 = time.perf_counter()
    model.fit(mem, epochs=1, verbose=0)
    step = args.batches * n / (time.perf_counter() - t0)
    print(f"input pipeline (read, decode, resize, flip, batch): {pipe:7.1f} images/s")
    print(f"training step (frozen backbone, batch {n}):          {step:7.1f} images/s")
    print(f"pipeline / step: {pipe / step:.2f}  (target ≥ 3)\n")
    ok = ratio <= 0.15 and pipe / step >= 3
    print("all targets met" if ok else "some targets missed")


if __name__ == "__main__":
    main()
