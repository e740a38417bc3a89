"""Unpacking archives safely: all or nothing, inside the folder, within size limits.

:func:`unpack_tree` unpacks a zip or tar archive (plain, gzip, bzip2 or xz) and the archives found
inside it into one folder, and raises instead of leaving a half-unpacked or oversized tree:

* **Damage** (:class:`DamagedArchive`). A tar archive is read through once before anything is
  written: the compressed stream is read to its very end, so the gzip CRC-32 and length, the
  bzip2 block CRCs and the xz check are all verified, and whatever follows the last member must
  be the zero blocks that end a tar archive (``tarfile`` quietly stops at a damaged header, which
  is how a corrupt archive used to give 7 files of 12). Zip members are checked against their
  CRC-32 as they are written. Truncation, a damaged stream, a file that is not an archive at all
  and an archive nested inside that is damaged all end here.
* **Hostile members** (also :class:`DamagedArchive`): absolute paths, ``..`` and links that
  leave the folder, devices and pipes, zip entries that are symbolic links. Tar members go through
  the standard library's ``data`` extraction filter (PEP 706: no setuid or group/other-writable
  modes either) where it exists (Python 3.11.4+, 3.10.12+); older Pythons get the same path and
  type checks here and no modes from the archive at all.
* **Bombs** (:class:`UnpackLimitExceeded`). Every byte written counts against one budget shared by
  the nested archives: at most ``limit_bytes`` in all, and at most ``max_ratio`` times the size of
  the outer archive once past :data:`RATIO_FLOOR_BYTES`. Sizes the archive declares (tar member
  sizes, zip ``file_size``) are checked before anything is written, and the bytes actually written
  are counted as well, so a zip that understates its sizes is stopped too.

Plain Python only (``tarfile``, ``zipfile``, ``gzip``, ``bz2``, ``lzma``).
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import re
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from tfcam.config import DataConfig
from tfcam.errors import UserError

log = logging.getLogger("tfcam")

#: Archive suffixes that are unpacked when found inside an archive (and then deleted).
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
#: Folders that archivers add and that are never data.
JUNK_DIRS = ("__MACOSX",)
#: Defaults of ``data.unpack_limit_gb`` and ``data.unpack_max_ratio`` (why these: config.py).
DEFAULT_LIMIT_GB = DataConfig.unpack_limit_gb
DEFAULT_MAX_RATIO = DataConfig.unpack_max_ratio
#: The ratio is not enforced below this many bytes unpacked: a small archive of very compressible
#: files does no harm, and the total limit still applies.
RATIO_FLOOR_BYTES = 100_000_000
#: How deep archives may nest inside each other (an archive that contains itself never ends).
MAX_NESTING = 4
_CHUNK = 1 << 20
# The standard library's safe extraction where it exists; otherwise no modes or owners from the
# archive (paths, links and types are checked by _check_tar_member in both cases).
_TAR_EXTRACT_ARGS: dict = (
    {"filter": "data"} if hasattr(tarfile, "data_filter") else {"set_attrs": False}
)


class DamagedArchive(UserError):
    """An archive that cannot be unpacked as a whole: damaged, not an archive, or hostile."""

    def __init__(self, archive: Path | str, reason: str):
        self.archive = str(archive)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"Cannot unpack '{self.archive}': {self.reason}")


class UnpackLimitExceeded(UserError):
    """Unpacking would write more than ``data.unpack_limit_gb`` or ``data.unpack_max_ratio`` allow."""


def human_bytes(n: float) -> str:
    """``1234567`` → ``"1.2 MB"`` (decimal units, as disk sizes are sold)."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns


