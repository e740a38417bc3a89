"""Safe HTML building for every page tfcam writes: text, attributes and links to files beside it.

Anything a user named (class folders, image files, run directories, experiment names, config
strings, layer names, warnings) goes through :func:`esc` before it is placed in text or in a quoted
attribute, and every link or image source to a file goes through :func:`href`, which
percent-encodes each path segment (RFC 3986 section 2.1) so that a file called
``javascript:alert(1).png`` or ``a#b?.png`` stays a relative path to that very file: with the ``:``
encoded no scheme can appear, and ``#``, ``?`` and ``%`` no longer cut or rewrite the path.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import PurePosixPath, PureWindowsPath
from urllib.parse import quote


def esc(value: object) -> str:
    """``value`` as text that is safe inside an element or a double- or single-quoted attribute.

    ``&``, ``<``, ``>``, ``"`` and ``'`` become character references, so no user-named string can
    open a tag, close an attribute or start an entity.
    """
    return html.escape(str(value), quote=True)


def href(path: str | os.PathLike) -> str:
    """A relative file path as the value of an ``href`` or ``src`` attribute (already escaped).

    Each segment is percent-encoded on its own (``/`` separates segments; on Windows ``\\`` too),
    ``..`` is kept so pages can point to a sibling folder, and a trailing ``/`` (a folder) is kept.

    Args:
        path: A path relative to the page's folder, e.g. ``os.path.relpath(file, page_dir)``.

    Returns:
        The URL, safe to place between double quotes.

    Raises:
        ValueError: An empty or absolute path (pages link only to files beside them).
    """
    text = os.fspath(path)
    if not text:
        raise ValueError("href() needs a relative path, got an empty one")
    windows = os.sep == "\\"
    pure = PureWindowsPath(text) if windows else PurePosixPath(text)
    if pure.is_absolute() or pure.anchor:
        raise ValueError(f"href() takes relative paths only, got {text!r}")
    parts = [quote(part, safe="") for part in pure.parts]
    url = "/".join(parts)
    if text.endswith(("/", "\\") if windows else "/"):
        url += "/"
    return esc(url)


def anchor(section_id: str) -> str:
    """A link to a section of the same page, ``#<id>`` (already escaped)."""
    return esc("#" + quote(section_id, safe=""))


def link(path: str | os.PathLike, text: object) -> str:
    """``<a href="…">text</a>`` to a file beside the page; the text is escaped."""
    return f'<a href="{href(path)}">{esc(text)}</a>'


def markdown_code(text: str) -> str:
    """``text`` as one fenced Markdown code block that nothing inside can close.

    The fence is one backtick longer than the longest run of backticks in ``text`` (CommonMark,
    "Fenced code blocks": the closing fence must be at least as long as the opening one), so a
    config string holding a fence stays code. TensorBoard's text plugin sanitises the HTML it
    renders; this keeps the user's text from turning into Markdown at all.
    """
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def table(frame, *, column_links: dict | None = None, na: str = "") -> str:
    """``frame`` (a pandas DataFrame) as an HTML table, every label and cell escaped here.

    Pandas' own ``to_html`` escapes too, but cannot hold a link in a header; this builds the same
    ``<table class="dataframe">`` shape so a column can head with a link to a file beside the page.

    Args:
        frame: The table; its index becomes the row headers.
        column_links: ``{column: relative path}`` for columns whose header links to a file.
        na: Text for missing cells.
    """
    links = column_links or {}

    def cell(value: object) -> str:
        missing = value is None or (isinstance(value, float) and value != value)
        return na if missing else esc(value)

    heads = "".join(
        f"<th>{link(links[c], c) if c in links else esc(c)}</th>" for c in frame.columns
    )
    rows = "".join(
        f"<tr><th>{esc(label)}</th>{''.join(f'<td>{cell(v)}</td>' for v in values)}</tr>"
        for label, values in zip(frame.index, frame.itertuples(index=False), strict=True)
    )
    return (
        '<table border="1" class="dataframe"><thead><tr style="text-align: right;"><th></th>'
        f"{heads}</tr></thead><tbody>{rows}</tbody></table>"
    )
