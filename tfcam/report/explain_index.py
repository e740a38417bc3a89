"""The page of a ``tfcam explain`` call, ``OUT/index.html``: a table with one row per explained
image (its prediction and probability, the explained class) and one column per method, each cell
the overlay linking to the panel and to the full-size files; rows sort by confidence.

Image file names and class names are whatever the user had on disk, so every one of them is
escaped as text and every link is a percent-encoded relative path (:mod:`tfcam.report.safe`).
The one script (:data:`SORT_SCRIPT`) is a constant: it reads only ``data-`` attributes holding
numbers tfcam wrote, never a name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from tfcam.io import write_text
from tfcam.report.safe import esc, href, link

#: The page's name inside the output folder.
INDEX = "index.html"


def _rel(path: str | os.PathLike, out_dir: Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))


#: The page's only script: sorts the table's rows by a ``data-`` attribute of each row. It holds
#: no user string, and the attributes it reads hold numbers tfcam wrote (see :func:`_row`).
SORT_SCRIPT = """(function () {
  var table = document.getElementById("explained");
  if (!table) return;
  var body = table.tBodies[0];
  var buttons = document.querySelectorAll("button[data-sort]");
  function key(row, name) { return Number(row.getAttribute("data-" + name)); }
  Array.prototype.forEach.call(buttons, function (button) {
    button.addEventListener("click", function () {
      var name = button.getAttribute("data-sort"), dir = Number(button.getAttribute("data-dir"));
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        return dir * (key(a, name) - key(b, name)) || key(a, "order") - key(b, "order");
      });
      rows.forEach(function (row) { body.appendChild(row); });
      Array.prototype.forEach.call(buttons, function (other) {
        other.setAttribute("aria-pressed", String(other === button));
      });
    });
  });
})();"""

_CSS = (
    ".scroll{overflow-x:auto;max-width:100%}"
    "#explained td{vertical-align:top;text-align:left}"
    "#explained td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "#explained .name{overflow-wrap:anywhere;min-width:9rem;max-width:16rem}"
    "#explained img{width:11rem;max-width:40vw;height:auto;display:block;border:1px solid #eef1f4}"
    "#explained .files{font-size:.8rem}"
    ".sort button{margin:0 .4rem .6rem 0;padding:.2rem .6rem;font:inherit;cursor:pointer}"
    ".sort button[aria-pressed=true]{font-weight:bold}"
)

#: (button text, data attribute, direction) of the sort buttons.
_SORTS = (
    ("most confident first", "probability", -1),
    ("least confident first", "probability", 1),
    ("input order", "order", 1),
)


def _rel(path: str | os.PathLike, out_dir: Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))


def _number(value: object, default: float = -1.0) -> str:
    """A finite number as attribute text (NaN or junk sorts as ``default``): never user text."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return repr(default)
    return f"{x:.6f}" if math.isfinite(x) else repr(default)


def _cell(key: str, name: str, files: dict, out_dir: Path) -> str:
    """One method's cell: the overlay (a link to the panel) and links to the three files."""
    overlay = files.get("overlay") or next(iter(files.values()))
    panel = files.get("panel", overlay)
    links = " · ".join(link(_rel(p, out_dir), kind) for kind, p in files.items())
    return (
        f'<td><a href="{href(_rel(panel, out_dir))}"><img loading="lazy" '
        f'alt="{esc(f"{key}: {name}")}" src="{href(_rel(overlay, out_dir))}"></a>'
        f'<div class="files">{links}</div></td>'
    )


def _row(order: int, record: dict, columns: list[str], galleries: list[str], out: Path) -> str:
    name = Path(record["image"]).name
    probability = record.get("probability", float("nan"))
    shown = f"{float(probability):.3f}" if _number(probability) != "-1.0" else "–"
    cells = [
        f'<td class="name"><b>{esc(name)}</b><br><span class="muted">'
        f"{esc(record['image'])}</span></td>",
        f"<td>{esc(record.get('predicted', ''))}</td>",
        f'<td class="num">{esc(shown)}</td>',
        f"<td>{esc(record.get('target', ''))}</td>",
    ]
    outputs = record.get("outputs", {})
    for key in columns:
        cells.append(_cell(key, name, outputs[key], out) if key in outputs else "<td></td>")
    for method in galleries:
        path = record.get("galleries", {}).get(method)
        cells.append(f"<td>{link(_rel(path, out), 'every layer')}</td>" if path else "<td></td>")
    return (
        f'<tr data-order="{order}" data-probability="{_number(probability)}">'
        + "".join(cells)
        + "</tr>"
    )


def _table(records: Sequence[dict], out: Path) -> list[str]:
    """The table: one row per image, one column per method (and layer)."""
    columns = list(dict.fromkeys(k for r in records for k in r.get("outputs", {})))
    galleries = list(dict.fromkeys(m for r in records for m in r.get("galleries", {})))
    heads = ["image", "predicted", "probability", "explained", *columns]
    heads += [f"{m} at every layer" for m in galleries]
    buttons = "".join(
        f'<button type="button" data-sort="{attr}" data-dir="{d}" '
        f'aria-pressed="{str(attr == "order").lower()}">{esc(text)}</button>'
        for text, attr, d in _SORTS
    )
    return [
        f"<style>{_CSS}</style>",
        f'<div class="sort">Sort: {buttons}</div>',
        '<div class="scroll"><table id="explained"><thead><tr>',
        *(f"<th>{esc(h)}</th>" for h in heads),
        "</tr></thead><tbody>",
        *(_row(i, r, columns, galleries, out) for i, r in enumerate(records)),
        "</tbody></table></div>",
        "<p class='muted'>Each picture links to its panel (photo, map and overlay); the links "
        "under it to the full-size files.</p>",
        f"<script>{SORT_SCRIPT}</script>",
    ]


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
    sections = [("images", "Images", _table(records, out))]
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
