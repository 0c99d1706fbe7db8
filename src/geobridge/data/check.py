"""``check_dataset``: find every problem in a dataset folder, never stopping at the first."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from geobridge.data.geoloc import country_bboxes, manifest_problems, place_problem
from geobridge.data.io import (
    decode_line,
    load_image,
    parse_jsonl_line,
    raw_lines,
    read_json,
    scan_images,
)
from geobridge.errors import DataError
from geobridge.views import IMAGE_VIEWS, VIEWS

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Problem:
    # e.g. missing-file, bad-json, bad-entry (not a regular readable file), duplicate-id, missing-view,
    # missing-image, unreadable-image, unknown-id, bad-coordinates
    kind: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


@dataclass
class CheckReport:
    root: str
    layout: str  # "geoloc", a published layout (geobridge.data.layouts.FORMATS) or "unknown"
    problems: list[Problem] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, path: Path | str, message: str) -> None:
        self.problems.append(Problem(kind, str(path), message))

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "layout": self.layout,
            "ok": self.ok,
            "stats": self.stats,
            "problems": [vars(p) for p in self.problems],
        }


def detect_layout(root: Path) -> str:
    from geobridge.data.check_layouts import detect_format

    return detect_format(root)


def check_dataset(root: str | Path, *, fmt: str | None = None, show_progress_bar: bool | None = None) -> CheckReport:
    """Validate a dataset folder in layout ``fmt`` (default: detected); every problem found is in the report."""
    root = Path(root)
    report = CheckReport(root=str(root), layout="unknown")
    if not root.exists():
        report.add("missing-root", root, "no such folder")
        return report
    if not root.is_dir():
        report.add("not-a-folder", root, "expected a dataset folder, got a file")
        return report
    report.layout = fmt or detect_layout(root)
    if report.layout == "geoloc":
        _check_geoloc(root, report, show_progress_bar)
    elif report.layout != "unknown":
        from geobridge.data.check_layouts import check_layout

        check_layout(root, report.layout, report, show_progress_bar=show_progress_bar)
    else:
        report.add(
            "unknown-layout",
            root,
            "not a GeoLoc-format dataset (manifest.json, places.jsonl, texts.jsonl, <view>/<place_id>/) nor a "
            "University-1652, GeoText-1652, CVUSA, CVACT or VIGOR folder; name one with --format; "
            "see docs/data-format.md",
        )
    return report


def _load_jsonl(path: Path, report: CheckReport) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each good line; every undecodable or bad line is a problem (as the loader's)."""
    try:
        lines = raw_lines(path)
    except DataError as exc:
        report.add("unreadable-file", path, str(exc))
        return []
    rows = []
    for number, raw in lines:
        where = f"{path}:{number}"
        try:
            line = decode_line(raw, where=where)
        except DataError as exc:
            report.add("bad-encoding", where, str(exc).removeprefix(f"{where}: "))
            continue
        try:
            rows.append((number, parse_jsonl_line(line, where=where)))
        except DataError as exc:
            report.add("bad-json", where, str(exc).removeprefix(f"{where}: "))
    return rows


def _check_geoloc_manifest(root: Path, report: CheckReport) -> dict[str, Any]:
    """The manifest (``{}`` if missing or not an object), with a ``bad-manifest`` problem for each bad key."""
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        report.add("missing-file", manifest_path, "manifest.json is missing")
        return {}
    try:
        manifest = read_json(manifest_path)
    except DataError as exc:
        report.add("bad-json", manifest_path, str(exc))
        return {}
    for problem in manifest_problems(manifest):
        kind = "wrong-format" if problem.startswith("format:") else "bad-manifest"
        report.add(kind, manifest_path, problem)
    return manifest if isinstance(manifest, dict) else {}


