"""Typed records shared by every loader: a ``Place`` with its views, and one ``Sample`` per image or text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Place:
    """One location with its coordinates and the files of each of its views."""

    place_id: str
    lat: float | None
    lon: float | None
    country: str | None = None
    split: str | None = None
    terrain: str | None = None
    landmark: str | None = None
    texts: tuple[str, ...] = ()
    images: dict[str, tuple[Path, ...]] = field(default_factory=dict)

    def has_view(self, view: str) -> bool:
        return bool(self.texts) if view == "text" else bool(self.images.get(view))


@dataclass(frozen=True)
class Sample:
    """One image (``path``) or one text (``text``) of one view of one place."""

    view: str
    place_id: str
    place_index: int
    lat: float | None
    lon: float | None
    path: Path | None = None
    text: str | None = None
    country: str | None = None


def samples_of(places: list[Place], view: str) -> list[Sample]:
    """One sample per image of ``view`` (or per text for ``text``), in place order."""
    out: list[Sample] = []
    for index, place in enumerate(places):
        common = dict(view=view, place_id=place.place_id, place_index=index, lat=place.lat, lon=place.lon,
                      country=place.country)
        if view == "text":
            out.extend(Sample(text=text, **common) for text in place.texts)
        else:
            out.extend(Sample(path=path, **common) for path in place.images.get(view, ()))
    return out


def sample_images(places: Sequence[Place], views: Sequence[str], *, limit: int, rng: Any) -> dict[str, list[Any]]:
    """Per view, up to ``limit`` of the places' images of that view drawn without replacement by ``rng`` (a
    ``numpy.random.Generator``), in their order among the places; views with fewer than two images are left out.
    Precise BN's sample of plain training images, and its check."""
    out = {}
    for view in views:
        paths = [path for place in places for path in place.images.get(view, [])]
        if len(paths) >= 2:
            chosen = rng.choice(len(paths), size=min(limit, len(paths)), replace=False)
            out[view] = [paths[i] for i in sorted(chosen)]
    return out

