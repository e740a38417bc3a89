"""tfcam.viz.png: the PNG writer of explain's pictures, checked against two independent
decoders (Pillow and OpenCV's libpng) on every colour type and awkward sizes."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest

from tfcam.viz.png import encode_png, filtered_rows

RNG = np.random.default_rng(7)


def _photo_like(h: int, w: int, c: int | None) -> np.ndarray:
    """Smooth gradients plus noise: what panels look like, and every byte value."""
    shape = (h, w) if c is None else (h, w, c)
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    base = ramp if c is None else ramp[..., None]
    noise = RNG.integers(-40, 40, size=shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


CASES = [
    ((1, 1), None),
    ((1, 1), 3),
    ((2, 3), None),
    ((7, 1), 3),
    ((1, 9), 4),
    ((31, 17), 2),
    ((64, 48), 3),
    ((452, 1376), 3),
    ((33, 65), 4),
]


@pytest.mark.parametrize("hw,c", CASES)
def test_pillow_decodes_exactly_what_was_written(hw, c):
    from PIL import Image

    a = _photo_like(*hw, c)
    back = np.asarray(Image.open(io.BytesIO(encode_png(a))))
    np.testing.assert_array_equal(back, a)


@pytest.mark.parametrize("hw,c", [((64, 48), 3), ((5, 3), None), ((33, 65), 4), ((1, 1), 3)])
def test_libpng_decodes_exactly_what_was_written(hw, c):
    import cv2

    a = _photo_like(*hw, c)
    back = cv2.imdecode(np.frombuffer(encode_png(a), np.uint8), cv2.IMREAD_UNCHANGED)
    if c == 3:
        back = cv2.cvtColor(back, cv2.COLOR_BGR2RGB)
    elif c == 4:
        back = cv2.cvtColor(back, cv2.COLOR_BGRA2RGBA)
    np.testing.assert_array_equal(back, a)


def test_single_channel_axis_is_grey():
    from PIL import Image

    a = _photo_like(9, 11, 1)
    img = Image.open(io.BytesIO(encode_png(a)))
    assert img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), a[..., 0])


def test_sub_filter_against_the_specification():
    """Sub(x) = Raw(x) - Raw(x - bpp) mod 256, the first pixel of a row kept, type byte 1;
    computed here byte by byte, independently of the vectorised version."""
    a = RNG.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    rows = filtered_rows(a)
    for y in range(3):
        raw = a[y].reshape(-1).astype(int)
        expected = [1] + [(raw[i] - (raw[i - 3] if i >= 3 else 0)) % 256 for i in range(len(raw))]
        assert rows[y].tolist() == expected


def test_chunks_have_valid_crcs_and_the_idat_inflates():
    data = encode_png(_photo_like(20, 30, 3))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        crc = int.from_bytes(data[pos + 8 + n : pos + 12 + n], "big")
        assert zlib.crc32(kind + body) == crc, kind
        if kind == b"IDAT":
            assert len(zlib.decompress(body)) == 20 * (1 + 30 * 3)
        kinds.append(kind)
        pos += 12 + n
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.float32),
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((0, 4), np.uint8),
        np.zeros((2, 2, 2, 3), np.uint8),
    ],
)
def test_refuses_what_it_cannot_write(bad):
    with pytest.raises(ValueError, match="uint8 image of 1-4 channels"):
        encode_png(bad)
