"""Downloads unpack whole or not at all, stay checked in the cache, and stop zip bombs.

Archives are built small in memory and served as ``file://`` URLs or from 127.0.0.1 (never the
internet): damaged ones of every kind (truncated, flipped bytes in each compression, bad zip CRC,
corrupt deflate data, a damaged archive inside a good one, a file that is no archive), hostile
ones (paths and links leaving the folder, devices, setuid modes, zip symlinks), and bombs (against
the size limit, the ratio limit, nested, and a zip that understates its sizes).
"""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import http.server
import io
import lzma
import os
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_image

from tfcam.data import download, unpack
from tfcam.errors import UserError

N_FILES = 12


def _members(seed: int = 0, n: int = N_FILES, size: int = 3000) -> dict[str, bytes]:
    """``n`` files of random bytes (they do not compress: damage lands in data, not in zeros)."""
    rng = np.random.default_rng(seed)
    return {f"data/c{i % 2}/f{i:02d}.bin": rng.bytes(size) for i in range(n)}


def _tar_bytes(files: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip_bytes(files: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def _flip(data: bytes, at: int, n: int = 4) -> bytes:
    b = bytearray(data)
    for i in range(at, at + n):
        b[i] ^= 0xFF
    return bytes(b)


def _zip_data_offset(data: bytes, index: int) -> int:
    """Where the (compressed) bytes of member ``index`` start in a zip."""
    info = zipfile.ZipFile(io.BytesIO(data)).infolist()[index]
    name_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    return info.header_offset + 30 + name_len + extra_len


def _plain_tar_header_flipped() -> bytes:
    data = _tar_bytes(_members())
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        seventh = t.getmembers()[6].offset
    return _flip(data, seventh + 3)  # inside the name: the header checksum no longer matches


def _nested_damaged() -> bytes:
    inner = gzip.compress(_tar_bytes(_members()))
    return _zip_bytes({"outer/readme.txt": b"hi", "outer/inner.tar.gz": inner[: len(inner) // 2]})


def _corrupt_deflate() -> bytes:
    data = _zip_bytes({"a/text.txt": b"hello tfcam " * 5000})
    at = _zip_data_offset(data, 0)
    return data[:at] + b"\xff" + data[at + 1 :]  # BFINAL=1, BTYPE=11: an invalid deflate block


def _bad_crc() -> bytes:
    data = _zip_bytes(_members(), zipfile.ZIP_STORED)
    return _flip(data, _zip_data_offset(data, 5) + 100)


DAMAGED = {
    "truncated tar.gz": lambda: gzip.compress(_tar_bytes(_members()))[:-9000],
    "flipped bytes in gzip": lambda: _flip(gzip.compress(_tar_bytes(_members())), 20000),
    "flipped bytes in bz2": lambda: _flip(bz2.compress(_tar_bytes(_members())), 20000),
    "flipped bytes in xz": lambda: _flip(lzma.compress(_tar_bytes(_members())), 20000),
    "flipped header in a plain tar": _plain_tar_header_flipped,
    "truncated plain tar": lambda: _tar_bytes(_members())[:20000],
    "zip with a bad CRC": _bad_crc,
    "zip with corrupt deflate data": _corrupt_deflate,
    "damaged archive inside a zip": _nested_damaged,
    "not an archive": lambda: b"<html><body>Moved</body></html>\n" * 50,
}


def _cache(tmp_path: Path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TFCAM_CACHE_DIR", str(cache))
    return cache


def _leftovers(cache: Path) -> list[str]:
    """Everything in the cache besides empty folders."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if not p.is_dir())


@pytest.mark.parametrize("kind", DAMAGED)
def test_a_damaged_archive_is_not_used_and_not_kept(kind, tmp_path, monkeypatch):
    cache = _cache(tmp_path, monkeypatch)
    src = tmp_path / "www" / "set.tgz"
    src.parent.mkdir()
    src.write_bytes(DAMAGED[kind]())
    with pytest.raises(UserError) as e:
        download.fetch_archive(src.as_uri(), name="set")
    msg = str(e.value)
    cached = (
        cache / "downloads" / f"{hashlib.sha256(src.as_uri().encode()).hexdigest()[:10]}-set.tgz"
    )
    assert f"Cannot unpack {cached} downloaded from {src.as_uri()}" in msg, msg
    assert "Deleted it from the cache" in msg and "\n" not in msg
    assert _leftovers(cache) == []  # no download, no sidecar, no .tmp, no partial tree
    assert not (cache / "datasets").exists() or not any((cache / "datasets").iterdir())


def test_a_good_archive_unpacks_every_file_in_every_format(tmp_path, monkeypatch):
    """The same files, byte for byte, through each format the damaged cases break."""
    _cache(tmp_path, monkeypatch)
    files = _members()
    formats = {
        "a.tar": _tar_bytes(files),
        "a.tgz": gzip.compress(_tar_bytes(files)),
        "a.tar.bz2": bz2.compress(_tar_bytes(files)),
        "a.tar.xz": lzma.compress(_tar_bytes(files)),
        "a.zip": _zip_bytes(files),
        "nested.zip": _zip_bytes({"inner.tar.gz": gzip.compress(_tar_bytes(files))}),
    }
    for name, data in formats.items():
        src = tmp_path / "www" / name
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(data)
        root = download.fetch_archive(src.as_uri(), name=name.split(".")[0])
        got = {
            str(p.relative_to(root)): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and p.name != download.MARKER
        }
        assert got == files, name


def test_a_plain_tar_ending_in_a_zip_is_read_as_a_tar(tmp_path):
    """A zip's directory sits at its end, so a tar whose last member is a zip looks like one."""
    inner = _zip_bytes({"z/in.txt": b"inside"})
    src = tmp_path / "a.tar"
    src.write_bytes(_tar_bytes({"set/a.txt": b"a", "set/last.zip": inner}))
    assert zipfile.is_zipfile(src)
    unpack.unpack_tree(src, tmp_path / "out")
    assert (tmp_path / "out" / "set" / "a.txt").read_bytes() == b"a"
    assert (tmp_path / "out" / "set" / "z" / "in.txt").read_bytes() == b"inside"


# --------------------------------------------------------------------------------------------
# What the cache is keyed on


def test_a_changed_checksum_is_verified_again(tmp_path, monkeypatch):
    _cache(tmp_path, monkeypatch)
    src = tmp_path / "a.tar.gz"
    src.write_bytes(gzip.compress(_tar_bytes({"d/x.txt": b"version 1"})))
    sum1 = "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    root = download.fetch_archive(src.as_uri(), name="a", checksum=sum1)
    assert (root / "d" / "x.txt").read_bytes() == b"version 1"
    # A checksum the cached copy does not have: never the old folder, whatever is in the cache.
    with pytest.raises(UserError, match="expected 0000"):
        download.fetch_archive(src.as_uri(), name="a", checksum="md5:" + "0" * 32)
    # The file at the URL changes and the experiment names the new checksum: fetched again.
    new = gzip.compress(_tar_bytes({"d/x.txt": b"version 2"}))
    src.write_bytes(new)
    sum2 = "md5:" + hashlib.md5(new).hexdigest()
    root = download.fetch_archive(src.as_uri(), name="a", checksum=sum2)
    assert (root / "d" / "x.txt").read_bytes() == b"version 2"
    # Back to the first checksum: the source no longer has it, so that is an error, not version 2.
    with pytest.raises(UserError, match="expected " + sum1.split(":")[1]):
        download.fetch_archive(src.as_uri(), name="a", checksum=sum1)


def test_a_changed_file_source_is_fetched_again(tmp_path, monkeypatch):
    _cache(tmp_path, monkeypatch)
    src = tmp_path / "a.tar.gz"
    src.write_bytes(gzip.compress(_tar_bytes({"d/x.txt": b"one"})))
    root = download.fetch_archive(src.as_uri(), name="a")
    assert (root / "d" / "x.txt").read_bytes() == b"one"
    calls = []
    real = download.download
    monkeypatch.setattr(download, "download", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert download.fetch_archive(src.as_uri(), name="a") == root and calls == []  # unchanged
    src.write_bytes(gzip.compress(_tar_bytes({"d/y.txt": b"two"})))
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    root = download.fetch_archive(src.as_uri(), name="a")
    assert [p.name for p in (root / "d").iterdir()] == ["y.txt"] and len(calls) == 1


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the request log would land in the command's stderr
        pass


@pytest.fixture
def server(tmp_path):
    """Serves ``tmp_path/www`` on 127.0.0.1; yields ``(base URL, folder, stop())``."""
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    handler = functools.partial(_QuietHandler, directory=str(www))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    stopped = []

    def stop():
        if not stopped:
            srv.shutdown()
            srv.server_close()
            stopped.append(True)

    yield f"http://127.0.0.1:{srv.server_address[1]}/", www, stop
    stop()


def test_a_changed_http_source_is_fetched_again_and_offline_uses_the_cache(
    server, tmp_path, monkeypatch, caplog
):
    _cache(tmp_path, monkeypatch)
    base, www, stop = server
    (www / "a.tar.gz").write_bytes(gzip.compress(_tar_bytes({"d/x.txt": b"one"})))
    root = download.fetch_archive(base + "a.tar.gz", name="a")
    (www / "a.tar.gz").write_bytes(gzip.compress(_tar_bytes({"d/x.txt": b"two, longer"})))
    root = download.fetch_archive(base + "a.tar.gz", name="a")
    assert (root / "d" / "x.txt").read_bytes() == b"two, longer"
    stop()
    with caplog.at_level("WARNING", logger="tfcam"):
        assert download.fetch_archive(base + "a.tar.gz", name="a") == root
    assert "Could not check whether" in caplog.text


def _folder_archive(tmp_path: Path) -> bytes:
    """A tar.gz of two class folders of small PNGs, for the command line."""
    rng = np.random.default_rng(1)
    src = tmp_path / "layout" / "pets"
    for c in ("cats", "dogs"):
        for i in range(4):
            write_image(src / c / f"{i}.png", rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(src, arcname="pets")
    return buf.getvalue()


def _preview(url: str, out: Path, *sets: str):
    args = ["-q", "augment-preview", "-e", "folder", "--set", f"data.url={url}"]
    for s in ("data.image_size=32", *sets):
        args += ["--set", s]
    return run_cli(*args, "--images", "2", "--variants", "1", "--out", str(out))


def test_cli_broken_download_exits_2_and_the_fixed_one_is_used_next(server, tmp_path, monkeypatch):
    cache = _cache(tmp_path, monkeypatch)
    base, www, _ = server
    good = _folder_archive(tmp_path)
    (www / "pets.tar.gz").write_bytes(_flip(good, len(good) // 2))
    r = _preview(base + "pets.tar.gz", tmp_path / "p.png")
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfcam: error: Cannot unpack "), r.stderr
    assert str(cache / "downloads") in lines[0] and "Deleted it from the cache" in lines[0]
    assert "Traceback" not in r.output and _leftovers(cache) == []
    (www / "pets.tar.gz").write_bytes(good)
    r = _preview(base + "pets.tar.gz", tmp_path / "p.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.png").is_file()


def test_cli_names_the_size_setting_and_raising_it_works(tmp_path, monkeypatch):
    cache = _cache(tmp_path, monkeypatch)
    src = tmp_path / "pets.tar.gz"
    files = _tar_members(_folder_archive(tmp_path))  # a few kB of images
    files["extra/zeros.bin"] = bytes(3_000_000)
    src.write_bytes(gzip.compress(_tar_bytes(files)))
    sets = ("data.root_name=pets",)
    r = _preview(src.as_uri(), tmp_path / "p.png", *sets, "data.unpack_limit_gb=0.001")
    assert r.exit_code == 2, r.output
    assert "more than data.unpack_limit_gb=0.001" in r.stderr
    assert "--set data.unpack_limit_gb=N" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert [p.parent.name for p in cache.rglob("*.gz")] == ["downloads"]  # kept: it is not broken
    assert not (cache / "datasets").exists() or not any((cache / "datasets").iterdir())
    r = _preview(src.as_uri(), tmp_path / "p.png", *sets, "data.unpack_limit_gb=0.01")
    assert r.exit_code == 0, r.output


def _tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isreg()}


# --------------------------------------------------------------------------------------------
# Bombs


def _zeros_zip(nbytes: int, name: str = "bomb/zeros.bin") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z, z.open(name, "w") as f:
        for _ in range(nbytes >> 20):
            f.write(bytes(1 << 20))
    return buf.getvalue()


def test_ratio_limit_with_the_defaults_stops_a_bomb_before_writing(tmp_path, monkeypatch):
    """120 MiB of zeros in a ~120 kB zip (about 1000:1), as is and inside a tar.gz."""
    cache = _cache(tmp_path, monkeypatch)
    bomb = _zeros_zip(120 << 20)
    assert len(bomb) < 200_000
    nested = gzip.compress(_tar_bytes({"set/bomb.zip": bomb, "set/readme.txt": b"hi"}))
    for name, data in (("bomb.zip", bomb), ("nested.tar.gz", nested)):
        src = tmp_path / name
        src.write_bytes(data)
        with pytest.raises(UserError, match="data.unpack_max_ratio=200") as e:
            download.fetch_archive(src.as_uri(), name=name.split(".")[0])
        assert "--set data.unpack_max_ratio=N" in str(e.value)
        if name == "nested.tar.gz":  # the cached download and the archive inside it, by name
            assert "nested.tar.gz' ('set/bomb.zip' inside it)" in str(e.value)
        assert not (cache / "datasets").exists() or not any((cache / "datasets").iterdir())
    # Declared sizes are checked before anything is written: nothing of the bomb reached the disk.
    dest = tmp_path / "out"
    with pytest.raises(unpack.UnpackLimitExceeded):
        unpack.unpack_tree(tmp_path / "bomb.zip", dest)
    assert not [p for p in dest.rglob("*") if p.is_file()]


def test_the_total_limit_counts_nested_archives_and_tar_sizes(tmp_path):
    files = {f"set/z{i}.bin": bytes(2_000_000) for i in range(3)}
    inner = _zip_bytes({"more/zeros.bin": bytes(5_000_000)})
    data = gzip.compress(_tar_bytes({**files, "set/inner.zip": inner}))
    src = tmp_path / "a.tgz"
    src.write_bytes(data)
    budget = unpack.unpack_tree(src, tmp_path / "ok", limit_bytes=20e6)
    assert budget.used == 6_000_000 + len(inner) + 5_000_000
    assert (tmp_path / "ok" / "set" / "more" / "zeros.bin").stat().st_size == 5_000_000
    # 6 MB of tar members fit in 8 MB, the 5 MB inside the nested zip do not.
    with pytest.raises(unpack.UnpackLimitExceeded, match=r"would unpack to 11\.\d MB"):
        unpack.unpack_tree(src, tmp_path / "no", limit_bytes=8e6)
    # Tar member sizes are checked before writing: nothing written under a 5 MB limit.
    with pytest.raises(unpack.UnpackLimitExceeded, match="data.unpack_limit_gb=0.005"):
        unpack.unpack_tree(src, tmp_path / "none", limit_bytes=5e6)
    assert not [p for p in (tmp_path / "none").rglob("*") if p.is_file()]


def _understated_zip(actual: int, declared: int) -> bytes:
    """A zip whose central directory says its member holds ``declared`` bytes; it inflates to
    ``actual``."""
    data = bytearray(_zeros_zip(actual))
    eocd = data.rfind(b"PK\x05\x06")
    central = int.from_bytes(data[eocd + 16 : eocd + 20], "little")
    assert data[central : central + 4] == b"PK\x01\x02"
    assert int.from_bytes(data[central + 24 : central + 28], "little") == actual
    data[central + 24 : central + 28] = declared.to_bytes(4, "little")
    return bytes(data)


def test_a_zip_that_understates_its_size_writes_no_more_than_allowed(tmp_path, monkeypatch):
    cache = _cache(tmp_path, monkeypatch)
    src = tmp_path / "liar.zip"
    src.write_bytes(_understated_zip(8 << 20, 1000))
    assert zipfile.ZipFile(src).infolist()[0].file_size == 1000
    budget = unpack.Budget(src.stat().st_size, limit_bytes=2e6)
    with pytest.raises(UserError):
        unpack.unpack_archive(src, tmp_path / "out", budget)
    assert budget.used <= 2e6
    assert sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file()) <= 2e6
    with pytest.raises(UserError, match="Deleted it from the cache"):
        download.fetch_archive(src.as_uri(), name="liar", unpack_limit_gb=0.002)
    assert _leftovers(cache) == []


def test_bytes_written_are_counted_even_when_nothing_is_declared(tmp_path):
    budget = unpack.Budget(1000, limit_bytes=5e6)
    budget.declare("x", 0)
    budget.write("x", 4_000_000)
    with pytest.raises(unpack.UnpackLimitExceeded, match="more than 5.0 MB"):
        budget.write("x", 2_000_000)


# --------------------------------------------------------------------------------------------
# Hostile members


def _tar_with(*infos: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ok = tarfile.TarInfo("set/ok.txt")
        ok.size = 2
        t.addfile(ok, io.BytesIO(b"ok"))
        for info, data in infos:
            info.size = len(data) if info.isreg() else 0
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ti(name: str, type_=tarfile.REGTYPE, linkname: str = "", mode: int = 0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = type_, linkname, mode
    return info


HOSTILE_TARS = {
    "absolute path": (lambda: _tar_with((_ti("/tmp/tfcam-evil.txt"), b"x")), "absolute path"),
    "dot-dot": (lambda: _tar_with((_ti("set/../../evil.txt"), b"x")), "outside the target"),
    "absolute symlink": (
        lambda: _tar_with((_ti("set/l", tarfile.SYMTYPE, "/etc/passwd"), b"")),
        "absolute path",
    ),
    "symlink leaving": (
        lambda: _tar_with((_ti("set/l", tarfile.SYMTYPE, "../../x"), b"")),
        "outside the target",
    ),
    "hard link leaving": (
        lambda: _tar_with((_ti("set/h", tarfile.LNKTYPE, "../outside.txt"), b"")),
        "outside the target",
    ),
    "device": (lambda: _tar_with((_ti("set/dev", tarfile.CHRTYPE), b"")), "device"),
    "fifo": (lambda: _tar_with((_ti("set/fifo", tarfile.FIFOTYPE), b"")), "device"),
}


@pytest.fixture(params=["data filter", "fallback"])
def tar_mode(request, monkeypatch):
    """Both ways of extracting tar members: the standard library's data filter, and the checks
    that stand in for it on Pythons without one."""
    if request.param == "fallback":
        monkeypatch.setattr(unpack, "_TAR_EXTRACT_ARGS", {"set_attrs": False})
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile.data_filter")
    return request.param


@pytest.mark.parametrize("case", HOSTILE_TARS)
def test_hostile_tar_members_are_refused(case, tar_mode, tmp_path):
    make, message = HOSTILE_TARS[case]
    src = tmp_path / "evil.tar"
    src.write_bytes(make())
    dest = tmp_path / "a" / "b" / "out"
    with pytest.raises(unpack.DamagedArchive, match=message):
        unpack.unpack_archive(src, dest)
    assert not (tmp_path / "a" / "evil.txt").exists()
    assert not Path("/tmp/tfcam-evil.txt").exists()


def test_tar_modes_are_made_safe_and_links_inside_kept(tar_mode, tmp_path):
    src = tmp_path / "modes.tar"
    src.write_bytes(
        _tar_with(
            (_ti("set/suid.sh", mode=0o4777), b"#!/bin/sh\n"),
            (_ti("set/link", tarfile.SYMTYPE, "ok.txt"), b""),
        )
    )
    unpack.unpack_archive(src, tmp_path / "out")
    mode = (tmp_path / "out" / "set" / "suid.sh").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH | stat.S_IWGRP), oct(mode)
    assert (tmp_path / "out" / "set" / "link").read_bytes() == b"ok"


def _zip_with(name: str, data: bytes = b"x", unix_mode: int | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("set/ok.txt", b"ok")
        info = zipfile.ZipInfo(name)
        if unix_mode is not None:
            info.external_attr = unix_mode << 16
        z.writestr(info, data)
    return buf.getvalue()


@pytest.mark.parametrize(
    "name,mode,message",
    [
        ("/tmp/tfcam-evil.txt", None, "absolute path"),
        ("set/../../evil.txt", None, "outside the target"),
        ("..\\..\\evil.txt", None, "outside the target"),
        ("C:/evil.txt", None, "absolute path"),
        ("set/link", stat.S_IFLNK | 0o777, "symbolic link"),
        ("set/dev", stat.S_IFCHR | 0o644, "special file"),
    ],
)
def test_hostile_zip_members_are_refused(name, mode, message, tmp_path):
    src = tmp_path / "evil.zip"
    src.write_bytes(_zip_with(name, b"/etc/passwd", mode))
    with pytest.raises(unpack.DamagedArchive, match=message):
        unpack.unpack_archive(src, tmp_path / "a" / "b" / "out")
    assert not (tmp_path / "a" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_two_processes_fetching_one_dataset_unpack_it_once(tmp_path):
    """Two runs started together on one dataset URL: one downloads and unpacks, the other waits
    for its lock and uses the result (before, both wrote the same ``.part`` file and ``.tmp``
    folder at once)."""
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for i in range(40):  # ~40 MB of incompressible bytes: unpacking takes a moment
            data = rng.integers(0, 255, 1 << 20, dtype=np.uint8).tobytes()
            info = tarfile.TarInfo(f"data/c{i % 2}/{i}.bin")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    archive = tmp_path / "big.tar.gz"
    archive.write_bytes(buf.getvalue())
    start = time.time() + 4  # both call fetch_archive at this moment, after importing
    code = (
        "import sys, time\n"
        "from tfcam.data.download import fetch_archive\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "print(fetch_archive(sys.argv[1], name='big', progress=print))\n"
    )
    env = {**os.environ, "TFCAM_CACHE_DIR": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, archive.as_uri(), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    folders = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(folders) == 1
    assert sum(o[0].count("Unpacking") for o in outs) == 1, outs
    assert sum(o[0].count("Downloading") for o in outs) == 1, outs
    assert len(list(Path(folders.pop()).rglob("*.bin"))) == 40
