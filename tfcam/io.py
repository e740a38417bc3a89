"""Atomic file writing: a killed process never leaves a half-written file behind.

Every file of a run directory goes through these helpers: the content is written to a temporary
file in the same folder, flushed to disk, then renamed over the target (rename is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tfcam.errors import damaged


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, *, suffix: str | None = None, durable: bool = True
) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it is renamed to ``path``.

    Use it for writers that want a file name (``model.save``, ``savefig``). The temporary name keeps
    the target's suffix (or ``suffix``), since some writers pick the format from it.

    Args:
        path: The final location.
        suffix: Suffix of the temporary file; defaults to the suffix(es) of ``path``.
        durable: Flush the file to the disk before the rename (``fsync``), so that it survives a
            power cut too. Without it a killed process still never leaves half a file (the
            rename is atomic); for files that can be made again, such as explain's pictures,
            where the flush cost more wall time than drawing (about 20 ms a file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    except OSError as e:  # name the file the user would look for, not the temporary one
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    _pending.add(tmp_path)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        yield tmp_path
        if durable:
            _fsync_file(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        _pending.discard(tmp_path)


#: Temporary files of the writes in progress, for :func:`discard_pending`.
_pending: set[Path] = set()


def discard_pending() -> None:
    """Removes the temporary files of every atomic write in progress (their targets untouched).

    For a process about to end at once (``os._exit`` on a second Ctrl-C), where the ``finally``
    blocks of :func:`atomic_path` will not run.
    """
    for tmp in list(_pending):
        try:
            tmp.unlink()
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> Path:
    """Writes ``data`` to ``path`` atomically and returns the path (``durable``: see
    :func:`atomic_path`)."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes UTF-8 ``text`` to ``path`` atomically and returns the path.

    A file name that is not UTF-8 reaches Python as lone surrogates (``caf\udce9.png``); such
    characters are written as their byte escapes (``caf\\xe9.png``) instead of failing.
    """
    return write_bytes(path, printable(text).encode("utf-8"))


def printable(text: str) -> str:
    """``text`` with the undecodable bytes of a non-UTF-8 file name shown as ``\\xNN``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON to ``path`` atomically and returns the path."""
    return write_text(
        path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    )


def read_json(path: str | os.PathLike) -> Any:
    """The JSON content of a file that tfcam wrote.

    Raises:
        UserError: The file is not valid UTF-8 JSON (damaged), naming the file.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise damaged(path, e) from None


def _json_default(obj: Any) -> Any:
    # NumPy scalars and arrays, paths: the types our metrics and reports carry.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")
