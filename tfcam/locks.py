"""One writer at a time: an exclusive lock on a folder (a run directory, a sweep folder, a dataset
being unpacked into the cache), released by the operating system however its holder ends.

This module does not import TensorFlow.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any

from tfcam.errors import UserError, file_error_message

log = logging.getLogger("tfcam")

LOCK_FILE = ".lock"
_held: dict[Path, int] = {}  # folder → how many times this process holds it (re-entrant)


def _holder_text(path: Path) -> str:
    """ "PID 123 (tfcam fit …) on host since …" from a lock file, or a vaguer phrase."""
    import socket

    info: dict[str, Any] = {}
    for _ in range(20):  # the winner writes its details just after it takes the lock
        try:
            info = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            info = {}
        if info.get("pid"):
            break
        import time

        time.sleep(0.05)
    if not info.get("pid"):
        return "another process"
    text = f"PID {info['pid']}"
    if info.get("command"):
        text += f" ({info['command']})"
    if info.get("host") and info["host"] != socket.gethostname():
        text += f" on {info['host']}"
    if info.get("since"):
        text += f" since {info['since']}"
    return text


class DirectoryLock:
    """An exclusive ``fcntl.flock`` on ``FOLDER/.lock`` for the lifetime of one writer.

    The lock file holds the PID, host, command and start time of the holder, so that a second
    writer can name it. The operating system releases a flock when its process ends, however it
    ends (even ``kill -9``): a lock file left by a dead process is taken over, never obeyed. On
    release the file is removed (while still locked); an acquirer that locked a file that was
    removed meanwhile notices (its inode is no longer the path's) and tries again. The lock is
    re-entrant within a process (``fit`` writing its report holds the run once). flock is
    advisory and local: it does not protect a folder on NFS shared by several machines.

    Args:
        folder: The run directory or sweep folder (created if missing).
        what: How messages name the folder ("Run directory", "Sweep folder").
    """

    def __init__(self, folder: str | Path, what: str = "Run directory"):
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None
        self._key: Path | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_FILE

    def acquire(self, command: str | None = None, *, wait: bool = False) -> DirectoryLock:
        """Takes the lock, or fails at once (``wait=False``) or waits for its holder (``wait=True``,
        for work the other process does for us too, like unpacking a shared dataset).

        Raises:
            UserError: Another process holds it (named by PID and command), or the folder cannot
                be written.
        """
        import fcntl
        import os
        import socket
        import sys

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            key = self.folder.resolve()
        except OSError as e:
            raise UserError(
                file_error_message(e) or f"{self.what} '{self.folder}' cannot be created: {e}"
            ) from None
        if key in _held:
            _held[key] += 1
            self._key = key
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise UserError(
                    file_error_message(e) or f"{self.what} '{self.folder}' is not writable: {e}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if wait:
                    log.info(
                        "%s '%s' is in use by %s; waiting",
                        self.what,
                        self.folder,
                        _holder_text(self.path),
                    )
                    fcntl.flock(fd, fcntl.LOCK_EX)
                else:
                    os.close(fd)
                    raise UserError(
                        f"{self.what} '{self.folder}' is in use by {_holder_text(self.path)}; "
                        "wait for it to finish or stop it (one writer at a time)"
                    ) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # locked a file its holder removed on release: take the new one
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command or " ".join(["tfcam", *sys.argv[1:]])[:300],
            "since": _dt.datetime.now().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        self._fd, self._key = fd, key
        _held[key] = 1
        return self

    def release(self) -> None:
        """Lets go (removing the lock file); a no-op if not held."""
        import os

        if self._key is None:
            return
        key, self._key = self._key, None
        _held[key] -= 1
        if _held[key] > 0:
            return
        del _held[key]
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            os.close(fd)

    def __enter__(self) -> DirectoryLock:
        return self.acquire() if self._key is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()
