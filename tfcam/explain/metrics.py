"""Are the heatmaps right? Faithfulness and sanity metrics for any explanation method.

Every function takes heatmaps as float arrays ``[N, H, W]`` at the model's input size (larger
means more relevant) and, where the model is needed, a *score function*: images ``[N, H, W, 3]``
(raw 0–255) → class probabilities ``[N, C]`` (see :func:`model_score_fn`). Plain NumPy around
the model calls, so each metric can be checked against a model whose score is a known function
of the pixels.

Metrics (higher is better unless said otherwise):

* Pointing game (Zhang, Bargal, Lin, Brandt, Shen & Sclaroff, "Top-down Neural Attention by
  Excitation Backprop", ECCV 2016 / IJCV 2018): a hit when the map's maximum falls inside the
  object's box (within a tolerance).
* Energy-based pointing game (Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu, "Score-CAM:
  Score-Weighted Visual Explanations for Convolutional Neural Networks", CVPR-W 2020): the share
  of the map's total mass inside the box.
* Deletion and insertion (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for
  Explanation of Black-box Models", BMVC 2018): the target's probability as the most relevant
  pixels are removed (deletion, area under the curve: lower is better) or revealed on a blurred
  copy (insertion: higher is better; see ``INSERTION_BLUR`` for the blur).
* ROAD (Rong, Leemann, Borisov, Kasneci & Kasneci, "A Consistent and Efficient Evaluation
  Strategy for Attribution Methods", ICML 2022): pixels removed most-relevant-first (MoRF, lower
  is better) or least-relevant-first (LeRF, higher is better) and filled by noisy linear
  imputation, so the shape of the removed region gives the class away less than a constant fill.
* Average drop and increase in confidence (Chattopadhay, Sarkar, Howlader & Balasubramanian,
  "Grad-CAM++", WACV 2018): the probability on the image multiplied by its map, against the
  original (average drop: lower is better).
* Sanity check by cascading model randomisation (Adebayo, Gilmer, Muelly, Goodfellow, Hardt &
  Kim, "Sanity Checks for Saliency Maps", NeurIPS 2018): the weights are randomised from the top
  layer down; a method whose maps stay rank-correlated with the trained model's maps does not
  depend on what the model learned.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfcam.errors import UserError

ScoreFn = Callable[[np.ndarray], np.ndarray]

#: Tolerance of the pointing game in pixels, as a share of the image's longer side
#: (Zhang et al. use 15 px on images of about 224 px).
POINTING_TOLERANCE = 15 / 224
#: Fractions of the pixels removed by ROAD.
ROAD_PERCENTAGES = (0.1, 0.3, 0.5, 0.7, 0.9)
#: Standard deviation of ROAD's imputation noise, as a share of the pixel range (the paper's
#: 0.01 on unit-range images).
ROAD_NOISE = 0.01
#: ROAD's linear system is solved on a grid whose longer side is at most this (a 224 px image
#: with 90% removed is a 45,000-unknown sparse solve, 0.5 s); the imputed values are scaled back.
ROAD_MAX_SIDE = 112
#: Neighbours of the imputation and their weights (ROAD's NoisyLinearImputer).
_NEIGHBOURS = (
    (-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
    (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12),
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Boxes


def read_boxes_csv(path: str | os.PathLike) -> dict[str, tuple[int, int, int, int]]:
    """``{absolute image path: (x0, y0, x1, y1)}`` from a CSV with columns ``path, x0, y0, x1,
    y1`` (pixels of the stored image, end-exclusive; relative paths are taken from the CSV's
    folder). The ``shapes`` dataset writes such a file (``boxes.csv``).

    Raises:
        UserError: Missing file or columns, or a box that is empty.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Boxes file not found: '{path}'")
    out = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"path", "x0", "y0", "x1", "y1"}
        if not need <= set(reader.fieldnames or ()):
            raise UserError(
                f"Boxes file '{path}' needs the columns path, x0, y0, x1, y1; it has "
                f"{', '.join(reader.fieldnames or ())}"
            )
        for row in reader:
            try:
                box = tuple(int(float(row[k])) for k in ("x0", "y0", "x1", "y1"))
            except ValueError:
                raise UserError(f"Bad box in '{path}' for '{row['path']}': {row}") from None
            if box[2] <= box[0] or box[3] <= box[1]:
                raise UserError(f"Empty box in '{path}' for '{row['path']}': {box}")
            out[str((path.parent / row["path"]).resolve())] = box
    return out


