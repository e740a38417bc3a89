"""Where commands write (issue 14): an unwritable output is one line naming it and exit 2; per-image
output names stay inside --out whatever the inputs are called."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import make_folder, run_cli
from test_hostile_files import one_line_error


@pytest.fixture
def readonly_dir(tmp_path):
    """An empty folder that cannot be written. As root, permission bits do not stop writes, so
    the folder is a read-only bind mount (EROFS); without the right to mount, the test skips."""
    src, ro = tmp_path / "ro_src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    if os.geteuid() != 0:
        src.chmod(0o555)
        yield src
        src.chmod(0o755)
        return
    mount = subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"running as root and cannot bind-mount a read-only folder: {mount.stderr}")
    try:
        remount = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True, text=True
        )
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr}")
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def _ro_copy_of_run(tiny_run, readonly_dir) -> Path:
    """The tiny run, inside the read-only folder (copied under the mount's source)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to place a run in a read-only folder")
    src = readonly_dir.parent / "ro_src"
    src.chmod(0o755)
    shutil.copytree(tiny_run, src / "run")
    return readonly_dir / "run"


def test_fit_into_a_read_only_folder_is_one_line(readonly_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli("-q", "fit", "-e", "shapes_tiny", "--run-dir", readonly_dir / "new", "--no-report")
    one_line_error(r, f"cannot write to '{readonly_dir / 'new'}'")


@pytest.mark.parametrize("command", ["report", "evaluate", "explain", "compare"])
def test_commands_on_a_read_only_run_are_one_line(command, tiny_run, readonly_dir, tmp_path):
    run = _ro_copy_of_run(tiny_run, readonly_dir)
    args = {
        "report": ["report", run],
        "evaluate": ["evaluate", run],
        "explain": ["explain", run, next(make_folder(tmp_path / "i", per_class=1).rglob("*.png"))],
        "compare": ["compare", tiny_run, run, "--out", readonly_dir / "cmp"],
    }[command]
    line = one_line_error(run_cli("-q", *args), "cannot write to", str(readonly_dir))
    assert "read-only file system" in line or "permission denied" in line


def test_an_out_folder_below_a_file_is_one_line(tiny_run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    image = next(make_folder(tmp_path / "i", per_class=1).rglob("*.png"))
    r = run_cli("-q", "explain", tiny_run, image, "--out", blocker / "out")
    one_line_error(r, f"cannot write to '{blocker / 'out'}", "is a file, not a folder")


@pytest.mark.parametrize(
    ("code", "reason"), [(errno.ENOSPC, "no space left"), (errno.EDQUOT, "disk quota exceeded")]
)
def test_a_full_disk_is_one_line_naming_the_file(tiny_run, tmp_path, monkeypatch, code, reason):
    import tfcam.report.html as html

    def full(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / "run" / "report" / "index.html"))

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    monkeypatch.setattr(html, "write_text", full)
    one_line_error(run_cli("-q", "report", run), "cannot write to", "index.html", reason)


def test_an_os_error_without_a_file_stays_an_unexpected_error(tiny_run, monkeypatch):
    import tfcam.report.html as html

    def bug(*args, **kwargs):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(html, "write_text", bug)
    r = run_cli("-q", "report", tiny_run)
    assert r.exit_code == 1 and "unexpected OSError" in r.stderr


# Per-image output names --------------------------------------------------------------------------

HOSTILE_NAMES = [
    "...jpg",
    "..jpg",
    ".jpg",
    "a\\b.png",
    "x\ny.png",
    "tab\there.png",
    "L" * 250 + ".png",  # file systems refuse names over 255 bytes: 300 characters cannot exist
    "img.png",
    "IMG.png",
    "img-2.png",
]


def test_explain_writes_only_inside_out_whatever_the_inputs_are_called(tiny_run, tmp_path):
    src = next(make_folder(tmp_path / "src", per_class=1).rglob("*.png"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    paths = []
    for name in HOSTILE_NAMES:
        shutil.copy(src, inputs / name)
        paths.append(inputs / name)
    (inputs / "sub").mkdir()
    shutil.copy(src, inputs / "sub" / "img.png")  # the same name as another input
    paths.append(inputs / "sub" / "img.png")
    work = tmp_path / "work"
    out = work / "out"
    out.mkdir(parents=True)
    before = sorted(os.listdir(work)), sorted(os.listdir(tmp_path))

    r = run_cli("-q", "explain", tiny_run, *paths, "--out", out, "--json")
    assert r.exit_code == 0, (r.output, r.exception)
    assert (sorted(os.listdir(work)), sorted(os.listdir(tmp_path))) == before
    folders = sorted(set(os.listdir(out)) - {"index.html"})
    assert len(folders) == len(paths)  # one each: nothing overwritten
    assert len({f.casefold() for f in folders}) == len(folders)
    for f in folders:
        assert not f.startswith(".") and "\\" not in f and f.isprintable(), repr(f)
        assert len(f.encode()) <= 123
        assert sorted(os.listdir(out / f)) == [
            "gradcam_heatmap.png",
            "gradcam_overlay.png",
            "gradcam_panel.png",
        ]
    expected = {"image", "image-2", "jpg", "a_b", "x_y", "tab_here", "img", "IMG-2", "img-2-2"}
    assert expected | {"img-3"} <= set(folders)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("...jpg", "image"),
        ("..jpg", "image"),
        (".jpg", "jpg"),
        ("a\\b.png", "a_b"),
        ("x\ny.png", "x_y"),
        (os.fsdecode(b"caf\xe9.png"), "caf_"),
        ("con.png", "_con"),
        ("é" * 200 + ".png", "é" * 60),
    ],
)
def test_safe_name(name, expected):
    from tfcam.explain.files import safe_name

    assert safe_name(name) == expected


def test_an_image_called_index_html_does_not_take_the_page_name(tmp_path):
    from tfcam.explain.files import _ImageFolders

    folders = _ImageFolders(tmp_path)
    assert folders(Path("INDEX.HTML.png")).name == "INDEX.HTML-2"
    assert folders(Path("index.html.jpg")).name == "index.html-3"
