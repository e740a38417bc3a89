"""Images at their own sizes: batch planning, padded batches, masked pooling heads, the drones run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli, write_image

#: From a thumbnail to a wide HD frame, as the acceptance asks (height, width).
SIZES = [(48, 64), (900, 1600), (120, 200), (300, 300), (640, 480), (90, 160), (200, 100)]


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(3)
    files, sizes = [], []
    for ci, c in enumerate(
        ["flying_birds", "large_quadcopters", "small_quadcopters", "winged_drones"]
    ):
        for i in range(5):
            h, w = SIZES[(i + 2 * ci) % len(SIZES)]
            img = np.clip(rng.normal(60 + 40 * ci, 20, (h, w, 3)), 0, 255).astype(np.uint8)
            files.append(str(write_image(root / c / f"{i}.png", img)))
            sizes.append((h, w))
    return root, files, sizes


def test_plan_native_batches_full_batches_similar_shapes():
    from tfcam.data.pipeline import plan_native_batches

    rng = np.random.default_rng(0)
    sizes = [SIZES[i % len(SIZES)] for i in range(45)]
    batches = plan_native_batches(sizes, 4, np.random.default_rng(1), cap=512)
    lengths = sorted(len(b) for b in batches)
    # 45 = 11 × 4 + 1: eleven full batches; the one left over waits for the next epoch.
    assert lengths == [4] * 11
    seen = np.concatenate(batches)
    assert len(set(seen.tolist())) == 44

    # Grouping by shape: far fewer distinct aspect ratios per batch than random batches have.
    def spread(bs):
        return np.mean([len({round(sizes[i][0] / sizes[i][1], 1) for i in b}) for b in bs])

    random_batches = np.array_split(rng.permutation(45)[:44], 11)
    assert spread(batches) < spread(random_batches)
    # A remainder of two or more is kept as a smaller batch.
    assert sorted(len(b) for b in plan_native_batches(sizes[:10], 4, rng, 512)) == [2, 4, 4]


def test_native_training_batches_keep_each_images_size_and_aspect(mixed_folder):
    """No image is resized to a fixed square: the unpadded part of every image in a batch has the
    file's own size, scaled down only when its longer side exceeds the cap."""
    from tfcam.data.pipeline import PAD_VALUE, make_dataset

    _root, files, sizes = mixed_folder
    cap = 256
    ds = make_dataset(
        files=files,
        labels=[i // 5 for i in range(20)],
        mode="train",
        image_size=cap,
        batch_size=4,
        num_classes=4,
        resize="native",
        seed=0,
    )
    expected = set()
    for h, w in sizes:
        s = min(1.0, cap / max(h, w))
        expected.add((max(round(h * s), 1), max(round(w * s), 1)))
    batch_shapes, found = set(), set()
    n = 0
    for x, y in ds:
        x = x.numpy()
        assert len(x) > 1 and len(y) == len(x)
        batch_shapes.add(x.shape[1:3])
        for img in x:
            real = img[..., 0] != PAD_VALUE
            hh, ww = int(real.any(axis=1).sum()), int(real.any(axis=0).sum())
            assert real[:hh, :ww].all() and not real[hh:].any() and not real[:, ww:].any()
            found.add((hh, ww))
            n += 1
    assert n == 20
    assert found == expected  # every size is one of the files' own (capped) sizes
    assert len(batch_shapes) > 1  # batches differ in size: nothing forced them to one square
    assert cap in {max(s) for s in found}  # the 1600×900 frame was capped, keeping its aspect
    assert (144, 256) in found


def _spp_numpy(features, valid_hw, levels):
    """Spatial pyramid max pooling of one image's valid region, written out directly."""
    h, w = valid_hw
    f = features[:h, :w]
    out = []
    for n in levels:
        for i in range(n):
            for j in range(n):
                r0, r1 = int(np.floor(i * h / n)), int(np.ceil((i + 1) * h / n))
                c0, c1 = int(np.floor(j * w / n)), int(np.ceil((j + 1) * w / n))
                out.append(f[r0:r1, c0:c1].max(axis=(0, 1)))
    return np.concatenate(out)


def test_spp_and_masked_pooling_match_numpy_and_ignore_padding():
    from tfcam.models.layers import PAD_VALUE, GlobalPool, SpatialPyramidPooling

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 6, 8, 5)).astype("float32")
    # Images of 12×16 (stride 2 → 6×8 cells), with real parts 12×16, 7×10 and 2×3 pixels.
    valid_px = [(12, 16), (7, 10), (2, 3)]
    img = np.full((3, 12, 16, 3), PAD_VALUE, "float32")
    for b, (h, w) in enumerate(valid_px):
        img[b, :h, :w] = 100.0
        feats[b, int(np.ceil(h / 2)) :, :] = 1e3  # padding features: huge, must not show up
        feats[b, :, int(np.ceil(w / 2)) :] = 1e3
    spp = SpatialPyramidPooling((4, 2, 1))
    got = np.asarray(spp([feats, img]))
    assert got.shape == (3, 5 * 21)
    for b, (h, w) in enumerate(valid_px):
        cells = (int(np.ceil(h / 2)), int(np.ceil(w / 2)))
        np.testing.assert_allclose(got[b], _spp_numpy(feats[b], cells, (4, 2, 1)), rtol=1e-6)
    assert got.max() < 1e3
    # Without an image (fixed-size use) it is adaptive max pooling of the whole map.
    whole = np.asarray(spp(feats[:1]))
    np.testing.assert_allclose(whole[0], _spp_numpy(feats[0], (6, 8), (4, 2, 1)), rtol=1e-6)

    avgmax = np.asarray(GlobalPool("avgmax")([feats, img]))
    for b, (h, w) in enumerate(valid_px):
        region = feats[b, : int(np.ceil(h / 2)), : int(np.ceil(w / 2))]
        np.testing.assert_allclose(avgmax[b, :5], region.mean(axis=(0, 1)), rtol=1e-5)
        np.testing.assert_allclose(avgmax[b, 5:], region.max(axis=(0, 1)), rtol=1e-6)


