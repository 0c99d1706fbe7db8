"""The data and sampler sections of a training config: which places are read and how, how they are augmented,
and how batches are drawn, with the rules every value must meet (``geobridge.schema``). The training pipeline
(``geobridge.data.pipeline``) is built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from geobridge.data.layouts import FORMATS
from geobridge.errors import ConfigError
from geobridge.robust import RobustAugment
from geobridge.schema import Choice, Range, Rules
from geobridge.views import IMAGE_VIEWS, VIEWS

MAX_EPOCHS = 100_000


@dataclass
class Cutout:
    """Occluding holes (Sample4Geo's coarse dropout): with probability ``p`` an image gets a number of holes drawn
    from ``holes`` (inclusive), each side a fraction in ``size`` of the image's height and width, filled with the
    normalisation mean (zero after normalising). Models trees, cars and people hiding part of a view, and keeps one
    patch of a panorama from carrying the match alone."""

    p: float = 0.0
    holes: list[int] = field(default_factory=lambda: [4, 12])
    size: list[float] = field(default_factory=lambda: [0.1, 0.2])
    views: list[str] = field(default_factory=lambda: list(IMAGE_VIEWS))

    def __post_init__(self) -> None:  # one built in code (the config's rules check one read from YAML)
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {self.p}")
        for key, check in (("holes", _check_holes), ("size", _check_size)):
            try:
                check(getattr(self, key), key)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None


@dataclass
class DataConfig:
    root: str = "runs/world"
    format: str = "geoloc"  # "geoloc" or "university1652"
    views: list[str] = field(default_factory=lambda: ["drone", "satellite", "street", "text"])
    train_split: str = "train"
    eval_split: str = "test"
    num_workers: int = 0  # loader processes of the "pil" pipeline
    # "pil": decode and augment each sample per step in a DataLoader (any dataset size); "tensor": decode every
    # training image once into a uint8 cache and augment whole batches on the device (data/tensor_cache.py)
    pipeline: str = "pil"
    augment: bool = True
    text_augment: bool = False  # drop and reorder the sentences of each description (data/captions.py)
    robust_augment: bool = False  # also stale and poor captures: blur, downscale, seasons, colour (geobridge/robust.py)
    robust: RobustAugment = field(default_factory=RobustAugment)  # what robust_augment does, each with its p
    robust_from_epoch: int = 0  # robust augmentation from this epoch on (0-based); clean epochs before it
    # false: satellite tiles stay north-up and unflipped, panoramas north-first and unshifted (north-aligned data
    # such as CVUSA, CVACT and VIGOR; the per-view augmentation cannot rotate a tile and its panorama together)
    rotate: bool = True
    # with rotate: a place's satellite tile and street panorama share one random quarter turn (the panorama rolled
    # a quarter width per turn) and mirror, so a north-up tile and its north-left panorama stay aligned as in
    # Sample4Geo; drone photos are augmented on their own. Tensor pipeline only.
    joint_rotate: bool = False
    # with this probability a place's drone photo, tile and panorama share one hue rotation (up to
    # joint_colour_hue degrees either way) and saturation scale (0.7-1.3): new palettes of roofs, vegetation and
    # ground for every view at once, so the views still agree on colour (independent per-view colour jitter
    # erases that cross-view cue). Tensor pipeline only.
    joint_colour_p: float = 0.0
    joint_colour_hue: float = 45.0
    # occluding holes in every epoch (see Cutout; off at p 0). Tensor pipeline only.
    cutout: Cutout = field(default_factory=Cutout)
    # keyword options of the layout's loader (geobridge.data.load_places), e.g. {mode: cross} for VIGOR's
    # cross-area split or {include_google: true} for University-1652's google photos
    loader_options: dict[str, Any] = field(default_factory=dict)
    # "places": an epoch shows each training place once (one image of each view); "pairs": an epoch shows every
    # (query item, reference item) pair of ``pair_views`` once, in place-unique batches, as Sample4Geo's epochs
    # do (every drone photo with its satellite tile; data/pairs.py)
    epoch_unit: str = "places"
    pair_views: list[str] = field(default_factory=lambda: ["drone", "satellite"])  # (query view, reference view)


@dataclass
class SamplerConfig:
    strategy: str = "random"  # "random", "gps" (GPS hard negatives) or "embedding" (similarity hard negatives)
    gps_epochs: str = "all"  # "all", or "after:N" to switch from random to gps after N epochs
    embedding_refresh: int = 2  # epochs between neighbour refreshes for strategy "embedding"
    neighbours: int = 64
    # places per group of near neighbours in a hard-negative batch: each group is a random place and its nearest
    # unused places, and a batch holds batch_size / group_size groups (Sample4Geo's batches mix several such
    # groups); 0: one group fills the whole batch. Place epochs (data.epoch_unit=places) only.
    group_size: int = 0


def _check_format(value: str, key: str) -> None:
    if value not in FORMATS:
        raise ConfigError(f"{key}: expected one of {', '.join(FORMATS)}, got {value!r}")


def _non_empty(value: list[str], key: str) -> None:
    if not value:
        raise ConfigError(f"{key}: expected at least one view")


def _check_holes(value: list[int], key: str) -> None:
    if len(value) != 2 or not 1 <= value[0] <= value[1] <= 256:
        raise ConfigError(f"{key}: expected [min, max] hole counts with 1 <= min <= max <= 256, got {list(value)}")


def _check_size(value: list[float], key: str) -> None:
    if len(value) != 2 or not 0.0 < value[0] <= value[1] <= 1.0:
        raise ConfigError(f"{key}: expected [min, max] fractions of the image side with 0 < min <= max <= 1, "
                          f"got {list(value)}")


def _check_gps_epochs(value: str, key: str) -> None:
    after = value.split(":", 1)[1] if value.startswith("after:") else None
    if value != "all" and not (after is not None and after.isdigit() and int(after) <= MAX_EPOCHS):
        raise ConfigError(f"{key}: expected 'all' or 'after:N' with N an epoch count, got {value!r}")


DATA_RULES: Rules = {  # keys relative to the section
    "format": _check_format,
    "epoch_unit": Choice(("places", "pairs")),
    "views": _non_empty,
    "views.*": Choice(VIEWS),
    "num_workers": Range(0, 256),
    "pipeline": Choice(("pil", "tensor")),
    "robust_from_epoch": Range(0, MAX_EPOCHS),
    "joint_colour_p": Range(0.0, 1.0),
    "joint_colour_hue": Range(0.0, 180.0),
    "robust.blur_p": Range(0.0, 1.0),
    "robust.downscale_p": Range(0.0, 1.0),
    "robust.season_p": Range(0.0, 1.0),
    "robust.grayscale_p": Range(0.0, 1.0),
    "robust.views.*": Choice(IMAGE_VIEWS),
    "cutout.p": Range(0.0, 1.0),
    "cutout.holes": _check_holes,
    "cutout.holes.*": Range(1, 256),
    "cutout.size": _check_size,
    "cutout.size.*": Range(0.0, 1.0, lo_open=True),
    "cutout.views.*": Choice(IMAGE_VIEWS),
}
SAMPLER_RULES: Rules = {
    "strategy": Choice(("random", "gps", "embedding")),
    "gps_epochs": _check_gps_epochs,
    "embedding_refresh": Range(1, MAX_EPOCHS),
    "neighbours": Range(1, 1 << 16),
    "group_size": Range(0, 1 << 16),
}
