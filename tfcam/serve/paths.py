"""Where the explorer may read: the runs under a path, and files inside a run's data folder.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

from tfcam.errors import UserError

#: Longer side of the photo shown in the image view (pixels).
PHOTO_SIDE = 512


class NotFound(UserError):
    """An unknown run, image or file: HTTP 404."""


class TooLarge(UserError):
    """An upload over the size limit: HTTP 413."""


def find_runs(path: str | os.PathLike) -> list[Path]:
    """The finished runs at ``path``: the run itself, or the runs one or two levels below it (a
    folder of runs; a sweep's trials), sorted by name.

    Raises:
        UserError: Nothing there, or no finished run (``model.keras``) in it.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(
            f"Path '{path}' does not exist. Give a run directory, a sweep or a folder of runs"
        )
    if (root / "model.keras").is_file():
        return [root]
    found = sorted(
        {p.parent for pattern in ("*/model.keras", "*/*/model.keras") for p in root.glob(pattern)}
    )
    if not found:
        raise UserError(
            f"No finished run in '{path}' (a run directory holds model.keras). Give a run "
            "directory, a sweep or a folder of runs"
        )
    return found


def inside(root: Path, rel: str, what: str) -> Path:
    """``root / rel`` resolved, if it is a file inside ``root``; else :class:`NotFound`."""
    shown = rel if len(rel) <= 80 else rel[:77] + "…"
    if "\x00" in rel or rel.startswith(("/", "\\")) or ":" in rel.split("/")[0]:
        raise NotFound(f"No file '{shown}' in {what}")
    candidate = (root / rel).resolve()
    try:
        candidate.relative_to(root.resolve())
    except ValueError:
        raise NotFound(f"No file '{shown}' in {what}") from None
    if not candidate.is_file():
        raise NotFound(f"No file '{shown}' in {what}")
    return candidate


def photo_side(path: Path) -> int:
    """The photo's longer side: :data:`PHOTO_SIDE`, or the image's own if smaller (a 32 px image
    is not enlarged; the page scales it)."""
    from tfcam.data.pipeline import stored_size

    h, w = stored_size(str(path))
    return PHOTO_SIDE if (h, w) == (1, 1) else min(PHOTO_SIDE, max(h, w))
