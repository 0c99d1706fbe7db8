"""The one image decoder of GeoBridge: files and uploaded bytes become upright 8-bit RGB, or a named error.

Every reader (datasets, the tensor cache, ``GeoBridge.encode`` behind the CLI, the service, plots) decodes here:

- one pixel limit, :data:`MAX_IMAGE_PIXELS`, checked from the header before any pixel is decoded;
- EXIF orientation is applied, so a rotated JPEG is embedded upright;
- 16-bit and 32-bit integer images are scaled to 8 bits by their full range (``v * 255 / 65535``), float images
  by ``[0, 1]`` (or their own finite range when outside it), instead of Pillow's clipping ``convert("RGB")``;
- palette and alpha images are composited over :data:`ALPHA_BACKGROUND`;
- truncated, corrupt or unidentifiable data is an :class:`ImageError` (a ``DataError``) naming the source.

Only Pillow and numpy are needed, so the service and the synth tools use it without loading torch.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from geobridge.errors import DataError

MAX_IMAGE_PIXELS = 40_000_000  # width * height of any decoded image: datasets, CLI queries and uploads alike
# Transparent pixels mean "no data"; imagery conventionally fills no-data with black.
ALPHA_BACKGROUND: tuple[int, int, int] = (0, 0, 0)
GPS_IFD_TAG = 0x8825  # EXIF pointer to the GPS IFD: 1 GPSLatitudeRef, 2 GPSLatitude, 3 GPSLongitudeRef, 4 GPSLongitude
IMAGE_ERROR_KINDS = ("not_found", "not_an_image", "corrupt", "too_large", "unsupported_format")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I;16BS", "I;16LS")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La", "P")


class ImageError(DataError):
    """An image that cannot be decoded; ``kind`` is one of :data:`IMAGE_ERROR_KINDS`, ``source`` names it."""

    def __init__(self, message: str, *, kind: str, source: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.source = source


def load_image(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an image file into upright 8-bit RGB, or raise :class:`ImageError` naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}", kind="not_found", source=str(path))
    return _decode(path, source=str(path), max_pixels=max_pixels, formats=None)


def decode_image_bytes(
    data: bytes, *, name: str, max_pixels: int = MAX_IMAGE_PIXELS, formats: Sequence[str] | None = None
) -> Image.Image:
    """Decode in-memory bytes (an upload called ``name``) like :func:`load_image`.

    ``formats`` (Pillow format names such as ``"PNG"``) restricts what is accepted: any other format is an
    ``unsupported_format`` error, raised before its pixels are decoded.
    """
    return _decode(io.BytesIO(data), source=name, max_pixels=max_pixels, formats=formats)


def to_rgb(image: Image.Image) -> Image.Image:
    """An open image of any Pillow mode as 8-bit RGB: high bit depths scaled by their range, alpha composited."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _gray_to_rgb(_scaled_to_uint8(np.asarray(image), mode=mode))
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")  # a palette's transparency becomes alpha here
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # 1, L, CMYK, YCbCr...: Pillow's conversions are exact for 8-bit data


def as_image(item: object) -> Image.Image:
    """A PIL image, path or uint8 (H, W, 3) array as an 8-bit RGB PIL image (files through the one decoder)."""
    if isinstance(item, Image.Image):
        return to_rgb(item)  # 16-bit, float, palette and alpha images as the file decoder reads them
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8 (H, W, 3), got {item.dtype} {item.shape}")
        return Image.fromarray(item)
    if isinstance(item, (str, Path)):
        return load_image(Path(item))
    raise TypeError(f"expected a PIL image, a path, a uint8 array or tensor, got {type(item).__name__}")

