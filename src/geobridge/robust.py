"""What the robust training augmentation does: stale and poor captures, each with its own probability.

One set of settings serves both training pipelines (``data.batch_augment`` on uint8 batches, ``data.transforms``
on PIL images) and the training config (``data.robust`` beside the switch ``data.robust_augment``):

* ``blur_p``: Gaussian blur, sigma 0.5-2 px (a shaken or defocused drone photo);
* ``downscale_p``: a down- and up-scale by 2-4x (an old, coarse tile);
* ``season_p``: summer, autumn or winter vegetation and snow (``geobridge.seasons``), strength 0.5-1 (a tile or
  photo from another time of year);
* ``strong_colour``: brightness and contrast jitter of +-40 % and saturation +-50 % instead of +-20 % and +-10 %;
* ``grayscale_p``: grayscale;
* ``views``: the image views that get them (all three by default; the CPU recipe degrades only the aerial views,
  whose stale tiles and blurred photos the robustness conditions model, and keeps the panoramas clean).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from geobridge.views import IMAGE_VIEWS

BLUR_SIGMA: tuple[float, float] = (0.5, 2.0)
DOWNSCALE_FACTOR: tuple[float, float] = (2.0, 4.0)
SEASON_STRENGTH: tuple[float, float] = (0.5, 1.0)
NORMAL_COLOUR: tuple[float, float, float] = (0.2, 0.2, 0.1)  # brightness, contrast, saturation jitter
STRONG_COLOUR: tuple[float, float, float] = (0.4, 0.4, 0.5)


@dataclass
class RobustAugment:
    """Probabilities (per image) and colour strength of the robust augmentation; the defaults are the strong set."""

    blur_p: float = 0.25
    downscale_p: float = 0.25
    season_p: float = 0.25
    strong_colour: bool = True
    grayscale_p: float = 0.1
    views: list[str] = field(default_factory=lambda: list(IMAGE_VIEWS))

    def __post_init__(self) -> None:
        for name in ("blur_p", "downscale_p", "season_p", "grayscale_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        unknown = [v for v in self.views if v not in IMAGE_VIEWS]
        if unknown:
            raise ValueError(f"views: {unknown} are not image views ({', '.join(IMAGE_VIEWS)})")

    @property
    def colour(self) -> tuple[float, float, float]:
        """(brightness, contrast, saturation) jitter amounts."""
        return STRONG_COLOUR if self.strong_colour else NORMAL_COLOUR
