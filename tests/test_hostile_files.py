"""Hostile files and folders (issue 14): every one ends in one line on stderr and exit 2, or is
skipped with its reason; never a traceback, never a write outside the folder the user named."""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import make_folder, run_cli

from tfcam.errors import UserError

PROGRESS_LINE = re.compile(r"^tfcam: (?!error:).*(\d+/\d+ |ETA \d|in \d+:\d\d)")


def one_line_error(result, *pieces) -> str:
    """The single ``tfcam: error:`` line of a result that exited with 2, holding ``pieces``."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    # Progress lines of work done before the mistake (a pipe shows them) are not errors.
    lines = [ln for ln in result.stderr.strip().splitlines() if not PROGRESS_LINE.match(ln)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tfcam: error: "), lines[0]
    assert "Traceback" not in result.output
    for piece in pieces:
        assert piece in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of the finished tiny run, free to damage."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


# Experiment files and data folders ---------------------------------------------------------------


def test_experiment_yaml_that_is_not_utf8_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"description: ok\ndata: {source: shapes}\nname: caf\xe9\n")
    r = run_cli("fit", "-e", str(bad))
    one_line_error(r, str(bad), "0xe9", "line 3", "UTF-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # nothing written


def test_file_names_that_are_not_utf8_are_skipped_and_splits_csv_stays_writable(tmp_path):
    from tfcam.data.sources import folder_splits, read_splits_csv, write_splits_csv

    root = make_folder(tmp_path / "data", per_class=3)
    odd = os.fsencode(root / "a") + b"/caf\xe9.png"
    os.rename(os.fsencode(root / "a" / "a_000.png"), odd)
    splits = folder_splits(root, val_fraction=0.0, test_fraction=0.0, seed=0)
    listed = [f for files in splits.files.values() for f in files]
    assert len(listed) == 5 and all("caf" not in f for f in listed)
    shown = str(root / "a" / "caf\\xe9.png")
    assert splits.skipped == {shown: "its name is not valid UTF-8; rename it"}
    write_splits_csv(tmp_path / "splits.csv", splits)
    back = read_splits_csv(tmp_path / "splits.csv", splits.class_names)
    assert back.files == splits.files


def test_symbolic_link_loops_are_skipped_with_their_reason(tmp_path):
    from tfcam.data.sources import folder_splits

    root = make_folder(tmp_path / "data", per_class=2)
    os.symlink("l2.png", root / "a" / "l1.png")  # a loop that ends where a file would be
    os.symlink("l1.png", root / "a" / "l2.png")
    os.symlink("d2", root / "b" / "d1")  # a loop of folders
    os.symlink("d1", root / "b" / "d2")
    os.symlink("..", root / "b" / "up")  # a folder link back up (not followed)
    splits = folder_splits(root, val_fraction=0.0, test_fraction=0.0, seed=0)
    assert sum(map(len, splits.files.values())) == 4
    assert splits.skipped == {
        str(root / "a" / "l1.png"): "a symbolic link that loops",
        str(root / "a" / "l2.png"): "a symbolic link that loops",
        str(root / "b" / "d1"): "a symbolic link that loops",
        str(root / "b" / "d2"): "a symbolic link that loops",
    }


def test_a_single_class_folder_is_named_as_such_with_its_parent(tmp_path):
    from tfcam.data.sources import folder_splits

    root = make_folder(tmp_path / "data", per_class=3)
    with pytest.raises(UserError) as e:
        folder_splits(root / "a", val_fraction=0.2, test_fraction=0.0, seed=0)
    msg = str(e.value)
    assert "Found 3 files but no class subfolders" in msg
    assert f"probably '{root.resolve()}'" in msg


def test_a_data_dir_that_is_a_file_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "photos.zip"
    f.write_bytes(b"PK")
    r = run_cli("fit", "-e", "folder", "--data-dir", str(f))
    one_line_error(r, f"'{f}' is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos.zip"]


@pytest.mark.parametrize(
    ("where", "extra", "piece"),
    [
        ("a", [], "no class subfolders"),
        ("", ["--weights", "imagenet", "--set", "model.options.alpha=7"], "model.options.alpha"),
    ],
    ids=["one-class-folder", "option-keras-rejects"],
)
def test_a_mistake_found_before_the_first_epoch_leaves_no_run_behind(
    tmp_path, monkeypatch, where, extra, piece
):
    """Found after the run directory was made (the scan, the model build): exit 2, and the new
    run's folder is gone again, as with every other bad input (issue 14, item 10)."""
    monkeypatch.chdir(tmp_path)
    root = make_folder(tmp_path / "data", per_class=3)
    common = ["--set", "data.image_size=32", "--set", "train.epochs=1"]
    r = run_cli(
        "fit", "-e", "folder", "--data-dir", root / where, "--run-dir", "run", *common, *extra
    )
    one_line_error(r, piece)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    # A folder the user made beforehand stays, empty.
    (tmp_path / "mine").mkdir()
    r = run_cli(
        "fit", "-e", "folder", "--data-dir", root / where, "--run-dir", "mine", *common, *extra
    )
    one_line_error(r, piece)
    assert list((tmp_path / "mine").iterdir()) == []


# Models ------------------------------------------------------------------------------------------


