"""Image files for the decoder tests: 16-bit gradients, EXIF-rotated JPEGs, palettes with transparency, alpha, bombs."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def gradient16(width: int = 256, height: int = 8) -> np.ndarray:
    """(H, W) uint16: every row runs from 0 to 65535."""
    return np.tile(np.linspace(0, 65535, width).round().astype(np.uint16), (height, 1))


def gradient16_png(width: int = 256, height: int = 8) -> bytes:
    """A grayscale 16-bit PNG (Pillow mode I;16) of :func:`gradient16`."""
    image = Image.fromarray(gradient16(width, height))
    assert image.mode == "I;16"
    return encode(image)


def expected8(values16: np.ndarray) -> np.ndarray:
    """(H, W) 16-bit samples -> the (H, W, 3) uint8 RGB that full-range scaling must give: round(v * 255 / 65535)."""
    gray = np.round(values16.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def rotated_jpeg(orientation: int = 6) -> tuple[bytes, np.ndarray]:
    """A JPEG stored sideways with an EXIF orientation tag, and the upright (H, W, 3) array its pixels must give."""
    rng = np.random.default_rng(3)
    stored = np.zeros((24, 40, 3), np.uint8)
    stored[:8, :16] = (250, 20, 20)  # a red block in the stored top-left corner
    stored[8:] = rng.integers(0, 256, (16, 40, 3), dtype=np.uint8)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    data = encode(image, "JPEG", quality=95, exif=exif)
    with Image.open(io.BytesIO(data)) as raw:  # the stored pixels as a plain decoder sees them
        pixels = raw.convert("RGB")
    transpose = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}
    return data, np.asarray(pixels.transpose(transpose[orientation]))


def palette_png() -> tuple[bytes, np.ndarray]:
    """A palette PNG whose index 0 is transparent, and its expected RGB over a black background."""
    indices = np.array([[0, 1, 2, 1], [2, 1, 0, 0]], dtype=np.uint8)
    image = Image.new("P", (4, 2))
    image.putdata(indices.ravel().tolist())
    image.putpalette([9, 9, 9, 200, 30, 40, 10, 220, 30] + [0] * (256 * 3 - 9))
    colours = np.array([(0, 0, 0), (200, 30, 40), (10, 220, 30)], dtype=np.uint8)  # index 0 is transparent
    return encode(image, transparency=0), colours[indices]


def rgba_png(alpha: int = 128, colour: tuple[int, int, int] = (200, 100, 50)) -> tuple[bytes, np.ndarray]:
    """A uniform RGBA PNG and its expected RGB composited over black: round(c * alpha / 255)."""
    image = Image.new("RGBA", (3, 2), (*colour, alpha))
    expected = np.array([round(c * alpha / 255) for c in colour], dtype=np.float64)
    return encode(image), np.broadcast_to(expected, (2, 3, 3))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's signature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(
        b"IEND", b""
    )
