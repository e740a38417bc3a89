"""Errors that are the user's to fix (bad names, values, paths), as opposed to bugs."""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable


class UserError(ValueError):
    """A usage or input error: the message names the bad value and the valid choices.

    The CLI prints the message on one line and exits with code 2. Library users can catch it as a
    ``ValueError``.
    """


class TrainingDiverged(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""


def choices_message(
    what: str,
    received: object,
    choices: Iterable[str],
    *,
    limit: int = 40,
    listing: str | None = None,
) -> str:
    """Builds "Unknown <what> 'x'. Did you mean 'y'? Choose from: a, b, c".

    Args:
        what: The kind of thing, e.g. "experiment" or "layer".
        received: The value the user gave.
        choices: The valid values.
        limit: At most this many choices are listed; the rest are counted.
        listing: A command that lists every choice (``tfcam backbones``): with more choices than
            ``limit``, the ``limit`` nearest to what was received are listed, and the command
            named, instead of the first ``limit`` of a long line.

    Returns:
        A one-line message.
    """
    choices = list(choices)
    msg = f"Unknown {what} '{received}'."
    close = difflib.get_close_matches(str(received), choices, n=3, cutoff=0.6)
    if close:
        msg += " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    if listing and len(choices) > limit:
        near = difflib.get_close_matches(str(received), choices, n=limit, cutoff=0.0)
        return (
            f"{msg} Nearest of {len(choices)} {what}s: {', '.join(near)} "
            f"(`{listing}` lists them all)"
        )
    shown = ", ".join(choices[:limit])
    if len(choices) > limit:
        shown += f", … ({len(choices) - limit} more)"
    return f"{msg} Choose from: {shown}"


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(error).__name__


def damaged(path: object, error: BaseException | str, what: str = "file") -> UserError:
    """A :class:`UserError` for a file that exists but cannot be parsed: "<what> '<path>' is
    damaged or not in the expected format: <first line of the cause>".

    Args:
        path: The file.
        error: What the parser said (an exception or a sentence).
        what: The kind of file, e.g. "model file" or "run file".
    """
    cause = error if isinstance(error, str) else first_line(error)
    return UserError(f"The {what} '{path}' is damaged or not in the expected format: {cause}")


#: Errors of the file system that are the user's to fix (a folder they named is read-only, full,
#: or not a folder), as opposed to bugs: these exit with 2 and one line naming the path.
_USER_ERRNOS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.EEXIST: "a file of that name is in the way",
    errno.ELOOP: "too many levels of symbolic links",
}


def file_error_message(e: OSError) -> str | None:
    """One line for a file-system error that names a path and is the user's to fix, e.g.
    "cannot write to 'out/x.png': read-only file system"; None for anything else (a bug)."""
    reason = _USER_ERRNOS.get(e.errno)
    if reason is None or e.filename is None:
        return None
    path = os.fsdecode(e.filename)
    # Read or write? Only EACCES/EPERM/ELOOP can be either; an existing file that cannot be read
    # (or a path that cannot be followed) was being read, anything else was being written.
    readable = os.access(path, os.R_OK) if os.path.exists(path) else True
    verb = "cannot read" if not readable or e.errno == errno.ELOOP else "cannot write to"
    return f"{verb} '{path}': {reason}".encode("utf-8", "backslashreplace").decode("utf-8")
