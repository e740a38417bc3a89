"""tfcam.io's atomic writes: durable ones are flushed to the disk before the rename, the
pictures' are not (they can be drawn again), and both leave a whole file or none."""

from __future__ import annotations

import os

import pytest

from tfcam import io


@pytest.mark.parametrize("durable", [True, False])
def test_flushed_only_when_durable(tmp_path, monkeypatch, durable):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    path = io.write_bytes(tmp_path / "a.png", b"123", durable=durable)
    assert path.read_bytes() == b"123"
    assert bool(synced) == durable
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = io.write_bytes(tmp_path / "a.png", b"old", durable=False)
    with pytest.raises(RuntimeError), io.atomic_path(target, durable=False) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed while writing")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_explain_pictures_are_not_flushed_one_by_one(tmp_path, monkeypatch):
    import numpy as np

    from tfcam.explain.pictures import save_png

    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    save_png(tmp_path / "p.png", np.zeros((4, 5, 3), np.uint8))
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert not synced
