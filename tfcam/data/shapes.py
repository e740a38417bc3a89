"""The synthetic ``shapes`` dataset: the embedded default experiment, generated without network.

Each image holds one *target* shape, whose class is the label, and up to ``max_distractors``
smaller shapes of other classes. Shapes are drawn at random position, scale, rotation and colour
over a random background (noise, smooth blotches, stripes, checks or a gradient). The target is
always the largest shape and is drawn last, so it is never covered; its tight bounding box is
saved per image in ``boxes.csv`` for scoring heatmaps (pointing game and friends).

Generation is deterministic: the same settings give the same bytes. It writes PNG files laid out
as ``{train,val,test}/<class>/<split>_<class>_<index>.png`` under a cache folder named after a
hash of the settings, and renames the finished folder into place, so an interrupted generation
never leaves a partial dataset behind.

This module uses NumPy and OpenCV only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

#: Every shape class the generator can draw.
SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross", "hexagon", "ring", "diamond")

#: Bump when the drawing changes, so cached datasets are regenerated.
GENERATOR_VERSION = 1

_SUPERSAMPLE = 4  # draw at 4x and downsample with area averaging: smooth, anti-aliased edges


def shape_polygon(
    kind: str, center: tuple[float, float], radius: float, angle: float
) -> list[np.ndarray]:
    """Outline(s) of a shape as float polygons (x, y); a circle or ring is a fine polygon.

    Args:
        kind: One of ``SHAPE_CLASSES``.
        center: Centre (x, y) in pixels.
        radius: Half the shape's extent in pixels (circumradius).
        angle: Rotation in radians.

    Returns:
        A list of polygons; the second one of a ``ring`` is its hole.
    """
    cx, cy = center

    def regular(n: int, r: float, phase: float = 0.0) -> np.ndarray:
        t = angle + phase + np.arange(n) * 2 * np.pi / n
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)

    if kind == "circle":
        return [regular(72, radius)]
    if kind == "ring":
        return [regular(72, radius), regular(72, radius * 0.55)]
    if kind == "square":
        return [regular(4, radius, np.pi / 4)]
    if kind == "diamond":
        # A rhombus: a square squeezed along one axis, so it differs from a rotated square.
        pts = np.array([[0, -1.0], [0.6, 0], [0, 1.0], [-0.6, 0]]) * radius
        return [_rotate(pts, angle) + [cx, cy]]
    if kind == "triangle":
        return [regular(3, radius, -np.pi / 2)]
    if kind == "hexagon":
        return [regular(6, radius)]
    if kind == "star":
        outer = regular(5, radius, -np.pi / 2)
        inner = regular(5, radius * 0.42, -np.pi / 2 + np.pi / 5)
        pts = np.empty((10, 2))
        pts[0::2], pts[1::2] = outer, inner
        return [pts]
    if kind == "cross":
        w = 0.34
        pts = np.array(
            [
                [-w, -1],
                [w, -1],
                [w, -w],
                [1, -w],
                [1, w],
                [w, w],
                [w, 1],
                [-w, 1],
                [-w, w],
                [-1, w],
                [-1, -w],
                [-w, -w],
            ]
        ) * (radius / np.sqrt(1 + w * w))
        return [_rotate(pts, angle) + [cx, cy]]
    raise ValueError(f"unknown shape {kind!r}")


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _draw(canvas: np.ndarray, polys: list[np.ndarray], color: Sequence[int]) -> None:
    """Fills the first polygon and cuts out any others (holes), on a supersampled canvas."""
    scaled = [np.round(p * _SUPERSAMPLE).astype(np.int32) for p in polys]
    mask = np.zeros(canvas.shape[:2], np.uint8)
    cv2.fillPoly(mask, [scaled[0]], 255, lineType=cv2.LINE_8)
    for hole in scaled[1:]:
        cv2.fillPoly(mask, [hole], 0, lineType=cv2.LINE_8)
    canvas[mask > 0] = color


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random background, float32 [size, size, 3] in 0–255."""
    kind = rng.integers(5)
    base = rng.uniform(0, 255, 3)
    if kind == 0:  # coloured noise
        img = base + rng.normal(0, rng.uniform(10, 40), (size, size, 3))
    elif kind == 1:  # smooth blotches: low-resolution noise, upsampled
        low = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
        img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
        img = 0.5 * img + 0.5 * base
    elif kind in (2, 3):  # stripes (2) or checks (3) at a random angle and period
        c2 = rng.uniform(0, 255, 3)
        period = rng.uniform(size / 10, size / 3)
        theta = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        u = (xx * np.cos(theta) + yy * np.sin(theta)) / period
        if kind == 2:
            m = (np.floor(u) % 2)[..., None]
        else:
            v = (-xx * np.sin(theta) + yy * np.cos(theta)) / period
            m = ((np.floor(u) + np.floor(v)) % 2)[..., None]
        img = m * base + (1 - m) * (0.6 * c2 + 0.4 * base)
    else:  # linear gradient between two colours
        c2 = rng.uniform(0, 255, 3)
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        t = np.clip(0.5 + (xx - 0.5) * np.cos(theta) + (yy - 0.5) * np.sin(theta), 0, 1)[..., None]
        img = t * base + (1 - t) * c2
    img = img + rng.normal(0, 6, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.float32)


