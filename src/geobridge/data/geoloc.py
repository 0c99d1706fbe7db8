"""The GeoLoc-format layout (docs/data-format.md): manifest.json, places.jsonl, texts.jsonl, <view>/<id>/*."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from geobridge.data.io import list_images, read_json, read_jsonl_numbered
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
        manifest_path = self.root / "manifest.json"
        manifest = read_json(manifest_path)
        problems = manifest_problems(manifest)
        if problems:
            raise DataError(f"{manifest_path}: {problems[0]}")
        self.manifest: dict[str, Any] = manifest
        if split is not None and split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        listed = tuple(self.manifest.get("views", VIEWS))
        self.views = tuple(v for v in (views or listed) if v in VIEWS)
        texts = self._read_texts() if "text" in self.views else {}
        places = []
        lines: dict[str, int] = {}  # place_id -> its line in places.jsonl
        for number, row in read_jsonl_numbered(self.root / "places.jsonl"):
            place = self._place(row, number, texts)
            if place.place_id in lines:
                raise DataError(f"{self.root / 'places.jsonl'}:{number}: place_id {place.place_id!r} appears twice "
                                f"(first on line {lines[place.place_id]}); place ids must be unique")
            lines[place.place_id] = number
            if split is None or place.split == split:
                places.append(place)
        self.places: list[Place] = places
        self.split = split

    def _read_texts(self) -> dict[str, tuple[str, ...]]:
        path = self.root / "texts.jsonl"
        if not path.is_file():
            return {}
        out = {}
        for number, row in read_jsonl_numbered(path):
            texts = row.get("texts")
            if not isinstance(row.get("place_id"), str) or not isinstance(texts, list):
                raise DataError(f"{path}:{number}: expected {{'place_id': '...', 'texts': ['...', ...]}}")
            if not all(isinstance(t, str) for t in texts):
                raise DataError(f"{path}:{number}: texts must be strings")
            out[row["place_id"]] = tuple(t for t in texts if t.strip())
        return out

    def _place(self, row: dict[str, Any], number: int, texts: dict[str, tuple[str, ...]]) -> Place:
        where = f"{self.root / 'places.jsonl'}:{number}"
        problem = place_problem(row)
        if problem:
            raise DataError(f"{where}: {problem}")
        place_id, lat, lon = row["place_id"], float(row["lat"]), float(row["lon"])
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


def manifest_problems(manifest: Any) -> list[str]:
    """Every problem of a GeoLoc ``manifest.json``, each message starting with its key ([] for a good one)."""
    if not isinstance(manifest, dict):
        return [f"expected a JSON object, got {type(manifest).__name__}"]
    problems = []
    if manifest.get("format") != FORMAT:
        problems.append(
            f"format: is {manifest.get('format')!r}, expected {FORMAT!r} "
            "(for University-1652 folders use University1652Dataset)"
        )
    version = manifest.get("format_version", FORMAT_VERSION)
    if not _is_int(version) or version < 1:
        problems.append(f"format_version: expected an int >= 1, got {version!r}")
    elif version > FORMAT_VERSION:
        problems.append(f"format_version: {version} is newer than supported ({FORMAT_VERSION})")
    views = manifest.get("views", list(VIEWS))
    if not isinstance(views, list) or not views or not all(isinstance(v, str) for v in views):
        problems.append(f"views: expected a non-empty list of view names from {', '.join(VIEWS)}, got {views!r}")
    else:
        unknown = [v for v in views if v not in VIEWS]
        problems.extend(f"views: unknown view {v!r}; expected some of {', '.join(VIEWS)}" for v in unknown)
    for key in ("drone_views", "train_street_views", "image_size"):
        value = manifest.get(key)
        if value is not None and (not _is_int(value) or value < 0):
            problems.append(f"{key}: expected an int >= 0, got {value!r}")
    holdout = manifest.get("holdout_countries", [])
    if not isinstance(holdout, list) or not all(isinstance(c, str) for c in holdout):
        problems.append(f"holdout_countries: expected a list of country codes, got {holdout!r}")
    countries = manifest.get("countries", [])
    if not isinstance(countries, list):
        problems.append(f"countries: expected a list of objects, got {countries!r}")
        countries = []
    for i, country in enumerate(countries):
        problem = _country_problem(country)
        if problem:
            problems.append(f"countries[{i}]: {problem}")
    return problems


def place_problem(row: dict[str, Any]) -> str | None:
    """What is wrong with one ``places.jsonl`` record's id and coordinates, or None."""
    place_id = row.get("place_id")
    if not isinstance(place_id, str) or not place_id.strip():
        return f"place_id: expected a non-empty string, got {place_id!r}"
    if "/" in place_id or "\\" in place_id or place_id in (".", ".."):
        return f"place_id: {place_id!r} cannot be a folder name"
    for key, limit in (("lat", 90.0), ("lon", 180.0)):
        value = row.get(key)
        if not _is_number(value) or not math.isfinite(float(value)) or abs(float(value)) > limit:
            return f"{key}: expected a number in [-{limit:g}, {limit:g}], got {value!r}"
    for key in ("split", "country", "terrain", "landmark"):
        if row.get(key) is not None and not isinstance(row[key], str):
            return f"{key}: expected a string, got {row[key]!r}"
    return None


def country_bboxes(manifest: dict[str, Any]) -> dict[str, tuple[float, float, float, float]]:
    """``code -> (lat_min, lat_max, lon_min, lon_max)`` of the manifest's well-formed country entries."""
    out = {}
    for country in manifest.get("countries", []) if isinstance(manifest.get("countries"), list) else []:
        if _country_problem(country) is None and "bbox" in country:
            out[country["code"]] = tuple(float(v) for v in country["bbox"])
    return out  # type: ignore[return-value]


def _country_problem(country: Any) -> str | None:
    if not isinstance(country, dict):
        return f"expected an object, got {country!r}"
    if not isinstance(country.get("code"), str) or not country["code"]:
        return f"code: expected a non-empty string, got {country.get('code')!r}"
    if "bbox" not in country:
        return None
    bbox = country["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) and math.isfinite(v) for v in bbox):
        return f"bbox: expected [lat_min, lat_max, lon_min, lon_max] as 4 numbers, got {bbox!r}"
    lat_min, lat_max, lon_min, lon_max = bbox
    if not (-90 <= lat_min <= lat_max <= 90 and -180 <= lon_min <= lon_max <= 180):
        return f"bbox: {bbox} is not [lat_min <= lat_max, lon_min <= lon_max] within [-90, 90] x [-180, 180]"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
