"""The seed experiments load from archives served on 127.0.0.1 and from --data-dir, and train.

Each archive is tiny but has the real layout: imagewoof2-320/{train,val}/<wnid>/, caltech-101.zip
holding 101_ObjectCategories.tar.gz, cifar-10-batches-py pickles, and class folders for snakes and
drones. The download code that runs is the real one (urllib against a local HTTP server).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import pickle
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_image

WNIDS = {
    "n02093754": "Australian terrier",
    "n02088364": "Beagle",
    "n02096294": "Border terrier",
    "n02115641": "Dingo",
    "n02089973": "English foxhound",
    "n02099601": "Golden retriever",
    "n02105641": "Old English sheepdog",
    "n02087394": "Rhodesian ridgeback",
    "n02086240": "Shih-Tzu",
    "n02111889": "Samoyed",
}
CALTECH5 = ["brain", "butterfly", "ewer", "helicopter", "ketch"]


def _img(rng, ci, h=40, w=40):
    base = 30 + 20 * ci
    a = np.clip(rng.normal(base, 15, (h, w, 3)), 0, 255).astype(np.uint8)
    a[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, ci % 3] = 250
    return a


def _tgz(src: Path, out: Path, arcname: str) -> Path:
    with tarfile.open(out, "w:gz") as t:
        t.add(src, arcname=arcname)
    return out


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """Builds the archives (and keeps the unpacked layouts for --data-dir) and serves them."""
    base = tmp_path_factory.mktemp("datasets")
    www = base / "www"
    www.mkdir()
    rng = np.random.default_rng(0)
    layouts = {}

    # Imagewoof 2: train/ and val/ of WordNet-ID folders (JPEG).
    wo = base / "imagewoof" / "imagewoof2-320"
    for ci, wnid in enumerate(WNIDS):
        for split, n in (("train", 3), ("val", 1)):
            for i in range(n):
                write_image(wo / split / wnid / f"{wnid}_{i}.JPEG", _img(rng, ci), quality=90)
    (wo / "noisy_imagewoof.csv").write_text("path,noisy_labels_0\n")
    _tgz(wo, www / "imagewoof2-320.tgz", "imagewoof2-320")
    layouts["imagewoof"] = base / "imagewoof"

    # Caltech-101: a zip holding caltech-101/101_ObjectCategories.tar.gz; one extra class.
    ct = base / "caltech" / "101_ObjectCategories"
    for ci, c in enumerate([*CALTECH5, "Faces_easy"]):
        for i in range(7):
            write_image(ct / c / f"image_{i + 1:04d}.jpg", _img(rng, ci, 36, 48), quality=90)
    inner = base / "101_ObjectCategories.tar.gz"
    _tgz(ct, inner, "101_ObjectCategories")
    with zipfile.ZipFile(www / "caltech-101.zip", "w") as z:
        z.write(inner, "caltech-101/101_ObjectCategories.tar.gz")
        z.writestr("caltech-101/show_annotation.m", "% not data\n")
        z.writestr("__MACOSX/._caltech-101", "junk")
    layouts["caltech101"] = base / "caltech"

    # CIFAR-10: python pickle batches of 32×32 images, labels 0–9.
    cf = base / "cifar" / "cifar-10-batches-py"
    cf.mkdir(parents=True)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    for b in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = list(range(10))
        data = np.stack([_img(rng, lab, 32, 32).transpose(2, 0, 1).reshape(-1) for lab in labels])
        with open(cf / b, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": b.encode()}, f)
    with open(cf / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": 10}, f)
    _tgz(cf, www / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    layouts["cifar10"] = base / "cifar"

    # Snakes: two class folders (no default URL: given with --set data.url).
    sn = base / "snakes" / "snakes"
    for ci, c in enumerate(["not_snake", "snake"]):
        for i in range(8):
            write_image(sn / c / f"{i}.jpg", _img(rng, ci * 5, 48, 64), quality=90)
    _tgz(sn, www / "snakes.tar.gz", "snakes")
    layouts["snakes"] = base / "snakes"

    # Drones: four class folders of images of very different sizes.
    dr = base / "drones" / "drones"
    sizes = [(48, 64), (900, 1600), (120, 200), (300, 300), (480, 640), (90, 160)]
    for ci, c in enumerate(
        ["flying_birds", "large_quadcopters", "small_quadcopters", "winged_drones"]
    ):
        for i in range(5):
            h, w = sizes[(i + ci) % len(sizes)]
            write_image(dr / c / f"{i}.jpg", _img(rng, ci, h, w), quality=85)
    _tgz(dr, www / "drones.tar.gz", "drones")
    layouts["drones"] = base / "drones"

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}/", "dirs": layouts, "www": www}
    server.shutdown()


def _fit(tmp_path, *args):
    run = tmp_path / "run"
    r = run_cli("fit", *args, "--run-dir", str(run))
    assert r.exit_code == 0, (r.output, r.exception)
    return run


def _complete(run: Path) -> dict:
    for name in (
        "config.yaml",
        "history.csv",
        "metrics.json",
        "model.keras",
        "class_names.json",
        "splits.csv",
        "data_report.json",
        "report/index.html",
    ):
        assert (run / name).is_file(), name
    assert json.loads((run / "state.json").read_text())["status"] == "completed"
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    return json.loads((run / "metrics.json").read_text())


SHORT = ["--weights", "none", "--set", "train.epochs=1"]


def test_imagewoof_from_a_local_archive_with_breed_names(archives, tmp_path):
    url = archives["url"] + "imagewoof2-320.tgz"
    run = _fit(
        tmp_path,
        "-e",
        "imagewoof",
        "--set",
        f"data.url={url}",
        *SHORT,
        "--set",
        "data.image_size=32",
        "--set",
        "train.fine_tune.epochs=1",
        "--set",
        "data.batch_size=16",
    )
    metrics = _complete(run)
    names = json.loads((run / "class_names.json").read_text())
    assert names == [WNIDS[w] for w in sorted(WNIDS)]
    report = json.loads((run / "data_report.json").read_text())
    assert report["totals"] == {"train": 30, "val": 10}
    assert metrics["val"]["n"] == 10
    # Both phases ran: head, then fine-tuning of the last stage.
    import pandas as pd

    assert pd.read_csv(run / "history.csv")["phase"].tolist() == [1, 2]


def test_caltech101_zip_with_nested_archive_five_classes_three_splits(archives, tmp_path):
    url = archives["url"] + "caltech-101.zip"
    run = _fit(
        tmp_path,
        "-e",
        "caltech101",
        "--set",
        f"data.url={url}",
        *SHORT,
        "--set",
        "data.image_size=32",
    )
    metrics = _complete(run)
    assert json.loads((run / "class_names.json").read_text()) == CALTECH5  # Faces_easy left out
    counts = json.loads((run / "data_report.json").read_text())["counts"]
    assert set(counts) == {"train", "val", "test"}
    for split in counts.values():
        assert set(split) == set(CALTECH5)
    assert sum(sum(c.values()) for c in counts.values()) == 35
    assert set(metrics) == {"train", "val", "test"}
    assert (run / "report" / "figures" / "class_distribution.png").is_file()
    html = (run / "report" / "index.html").read_text()
    assert "train" in html and "test" in html


def test_cifar10_pickles_from_a_local_archive_with_checksum(archives, tmp_path):
    archive = archives["www"] / "cifar-10-python.tar.gz"
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    url = archives["url"] + "cifar-10-python.tar.gz"
    run = _fit(
        tmp_path,
        "-e",
        "cifar10",
        "--set",
        f"data.url={url}",
        "--set",
        f"data.checksum=md5:{md5}",
        "--set",
        "train.epochs=1",
    )
    metrics = _complete(run)
    assert json.loads((run / "class_names.json").read_text())[:3] == [
        "airplane",
        "automobile",
        "bird",
    ]
    report = json.loads((run / "data_report.json").read_text())
    assert report["totals"] == {"train": 40, "val": 10, "test": 10}
    assert metrics["test"]["n"] == 10


def test_cifar10_wrong_checksum_and_dead_url_exit_2(archives, tmp_path, monkeypatch):
    monkeypatch.setenv("TFCAM_CACHE_DIR", str(tmp_path / "cache"))  # nothing downloaded yet
    url = archives["url"] + "cifar-10-python.tar.gz"
    r = run_cli(
        "fit",
        "-e",
        "cifar10",
        "--set",
        f"data.url={url}",
        "--set",
        "data.checksum=md5:" + "0" * 32,
        "--set",
        "train.epochs=1",
        "--run-dir",
        str(tmp_path / "r1"),
    )
    assert r.exit_code == 2
    assert "expected 00000000" in r.output and "--data-dir" in r.output
    r = run_cli(
        "fit",
        "-e",
        "cifar10",
        "--set",
        f"data.url={archives['url']}missing.tar.gz",
        "--run-dir",
        str(tmp_path / "r2"),
    )
    assert r.exit_code == 2
    assert "Could not download" in r.output and "HTTP 404" in r.output
    assert "Traceback" not in r.output
    assert not list((tmp_path / "cache").rglob("*.part"))  # nothing half-written is kept


def test_snakes_binary_from_an_archive_and_message_without_data(archives, tmp_path):
    r = run_cli("fit", "-e", "snakes")
    assert r.exit_code == 2
    assert "'snakes' experiment has no public download" in r.output
    assert "snake/ and not_snake/" in r.output
    url = archives["url"] + "snakes.tar.gz"
    run = _fit(
        tmp_path, "-e", "snakes", "--set", f"data.url={url}", *SHORT, "--set", "data.image_size=32"
    )
    _complete(run)
    report = json.loads((run / "data_report.json").read_text())
    assert report["totals"] == {"train": 12, "val": 4}  # 75 / 25 of 8 per class
    import keras

    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert model.output.shape[-1] == 1  # binary: one sigmoid unit
    assert model.get_layer("head_pool").output.shape[-1] == 2 * 512  # average + max pooling


def test_drones_from_an_archive_at_native_sizes(archives, tmp_path):
    url = archives["url"] + "drones.tar.gz"
    run = _fit(
        tmp_path,
        "-e",
        "drones",
        "--set",
        f"data.url={url}",
        *SHORT,
        "--set",
        "data.image_size=192",
        "--set",
        "model.options.alpha=0.35",
        "--set",
        "data.batch_size=4",
    )
    _complete(run)
    import keras

    model = keras.saving.load_model(run / "model.keras", compile=False)
    assert tuple(model.input.shape[1:3]) == (None, None)
    assert model.get_layer("head_pool").output.shape[-1] == 1280 * (16 + 4 + 1)
    # 16 training images in batches of 4: four steps, none of one image.
    steps = (run / "batch_history.csv").read_text().strip().splitlines()[1:]
    assert len(steps) == 4


@pytest.mark.parametrize("name", ["imagewoof", "caltech101", "cifar10", "snakes", "drones"])
def test_data_dir_gives_the_same_splits_as_the_archive(archives, name):
    """--data-dir on the unpacked layout lists the same classes and files as the download."""
    from tfcam.config import load_experiment
    from tfcam.data.sources import load_splits

    url = (
        archives["url"]
        + {
            "imagewoof": "imagewoof2-320.tgz",
            "caltech101": "caltech-101.zip",
            "cifar10": "cifar-10-python.tar.gz",
            "snakes": "snakes.tar.gz",
            "drones": "drones.tar.gz",
        }[name]
    )
    common = ["model.weights=none", "data.checksum=null"]
    from_url = load_splits(load_experiment(name, [f"data.url={url}", *common]).data)
    from_dir = load_splits(
        load_experiment(name, common, extra={"data.data_dir": str(archives["dirs"][name])}).data
    )
    assert from_url.class_names == from_dir.class_names
    assert from_url.counts() == from_dir.counts()
    rel = lambda s: sorted(Path(f).name for fs in s.files.values() for f in fs)  # noqa: E731
    assert rel(from_url) == rel(from_dir)


def test_fetch_archive_is_atomic_and_cached(archives, tmp_path, monkeypatch):
    from tfcam.data import download

    monkeypatch.setenv("TFCAM_CACHE_DIR", str(tmp_path / "cache"))
    url = archives["url"] + "snakes.tar.gz"
    calls = []
    real = download.download
    monkeypatch.setattr(download, "download", lambda *a, **k: calls.append(a) or real(*a, **k))
    first = download.fetch_archive(url, name="snakes")
    assert (first / ".tfcam-complete").is_file()
    assert download.find_root(first).name == "snakes"
    assert sorted(p.name for p in download.find_root(first).iterdir()) == ["not_snake", "snake"]
    again = download.fetch_archive(url, name="snakes")
    assert again == first and len(calls) == 1
    assert not list((tmp_path / "cache").rglob("*.part")) and not list(
        (tmp_path / "cache").rglob("*.tmp")
    )


def test_extract_refuses_paths_outside_the_target(tmp_path):
    from tfcam.data.download import extract
    from tfcam.errors import UserError

    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as t:
        info = tarfile.TarInfo("../escape.txt")
        data = b"x"
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    with pytest.raises(UserError, match="outside the target"):
        extract(bad, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()
