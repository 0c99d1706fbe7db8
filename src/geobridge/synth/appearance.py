"""Appearance shifts of the synthetic world: the degradations of ``geobridge.data.degrade`` (season, time of
day, blur, low resolution) applied at generation to the chosen views, and their record in the manifest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geobridge.data.degrade import SEASONS, TIMES_OF_DAY, blur, low_resolution, season, time_of_day
from geobridge.views import IMAGE_VIEWS

__all__ = ["SEASONS", "TIMES_OF_DAY", "AppearanceShift", "blur", "low_resolution", "season", "time_of_day"]


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
