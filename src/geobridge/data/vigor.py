"""VIGOR (Zhu et al., CVPR 2021): panoramas anywhere in four US cities, satellite tiles with 50 % overlap.

Layout read here (Jeff-Zilence/VIGOR; Sample4Geo's reorganised folders are accepted too)::

    <root>/<City>/satellite/satellite_<lat>_<lon>.png     (or <root>/satellite/<City>/...)
    <root>/<City>/panorama/<pano_id>,<lat>,<lon>,.jpg    (or <root>/ground/<City>/...)
    <root>/splits/<City>/satellite_list.txt               every tile of the city (the gallery)
    <root>/splits/<City>/same_area_balanced_train.txt     panoramas of the same-area train split
    <root>/splits/<City>/same_area_balanced_test.txt      panoramas of the same-area test split
    <root>/splits/<City>/pano_label_balanced.txt          every panorama of the city (cross-area)

A label line is ``<pano> <positive tile> dy dx <semi 1> dy dx <semi 2> dy dx <semi 3> dy dx``: the positive tile
holds the panorama in its central quarter, the three semi-positive tiles hold it elsewhere; ``(dy, dx)`` is the
tile centre minus the panorama position along (north, east), in pixels of the 640-pixel tile (so the panorama lies
at row ``320 + dy``, column ``320 - dx``). Offsets in metres use each city's ground resolution
(:data:`METERS_PER_PIXEL`). Same-area: train and test panoramas from all four cities, gallery = all their tiles.
Cross-area: train on NewYork and Seattle, test on Chicago and SanFrancisco.
"""

from __future__ import annotations

import re
from pathlib import Path

from geobridge.data.evalsplit import EvalItem, EvalSplit
from geobridge.data.io import read_lines
from geobridge.data.types import Place
from geobridge.errors import DataError

CITIES = ("NewYork", "Seattle", "SanFrancisco", "Chicago")
CROSS_AREA = {"train": ("NewYork", "Seattle"), "test": ("Chicago", "SanFrancisco")}
# ground resolution of a 640-pixel VIGOR tile, metres per pixel (as used by the VIGOR metre-level evaluations)
METERS_PER_PIXEL = {"NewYork": 0.113248, "Seattle": 0.100817, "SanFrancisco": 0.118141, "Chicago": 0.111262}
SATELLITE_LIST = "satellite_list.txt"
SAME_AREA = {"train": "same_area_balanced_train.txt", "test": "same_area_balanced_test.txt"}
CROSS_AREA_FILE = "pano_label_balanced.txt"
_TILE_NAME = re.compile(r"^satellite_(-?\d+(?:\.\d+)?)_(-?\d+(?:\.\d+)?)\.\w+$")


def tile_latlon(name: str) -> tuple[float, float] | None:
    """(lat, lon) of the centre of ``satellite_<lat>_<lon>.png``; None for another name."""
    match = _TILE_NAME.match(name)
    return (float(match.group(1)), float(match.group(2))) if match else None


def pano_latlon(name: str) -> tuple[float, float] | None:
    """(lat, lon) of ``<pano_id>,<lat>,<lon>,.jpg``; None for another name."""
    parts = name.split(",")
    try:
        return float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        return None


def city_folders(root: Path, city: str) -> tuple[Path, Path]:
    """(satellite folder, panorama folder) of a city, in VIGOR's or Sample4Geo's arrangement."""
    if (root / city / "satellite").is_dir() or not (root / "satellite" / city).is_dir():
        return root / city / "satellite", root / city / "panorama"
    return root / "satellite" / city, root / "ground" / city


def read_labels(path: Path) -> list[tuple[str, tuple[str, ...], tuple[tuple[float, float], ...]]]:
    """(pano, (positive, semi1, semi2, semi3), ((dy, dx) per tile)) of each line of a VIGOR label file."""
    if not path.is_file():
        raise DataError(f"missing VIGOR split file: {path}")
    rows = []
    for number, line in read_lines(path):  # strict UTF-8, blank lines skipped
        tokens = line.split()
        if len(tokens) != 13:
            raise DataError(f"{path}:{number}: expected 13 fields (pano, then 4 x tile dy dx), got {len(tokens)}")
        try:
            deltas = tuple((float(tokens[k + 1]), float(tokens[k + 2])) for k in range(1, 13, 3))
        except ValueError as exc:
            raise DataError(f"{path}:{number}: tile offsets must be numbers ({exc})") from exc
        rows.append((tokens[0], tuple(tokens[k] for k in range(1, 13, 3)), deltas))
    return rows


def read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"missing VIGOR split file: {path}")
    return [line.split()[0] for _, line in read_lines(path)]