def is_archive(name: str) -> bool:
    """Whether a file found inside an archive is itself one (by its name) to unpack."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


class Budget:
    """The bytes one unpacking may write, shared by the outer archive and the ones inside it.

    Args:
        archive_size: Size in bytes of the outer archive (what the ratio is measured against).
        limit_bytes: The total that may be written.
        max_ratio: Unpacked bytes per archive byte allowed past :data:`RATIO_FLOOR_BYTES`.
        progress: Callable taking a message; told every few seconds how far unpacking got.
    """

    def __init__(
        self,
        archive_size: int,
        *,
        limit_bytes: float = DEFAULT_LIMIT_GB * 1e9,
        max_ratio: float = DEFAULT_MAX_RATIO,
        progress: Callable[[str], None] | None = None,
    ):
        self.archive_size = archive_size
        self.limit_bytes = limit_bytes
        self.max_ratio = max_ratio
        by_ratio = max(RATIO_FLOOR_BYTES, max_ratio * archive_size)
        self.allowed = min(limit_bytes, by_ratio)
        self.ratio_binds = by_ratio < limit_bytes
        self.used = 0
        self.files = 0
        self.say = progress or log.info
        #: The outer archive and the one inside it being unpacked, for messages.
        self.outer: str | None = None
        self.inner: str | None = None
        self._last = time.monotonic()

    def _refuse(self, what: str, declared: int | None) -> UnpackLimitExceeded:
        label = f"'{what}'"
        if self.outer is not None and self.inner is not None:
            label = f"'{self.outer}' ('{self.inner}' inside it)"
        size = (
            f"would unpack to {human_bytes(declared)}"
            if declared is not None
            else f"unpacks to more than {human_bytes(self.allowed)}"
        )
        if self.ratio_binds:
            return UnpackLimitExceeded(
                f"Refusing to unpack {label}: it {size} from {human_bytes(self.archive_size)}, "
                f"more than data.unpack_max_ratio={self.max_ratio:g} times the archive's size (a "
                "zip bomb?). If you trust it, raise the setting: --set data.unpack_max_ratio=N"
            )
        return UnpackLimitExceeded(
            f"Refusing to unpack {label}: it {size}, more than data.unpack_limit_gb="
            f"{self.limit_bytes / 1e9:g}. If you trust it and have the space, raise the setting: "
            "--set data.unpack_limit_gb=N"
        )

    def declare(self, what: str, nbytes: int) -> None:
        """Checks sizes an archive declares before anything of it is written.

        Raises:
            UnpackLimitExceeded: What is already written plus ``nbytes`` is over the budget.
        """
        if self.used + nbytes > self.allowed:
            raise self._refuse(what, self.used + nbytes)

    def write(self, what: str, nbytes: int) -> None:
        """Counts ``nbytes`` about to be written (call before writing them).

        Raises:
            UnpackLimitExceeded: They would take the total over the budget.
        """
        if self.used + nbytes > self.allowed:
            raise self._refuse(what, None)
        self.used += nbytes
        now = time.monotonic()
        if now - self._last >= 5.0:
            self._last = now
            self.say(f"  {self.files} files, {human_bytes(self.used)} unpacked")


# --------------------------------------------------------------------------------------------
# Members


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _check_name(archive: Path, name: str, dest: Path) -> Path:
    """Where a member named ``name`` goes; refuses absolute names and names that leave ``dest``."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DamagedArchive(archive, f"member '{name}' has an absolute path")
    out = (dest / name).resolve()
    if not _inside(dest.resolve(), out):
        raise DamagedArchive(archive, f"member '{name}' would be written outside the target folder")
    return out


def _check_tar_member(archive: Path, m: tarfile.TarInfo, dest: Path) -> None:
    out = _check_name(archive, m.name, dest)
    if (
        m.ischr()
        or m.isblk()
        or m.isfifo()
        or not (m.isreg() or m.isdir() or m.issym() or m.islnk())
    ):
        raise DamagedArchive(archive, f"member '{m.name}' is a device, pipe or other special file")
    if m.issym() or m.islnk():
        if os.path.isabs(m.linkname):
            raise DamagedArchive(archive, f"link '{m.name}' points to an absolute path")
        base = out.parent if m.issym() else dest
        if not _inside(dest.resolve(), (base / m.linkname).resolve()):
            raise DamagedArchive(archive, f"link '{m.name}' points outside the target folder")


def _check_zip_member(archive: Path, info: zipfile.ZipInfo, dest: Path) -> Path:
    if any(part == ".." for part in re.split(r"[/\\]", info.filename)):
        raise DamagedArchive(
            archive, f"member '{info.filename}' would be written outside the target folder"
        )
    out = _check_name(archive, info.filename, dest)
    mode = info.external_attr >> 16  # Unix mode, when a Unix zipper wrote one
    if stat.S_ISLNK(mode):
        raise DamagedArchive(archive, f"member '{info.filename}' is a symbolic link")
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise DamagedArchive(archive, f"member '{info.filename}' is a device or other special file")
    return out


# --------------------------------------------------------------------------------------------
# Formats


