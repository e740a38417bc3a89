"""Downloading and unpacking dataset archives into the tfcam cache.

An experiment whose data can be fetched names an archive URL (``data.url``); when no
``--data-dir`` is given, :func:`fetch_archive` downloads it into ``<cache>/downloads/``, unpacks
it (archives inside it too, as in the official Caltech-101 zip) into
``<cache>/datasets/<name>-<hash of the URL>/`` and returns that folder.

**What is checked, on every use.** The unpacked folder carries a marker written last, which
records what was verified: the URL, ``data.checksum`` when the experiment gives one, and the
source's identity when it was fetched. The folder is used only while that still holds:

* with ``data.checksum``, the checksum must be the one the folder was unpacked under (no network
  needed: the content is pinned); another checksum verifies the cached download again, or
  downloads anew, and unpacks again;
* without it, the source must look unchanged: for ``file://`` its size and modification time
  (``stat``); for ``http(s)://`` its ``ETag``, else ``Last-Modified`` and ``Content-Length``,
  asked with a ``HEAD`` request. A server that sends none of these cannot be checked (pin the
  content with ``data.checksum``), and when the source cannot be reached (offline) the cached
  copy is used with a warning.

**Nothing broken is kept.** The download goes to a ``.part`` file renamed when complete and its
digest right; the tree is unpacked into ``<folder>.tmp`` and renamed into place only when the
whole archive unpacked (see :mod:`tfcam.data.unpack` for the checks and the size limits). A
download whose digest is wrong or that cannot be unpacked is deleted, so that the next run,
after the source is fixed, fetches it again; one over the size limits is kept (raising the limit
is enough) and nothing of it is left in ``datasets/``.

Plain Python only (``urllib``): ``http://``, ``https://`` and ``file://`` URLs work the same,
which is how the tests serve small archives from 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tfcam.config import parse_checksum
from tfcam.data.unpack import (
    DEFAULT_LIMIT_GB,
    DEFAULT_MAX_RATIO,
    JUNK_DIRS,
    DamagedArchive,
    human_bytes,
    unpack_archive,
    unpack_tree,
)
from tfcam.errors import UserError
from tfcam.locks import DirectoryLock
from tfcam.paths import cache_dir
from tfcam.progress import task

log = logging.getLogger("tfcam")

#: The file in an unpacked folder that says it is complete and what it was verified against.
MARKER = ".tfcam-complete"
_CHUNK = 1 << 20
_HEADERS = {"User-Agent": "tfcam"}


def _url_name(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    return name or "download"


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(dest: Path) -> Path:
    """What is known about a cached download: its URL, SHA-256 and source identity."""
    return dest.with_name(dest.name + ".json")


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _http_state(headers) -> dict:
    names = {"etag": "ETag", "last_modified": "Last-Modified", "length": "Content-Length"}
    return {k: headers.get(h) for k, h in names.items() if headers.get(h)}


def _file_state(url: str) -> dict | None:
    path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def source_state(url: str, *, timeout: float = 10.0) -> dict | None:
    """What identifies the file at ``url`` now, without downloading it; None when unknown.

    ``file://``: ``{"size", "mtime_ns"}`` from ``stat``. ``http(s)://``: ``{"etag",
    "last_modified", "length"}`` (those the server sends) from a ``HEAD`` request.
    """
    if urllib.parse.urlparse(url).scheme == "file":
        return _file_state(url)
    try:
        req = urllib.request.Request(url, headers=_HEADERS, method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return _http_state(resp.headers)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def same_state(recorded: dict, current: dict) -> bool:
    """Whether two :func:`source_state` answers describe the same file (True when neither holds
    anything to compare: such a source cannot be checked)."""

    def both(key: str) -> bool:
        return recorded.get(key) is not None and current.get(key) is not None

    if both("mtime_ns"):
        return recorded["mtime_ns"] == current["mtime_ns"] and recorded.get("size") == current.get(
            "size"
        )
    if both("etag"):
        return recorded["etag"] == current["etag"]
    if both("last_modified"):
        if both("length") and recorded["length"] != current["length"]:
            return False
        return recorded["last_modified"] == current["last_modified"]
    if both("length"):
        return recorded["length"] == current["length"]
    return True


def _source_unchanged(url: str, recorded) -> bool:
    current = source_state(url)
    if current is None:
        log.warning(f"Could not check whether {url} changed since it was fetched; using the cache")
        return True
    return isinstance(recorded, dict) and same_state(recorded, current)


def _cached_download_ok(url: str, dest: Path, check: tuple[str, str] | None, say) -> bool:
    if check is not None:
        if _digest(dest, check[0]) == check[1]:
            return True
        say(f"The cached {dest} does not have {check[0]} {check[1]}; downloading it again")
        return False
    meta = _read_json(_sidecar(dest))
    if meta is None or meta.get("url") != url:
        return False
    if not _source_unchanged(url, meta.get("source")):
        say(f"{url} changed since it was downloaded; downloading it again")
        return False
    return True


def download(
    url: str,
    dest: Path,
    *,
    checksum: str | None = None,
    progress: Callable[[str], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Downloads ``url`` to ``dest`` (atomically), unless ``dest`` exists and passes the check.

    The check is the checksum when one is given; otherwise that the source is unchanged since
    ``dest`` was downloaded (see the module's notes). Beside ``dest``, ``<dest>.json`` records
    the URL, the SHA-256 and the source's identity.

    Args:
        url: ``http(s)://`` or ``file://`` address.
        dest: The file to write.
        checksum: ``"md5:…"``/``"sha256:…"`` the file must have, or None.
        progress: Callable taking a message (the start and the end of the download); the bytes,
            rate and time left show as a :func:`tfcam.progress.task`.
        timeout: Seconds to wait for the server on each read.

    Returns:
        ``dest``.

    Raises:
        UserError: The download failed or the file's digest is wrong (the message says what to
            do instead: download it by hand and give ``--data-dir``); nothing is kept.
    """
    check = parse_checksum(checksum)
    dest = Path(dest)
    say = progress or log.info
    if dest.is_file() and _cached_download_ok(url, dest, check, say):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    say(f"Downloading {url} …")
    t0 = time.monotonic()
    done = 0
    hashes = {"sha256": hashlib.sha256()}
    if check is not None:
        hashes.setdefault(check[0], hashlib.new(check[0]))
    try:
        # Taken before reading: a file changed while it is copied looks changed next time.
        state = _file_state(url) if urllib.parse.urlparse(url).scheme == "file" else None
        req = urllib.request.Request(url, headers=_HEADERS)
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(part, "wb") as out:
            if state is None:
                state = _http_state(resp.headers)
            total = int(resp.headers.get("Content-Length") or 0)
            with task(f"Downloading {dest.name}", total=total or None, unit="B") as bar:
                while True:
                    block = resp.read(_CHUNK)
                    if not block:
                        break
                    out.write(block)
                    for h in hashes.values():
                        h.update(block)
                    done += len(block)
                    bar.advance(len(block))
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
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if check is not None:
        got = hashes[check[0]].hexdigest()
        if got != check[1]:
            part.unlink(missing_ok=True)
            raise UserError(
                f"Downloaded file from {url} has {check[0]} {got}, expected {check[1]} "
                "(a changed or damaged archive; not kept). Fix data.checksum or the file, or "
                "download it yourself and pass --data-dir DIR"
            )
    os.replace(part, dest)
    _write_json(
        _sidecar(dest),
        {"url": url, "sha256": hashes["sha256"].hexdigest(), "bytes": done, "source": state},
    )
    say(f"Downloaded {done / 1e6:.1f} MB in {time.monotonic() - t0:.1f} s")
    return dest


