"""Thin and huge images: every resize mode gives Pillow's numbers with bounded memory, a thin
strip is left out of training (listed as suspicious), a huge header is refused with the limit
named, and ``data.image_size`` has an upper bound."""

from __future__ import annotations

import json
import math
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import REPO, make_folder, run_cli, write_image
from PIL import Image

from tfcam import config
from tfcam.data import pipeline as P
from tfcam.errors import UserError

MODES = ("crop", "stretch", "pad", "native")


# --------------------------------------------------------------------------------------------
# Independent computation: Pillow's antialiased bilinear resampling in float ("F") images, which
# samples input coordinate (x + 0.5) * box_width / out_width + box_left with a triangle of radius
# max(1, 1 / scale), the kernel tf.image.resize(..., antialias=True) uses.


def pil_resize(a: np.ndarray, out_hw, box=None) -> np.ndarray:
    h, w = a.shape[:2]
    box = box or (0, 0, w, h)
    return np.stack(
        [
            np.asarray(
                Image.fromarray(a[..., c].astype(np.float32), "F").resize(
                    (int(out_hw[1]), int(out_hw[0])), Image.BILINEAR, box=box
                )
            )
            for c in range(3)
        ],
        axis=-1,
    )


def reference(a: np.ndarray, size: int, mode: str) -> np.ndarray:
    h, w = a.shape[:2]
    f32 = np.float32
    if mode == "stretch":
        return pil_resize(a, (size, size))
    if mode == "crop":  # cover (the sides rounded up, in float32 as the pipeline has them), centre
        s = max(size / h, size / w)
        nh, nw = (max(math.ceil(f32(n) * f32(s)), size) for n in (h, w))
        top, left = (nh - size) // 2, (nw - size) // 2
        sy, sx = nh / h, nw / w
        return pil_resize(
            a, (size, size), (left / sx, top / sy, (left + size) / sx, (top + size) / sy)
        )
    if mode == "pad":  # fit inside, at least one pixel a side, centred as resize_with_pad
        ratio = max(w / size, h / size)
        fh, fw = h / ratio, w / ratio
        rh, rw = max(math.floor(fh), 1), max(math.floor(fw), 1)
        top, left = math.floor((size - fh) / 2), math.floor((size - fw) / 2)
        out = np.zeros((size, size, 3), np.float32)
        out[top : top + rh, left : left + rw] = pil_resize(a, (rh, rw))
        return out
    scale = min(1.0, size / max(h, w))  # native: the longer side down to the cap
    return pil_resize(a, (max(round(h * scale), 1), max(round(w * scale), 1)))


THIN = [(1, 500), (500, 1), (3, 300), (2, 1000), (7, 160), (48, 64)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", THIN, ids=lambda s: f"{s[0]}x{s[1]}")
def test_thin_resize_matches_pillow(mode, shape):
    a = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3)).astype(np.uint8)
    out = P.resize_image(tf.constant(a), 32, mode).numpy()
    ref = reference(a, 32, mode)
    assert out.shape == ref.shape
    assert out.shape == ((32, 32, 3) if mode != "native" else ref.shape)
    np.testing.assert_allclose(out, ref, atol=0.02)


def test_pad_keeps_a_thin_strip_visible():
    a = np.full((1, 4000, 3), 200, np.uint8)
    out = P.resize_image(tf.constant(a), 64, "pad").numpy()
    # One row of the strip across the width, at floor((64 - 64 / 4000) / 2) = 31; black elsewhere.
    np.testing.assert_allclose(out[31], 200.0, atol=1e-3)
    assert out[:31].max() == 0 and out[32:].max() == 0


# --------------------------------------------------------------------------------------------
# Memory, measured in a child process (a safety cap keeps a regression from taking the machine)