def box_to_input(
    box: Sequence[float], stored_hw: Sequence[int], image_size: Sequence[int], resize: str
) -> tuple[float, float, float, float]:
    """Maps a box in the stored image's pixels to the model input, as ``resize`` maps the image
    (``stretch``, ``pad``: fit inside and centre, ``crop``: cover and cut the centre, ``native``:
    scale down to fit, top-left)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = (float(v) for v in stored_hw)
    th, tw = (float(v) for v in image_size)
    if resize == "stretch":
        sx, sy, ox, oy = tw / w, th / h, 0.0, 0.0
    elif resize == "pad":
        s = min(th / h, tw / w)
        sx = sy = s
        ox, oy = (tw - w * s) / 2, (th - h * s) / 2
    elif resize == "crop":
        s = max(th / h, tw / w)
        sx = sy = s
        ox, oy = (tw - w * s) / 2, (th - h * s) / 2
    elif resize == "native":
        sx = sy = min(1.0, max(th, tw) / max(h, w))
        ox = oy = 0.0
    else:
        raise UserError(f"Unknown resize mode '{resize}'")
    return (
        max(0.0, x0 * sx + ox),
        max(0.0, y0 * sy + oy),
        min(tw, x1 * sx + ox),
        min(th, y1 * sy + oy),
    )


# --------------------------------------------------------------------------------------------
# Localisation


def pointing_game(
    maps: np.ndarray, boxes: np.ndarray, tolerance: float | None = None
) -> np.ndarray:
    """Hits of the pointing game: is the map's maximum inside the box?

    Args:
        maps: ``[N, H, W]``.
        boxes: ``[N, 4]`` as ``(x0, y0, x1, y1)`` in map pixels, end-exclusive.
        tolerance: Pixels around the box that still count; default
            ``POINTING_TOLERANCE`` × the longer side. The maximum is the first in raster order
            when several pixels share it; a constant map is a miss.

    Returns:
        bool ``[N]``.
    """
    maps = np.asarray(maps, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n, h, w = maps.shape
    tol = POINTING_TOLERANCE * max(h, w) if tolerance is None else float(tolerance)
    flat = maps.reshape(n, -1)
    idx = flat.argmax(axis=1)
    y, x = np.divmod(idx, w)
    cx, cy = x + 0.5, y + 0.5  # pixel centres
    x0, y0, x1, y1 = boxes.T
    inside = (cx >= x0 - tol) & (cx <= x1 + tol) & (cy >= y0 - tol) & (cy <= y1 + tol)
    constant = flat.max(axis=1) <= flat.min(axis=1)
    return inside & ~constant


def energy_pointing_game(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Share of each map's mass inside its box (``[N]`` in [0, 1]; 0 for an all-zero map).

    Negative values are clipped to zero first, as the Score-CAM paper's maps are non-negative.
    A pixel counts in proportion to how much of it the box covers.
    """
    maps = np.clip(np.asarray(maps, dtype=np.float64), 0, None)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n, h, w = maps.shape
    out = np.zeros(n)
    for i in range(n):
        x0, y0, x1, y1 = boxes[i]
        cover_x = np.clip(np.minimum(np.arange(1, w + 1), x1) - np.maximum(np.arange(w), x0), 0, 1)
        cover_y = np.clip(np.minimum(np.arange(1, h + 1), y1) - np.maximum(np.arange(h), y0), 0, 1)
        total = maps[i].sum()
        if total > 0:
            out[i] = float((maps[i] * cover_y[:, None] * cover_x[None, :]).sum() / total)
    return out


# --------------------------------------------------------------------------------------------
# Model-based metrics


