"""``geobridge data check`` for the published layouts: University-1652, GeoText-1652, CVUSA, CVACT and VIGOR.

Each checker adds every problem it finds to a report (``report.add(kind, path, message)``), never stopping at
the first; the GeoLoc layout is checked in :mod:`geobridge.data.check`, which dispatches here by format.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from geobridge.data.io import IMAGE_SUFFIXES, load_image, scan_images
from geobridge.errors import DataError
from geobridge.views import IMAGE_VIEWS

MAX_LISTED = 20  # per kind of problem and file; the rest are counted in one more line


class Report(Protocol):
    stats: dict[str, Any]

    def add(self, kind: str, path: Path | str, message: str) -> None: ...


def detect_format(root: Path) -> str:
    """The layout of a dataset folder, from its tell-tale files; ``unknown`` when none fits."""
    from geobridge.data.cvact import MAT_FILE
    from geobridge.data.cvusa import SPLIT_FILES
    from geobridge.data.geotext1652 import TEST_JSONS, TRAIN_JSON
    from geobridge.data.vigor import CITIES

    if (root / "manifest.json").is_file() or (root / "places.jsonl").is_file():
        return "geoloc"
    if (root / MAT_FILE).is_file():
        return "cvact"
    if any((root / f).is_file() for f in SPLIT_FILES.values()):
        return "cvusa"
    if any((root / "splits" / c).is_dir() for c in CITIES):
        return "vigor"
    if any((root / n).is_file() for n in (TRAIN_JSON, *TEST_JSONS)):
        return "geotext1652"
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "university1652"
    return "unknown"


def check_layout(root: Path, fmt: str, report: Report, *, show_progress_bar: bool | None = None) -> None:
    """Run the checker of ``fmt`` on ``root``; every image found is decoded."""
    checkers: dict[str, Callable[[Path, Report], list[Path]]] = {
        "university1652": check_university1652,
        "geotext1652": check_geotext1652,
        "cvusa": check_cvusa,
        "cvact": check_cvact,
        "vigor": check_vigor,
    }
    if fmt not in checkers:
        raise ValueError(f"no layout checker for {fmt!r}; expected one of {', '.join(checkers)}")
    images = checkers[fmt](root, report)
    decode_images(images, report, show_progress_bar=show_progress_bar)
    report.stats["images"] = len(images)


def decode_images(images: list[Path], report: Report, *, show_progress_bar: bool | None = None) -> None:
    from tqdm.auto import tqdm

    for path in tqdm(images, desc="decode images", unit="img", disable=show_progress_bar is False):
        try:
            load_image(path)
        except DataError as exc:
            report.add("unreadable-image", path, str(exc))


def _missing(report: Report, where: Path | str, paths: list[str], what: str) -> None:
    for path in paths[:MAX_LISTED]:
        report.add("missing-image", where, f"{what} {path} is listed but not on disk")
    if len(paths) > MAX_LISTED:
        report.add("missing-image", where, f"... and {len(paths) - MAX_LISTED} more missing {what} files")


# --------------------------------------------------------------------------------------------- University-1652


def check_university1652(root: Path, report: Report) -> list[Path]:
    from geobridge.data.university1652 import TEST_FOLDERS, TRAIN_FOLDERS, read_coordinates

    images: list[Path] = []
    if not (root / "train").is_dir() and not (root / "test").is_dir():
        report.add("wrong-layout", root, "neither train/ nor test/ (expected train/<view>/<id>/, "
                                         "test/query_<view>/<id>/, test/gallery_<view>/<id>/)")
        return images
    ids: dict[str, set[str]] = {}
    for split, expected in (("train", TRAIN_FOLDERS), ("test", TEST_FOLDERS)):
        base = root / split
        if not base.is_dir():
            continue
        present = {p.name for p in base.iterdir() if p.is_dir()}
        if not present & set(expected):
            report.add("wrong-layout", base, f"none of the expected folders ({', '.join(expected)})")
        for name in sorted(present - set(expected)):
            if split == "test" and name.startswith(("query_", "gallery_", "4K_")):
                continue  # extensions such as the 160k satellite distractors or 4K drone images
            report.add("wrong-layout", base / name, f"unexpected folder; {split}/ holds {', '.join(expected)}")
        for name in sorted(present & set(expected)):
            folder = base / name
            ids[f"{split}/{name}"] = set()
            for building in sorted(p for p in folder.iterdir() if p.is_dir()):
                files, bad = scan_images(building)
                for path, reason in bad:
                    report.add("bad-entry", path, reason)
                if not files and not bad:
                    report.add("missing-image", building, "no images in this building folder")
                ids[f"{split}/{name}"].add(building.name)
                images.extend(files)
            for stray in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
                report.add("wrong-layout", stray, "image directly under a view folder; expected <view>/<id>/<image>")
    # every query must have a positive in the gallery it is ranked against
    for query_view, gallery_view in (("drone", "satellite"), ("satellite", "drone"), ("street", "satellite")):
        queries, gallery = ids.get(f"test/query_{query_view}"), ids.get(f"test/gallery_{gallery_view}")
        if queries is None or gallery is None:
            continue
        for building in sorted(queries - gallery)[:MAX_LISTED]:
            report.add("no-positive", root / "test" / f"query_{query_view}" / building,
                       f"query building {building!r} has no folder in test/gallery_{gallery_view}/")
    if "test/gallery_satellite" in ids:
        queried = set().union(*(ids.get(f"test/query_{v}", set()) for v in IMAGE_VIEWS))
        report.stats["distractor_buildings"] = len(ids["test/gallery_satellite"] - queried)
    try:
        coords = read_coordinates(root, [])
    except DataError as exc:  # names the bad coords.csv line or KML file
        report.add("bad-coordinates", root, str(exc))
    else:
        for building, (lat, lon) in coords.items():
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                report.add("bad-coordinates", root / "coords.csv", f"{building}: ({lat}, {lon}) out of range")
    report.stats["buildings"] = {k: len(v) for k, v in sorted(ids.items())}
    return images


# --------------------------------------------------------------------------------------------- GeoText-1652


def check_geotext1652(root: Path, report: Report) -> list[Path]:
    from geobridge.data.geotext1652 import TEST_JSONS, TRAIN_JSON, read_geotext_json

    images: list[Path] = []
    names = [n for n in (TRAIN_JSON, *TEST_JSONS) if (root / n).is_file()]
    if TRAIN_JSON not in names:
        report.add("missing-split-file", root / TRAIN_JSON, "train.json is missing")
    if not any(n in names for n in TEST_JSONS):
        report.add("missing-split-file", root / TEST_JSONS[0], f"no test JSON ({', '.join(TEST_JSONS)})")
    counts = {}
    for name in names:
        try:
            entries = read_geotext_json(root / name, root=root)
        except DataError as exc:
            report.add("bad-json", root / name, str(exc))
            continue
        _missing(report, root / name, sorted({e.image for e in entries if e.path is None}), "image")
        images.extend(e.path for e in entries if e.path is not None)
        counts[name] = {"entries": len(entries), "captions": sum(len(e.captions) for e in entries),
                        "regions": sum(len(e.grounding) for e in entries)}
    report.stats["files"] = counts
    return sorted(set(images))


# --------------------------------------------------------------------------------------------- CVUSA


def check_cvusa(root: Path, report: Report) -> list[Path]:
    from geobridge.data.cvusa import SPLIT_FILES, read_pairs

    images: list[Path] = []
    for split, name in SPLIT_FILES.items():
        path = root / name
        if not path.is_file():
            report.add("missing-split-file", path, f"the CVUSA {split} split file is missing")
            continue
        try:
            pairs = read_pairs(path)
        except DataError as exc:
            report.add("bad-record", path, str(exc))
            continue
        listed = [root / p for pair in pairs for p in pair]
        _missing(report, path, [str(p.relative_to(root)) for p in listed if not p.is_file()], "image")
        images.extend(p for p in listed if p.is_file())
        report.stats[split] = len(pairs)
    return images


# --------------------------------------------------------------------------------------------- CVACT


def check_cvact(root: Path, report: Report) -> list[Path]:
    from geobridge.data.cvact import MAT_FILE, SATELLITE_SUFFIX, SPLITS, STREET_SUFFIX, image_folder, read_act_mat

    path = root / MAT_FILE
    try:
        mat = read_act_mat(path)
    except DataError as exc:
        report.add("unreadable-mat" if path.is_file() else "missing-file", path, str(exc))
        return []
    images: list[Path] = []
    for split, (struct, field) in SPLITS.items():
        if split not in mat:
            if split != "test":
                report.add("missing-split", path, f"no {struct}.{field} (the {split} split)")
            continue
        folder = image_folder(root, split)
        if split == "test" and folder.name != "ANU_data_test":
            continue  # CVACT_test is a separate download; its absence is not a problem
        for sub in ("streetview", "satview_polish"):
            if not (folder / sub).is_dir():
                report.add("wrong-layout", folder / sub, f"missing folder for the {split} split")
        ids = [mat["panoIds"][int(k)] for k in mat[split]]
        listed = [folder / "streetview" / f"{i}{STREET_SUFFIX}" for i in ids]
        listed += [folder / "satview_polish" / f"{i}{SATELLITE_SUFFIX}" for i in ids]
        _missing(report, path, [str(p.relative_to(root)) for p in listed if not p.is_file()], f"{split} image")
        images.extend(p for p in listed if p.is_file())
        report.stats[split] = len(ids)
    report.stats["coordinates"] = mat["utm"] is not None
    return sorted(set(images))


# --------------------------------------------------------------------------------------------- VIGOR


def check_vigor(root: Path, report: Report) -> list[Path]:
    from geobridge.data.vigor import (
        CITIES,
        CROSS_AREA_FILE,
        SAME_AREA,
        SATELLITE_LIST,
        city_folders,
        pano_latlon,
        read_labels,
        read_list,
        tile_latlon,
    )

    images: list[Path] = []
    splits = root / "splits"
    if not splits.is_dir():
        report.add("missing-split-file", splits, "no splits/ folder (expected splits/<City>/satellite_list.txt, ...)")
        return images
    present = sorted(p.name for p in splits.iterdir() if p.is_dir())
    for name in present:
        if name not in CITIES:
            report.add("wrong-layout", splits / name, f"unknown city folder; VIGOR's cities are {', '.join(CITIES)}")
    cities = [c for c in CITIES if c in present]
    if not cities:
        report.add("wrong-layout", splits, f"no city folder ({', '.join(CITIES)})")
    for city in cities:
        sat_folder, pano_folder = city_folders(root, city)
        for folder in (sat_folder, pano_folder):
            if not folder.is_dir():
                report.add("wrong-layout", folder, f"missing image folder of {city}")
        try:
            tiles = read_list(splits / city / SATELLITE_LIST)
        except DataError as exc:
            report.add("missing-split-file", splits / city / SATELLITE_LIST, str(exc))
            continue
        bad_names = [t for t in tiles if tile_latlon(t) is None]
        for tile in bad_names[:MAX_LISTED]:
            report.add("bad-record", splits / city / SATELLITE_LIST, f"{tile}: not satellite_<lat>_<lon>.<ext>")
        _missing(report, splits / city / SATELLITE_LIST, [t for t in tiles if not (sat_folder / t).is_file()],
                 "tile")
        images.extend(sat_folder / t for t in tiles if (sat_folder / t).is_file())
        listed = set(tiles)
        panos: set[str] = set()
        for name in (*SAME_AREA.values(), CROSS_AREA_FILE):
            path = splits / city / name
            try:
                rows = read_labels(path)
            except DataError as exc:
                report.add("missing-split-file" if not path.is_file() else "bad-record", path, str(exc))
                continue
            for pano, row_tiles, _ in rows:
                unknown = [t for t in row_tiles if t not in listed]
                if unknown:
                    report.add("unknown-id", path, f"{pano}: tiles not in {SATELLITE_LIST}: {unknown}")
                if pano_latlon(pano) is None:
                    report.add("bad-record", path, f"{pano}: not <pano_id>,<lat>,<lon>,.<ext>")
                panos.add(pano)
            report.stats[f"{city}/{name}"] = len(rows)
        _missing(report, pano_folder, sorted(p for p in panos if not (pano_folder / p).is_file()), "panorama")
        images.extend(pano_folder / p for p in sorted(panos) if (pano_folder / p).is_file())
        report.stats[f"{city}/tiles"] = len(tiles)
    return images
