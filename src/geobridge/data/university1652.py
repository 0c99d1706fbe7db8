"""The published University-1652 layout, with optional coords.csv and texts.jsonl side files."""

from __future__ import annotations

import csv
from pathlib import Path

from geobridge.data.io import list_images, read_jsonl
from geobridge.data.types import Place, Sample, samples_of
from geobridge.errors import DataError
from geobridge.views import IMAGE_VIEWS

ROLES = ("query", "gallery")


class University1652Dataset:
    """``train/{drone,satellite,street}/<id>/`` or ``test/{query,gallery}_{view}/<id>/``.

    For ``split="train"`` ``places`` holds every building with all its views. For ``split="test"`` the query
    and gallery folders are separate place lists: ``places_for(role)``, ``samples(view, role=...)``.
    """

    def __init__(self, root: str | Path, *, split: str = "train") -> None:
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
        self.coords = _read_coords(self.root / "coords.csv")
        self.texts = _read_texts(self.root / "texts.jsonl")
        if split == "train":
            folders = {view: base / view for view in IMAGE_VIEWS}
            if not any(f.is_dir() for f in folders.values()):
                raise DataError(f"{base} has none of the folders drone/, satellite/, street/")
            self._places = {"all": self._collect(folders)}
        else:
            self._places = {
                role: self._collect({view: base / f"{role}_{view}" for view in IMAGE_VIEWS}) for role in ROLES
            }
            if not any(self._places.values()):
                raise DataError(f"{base} has no query_<view>/ or gallery_<view>/ folders")

    def _collect(self, folders: dict[str, Path]) -> list[Place]:
        ids = sorted({p.name for f in folders.values() if f.is_dir() for p in f.iterdir() if p.is_dir()})
        places = []
        for place_id in ids:
            lat, lon = self.coords.get(place_id, (None, None))
            images = {v: list_images(f / place_id) for v, f in folders.items()}
            places.append(
                Place(place_id=place_id, lat=lat, lon=lon, split=self.split, texts=self.texts.get(place_id, ()),
                      images={v: p for v, p in images.items() if p})
            )
        return places

    @property
    def places(self) -> list[Place]:
        if self.split == "train":
            return self._places["all"]
        return self.merged_places()

    def merged_places(self) -> list[Place]:
        """Test split: query and gallery images of each building merged into one place."""
        merged: dict[str, Place] = {}
        for role in ROLES:
            for place in self._places[role]:
                old = merged.get(place.place_id)
                if old is None:
                    merged[place.place_id] = place
                else:
                    images = {v: old.images.get(v, ()) + place.images.get(v, ()) for v in IMAGE_VIEWS}
                    merged[place.place_id] = Place(
                        place_id=old.place_id, lat=old.lat, lon=old.lon, split=old.split, texts=old.texts,
                        images={v: p for v, p in images.items() if p},
                    )
        return [merged[k] for k in sorted(merged)]

    def places_for(self, role: str) -> list[Place]:
        if self.split == "train":
            return self._places["all"]
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        return self._places[role]

    def samples(self, view: str, *, role: str = "gallery") -> list[Sample]:
        return samples_of(self.places_for(role), view)

    def attach_texts(self, texts: dict[str, list[str]]) -> None:
        """Attach descriptions (e.g. from GeoText-1652) to the places with those ids."""
        for key, places in self._places.items():
            self._places[key] = [
                Place(place_id=p.place_id, lat=p.lat, lon=p.lon, split=p.split, images=p.images,
                      texts=tuple(texts.get(p.place_id, p.texts)))
                for p in places
            ]

    def __len__(self) -> int:
        return len(self.places)


def _read_coords(path: Path) -> dict[str, tuple[float, float]]:
    if not path.is_file():
        return {}
    out = {}
    with open(path, newline="") as fh:
        for number, row in enumerate(csv.DictReader(fh), start=2):
            try:
                out[str(row["building_id"])] = (float(row["lat"]), float(row["lon"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{path}:{number}: expected columns building_id,lat,lon ({exc})") from exc
    return out


def _read_texts(path: Path) -> dict[str, tuple[str, ...]]:
    if not path.is_file():
        return {}
    return {str(r["place_id"]): tuple(r.get("texts", ())) for r in read_jsonl(path)}
