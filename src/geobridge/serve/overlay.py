"""Quicklooks of the reference rasters for the map page: a small RGBA PNG in WGS84 with its lon/lat bounds.

The raster is read at a decimated size (GDAL serves it from the overviews when the file has them, so a large
orthomosaic is never read whole), then warped onto a regular longitude/latitude grid, the map page's
equirectangular projection, so the PNG lines up with the page's coordinates by its bounds alone. Nodata is
transparent. rasterio (the ``geo`` extra) is needed; an index without raster tiles has no overlays.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MAX_PX = 1024  # the quicklook's longer side


def raster_sources(records: Iterable[Mapping[str, Any]], *, root: Path | None = None) -> list[Path]:
    """The distinct raster files the index's tiles came from (records with a ``crs``), in first-seen order;
    relative paths are resolved against ``root`` (default: the working directory)."""
    seen: dict[Path, None] = {}
    for record in records:
        if record.get("crs") and record.get("path"):
            path = Path(str(record["path"]))
            if not path.is_absolute():
                path = (root or Path.cwd()) / path
            seen.setdefault(path, None)
    return list(seen)


def wgs84_bounds(path: Path) -> list[float]:
    """``[west, south, east, north]`` of the raster in degrees."""
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as src:
        return [float(v) for v in transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)]


def quicklook(path: Path, *, max_px: int = DEFAULT_MAX_PX) -> tuple[bytes, list[float]]:
    """``(PNG bytes, [west, south, east, north])``: the raster warped to a lon/lat grid, at most ``max_px`` a side."""
    import rasterio
    from PIL import Image
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    with rasterio.open(path) as src:
        bounds = [float(v) for v in rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)]
        scale = min(1.0, 2 * max_px / max(src.width, src.height))  # read at twice the output size, then warp
        height, width = max(1, round(src.height * scale)), max(1, round(src.width * scale))
        bands = [1, 2, 3] if src.count >= 3 else [1]
        data = src.read(bands, out_shape=(len(bands), height, width), resampling=Resampling.average)  # (C, h, w)
        valid = src.dataset_mask(out_shape=(height, width)) > 0  # (h, w)
        src_transform = src.transform @ src.transform.scale(src.width / width, src.height / height)
        src_crs = src.crs
    rgb = _to_uint8(data, valid)
    if rgb.shape[0] == 1:
        rgb = np.repeat(rgb, 3, axis=0)
    west, south, east, north = bounds
    aspect = (east - west) / max(north - south, 1e-12)
    out_w, out_h = (max_px, max(1, round(max_px / aspect))) if aspect >= 1 else (max(1, round(max_px * aspect)), max_px)
    dst_transform = _north_up(west, north, (east - west) / out_w, (north - south) / out_h)
    rgba = np.zeros((4, out_h, out_w), dtype=np.uint8)  # (4, H, W)
    source = np.concatenate([rgb, (valid * 255).astype(np.uint8)[None]], axis=0)  # (4, h, w)
    for band in range(4):
        reproject(source[band], rgba[band], src_transform=src_transform, src_crs=src_crs,
                  dst_transform=dst_transform, dst_crs="EPSG:4326", resampling=Resampling.nearest, src_nodata=None)
    buffer = io.BytesIO()
    Image.fromarray(rgba.transpose(1, 2, 0), mode="RGBA").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue(), bounds


def _north_up(west: float, north: float, dx: float, dy: float) -> Any:
    from affine import Affine  # a rasterio dependency

    return Affine(dx, 0.0, west, 0.0, -dy, north)


def _to_uint8(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """uint8 bands as they are; other types stretched from their 2nd to 98th percentile over the valid pixels."""
    if data.dtype == np.uint8:
        return data
    values = data[:, valid].astype(np.float64)
    if values.size == 0:
        return np.zeros(data.shape, dtype=np.uint8)
    lo, hi = np.percentile(values, [2, 98])
    return np.clip((data - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255).astype(np.uint8)
