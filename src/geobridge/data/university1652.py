"""The published University-1652 layout: fixed query/gallery roles, gallery-only distractor buildings, coordinates.

Release layout (layumi/University1652-Baseline)::

    train/{drone,satellite,street,google}/<building>/*.jpg|jpeg|png|webp
    test/query_{drone,satellite,street}/<building>/*
    test/gallery_{drone,satellite,street}/<building>/*

The 701 test buildings appear in both ``query_*`` and ``gallery_*``; the gallery folders hold 250 more buildings
(951 satellite buildings) that have no query: they stay labelled gallery items, never positives for any query, and
are listed in :attr:`EvalSplit.distractor_ids`. ``google`` (train only) holds noisy ground photos found by image
search; with ``include_google=True`` they are added to the building's ``street`` images (what the baseline's
``--extra`` option feeds to its ground branch). Coordinates come from ``coords.csv`` (``building_id,lat,lon``) or,
failing that, from the release's per-building KML files (``<building>.kml`` / ``Tour_<building>.kml`` inside a
building folder, or under ``<root>/kml/``).
"""

from __future__ import annotations

import csv
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from geobridge.data.evalsplit import EvalItem, EvalSplit
from geobridge.data.io import IMAGE_SUFFIXES, list_images, read_jsonl, read_lines
from geobridge.data.types import Place, Sample, samples_of
from geobridge.errors import DataError
from geobridge.views import IMAGE_VIEWS, check_view

ROLES = ("query", "gallery")
TRAIN_FOLDERS = ("drone", "satellite", "street", "google")
TEST_FOLDERS = tuple(f"{role}_{view}" for role in ROLES for view in IMAGE_VIEWS)
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


class University1652Dataset:
    """``train/{drone,satellite,street,google}/<id>/`` or ``test/{query,gallery}_{view}/<id>/``.

    For ``split="train"`` ``places`` holds every building with all its views. For ``split="test"`` the query and
    gallery folders are separate place lists (``places_for(role)``); :meth:`eval_split` builds the protocol's
    query and gallery items for one direction. ``places`` of the test split raises: merging the two roles into
    one pool is what the protocol forbids.
    """

    def __init__(self, root: str | Path, *, split: str = "train", include_google: bool = False) -> None:
        self.root = Path(root)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        base = self.root / split
        if not base.is_dir():
            raise DataError(
                f"not a University-1652 folder: {base} is missing "
                "(expected train/{drone,satellite,street}/<id>/ and test/{query,gallery}_<view>/<id>/)"
            )
        self.split = split
        self.include_google = include_google
        self.texts = _read_texts(self.root / "texts.jsonl")
        if split == "train":
            folders = {view: base / view for view in IMAGE_VIEWS}
            if not any(f.is_dir() for f in folders.values()):
                raise DataError(f"{base} has none of the folders drone/, satellite/, street/")
            extra = {"street": base / "google"} if include_google else {}
            self.coords = read_coordinates(self.root, [base / "drone", base / "satellite"])
            self._places = {"all": self._collect(folders, extra)}
        else:
            self.coords = read_coordinates(self.root, [base / f"{r}_drone" for r in ROLES]
                                           + [base / f"{r}_satellite" for r in ROLES])
            self._places = {
                role: self._collect({view: base / f"{role}_{view}" for view in IMAGE_VIEWS}, {}) for role in ROLES
            }
            if not any(self._places.values()):
                raise DataError(f"{base} has no query_<view>/ or gallery_<view>/ folders")

    def _collect(self, folders: dict[str, Path], extra: dict[str, Path]) -> list[Place]:
        ids = sorted({p.name for f in folders.values() if f.is_dir() for p in f.iterdir() if p.is_dir()})
        places = []
        for place_id in ids:
            lat, lon = self.coords.get(place_id, (None, None))
            images = {v: list_images(f / place_id) for v, f in folders.items()}
            for view, folder in extra.items():
                images[view] = images.get(view, ()) + list_images(folder / place_id)
            places.append(
                Place(place_id=place_id, lat=lat, lon=lon, split=self.split, texts=self.texts.get(place_id, ()),
                      images={v: p for v, p in images.items() if p})
            )
        return places

    @property
    def places(self) -> list[Place]:
        if self.split == "train":
            return self._places["all"]
        raise DataError(
            f"{self.root / 'test'}: the University-1652 test split has fixed query and gallery roles; use "
            "places_for('query'|'gallery') or eval_split(query_view, gallery_view) instead of one merged pool"
        )

    def places_for(self, role: str) -> list[Place]:
        if self.split == "train":
            return self._places["all"]
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        return self._places[role]

    def samples(self, view: str, *, role: str = "gallery") -> list[Sample]:
        return samples_of(self.places_for(role), view)

    def distractor_ids(self, query_view: str, gallery_view: str) -> frozenset[str]:
        """Gallery buildings of ``gallery_view`` with no image in ``query_<query_view>/``."""
        queried = {p.place_id for p in self._role("query") if p.has_view(query_view)}
        return frozenset(p.place_id for p in self._role("gallery") if p.has_view(gallery_view)) - queried

    def eval_split(self, query_view: str, gallery_view: str, *,
                   extra_gallery: str | Path | None = None) -> EvalSplit:
        """``query_<query_view>/`` against ``gallery_<gallery_view>/`` (e.g. drone -> satellite, Task 1).

        Every query item's ``group`` is its building, so a protocol can pool all drone photos of one building into
        one multi-query. ``extra_gallery``: a folder of more gallery images (searched recursively, e.g. the 160k
        satellite distractor extension), added with ``place_id=None``.
        """
        check_view(query_view, allowed=IMAGE_VIEWS)
        check_view(gallery_view, allowed=IMAGE_VIEWS)
        queries = self._items(self._role("query"), query_view, group=True)
        gallery = self._items(self._role("gallery"), gallery_view, group=False)
        if extra_gallery is not None:
            gallery += _extra_items(Path(extra_gallery), gallery_view, self.root)
        return EvalSplit(
            name=f"university1652 {query_view}->{gallery_view}",
            queries=tuple(queries),
            gallery=tuple(gallery),
            source=self.root / "test",
            distractor_ids=self.distractor_ids(query_view, gallery_view),
        )

    def _role(self, role: str) -> list[Place]:
        if self.split != "test":
            raise DataError(f"{self.root}: query/gallery roles exist only in the test split (split='test')")
        return self._places[role]

    def _items(self, places: list[Place], view: str, *, group: bool) -> list[EvalItem]:
        return [
            EvalItem(key=_key(path, self.root), view=view, place_id=p.place_id, path=path, lat=p.lat, lon=p.lon,
                     group=p.place_id if group else None)
            for p in places for path in p.images.get(view, ())
        ]

    def attach_texts(self, texts: dict[str, list[str]]) -> None:
        """Attach descriptions (e.g. from GeoText-1652) to the places with those ids."""
        for key, places in self._places.items():
            self._places[key] = [
                Place(place_id=p.place_id, lat=p.lat, lon=p.lon, split=p.split, images=p.images,
                      texts=tuple(texts.get(p.place_id, p.texts)))
                for p in places
            ]

    def __len__(self) -> int:
        return sum(len(v) for v in self._places.values()) if self.split == "test" else len(self._places["all"])