def offset_m(delta: tuple[float, float], city: str) -> tuple[float, float]:
    """The panorama's (east, north) offset in metres from a tile centre, from the file's (dy, dx) pixels."""
    scale = METERS_PER_PIXEL[city]
    dy, dx = delta
    return -dx * scale, -dy * scale


class VIGORDataset:
    """One VIGOR split: ``mode`` ``same`` (same-area) or ``cross`` (cross-area), ``split`` ``train`` or ``test``.

    ``places`` (train): one place per positive tile with its panoramas. :meth:`eval_split` (test): panoramas
    against every tile of the split's cities, with semi-positives and metre offsets; ``distractor_ids`` are the
    tiles that are neither a positive nor a semi-positive of any query.
    """

    def __init__(self, root: str | Path, *, mode: str = "same", split: str = "test",
                 cities: tuple[str, ...] | None = None) -> None:
        self.root = Path(root)
        if mode not in ("same", "cross"):
            raise ValueError(f"mode must be 'same' or 'cross', got {mode!r}")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.mode, self.split = mode, split
        self.cities = cities or (CITIES if mode == "same" else CROSS_AREA[split])
        unknown = [c for c in self.cities if c not in METERS_PER_PIXEL]
        if unknown:
            raise ValueError(f"unknown VIGOR cities {unknown}; expected some of {CITIES}")
        label_name = SAME_AREA[split] if mode == "same" else CROSS_AREA_FILE
        self.tiles: dict[str, list[Path]] = {}
        self.labels: dict[str, list[tuple[str, tuple[str, ...], tuple[tuple[float, float], ...]]]] = {}
        self.pano_folders: dict[str, Path] = {}
        for city in self.cities:
            sat_folder, pano_folder = city_folders(self.root, city)
            splits = self.root / "splits" / city
            self.tiles[city] = [sat_folder / name for name in read_list(splits / SATELLITE_LIST)]
            self.labels[city] = read_labels(splits / label_name)
            self.pano_folders[city] = pano_folder
            listed = {p.name for p in self.tiles[city]}
            for pano, tiles, _ in self.labels[city]:
                absent = [t for t in tiles if t not in listed]
                if absent:
                    raise DataError(f"{splits / label_name}: panorama {pano} names tiles not in "
                                    f"{SATELLITE_LIST}: {absent}")

    def _tile_key(self, city: str, name: str) -> str:
        return f"{city}/{name}"

    @property
    def places(self) -> list[Place]:
        """One place per positive tile: its tile and the panoramas whose positive it is (VIGOR's training pairs)."""
        places = []
        for city in self.cities:
            sat_folder = self.tiles[city][0].parent if self.tiles[city] else city_folders(self.root, city)[0]
            panos: dict[str, list[Path]] = {}
            for pano, tiles, _ in self.labels[city]:
                panos.setdefault(tiles[0], []).append(self.pano_folders[city] / pano)
            for tile in sorted(panos):
                lat, lon = tile_latlon(tile) or (None, None)
                places.append(Place(place_id=self._tile_key(city, tile), lat=lat, lon=lon, split=self.split,
                                    country=city, images={"satellite": (sat_folder / tile,),
                                                          "street": tuple(panos[tile])}))
        return places

    def eval_split(self, query_view: str = "street", gallery_view: str = "satellite") -> EvalSplit:
        if (query_view, gallery_view) != ("street", "satellite"):
            raise ValueError(f"VIGOR retrieves street->satellite; got {query_view}->{gallery_view}")
        queries, gallery, semi = [], [], {}
        positives = set()
        for city in self.cities:
            for pano, tiles, deltas in self.labels[city]:
                key = f"{city}/{pano}"
                place = self._tile_key(city, tiles[0])
                positives.add(place)
                lat, lon = pano_latlon(pano) or (None, None)
                queries.append(EvalItem(key=key, view="street", place_id=place, path=self.pano_folders[city] / pano,
                                        lat=lat, lon=lon, offset_m=offset_m(deltas[0], city)))
                semi[key] = tuple(self._tile_key(city, t) for t in tiles[1:])
            for path in self.tiles[city]:
                lat, lon = tile_latlon(path.name) or (None, None)
                key = self._tile_key(city, path.name)
                gallery.append(EvalItem(key=key, view="satellite", place_id=key, path=path, lat=lat, lon=lon))
        near = positives | {key for keys in semi.values() for key in keys}
        distractors = frozenset(item.place_id for item in gallery if item.place_id not in near)
        return EvalSplit(name=f"vigor-{self.mode} street->satellite", queries=tuple(queries), gallery=tuple(gallery),
                         semi_positives=semi, source=self.root / "splits", distractor_ids=distractors)
