"""A user's own image for the explorer: checked, decoded by the loader training uses, predicted."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfcam.errors import UserError
from tfcam.serve.paths import TooLarge, photo_side

#: File name endings kept for the decoder's sake (anything else is stored as ``.img``).
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def check(data: bytes, limit: int) -> None:
    """Raises :class:`TooLarge` over ``limit`` bytes, a ``UserError`` for an empty upload."""
    if len(data) > limit:
        raise TooLarge(
            f"Upload of {len(data) / 2**20:.1f} MB is over the limit of {limit / 2**20:.0f} MB"
        )
    if not data:
        raise UserError("Empty upload: send an image file (JPEG, PNG, BMP or GIF)")


def read(data: bytes, filename: str, stem: Path, explainer):
    """Writes the upload to ``stem`` + its suffix, decodes it as ``tfcam explain`` would and
    predicts it: ``(path, model input, photo, stored (height, width), probabilities)``.

    Raises:
        UserError: Not an image the loader reads, naming the upload (not the temporary file).
    """
    from tfcam.data.display import read_for_explanation

    suffix = Path(filename).suffix.lower()
    path = stem.with_suffix(suffix if suffix in SUFFIXES else ".img")
    path.write_bytes(data)
    ex = explainer
    try:
        x, photo, full_hw = read_for_explanation(path, ex.input_size, ex.resize, photo_side(path))
    except UserError as e:
        path.unlink(missing_ok=True)
        shown = Path(filename).name or "upload"
        reason = str(e).replace(str(path), shown)
        raise UserError(f"The upload '{shown}' is not an image tfcam reads: {reason}") from None
    out = np.asarray(ex.model(x[None], training=False))[0]
    return path, x, photo, full_hw, probabilities(out)


def probabilities(out: np.ndarray) -> np.ndarray:
    """The model's outputs as class probabilities (a one-unit sigmoid head gives two)."""
    out = np.asarray(out, np.float64).reshape(-1)
    if out.size == 1:
        p = float(out[0]) if 0 <= out[0] <= 1 else float(1 / (1 + np.exp(-out[0])))
        return np.array([1 - p, p])
    if out.min() >= 0 and abs(out.sum() - 1) < 1e-3:
        return out
    e = np.exp(out - out.max())
    return e / e.sum()
