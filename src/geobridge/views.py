"""The fixed names of GeoBridge's views and retrieval directions."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

VIEWS: tuple[str, ...] = ("drone", "satellite", "street", "text")
IMAGE_VIEWS: tuple[str, ...] = ("drone", "satellite", "street")
# "drone_satellite", "drone_street", "satellite_street": the names of the pairwise loss terms
IMAGE_VIEW_PAIRS: tuple[str, ...] = tuple(f"{a}_{b}" for a, b in itertools.combinations(IMAGE_VIEWS, 2))


def check_view(view: str, *, allowed: tuple[str, ...] = VIEWS) -> str:
    """Return ``view`` unchanged, or raise a ValueError that lists the valid names."""
    if view not in allowed:
        raise ValueError(f"unknown view {view!r}; expected one of {', '.join(allowed)}")
    return view


def check_view_pairs(pairs: Iterable[str]) -> None:
    """Raise a ValueError naming every entry of ``pairs`` that is not one of ``IMAGE_VIEW_PAIRS``."""
    unknown = sorted(set(pairs) - set(IMAGE_VIEW_PAIRS))
    if unknown:
        raise ValueError(f"unknown view pairs {unknown}; expected some of {IMAGE_VIEW_PAIRS}")


def direction_key(query_view: str, gallery_view: str) -> str:
    """The name of a retrieval direction, e.g. ``drone->satellite``."""
    return f"{check_view(query_view)}->{check_view(gallery_view)}"


def parse_direction(direction: str) -> tuple[str, str]:
    """Split ``'drone->satellite'`` into ``('drone', 'satellite')``, validating both names."""
    parts = direction.split("->")
    if len(parts) != 2:
        raise ValueError(f"bad direction {direction!r}; write it as 'query->gallery', e.g. 'drone->satellite'")
    return check_view(parts[0].strip()), check_view(parts[1].strip())
