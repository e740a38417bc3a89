"""Images are read one way everywhere: upright by their EXIF orientation, every PNG bit depth and
colour type as Pillow reads it (transparent pixels composited over white)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from tfcam.data import pipeline as P


def _asymmetric(h: int = 24, w: int = 36) -> np.ndarray:
    """An image no flip or rotation maps onto itself: ramps across both axes, a marked corner."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([y * 255 // (h - 1), x * 255 // (w - 1), (x + 2 * y) % 256], -1)
    img[:4, :6] = (255, 0, 0)
    return img.astype(np.uint8)


def _with_orientation(path, orientation: int, fmt: str):
    exif = Image.Exif()
    exif[0x0112] = orientation
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(_asymmetric()).save(path, fmt, exif=exif, **kwargs)
    return path


def _pillow_upright(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_every_exif_orientation_is_read_upright_everywhere(tmp_path, orientation, fmt):
    path = _with_orientation(tmp_path / f"o{orientation}.{fmt.lower()}", orientation, fmt)
    want = _pillow_upright(path)
    h, w = want.shape[:2]
    tol = 0 if fmt == "PNG" else 3  # JPEG: two IDCT implementations may differ by a level
    img, hw = P.decode_image(tf.io.read_file(str(path)), 16)
    assert tuple(hw.numpy()) == (h, w) and img.shape == want.shape
    assert np.abs(img.numpy().astype(int) - want).max() <= tol
    # predict / explain / report read through read_images; training through make_dataset.
    read = P.read_images([str(path)], (h, w))[0]
    assert np.abs(read - want).max() <= tol + 1e-3
    ds = P.make_dataset(
        files=[str(path)], labels=None, mode="eval", image_size=(h, w), batch_size=1
    )
    batch = next(ds.as_numpy_iterator())
    assert np.abs(batch[0] - want).max() <= tol + 1e-3
    # The pre-flight scan and the header size report the upright size too.
    assert P.scan_files([str(path)]).sizes[str(path)] == (h, w)
    assert P.stored_size(str(path)) == (h, w)


def test_a_sideways_phone_photo_is_taller_than_wide(tmp_path):
    # The probe's case: stored 120×90 (w×h) with orientation 6 is a 90×120 portrait.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((90, 120, 3), np.uint8)).save(tmp_path / "p.jpg", exif=exif)
    assert P.stored_size(str(tmp_path / "p.jpg")) == (120, 90)
    img, hw = P.decode_image(tf.io.read_file(str(tmp_path / "p.jpg")), 32)
    assert tuple(hw.numpy()) == (120, 90)
    assert img.shape[:2] == (60, 45)  # decoded at half scale (the target is 32 px), upright


def test_a_bad_orientation_value_leaves_the_image_as_stored(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 42
    Image.fromarray(_asymmetric()).save(tmp_path / "odd.png", exif=exif)
    img, _ = P.decode_image(tf.io.read_file(str(tmp_path / "odd.png")), 16)
    np.testing.assert_array_equal(img.numpy(), _asymmetric())


# --------------------------------------------------------------------------------------------
# PNG: every bit depth and colour type, written by hand so each case is exactly what it says.


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png(samples: np.ndarray, color_type: int, bits: int, palette=None, trns=None) -> bytes:
    """A PNG of ``samples`` ``[h, w, c]`` (values in the bit depth's range; palette: indices)."""
    h, w, _ = samples.shape
    rows = []
    for y in range(h):
        row = [int(v) for v in samples[y].reshape(-1)]
        if bits == 16:
            raw = b"".join(v.to_bytes(2, "big") for v in row)
        elif bits == 8:
            raw = bytes(row)
        else:  # several samples per byte, most significant bits first
            per = 8 // bits
            row += [0] * (-len(row) % per)
            raw = bytes(
                sum(v << (8 - bits * (k + 1)) for k, v in enumerate(row[i : i + per]))
                for i in range(0, len(row), per)
            )
        rows.append(b"\x00" + raw)
    ihdr = struct.pack(">IIBBBBB", w, h, bits, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    if palette is not None:
        out += _chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1)))
    if trns is not None:
        out += _chunk(b"tRNS", trns)
    return out + _chunk(b"IDAT", zlib.compress(b"".join(rows))) + _chunk(b"IEND", b"")


