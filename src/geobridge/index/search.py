"""Searching an index with the queries of many places: the hits that fusion (``locate``) and its calibration
(``calibrate``) both start from. Its own module so that ``calibrate`` and ``locate`` need not import each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from geobridge.index.store import GeoIndex

DEFAULT_CANDIDATES = 10  # places fetched per query for fusion (deeper lists measured worse: docs/index.md)


def search_depth(index: GeoIndex, top_k: int) -> int:
    """How many gallery items to fetch per query so that about ``top_k`` distinct places come back."""
    per_place = math.ceil(len(index) / max(1, index.n_places()))
    return max(1, min(len(index), top_k * per_place))


def search_places(
    model: Any,
    index: GeoIndex,
    places: Sequence[Any],
    *,
    view: str,
    nth: int = 0,
    depth: int,
    exclude_same_view: bool = True,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
) -> list[list[dict[str, Any]] | None]:
    """Per place, the hits of its ``nth`` item of ``view`` (image, or text) searched ``depth`` items deep in
    ``index`` (among the other views with ``exclude_same_view``); None for a place without such an item."""
    items, rows = [], []
    for i, place in enumerate(places):
        entries = place.texts if view == "text" else tuple(place.images.get(view, ()))
        if nth < len(entries):
            items.append(entries[nth])
            rows.append(i)
    per_place: list[list[dict[str, Any]] | None] = [None] * len(places)
    if items:
        vectors = model.encode(items, view=view, batch_size=batch_size, show_progress_bar=show_progress_bar)
        result = index.search(vectors, k=depth, exclude_views=(view,) if exclude_same_view else None)
        for q, i in enumerate(rows):
            per_place[i] = result.metadata(q)
    return per_place
