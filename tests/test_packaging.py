"""A plain (non-editable) install carries the experiments: `--experiment NAME` works from anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_plain_install_finds_experiments_from_any_directory(tmp_path):
    target = tmp_path / "site"
    import importlib.util

    # Reuse this environment's setuptools when it has one (no download); otherwise let pip fetch it.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            *isolation,
            "--target",
            str(target),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert sorted(p.name for p in (target / "tfcam" / "experiments").glob("*.yaml")) == sorted(
        p.name for p in (REPO / "experiments").glob("*.yaml")
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import tfcam, tfcam.config as c\n"
        f"assert tfcam.__file__.startswith({str(target)!r}), tfcam.__file__\n"
        "cfg = c.load_experiment('shapes', ['train.epochs=1'])\n"
        "print(cfg.name, cfg.train.epochs, sorted(c.list_experiments()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    bundled = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
    assert out.stdout.strip() == f"shapes 1 {bundled}"