def _open_decompressed(path: Path):
    """The archive's bytes, decompressed by its magic number (not its name): ``(kind, file)``."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:2] == b"\x1f\x8b":
        return "gzip", gzip.open(path, "rb")
    if head[:3] == b"BZh":
        return "bzip2", bz2.open(path, "rb")
    if head == b"\xfd7zXZ\x00":
        return "xz", lzma.open(path, "rb")
    return "tar", open(path, "rb")


def _is_zip(path: Path) -> bool:
    """Zip or tar? By the first bytes, and only then by a zip directory at the end: a plain tar
    whose last member is a zip has one there too."""
    with open(path, "rb") as f:
        head = f.read(262)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return True
    if head[257:262] == b"ustar" or head[:2] == b"\x1f\x8b" or head[:3] == b"BZh":
        return False
    if head[:6] == b"\xfd7zXZ\x00":
        return False
    return zipfile.is_zipfile(path)  # a zip with something before it (self-extracting)


def _verify_tar_end(archive: Path, kind: str, stream, end: int, n_members: int) -> None:
    """Reads from where ``tarfile`` stopped to the end of the stream: only zero blocks may follow
    (anything else means a damaged header hid the rest), and reading to the end of a compressed
    stream makes the decompressor check its CRC and length."""
    reached = stream.seek(end)
    if kind == "tar":
        reached = min(reached, archive.stat().st_size)
    if reached < end:
        raise DamagedArchive(archive, "truncated: it ends inside the data of its last member")
    while True:
        block = stream.read(_CHUNK)
        if not block:
            return
        if block.strip(b"\0"):
            raise DamagedArchive(
                archive,
                f"damaged: unreadable data after member {n_members} (a corrupt header or a "
                f"{kind} stream that was changed)",
            )


def _unpack_tar(archive: Path, dest: Path, budget: Budget) -> None:
    kind, stream = _open_decompressed(archive)
    with stream:
        try:
            tf = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115 (closed by the with below)
        except tarfile.ReadError as e:
            if kind != "tar":  # a damaged stream can decompress to garbage before its CRC fails
                while stream.read(_CHUNK):
                    pass
            what = (
                "a zip or tar archive"
                if kind == "tar"
                else f"a tar archive inside the {kind} stream"
            )
            raise DamagedArchive(archive, f"not {what} ({e})") from None
        with tf:
            members = tf.getmembers()
            _verify_tar_end(archive, kind, stream, tf.offset, len(members))
            budget.declare(str(archive), sum(m.size for m in members if m.isreg()))
            for m in members:
                _check_tar_member(archive, m, dest)
                if m.isreg():
                    budget.write(str(archive), m.size)
                    budget.files += 1
                tf.extract(m, dest, **_TAR_EXTRACT_ARGS)


def _unpack_zip(archive: Path, dest: Path, budget: Budget) -> None:
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        budget.declare(str(archive), sum(i.file_size for i in infos if not i.is_dir()))
        for info in infos:
            out = _check_zip_member(archive, info, dest)
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            # Counted as written, not as declared: the sizes in a zip's directory can lie.
            with z.open(info) as src, open(out, "wb") as dst:
                while block := src.read(_CHUNK):
                    budget.write(str(archive), len(block))
                    dst.write(block)
            budget.files += 1


def unpack_archive(archive: Path, dest: Path, budget: Budget | None = None) -> None:
    """Unpacks one zip or tar archive into ``dest`` (not the archives inside it).

    Args:
        archive: The archive; its format is read from its content, not its name.
        dest: The folder to unpack into (created).
        budget: The bytes it may write; by default the default limits for its size.

    Raises:
        DamagedArchive: Not an archive, damaged, truncated, or with members that leave ``dest``.
        UnpackLimitExceeded: Over the size or ratio limit.
        UserError: The disk is full or not writable.
    """
    archive, dest = Path(archive), Path(dest)
    budget = budget or Budget(archive.stat().st_size)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if _is_zip(archive):
            _unpack_zip(archive, dest, budget)
        else:
            _unpack_tar(archive, dest, budget)
    except UserError:
        raise
    except OSError as e:
        if e.errno is not None:  # the disk, not the archive (decompressors raise without errno)
            raise UserError(f"Cannot unpack '{archive}' into '{dest}': {e.strerror}") from None
        raise DamagedArchive(archive, f"damaged ({e})") from None
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError) as e:
        raise DamagedArchive(archive, f"damaged or truncated ({e or type(e).__name__})") from None
    except (RuntimeError, NotImplementedError) as e:  # encrypted, unknown compression method
        raise DamagedArchive(archive, str(e)) from None


def unpack_tree(
    archive: Path,
    dest: Path,
    *,
    limit_bytes: float = DEFAULT_LIMIT_GB * 1e9,
    max_ratio: float = DEFAULT_MAX_RATIO,
    progress: Callable[[str], None] | None = None,
) -> Budget:
    """Unpacks ``archive`` into ``dest``, then the archives inside it (each next to itself, then
    deleted), all against one budget.

    The caller unpacks into a temporary folder and renames it when this returns: on any error
    ``dest`` holds a partial tree to delete.

    Returns:
        The budget, with the files and bytes written.

    Raises:
        DamagedArchive: The archive or one inside it cannot be unpacked whole, or nests deeper than
            :data:`MAX_NESTING`.
        UnpackLimitExceeded: Over ``limit_bytes`` or ``max_ratio``.
    """
    archive, dest = Path(archive), Path(dest)
    say = progress or log.info
    budget = Budget(
        archive.stat().st_size, limit_bytes=limit_bytes, max_ratio=max_ratio, progress=say
    )
    budget.outer = str(archive)
    t0 = time.monotonic()
    unpack_archive(archive, dest, budget)
    for depth in range(MAX_NESTING + 1):
        inner = _nested_archives(dest)
        if not inner:
            break
        if depth == MAX_NESTING:
            raise DamagedArchive(archive, f"archives nested more than {MAX_NESTING} deep")
        for path in inner:
            rel = path.relative_to(dest)
            say(f"Unpacking {rel} (inside {archive.name}) …")
            budget.inner = str(rel)
            try:
                unpack_archive(path, path.parent, budget)
            except DamagedArchive as e:
                raise DamagedArchive(archive, f"'{rel}' inside it: {e.reason}") from None
            path.unlink()
    say(
        f"Unpacked {budget.files} files, {human_bytes(budget.used)}, "
        f"in {time.monotonic() - t0:.1f} s"
    )
    return budget


def _nested_archives(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in JUNK_DIRS)
        found += [Path(dirpath, n) for n in sorted(filenames) if is_archive(n)]
    return found
