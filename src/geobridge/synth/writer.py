"""Generate a whole synthetic world on disk, in the GeoLoc layout or a benchmark's (:mod:`geobridge.synth.layouts`).

Every place has its own seed, derived from the world seed with ``numpy.random.SeedSequence(seed,
spawn_key=(index,))``: a place renders identically whatever the number of workers or places, and two runs
with the same configuration write byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from geobridge._atomic import atomic_path, atomic_write_text
from geobridge.errors import GeoBridgeError
from geobridge.synth.appearance import AppearanceShift
from geobridge.synth.countries import country_codes, country_record, get_country
from geobridge.synth.render import (
    ORBIT_ALTITUDE_M,
    ORBIT_DISTANCE_M,
    DroneCamera,
    light_scene,
    render_drone,
    render_satellite,
    render_street,
)
from geobridge.synth.scene import Scene, build_scene, more_street_points
from geobridge.synth.text import describe
from geobridge.version import __version__
from geobridge.views import IMAGE_VIEWS

GENERATOR = f"geobridge.synth {__version__}"
MARKER = ".geobridge-synth.json"
FORMATS: tuple[str, ...] = ("geoloc", "university1652", "geotext1652", "cvusa", "cvact", "vigor")
# What a previous world may hold; only these are removed when a world is regenerated in place.
_WORLD_ENTRIES: tuple[str, ...] = (
    "drone", "satellite", "street", "train", "test", "manifest.json", "places.jsonl", "texts.jsonl", "coords.csv",
    "preview.png", MARKER, "train.json", "test_951_version.json", "bingmap", "streetview", "splits", "ACT_data.mat",
    "ANU_data_small", "ANU_data_test", "NewYork", "Seattle", "SanFrancisco", "Chicago",
)


@dataclass
class WorldConfig:
    """What world to generate. ``countries=None`` uses every styled country."""

    places: int = 600
    # more training places, appended after the first ``places`` (whose content and splits they leave as they are):
    # drawn only from the countries not held out, all in the train split. Scales the training set while keeping
    # the test places of a world fixed (docs/synth.md).
    extra_train_places: int = 0
    image_size: int = 128
    drone_views: int = 4
    # street panoramas of each training place: the first at the place's street point, the others on the road (or
    # open ground) 8-30 m away, as more captures of the same place; test and validation places keep one, so the
    # evaluation is unchanged. GeoLoc layout only.
    train_street_views: int = 1
    texts_per_place: int = 3
    seed: int = 0
    countries: tuple[str, ...] | None = None
    holdout_countries: tuple[str, ...] = ()
    test_fraction: float = 0.25
    test_places: int | None = None  # overrides test_fraction
    val_fraction: float = 0.0  # geoloc only
    # benchmark layouts: the share of test places written to the gallery only (University-1652's and GeoText-1652's
    # gallery-only buildings, VIGOR's tiles without a panorama, CVACT_test's pairs outside CVACT_val)
    distractor_fraction: float = 0.25
    format: str = "geoloc"
    season: str = "none"
    time_of_day: str = "noon"
    blur: float = 0.0
    low_resolution: float = 1.0
    shift_views: tuple[str, ...] = IMAGE_VIEWS  # the views the appearance shift applies to
    workers: int | None = None  # None = min(2, cpu_count)
    name: str = "GeoBridge synthetic world"

    def country_styles(self) -> list[str]:
        codes = country_codes() if self.countries is None else tuple(c.upper() for c in self.countries)
        return [get_country(c).code for c in codes]

    def appearance(self) -> AppearanceShift:
        try:
            return AppearanceShift(season=self.season, time_of_day=self.time_of_day, blur=float(self.blur),
                                   low_resolution=float(self.low_resolution), views=tuple(self.shift_views))
        except ValueError as exc:
            raise GeoBridgeError(f"bad appearance shift: {exc}") from exc

    def validate(self) -> None:
        """Raise GeoBridgeError naming the first bad option."""
        if self.places < 1:
            raise GeoBridgeError(f"places must be >= 1, got {self.places}")
        if self.extra_train_places < 0:
            raise GeoBridgeError(f"extra_train_places must be >= 0, got {self.extra_train_places}")
        if not 16 <= self.image_size <= 2048:
            raise GeoBridgeError(f"image_size must be within 16..2048, got {self.image_size}")
        if self.drone_views < 1:
            raise GeoBridgeError(f"drone_views must be >= 1, got {self.drone_views}")
        if self.train_street_views < 1:
            raise GeoBridgeError(f"train_street_views must be >= 1, got {self.train_street_views}")
        if self.train_street_views > 1 and self.format != "geoloc":
            raise GeoBridgeError(f"train_street_views: more than one panorama per place is written in the geoloc "
                                 f"layout only, not {self.format}")
        if self.texts_per_place < 1:
            raise GeoBridgeError(f"texts_per_place must be >= 1, got {self.texts_per_place}")
        if self.format not in FORMATS:
            raise GeoBridgeError(f"unknown format {self.format!r}; expected one of {', '.join(FORMATS)}")
        codes = self.country_styles()
        if not codes:
            raise GeoBridgeError("countries must name at least one country")
        for code in self.holdout_countries:
            if get_country(code).code not in codes:
                raise GeoBridgeError(f"holdout country {code!r} is not among the world's countries {codes}")
        if len({get_country(c).code for c in self.holdout_countries}) == len(codes):
            raise GeoBridgeError("every country is held out: no place would be left for training")
        if not 0 <= self.test_fraction < 1:
            raise GeoBridgeError(f"test_fraction must be within [0, 1), got {self.test_fraction}")
        if not 0 <= self.val_fraction < 1:
            raise GeoBridgeError(f"val_fraction must be within [0, 1), got {self.val_fraction}")
        if self.test_places is not None and not 0 <= self.test_places < self.places:
            raise GeoBridgeError(f"test_places must be within [0, places), got {self.test_places}")
        if self.val_fraction > 0 and self.format != "geoloc":
            raise GeoBridgeError(f"the {self.format} layout has no validation split of its own; use val_fraction=0")
        if not 0 <= self.distractor_fraction < 1:
            raise GeoBridgeError(f"distractor_fraction must be within [0, 1), got {self.distractor_fraction}")
        if self.workers is not None and self.workers < 1:
            raise GeoBridgeError(f"workers must be >= 1, got {self.workers}")
        self.appearance()  # raises with the valid names of seasons, times of day and views


@dataclass
class WorldSummary:
    """What ``generate_world`` wrote."""

    root: str
    format: str
    places: int
    images: int
    seconds: float
    splits: dict[str, int] = field(default_factory=dict)
    countries: dict[str, int] = field(default_factory=dict)

    @property
    def places_per_second(self) -> float:
        return self.places / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class PlaceSpec:
    """Who a place is: its index (which fixes its seed), id, country, coordinates and split."""

    index: int
    place_id: str
    country: str
    lat: float
    lon: float
    split: str


@dataclass
class PlaceViews:
    """A rendered place: images per view (uint8 (H, W, 3)), texts and its places.jsonl record."""

    spec: PlaceSpec
    scene: Scene
    images: dict[str, list[np.ndarray]]
    texts: list[str]
    drone_headings: list[float]

    def record(self) -> dict[str, object]:
        lm = self.scene.landmark
        return {
            "place_id": self.spec.place_id,
            "country": self.spec.country,
            "lat": self.spec.lat,
            "lon": self.spec.lon,
            "split": self.spec.split,
            "terrain": self.scene.terrain,
            "landmark": lm.kind if lm is not None else None,
        }


# --------------------------------------------------------------------------------------------- planning


def place_seed(world_seed: int, index: int) -> np.random.SeedSequence:
    """The seed of place ``index``: the same as ``SeedSequence(world_seed).spawn(n)[index]`` for any n."""
    return np.random.SeedSequence(world_seed, spawn_key=(index,))


def plan_places(config: WorldConfig) -> list[PlaceSpec]:
    """Ids, countries, coordinates and splits of every place of the world."""
    config.validate()
    codes = config.country_styles()
    holdout = {get_country(c).code for c in config.holdout_countries}
    total = config.places + config.extra_train_places
    width = max(5, len(str(total - 1)))
    train_codes = [c for c in codes if c not in holdout]
    drafts = []
    for index in range(total):
        rng = np.random.default_rng(place_seed(config.seed, index).spawn(4)[0])
        pool = codes if index < config.places else train_codes  # extra places never come from held-out countries
        style = get_country(pool[int(rng.integers(len(pool)))])
        lat_min, lat_max, lon_min, lon_max = style.bbox
        lat = round(float(rng.uniform(lat_min, lat_max)), 5)
        lon = round(float(rng.uniform(lon_min, lon_max)), 5)
        drafts.append((index, f"p{index:0{width}d}", style.code, lat, lon))
    # Splits: every held-out place is a test place; more test (and val) places are drawn from the rest.
    n_test = config.test_places if config.test_places is not None else int(round(config.test_fraction * config.places))
    split = ["train"] * total
    free = []
    for index, _, code, _, _ in drafts[: config.places]:
        if code in holdout:
            split[index] = "test"
        else:
            free.append(index)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(2**31 - 1,)))
    order = [free[int(k)] for k in rng.permutation(len(free))]
    extra_test = max(0, n_test - (config.places - len(free)))
    for index in order[:extra_test]:
        split[index] = "test"
    n_val = int(round(config.val_fraction * config.places))
    for index in order[extra_test : extra_test + n_val]:
        split[index] = "val"
    return [PlaceSpec(index=i, place_id=pid, country=c, lat=la, lon=lo, split=split[i]) for i, pid, c, la, lo in drafts]


# --------------------------------------------------------------------------------------------- one place


def render_place(spec: PlaceSpec, config: WorldConfig) -> PlaceViews:
    """Build and render one place (all views, texts, appearance shifts) in memory."""
    seeds = place_seed(config.seed, spec.index).spawn(5)  # the first four as with one panorama: worlds unchanged
    scene = build_scene(get_country(spec.country), np.random.default_rng(seeds[1]))
    lighting = light_scene(scene)
    rng = np.random.default_rng(seeds[2])
    size = config.image_size
    satellite = render_satellite(scene, lighting, size=size, rng=rng)
    n = config.drone_views
    offset = float(rng.uniform(0, 360.0 / n))
    headings = [round((offset + k * 360.0 / n) % 360.0, 2) for k in range(n)]
    supersample = 2 if size <= 256 else 1
    drones = []
    for heading in headings:
        camera = DroneCamera(
            heading=heading,
            distance=ORBIT_DISTANCE_M * float(rng.uniform(0.9, 1.1)),
            altitude=ORBIT_ALTITUDE_M * float(rng.uniform(0.88, 1.12)),
            target=(float(rng.normal(0, 4)), float(rng.normal(0, 4))),
            vfov=float(rng.uniform(58, 66)),
        )
        drones.append(render_drone(scene, lighting, camera, size=size, rng=rng, supersample=supersample))
    streets = [render_street(scene, lighting, size=size, rng=rng)]
    if spec.split == "train" and config.train_street_views > 1:
        more_rng = np.random.default_rng(seeds[4])
        for point in more_street_points(scene, more_rng, count=config.train_street_views - 1):
            streets.append(render_street(scene, lighting, size=size, rng=more_rng, at=point))
    images = {"drone": drones, "satellite": [satellite], "street": streets}
    shift = config.appearance()
    for view, imgs in images.items():
        if shift.applies_to(view):
            images[view] = [shift.apply(img) for img in imgs]
    texts = describe(scene, np.random.default_rng(seeds[3]), count=config.texts_per_place)
    return PlaceViews(spec=spec, scene=scene, images=images, texts=texts, drone_headings=headings)


def _image_paths(root: Path, spec: PlaceSpec, view: str, count: int) -> list[Path]:
    """The path of each image of a view in the GeoLoc layout."""
    names = [f"{k:02d}.png" if view == "drone" else f"{k}.png" for k in range(count)]
    return [root / view / spec.place_id / name for name in names]


def _save_png(img: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG", compress_level=4)


def _write_place(job: tuple[PlaceSpec, WorldConfig, str]) -> dict[str, object]:
    """Worker: render a place, write its images, return its records."""
    spec, config, root = job
    views = render_place(spec, config)
    count = 0
    for view in IMAGE_VIEWS:
        imgs = views.images[view]
        for img, path in zip(imgs, _image_paths(Path(root), spec, view, len(imgs)), strict=True):
            _save_png(img, path)
            count += 1
    return {"record": views.record(), "texts": views.texts, "images": count}


# --------------------------------------------------------------------------------------------- the world


def _is_previous_world(root: Path) -> bool:
    for name in (MARKER, "manifest.json"):
        path = root / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and str(data.get("generator", "")).startswith("geobridge.synth"):
                return True
    return False


def _prepare_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise GeoBridgeError(f"output path {root} exists and is not a directory")
    if root.exists() and any(root.iterdir()):
        if not _is_previous_world(root):
            raise GeoBridgeError(
                f"output directory {root} is not empty and does not hold a world written by geobridge synth; "
                "refusing to overwrite it (choose a new or empty directory)"
            )
        for name in _WORLD_ENTRIES:
            path = root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    root.mkdir(parents=True, exist_ok=True)


def _write_text_atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _marker(config: WorldConfig, *, complete: bool) -> str:
    record = {"generator": GENERATOR, "complete": complete, "config": asdict(config)}
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def start_world(out_dir: str | os.PathLike[str], config: WorldConfig) -> tuple[Path, WorldConfig]:
    """Validate ``config``, resolve its countries, and claim ``out_dir`` with an incomplete-world marker.

    ``out_dir`` must be new, empty, or a previous world written by this generator (which is then replaced).
    """
    config.validate()
    config = replace(config, countries=tuple(config.country_styles()),
                     holdout_countries=tuple(get_country(c).code for c in config.holdout_countries))
    root = Path(out_dir)
    _prepare_root(root)
    _write_text_atomic(root / MARKER, _marker(config, complete=False))
    return root, config


def write_geoloc_world(root: Path, config: WorldConfig, *, show_progress_bar: bool) -> WorldSummary:
    """Write the GeoLoc layout into ``root`` (claimed by :func:`start_world`); returns what was written.

    The manifest and the completion marker are written last, so an interrupted run is recognisable.
    """
    from tqdm.auto import tqdm

    specs = plan_places(config)
    workers = config.workers if config.workers is not None else default_workers()
    workers = max(1, min(workers, len(specs)))
    jobs = [(spec, config, str(root)) for spec in specs]
    start = time.perf_counter()
    results: list[dict[str, object]] = []
    bar = tqdm(total=len(jobs), desc="synth places", unit="place", disable=not show_progress_bar)
    try:
        if workers == 1:
            for job in jobs:
                results.append(_write_place(job))
                bar.update()
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            chunk = max(1, min(8, math.ceil(len(jobs) / (workers * 8))))
            with ctx.Pool(workers) as pool:
                for result in pool.imap(_write_place, jobs, chunksize=chunk):
                    results.append(result)
                    bar.update()
    finally:
        bar.close()

    records = [r["record"] for r in results]
    text_lines = [json.dumps({"place_id": r["record"]["place_id"], "texts": r["texts"]}) for r in results]
    _write_text_atomic(root / "texts.jsonl", "\n".join(text_lines) + "\n")
    _write_text_atomic(root / "places.jsonl", "\n".join(json.dumps(r) for r in records) + "\n")
    used = [c for c in config.country_styles() if any(r["country"] == c for r in records)]
    manifest = {
        "format": "geoloc",
        "format_version": 1,
        "name": config.name,
        "views": ["drone", "satellite", "street", "text"],
        "image_size": config.image_size,
        "drone_views": config.drone_views,
        "train_street_views": config.train_street_views,
        "countries": [country_record(get_country(c)) for c in used],
        "holdout_countries": list(config.holdout_countries),
        "seed": config.seed,
        "generator": GENERATOR,
        "appearance": config.appearance().to_dict(),
    }
    _write_text_atomic(root / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    _write_text_atomic(root / MARKER, _marker(config, complete=True))
    seconds = time.perf_counter() - start
    return WorldSummary(
        root=str(root),
        format=config.format,
        places=len(records),
        images=int(sum(int(r["images"]) for r in results)),
        seconds=seconds,
        splits=dict(sorted(Counter(str(r["split"]) for r in records).items())),
        countries=dict(sorted(Counter(str(r["country"]) for r in records).items())),
    )