def _key(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _extra_items(folder: Path, view: str, root: Path) -> list[EvalItem]:
    if not folder.is_dir():
        raise DataError(f"extra gallery folder not found: {folder}")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"extra gallery folder {folder} holds no images")
    return [EvalItem(key=_key(p, root), view=view, place_id=None, path=p) for p in paths]


# --------------------------------------------------------------------------------------------- coordinates


def read_coordinates(root: Path, building_folders: list[Path]) -> dict[str, tuple[float, float]]:
    """Building id -> (lat, lon): ``coords.csv`` wins; otherwise the release's KML files, where present."""
    coords = _read_kml_folder(root / "kml")
    for folder in building_folders:
        if not folder.is_dir():
            continue
        for building in folder.iterdir():
            if building.name in coords or not building.is_dir():
                continue
            for kml in sorted(building.glob("*.kml")):
                point = read_kml_point(kml)
                if point is not None:
                    coords[building.name] = point
                    break
    coords.update(_read_coords(root / "coords.csv"))
    return coords


def _read_kml_folder(folder: Path) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    if not folder.is_dir():
        return out
    for kml in sorted(folder.glob("*.kml")):
        building = kml.stem.removeprefix("Tour_").removeprefix("tour_")
        point = read_kml_point(kml)
        if point is not None:
            out.setdefault(building, point)
    return out


def read_kml_point(path: Path) -> tuple[float, float] | None:
    """(lat, lon) of a KML file: the first ``<latitude>``/``<longitude>`` pair (a LookAt or Camera), else the first
    ``<coordinates>lon,lat[,alt]</coordinates>``; ``None`` when it has neither. Unparsable XML is a DataError."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"unreadable KML file {path}: {exc}") from exc
    lat = lon = None
    coordinates = None
    for element in tree.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        text = (element.text or "").strip()
        if tag == "latitude" and lat is None and _NUMBER.match(text):
            lat = float(text)
        elif tag == "longitude" and lon is None and _NUMBER.match(text):
            lon = float(text)
        elif tag == "coordinates" and coordinates is None and text:
            coordinates = text
        if lat is not None and lon is not None:
            break
    if lat is None or lon is None:
        if coordinates is None:
            return None
        parts = coordinates.split()[0].split(",")
        try:
            lon, lat = float(parts[0]), float(parts[1])
        except (IndexError, ValueError) as exc:
            raise DataError(f"{path}: bad <coordinates> {coordinates[:40]!r} (expected lon,lat[,alt])") from exc
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise DataError(f"{path}: coordinates ({lat}, {lon}) out of range")
    return lat, lon


def _read_coords(path: Path) -> dict[str, tuple[float, float]]:
    """``coords.csv`` (``building_id,lat,lon``, strict UTF-8) -> building id -> (lat, lon); {} without the file."""
    if not path.is_file():
        return {}
    lines = read_lines(path)
    if not lines:
        raise DataError(f"{path}: empty file; expected a header building_id,lat,lon")
    header = next(csv.reader([lines[0][1]]))
    out = {}
    for number, text in lines[1:]:
        row = dict(zip(header, next(csv.reader([text])), strict=False))
        try:
            lat, lon = float(row["lat"]), float(row["lon"])
            building = str(row["building_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}:{number}: expected columns building_id,lat,lon ({exc})") from exc
        if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
            raise DataError(f"{path}:{number}: coordinates ({lat}, {lon}) out of range")
        out[building] = (lat, lon)
    return out


def _read_texts(path: Path) -> dict[str, tuple[str, ...]]:
    if not path.is_file():
        return {}
    return {str(r["place_id"]): tuple(r.get("texts", ())) for r in read_jsonl(path)}