WORKER = """
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from tfcam.data.pipeline import read_images
shapes = {}
modes = sys.argv[1].split(",")
for path in sys.argv[2:]:
    for mode in modes:
        x = read_images([path], 224, mode)
        assert float(x.min()) >= -1 and float(x.max()) <= 255  # native pads with -1
        shapes[os.path.basename(path) + ":" + mode] = list(x.shape)
print(json.dumps(shapes))
"""
# A wrapper process, so RUSAGE_CHILDREN holds the reader alone, not earlier tests' children.
WRAPPER = """
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(r.stderr[-3000:])
print(r.stdout.strip())
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(r.returncode)
"""
LIMIT_KB = int(1.5 * 1024 * 1024)


def _cap_memory():
    # A safety cap: a regression fails the test instead of taking the shared machine's memory.
    resource.setrlimit(resource.RLIMIT_DATA, (4 << 30, 4 << 30))


def read_in_child(paths, modes) -> tuple[dict, int]:
    """``read_images`` of each path in each mode at 224 px in a fresh process: the shapes, and
    the process's peak resident memory in kilobytes."""
    cmd = [sys.executable, "-c", WORKER, ",".join(modes), *map(str, paths)]
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, *cmd],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=_cap_memory,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    shapes_line, peak_kb = out.stdout.strip().splitlines()[-2:]
    return json.loads(shapes_line), int(peak_kb)


@pytest.mark.slow
def test_thin_images_are_read_with_bounded_memory(tmp_path):
    rng = np.random.default_rng(0)
    png = write_image(tmp_path / "wide.png", rng.integers(0, 256, (1, 40000, 3), dtype=np.uint8))
    jpg = write_image(tmp_path / "strip.jpg", rng.integers(0, 256, (10000, 1, 3), dtype=np.uint8))
    assert png.stat().st_size < 150_000
    shapes, peak_kb = read_in_child([png, jpg], MODES)
    assert shapes == {
        f"{n}:{m}": [1, 224, 224, 3] for n in ("wide.png", "strip.jpg") for m in MODES
    }
    assert peak_kb < LIMIT_KB, f"peak RSS {peak_kb // 1024} MB"


@pytest.mark.slow
def test_a_20_megapixel_png_is_read_in_bounded_memory(tmp_path):
    a = np.zeros((5000, 4000, 3), np.uint8)
    a[..., 0] = np.arange(4000) % 256
    a[..., 1] = (np.arange(5000) % 256)[:, None]
    path = write_image(tmp_path / "big.png", a)
    del a
    shapes, peak_kb = read_in_child([path], ["stretch"])
    assert shapes == {"big.png:stretch": [1, 224, 224, 3]}
    # About 8 bytes a pixel over TensorFlow's own 0.65 GB (it was about 60: 1.8 GB).
    assert peak_kb < 1.1 * 1024 * 1024, f"peak RSS {peak_kb // 1024} MB"