def test_native_model_pools_a_padded_image_like_the_image_alone(tiny_classifier):
    """In a padded batch, an image's pooled features are close to those it gets alone (only the
    backbone's border convolutions see zeros where they would see their own zero padding), and
    much closer than when the padding is not masked out of the pooling."""
    import keras

    from tfcam.data.pipeline import PAD_VALUE
    from tfcam.models.layers import SpatialPyramidPooling

    model = tiny_classifier(
        num_classes=3,
        image_size=32,
        head="spp",
        options={"width": 8},
        variable_size=True,
    )
    pool = model.get_layer("head_pool")
    probe = keras.Model(model.input, [pool.output, pool.input[0]])
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (1, 64, 96, 3)).astype("float32")
    alone, _ = probe.predict(a, verbose=0)
    padded = np.full((2, 128, 160, 3), PAD_VALUE, "float32")
    padded[0, :64, :96] = a[0]
    padded[1] = rng.uniform(0, 255, (128, 160, 3))
    pooled, features = probe.predict(padded, verbose=0)
    unmasked = np.asarray(SpatialPyramidPooling((4, 2, 1))(features[:1]))
    r_masked = np.corrcoef(pooled[0], alone[0])[0, 1]
    r_unmasked = np.corrcoef(unmasked[0], alone[0])[0, 1]
    assert r_masked > 0.95, r_masked
    assert r_unmasked < r_masked - 0.2, (r_unmasked, r_masked)


def test_drones_trains_on_mixed_sizes_from_data_dir(mixed_folder, tmp_path):
    root, files, _sizes = mixed_folder
    run = tmp_path / "run"
    r = run_cli(
        "fit",
        "-e",
        "drones",
        "--data-dir",
        str(root),
        "--weights",
        "none",
        "--set",
        "model.options.alpha=0.35",
        "--set",
        "data.image_size=160",
        "--set",
        "data.batch_size=4",
        "--set",
        "train.epochs=2",
        "--no-report",
        "--run-dir",
        str(run),
    )
    assert r.exit_code == 0, (r.output, r.exception)
    report = json.loads((run / "data_report.json").read_text())
    assert report["image_sizes"]["min_hw"] == [48, 64]
    assert report["image_sizes"]["max_hw"] == [900, 1600]
    # 16 training images, batches of 4: 4 steps per epoch (batch size never 1).
    import pandas as pd

    steps = pd.read_csv(run / "batch_history.csv")
    assert len(steps) == 8
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val"]["n"] == 4
    # The explanation tools take the native-size model too (letterboxed to the cap).
    out = tmp_path / "cams"
    r = run_cli("explain", str(run), files[1], "-m", "gradcam", "--out", str(out))
    assert r.exit_code == 0, (r.output, r.exception)
    assert list(out.rglob("*.png"))


def test_augment_preview_augments_native_images_at_their_own_size(mixed_folder):
    from tfcam.config import load_experiment
    from tfcam.data.pipeline import PAD_VALUE
    from tfcam.data.preview import augmented_samples

    root, _files, _sizes = mixed_folder
    cfg = load_experiment(
        "drones",
        ["data.image_size=128", "data.augment={rotate90: 1.0}"],
        extra={"data.data_dir": str(root)},
    )
    _names, originals, variants = augmented_samples(cfg, n_images=4, n_variants=2)
    assert originals.shape == (4, 128, 128, 3) and variants.shape == (4, 2, 128, 128, 3)
    for orig, vs in zip(originals, variants, strict=True):
        real = orig[..., 0] != PAD_VALUE
        h, w = int(real.any(axis=1).sum()), int(real.any(axis=0).sum())
        for v in vs:  # every variant is turned by 90 or 270 degrees, or 180: sides swap or not
            vr = v[..., 0] != PAD_VALUE
            vh, vw = int(vr.any(axis=1).sum()), int(vr.any(axis=0).sum())
            assert (vh, vw) in ((h, w), (w, h))
