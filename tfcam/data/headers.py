"""What an image file's first bytes say before it is decoded: its EXIF orientation, and whether
a low-bit-depth PNG is opaque. The orientation is read in plain Python (for headers read with
``open``) and with TensorFlow ops (inside the ``tf.data`` decoder, where a Python call per image
would hold up the parallel map); tests check both against Pillow.
"""

from __future__ import annotations

import tensorflow as tf

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: The first bytes of a file hold its EXIF block and a PNG's chunks before the pixel data.
_HEADER_BYTES = 1 << 16

#: EXIF orientation (TIFF tag 274) → how to turn the stored pixels upright, as Pillow's
#: ``ImageOps.exif_transpose`` does (2 mirror, 3 rotate 180°, 4 flip, 5 transpose, 6 rotate 90°
#: clockwise, 7 transverse, 8 rotate 90° counter-clockwise), written as: transpose or not, then
#: reverse rows, reverse columns. Rows 0–7 are orientations 1–8.
_UPRIGHT = (
    (0, 0, 0),
    (0, 0, 1),
    (0, 1, 1),
    (0, 1, 0),
    (1, 0, 0),
    (1, 0, 1),
    (1, 1, 1),
    (1, 1, 0),
)


def exif_orientation(contents: bytes) -> int:
    """The EXIF orientation (1–8) of encoded image bytes; 1 when there is none or it is odd.

    Reads the EXIF block of a JPEG (``APP1``), a PNG (``eXIf``) or a WebP (``EXIF``) and the
    orientation tag (274) of its first IFD, as Pillow's ``getexif()`` does, without decoding.
    """
    block = _exif_block(contents)
    if block is None or len(block) < 8 or block[:2] not in (b"II", b"MM"):
        return 1
    order = "little" if block[:2] == b"II" else "big"

    def num(at: int, size: int) -> int:
        return int.from_bytes(block[at : at + size], order)

    ifd = num(4, 4)
    if ifd + 2 > len(block):
        return 1
    for i in range(num(ifd, 2)):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(block):
            break
        if num(entry, 2) == 0x0112:
            kind = num(entry + 2, 2)  # 3 SHORT (the standard), 4 LONG, 1 BYTE
            value = {1: block[entry + 8], 3: num(entry + 8, 2), 4: num(entry + 8, 4)}.get(kind, 1)
            return value if 1 <= value <= 8 else 1
    return 1


def _exif_block(data: bytes) -> bytes | None:
    """The TIFF-structured EXIF block of a JPEG, PNG or WebP file's header, or None."""
    if data[:3] == _JPEG_MAGIC:
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF:
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0xDA:  # start of scan: no EXIF after this
                return None
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
                return data[pos + 10 : pos + 2 + length]
            pos += 2 + length
        return None
    if data[:8] == _PNG_MAGIC:
        for kind, start, length in _png_chunks(data):
            if kind == b"eXIf":
                return data[start : start + length]
        return None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        pos = 12
        while pos + 8 <= len(data):
            kind, length = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
            if kind == b"EXIF":
                block = data[pos + 8 : pos + 8 + length]
                return block[6:] if block[:6] == b"Exif\x00\x00" else block
            pos += 8 + length + (length & 1)
    return None


def _png_chunks(data: bytes):
    """``(type, data start, length)`` of a PNG's chunks before its pixel data."""
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind in (b"IDAT", b"IEND"):
            return
        yield kind, pos + 8, length
        pos += 12 + length


#: IFD entries examined for the orientation tag (cameras write 10–30 in the first IFD).
_MAX_IFD_ENTRIES = 64


def _exif_block_op(contents: tf.Tensor) -> tf.Tensor:
    """TensorFlow ops: the EXIF block (TIFF structure) in a file's first bytes, or ``""``: after
    ``Exif\\0\\0`` (a JPEG's APP1, some WebP), after a PNG's ``eXIf`` chunk type, or after a
    WebP ``EXIF`` chunk's size. The same as :func:`exif_orientation` reads, without a Python call
    per image (which would hold up ``tf.data``'s parallel map)."""
    prefix = tf.strings.substr(contents, 0, _HEADER_BYTES)
    block = tf.constant(b"")
    # Tried in reverse order of preference, so the preferred marker wins where several match.
    for marker, skip in ((b"EXIF", 4), (b"eXIf", 0), (b"Exif\x00\x00", 0)):
        found, rest = _after(prefix, marker)
        rest = tf.strings.join([rest, b"\x00" * skip])
        block = tf.where(found, tf.strings.substr(rest, skip, _HEADER_BYTES), block)
    return block


def _after(text: tf.Tensor, marker: bytes) -> tuple[tf.Tensor, tf.Tensor]:
    """``(found, what follows the first marker)`` of a scalar string (the text when absent).

    The raw split op: one node, where ``tf.strings.split`` builds a ragged tensor of dozens,
    which made tracing every ``tf.data`` map slower."""
    _, values, shape = tf.raw_ops.StringSplitV2(input=tf.reshape(text, [1]), sep=marker, maxsplit=1)
    return shape[1] > 1, values[-1]


_BYTES = tf.TensorSpec([], tf.string)


