"""Write a synthetic world in a published benchmark's layout: University-1652, GeoText-1652, CVUSA, CVACT, VIGOR.

The places, seeds and renderer are those of the GeoLoc writer (:mod:`geobridge.synth.writer`); only where the files
go differs. Test places are split into *query* places and *distractor* places (``WorldConfig.distractor_fraction``):
University-1652 and GeoText-1652 write a distractor building to the gallery folders only, VIGOR writes its tiles
without a panorama. docs/data-format.md describes each layout; the loaders in :mod:`geobridge.data` read them back.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from geobridge.data.vigor import METERS_PER_PIXEL
from geobridge.errors import GeoBridgeError
from geobridge.synth.writer import (
    MARKER,
    PlaceSpec,
    WorldConfig,
    WorldSummary,
    _marker,
    _save_png,
    _write_text_atomic,
    default_workers,
    place_seed,
    plan_places,
    render_place,
)

LAYOUTS: tuple[str, ...] = ("university1652", "geotext1652", "cvusa", "cvact", "vigor")
VIGOR_CITIES = ("NewYork", "Seattle", "SanFrancisco", "Chicago")
CVACT_ORIGIN_UTM = (693000.0, 6090000.0)  # Canberra, UTM zone 55 south: where the synthetic CVACT grid starts
CVACT_SPACING_M = 120.0
_COMPASS = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")


@dataclass(frozen=True)
class LayoutJob:
    """One place to write: its spec, its role (``train``, ``query`` or ``distractor``) and a layout index."""

    spec: PlaceSpec
    role: str
    number: int  # position among the world's places (CVUSA/CVACT ids, VIGOR city, CVACT grid cell)


def assign_roles(specs: list[PlaceSpec], fraction: float) -> list[LayoutJob]:
    """Train places stay ``train``; the last ``round(fraction * n_test)`` test places become distractors (at least
    one test place stays a query)."""
    test = [s.index for s in specs if s.split == "test"]
    n_distractors = min(int(round(fraction * len(test))), max(0, len(test) - 1))
    distractors = set(test[len(test) - n_distractors:]) if n_distractors else set()
    return [
        LayoutJob(spec=s, role="train" if s.split != "test" else ("distractor" if s.index in distractors else "query"),
                  number=k)
        for k, s in enumerate(specs)
    ]


# --------------------------------------------------------------------------------------------- rendering


def _ground_pair(spec: PlaceSpec, config: WorldConfig, *, sat_size: int,
                 max_street_m: float | None = None) -> tuple[np.ndarray, np.ndarray, Any]:
    """The satellite tile (sat_size^2) and street panorama of a place, from the place's own seeds (no drone views).

    ``max_street_m``: move the panorama's point, if it lies farther, to at most this many metres east/west and
    north/south of the scene centre (VIGOR needs its four tiles inside the render)."""
    from geobridge.synth.countries import get_country
    from geobridge.synth.render import light_scene, render_satellite, render_street
    from geobridge.synth.scene import build_scene

    seeds = place_seed(config.seed, spec.index).spawn(4)
    scene = build_scene(get_country(spec.country), np.random.default_rng(seeds[1]))
    if max_street_m is not None:
        x, y = scene.street_xy
        clipped = (float(np.clip(x, -max_street_m, max_street_m)), float(np.clip(y, -max_street_m, max_street_m)))
        if clipped != (x, y):
            scene = replace(scene, street_xy=clipped)
    lighting = light_scene(scene)
    rng = np.random.default_rng(seeds[2])
    satellite = render_satellite(scene, lighting, size=sat_size, rng=rng)
    street = render_street(scene, lighting, size=config.image_size, rng=rng)
    shift = config.appearance()
    if shift.applies_to("satellite"):
        satellite = shift.apply(satellite)
    if shift.applies_to("street"):
        street = shift.apply(street)
    return satellite, street, scene


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write(img: np.ndarray, paths: list[Path], *, jpeg: bool = False) -> int:
    """Save ``img`` at the first path (PNG, or JPEG at quality 95 where the release's names say .jpg) and link the
    others to it."""
    if jpeg:
        from PIL import Image

        paths[0].parent.mkdir(parents=True, exist_ok=True)
        tmp = paths[0].with_name(f".{paths[0].name}.tmp")
        Image.fromarray(img).save(tmp, format="JPEG", quality=95)
        os.replace(tmp, paths[0])
    else:
        _save_png(img, paths[0])
    for extra in paths[1:]:
        _link(paths[0], extra)
    return 1


def _record(job: LayoutJob, **extra: Any) -> dict[str, Any]:
    spec = job.spec
    return {"place_id": spec.place_id, "country": spec.country, "lat": spec.lat, "lon": spec.lon,
            "split": spec.split, "role": job.role, **extra}


# --------------------------------------------------------------------------------------------- University-1652


def u1652_names(place_id: str, n_drone: int) -> dict[str, list[str]]:
    """File names as in the release: drone ``image-NN``, satellite ``<building>``, street anything else."""
    return {"drone": [f"image-{k + 1:02d}.png" for k in range(n_drone)], "satellite": [f"{place_id}.png"],
            "street": ["street-0.png"]}


def _u1652_place(job: LayoutJob, config: WorldConfig, root: Path) -> dict[str, Any]:
    views = render_place(job.spec, config)
    pid = job.spec.place_id
    names = u1652_names(pid, len(views.images["drone"]))
    count = 0
    for view, imgs in views.images.items():
        if job.role == "train":
            folders = [root / "train" / view / pid]
        elif job.role == "query":
            folders = [root / "test" / f"{role}_{view}" / pid for role in ("query", "gallery")]
        else:
            folders = [root / "test" / f"gallery_{view}" / pid]
        for img, name in zip(imgs, names[view], strict=True):
            count += _write(img, [folder / name for folder in folders])
    return {"record": _record(job, terrain=views.scene.terrain), "texts": views.texts, "images": count}


# --------------------------------------------------------------------------------------------- GeoText-1652


def _compass(heading: float) -> str:
    return _COMPASS[int(((heading % 360.0) + 22.5) // 45.0) % 8]


def geotext_folder(role: str, n_query: int, n_distractor: int) -> str:
    return {"train": "train", "query": f"test/query({n_query})",
            "distractor": f"test/gallery_no_train({n_distractor})"}[role]


def _geotext_place(job: LayoutJob, config: WorldConfig, root: Path, folders: dict[str, str]) -> dict[str, Any]:
    views = render_place(job.spec, config)
    pid = job.spec.place_id
    names = u1652_names(pid, len(views.images["drone"]))
    entries = []
    count = 0
    for view, imgs in views.images.items():
        for k, (img, name) in enumerate(zip(imgs, names[view], strict=True)):
            image = f"{folders[job.role]}/{pid}/{name}"
            count += _write(img, [root / image])
            if view == "drone":  # a per-image cue: where the drone looks from
                side = f"Seen from the {_compass(views.drone_headings[k] + 180.0)}."
                captions = [f"{side} {t}" for t in views.texts]
            else:
                captions = [f"A {view} view. {t}" for t in views.texts]
            regions = [r.strip() for r in re.split(r"(?<=[.!?])\s+", views.texts[0]) if r.strip()]
            bboxes = [[0.5, 0.5, 0.4, 0.4]] + [None] * (len(regions) - 1)
            entries.append({"image_id": f"{pid}/{name}", "image": image, "captions": captions,
                            "sentences": regions, "bboxes": bboxes})
    return {"record": _record(job), "texts": views.texts, "images": count, "entries": entries}


# --------------------------------------------------------------------------------------------- CVUSA / CVACT


def cvusa_id(job: LayoutJob) -> str:
    return f"{job.number + 1:07d}"


def _cvusa_place(job: LayoutJob, config: WorldConfig, root: Path) -> dict[str, Any]:
    satellite, street, _ = _ground_pair(job.spec, config, sat_size=config.image_size)
    pid = cvusa_id(job)
    sat, pano = f"bingmap/19/{pid}.png", f"streetview/panos/{pid}.png"
    _write(satellite, [root / sat])
    _write(street, [root / pano])
    return {"record": _record(job, cvusa_id=pid), "line": f"{sat},{pano},streetview/annotations/{pid}.png",
            "images": 2}


def cvact_id(job: LayoutJob) -> str:
    return f"synth{job.number:06d}act"


def cvact_utm(job: LayoutJob, width: int) -> tuple[float, float]:
    row, col = divmod(job.number, width)
    return CVACT_ORIGIN_UTM[0] + col * CVACT_SPACING_M, CVACT_ORIGIN_UTM[1] + row * CVACT_SPACING_M


def _cvact_place(job: LayoutJob, config: WorldConfig, root: Path) -> dict[str, Any]:
    satellite, street, _ = _ground_pair(job.spec, config, sat_size=config.image_size)
    pid = cvact_id(job)
    folders = ["ANU_data_small"] if job.role == "train" else ["ANU_data_small", "ANU_data_test"]
    if job.role == "distractor":  # CVACT_test only: not in the val split
        folders = ["ANU_data_test"]
    _write(street, [root / f / "streetview" / f"{pid}_grdView.jpg" for f in folders], jpeg=True)
    _write(satellite, [root / f / "satview_polish" / f"{pid}_satView_polish.jpg" for f in folders], jpeg=True)
    return {"record": _record(job, pano_id=pid), "images": 2}


# --------------------------------------------------------------------------------------------- VIGOR


def _vigor_tiles(size: int, pano_px: tuple[float, float], rng: np.random.Generator) -> list[tuple[int, int]]:
    """Origins (row, col) in a (2 size)^2 image of the positive tile (the panorama in its central half along both
    axes) and of the three semi-positive tiles, half a tile away on VIGOR's grid, all inside the image."""
    half, big = size // 2, 2 * size
    origins = []
    for p in pano_px:
        choices = []
        for origin in range(0, big - size + 1):
            local = p - origin
            if not size / 4 <= local <= 3 * size / 4 or abs(local - half) < 1:
                continue
            step = -half if local < half else half
            if 0 <= origin + step <= big - size:
                choices.append((origin, step))
        if not choices:
            raise GeoBridgeError(f"no VIGOR tiling for a panorama at pixel {p:.1f} of a {big}-pixel render")
        origins.append(choices[int(rng.integers(len(choices)))])
    (r0, dr), (c0, dc) = origins
    return [(r0, c0), (r0 + dr, c0), (r0, c0 + dc), (r0 + dr, c0 + dc)]


def _meters_to_degrees(lat: float, north: float, east: float) -> tuple[float, float]:
    return north / 111320.0, east / (111320.0 * math.cos(math.radians(lat)))


def _vigor_place(job: LayoutJob, config: WorldConfig, root: Path) -> dict[str, Any]:
    from geobridge.synth.scene import CELL_M, SAT_CELLS

    size = config.image_size
    m_px = SAT_CELLS * CELL_M / (2 * size)  # metres per pixel of the big image (and of every tile)
    # the panorama must lie half a tile inside the render for its four tiles to fit: at most size/2 - 2 pixels off
    big, street, scene = _ground_pair(job.spec, config, sat_size=2 * size, max_street_m=(size / 2 - 2) * m_px)
    x, y = scene.street_xy  # east, north metres from the scene centre
    pano_px = (size - y / m_px, size + x / m_px)  # (row, col) in the big image
    rng = np.random.default_rng(place_seed(config.seed, job.spec.index).spawn(5)[4])
    city = VIGOR_CITIES[job.number % len(VIGOR_CITIES)]
    lat0, lon0 = job.spec.lat, job.spec.lon  # the scene centre
    tiles, deltas = [], []
    for r0, c0 in _vigor_tiles(size, pano_px, rng):
        centre_north = -(r0 + size / 2 - size) * m_px
        centre_east = (c0 + size / 2 - size) * m_px
        dlat, dlon = _meters_to_degrees(lat0, centre_north, centre_east)
        name = f"satellite_{lat0 + dlat:.8f}_{lon0 + dlon:.8f}.png"
        _write(big[r0 : r0 + size, c0 : c0 + size], [root / city / "satellite" / name])
        # (dy, dx): tile centre minus panorama, along (north, east), in pixels of a 640-pixel tile of this city
        mpp = METERS_PER_PIXEL[city]
        deltas.append(((centre_north - y) / mpp, (centre_east - x) / mpp))
        tiles.append(name)
    record = _record(job, city=city, tiles=tiles)
    images = len(tiles)
    if job.role != "distractor":
        dlat, dlon = _meters_to_degrees(lat0, y, x)
        pano = f"{job.spec.place_id},{lat0 + dlat:.8f},{lon0 + dlon:.8f},.png"
        _write(street, [root / city / "panorama" / pano])
        record["label"] = " ".join([pano] + [f"{t} {dy:.4f} {dx:.4f}" for t, (dy, dx) in zip(tiles, deltas,
                                                                                             strict=True)])
        images += 1
    return {"record": record, "images": images}


# --------------------------------------------------------------------------------------------- the world


def _run_job(args: tuple[str, LayoutJob, WorldConfig, str, dict[str, str]]) -> dict[str, Any]:
    fmt, job, config, root, extra = args
    if fmt == "university1652":
        return _u1652_place(job, config, Path(root))
    if fmt == "geotext1652":
        return _geotext_place(job, config, Path(root), extra)
    if fmt == "cvusa":
        return _cvusa_place(job, config, Path(root))
    if fmt == "cvact":
        return _cvact_place(job, config, Path(root))
    return _vigor_place(job, config, Path(root))


def generate_layout(root: Path, config: WorldConfig, *, show_progress_bar: bool) -> WorldSummary:
    """Render every place and write the world in ``config.format`` (one of :data:`LAYOUTS`) under ``root``.

    ``root`` is prepared and holds the incomplete marker; the marker is completed last.
    """
    from tqdm.auto import tqdm

    fmt = config.format
    if fmt == "vigor" and config.image_size % 2:
        raise GeoBridgeError(f"the VIGOR layout needs an even image_size (its tiles overlap by half), "
                             f"got {config.image_size}")
    specs = plan_places(config)
    jobs = assign_roles(specs, config.distractor_fraction)
    roles = Counter(j.role for j in jobs)
    extra = {role: geotext_folder(role, roles["query"], roles["distractor"]) for role in ("train", "query",
                                                                                           "distractor")}
    args = [(fmt, job, config, str(root), extra) for job in jobs]
    workers = max(1, min(config.workers if config.workers is not None else default_workers(), len(args)))
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    with tqdm(total=len(args), desc=f"synth {fmt}", unit="place", disable=not show_progress_bar) as bar:
        if workers == 1:
            for item in args:
                results.append(_run_job(item))
                bar.update()
        else:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for result in pool.imap(_run_job, args, chunksize=max(1, len(args) // (workers * 8))):
                    results.append(result)
                    bar.update()
    _finish(fmt, root, jobs, results)
    _write_text_atomic(root / MARKER, _marker(config, complete=True))
    records = [r["record"] for r in results]
    return WorldSummary(
        root=str(root), format=fmt, places=len(records), images=int(sum(r["images"] for r in results)),
        seconds=time.perf_counter() - start,
        splits=dict(sorted(Counter(f"{r['split']}" if r["role"] != "distractor" else "distractor"
                                   for r in records).items())),
        countries=dict(sorted(Counter(str(r["country"]) for r in records).items())),
    )


def _finish(fmt: str, root: Path, jobs: list[LayoutJob], results: list[dict[str, Any]]) -> None:
    """The index files of the layout, written once every image is on disk."""
    records = [r["record"] for r in results]
    if fmt in ("university1652", "geotext1652"):
        rows = ["building_id,lat,lon"] + [f"{r['place_id']},{r['lat']},{r['lon']}" for r in records]
        _write_text_atomic(root / "coords.csv", "\n".join(rows) + "\n")
    if fmt == "university1652":
        lines = [json.dumps({"place_id": r["record"]["place_id"], "texts": r["texts"]}) for r in results]
        _write_text_atomic(root / "texts.jsonl", "\n".join(lines) + "\n")
    elif fmt == "geotext1652":
        train, test = [], []
        for result, job in zip(results, jobs, strict=True):
            for entry in result["entries"]:
                if job.role == "train":  # one entry per caption, caption a string
                    train.extend({**_without(entry, "captions"), "caption": c} for c in entry["captions"])
                else:  # one entry per image, caption a list
                    test.append({**_without(entry, "captions"), "caption": entry["captions"]})
        _write_text_atomic(root / "train.json", json.dumps(train) + "\n")
        _write_text_atomic(root / "test_951_version.json", json.dumps(test) + "\n")
    elif fmt == "cvusa":
        (root / "splits").mkdir(exist_ok=True)
        for name, wanted in (("train-19zl.csv", ("train",)), ("val-19zl.csv", ("query", "distractor"))):
            lines = [r["line"] for r, j in zip(results, jobs, strict=True) if j.role in wanted]
            _write_text_atomic(root / "splits" / name, "\n".join(lines) + "\n")
    elif fmt == "cvact":
        _write_act_mat(root, jobs)
    else:
        _write_vigor_splits(root, jobs, results)


def _without(entry: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != key}


def _write_act_mat(root: Path, jobs: list[LayoutJob]) -> None:
    import scipy.io

    width = max(1, int(math.ceil(math.sqrt(len(jobs)))))
    ids = np.empty((len(jobs), 1), dtype=object)
    for k, job in enumerate(jobs):
        ids[k, 0] = cvact_id(job)
    utm = np.asarray([cvact_utm(j, width) for j in jobs], dtype=np.float64)  # (N, 2)
    train = [k + 1 for k, j in enumerate(jobs) if j.role == "train"]  # 1-based, as MATLAB writes them
    test_all = [k + 1 for k, j in enumerate(jobs) if j.role != "train"]
    val = [k + 1 for k, j in enumerate(jobs) if j.role == "query"]

    def column(values: list[int]) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).reshape(-1, 1)  # (n, 1), doubles like the release

    tmp = root / ".ACT_data.mat.tmp"
    scipy.io.savemat(str(tmp), {"panoIds": ids, "utm": utm, "trainSet": {"trainInd": column(train)},
                                "valSet": {"valInd": column(val)}, "valSetAll": {"valInd": column(test_all)}})
    os.replace(tmp, root / "ACT_data.mat")


def _write_vigor_splits(root: Path, jobs: list[LayoutJob], results: list[dict[str, Any]]) -> None:
    for city in VIGOR_CITIES:
        here = [(j, r["record"]) for j, r in zip(jobs, results, strict=True) if r["record"]["city"] == city]
        folder = root / "splits" / city
        folder.mkdir(parents=True, exist_ok=True)
        (root / city / "satellite").mkdir(parents=True, exist_ok=True)
        (root / city / "panorama").mkdir(parents=True, exist_ok=True)
        tiles = [t for _, rec in here for t in rec["tiles"]]
        labels = {role: [rec["label"] for j, rec in here if j.role in role] for role in (("train",), ("query",))}
        files = {
            "satellite_list.txt": tiles,
            "same_area_balanced_train.txt": labels[("train",)],
            "same_area_balanced_test.txt": labels[("query",)],
            "pano_label_balanced.txt": labels[("train",)] + labels[("query",)],
        }
        for name, lines in files.items():
            _write_text_atomic(folder / name, "".join(f"{line}\n" for line in lines))