def test_an_option_keras_rejects_at_build_names_the_option_and_its_values():
    from tfcam.models.build import build_classifier

    # Keras checks alpha against the published ImageNet widths before it looks for the weights.
    with pytest.raises(UserError) as e:
        build_classifier(
            backbone="mobilenet_v2",
            num_classes=2,
            image_size=32,
            weights="imagenet",
            options={"alpha": 7.0},
        )
    msg = str(e.value)
    assert "model.options.alpha=7.0" in msg and "ImageNet" in msg
    assert "0.35" in msg and "1.4" in msg


def _damage(src: Path, dst: Path, how: str) -> Path:
    data = src.read_bytes()
    if how == "empty":
        dst.write_bytes(b"")
    elif how == "truncated":
        dst.write_bytes(data[: len(data) // 3])
    elif how == "zeroed":
        info = zipfile.ZipFile(src).getinfo("model.weights.h5")
        mid = info.header_offset + 100 + info.compress_size // 2
        dst.write_bytes(data[:mid] + bytes(256) + data[mid + 256 :])
    elif how == "unknown class":
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
            for name in zin.namelist():
                content = zin.read(name)
                if name == "config.json":
                    content = content.replace(b"Preprocess", b"NoSuchLayer")
                zout.writestr(name, content)
    return dst


@pytest.mark.parametrize(
    ("how", "cause"),
    [
        ("empty", "the file is empty"),
        ("truncated", "not a .keras zip archive"),
        ("zeroed", "'model.weights.h5' inside it fails its checksum"),
        ("unknown class", "a class 'NoSuchLayer' that neither Keras nor tfcam defines"),
    ],
)
def test_a_damaged_model_file_is_named_as_damaged(tiny_run, tmp_path, how, cause):
    from tfcam.models.build import load_model

    bad = _damage(tiny_run / "model.keras", tmp_path / "model.keras", how)
    with pytest.raises(UserError) as e:
        load_model(bad)
    msg = str(e.value)
    assert f"The model file '{bad}' is damaged" in msg and cause in msg
    assert "not found" not in msg.lower()


def test_cli_with_a_damaged_run_model_is_one_line(run_copy, tmp_path):
    _damage(run_copy / "model.keras", tmp_path / "bad.keras", "zeroed")
    shutil.copy(tmp_path / "bad.keras", run_copy / "model.keras")
    one_line_error(
        run_cli("predict", run_copy, _an_image(tmp_path)), str(run_copy / "model.keras"), "damaged"
    )


def _an_image(tmp_path: Path) -> Path:
    return next(iter(sorted(make_folder(tmp_path / "imgs", per_class=1).rglob("*.png"))))


# Run files ---------------------------------------------------------------------------------------


def test_report_with_a_damaged_config_is_one_line(run_copy):
    (run_copy / "config.yaml").write_text("data: [unclosed\n  x: {", encoding="utf-8")
    one_line_error(run_cli("report", run_copy), str(run_copy / "config.yaml"))


@pytest.mark.parametrize(
    ("name", "content"),
    [("metrics.json", b'{"val": {"accuracy": 0.5'), ("history.csv", b"\x00garbage\xff\n1,2\n")],
)
def test_report_shows_a_damaged_metrics_or_history_as_such(run_copy, name, content):
    (run_copy / name).write_bytes(content)
    r = run_cli("report", run_copy)
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    page = (run_copy / "report" / "index.html").read_text(encoding="utf-8")
    assert "Damaged files" in page and str(run_copy / name) in page
    assert f"'{run_copy / name}' is damaged" in r.stderr


def test_resume_with_a_garbage_history_names_the_file(run_copy):
    (run_copy / "model.keras").unlink()
    (run_copy / "state.json").write_text('{"status": "interrupted", "phase_done": 0}')
    (run_copy / "history.csv").write_bytes(b"\x00\x01garbage\xff\n1,2,3\n")
    one_line_error(
        run_cli("-q", "fit", "--resume", run_copy), str(run_copy / "history.csv"), "damaged"
    )


def test_resume_with_a_damaged_backup_names_the_file(run_copy):
    (run_copy / "model.keras").unlink()
    (run_copy / "state.json").write_text('{"status": "interrupted", "phase_done": 0}')
    backup = run_copy / "checkpoints" / "backup_phase1"
    backup.mkdir()
    end = run_copy / "checkpoints" / "phase1_end.weights.h5"
    good = end.read_bytes()
    end.unlink()  # phase 1 not finished: the resume needs its backup
    (backup / "latest.weights.h5").write_bytes(good[:3000])
    (backup / "training_metadata.json").write_text('{"epoch": 0, "batch": -1}')
    one_line_error(
        run_cli("-q", "fit", "--resume", run_copy), str(backup / "latest.weights.h5"), "damaged"
    )


def test_read_json_names_a_damaged_file(tmp_path):
    from tfcam.io import read_json

    f = tmp_path / "x.json"
    f.write_bytes(b'{"a": \xff')
    with pytest.raises(UserError, match="x.json' is damaged"):
        read_json(f)


@pytest.mark.parametrize("damaged_file", ["phase1_end.weights.h5", "best.keras"])
def test_resume_with_a_damaged_checkpoint_names_the_file(run_copy, damaged_file):
    (run_copy / "model.keras").unlink()  # killed after phase 1, before the final model
    (run_copy / "state.json").write_text('{"status": "interrupted", "phase_done": 1}')
    f = run_copy / "checkpoints" / damaged_file
    f.write_bytes(f.read_bytes()[:2000])
    one_line_error(run_cli("-q", "fit", "--resume", run_copy), str(f), "damaged")
