"""Epoch time with the TensorBoard Grad-CAM panel on vs off, on the `shapes` experiment.

Trains `shapes` for a few epochs with ``train.tensorboard_cams=8`` and with ``0``, alternating,
in one process. The panel's cost per epoch is the difference of the two runs' wall times divided
by the number of epochs (so its one-time set-up counts against it too); the epoch time is the
median epoch of the runs without it (``history.csv``). The target: the panel adds at most 10%.

    python bench/bench_tensorboard_panels.py [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from tfcam.config import load_experiment
from tfcam.train import panels
from tfcam.train.fit import fit

# Also time the panel itself, directly: every call of the CAM panel's drawing.
PANEL_TIMES: list[float] = []
_panel = panels.TensorBoardPanels._panel


def _timed_panel(self, epoch):
    t0 = time.perf_counter()
    out = _panel(self, epoch)
    PANEL_TIMES.append(time.perf_counter() - t0)
    return out


panels.TensorBoardPanels._panel = _timed_panel


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    base = load_experiment("shapes")
    walls: dict[int, list[float]] = {8: [], 0: []}
    epoch_times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for cams in (0, 8):
                cfg = replace(
                    base, train=replace(base.train, epochs=args.epochs, tensorboard_cams=cams)
                )
                run_dir = Path(tmp) / f"run{rep}_{cams}"
                t0 = time.perf_counter()
                fit(cfg, run_dir, verbose=0, report=False)
                walls[cams].append(time.perf_counter() - t0)
                if cams == 0:
                    epoch_times += list(pd.read_csv(run_dir / "history.csv")["seconds"])
                print(
                    f"run {rep} panel {'on ' if cams else 'off'}: {walls[cams][-1]:.1f} s",
                    flush=True,
                )
    epoch = statistics.median(epoch_times)
    overhead = (min(walls[8]) - min(walls[0])) / args.epochs
    ratio = (epoch + overhead) / epoch
    print(f"\nepoch time without the panel (median): {epoch:.2f} s")
    print(f"panel cost per epoch (fastest runs, set-up included): {overhead:.3f} s")
    print(f"epoch time with / without the CAM panel: {ratio:.3f} (target ≤ 1.10)")
    direct = statistics.median(PANEL_TIMES[1:] or PANEL_TIMES)
    print(
        f"CAM panel timed directly: first epoch {PANEL_TIMES[0] * 1000:.0f} ms (builds the explainer), "
        f"then median {direct * 1000:.0f} ms = {direct / epoch:.1%} of an epoch"
    )
    ok = (
        ratio <= 1.10
        and (PANEL_TIMES[0] + direct * (args.epochs - 1)) / args.epochs <= 0.10 * epoch
    )
    print("target met" if ok else "target MISSED")


if __name__ == "__main__":
    main()