# Compiled once per process and called from every decoder graph: tracing these ops into each new
# tf.data map would cost more than running them.
@tf.function(input_signature=[_BYTES])
def orientation_op(contents: tf.Tensor) -> tf.Tensor:
    """TensorFlow ops: the EXIF orientation tag (1–8) of encoded bytes; 1 when absent or odd."""
    block = _exif_block_op(contents)
    return tf.cond(tf.strings.length(block) >= 8, lambda: _tiff_orientation(block), lambda: 1)


def _tiff_orientation(block: tf.Tensor) -> tf.Tensor:
    b = tf.cast(tf.io.decode_raw(block, tf.uint8), tf.int64)
    n = tf.size(b, out_type=tf.int64)
    b = tf.pad(b, [[0, 4]])  # every read below stays inside, wherever an offset points
    little = (b[0] == 73) & (b[1] == 73)  # "II"
    big = (b[0] == 77) & (b[1] == 77)  # "MM"
    # 16- and 32-bit numbers starting at every byte, in the block's byte order.
    b0, b1, b2, b3 = b[:-3], b[1:-2], b[2:-1], b[3:]
    u16 = tf.where(little, b0 + 256 * b1, 256 * b0 + b1)
    u32 = tf.where(little, u16 + 65536 * (b2 + 256 * b3), 65536 * u16 + 256 * b2 + b3)

    def at(values: tf.Tensor, offset: tf.Tensor) -> tf.Tensor:
        return tf.gather(values, tf.clip_by_value(offset, 0, n))

    ifd = at(u32, tf.constant(4, tf.int64))
    k = tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64)
    entry = ifd + 2 + 12 * k
    match = (k < at(u16, ifd)) & (entry + 12 <= n) & (at(u16, entry) == 0x0112)
    e = tf.gather(entry, tf.argmax(tf.cast(match, tf.int32), output_type=tf.int64))
    kind = at(u16, e + 2)  # 3 SHORT (the standard), 4 LONG, 1 BYTE
    value = tf.where(kind == 3, at(u16, e + 8), tf.where(kind == 4, at(u32, e + 8), at(b, e + 8)))
    ok = (little | big) & tf.reduce_any(match) & (value >= 1) & (value <= 8)
    ok = ok & ((kind == 1) | (kind == 3) | (kind == 4))
    return tf.cast(tf.where(ok, value, 1), tf.int32)


@tf.function(input_signature=[_BYTES])
def png_opaque_op(contents: tf.Tensor) -> tf.Tensor:
    """TensorFlow ops: whether PNG bytes (call on PNG bytes only) hold 1, 2 or 4 bits per sample
    (grey or palette) and no ``tRNS`` chunk, so every pixel is opaque. TensorFlow's decoder fills
    the alpha channel of such images with the largest value of the *stored* bit depth (1 of 255
    for a 1-bit image), so the decoder must not trust it."""
    bit_depth = tf.io.decode_raw(tf.strings.substr(contents, 24, 1), tf.uint8)[0]
    head = tf.strings.substr(contents, 0, _HEADER_BYTES)
    _, values, _ = tf.raw_ops.StringSplitV2(input=tf.reshape(head, [1]), sep=b"IDAT", maxsplit=1)
    # Split, not a regex: RE2 reads UTF-8, and chunk data is arbitrary bytes.
    has_trns, _ = _after(values[0], b"tRNS")
    return (bit_depth < 8) & tf.logical_not(has_trns)


def upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Turns decoded pixels upright by their EXIF orientation (1 leaves them as stored).

    One transpose whose permutation and one reverse whose axes depend on the orientation,
    skipped for upright images.
    """
    plan = tf.gather(tf.constant(_UPRIGHT, tf.int32), tf.clip_by_value(orientation, 1, 8) - 1)
    perm = tf.where(plan[0] > 0, tf.constant([1, 0, 2]), tf.constant([0, 1, 2]))
    axes = tf.boolean_mask(tf.constant([0, 1]), plan[1:] > 0)
    out = tf.cond(
        orientation > 1, lambda: tf.reverse(transpose_pixels(image, perm), axes), lambda: image
    )
    return tf.ensure_shape(out, [None, None, image.shape[-1]])


def transpose_pixels(image: tf.Tensor, perm: tf.Tensor) -> tf.Tensor:
    """``tf.transpose(image, perm)`` (``perm`` swapping or keeping height and width) of an image;
    an RGB uint8 one moves each pixel as one float32.

    oneDNN prints "oneDNN supports DT_UINT8 only on platforms with AVX-512" on other CPUs when a
    compiled graph holds a uint8 (or integer) transpose, into every notebook that reads images.
    Each pixel's three bytes plus a fourth, 0x40, are one float32 whose exponent byte is 0x40:
    always a normal finite number (never NaN, infinite or subnormal), so the transpose copies
    its bits unchanged. One extra byte a pixel while it runs.
    """
    if image.dtype != tf.uint8 or image.shape[-1] != 3:
        return tf.transpose(image, perm)
    pad = tf.fill(tf.concat([tf.shape(image)[:2], [1]], 0), tf.constant(0x40, tf.uint8))
    as_float = tf.bitcast(tf.concat([image, pad], axis=-1), tf.float32)  # [h, w]
    moved = tf.transpose(as_float, perm[:2])
    return tf.bitcast(moved, tf.uint8)[..., :3]
