"""The page of a ``tfcam explain`` call, ``OUT/index.html``: every explained image with its
prediction, the panel of each method and links to its overlay, heatmap and panel files.

Image file names and class names are whatever the user had on disk, so every one of them is
escaped as text and every link is a percent-encoded relative path (:mod:`tfcam.report.safe`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tfcam.io import write_text
from tfcam.report.safe import esc, href, link

#: The page's name inside the output folder.
INDEX = "index.html"


def _rel(path: str | os.PathLike, out_dir: Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))


def _image_block(record: dict, out_dir: Path) -> str:
    name = Path(record["image"]).name
    parts = [
        f"<h3>{esc(name)}</h3>",
        f"<p>predicted <b>{esc(record.get('predicted', ''))}</b> "
        f"({float(record.get('probability', 0.0)):.3f}), explained "
        f"<b>{esc(record.get('target', ''))}</b>; "
        f'<span class="muted">{esc(record["image"])}</span></p>',
    ]
    for key, files in record.get("outputs", {}).items():
        files_links = ", ".join(link(_rel(p, out_dir), kind) for kind, p in files.items())
        panel = files.get("panel") or next(iter(files.values()))
        parts.append(
            f'<figure><img alt="{esc(f"{key}: {name}")}" src="{href(_rel(panel, out_dir))}">'
            f"<figcaption>{esc(key)}: {files_links}</figcaption></figure>"
        )
    for method, path in record.get("galleries", {}).items():
        parts.append(
            f'<figure><img alt="{esc(f"{method} at every layer: {name}")}" '
            f'src="{href(_rel(path, out_dir))}"><figcaption>{esc(method)} at every layer'
            "</figcaption></figure>"
        )
    return "".join(parts)


def write_explain_index(
    out_dir: str | os.PathLike, records: Sequence[dict], skipped: Sequence[str] = ()
) -> Path:
    """Writes ``out_dir/index.html`` for the records of one :func:`~tfcam.explain.files.explain_files`
    call (a later call into the same folder rewrites it with its own images).

    Args:
        out_dir: The explain output folder (the page links to files below it by relative paths).
        records: One per image, as ``ExplainedFiles.records``.
        skipped: Inputs that could not be read, each with its reason (listed as text).

    Returns:
        The path of the page.
    """
    from tfcam.report.html import page

    out = Path(out_dir)
    methods = list(dict.fromkeys(k for r in records for k in r.get("outputs", {})))
    sections = [("images", "Images", [_image_block(r, out) for r in records])]
    if skipped:
        sections.append(
            (
                "skipped",
                "Skipped inputs",
                ["<ul>", *(f"<li>{esc(s)}</li>" for s in skipped), "</ul>"],
            )
        )
    subtitle = f"{len(records)} image(s); {', '.join(methods)}"
    return write_text(out / INDEX, page("tfcam explain", subtitle, sections))
