"""Listing class folders and splitting them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import make_folder

from tfcam.config import DataConfig
from tfcam.data.sources import folder_splits, load_splits, read_splits_csv, write_splits_csv
from tfcam.errors import UserError


def test_stratified_split_without_split_folders(tmp_path):
    make_folder(tmp_path, classes=("cat", "dog", "fox"), per_class=10)
    s = folder_splits(tmp_path, val_fraction=0.2, test_fraction=0.1, seed=1)
    assert s.class_names == ["cat", "dog", "fox"]
    assert list(s.files) == ["train", "val", "test"]
    for split, n in (("train", 7), ("val", 2), ("test", 1)):
        assert Counter(s.labels[split]) == {0: n, 1: n, 2: n}
    everything = [f for split in s.files.values() for f in split]
    assert len(everything) == len(set(everything)) == 30
    # Labels agree with the folder each file sits in.
    for split in s.files:
        for f, lab in zip(s.files[split], s.labels[split], strict=True):
            assert Path(f).parent.name == s.class_names[lab]
    # Fixed seed: the same split again; another seed: another split.
    assert folder_splits(tmp_path, val_fraction=0.2, test_fraction=0.1, seed=1).files == s.files
    assert (
        folder_splits(tmp_path, val_fraction=0.2, test_fraction=0.1, seed=2).files["val"]
        != s.files["val"]
    )


def test_small_classes_keep_a_training_image(tmp_path):
    make_folder(tmp_path / "x", classes=("a",), per_class=1)
    make_folder(tmp_path / "x", classes=("b",), per_class=2)
    s = folder_splits(tmp_path / "x", val_fraction=0.2, test_fraction=0.0, seed=0)
    assert Counter(s.labels["train"]) == {0: 1, 1: 1}
    assert Counter(s.labels["val"]) == {1: 1}


def test_split_folders_are_used_as_given(tmp_path):
    make_folder(tmp_path / "train", per_class=4)
    make_folder(tmp_path / "valid", per_class=2, seed=1)
    s = folder_splits(tmp_path, val_fraction=0.5, test_fraction=0.5, seed=0)
    assert list(s.files) == ["train", "val"]
    assert len(s.files["train"]) == 8 and len(s.files["val"]) == 4
    assert all("/valid/" in f for f in s.files["val"])


def test_train_only_gets_a_validation_split(tmp_path):
    make_folder(tmp_path / "train", per_class=10)
    make_folder(tmp_path / "test", per_class=3, seed=1)
    s = folder_splits(tmp_path, val_fraction=0.3, test_fraction=0.5, seed=0)
    assert Counter(s.labels["val"]) == {0: 3, 1: 3}
    assert len(s.files["test"]) == 6 and all("/test/" in f for f in s.files["test"])


def test_hidden_files_are_ignored_and_other_files_listed(tmp_path):
    make_folder(tmp_path, per_class=3)
    (tmp_path / "a" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "a" / "notes.txt").write_text("hello")
    s = folder_splits(tmp_path, val_fraction=0.0, test_fraction=0.0, seed=0)
    names = [Path(f).name for f in s.files["train"]]
    assert ".DS_Store" not in names and "notes.txt" in names  # decoding decides about notes.txt


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "Data folder not found"),
        (lambda p: p.mkdir(), "No class folders with files"),
        (lambda p: make_folder(p, classes=("only",)), "at least two classes"),
        (lambda p: (make_folder(p / "val"), None), "has val/ but no train/ folder"),
        (
            lambda p: (make_folder(p / "train"), make_folder(p / "val", classes=("a", "zebra"))),
            "classes that train/ does not: zebra",
        ),
    ],
)
def test_bad_folders(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(UserError, match=message):
        folder_splits(root, val_fraction=0.2, test_fraction=0.0, seed=0)


def test_folder_source_needs_data_dir():
    with pytest.raises(UserError, match="needs --data-dir"):
        load_splits(DataConfig(source="folder"))


def test_splits_csv_round_trip(tmp_path):
    make_folder(tmp_path / "d", per_class=5)
    s = folder_splits(tmp_path / "d", val_fraction=0.4, test_fraction=0.0, seed=0)
    write_splits_csv(tmp_path / "splits.csv", s)
    back = read_splits_csv(tmp_path / "splits.csv", s.class_names)
    assert back.files == s.files and back.labels == s.labels