def _png_cases():
    """``(name, bytes, expected uint8 RGB over white)``, the expectation from the PNG spec:
    samples scaled to 0–255, a tRNS grey/RGB key makes matching pixels transparent, a palette
    tRNS gives each entry its alpha (entries past its end are opaque)."""
    rng = np.random.default_rng(0)
    h, w = 5, 7
    out = []

    def over_white(rgb, alpha):  # rgb in 0–65535, alpha in [0, 1]
        return np.round((rgb * alpha + 65535.0 * (1 - alpha)) / 257.0).astype(np.uint8)

    for bits in (1, 2, 4, 8, 16):
        top = 2**bits - 1
        to16 = 65535.0 / top
        g = rng.integers(0, top + 1, (h, w, 1))
        grey = np.repeat(g * to16, 3, axis=-1)
        out.append((f"grey{bits}", _png(g, 0, bits), over_white(grey, 1.0)))
        key = int(g[0, 0, 0])
        alpha = (g != key).astype(float)
        out.append(
            (
                f"grey{bits}+tRNS",
                _png(g, 0, bits, trns=key.to_bytes(2, "big")),
                over_white(grey, alpha),
            )
        )
        if bits <= 8:
            palette = rng.integers(0, 256, (2**bits, 3))
            idx = rng.integers(0, 2**bits, (h, w, 1))
            rgb = palette[idx[..., 0]] * 257.0
            out.append((f"palette{bits}", _png(idx, 3, bits, palette), over_white(rgb, 1.0)))
            n = max(1, 2**bits - 1)  # leave the last entry out of tRNS where there are several
            a = rng.integers(0, 256, n)
            alpha = np.concatenate([a, [255] * (2**bits - n)])[idx] / 255.0
            trns = bytes(a.astype(np.uint8))
            out.append(
                (f"palette{bits}+tRNS", _png(idx, 3, bits, palette, trns), over_white(rgb, alpha))
            )
        if bits >= 8:
            rgb = rng.integers(0, top + 1, (h, w, 3))
            out.append((f"rgb{bits}", _png(rgb, 2, bits), over_white(rgb * to16, 1.0)))
            key = rgb[1, 2]
            trns = b"".join(int(v).to_bytes(2, "big") for v in key)
            alpha = (~np.all(rgb == key, axis=-1, keepdims=True)).astype(float)
            out.append(
                (f"rgb{bits}+tRNS", _png(rgb, 2, bits, trns=trns), over_white(rgb * to16, alpha))
            )
            ga = rng.integers(0, top + 1, (h, w, 2))
            grey = np.repeat(ga[..., :1] * to16, 3, axis=-1)
            out.append(
                (f"grey+alpha{bits}", _png(ga, 4, bits), over_white(grey, ga[..., 1:] / top))
            )
            rgba = rng.integers(0, top + 1, (h, w, 4))
            out.append(
                (
                    f"rgba{bits}",
                    _png(rgba, 6, bits),
                    over_white(rgba[..., :3] * to16, rgba[..., 3:] / top),
                )
            )
    return out


PNG_CASES = _png_cases()
#: Where Pillow itself departs from the PNG spec (it does not apply a grey tRNS key to 2- and
#: 4-bit images nor a 16-bit RGB key, and reads 16-bit grey as clipped integers), only the spec
#: is the reference.
PILLOW_DEPARTS = {
    "grey2+tRNS",
    "grey4+tRNS",
    "grey16",
    "grey16+tRNS",
    "grey+alpha16",
    "rgb16+tRNS",
}


@pytest.mark.parametrize(("name", "data", "want"), PNG_CASES, ids=[c[0] for c in PNG_CASES])
def test_every_png_bit_depth_and_colour_type(tmp_path, name, data, want):
    path = tmp_path / f"{name}.png"
    path.write_bytes(data)
    img, hw = P.decode_image(tf.io.read_file(str(path)), 4)
    got = img.numpy().astype(int)
    assert tuple(hw.numpy()) == want.shape[:2]
    assert np.abs(got - want).max() <= 1, name
    if name not in PILLOW_DEPARTS:
        with Image.open(io.BytesIO(data)) as im:
            rgba = np.asarray(im.convert("RGBA")).astype(float)
        pillow = rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)
        assert np.abs(got - pillow).max() <= 1.5, name
    # The same pixels reach training and prediction.
    read = P.read_images([str(path)], want.shape[:2])[0]
    assert np.abs(read - got).max() <= 1e-3


def test_low_bit_pngs_are_no_longer_near_white(tmp_path):
    # The probe's finding: a black-and-white 1-bit PNG decoded with a minimum of 244-254.
    g = (np.arange(64).reshape(8, 8, 1) % 2).astype(int)
    (tmp_path / "bw.png").write_bytes(_png(g, 0, 1))
    img = P.read_images([str(tmp_path / "bw.png")], 8)[0]
    assert img.min() == 0 and img.max() == 255