def model_score_fn(model, batch_size: int = 64) -> ScoreFn:
    """Class probabilities of a Keras classifier as a score function (one compiled forward).

    The forward pass runs on a copy with batch normalisation folded into the convolutions
    (:func:`tfcam.models.graph.fold_batchnorm`: the same outputs up to float rounding, about 1.7×
    faster on MobileNetV2), as these metrics call the model thousands of times.
    """
    import tensorflow as tf

    from tfcam.models.graph import fold_batchnorm

    try:
        model = fold_batchnorm(model)
    except Exception:  # an unusual graph: score with the model as it is
        pass

    @tf.function(reduce_retracing=True)
    def forward(x):
        return model(x, training=False)

    def score(images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            chunk = tf.constant(np.asarray(images[i : i + batch_size], np.float32))
            out.append(np.asarray(forward(chunk), np.float64))
        probs = np.concatenate(out) if out else np.zeros((0, 1))
        if probs.shape[-1] == 1:  # one sigmoid unit: [1 - p, p]
            probs = np.concatenate([1.0 - probs, probs], axis=-1)
        return probs

    return score


def _target_scores(score_fn: ScoreFn, images: np.ndarray, target: int) -> np.ndarray:
    return np.asarray(score_fn(images))[:, target]


def _ranks(heatmap: np.ndarray, descending: bool = True) -> np.ndarray:
    """Rank of each pixel (0 = first removed); ties keep raster order, in either direction."""
    flat = np.asarray(heatmap, dtype=np.float64).ravel()
    order = np.argsort(-flat if descending else flat, kind="stable")
    ranks = np.empty(flat.size, dtype=np.int64)
    ranks[order] = np.arange(flat.size)
    return ranks


#: Insertion starts from the image blurred with this sigma, as a share of the longer side. RISE
#: used sigma 5 px at 224 px (2%); on small images with large objects (64 px ``shapes``) that
#: blur leaves the class recognisable (the start already scores 0.43 where chance is 0.2), and
#: every map then gets the same insertion area. At 1/12 of the side the start carries about
#: chance-level evidence, so the area measures the map. ``--blur-sigma`` takes RISE's value.
INSERTION_BLUR = 1 / 12


def blur(images: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Gaussian blur of each image; ``sigma`` in pixels (default ``INSERTION_BLUR`` × side)."""
    import cv2

    images = np.asarray(images, np.float32)
    s = float(sigma) if sigma else INSERTION_BLUR * max(images.shape[1:3])
    return np.stack([cv2.GaussianBlur(img, (0, 0), s) for img in images])


@dataclass
class Curves:
    """Deletion or insertion curves.

    Attributes:
        fractions: Share of pixels removed (deletion) or revealed (insertion) at each step, ``[S]``.
        scores: The target's probability at each step, ``[N, S]``.
        auc: Area under each curve (trapezoid rule over ``fractions``), ``[N]``.
    """

    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray


def deletion_insertion(
    score_fn: ScoreFn,
    images: np.ndarray,
    maps: np.ndarray,
    targets: Sequence[int],
    *,
    mode: str = "deletion",
    step: int | None = None,
    baseline: np.ndarray | None = None,
    blur_sigma: float | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> Curves:
    """Deletion or insertion curves (Petsiuk et al. 2018), ``step`` pixels at a time.

    Args:
        score_fn: Images → probabilities ``[N, C]``.
        images: ``[N, H, W, 3]`` raw pixels.
        maps: ``[N, H, W]`` heatmaps (higher = removed / revealed first).
        targets: Class per image whose probability is followed.
        mode: ``"deletion"`` (start from the image, replace pixels by ``baseline``, default
            black) or ``"insertion"`` (start from ``baseline``, default the blurred image, and
            put the image's pixels back).
        step: Pixels per step; default ``H·W / 32`` rounded up (33 points per curve).
        baseline: ``[N, H, W, 3]`` replacing or starting images.
        blur_sigma: Sigma in pixels of the insertion's blurred start (default: 1/12 of the side).
        batch_size: Images per model call.
        progress: Called with 1 after each image.

    Returns:
        The curves and their areas.
    """
    if mode not in ("deletion", "insertion"):
        raise UserError(f"Unknown mode '{mode}'. Choose from: deletion, insertion")
    images = np.asarray(images, np.float32)
    n, h, w = images.shape[:3]
    p = h * w
    step = int(step or -(-p // 32))
    if step < 1:
        raise UserError(f"step must be at least 1 pixel, got {step}")
    counts = np.minimum(np.arange(0, p + step, step), p)
    counts = np.unique(counts)
    fractions = counts / p
    if baseline is None:
        baseline = np.zeros_like(images) if mode == "deletion" else blur(images, blur_sigma)
    scores = np.zeros((n, len(counts)))
    per_chunk = max(1, batch_size)
    for i in range(n):
        ranks = _ranks(maps[i]).reshape(h, w)
        taken = ranks[None] < counts[:, None, None]  # [S, H, W]: pixels changed so far
        if mode == "deletion":
            variants = np.where(taken[..., None], baseline[i][None], images[i][None])
        else:
            variants = np.where(taken[..., None], images[i][None], baseline[i][None])
        out = []
        for j in range(0, len(variants), per_chunk):
            out.append(_target_scores(score_fn, variants[j : j + per_chunk], int(targets[i])))
        scores[i] = np.concatenate(out)
        if progress:
            progress(1)
    auc = np.trapezoid(scores, fractions, axis=1)
    return Curves(fractions, scores, auc)


def noisy_linear_impute(
    image: np.ndarray, removed: np.ndarray, *, noise: float = ROAD_NOISE, rng=None
) -> np.ndarray:
    """ROAD's noisy linear imputation: each removed pixel becomes the weighted mean of its eight
    neighbours (1/6 for edge neighbours, 1/12 for corners, renormalised at the border), solved
    as one sparse linear system over all removed pixels, plus Gaussian noise of ``noise`` × 255.

    Args:
        image: ``[H, W, C]`` raw pixels.
        removed: bool ``[H, W]``.
        noise: Noise standard deviation as a share of the 0–255 range.
        rng: ``numpy.random.Generator`` for the noise.

    Returns:
        The image with removed pixels imputed (others unchanged), float32.
    """
    import scipy.sparse as sp
    import scipy.sparse.linalg as sla

    image = np.asarray(image, np.float64)
    h, w, c = image.shape
    removed = np.asarray(removed, bool)
    out = image.copy()
    unknown = np.flatnonzero(removed.ravel())
    if unknown.size == 0:
        return out.astype(np.float32)
    index = -np.ones(h * w, np.int64)
    index[unknown] = np.arange(unknown.size)
    ys, xs = np.divmod(unknown, w)
    inside = [
        (ys + dy >= 0) & (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w) for dy, dx, _ in _NEIGHBOURS
    ]
    total = sum(wt * ok for (_, _, wt), ok in zip(_NEIGHBOURS, inside, strict=True))
    rows, cols, vals = [np.arange(unknown.size)], [np.arange(unknown.size)], [np.ones(unknown.size)]
    rhs = np.zeros((unknown.size, c))
    flat = image.reshape(-1, c)
    for (dy, dx, wt), ok in zip(_NEIGHBOURS, inside, strict=True):
        p = np.flatnonzero(ok)
        q = (ys[p] + dy) * w + (xs[p] + dx)
        weight = wt / total[p]
        qi = index[q]
        unk = qi >= 0
        rows.append(p[unk])
        cols.append(qi[unk])
        vals.append(-weight[unk])
        np.add.at(rhs, p[~unk], weight[~unk, None] * flat[q[~unk]])
    a = sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(unknown.size, unknown.size),
    )
    solved = sla.splu(a).solve(rhs)
    rng = rng if rng is not None else np.random.default_rng(0)
    solved = solved + rng.normal(0.0, noise * 255.0, solved.shape)
    out.reshape(-1, c)[unknown] = solved
    return np.clip(out, 0, 255).astype(np.float32)


def _impute(image, removed, noise, rng, max_side):
    """Imputes on a reduced grid when the image is larger than ``max_side``."""
    h, w = removed.shape
    if max(h, w) <= max_side:
        return noisy_linear_impute(image, removed, noise=noise, rng=rng)
    import cv2

    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    small = cv2.resize(np.asarray(image, np.float32), size, interpolation=cv2.INTER_AREA)
    small_removed = cv2.resize(removed.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
    filled = noisy_linear_impute(small, small_removed, noise=0.0, rng=rng)
    up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    out = np.asarray(image, np.float32).copy()
    noisy = up + rng.normal(0.0, noise * 255.0, up.shape).astype(np.float32)
    out[removed] = np.clip(noisy[removed], 0, 255)
    return out


def road(
    score_fn: ScoreFn,
    images: np.ndarray,
    maps: np.ndarray,
    targets: Sequence[int],
    *,
    order: str = "morf",
    percentages: Sequence[float] = ROAD_PERCENTAGES,
    noise: float = ROAD_NOISE,
    max_side: int = ROAD_MAX_SIDE,
    seed: int = 0,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """ROAD (Rong et al. 2022): the target's probability after removing each share of pixels,
    most relevant first (``morf``) or least relevant first (``lerf``), imputed.

    The noise generator restarts from ``seed`` for each image and order, so two orders that
    remove the same pixels (an all-equal map) give the same images and scores.

    ``progress``, if given, is called with 1 after each image.

    Returns:
        ``[N, len(percentages)]`` probabilities.
    """
    if order not in ("morf", "lerf"):
        raise UserError(f"Unknown ROAD order '{order}'. Choose from: morf, lerf")
    images = np.asarray(images, np.float32)
    n, h, w = images.shape[:3]
    out = np.zeros((n, len(percentages)))
    for i in range(n):
        ranks = _ranks(maps[i], descending=order == "morf").reshape(h, w)
        rng = np.random.default_rng(seed)
        variants = np.stack(
            [
                _impute(images[i], ranks < round(pct * h * w), noise, rng, max_side)
                for pct in percentages
            ]
        )
        out[i] = _target_scores(score_fn, variants, int(targets[i]))
        if progress:
            progress(1)
    return out


def drop_and_increase(
    score_fn: ScoreFn,
    images: np.ndarray,
    maps: np.ndarray,
    targets: Sequence[int],
    base: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the relative drop ``max(0, Y - O) / Y`` and whether confidence increased
    (``O > Y``), where ``Y`` is the target's probability on the image and ``O`` on the image
    multiplied by its map (scaled to [0, 1]) (Chattopadhay et al. 2018). Averages over images
    ×100 give the paper's Average Drop % and Increase in Confidence %. ``base``: the
    probabilities on the images when already computed (``[N, C]``)."""
    images = np.asarray(images, np.float32)
    m = np.asarray(maps, np.float64)
    lo = m.reshape(len(m), -1).min(axis=1)[:, None, None]
    hi = m.reshape(len(m), -1).max(axis=1)[:, None, None]
    unit = np.where(hi > lo, (m - lo) / np.where(hi > lo, hi - lo, 1), 0.0)
    targets = np.asarray(targets, int)
    probs = np.asarray(score_fn(images) if base is None else base)
    y = probs[np.arange(len(images)), targets]
    o = np.asarray(score_fn(images * unit[..., None].astype(np.float32)))[
        np.arange(len(images)), targets
    ]
    drop = np.maximum(0.0, y - o) / np.maximum(y, 1e-12)
    return drop, o > y


# --------------------------------------------------------------------------------------------
# Sanity check


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (average ranks for ties); 0 when one is constant."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def weighted_layers(model) -> list[str]:
    """Names of the layers with weights, top (output) first: the cascade's order."""
    return [layer.name for layer in model.layers if layer.weights][::-1]


def randomize_layers(model, names: Sequence[str], seed: int = 0) -> None:
    """Re-initialises the weights of the named layers in place, as Adebayo et al. do: each weight
    gets a fresh draw from the layer's own initializer (``kernel_initializer`` and the like:
    what the untrained network started from; batch normalisation back to gamma 1, beta 0, mean 0,
    variance 1). A weight with no known initializer gets a random permutation of its values."""
    import keras

    rng = np.random.default_rng(seed)
    for name in names:
        layer = model.get_layer(name)
        new = []
        for v in layer.weights:
            short = v.path.rsplit("/", 1)[-1]
            attr = {
                "depthwise_kernel": "depthwise_initializer",
                "pointwise_kernel": "pointwise_initializer",
            }.get(short, f"{short}_initializer")
            init = getattr(layer, attr, None)
            w = np.asarray(v.numpy())
            if init is not None:
                init = keras.initializers.get(init)
                cfg = init.get_config()
                if "seed" in cfg:
                    cfg["seed"] = int(rng.integers(2**31 - 1))
                init = type(init).from_config(cfg)
                new.append(np.asarray(init(w.shape, dtype=v.dtype)))
            else:
                new.append(rng.permutation(w.ravel()).reshape(w.shape))
        layer.set_weights(new)


def cascade_points(names: Sequence[str], steps: int) -> list[int]:
    """How many top layers are randomised at each step: 1 (the output) … all, ``steps`` values."""
    n = len(names)
    if n == 0:
        return []
    pts = np.unique(np.round(np.geomspace(1, n, num=min(steps, n))).astype(int))
    return [int(p) for p in pts]
