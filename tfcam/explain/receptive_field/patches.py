"""Where units fire: the input patches the most active units of a layer see, and their drawings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from tfcam.errors import UserError
from tfcam.explain.features import layer_activations
from tfcam.explain.receptive_field.analytic import Field


@dataclass(frozen=True)
class Patch:
    """One unit's input patch.

    Attributes:
        image: Index of the image in the batch.
        unit: ``(y, x)`` in the layer's output.
        channel: The channel whose value ranked it.
        value: That activation.
        box: Its field, ``(top, left, bottom, right)`` inclusive, clipped to the image.
    """

    image: int
    unit: tuple[int, int]
    channel: int
    value: float
    box: tuple[int, int, int, int]

    def as_dict(self) -> dict:
        return {
            "image": self.image,
            "unit": list(self.unit),
            "channel": self.channel,
            "value": self.value,
            "box": list(self.box),
        }


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    t, left = max(a[0], b[0]), max(a[1], b[1])
    bot, r = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, bot - t + 1) * max(0, r - left + 1)
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area - inter) if area > inter else 1.0


def top_units(
    activations: np.ndarray,
    field: Field,
    k: int = 9,
    channel: int | None = None,
    max_overlap: float = 0.5,
    image: int = 0,
) -> list[Patch]:
    """The ``k`` most active units of one image's activations ``[h, w, C]``.

    Args:
        activations: One image's feature maps.
        field: The layer's receptive field (gives each unit's box).
        k: How many units.
        channel: Rank by this channel; default by each unit's strongest channel.
        max_overlap: Skip a unit whose box overlaps an already chosen one by more than this
            intersection-over-union (neighbouring units see almost the same patch); 1 keeps all.
        image: Index recorded in the patches.
    """
    a = np.asarray(activations)
    c = a.shape[-1]
    if channel is not None and not 0 <= channel < c:
        raise UserError(
            f"Channel {channel} is out of range: layer '{field.layer}' has {c} channels"
        )
    score = a[..., channel] if channel is not None else a.max(axis=-1)
    best = np.full(score.shape, channel, int) if channel is not None else a.argmax(axis=-1)
    # Saturating activations (ReLU6) tie at their ceiling: among equals, the unit whose
    # neighbourhood fires more comes first.
    import cv2

    local = cv2.blur(np.ascontiguousarray(score, np.float32), (3, 3), borderType=cv2.BORDER_REFLECT)
    order = np.lexsort((-local.ravel(), -score.ravel()))
    chosen: list[Patch] = []
    for flat_index in order:
        y, x = np.unravel_index(flat_index, score.shape)
        box = field.box(int(y), int(x))
        if any(_iou(box, p.box) > max_overlap for p in chosen):
            continue
        chosen.append(Patch(image, (int(y), int(x)), int(best[y, x]), float(score[y, x]), box))
        if len(chosen) == k:
            break
    return chosen


def top_patches_across(
    activations: np.ndarray, field: Field, k: int = 9, channel: int | None = None
) -> tuple[int, list[Patch]]:
    """ "What does this unit look for": the ``k`` images whose best unit fires most on a channel.

    One patch per image (its strongest unit), the images ranked by that activation.

    Args:
        activations: ``[N, h, w, C]`` for a folder of images.
        field: The layer's receptive field.
        k: How many patches.
        channel: The channel; default the one with the highest mean of per-image maxima.

    Returns:
        ``(channel, patches)``.
    """
    a = np.asarray(activations)
    per_image_max = a.max(axis=(1, 2))  # [N, C]
    if channel is None:
        channel = int(per_image_max.mean(axis=0).argmax())
    elif not 0 <= channel < a.shape[-1]:
        raise UserError(
            f"Channel {channel} is out of range: layer '{field.layer}' has {a.shape[-1]} channels"
        )
    patches = [top_units(a[i], field, 1, channel, image=i)[0] for i in range(len(a))]
    # Ties (saturated units) go to the image whose map fires more overall on the channel.
    mean = a[..., channel].mean(axis=(1, 2))
    patches.sort(key=lambda p: (-p.value, -mean[p.image]))
    return channel, patches[:k]


def write_patches(
    model: keras.Model,
    field: Field,
    inputs: Sequence[str],
    out_dir,
    *,
    k: int = 9,
    channel: int | None = None,
    resize: str = "stretch",
) -> dict:
    """Patch overlays as PNGs: what the most active units of ``field.layer`` look at.

    One image: ``<stem>_<layer>_boxes.png`` (the ``k`` strongest units' fields drawn on the image
    as the model sees it, strongest in red) and ``<stem>_<layer>_patches.png`` (the crops).
    Several images or a folder: ``<layer>_channel<C>_top<k>.png``, the ``k`` images whose strongest
    unit fires most on channel ``C``, and ``<layer>_channel<C>_top<k>_boxes.png`` with each box on its
    image. Also ``<stem>.json`` beside them with every box, so the drawings can be checked.

    Returns:
        The JSON record.
    """
    import json
    from pathlib import Path

    from tfcam.data.pipeline import read_images
    from tfcam.explain.inputs import list_inputs
    from tfcam.io import atomic_path
    from tfcam.viz.patches import crop, display_scale, draw_boxes, patch_grid
    from tfcam.viz.plots import to_png

    field.require_local()
    files = list_inputs(inputs)
    h, w = field.input_shape
    images = read_images([str(f) for f in files], (h, w), resize)
    acts = layer_activations(model, field.layer, images, input_size=field.input_shape)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scale = display_scale(h, w)
    written: list[str] = []

    def save_png(name: str, data: bytes | np.ndarray) -> None:
        import cv2

        path = out_dir / name
        with atomic_path(path) as tmp:
            if isinstance(data, bytes):
                Path(tmp).write_bytes(data)
            elif not cv2.imwrite(str(tmp), cv2.cvtColor(data, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {path}")
        written.append(str(path))

    def label(p: Patch) -> str:
        return f"#{p.channel} {p.value:.3g} @({p.unit[0]},{p.unit[1]})"

    if len(files) == 1:
        patches = top_units(acts[0], field, k, channel)
        stem = f"{files[0].stem}_{field.layer}"
        save_png(f"{stem}_boxes.png", draw_boxes(images[0], [p.box for p in patches], scale=scale))
        fig = patch_grid(
            [crop(images[0], p.box) for p in patches],
            [label(p) for p in patches],
            suptitle=f"{files[0].name}: strongest units of {field.layer} "
            f"(field {field.size[0]}×{field.size[1]})",
        )
        save_png(f"{stem}_patches.png", to_png(fig))
        chosen = channel
    else:
        chosen, patches = top_patches_across(acts, field, k, channel)
        stem = f"{field.layer}_channel{chosen}_top{k}"
        fig = patch_grid(
            [crop(images[p.image], p.box) for p in patches],
            [f"{files[p.image].name[:18]} {p.value:.3g}" for p in patches],
            suptitle=f"{field.layer} channel {chosen}: top {len(patches)} of {len(files)} images",
        )
        save_png(f"{stem}.png", to_png(fig))
        tiles = [draw_boxes(images[p.image], [p.box], scale=scale) for p in patches]
        save_png(f"{stem}_boxes.png", np.concatenate(tiles, axis=1))
    record = {
        "layer": field.layer,
        "channel": chosen,
        "display_scale": scale,
        "field": field.as_dict(),
        "images": [str(f) for f in files],
        "patches": [p.as_dict() for p in patches],
        "files": written,
    }
    record["files"].append(str(out_dir / f"{stem}.json"))
    with atomic_path(out_dir / f"{stem}.json") as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record