def _decode(fp: Path | io.BytesIO, *, source: str, max_pixels: int, formats: Sequence[str] | None) -> Image.Image:
    try:
        with Image.open(fp) as img:  # reads the header only
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(
                    f"image too large: {source} is {width}x{height} = {width * height:,} pixels; "
                    f"the limit is {max_pixels:,}",
                    kind="too_large",
                    source=source,
                )
            if formats is not None and img.format not in formats:
                raise ImageError(
                    f"unsupported image format: {source} is {img.format}; allowed: {', '.join(formats)}",
                    kind="unsupported_format",
                    source=source,
                )
            img.load()
            upright = ImageOps.exif_transpose(img)
            rgb = to_rgb(upright)
            return rgb.copy() if rgb is img else rgb  # never hand out the closed file's image
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large (decompression bomb): {source}: {exc}", kind="too_large",
                         source=source) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"unreadable image (not a known format): {source}", kind="not_an_image",
                         source=source) from exc
    except Exception as exc:  # noqa: BLE001 - any failure inside Pillow on untrusted bytes means unreadable data
        raise ImageError(f"unreadable or truncated image {source}: {type(exc).__name__}: {exc}", kind="corrupt",
                         source=source) from exc


def exif_gps(path: str | Path) -> tuple[float, float] | None:
    """The ``(lat, lon)`` in degrees of the GPS IFD of an image file's EXIF, or None when it has no usable fix.

    Reads only the header (no pixels). Latitude and longitude are degree/minute/second rationals with
    ``N``/``S`` and ``E``/``W`` references; a fix outside [-90, 90] x [-180, 180] counts as none.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}", kind="not_found", source=str(path))
    try:
        with Image.open(path) as img:
            gps = img.getexif().get_ifd(GPS_IFD_TAG)
    except UnidentifiedImageError as exc:
        raise ImageError(f"unreadable image (not a known format): {path}", kind="not_an_image",
                         source=str(path)) from exc
    except Exception:  # noqa: BLE001 - a broken EXIF block means no usable position, not an unreadable image
        return None
    try:
        lat = _dms_degrees(gps[2], gps.get(1, "N"), negative="S")
        lon = _dms_degrees(gps[4], gps.get(3, "E"), negative="W")
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if not (np.isfinite(lat) and np.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        return None
    return lat, lon


def _dms_degrees(dms: Sequence[object], ref: object, *, negative: str) -> float:
    """EXIF (degrees, minutes, seconds) rationals and a hemisphere reference -> signed decimal degrees."""
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "replace")
    parts = [float(v) for v in dms]  # IFDRational (or a bare number) -> float
    if len(parts) != 3:
        raise ValueError(f"GPS coordinate must be 3 rationals, got {len(parts)}")
    value = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0
    return -value if str(ref).strip().upper().startswith(negative) else value


def _scaled_to_uint8(values: np.ndarray, *, mode: str) -> np.ndarray:
    """(H, W) integer or float samples -> (H, W) uint8 over their full range."""
    if mode == "F":
        finite = np.isfinite(values)
        if not finite.any():
            raise ValueError("a float image without one finite pixel value")
        low, high = float(values[finite].min()), float(values[finite].max())
        data = np.where(finite, values, low).astype(np.float64)  # NaN and inf pixels read as the darkest value
        if low < 0.0 or high > 1.0:  # not a [0, 1] image: scaled by its own range
            data = (data - low) / (high - low) if high > low else np.zeros_like(data)
        return np.round(np.clip(data, 0.0, 1.0) * 255.0).astype(np.uint8)
    if mode == "I":
        data = values.astype(np.int64)
        low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
        if low < 0 or high > 65535:  # 32-bit data that is not 16-bit in disguise: scaled by its own range
            return ((data - low) * 255 // max(high - low, 1)).astype(np.uint8)
    data = values.astype(np.int32)  # 65535 * 255 fits
    if mode.endswith("S"):  # signed 16-bit: -32768..32767 -> 0..65535
        data = data + 32768
    return ((data * 255 + 32767) // 65535).astype(np.uint8)  # v * 255 / 65535, rounded


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))  # (H, W) -> (H, W, 3) uint8: RGB
