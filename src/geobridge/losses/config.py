"""The loss's options, written once: the ``loss`` section of a training config and what ``GeoBridgeLoss`` is built
from, with the rules every value must meet (``geobridge.schema``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from geobridge.errors import ConfigError
from geobridge.schema import Choice, Range, Rules
from geobridge.views import IMAGE_VIEW_PAIRS

OBJECTIVES = ("geobridge", "paper")
WEIGHT = Range(0.0, 1e6)


@dataclass
class LossConfig:
    objective: str = "geobridge"  # "geobridge" (symmetric terms, summed) or "paper" (losses/geobridge_loss.py)
    symmetric: bool | None = None  # both directions of each term; None = the objective's own (paper: one)
    use_pairs: bool = True  # image-image terms (false: the text-only arm of the anchors ablation)
    use_anchors: bool = True  # text-image terms and the bridge (false: the image-only arm)
    pair_weight: float = 1.0  # every image-view pair's weight ...
    pair_weights: dict[str, float] = field(default_factory=dict)  # ... unless named here, e.g. drone_street: 0.3
    anchor_weight: float = 1.0
    bridge_weight: float = 1.0
    label_smoothing: float = 0.1


def _known_pairs(value: dict[str, float], key: str) -> None:
    unknown = sorted(set(value) - set(IMAGE_VIEW_PAIRS))
    if unknown:
        raise ConfigError(f"{key}: unknown view pairs {unknown}; expected some of {list(IMAGE_VIEW_PAIRS)}")


LOSS_RULES: Rules = {  # keys relative to the section
    "objective": Choice(OBJECTIVES),
    "pair_weight": WEIGHT,
    "pair_weights": _known_pairs,
    "pair_weights.*": WEIGHT,
    "anchor_weight": WEIGHT,
    "bridge_weight": WEIGHT,
    "label_smoothing": Range(0.0, 1.0, hi_open=True),
}