def extract(archive: Path, target: Path) -> None:
    """Unpacks one tar (any compression) or zip archive into ``target`` with the default limits.

    Raises:
        UserError: Not a readable archive, damaged, hostile or over the limits.
    """
    unpack_archive(archive, target)


def _unpacked_ok(target: Path, url: str, check: tuple[str, str] | None) -> bool:
    """Whether the unpacked folder is complete and still what the experiment asks for."""
    marker = _read_json(target / MARKER)
    if marker is None or marker.get("url") != url:
        return False
    if check is not None:
        return marker.get("checksum") == ":".join(check)
    return _source_unchanged(url, marker.get("source"))


def fetch_archive(
    url: str,
    *,
    name: str,
    checksum: str | None = None,
    progress: Callable[[str], None] | None = None,
    unpack_limit_gb: float = DEFAULT_LIMIT_GB,
    unpack_max_ratio: float = DEFAULT_MAX_RATIO,
) -> Path:
    """Downloads and unpacks an archive into the cache, or finds it there; returns the folder.

    Args:
        url: The archive's address (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``, …).
        name: A readable prefix for the cache folder (the experiment's name).
        checksum: Optional ``"algo:hex"`` digest of the archive.
        progress: Callable taking a message.
        unpack_limit_gb: At most this many gigabytes are unpacked (``data.unpack_limit_gb``).
        unpack_max_ratio: At most this many times the archive's size (``data.unpack_max_ratio``).

    Raises:
        UserError: Download or unpacking failed (a damaged download is deleted from the cache and
            the message says so), or the archive is over the limits.
    """
    check = parse_checksum(checksum)
    key = hashlib.sha256(url.encode()).hexdigest()[:10]
    target = cache_dir() / "datasets" / f"{name}-{key}"
    if _unpacked_ok(target, url, check):
        return target
    # One process downloads and unpacks; another asking for the same dataset waits, then uses it.
    with DirectoryLock(cache_dir() / "locks" / target.name, "Dataset cache").acquire(wait=True):
        if _unpacked_ok(target, url, check):  # unpacked by the process we waited for
            return target
        return _download_and_unpack(
            url, target, key, check, checksum, progress, unpack_limit_gb, unpack_max_ratio
        )


def _download_and_unpack(
    url, target, key, check, checksum, progress, unpack_limit_gb, unpack_max_ratio
) -> Path:
    """:func:`fetch_archive`'s work once it holds the dataset's lock."""
    archive = download(
        url,
        cache_dir() / "downloads" / f"{key}-{_url_name(url)}",
        checksum=checksum,
        progress=progress,
    )
    meta = _read_json(_sidecar(archive)) or {}
    say = progress or log.info
    if target.exists():  # unpacked from another file or under another checksum
        say(f"Removing {target}, unpacked from an earlier version of {url}")
        shutil.rmtree(target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    say(f"Unpacking {archive} ({human_bytes(archive.stat().st_size)}) into {target} …")
    try:
        done = unpack_tree(
            archive,
            tmp,
            limit_bytes=unpack_limit_gb * 1e9,
            max_ratio=unpack_max_ratio,
            progress=say,
        )
        marker = {
            "url": url,
            "checksum": ":".join(check) if check else None,
            "sha256": meta.get("sha256"),
            "source": meta.get("source"),
            "files": done.files,
            "bytes": done.used,
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        os.replace(tmp, target)
    except DamagedArchive as e:
        shutil.rmtree(tmp, ignore_errors=True)
        archive.unlink(missing_ok=True)
        _sidecar(archive).unlink(missing_ok=True)
        raise UserError(
            f"Cannot unpack {archive} downloaded from {url}: {e.reason}. Deleted it from the "
            "cache, so the next run fetches it again; fix the file at that address, or download "
            "and unpack it yourself and pass --data-dir DIR"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
