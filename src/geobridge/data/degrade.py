"""Image degradations: pure functions on uint8 RGB images (H, W, 3), the conditions of the robustness evaluation
and of the synthetic world's appearance shifts.

* ``season``: ``summer`` (lusher, warmer), ``autumn`` (foliage turns orange and brown), ``winter`` (bare,
  greyish vegetation and snow on open ground), ``none``.
* ``time_of_day``: ``noon`` (unchanged), ``dusk`` (darker, warm orange light), ``night`` (dark, blue).
* ``blur``: Gaussian blur with standard deviation ``sigma`` pixels (PIL ``ImageFilter.GaussianBlur``).
* ``low_resolution``: downscale by ``factor`` and upscale back to the original size.

Every function returns a new array and leaves its input untouched; the same input gives the same output.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

SEASONS: tuple[str, ...] = ("none", "summer", "autumn", "winter")
TIMES_OF_DAY: tuple[str, ...] = ("noon", "dusk", "night")


def _check_image(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image of shape (H, W, 3), got {arr.dtype} {arr.shape}")
    return arr


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def season(image: np.ndarray, name: str, *, strength: float = 1.0) -> np.ndarray:
    """Shift the palette of vegetation and ground towards a season (``none`` returns a copy).

    The formula is ``geobridge.seasons.season_shift``, which the training augmentation shares.
    """
    if name not in SEASONS:
        raise ValueError(f"unknown season {name!r}; expected one of {', '.join(SEASONS)}")
    arr = _check_image(image)
    if name == "none" or strength <= 0:
        return arr.copy()
    from geobridge.seasons import season_image

    return season_image(arr, name, strength)


def time_of_day(image: np.ndarray, name: str, *, strength: float = 1.0) -> np.ndarray:
    """Relight an image for ``noon`` (a copy), ``dusk`` or ``night``."""
    if name not in TIMES_OF_DAY:
        raise ValueError(f"unknown time of day {name!r}; expected one of {', '.join(TIMES_OF_DAY)}")
    arr = _check_image(image)
    if name == "noon" or strength <= 0:
        return arr.copy()
    x = arr.astype(np.float32) / 255.0
    if name == "dusk":
        target = (x**1.15) * 0.68 * np.asarray([1.12, 0.86, 0.68], np.float32)
    else:
        target = (x**1.35) * 0.24 * np.asarray([0.75, 0.88, 1.3], np.float32) + np.float32(0.01)
    return _to_uint8(x * (1 - strength) + target * strength)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (``sigma <= 0`` returns a copy)."""
    arr = _check_image(image)
    if sigma <= 0:
        return arr.copy()
    return np.asarray(Image.fromarray(arr).filter(ImageFilter.GaussianBlur(radius=float(sigma))))


def low_resolution(image: np.ndarray, factor: float) -> np.ndarray:
    """Downscale by ``factor`` (box filter), then upscale back (bilinear); ``factor <= 1`` returns a copy."""
    arr = _check_image(image)
    if factor <= 1:
        return arr.copy()
    h, w = arr.shape[:2]
    small = (max(1, int(round(w / factor))), max(1, int(round(h / factor))))
    img = Image.fromarray(arr).resize(small, Image.Resampling.BOX)
    return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR))
