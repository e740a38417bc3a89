"""Receptive-field table vs building the model, measured side by side in one process.

For each backbone (default ResNet50 and InceptionV3 at 224 px) it prints the time to build the
classifier (random weights, what ``tfcam receptive-field --backbone`` does first), the time to
compute the whole-model table from the built graph (no forward pass), and their ratio. Each time
is the fastest of a few runs. The target: the table takes less time than building the model.

    python bench/bench_receptive_field.py [--models resnet50,inception_v3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras

from tfcam.explain.receptive_field import fields_table, receptive_fields
from tfcam.models.build import build_classifier


def fastest(fn, repeats: int):
    best, value = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default="resnet50,inception_v3")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    build_classifier(backbone="simple_cnn", num_classes=2, image_size=32)  # import and init costs
    print(f"{'model':14s} {'layers':>7s} {'build ms':>10s} {'table ms':>10s} {'build/table':>12s}")
    ok = True
    for name in args.models.split(","):

        def build(name=name):
            keras.backend.clear_session()
            return build_classifier(backbone=name, num_classes=10, image_size=args.size)

        t_build, model = fastest(build, args.repeats)
        t_table, table = fastest(
            lambda model=model: fields_table(receptive_fields(model)), args.repeats
        )
        ratio = t_build / t_table
        ok &= ratio > 1
        print(
            f"{name:14s} {len(table):7d} {t_build * 1000:10.1f} {t_table * 1000:10.1f} {ratio:11.1f}x"
        )
    print("table faster than building: yes" if ok else "table faster than building: NO")


if __name__ == "__main__":
    main()