def _contrasting_color(rng: np.random.Generator, against: np.ndarray) -> np.ndarray:
    """A colour far enough from ``against`` (mean background colour) to stay visible."""
    best, best_d = None, -1.0
    for _ in range(30):
        c = rng.uniform(0, 255, 3)
        d = float(np.linalg.norm(c - against))
        if d > 140:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def render_image(
    rng: np.random.Generator, target: str, others: Sequence[str], size: int, max_distractors: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Draws one image.

    Args:
        rng: The random generator (the only source of randomness).
        target: Class of the target shape.
        others: Classes the distractors are drawn from.
        size: Image side in pixels.
        max_distractors: Up to this many distractors (uniformly 0…max).

    Returns:
        ``(image, box)``: uint8 RGB ``[size, size, 3]`` and the target's tight box
        ``(x0, y0, x1, y1)`` in pixels, end-exclusive.
    """
    big = size * _SUPERSAMPLE
    bg = _background(rng, size)
    canvas = cv2.resize(bg, (big, big), interpolation=cv2.INTER_NEAREST)

    # The target: large, fully inside the image.
    r_t = rng.uniform(0.22, 0.34) * size
    margin = r_t + 1
    c_t = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    target_polys = shape_polygon(target, c_t, r_t, rng.uniform(0, 2 * np.pi))

    # Distractors: clearly smaller, mostly away from the target (rejection sampling).
    n_dis = int(rng.integers(0, max_distractors + 1)) if others else 0
    for _ in range(n_dis):
        kind = others[int(rng.integers(len(others)))]
        r_d = rng.uniform(0.09, 0.14) * size
        for _attempt in range(20):
            c_d = (rng.uniform(r_d, size - r_d), rng.uniform(r_d, size - r_d))
            if np.hypot(c_d[0] - c_t[0], c_d[1] - c_t[1]) > r_t + r_d * 0.8:
                break
        color = _contrasting_color(rng, bg.reshape(-1, 3).mean(0))
        _draw(canvas, shape_polygon(kind, c_d, r_d, rng.uniform(0, 2 * np.pi)), color)

    color = _contrasting_color(rng, bg.reshape(-1, 3).mean(0))
    _draw(canvas, target_polys, color)

    _draw_mask = np.zeros((big, big, 1), np.uint8)
    _draw(_draw_mask, target_polys, [255])
    mask = cv2.resize(_draw_mask[..., 0], (size, size), interpolation=cv2.INTER_AREA)
    ys, xs = np.nonzero(mask >= 128)
    if len(xs) == 0:  # cannot happen at the radii above, but keep the box well defined
        ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)

    img = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), box


def dataset_key(
    classes: Sequence[str],
    per_split: dict[str, int],
    resolution: int,
    max_distractors: int,
    seed: int,
) -> str:
    """A short hash of everything that changes the generated files."""
    payload = json.dumps(
        {
            "v": GENERATOR_VERSION,
            "classes": list(classes),
            "per_split": per_split,
            "resolution": resolution,
            "max_distractors": max_distractors,
            "seed": seed,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def generate(
    root: Path,
    *,
    classes: Sequence[str],
    per_split: dict[str, int],
    resolution: int,
    max_distractors: int,
    seed: int,
) -> None:
    """Writes the dataset under ``root`` (which must not exist yet; written atomically).

    Args:
        root: Destination folder.
        classes: Shape classes, in label order.
        per_split: Images per class for each split, e.g. ``{"train": 600, "val": 100, "test": 100}``.
        resolution: Image side in pixels.
        max_distractors: Up to this many distractor shapes per image.
        seed: Seed of the generator; every image has its own stream derived from it.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        rows = []
        for split_idx, (split, n) in enumerate(per_split.items()):
            for ci, cls in enumerate(classes):
                folder = tmp / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                others = [c for c in classes if c != cls]
                for i in range(n):
                    rng = np.random.default_rng([seed, split_idx, ci, i])
                    img, box = render_image(rng, cls, others, resolution, max_distractors)
                    rel = f"{split}/{cls}/{split}_{cls}_{i:05d}.png"
                    ok = cv2.imwrite(str(tmp / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                    if not ok:
                        raise OSError(f"could not write {tmp / rel}")
                    rows.append((rel, split, cls, *box))
        with open(tmp / "boxes.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "split", "label", "x0", "y0", "x1", "y1"])
            w.writerows(rows)
        (tmp / "dataset.json").write_text(
            json.dumps(
                {
                    "generator_version": GENERATOR_VERSION,
                    "classes": list(classes),
                    "per_split": per_split,
                    "resolution": resolution,
                    "max_distractors": max_distractors,
                    "seed": seed,
                },
                indent=2,
            )
        )
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / "boxes.csv").is_file():  # not a concurrent generator winning the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_boxes(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """``{absolute path: (x0, y0, x1, y1)}`` from a generated dataset's ``boxes.csv``."""
    out = {}
    with open(Path(root) / "boxes.csv", newline="") as f:
        for row in csv.DictReader(f):
            out[str((Path(root) / row["path"]).resolve())] = (
                int(row["x0"]),
                int(row["y0"]),
                int(row["x1"]),
                int(row["y1"]),
            )
    return out
