"""Downloading and unpacking dataset archives into the tfcam cache.

An experiment whose data can be fetched names an archive URL (``data.url``); when no
``--data-dir`` is given, :func:`fetch_archive` downloads it once into
``<cache>/downloads/``, checks its digest when the experiment gives one, unpacks it into
``<cache>/datasets/<name>-<hash of the URL>/`` (archives inside the archive too, as in the
official Caltech-101 zip) and returns that folder. Every step is atomic: the download goes to a
``.part`` file that is renamed when complete, and the unpacked tree is built in a temporary folder
that is renamed into place, so an interrupted download or extraction is started again next time
instead of being used half-done.

Plain Python only (``urllib``, ``tarfile``, ``zipfile``): ``http://``, ``https://`` and
``file://`` URLs work the same, which is how the tests serve small archives from 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from tfcam.config import parse_checksum
from tfcam.errors import UserError
from tfcam.paths import cache_dir

log = logging.getLogger("tfcam")

#: Archive suffixes that are unpacked (nested ones too).
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz", ".zip")
#: Folders that archivers add and that are never data.
JUNK_DIRS = ("__MACOSX",)
_CHUNK = 1 << 20


def _is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _url_name(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    return name or "download"


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(
    url: str,
    dest: Path,
    *,
    checksum: str | None = None,
    progress: Callable[[str], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Downloads ``url`` to ``dest`` (atomically), unless ``dest`` exists and passes the check.

    Args:
        url: ``http(s)://`` or ``file://`` address.
        dest: The file to write.
        checksum: ``"md5:…"``/``"sha256:…"`` the file must have, or None.
        progress: Callable taking a message, called every few seconds during the download.
        timeout: Seconds to wait for the server on each read.

    Returns:
        ``dest``.

    Raises:
        UserError: The download failed or the file's digest is wrong (the message says what to
            do instead: download it by hand and give ``--data-dir``).
    """
    check = parse_checksum(checksum)
    dest = Path(dest)
    if dest.is_file() and (check is None or _digest(dest, check[0]) == check[1]):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    say = progress or log.info
    say(f"Downloading {url} …")
    t0 = last = time.monotonic()
    done = 0
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "tfcam"})
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            while True:
                block = resp.read(_CHUNK)
                if not block:
                    break
                out.write(block)
                done += len(block)
                now = time.monotonic()
                if now - last >= 5.0:
                    last = now
                    share = f" ({100 * done / total:.0f}% of {total / 1e6:.1f} MB)" if total else ""
                    rate = done / max(now - t0, 1e-9) / 1e6
                    say(f"  {done / 1e6:.1f} MB{share}, {rate:.1f} MB/s")
            if total and done != total:
                raise OSError(f"connection closed after {done} of {total} bytes")
    except (urllib.error.URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        if isinstance(e, urllib.error.HTTPError):
            reason = f"HTTP {e.code} {e.reason}"
        else:
            reason = getattr(e, "reason", None) or e
        raise UserError(
            f"Could not download {url} ({reason}). Download and unpack it yourself and pass "
            "--data-dir DIR"
        ) from None
    if check is not None:
        got = _digest(part, check[0])
        if got != check[1]:
            part.unlink(missing_ok=True)
            raise UserError(
                f"Downloaded file from {url} has {check[0]} {got}, expected {check[1]} "
                "(a changed or damaged archive); download it yourself and pass --data-dir DIR"
            )
    os.replace(part, dest)
    say(f"Downloaded {done / 1e6:.1f} MB in {time.monotonic() - t0:.1f} s")
    return dest


def _safe_members_tar(tf: tarfile.TarFile, target: Path):
    root = target.resolve()
    for m in tf.getmembers():
        p = (target / m.name).resolve()
        if not (p == root or root in p.parents):
            raise UserError(f"Archive member '{m.name}' would be written outside the target folder")
        if m.issym() or m.islnk() or m.isdev():
            continue
        yield m


def extract(archive: Path, target: Path) -> None:
    """Unpacks a tar (any compression) or zip archive into ``target``, refusing paths that leave it.

    Raises:
        UserError: Not a readable archive.
    """
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                root = target.resolve()
                for name in z.namelist():
                    p = (target / name).resolve()
                    if not (p == root or root in p.parents):
                        raise UserError(
                            f"Archive member '{name}' would be written outside the target folder"
                        )
                z.extractall(target)
        else:
            with tarfile.open(archive) as t:
                t.extractall(target, members=list(_safe_members_tar(t, target)))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise UserError(f"Cannot unpack '{archive.name}': {e}") from None


def _extract_nested(folder: Path) -> None:
    """Unpacks archives found inside an unpacked tree, next to themselves, then deletes them."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in JUNK_DIRS]
        for name in filenames:
            if _is_archive(name):
                inner = Path(dirpath, name)
                extract(inner, Path(dirpath))
                inner.unlink()


def fetch_archive(
    url: str,
    *,
    name: str,
    checksum: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Downloads (once) and unpacks (once) an archive into the cache; returns the unpacked folder.

    Args:
        url: The archive's address (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``, …).
        name: A readable prefix for the cache folder (the experiment's name).
        checksum: Optional ``"algo:hex"`` digest of the archive.
        progress: Callable taking a message.

    Raises:
        UserError: Download or unpacking failed.
    """
    key = hashlib.sha256(url.encode()).hexdigest()[:10]
    target = cache_dir() / "datasets" / f"{name}-{key}"
    marker = target / ".tfcam-complete"
    if marker.is_file():
        return target
    archive = download(
        url,
        cache_dir() / "downloads" / f"{key}-{_url_name(url)}",
        checksum=checksum,
        progress=progress,
    )
    say = progress or log.info
    say(f"Unpacking {archive.name} into {target} …")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    extract(archive, tmp)
    _extract_nested(tmp)
    (tmp / ".tfcam-complete").write_text(url + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def _visible_entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in JUNK_DIRS]


def find_root(folder: Path, root_name: str | None = None, *, max_depth: int = 4) -> Path:
    """The dataset's folder inside an unpacked archive or a ``--data-dir``.

    With ``root_name``, the shallowest folder of that name (``folder`` itself when it has that
    name); without, ``folder`` after stepping down through folders that hold nothing but one
    folder (the wrapper most archives have).

    Raises:
        UserError: ``root_name`` was not found within ``max_depth`` levels.
    """
    folder = Path(folder)
    if root_name:
        if folder.name == root_name:
            return folder
        level = [folder]
        for _ in range(max_depth):
            nxt = []
            for d in level:
                try:
                    subs = sorted(p for p in _visible_entries(d) if p.is_dir())
                except OSError:
                    continue
                for s in subs:
                    if s.name == root_name:
                        return s
                nxt.extend(subs)
            level = nxt
        raise UserError(f"No folder named '{root_name}' in '{folder}' (the expected layout)")
    while True:
        entries = _visible_entries(folder)
        if len(entries) == 1 and entries[0].is_dir():
            folder = entries[0]
        else:
            return folder
