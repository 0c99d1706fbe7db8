"""Appearance shifts: pure functions on uint8 RGB images (H, W, 3), for robustness tests.

* ``season``: ``summer`` (lusher, warmer), ``autumn`` (foliage turns orange and brown), ``winter`` (bare,
  greyish vegetation and snow on open ground), ``none``.
* ``time_of_day``: ``noon`` (unchanged), ``dusk`` (darker, warm orange light), ``night`` (dark, blue).
* ``blur``: Gaussian blur with standard deviation ``sigma`` pixels (PIL ``ImageFilter.GaussianBlur``).
* ``low_resolution``: downscale by ``factor`` and upscale back to the original size.

Every function returns a new array and leaves its input untouched; the same input gives the same output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from geobridge.views import IMAGE_VIEWS

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


@dataclass(frozen=True)
class AppearanceShift:
    """Shifts applied at generation to the chosen views, in the order season, time of day, low resolution, blur."""

    season: str = "none"
    time_of_day: str = "noon"
    blur: float = 0.0
    low_resolution: float = 1.0
    views: tuple[str, ...] = IMAGE_VIEWS

    def __post_init__(self) -> None:
        if self.season not in SEASONS:
            raise ValueError(f"unknown season {self.season!r}; expected one of {', '.join(SEASONS)}")
        if self.time_of_day not in TIMES_OF_DAY:
            raise ValueError(f"unknown time of day {self.time_of_day!r}; expected one of {', '.join(TIMES_OF_DAY)}")
        if self.blur < 0 or self.low_resolution < 1:
            raise ValueError("blur must be >= 0 and low_resolution >= 1")
        for view in self.views:
            if view not in IMAGE_VIEWS:
                raise ValueError(f"unknown image view {view!r}; expected one of {', '.join(IMAGE_VIEWS)}")

    @property
    def is_identity(self) -> bool:
        return self.season == "none" and self.time_of_day == "noon" and self.blur == 0 and self.low_resolution == 1

    def applies_to(self, view: str) -> bool:
        return not self.is_identity and view in self.views

    def apply(self, image: np.ndarray) -> np.ndarray:
        out = season(image, self.season)
        out = time_of_day(out, self.time_of_day)
        out = low_resolution(out, self.low_resolution)
        return blur(out, self.blur)

    def to_dict(self) -> dict[str, object]:
        """The manifest's ``appearance`` entry: ``{}`` when nothing is shifted."""
        if self.is_identity:
            return {}
        record: dict[str, object] = {}
        if self.season != "none":
            record["season"] = self.season
        if self.time_of_day != "noon":
            record["time_of_day"] = self.time_of_day
        if self.blur > 0:
            record["blur"] = self.blur
        if self.low_resolution > 1:
            record["low_resolution"] = self.low_resolution
        record["views"] = list(self.views)
        return record
