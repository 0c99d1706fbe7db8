"""Region mode of the generator: a georeferenced terrain of several km² with drone photos from known poses.

A region is one contiguous terrain of ``blocks x blocks`` blocks of 200 m, in one country's style
(``geobridge.synth._region_terrain``): block ``(row, col)`` is a synthetic place whose central ``SAT_CELLS`` cells
(200 m) are composed, north-up, into one region-wide Scene with a 50 m margin of terrain around the region; the
blocks' relief is blended across block edges into one continuous ground, a regional road runs along every
interior block boundary (the blocks' own streets meet it, so the road network continues across block edges),
and one sun lights the whole terrain. The region is ``200 * blocks`` metres across.

Its orthomosaic is that terrain's lit top view, written as GeoTIFFs in a projected CRS (UTM by default), split by
columns into a training region (the western columns) and a disjoint test region (the eastern ones), one GeoTIFF
each. Drone photos (look-at points within ``target_m`` of a block centre, known headings and altitudes) and a
street panorama per block (on a road of the block: its own or a regional one) are rendered from the same
height, material and colour rasters, so what a photo sees anywhere, across block edges too, is what the mosaic
shows there. Each split's photos are rendered from its own columns only (beyond the split line lies the far
field), so no training photo shows test terrain. Every photo is a JPEG carrying its true GPS position in EXIF,
and ``<split>/queries.jsonl`` records its pose: ``lat``/``lon`` (WGS84) and ``x``/``y`` (the CRS) of the point the
camera looks at (drone) or stands on (street), ``heading``, ``altitude_m``, ``block``.

Water bodies, fields and street grids are still drawn per block: a river or a field ends at the block edge
(under the regional road that covers it), and blocks keep their own palettes.

rasterio and pyproj (the ``geo`` extra) are needed to write the GeoTIFFs and positions.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from geobridge.errors import GeoBridgeError
from geobridge.synth._region_terrain import (
    BLOCK_M,
    MARGIN_CELLS,
    MARGIN_M,
    RegionBlock,
    RegionTerrain,
    build_region_terrain,
    split_view,
)
from geobridge.synth.countries import get_country
from geobridge.synth.grid import CELL_M, SAT_CELLS, Scene
from geobridge.synth.render import (
    ORBIT_ALTITUDE_M,
    ORBIT_DISTANCE_M,
    DroneCamera,
    Lighting,
    light_scene,
    render_drone,
    render_street,
)

__all__ = ["BLOCK_M", "REGION_SPLITS", "RegionConfig", "RegionTerrain", "build_region_terrain", "generate_region"]
REGION_SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class RegionConfig:
    """A region of ``blocks x blocks`` blocks of 200 m; the last ``test_columns`` block columns form the test region."""

    blocks: int = 10
    test_columns: int | None = None  # default: half the columns (rounded down)
    country: str = "DE"
    crs: str = "EPSG:32633"
    origin: tuple[float, float] = (500_000.0, 5_540_000.0)  # (x, y) of the region's north-west corner in ``crs``
    drones_per_block: int = 2
    drone_size: int = 128
    street: bool = True
    street_size: int = 64
    target_m: float = 40.0  # drone look-at points lie within this many metres of the block centre (<= 100)
    seed: int = 0

    def validate(self) -> None:
        if self.blocks < 2:
            raise GeoBridgeError(f"blocks must be >= 2 (a training and a test column), got {self.blocks}")
        if not 1 <= self.test_columns_or_default() < self.blocks:
            raise GeoBridgeError(f"test_columns must be in [1, {self.blocks - 1}], got {self.test_columns}")
        if self.drones_per_block < 0 or self.drone_size < 16 or self.street_size < 16:
            raise GeoBridgeError("drones_per_block must be >= 0 and drone_size, street_size >= 16")
        if not 0.0 <= self.target_m <= BLOCK_M / 2:
            raise GeoBridgeError(f"target_m must be in [0, {BLOCK_M / 2:g}] (inside the block), got {self.target_m}")
        get_country(self.country)

    def test_columns_or_default(self) -> int:
        return self.blocks // 2 if self.test_columns is None else int(self.test_columns)


def generate_region(root: str | Path, config: RegionConfig) -> dict[str, Any]:
    """Write the region under ``root`` (``region.json``, ``<split>/ortho.tif``, ``<split>/drone/*.jpg``,
    ``<split>/street/*.jpg``, ``<split>/queries.jsonl``) and return the manifest written to ``region.json``."""
    import pyproj
    import rasterio
    from affine import Affine  # a rasterio dependency

    config.validate()
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not (root / "region.json").is_file():
        raise GeoBridgeError(f"refusing to overwrite {root}: it is not empty and holds no region.json")
    root.mkdir(parents=True, exist_ok=True)
    to_wgs84 = pyproj.Transformer.from_crs(config.crs, "EPSG:4326", always_xy=True)
    n, n_test = config.blocks, config.test_columns_or_default()
    columns = {"train": range(0, n - n_test), "test": range(n - n_test, n)}
    x0, y0 = config.origin
    terrain = build_region_terrain(get_country(config.country), blocks=n, seed=config.seed)
    lighting = light_scene(terrain.scene)
    m = MARGIN_CELLS
    mosaic = np.rint(np.clip(lighting.lit[m : m + n * SAT_CELLS, m : m + n * SAT_CELLS] * 255.0, 0, 255))
    mosaic = mosaic.astype(np.uint8)  # (n * 128, n * 128, 3): exactly what the photos are rendered from
    manifest: dict[str, Any] = {"format": "geobridge-region", "format_version": 2, "config": asdict(config),
                                "block_m": BLOCK_M, "gsd_m": CELL_M, "margin_m": MARGIN_M,
                                "regional_roads": {"x_m": [x0 + k * BLOCK_M for k in range(1, n)],
                                                   "y_m": [y0 - k * BLOCK_M for k in range(1, n)],
                                                   "width_x_m": list(terrain.road_widths[0]),
                                                   "width_y_m": list(terrain.road_widths[1])},
                                "splits": {}}
    for split in REGION_SPLITS:
        cols = columns[split]
        folder = root / split
        (folder / "drone").mkdir(parents=True, exist_ok=True)
        (folder / "street").mkdir(parents=True, exist_ok=True)
        west = x0 + cols.start * BLOCK_M
        transform = Affine(CELL_M, 0.0, west, 0.0, -CELL_M, y0)  # north-up, CELL_M metres per pixel
        width, height = len(cols) * SAT_CELLS, n * SAT_CELLS
        profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs=config.crs,
                       transform=transform, tiled=True, blockxsize=SAT_CELLS, blockysize=SAT_CELLS,
                       compress="deflate")
        with rasterio.open(folder / "ortho.tif", "w", **profile) as dst:
            dst.write(mosaic[:, cols.start * SAT_CELLS : cols.stop * SAT_CELLS].transpose(2, 0, 1))
        scene, light = split_view(terrain, lighting, cols)  # a split's photos see only its own terrain
        queries: list[dict[str, Any]] = []
        for row in range(n):
            for col in cols:
                block = terrain.block(row, col)
                queries += _block_queries(scene, light, config, np.random.default_rng(block.view_seed),
                                          folder=folder, block=block, to_wgs84=to_wgs84)
        (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
        east, south = west + len(cols) * BLOCK_M, y0 - n * BLOCK_M
        lon, lat = to_wgs84.transform([west, west, east, east], [south, y0, y0, south])  # the four corners
        manifest["splits"][split] = {
            "ortho": f"{split}/ortho.tif", "queries": f"{split}/queries.jsonl", "columns": [cols.start, cols.stop],
            "native_bounds": [west, south, east, y0],
            "wgs84_bounds": [float(min(lon)), float(min(lat)), float(max(lon)), float(max(lat))],
            "drone": sum(q["view"] == "drone" for q in queries), "street": sum(q["view"] == "street" for q in queries),
        }
    (root / "region.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _block_queries(
    scene: Scene,
    lighting: Lighting,
    config: RegionConfig,
    rng: np.random.Generator,
    *,
    folder: Path,
    block: RegionBlock,
    to_wgs84: Any,
) -> list[dict[str, Any]]:
    """Render a block's drone photos and street panorama from the region's terrain, write them as GPS-tagged
    JPEGs, return their poses."""
    out = []
    row, col = block.row, block.col
    cx, cy = block.centre
    poses: list[tuple[str, float, float, float, float | None, Any]] = []
    for k in range(config.drones_per_block):
        radius, angle = config.target_m * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
        target = (cx + radius * math.cos(angle), cy + radius * math.sin(angle))  # region coordinates
        heading = float(rng.uniform(0, 360))
        camera = DroneCamera(heading=heading, distance=ORBIT_DISTANCE_M * float(rng.uniform(0.9, 1.1)),
                             altitude=ORBIT_ALTITUDE_M * float(rng.uniform(0.88, 1.12)), target=target,
                             vfov=float(rng.uniform(58, 66)))
        image = render_drone(scene, lighting, camera, size=config.drone_size, rng=rng)
        poses.append((f"drone/b{row:02d}_{col:02d}_{k}.jpg", *target, heading, camera.altitude, image))
    if config.street:
        image = render_street(scene, lighting, size=config.street_size, rng=rng, at=block.street_xy)
        poses.append((f"street/b{row:02d}_{col:02d}.jpg", *block.street_xy, 0.0, None, image))
    x0, y0 = config.origin
    for name, east, north, heading, altitude, image in poses:
        x, y = x0 + east, y0 + north
        lon, lat = to_wgs84.transform(x, y)
        _save_gps_jpeg(image, folder / name, lat=float(lat), lon=float(lon))
        out.append({"path": name, "view": name.split("/")[0], "lat": float(lat), "lon": float(lon), "x": x, "y": y,
                    "heading": heading, "altitude_m": altitude, "block": [row, col]})
    return out


def _save_gps_jpeg(image: np.ndarray, path: Path, *, lat: float, lon: float) -> None:
    """A JPEG whose EXIF GPS IFD holds (lat, lon) as degree/minute/second rationals."""
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    for tag, value, refs in ((2, lat, "NS"), (4, lon, "EW")):
        magnitude = abs(value)
        degrees = int(magnitude)
        minutes = int((magnitude - degrees) * 60)
        seconds = round(((magnitude - degrees) * 60 - minutes) * 60, 6)
        gps[tag] = (float(degrees), float(minutes), seconds)
        gps[tag - 1] = refs[0] if value >= 0 else refs[1]
    Image.fromarray(image).save(path, format="JPEG", quality=92, exif=exif)
