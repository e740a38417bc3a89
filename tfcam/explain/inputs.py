"""Finding the image files to explain (TensorFlow-free, so the CLI can check paths first)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tfcam.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def list_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files from files and folders (folders searched recursively, sorted).

    Raises:
        UserError: A path that does not exist, or no images at all.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file()
                    and f.suffix.lower() in IMAGE_SUFFIXES
                    and not f.name.startswith(".")
                )
            )
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"Input not found: '{p}'. Give image files or folders of images")
    if not out:
        raise UserError(
            f"No images found in: {', '.join(map(str, paths))} (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return list(dict.fromkeys(out))
