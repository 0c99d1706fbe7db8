"""The test split of a benchmark as its protocol sees it: query items, gallery items, and what counts as junk.

Every benchmark loader (University-1652, GeoText-1652, CVUSA, CVACT, VIGOR) returns an :class:`EvalSplit` for its
test split; :mod:`geobridge.eval.protocol_run` embeds the items and scores them with the benchmark's own conventions.
Roles are fixed by the loader, never inferred: a University-1652 drone query is an item of ``query_drone/``.
Distractors are labelled faithfully: a University-1652 gallery building without queries keeps its own ``place_id``
(so it is never a positive) and is listed in ``EvalSplit.distractor_ids``, so that a protocol can keep it in the
ranking (University-1652's ``evaluate_gpu.py``) or drop it (Sample4Geo); an unlabelled extra gallery image (e.g. the
160k satellite extension) has ``place_id=None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from geobridge.errors import DataError
from geobridge.views import check_view


@dataclass(frozen=True)
class EvalItem:
    """One query or gallery item: an image file (``path``) or a sentence (``text``) of one view.

    ``place_id`` is the label: query and gallery items match when it is equal; ``None`` marks a distractor (a
    gallery item that is never a positive). ``group`` joins the items of one multi-query (e.g. all drone photos of
    one University-1652 building); ``None`` = the item is its own group. ``lat``/``lon``: WGS84 degrees when known.
    ``offset_m``: for VIGOR, the query's (east, north) offset in metres from its positive tile's centre.
    ``target``: the key of the one gallery item this query was written for (GeoText-1652: a caption describes one
    image; its building's other images share ``place_id``), ``None`` when only ``place_id`` matters.
    """

    key: str
    view: str
    place_id: str | None
    path: Path | None = None
    text: str | None = None
    lat: float | None = None
    lon: float | None = None
    group: str | None = None
    offset_m: tuple[float, float] | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        check_view(self.view)
        if (self.path is None) == (self.text is None):
            raise DataError(f"item {self.key!r}: give exactly one of path or text")


@dataclass(frozen=True)
class EvalSplit:
    """One query role against one gallery role (e.g. ``query_drone`` -> ``gallery_satellite``).

    ``semi_positives`` maps a query key to gallery keys that are neither positives nor negatives for the protocol
    (VIGOR's semi-positive tiles): a protocol decides whether they are junk, hits or negatives.
    ``distractor_ids``: the place ids of gallery items that no query of this split can match (University-1652's
    gallery-only buildings, VIGOR's tiles without a panorama); they stay in ``gallery`` with their own labels.
    """

    name: str
    queries: tuple[EvalItem, ...]
    gallery: tuple[EvalItem, ...]
    semi_positives: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: Path | None = None
    distractor_ids: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        where = f" ({self.source})" if self.source else ""
        if not self.queries:
            raise DataError(f"{self.name}: no query items{where}")
        if not self.gallery:
            raise DataError(f"{self.name}: no gallery items{where}")
        for role, items in (("query", self.queries), ("gallery", self.gallery)):
            views = {item.view for item in items}
            if len(views) != 1:
                raise DataError(f"{self.name}: {role} items mix views {sorted(views)}{where}")

    @property
    def query_view(self) -> str:
        return self.queries[0].view

    @property
    def gallery_view(self) -> str:
        return self.gallery[0].view
