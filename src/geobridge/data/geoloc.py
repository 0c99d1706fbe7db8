"""The GeoLoc-format layout (docs/data-format.md): manifest.json, places.jsonl, texts.jsonl, <view>/<id>/*."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geobridge.data.io import list_images, read_json, read_jsonl
from geobridge.data.types import Place, Sample, samples_of
from geobridge.errors import DataError
from geobridge.views import IMAGE_VIEWS, VIEWS

FORMAT = "geoloc"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


class GeoLocDataset:
    """A GeoLoc-format dataset on disk, read into ``Place`` records.

    ``split`` keeps the places of one split (``train``, ``val`` or ``test``); ``views`` restricts which views
    are attached (default: those the manifest lists).
    """

    def __init__(self, root: str | Path, *, split: str | None = None, views: tuple[str, ...] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"dataset folder not found: {self.root}")
        self.manifest: dict[str, Any] = read_json(self.root / "manifest.json")
        if self.manifest.get("format") != FORMAT:
            raise DataError(
                f"{self.root / 'manifest.json'}: format is {self.manifest.get('format')!r}, expected {FORMAT!r} "
                "(for University-1652 folders use University1652Dataset)"
            )
        if int(self.manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise DataError(f"{self.root}: format_version {self.manifest['format_version']} is newer than supported")
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        listed = tuple(self.manifest.get("views", VIEWS))
        self.views = tuple(v for v in (views or listed) if v in VIEWS)
        texts = self._read_texts() if "text" in self.views else {}
        places = []
        for number, row in enumerate(read_jsonl(self.root / "places.jsonl"), start=1):
            place = self._place(row, number, texts)
            if split is None or place.split == split:
                places.append(place)
        self.places: list[Place] = places
        self.split = split

    def _read_texts(self) -> dict[str, tuple[str, ...]]:
        path = self.root / "texts.jsonl"
        if not path.is_file():
            return {}
        out = {}
        for number, row in enumerate(read_jsonl(path), start=1):
            if "place_id" not in row or not isinstance(row.get("texts"), list):
                raise DataError(f"{path}:{number}: expected {{'place_id': ..., 'texts': [...]}}")
            out[str(row["place_id"])] = tuple(str(t) for t in row["texts"] if str(t).strip())
        return out

    def _place(self, row: dict[str, Any], number: int, texts: dict[str, tuple[str, ...]]) -> Place:
        where = f"{self.root / 'places.jsonl'}:{number}"
        try:
            place_id = str(row["place_id"])
            lat, lon = float(row["lat"]), float(row["lon"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: needs place_id, lat and lon ({exc})") from exc
        images = {v: list_images(self.root / v / place_id) for v in IMAGE_VIEWS if v in self.views}
        return Place(
            place_id=place_id,
            lat=lat,
            lon=lon,
            country=row.get("country"),
            split=row.get("split"),
            terrain=row.get("terrain"),
            landmark=row.get("landmark"),
            texts=texts.get(place_id, ()),
            images=images,
        )

    @property
    def holdout_countries(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("holdout_countries", ()))

    @property
    def countries(self) -> tuple[str, ...]:
        return tuple(sorted({p.country for p in self.places if p.country}))

    def samples(self, view: str) -> list[Sample]:
        return samples_of(self.places, view)

    def __len__(self) -> int:
        return len(self.places)