def _check_geoloc(root: Path, report: CheckReport, show_progress_bar: bool | None) -> None:
    manifest = _check_geoloc_manifest(root, report)
    listed = manifest.get("views", VIEWS)
    views = [v for v in listed if v in VIEWS] if isinstance(listed, list) else []  # a bad list is reported above
    bboxes = country_bboxes(manifest)

    places_path = root / "places.jsonl"
    rows = _load_jsonl(places_path, report) if places_path.is_file() else []
    if not places_path.is_file():
        report.add("missing-file", places_path, "places.jsonl is missing")
    ids: set[str] = set()
    for number, row in rows:
        where = f"{places_path}:{number}"
        place_id = row.get("place_id")
        if not isinstance(place_id, str) or not place_id:
            report.add("bad-record", where, "missing place_id")
            continue
        problem = place_problem(row)
        if problem and problem.startswith("place_id:"):  # not usable as a folder name
            report.add("bad-record", where, problem)
            continue
        if problem and not problem.startswith(("lat:", "lon:")):  # coordinates get their own kind below
            report.add("bad-record", where, problem)
        if place_id in ids:
            report.add("duplicate-id", where, f"place_id {place_id!r} appears twice")
        ids.add(place_id)
        _check_coordinates(row, where, bboxes, report)
        if row.get("split") not in SPLITS:
            report.add("bad-split", where, f"split {row.get('split')!r} is not one of {SPLITS}")

    if "text" in views:
        texts_path = root / "texts.jsonl"
        if not texts_path.is_file():
            report.add("missing-file", texts_path, "texts.jsonl is missing but the manifest lists the text view")
        else:
            with_text = set()
            for number, row in _load_jsonl(texts_path, report):
                pid = row.get("place_id")
                texts = row.get("texts")
                if not isinstance(pid, str) or pid not in ids:
                    report.add("unknown-id", f"{texts_path}:{number}", f"place_id {pid!r} is not in places.jsonl")
                    continue
                if isinstance(texts, list) and not all(isinstance(t, str) for t in texts):
                    report.add("bad-record", f"{texts_path}:{number}", f"texts of {pid!r} must be strings")
                elif not isinstance(texts, list) or not [t for t in texts if t.strip()]:
                    report.add("empty-text", f"{texts_path}:{number}", f"no descriptions for {pid!r}")
                else:
                    with_text.add(pid)
            for pid in sorted(ids - with_text):
                report.add("missing-view", texts_path, f"place {pid!r} has no text description")

    images: list[Path] = []
    drone_views = manifest.get("drone_views")  # optional; written by geobridge synth; a bad value is reported above
    expected_drone = drone_views if isinstance(drone_views, int) and not isinstance(drone_views, bool) else 0
    for view in (v for v in IMAGE_VIEWS if v in views):
        folder = root / view
        if not folder.is_dir():
            report.add("missing-view", folder, f"the manifest lists {view!r} but the folder is missing")
            continue
        present = {p.name for p in folder.iterdir() if p.is_dir()}
        for unknown in sorted(present - ids):
            report.add("unknown-id", folder / unknown, f"folder for place {unknown!r}, which is not in places.jsonl")
        for pid in sorted(ids):
            files, bad = scan_images(folder / pid)
            for path, reason in bad:
                report.add("bad-entry", path, reason)
            if not files and not bad:
                report.add("missing-view", folder / pid, f"place {pid!r} has no {view} image")
            elif view == "drone" and len(files) < expected_drone:
                report.add(
                    "missing-image", folder / pid,
                    f"place {pid!r} has {len(files)} drone images, the manifest says drone_views={expected_drone}",
                )
            images.extend(files)
    _check_images(images, report, show_progress_bar)
    report.stats.update({"places": len(ids), "images": len(images), "views": views})


def _check_coordinates(row: dict[str, Any], where: str, bboxes: dict[str, Any], report: CheckReport) -> None:
    lat, lon = row.get("lat"), row.get("lon")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lat, lon)):
        report.add("bad-coordinates", where, f"lat/lon missing or not numbers: {lat!r}, {lon!r}")
        return
    lat, lon = float(lat), float(lon)  # type: ignore[arg-type]
    if not (math.isfinite(lat) and math.isfinite(lon)) or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        report.add("bad-coordinates", where, f"lat {lat}, lon {lon} out of range ([-90, 90], [-180, 180])")
        return
    country = row.get("country")
    bbox = bboxes.get(country) if isinstance(country, str) else None
    if bbox:
        lat_min, lat_max, lon_min, lon_max = bbox
        if not (lat_min <= lat <= lat_max and lon_min <= lon <= lon_max):
            report.add("bad-coordinates", where, f"({lat}, {lon}) lies outside the bbox of {row.get('country')}")


def _check_images(images: list[Path], report: CheckReport, show_progress_bar: bool | None) -> None:
    for path in tqdm(images, desc="decode images", unit="img", disable=show_progress_bar is False):
        try:
            load_image(path)
        except DataError as exc:
            report.add("unreadable-image", path, str(exc))