def test_partly_transparent_png_is_composited_over_white_exactly(tmp_path):
    v, a = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")  # every value and alpha
    rgba = np.stack([v, 255 - v, v // 2, a], axis=-1).astype(np.uint8)
    path = write_image(tmp_path / "rgba.png", rgba)
    img, _ = P.decode_image(tf.io.read_file(str(path)), 32)
    f = rgba.astype(np.float64)
    want = np.floor((f[..., :3] * f[..., 3:] + 255 * (255 - f[..., 3:])) / 255 + 0.5)
    np.testing.assert_array_equal(img.numpy(), want.astype(np.uint8))


# --------------------------------------------------------------------------------------------
# Training leaves thin strips out, listed as suspicious


def test_scan_lists_a_thin_strip_as_suspicious_and_left_out(tmp_path):
    rng = np.random.default_rng(1)
    strip = write_image(tmp_path / "strip.png", rng.integers(0, 256, (1, 40000, 3), dtype=np.uint8))
    edge = write_image(tmp_path / "edge.png", rng.integers(0, 256, (10, 200, 3), dtype=np.uint8))
    tall = write_image(tmp_path / "tall.png", rng.integers(0, 256, (300, 12, 3), dtype=np.uint8))
    result = P.scan_files([str(strip), str(edge), str(tall)], image_size=32)
    assert not result.bad
    assert result.left_out == {str(strip), str(tall)}
    assert f"aspect ratio 1:40000 beyond 1:{P.MAX_ASPECT}" in result.suspicious[str(strip)]
    assert "aspect ratio 1:25 beyond 1:20; left out of training" in result.suspicious[str(tall)]
    assert str(edge) not in result.suspicious  # exactly 1:20 is kept
    assert result.sizes[str(strip)] == (1, 40000)


def test_training_leaves_a_thin_strip_out(tmp_path):
    root = make_folder(tmp_path / "data", per_class=6, size=24)
    rng = np.random.default_rng(2)
    strip = write_image(
        root / "a" / "strip.png", rng.integers(0, 256, (2, 3000, 3), dtype=np.uint8)
    )
    cfg = config.load_experiment(
        "folder",
        [
            "model.backbone=simple_cnn",
            "model.weights=none",
            "data.image_size=32",
            "data.resize=crop",
            "data.batch_size=4",
            "train.epochs=1",
            "train.freeze_backbone=false",
            "data.val_fraction=0.25",
        ],
        extra={"data.data_dir": str(root)},
    )
    from tfcam.train.fit import fit

    result = fit(cfg, tmp_path / "run", verbose=0, report=False)
    report = json.loads((result.run_dir / "data_report.json").read_text())
    used = set(pd.read_csv(result.run_dir / "splits.csv")["path"])
    strip_path = str(Path(strip).resolve())
    assert strip_path not in used and len(used) == 12
    assert sum(sum(c.values()) for c in report["counts"].values()) == 12
    reasons = {item["path"]: item["reason"] for item in report["suspicious"]}
    assert "aspect ratio 1:1500 beyond 1:20; left out of training" in reasons[strip_path]
    assert not report["skipped"]


# --------------------------------------------------------------------------------------------
# Huge headers and the size setting


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width × height`` (8-bit RGB), with one empty IDAT chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize("side", [30000, 9500])
def test_huge_png_is_refused_naming_the_pixel_limit(tmp_path, side):
    path = _png_header_only(tmp_path / "huge.png", side, side)
    with pytest.raises(UserError) as err:
        P.read_images([str(path)], 32, "crop")
    msg = str(err.value)
    assert f"{side}×{side} PNG" in msg and "89,478,485 pixels" in msg and "huge.png" in msg
    assert "MAX_IMAGE_PIXELS" in msg
    assert "too large" in P.scan_files([str(path)], image_size=32).bad[str(path)]


def test_jpeg_above_the_pixel_limit_is_decoded_at_reduced_scale(tmp_path, monkeypatch):
    a = np.random.default_rng(3).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    path = write_image(tmp_path / "p.jpg", a, quality=95)
    contents = tf.io.read_file(str(path))
    # At 64 px the short side alone would keep the full scale (80 // 2 < 64) ...
    assert P.decode_image(contents, 64)[0].shape == (80, 100, 3)
    # ... but 8000 pixels exceed a limit of 1000: 1/4 scale (500 pixels) is the first to fit.
    monkeypatch.setattr(P, "MAX_PIXELS", 1000)
    img, hw = P.decode_image(contents, 64)
    expected = tf.io.decode_jpeg(contents, channels=3, ratio=4, dct_method="INTEGER_ACCURATE")
    np.testing.assert_array_equal(img.numpy(), expected.numpy())
    assert img.shape == (20, 25, 3) and hw.numpy().tolist() == [80, 100]


def test_image_size_has_an_upper_bound():
    assert config.load_experiment("shapes_tiny", ["data.image_size=2048"]).data.image_size == 2048
    r = run_cli("fit", "-e", "shapes_tiny", "--set", "data.image_size=100000")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "data.image_size" in lines[0] and "100000" in lines[0]
    assert "from 8 to 2048" in lines[0]
